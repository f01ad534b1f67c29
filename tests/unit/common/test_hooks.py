# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.hooks."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
from typing import Any
from unittest import mock

import fixtures

from conductor.common import async_tasks
from conductor.common import hooks
from tests import base

NS = hooks.NAMESPACE
MODULE = __name__


def recording_hook(phase: str, subphase: str | None, conf: Any) -> None:
    """Target of the fake entry points; patched by the tests."""


def failing_hook(phase: str, subphase: str | None, conf: Any) -> None:
    raise RuntimeError("hook broke")


def _entry_point(name: str, value: str = MODULE + ":recording_hook",
                 dist: str | None = None) -> Any:
    """An entry point of ``conductor.hooks``; ``dist`` names its owner."""
    if dist is None:
        return importlib.metadata.EntryPoint(name, value, NS)
    entry_point = mock.Mock(spec=importlib.metadata.EntryPoint)
    entry_point.name = name
    entry_point.value = value
    entry_point.group = NS
    entry_point.dist = mock.Mock(spec=importlib.metadata.Distribution)
    entry_point.dist.name = dist
    entry_point.load.side_effect = importlib.metadata.EntryPoint(
        name, value, NS).load
    return entry_point


class HooksTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.hooks_dir = self.useFixture(fixtures.TempDir()).path
        self.log = self.useFixture(fixtures.FakeLogger(
            level=logging.DEBUG, format="%(levelname)s %(message)s"))
        self.entry_points: list[Any] = []
        patcher = mock.patch.object(importlib.metadata, "entry_points",
                                    autospec=True)
        self.mock_entry_points = patcher.start()
        self.addCleanup(patcher.stop)
        self.mock_entry_points.side_effect = (
            lambda group: [e for e in self.entry_points if e.group == group])
        patcher = mock.patch.object(sys.modules[MODULE], "recording_hook",
                                    autospec=True)
        self.recorder = patcher.start()
        self.addCleanup(patcher.stop)

    def write_hook(self, name: str, body: str = "", mode: int = 0o755,
                   shebang: str = "#!/bin/sh\n") -> str:
        path = os.path.join(self.hooks_dir, name)
        with open(path, "w") as f:
            f.write(shebang + body)
        os.chmod(path, mode)
        return path

    def lines(self, level: str = "INFO") -> list[str]:
        prefix = level + " "
        return [line[len(prefix):] for line in self.log.output.splitlines()
                if line.startswith(prefix)]


class TestDiscover(HooksTestCase):

    def test_sorted_by_number_then_name(self) -> None:
        self.entry_points = [
            _entry_point("30-b"), _entry_point("10-z"),
            importlib.metadata.EntryPoint("55-other", "x:y", "other.group")]
        self.write_hook("20-a")
        self.write_hook("10-a.sh")
        found = hooks.discover(self.hooks_dir)
        self.assertEqual(["10-a.sh", "10-z", "20-a", "30-b"],
                         [h.name for h in found])
        self.assertEqual([10, 10, 20, 30], [h.order for h in found])
        self.assertEqual(["exec", "python", "exec", "python"],
                         [h.kind for h in found])
        self.assertEqual(os.path.join(self.hooks_dir, "20-a"), found[2].path)
        self.mock_entry_points.assert_called_once_with(group=NS)

    def test_no_hooks_dir(self) -> None:
        self.entry_points = [_entry_point("10-x")]
        self.assertEqual(["10-x"], [h.name for h in hooks.discover(None)])
        self.assertEqual(["10-x"], [h.name for h in hooks.discover("")])

    def test_entry_points_not_imported_by_discover(self) -> None:
        self.entry_points = [_entry_point("10-x", value="no.such.mod:f")]
        (hook,) = hooks.discover(None)
        self.assertIsNone(hook.func)

    def test_reserved_numbers_refused_for_executables(self) -> None:
        for name in ("00-early", "09-x", "90-late", "99-last"):
            path = self.write_hook(name)
            exc = self.assertRaises(hooks.HookError, hooks.discover,
                                    self.hooks_dir)
            self.assertEqual(name, exc.hook)
            self.assertIn("reserved number %s" % name[:2], str(exc))
            self.assertIn("use 10-89", str(exc))
            os.unlink(path)
        for name in ("10-first", "89-last"):
            self.write_hook(name)
        self.assertEqual(2, len(hooks.discover(self.hooks_dir)))

    def test_reserved_numbers_refused_for_third_party_entry_points(
            self) -> None:
        for dist in (None, "some-plugin"):
            self.entry_points = [_entry_point("05-mine", dist=dist)]
            exc = self.assertRaises(hooks.HookError, hooks.discover, None)
            self.assertIn("reserved number 05", str(exc))

    def test_reserved_numbers_allowed_for_conductor(self) -> None:
        self.entry_points = [_entry_point("05-builtin", dist="conductor"),
                             _entry_point("95-builtin", dist="Conductor")]
        self.assertEqual(["05-builtin", "95-builtin"],
                         [h.name for h in hooks.discover(None)])

    def test_allow_reserved(self) -> None:
        self.write_hook("00-test")
        self.entry_points = [_entry_point("99-test")]
        found = hooks.discover(self.hooks_dir, allow_reserved=True)
        self.assertEqual(["00-test", "99-test"], [h.name for h in found])

    def test_bad_names(self) -> None:
        for name in ("foo.sh", "1-foo", "100-foo", "20_foo", "20-",
                     "ab-foo", "20-foo bar"):
            self.entry_points = [_entry_point(name)]
            exc = self.assertRaises(hooks.HookError, hooks.discover, None)
            self.assertEqual(name, exc.hook)
            self.assertIn("invalid hook name %r" % name, str(exc))
        self.entry_points = []
        self.write_hook("setup.sh")
        exc = self.assertRaises(hooks.HookError, hooks.discover,
                                self.hooks_dir)
        self.assertIn("invalid hook name 'setup.sh' from %s"
                      % self.hooks_dir, str(exc))

    def test_ignored_files(self) -> None:
        self.write_hook(".20-hidden")
        self.write_hook("20-disabled.sample", mode=0o644)
        self.write_hook("README", mode=0o644)
        self.write_hook("README.rst", mode=0o644)
        self.assertEqual([], hooks.discover(self.hooks_dir))

    def test_not_executable_refused(self) -> None:
        path = self.write_hook("20-forgot-chmod", mode=0o644)
        exc = self.assertRaises(hooks.HookError, hooks.discover,
                                self.hooks_dir)
        self.assertEqual("Hook 20-forgot-chmod: %s is not executable; make "
                         "it executable (chmod +x), or rename it to end in "
                         ".sample to disable it" % path, str(exc))

    def test_directory_refused(self) -> None:
        os.mkdir(os.path.join(self.hooks_dir, "20-dir"))
        exc = self.assertRaises(hooks.HookError, hooks.discover,
                                self.hooks_dir)
        self.assertIn("20-dir is not a regular file", str(exc))

    def test_missing_hooks_dir(self) -> None:
        missing = os.path.join(self.hooks_dir, "nope")
        exc = self.assertRaises(hooks.HookError, hooks.discover, missing)
        self.assertIn("cannot read [hooks] hooks_dir %s" % missing,
                      str(exc))

    def test_same_name_twice_refused(self) -> None:
        self.entry_points = [_entry_point("20-twice")]
        self.write_hook("20-twice")
        exc = self.assertRaises(hooks.HookError, hooks.discover,
                                self.hooks_dir)
        self.assertIn("20-twice: defined twice", str(exc))


class TestPhases(base.TestCase):

    def test_phase_label(self) -> None:
        self.assertEqual("start pre-start",
                         hooks.phase_label("start", "pre-start"))
        self.assertEqual("clean", hooks.phase_label("clean"))

    def test_phases_in_order(self) -> None:
        self.assertEqual(("override_defaults", "source", "start", "stop",
                          "clean"), hooks.PHASES)
        self.assertEqual(("pre-start", "post-config", "extra"),
                         hooks.START_SUBPHASES)

    def test_validation(self) -> None:
        exc = self.assertRaises(ValueError, hooks.run_hooks, [], "stack")
        self.assertEqual("Unknown hook phase 'stack'; valid phases: "
                         "override_defaults, source, start, stop, clean",
                         str(exc))
        exc = self.assertRaises(ValueError, hooks.run_hooks, [], "start")
        self.assertEqual("Phase 'start' needs a sub-phase, one of "
                         "pre-start, post-config, extra; got None", str(exc))
        self.assertRaises(ValueError, hooks.run_hooks, [], "start",
                          "install")
        self.assertRaises(ValueError, hooks.run_hooks, [], "stop", "extra")
        for phase in ("override_defaults", "source", "stop", "clean"):
            self.assertEqual([], hooks.run_hooks([], phase))
        for subphase in hooks.START_SUBPHASES:
            self.assertEqual([], hooks.run_hooks([], "start", subphase))


class TestRunPython(HooksTestCase):

    def test_called_with_phase_subphase_conf_in_order(self) -> None:
        self.entry_points = [_entry_point("30-b"), _entry_point("20-a")]
        found = hooks.discover(None)
        self.assertEqual([], hooks.run_hooks(
            found, "start", "post-config", conf=self.conf))
        self.assertEqual(
            [mock.call("start", "post-config", self.conf)] * 2,
            self.recorder.call_args_list)
        self.assertEqual(["Running start post-config hook 20-a",
                          "Running start post-config hook 30-b"],
                         self.lines())
        hooks.run_hooks(found, "source", conf=self.conf)
        self.recorder.assert_called_with("source", None, self.conf)

    def test_plain_callable(self) -> None:
        calls = []
        hook = hooks.Hook(name="20-inline", kind="python", origin="test",
                          func=lambda *a: calls.append(a))
        hooks.run_hooks([hook], "stop", conf="c")
        self.assertEqual([("stop", None, "c")], calls)

    def test_strict_failure_stops_and_names_hook(self) -> None:
        self.entry_points = [_entry_point("20-bad", MODULE + ":failing_hook"),
                             _entry_point("30-after")]
        found = hooks.discover(None)
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks, found,
                                "start", "pre-start")
        self.assertEqual("Hook 20-bad failed in phase 'start pre-start': "
                         "raised RuntimeError: hook broke", str(exc))
        self.assertEqual(("20-bad", "start pre-start"),
                         (exc.hook, exc.phase))
        self.assertIsInstance(exc.__cause__, RuntimeError)
        self.recorder.assert_not_called()
        # The traceback is in the log, the one-line error goes up.
        self.assertIn('raise RuntimeError("hook broke")', self.log.output)

    def test_non_strict_failure_logged_and_rest_run(self) -> None:
        self.entry_points = [_entry_point("20-bad", MODULE + ":failing_hook"),
                             _entry_point("30-after")]
        found = hooks.discover(None)
        failures = hooks.run_hooks(found, "clean")
        self.assertEqual(["20-bad"], [f.hook for f in failures])
        self.recorder.assert_called_once_with("clean", None, None)
        self.assertIn("ERROR Hook 20-bad failed in phase 'clean': raised "
                      "RuntimeError: hook broke\nTraceback",
                      self.log.output)

    def test_default_strictness_by_phase(self) -> None:
        hook = hooks.Hook(name="20-bad", kind="python", origin="test",
                          func=failing_hook)
        for phase, subphase in (("override_defaults", None),
                                ("source", None), ("start", "pre-start"),
                                ("start", "post-config"),
                                ("start", "extra")):
            self.assertRaises(hooks.HookError, hooks.run_hooks, [hook],
                              phase, subphase)
        for phase in ("stop", "clean"):
            self.assertEqual(1, len(hooks.run_hooks([hook], phase)))
        self.assertEqual(1, len(hooks.run_hooks([hook], "start", "extra",
                                                strict=False)))
        self.assertRaises(hooks.HookError, hooks.run_hooks, [hook], "stop",
                          strict=True)

    def test_entry_point_that_cannot_load(self) -> None:
        self.entry_points = [_entry_point("20-gone", "no_such_module:f"),
                             _entry_point("30-after")]
        found = hooks.discover(None)
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks, found,
                                "source")
        self.assertIn("Hook 20-gone failed in phase 'source': entry point "
                      "no_such_module:f could not be loaded: "
                      "ModuleNotFoundError", str(exc))
        failures = hooks.run_hooks(found, "stop")
        self.assertEqual(["20-gone"], [f.hook for f in failures])
        self.recorder.assert_called_once_with("stop", None, None)

    def test_entry_point_not_callable(self) -> None:
        self.entry_points = [_entry_point("20-attr", MODULE + ":NS")]
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks,
                                hooks.discover(None), "source")
        self.assertIn("is not callable", str(exc))


class TestRunExecutable(HooksTestCase):

    def test_arguments_environment_and_output(self) -> None:
        self.write_hook("20-show", 'echo "args:$#:$1:$2"\n'
                        'echo "files:$CONDUCTOR_CONFIG_FILES"\n'
                        'echo "phase:$CONDUCTOR_HOOK_PHASE:'
                        '$CONDUCTOR_HOOK_SUBPHASE:$CONDUCTOR_HOOK_NAME"\n'
                        'echo "on stderr" >&2\n')
        found = hooks.discover(self.hooks_dir)
        conf_dir = self.useFixture(fixtures.TempDir()).path
        files = [os.path.join(conf_dir, "conductor.conf"),
                 "relative with space.conf"]
        self.assertEqual([], hooks.run_hooks(
            found, "start", "pre-start", config_files=files))
        expected_files = os.pathsep.join(
            [files[0], os.path.abspath(files[1])])
        self.assertEqual([
            "Running start pre-start hook 20-show",
            "20-show: args:2:start:pre-start",
            "20-show: files:%s" % expected_files,
            "20-show: phase:start:pre-start:20-show",
            "20-show: on stderr",
        ], self.lines())

    def test_phase_without_subphase_gets_one_argument(self) -> None:
        self.write_hook("20-args", 'echo "argc=$# $*"\n')
        hooks.run_hooks(hooks.discover(self.hooks_dir), "stop")
        self.assertIn("20-args: argc=1 stop", self.lines())

    def test_keeps_environment(self) -> None:
        self.useFixture(fixtures.EnvironmentVariable("HOOK_TEST_KEEP", "k"))
        self.write_hook("20-env", 'echo "keep=$HOOK_TEST_KEEP"\n')
        hooks.run_hooks(hooks.discover(self.hooks_dir), "clean")
        self.assertIn("20-env: keep=k", self.lines())

    def test_mixed_with_python_hooks_in_order(self) -> None:
        self.entry_points = [_entry_point("15-py")]
        self.write_hook("10-sh", "echo ten\n")
        self.write_hook("20-sh", "echo twenty\n")
        self.recorder.side_effect = (
            lambda *a: logging.getLogger("hook").info("fifteen"))
        hooks.run_hooks(hooks.discover(self.hooks_dir), "source")
        self.assertEqual(["Running source hook 10-sh", "10-sh: ten",
                          "Running source hook 15-py", "fifteen",
                          "Running source hook 20-sh", "20-sh: twenty"],
                         self.lines())

    def test_exit_status_strict(self) -> None:
        self.write_hook("20-fail", "echo trying\nexit 3\n")
        self.write_hook("30-never", "echo should not run\n")
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks,
                                hooks.discover(self.hooks_dir),
                                "start", "extra")
        self.assertEqual("Hook 20-fail failed in phase 'start extra': "
                         "exited with status 3", str(exc))
        self.assertIn("20-fail: trying", self.lines())
        self.assertNotIn("should not run", self.log.output)
        self.assertIn("ERROR Hook 20-fail failed", self.log.output)

    def test_exit_status_not_strict(self) -> None:
        self.write_hook("20-fail", "exit 1\n")
        self.write_hook("30-after", "echo still ran\n")
        failures = hooks.run_hooks(hooks.discover(self.hooks_dir), "stop")
        self.assertEqual(["Hook 20-fail failed in phase 'stop': exited with "
                          "status 1"], [str(f) for f in failures])
        self.assertIn("30-after: still ran", self.lines())

    def test_killed_by_signal(self) -> None:
        self.write_hook("20-kill", "kill -TERM $$\n")
        failures = hooks.run_hooks(hooks.discover(self.hooks_dir), "clean")
        self.assertEqual("killed by signal 15", failures[0].reason)

    def test_timeout_kills_hook_and_fails(self) -> None:
        self.write_hook("20-hang", "echo waiting\nsleep 60\necho never\n")
        self.write_hook("30-after", "echo after\n")
        found = hooks.discover(self.hooks_dir)
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks, found,
                                "start", "pre-start", timeout=0.2)
        self.assertEqual("Hook 20-hang failed in phase 'start pre-start': "
                         "killed after the 0.2s timeout", str(exc))
        # Time enough for 30-after to start and echo on a loaded machine.
        failures = hooks.run_hooks(found, "stop", timeout=1.0)
        self.assertEqual(["20-hang"], [f.hook for f in failures])
        self.assertIn("30-after: after", self.lines())
        self.assertNotIn("never", self.log.output)

    def test_cannot_execute(self) -> None:
        self.write_hook("20-binary", "\x7fnot really\n", shebang="")
        exc = self.assertRaises(hooks.HookError, hooks.run_hooks,
                                hooks.discover(self.hooks_dir), "source")
        self.assertIn("Hook 20-binary failed in phase 'source': could not "
                      "be executed: Exec format error", str(exc))

    def test_removed_after_discover(self) -> None:
        path = self.write_hook("20-gone")
        found = hooks.discover(self.hooks_dir)
        os.unlink(path)
        failures = hooks.run_hooks(found, "clean")
        self.assertIn("could not be executed", failures[0].reason)

    def test_output_lands_in_async_task_log(self) -> None:
        # Run from an async start-up task, a hook's output goes to the
        # task's log like everything else the task logs.
        self.write_hook("20-echo", "echo from the hook\n")
        log_dir = self.useFixture(fixtures.TempDir()).path
        group = async_tasks.TaskGroup(log_dir, log_format="%(message)s")
        self.addCleanup(group.cleanup)
        group.run("hooks", hooks.run_hooks, hooks.discover(self.hooks_dir),
                  "start", "post-config")
        self.assertNotIn("from the hook", self.log.output)
        group.wait("hooks")
        with open(os.path.join(log_dir, "hooks.log")) as f:
            self.assertEqual(["Running start post-config hook 20-echo",
                              "20-echo: from the hook"],
                             f.read().splitlines()[:2])
        self.assertIn("[async hooks] 20-echo: from the hook", self.lines())

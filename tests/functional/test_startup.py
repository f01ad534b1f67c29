# SPDX-License-Identifier: Apache-2.0
"""Start-up tasks and lifecycle hooks with a real conductor."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.functional import base

RECORDER = """#!/bin/sh
echo "$1 $2 files=$CONDUCTOR_CONFIG_FILES" >> %(record)s
echo "hook %(name)s saw phase $1 $2"
"""


class StartupTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.hooks_dir = os.path.join(self.workdir, "hooks")
        os.makedirs(self.hooks_dir)
        self.record = os.path.join(self.workdir, "phases.txt")

    def hook(self, name: str, body: str | None = None) -> str:
        path = os.path.join(self.hooks_dir, name)
        with open(path, "w") as stream:
            stream.write(body if body is not None else RECORDER % {
                "record": self.record, "name": name})
        os.chmod(path, 0o755)
        return path

    def options(self, **default: object) -> dict:
        values: dict[str, object] = {"host": "st", "enabled_drivers": "fake"}
        values.update(default)
        return {"DEFAULT": values, "hooks": {"hooks_dir": self.hooks_dir},
                "conductor": {"workers": 2, "heartbeat_interval": 1,
                              "heartbeat_timeout": 5,
                              "sync_power_state_interval": 0}}

    def phases(self) -> list[str]:
        if not os.path.exists(self.record):
            return []
        with open(self.record) as stream:
            return [line.split(" files=")[0].strip()
                    for line in stream.read().splitlines()]

    def run_failing(self, options: dict) -> subprocess.CompletedProcess:
        proc = base.ConductorProcess(self.workdir, options)
        proc.options["DEFAULT"].setdefault("state_path", self.workdir)
        proc.write_config()
        return subprocess.run(
            [base.binary("conductor"), "--config-file", proc.config_file],
            capture_output=True, text=True, timeout=60)


class TestHooks(StartupTestCase):

    def test_every_phase_runs_in_order(self) -> None:
        self.hook("20-record")
        conductor = self.start_conductor(self.options())
        base.wait_for(lambda: "start extra" in self.phases(), 30,
                      "the 'start extra' hooks ran")
        self.assertEqual(["source", "start pre-start", "start post-config",
                          "start extra"], self.phases())
        with open(self.record) as stream:
            self.assertIn("files=%s" % conductor.config_file, stream.read())
        self.assertIn("20-record: hook 20-record saw phase start extra",
                      conductor.log())
        conductor.signal(signal.SIGTERM)
        self.assertEqual(0, conductor.wait_exit(20))
        self.assertEqual("stop", self.phases()[-1])
        self.run_manage(conductor.config_file, "clean")
        self.assertEqual("clean", self.phases()[-1])

    def test_hooks_run_in_number_order(self) -> None:
        for name in ("50-b", "15-a", "50-a"):
            self.hook(name, "#!/bin/sh\n[ \"$1\" = source ] && "
                            "echo %s >> %s\nexit 0\n" % (name, self.record))
        self.start_conductor(self.options())
        base.wait_for(lambda: len(self.phases()) == 3, 20,
                      "three source hooks ran")
        self.assertEqual(["15-a", "50-a", "50-b"], self.phases())

    def test_failing_start_hook_stops_start_up_naming_it(self) -> None:
        self.hook("30-broken", "#!/bin/sh\n[ \"$2\" = pre-start ] && "
                               "exit 7\nexit 0\n")
        result = self.run_failing(self.options())
        self.assertEqual(1, result.returncode, result.stderr)
        self.assertIn("conductor: ERROR: Hook 30-broken failed in phase "
                      "'start pre-start': exited with status 7",
                      result.stderr)
        self.assertNotIn("starting 2 worker(s)", result.stderr)

    def test_failing_start_extra_hook_stops_the_conductor(self) -> None:
        self.hook("40-late", "#!/bin/sh\n[ \"$2\" = extra ] && exit 3\n"
                             "exit 0\n")
        conductor = self.start_conductor(self.options())
        self.assertEqual(1, conductor.wait_exit(30))
        self.assertIn("Stopping the conductor: Hook 40-late failed in phase "
                      "'start extra': exited with status 3", conductor.log())
        self.assertEqual([], conductor.children())

    def test_reserved_number_is_refused(self) -> None:
        self.hook("05-mine")
        result = self.run_failing(self.options())
        self.assertEqual(1, result.returncode)
        self.assertIn("05-mine", result.stderr)
        self.assertIn("reserved", result.stderr)


class TestStartupTasks(StartupTestCase):

    def _inventory(self) -> str:
        path = os.path.join(self.workdir, "fleet.yaml")
        with open(path, "w") as stream:
            for i in range(30):
                stream.write("- {name: s%02d, driver: fake}\n" % i)
        return path

    def _check(self, parallel: bool) -> str:
        conductor = self.start_conductor(self.options(
            parallel_startup=parallel, inventory_file=self._inventory()))
        base.wait_for(lambda: "starting 2 worker(s)" in conductor.log(), 30,
                      "start-up finished")
        log = conductor.log()
        async_dir = os.path.join(self.workdir, "async")
        for name in ("pre-start-hooks", "database", "drivers",
                     "inventory-parse-1", "inventory-import"):
            self.assertTrue(os.path.exists(os.path.join(
                async_dir, "%s.log" % name)), name)
            self.assertIn("[async %s] finished in" % name, log)
        with open(os.path.join(async_dir, "inventory-import.log")) as f:
            self.assertIn("30 node(s) enrolled", f.read())
        self.assertIn("Start-up async tasks: 5 finished", log)
        return log

    def test_parallel_start_up(self) -> None:
        self._check(parallel=True)

    def test_serial_start_up_logs_the_same(self) -> None:
        log = self._check(parallel=False)
        self.assertIn("speedup 1.00x", log)

    def test_driver_missing_its_tool_stops_start_up(self) -> None:
        # Without this check every IPMI node would fail its first polls
        # and end up in maintenance.
        options = self.options(enabled_drivers="fake,ipmi")
        options["ipmi"] = {"ipmitool_path": "/nonexistent/ipmitool"}
        result = self.run_failing(options)
        self.assertEqual(1, result.returncode)
        self.assertIn("conductor: ERROR: Driver ipmi could not be loaded: "
                      "cannot run [ipmi] ipmitool_path "
                      "'/nonexistent/ipmitool': No such file or directory",
                      result.stderr)

    def test_failed_task_stops_start_up_with_its_message(self) -> None:
        bad = os.path.join(self.workdir, "bad.yaml")
        with open(bad, "w") as stream:
            stream.write("- {name: x, driver: fake\n")
        result = self.run_failing(self.options(inventory_file=bad))
        self.assertEqual(1, result.returncode)
        self.assertIn("conductor: ERROR: %s: malformed YAML at line 2"
                      % bad, result.stderr)

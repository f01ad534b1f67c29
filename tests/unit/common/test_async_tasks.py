# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.async_tasks.

Nothing here sleeps: Events and Barriers order the threads, and an
injected clock makes every timing exact.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
from typing import Any, Callable, TYPE_CHECKING
from unittest import mock

import fixtures

from conductor.common import async_tasks
from conductor.common import exceptions
from tests import base
from tests import fakes

TASK_LOG = logging.getLogger("tests.task")

# Without timestamps, so that log files and replays compare exactly.
FORMAT = "%(levelname)s %(name)s %(message)s"


class ThreadClock:
    """A fake clock each thread moves on its own.

    Reads return the shared base plus what the reading thread advanced,
    so concurrent tasks can each take a known time without racing.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> float:
        return float(getattr(self._local, "offset", 0.0))

    def advance(self, seconds: float) -> None:
        self._local.offset = self() + seconds


def _capture_installed() -> bool:
    root = logging.getLogger()
    if any(isinstance(h, async_tasks._LogCapture) for h in root.handlers):
        return True
    return any(isinstance(f, async_tasks._RejectTaskRecords)
               for h in root.handlers for f in h.filters)


def _task_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith("async-")]


class AsyncTestCase(base.TestCase):

    parallel = True

    def setUp(self) -> None:
        super().setUp()
        self.log_dir = self.useFixture(fixtures.TempDir()).path
        self.main = self.useFixture(
            fixtures.FakeLogger(level=logging.DEBUG, format=FORMAT))
        # Registered first so it runs last: nothing may leak from a test.
        self.addCleanup(self._check_no_leak)

    def _check_no_leak(self) -> None:
        self.assertFalse(_capture_installed(), "log capture left installed")
        self.assertEqual([], _task_threads())

    def group(self, clock: Callable[[], float] | None = None,
              parallel: bool | None = None) -> async_tasks.TaskGroup:
        group = async_tasks.TaskGroup(
            self.log_dir,
            parallel=self.parallel if parallel is None else parallel,
            clock=clock or fakes.FakeClock(), log_format=FORMAT)
        self.addCleanup(group.cleanup)
        return group

    def read_log(self, name: str) -> list[str]:
        with open(os.path.join(self.log_dir, name + ".log")) as f:
            return f.read().splitlines()

    def async_lines(self, output: str | None = None) -> list[str]:
        text = self.main.output if output is None else output
        return [line for line in text.splitlines() if "[async " in line]


if TYPE_CHECKING:
    _MixinBase = AsyncTestCase
else:
    _MixinBase = object


class BehaviourMixin(_MixinBase):
    """Tests that must pass identically with and without parallelism."""

    def test_log_goes_to_file_and_is_replayed_at_wait(self) -> None:
        group = self.group()

        def step(word: str) -> str:
            TASK_LOG.info("one %s", word)
            TASK_LOG.warning("two %s", word)
            return word.upper()

        group.run("step", step, "x")
        self.assertNotIn("one x", self.main.output)
        self.assertEqual({"step": "X"}, group.wait("step"))
        self.assertEqual(["INFO tests.task one x",
                          "WARNING tests.task two x"],
                         self.read_log("step"))
        self.assertEqual([
            "INFO conductor.common.async_tasks [async step] started "
            "BehaviourMixin.test_log_goes_to_file_and_is_replayed_at_wait."
            "<locals>.step, logging to %s/step.log" % self.log_dir,
            "INFO conductor.common.async_tasks [async step] INFO "
            "tests.task one x",
            "WARNING conductor.common.async_tasks [async step] WARNING "
            "tests.task two x",
            "INFO conductor.common.async_tasks [async step] finished in "
            "0.00s",
        ], self.async_lines())

    def test_failure_surfaces_at_wait_then_later_waits_work(self) -> None:
        group = self.group()
        error = ValueError("boom")

        def bad() -> None:
            TASK_LOG.info("about to fail")
            raise error

        group.run("bad", bad)
        group.run("good", lambda: 42)
        self.assertNotIn("FAILED", self.main.output)
        exc = self.assertRaises(async_tasks.TaskFailed, group.wait, "bad")
        self.assertEqual("Async task bad failed: ValueError: boom",
                         str(exc))
        self.assertIsInstance(exc, exceptions.ConductorException)
        self.assertEqual("bad", exc.name)
        self.assertIs(error, exc.original)
        self.assertIs(error, exc.__cause__)
        # The traceback is in the task log and replayed with it.
        log = self.read_log("bad")
        self.assertEqual("INFO tests.task about to fail", log[0])
        self.assertIn("ERROR conductor.common.async_tasks [async bad] "
                      "failed", log[1])
        self.assertIn("ValueError: boom", log[-1])
        self.assertIn("[async bad] Traceback (most recent call last):",
                      self.main.output)
        self.assertIn("ERROR conductor.common.async_tasks [async bad] "
                      "FAILED after 0.00s: ValueError: boom",
                      self.main.output)
        self.assertEqual({"good": 42}, group.wait("good"))
        self.assertRaises(async_tasks.UnknownTask, group.wait, "bad")
        # Replayed: the traceback and the task's own "failed" line at
        # DEBUG; the reason at ERROR once.
        levels: dict[str, list[str]] = {}
        for line in self.async_lines():
            levels.setdefault(line.split(" ", 1)[0], []).append(line)
        self.assertEqual(1, len(levels["ERROR"]), str(levels["ERROR"]))
        self.assertIn("FAILED after", levels["ERROR"][0])
        self.assertTrue(any("Traceback (most recent" in line
                            for line in levels["DEBUG"]))
        self.assertTrue(any(line.endswith("ValueError: boom")
                            for line in levels["DEBUG"]))

    def test_wait_unknown_name(self) -> None:
        group = self.group()
        group.run("known", lambda: None)
        exc = self.assertRaises(async_tasks.UnknownTask, group.wait,
                                "known", "typo")
        self.assertIsInstance(exc, ValueError)
        self.assertEqual("Cannot wait for async task typo: it was never "
                         "started (started: known).", str(exc))
        # Checked before waiting: "known" is still there to wait for.
        self.assertEqual({"known": None}, group.wait("known"))

    def test_wait_twice(self) -> None:
        group = self.group()
        group.run("once", lambda: None)
        group.wait("once")
        exc = self.assertRaises(async_tasks.UnknownTask, group.wait, "once")
        self.assertEqual("Cannot wait for async task once: it was already "
                         "waited for.", str(exc))
        self.assertEqual({}, group.wait())

    def test_same_name_twice_in_one_wait(self) -> None:
        group = self.group()
        group.run("a", lambda: None)
        self.assertRaises(async_tasks.UnknownTask, group.wait, "a", "a")
        group.wait("a")

    def test_duplicate_name_refused_and_first_log_kept(self) -> None:
        group = self.group()
        group.run("dup", TASK_LOG.info, "first")
        calls: list[int] = []
        exc = self.assertRaises(async_tasks.DuplicateTask, group.run, "dup",
                                calls.append, 1)
        self.assertIsInstance(exc, ValueError)
        self.assertIn("dup was already started", str(exc))
        group.wait("dup")
        self.assertEqual([], calls)
        self.assertEqual(["INFO tests.task first"], self.read_log("dup"))
        # Waited for or not, the name stays taken in this group.
        self.assertRaises(async_tasks.DuplicateTask, group.run, "dup",
                          calls.append, 1)

    def test_invalid_names(self) -> None:
        group = self.group()
        for name in ("", "../escape", "a/b", "with space", ".hidden",
                     "-opt"):
            self.assertRaises(ValueError, group.run, name, lambda: None)
        self.assertEqual([], os.listdir(self.log_dir))

    def test_arguments_with_spaces_passed_intact(self) -> None:
        # devstack's async_run split "$*" back into words.
        group = self.group()
        seen = []
        group.run("args", lambda *a, **kw: seen.append((a, kw)),
                  "two words", "  padded ", "a;b $(x)",
                  option="k = v")
        group.wait("args")
        self.assertEqual([(("two words", "  padded ", "a;b $(x)"),
                           {"option": "k = v"})], seen)

    def test_run_command_arguments_and_output_in_task_log(self) -> None:
        group = self.group()
        # NOTE: flush, or a piped stdout reaches the log only at exit,
        # after stderr, whatever the order of the prints.
        script = ("import sys; print(sys.argv[1:], flush=True); "
                  "print('to stderr', file=sys.stderr, flush=True)")

        def step() -> int:
            result = async_tasks.run_command(
                [sys.executable, "-c", script, "two words", "$HOME",
                 "a;b"], label="py")
            return result.returncode

        group.run("cmd", step)
        self.assertNotIn("two words", self.main.output)
        self.assertEqual({"cmd": 0}, group.wait("cmd"))
        self.assertEqual([
            "INFO conductor.common.async_tasks py: ['two words', '$HOME', "
            "'a;b']",
            "INFO conductor.common.async_tasks py: to stderr",
        ], self.read_log("cmd"))
        self.assertIn("[async cmd] INFO conductor.common.async_tasks py: "
                      "['two words', '$HOME', 'a;b']", self.main.output)

    def test_cleanup_waits_for_and_warns_about_unwaited(self) -> None:
        # devstack's async_cleanup never waited (and did nothing at all
        # without DEVSTACK_PARALLEL).
        group = self.group()
        group.run("forgotten", TASK_LOG.info, "late line")
        group.run("broken", self._raise, RuntimeError("nope"))
        group.run("collected", lambda: None)
        group.wait("collected")
        failures = group.cleanup()
        self.assertEqual(["broken"], [f.name for f in failures])
        self.assertIn("WARNING conductor.common.async_tasks [async "
                      "forgotten] was never waited for; waiting for it now",
                      self.main.output)
        self.assertIn("WARNING conductor.common.async_tasks [async "
                      "broken] was never waited for", self.main.output)
        self.assertNotIn("[async collected] was never waited",
                         self.main.output)
        self.assertIn("[async forgotten] INFO tests.task late line",
                      self.main.output)
        self.assertIn("[async broken] FAILED after 0.00s: RuntimeError: "
                      "nope", self.main.output)
        self.assertEqual([], group.pending())
        self.assertEqual([], _task_threads())
        self.assertFalse(_capture_installed())
        self.assertEqual([], group.cleanup())

    def test_durations_recorded(self) -> None:
        # devstack never set an end time for inline tasks.
        clock = fakes.FakeClock(100.0)
        group = self.group(clock=clock)
        group.run("slow", clock.advance, 2.5)
        group.wait("slow")
        self.assertIn("[async slow] finished in 2.50s", self.main.output)
        self.assertEqual({"slow": 2.5}, group.summary().durations)

    def test_failed_task_duration(self) -> None:
        clock = fakes.FakeClock()

        def fail() -> None:
            clock.advance(1.25)
            raise KeyError("k")

        group = self.group(clock=clock)
        group.run("fail", fail)
        self.assertRaises(async_tasks.TaskFailed, group.wait, "fail")
        self.assertIn("FAILED after 1.25s: KeyError: 'k'", self.main.output)
        self.assertEqual({"fail": 1.25}, group.summary().durations)

    def test_wait_all_in_start_order(self) -> None:
        group = self.group()
        for name in ("c", "a", "b"):
            group.run(name, TASK_LOG.info, name)
        self.assertEqual(["c", "a", "b"], list(group.wait()))
        finished = [line.split()[3] for line in self.async_lines()
                    if "finished" in line]
        self.assertEqual(["c]", "a]", "b]"], finished)

    def test_main_thread_logs_are_not_captured(self) -> None:
        group = self.group()
        group.run("quiet", lambda: None)
        TASK_LOG.info("from the main thread")
        group.wait()
        self.assertIn("INFO tests.task from the main thread",
                      self.main.output)
        self.assertEqual([], self.read_log("quiet"))

    def test_log_dir_created(self) -> None:
        self.log_dir = os.path.join(self.log_dir, "deeper", "async")
        group = self.group()
        group.run("t", TASK_LOG.info, "x")
        group.wait()
        self.assertEqual(["INFO tests.task x"], self.read_log("t"))

    def test_log_dir_and_task_logs_are_private(self) -> None:
        # NOTE: a task log may quote an inventory's BMC passwords.
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        self.log_dir = os.path.join(self.log_dir, "deeper", "async")
        stale = os.path.join(self.log_dir, "old.log")
        os.makedirs(self.log_dir)
        os.chmod(self.log_dir, 0o700)
        with open(stale, "w") as stream:
            stream.write("left by an older release\n")
        os.chmod(stale, 0o644)
        group = self.group()
        group.run("t", TASK_LOG.info, "x")
        group.run("old", TASK_LOG.info, "y")
        group.wait()
        for name in ("t", "old"):
            self.assertEqual(0o600, stat.S_IMODE(os.stat(
                os.path.join(self.log_dir, name + ".log")).st_mode), name)
        self.assertEqual(["INFO tests.task y"], self.read_log("old"))

    def test_created_log_dir_is_private(self) -> None:
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        top = os.path.join(self.log_dir, "deeper")
        self.log_dir = os.path.join(top, "async")
        group = self.group()
        group.run("t", TASK_LOG.info, "x")
        group.wait()
        for path in (top, self.log_dir):
            self.assertEqual(0o700, stat.S_IMODE(os.stat(path).st_mode),
                             path)

    @staticmethod
    def _raise(exc: BaseException) -> None:
        raise exc


class TestParallel(BehaviourMixin, AsyncTestCase):
    parallel = True

    def test_tasks_run_at_the_same_time(self) -> None:
        # Each task can only pass the barrier if the other one is running.
        barrier = threading.Barrier(2, timeout=base.WAIT)
        group = self.group()
        group.run("left", barrier.wait)
        group.run("right", barrier.wait)
        group.wait("left", "right")

    def test_replay_in_wait_order_not_completion_order(self) -> None:
        release_first = threading.Event()
        second_done = threading.Event()

        def first() -> None:
            TASK_LOG.info("first begins")
            release_first.wait(base.WAIT)
            TASK_LOG.info("first ends")

        def second() -> None:
            TASK_LOG.info("second only")
            second_done.set()

        group = self.group()
        group.run("first", first)
        group.run("second", second)
        self.assertTrue(second_done.wait(base.WAIT))
        release_first.set()
        group.wait("first", "second")
        replayed = [line.split("] ", 1)[1] for line in self.async_lines()
                    if "tests.task" in line]
        self.assertEqual(["INFO tests.task first begins",
                          "INFO tests.task first ends",
                          "INFO tests.task second only"], replayed)
        self.assertEqual(["INFO tests.task first begins",
                          "INFO tests.task first ends"],
                         self.read_log("first"))

    def test_concurrent_task_logs_do_not_mix(self) -> None:
        barrier = threading.Barrier(2, timeout=base.WAIT)

        def chatty(word: str) -> None:
            for i in range(3):
                barrier.wait()
                TASK_LOG.info("%s %d", word, i)

        group = self.group()
        group.run("ping", chatty, "ping")
        group.run("pong", chatty, "pong")
        group.wait()
        self.assertEqual(["INFO tests.task ping %d" % i for i in range(3)],
                         self.read_log("ping"))
        self.assertEqual(["INFO tests.task pong %d" % i for i in range(3)],
                         self.read_log("pong"))
        replayed = [line.split("] ", 1)[1] for line in self.async_lines()
                    if "tests.task" in line]
        self.assertEqual(self.read_log("ping") + self.read_log("pong"),
                         replayed)

    def test_cleanup_joins_running_task(self) -> None:
        go = threading.Event()
        group = self.group()
        group.run("running", go.wait, base.WAIT)
        self.assertEqual(1, len(_task_threads()))
        go.set()
        self.assertEqual([], group.cleanup())
        self.assertEqual([], _task_threads())

    def test_summary_math(self) -> None:
        clock = fakes.FakeClock()
        go = threading.Event()

        def slow() -> None:
            go.wait(base.WAIT)
            clock.now = 10.0

        group = self.group(clock=clock)
        group.run("slow", slow)            # starts at 0, ends at 10
        clock.now = 4.0
        group.run("quick", lambda: None)   # starts and ends at 4
        group.wait("quick")                # no time blocked
        # The slow task may finish only once wait() has read the clock:
        # the caller then blocks from 4 until 10.
        clock.on_read = go.set
        group.wait("slow")
        clock.on_read = None
        clock.now = 12.0
        summary = group.summary()
        self.assertEqual(async_tasks.Summary(
            background=10.0, waiting=6.0, elapsed=12.0,
            serial_estimate=16.0, speedup=16.0 / 12.0,
            durations={"slow": 10.0, "quick": 0.0}), summary)
        self.assertEqual(
            "async tasks: 2 finished, 10.00s in background, 6.00s waiting, "
            "12.00s elapsed, 16.00s if run serially, speedup 1.33x",
            str(summary))

    def test_base_exception_in_thread_is_reported_at_wait(self) -> None:
        group = self.group()
        group.run("exits", self._raise, SystemExit(3))
        exc = self.assertRaises(async_tasks.TaskFailed, group.wait, "exits")
        self.assertIsInstance(exc.original, SystemExit)

    def test_nothing_started_before_run(self) -> None:
        before = threading.active_count()
        group = async_tasks.TaskGroup(self.log_dir)
        self.assertEqual(before, threading.active_count())
        self.assertFalse(_capture_installed())
        self.assertEqual([], os.listdir(self.log_dir))
        group.cleanup()

    def test_two_groups_capture_independently(self) -> None:
        barrier = threading.Barrier(2, timeout=base.WAIT)
        one = self.group()
        other = async_tasks.TaskGroup(os.path.join(self.log_dir, "other"),
                                      clock=fakes.FakeClock(),
                                      log_format=FORMAT)
        self.addCleanup(other.cleanup)

        def step(word: str) -> None:
            barrier.wait()
            TASK_LOG.info(word)

        one.run("t", step, "one")
        other.run("t", step, "other")
        other.wait()
        one.wait()
        self.assertEqual(["INFO tests.task one"], self.read_log("t"))
        with open(os.path.join(self.log_dir, "other", "t.log")) as f:
            self.assertEqual("INFO tests.task other\n", f.read())


class TestInline(BehaviourMixin, AsyncTestCase):
    parallel = False

    def test_runs_in_callers_thread_during_run(self) -> None:
        group = self.group()
        seen = []
        group.run("here", lambda: seen.append(threading.current_thread()))
        self.assertEqual([threading.current_thread()], seen)
        self.assertEqual([], _task_threads())
        group.wait()

    def test_summary_math(self) -> None:
        clock = fakes.FakeClock()
        group = self.group(clock=clock)
        group.run("a", clock.advance, 4.0)
        clock.advance(1.0)
        group.wait("a")
        summary = group.summary()
        # The caller sat through the whole task: that is waiting time,
        # so the estimate is the elapsed time and there is no speedup.
        self.assertEqual(async_tasks.Summary(
            background=4.0, waiting=4.0, elapsed=5.0, serial_estimate=5.0,
            speedup=1.0, durations={"a": 4.0}), summary)

    def test_keyboard_interrupt_is_not_deferred(self) -> None:
        group = self.group()
        self.assertRaises(KeyboardInterrupt, group.run, "ctrl-c",
                          self._raise, KeyboardInterrupt())
        self.assertRaises(async_tasks.TaskFailed, group.wait, "ctrl-c")


class TestSameBehaviourBothWays(AsyncTestCase):
    """parallel=False gives the same logs, timings and errors."""

    def scenario(self, parallel: bool) -> tuple[Any, ...]:
        start = len(self.main.output)
        clock = ThreadClock()

        def build(item: str) -> None:
            TASK_LOG.info("building %s", item)
            async_tasks.run_command([sys.executable, "-c", "print('out')"],
                                    label="child")
            clock.advance(2.0)

        def broken() -> None:
            clock.advance(0.5)
            TASK_LOG.warning("going down")
            raise OSError("disk on fire")

        group = self.group(clock=clock, parallel=parallel)
        group.run("build", build, "thing one")
        group.run("broken", broken)
        group.wait("build")
        error = self.assertRaises(async_tasks.TaskFailed, group.wait,
                                  "broken")
        logs = (self.read_log("build"), self.read_log("broken"))
        main = self.main.output[start:].splitlines()
        return (main, logs, str(error),
                group.summary().durations)

    def test_identical(self) -> None:
        parallel = self.scenario(True)
        inline = self.scenario(False)
        self.assertEqual(parallel, inline)
        self.assertEqual({"build": 2.0, "broken": 0.5}, parallel[3])


class TestRunCommand(AsyncTestCase):

    def test_refuses_a_shell_string(self) -> None:
        self.assertRaises(TypeError, async_tasks.run_command, "echo hi")
        self.assertRaises(TypeError, async_tasks.run_command, ["echo", 1])
        self.assertRaises(ValueError, async_tasks.run_command, [])

    def test_outside_a_task_logs_to_main_log(self) -> None:
        result = async_tasks.run_command(
            [sys.executable, "-c", "print('a'); print('b')"])
        self.assertEqual("a\nb\n", result.stdout)
        self.assertEqual(0, result.returncode)
        self.assertIn("%s: a" % os.path.basename(sys.executable),
                      self.main.output)

    def test_failure(self) -> None:
        argv = [sys.executable, "-c", "print('why'); raise SystemExit(3)"]
        exc = self.assertRaises(subprocess.CalledProcessError,
                                async_tasks.run_command, argv)
        self.assertEqual(3, exc.returncode)
        self.assertEqual("why\n", exc.output)
        result = async_tasks.run_command(argv, check=False)
        self.assertEqual(3, result.returncode)

    def test_timeout_kills_the_whole_session(self) -> None:
        # The shell's child would keep the pipe open if only the shell
        # were killed; the test would then hang for a minute.
        exc = self.assertRaises(
            subprocess.TimeoutExpired, async_tasks.run_command,
            ["/bin/sh", "-c", "echo started; sleep 60; echo never"],
            timeout=1.0)
        self.assertEqual("started\n", exc.output)

    def test_is_available_on_the_group(self) -> None:
        result = async_tasks.TaskGroup.run_command(
            [sys.executable, "-c", "print('x')"])
        self.assertEqual("x\n", result.stdout)


class TestTaskFailed(base.TestCase):

    def test_pickles(self) -> None:
        exc = async_tasks.TaskFailed("t", ValueError("v"))
        copy = pickle.loads(pickle.dumps(exc))
        self.assertEqual(str(exc), str(copy))
        self.assertEqual("t", copy.name)

    def test_empty_message(self) -> None:
        exc = async_tasks.TaskFailed("t", RuntimeError())
        self.assertEqual("Async task t failed: RuntimeError", str(exc))


class TestDefaultGroup(AsyncTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(async_tasks.reset)

    def test_needs_configure(self) -> None:
        async_tasks.reset()
        self.assertRaises(RuntimeError, async_tasks.run, "x", print)
        self.assertRaises(RuntimeError, async_tasks.wait)

    def test_module_functions(self) -> None:
        group = async_tasks.configure(self.log_dir, parallel=False,
                                      clock=fakes.FakeClock(),
                                      log_format=FORMAT)
        self.assertIs(group, async_tasks.default_group())
        async_tasks.run("one", TASK_LOG.info, "hello there")
        async_tasks.run("two", lambda: 2)
        self.assertEqual({"one": None}, async_tasks.wait("one"))
        self.assertRaises(RuntimeError, async_tasks.configure, self.log_dir)
        self.assertEqual([], async_tasks.cleanup())
        self.assertIn("[async two] was never waited for", self.main.output)
        self.assertEqual({"one": 0.0, "two": 0.0},
                         async_tasks.summary().durations)
        self.assertEqual(["INFO tests.task hello there"],
                         self.read_log("one"))
        # Once everything was collected, a new default may replace it.
        self.assertIsNot(group, async_tasks.configure(self.log_dir))

    def test_reset_cleans_up(self) -> None:
        go = threading.Event()
        async_tasks.configure(self.log_dir)
        async_tasks.run("pending", go.wait, base.WAIT)
        go.set()
        async_tasks.reset()
        self.assertEqual([], _task_threads())
        self.assertFalse(_capture_installed())


def _wait_for_file(path: str) -> bool:
    """Wait (bounded) for another process to create ``path``."""
    return bool(base.wait_until(lambda: os.path.exists(path)))


class ProcessMixin(_MixinBase):
    """run_process: the same contract as run, in a forked child."""

    def test_result_and_logs_come_back_from_the_child(self) -> None:
        group = self.group()

        def step(word: str) -> tuple[int, str]:
            TASK_LOG.info("child says %s", word)
            return os.getpid(), word.upper()

        group.run_process("step", step, "hello world")
        pid, word = group.wait("step")["step"]
        self.assertNotEqual(os.getpid(), pid)
        self.assertEqual("HELLO WORLD", word)
        self.assertEqual(["INFO tests.task child says hello world"],
                         self.read_log("step"))
        self.assertIn("[async step] INFO tests.task child says hello world",
                      self.main.output)

    def test_arguments_need_not_pickle(self) -> None:
        group = self.group()
        lock = threading.Lock()  # cannot be pickled; reaches fn by fork
        group.run_process("step", lambda held: held.locked(), lock)
        self.assertEqual({"step": False}, group.wait("step"))

    def test_exception_surfaces_at_wait_with_traceback_in_log(self) -> None:
        group = self.group()

        def bad() -> None:
            raise exceptions.InvalidParameterValue(err="bad node 7")

        group.run_process("bad", bad)
        exc = self.assertRaises(async_tasks.TaskFailed, group.wait, "bad")
        self.assertIsInstance(exc.original, exceptions.InvalidParameterValue)
        self.assertEqual("bad node 7", str(exc.original))
        log = "\n".join(self.read_log("bad"))
        self.assertIn("[async bad] failed in process", log)
        self.assertIn("Traceback", log)

    def test_child_starts_with_the_inherited_objects_frozen(self) -> None:
        # Collections in the child must not traverse (and copy) the
        # parent's heap; the parent's own collector is left alone.
        group = self.group()
        parent_frozen = gc.get_freeze_count()
        group.run_process("frozen", gc.get_freeze_count)
        frozen = group.wait("frozen")["frozen"]
        self.assertGreater(frozen, parent_frozen + 1000)
        self.assertEqual(parent_frozen, gc.get_freeze_count())

    def test_unpicklable_result_fails_clearly(self) -> None:
        group = self.group()
        group.run_process("lock", threading.Lock)
        exc = self.assertRaises(async_tasks.TaskFailed, group.wait, "lock")
        self.assertIn("task lock: its result cannot be sent back from its "
                      "process", str(exc))

    def test_killed_child_fails_clearly(self) -> None:
        group = self.group()
        group.run_process("die", lambda: os.kill(os.getpid(),
                                                 signal.SIGKILL))
        exc = self.assertRaises(async_tasks.TaskFailed, group.wait, "die")
        self.assertIn("the process of task die ended without a result "
                      "(killed by signal 9)", str(exc))


class TestProcessParallel(ProcessMixin, AsyncTestCase):

    def test_consecutive_children_fork_beside_no_waiter(self) -> None:
        # Each fork must happen while no other thread of the group runs:
        # waiter threads start at the next thread task or wait.
        group = self.group()
        real_fork = os.fork
        threads_at_fork: list[int] = []

        def fork() -> int:
            threads_at_fork.append(threading.active_count())
            return real_fork()

        before = threading.active_count()
        with mock.patch.object(async_tasks.os, "fork", side_effect=fork):
            group.run_process("a", os.getpid)
            group.run_process("b", os.getpid)
            group.run_process("c", os.getpid)
        self.assertEqual([before] * 3, threads_at_fork)
        group.run("t", lambda: "thread")
        results = group.wait()
        self.assertEqual({"a", "b", "c", "t"}, set(results))
        self.assertEqual(3, len({results[n] for n in "abc"}))

    def test_a_thread_task_starts_the_waiters(self) -> None:
        group = self.group()
        group.run_process("p", os.getpid)
        group.run("t", threading.active_count)
        # The process task's waiter was started before the thread task.
        self.assertGreaterEqual(group.wait("t")["t"], 2)
        self.assertNotEqual(os.getpid(), group.wait("p")["p"])

    def test_child_is_forked_from_the_callers_thread(self) -> None:
        # A forked child's only thread keeps the ident of the thread that
        # forked it: the caller's, not a task thread that could race
        # other threads' locks.
        group = self.group()
        group.run_process("who", threading.get_ident)
        self.assertEqual({"who": threading.get_ident()}, group.wait("who"))

    def test_a_failed_fork_forgets_the_task(self) -> None:
        group = self.group()
        with mock.patch.object(async_tasks.os, "fork", autospec=True,
                               side_effect=OSError("no more processes")):
            self.assertRaises(OSError, group.run_process, "x", os.getpid)
        self.assertEqual([], group.names())
        group.run("x", lambda: 1)  # the name is free again
        self.assertEqual({"x": 1}, group.wait("x"))

    def test_children_run_at_the_same_time(self) -> None:
        group = self.group()

        def meet(mine: str, other: str) -> bool:
            open(mine, "w").close()
            return _wait_for_file(other)

        first = os.path.join(self.log_dir, "first")
        second = os.path.join(self.log_dir, "second")
        group.run_process("a", meet, first, second)
        group.run_process("b", meet, second, first)
        self.assertEqual({"a": True, "b": True}, group.wait("a", "b"))


class TestProcessInline(ProcessMixin, AsyncTestCase):
    parallel = False

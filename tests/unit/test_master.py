# SPDX-License-Identifier: Apache-2.0
"""The master's supervision: SIGINT as SIGTERM, the restart policy."""

from __future__ import annotations

import logging
import signal
import threading
from unittest import mock

import cotyledon
from cotyledon import _service_worker
import fixtures

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import exceptions
from conductor.common import metrics
from conductor.drivers import fake
from conductor.drivers import loader
from conductor import health
from conductor import lifecycle
from conductor import master
from conductor import periodics
from conductor import service
from conductor import status
from tests import base
from tests.unit import test_service


class FakeClock:
    """``wait`` that only advances the time it reports."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


class TestRestartPolicy(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.clock = FakeClock()

    def policy(self, max_failures: int) -> master.RestartPolicy:
        return master.RestartPolicy(max_failures, wait=self.clock.wait)

    def test_backs_off_then_gives_up_naming_the_cause(self) -> None:
        policy = self.policy(5)
        for _ in range(4):
            self.assertTrue(policy.worker_died(1, "ValueError: boom"))
            self.assertIsNone(policy.gave_up)
        self.assertEqual([1.0, 2.0, 4.0, 8.0], self.clock.waits)
        self.assertEqual(15.0, self.clock.now)
        self.assertFalse(policy.worker_died(1, "ValueError: boom"))
        self.assertEqual("worker 1 failed to start 5 time(s) in a row: "
                         "ValueError: boom", policy.gave_up)
        # Giving up does not wait.
        self.assertEqual(15.0, self.clock.now)

    def test_a_started_worker_resets_its_count(self) -> None:
        policy = self.policy(3)
        self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertTrue(policy.worker_died(0, None))   # ran, then died
        self.assertEqual(0, policy.failures_in_a_row(0))
        self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertIsNone(policy.gave_up)
        # The wait starts again from the first delay; a crash after a
        # start does not wait (cotyledon paces those).
        self.assertEqual([1.0, 2.0, 1.0, 2.0], self.clock.waits)

    def test_counts_each_worker_separately(self) -> None:
        policy = self.policy(2)
        self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertTrue(policy.worker_died(1, "E: b"))
        self.assertEqual(1, policy.failures_in_a_row(0))
        self.assertFalse(policy.worker_died(1, "E: b"))
        self.assertEqual("worker 1 failed to start 2 time(s) in a row: E: b",
                         policy.gave_up)

    def test_zero_never_gives_up_and_caps_the_wait(self) -> None:
        policy = self.policy(0)
        for _ in range(10):
            self.assertTrue(policy.worker_died(0, "E: a"))
        self.assertIsNone(policy.gave_up)
        self.assertEqual([1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 5,
                         self.clock.waits)

    def test_one_gives_up_at_the_first_failure(self) -> None:
        policy = self.policy(1)
        self.assertFalse(policy.worker_died(0, "E: a"))
        self.assertEqual([], self.clock.waits)


class TestStartFailures(base.TestCase):

    def test_reason_is_taken_once(self) -> None:
        failures = lifecycle.StartFailures(2)
        self.assertIsNone(failures.take(1))
        failures.record(1, "ValueError: \u00e9t\u00e9")
        self.assertIsNone(failures.take(0))
        self.assertEqual("ValueError: \u00e9t\u00e9", failures.take(1))
        self.assertIsNone(failures.take(1))

    def test_long_reason_is_truncated(self) -> None:
        failures = lifecycle.StartFailures(1)
        failures.record(0, "x" * 2000)
        self.assertEqual("x" * (lifecycle.REASON_SIZE - 1), failures.take(0))

    def test_start_failed_records_for_the_installed_registry(self) -> None:
        failures = lifecycle.StartFailures(3)
        lifecycle.install(failures)
        self.addCleanup(lifecycle.install, None)
        exc = lifecycle.start_failed(2, RuntimeError("no\nmore"))
        self.assertIsInstance(exc, SystemExit)
        self.assertEqual(1, exc.code)
        self.assertEqual("RuntimeError: no", exc.reason)
        self.assertEqual("worker 2 failed to start: RuntimeError: no",
                         str(exc))
        self.assertEqual("RuntimeError: no", failures.take(2))

    def test_one_line(self) -> None:
        self.assertEqual("RuntimeError", lifecycle.one_line(RuntimeError()))
        self.assertEqual("ValueError: a",
                         lifecycle.one_line(ValueError("a\nb")))


def _bare_worker() -> master._ServiceWorker:
    worker = object.__new__(master._ServiceWorker)
    worker.title = "ServiceWrapper(0) [1]"
    return worker


class TestWorkerSignals(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dispatched = self.useFixture(fixtures.MockPatchObject(
            _service_worker.ServiceWorker, "_on_signal_received")).mock
        self.logger = self.useFixture(fixtures.FakeLogger(
            level=logging.INFO))

    def test_first_sigint_is_sigterm_the_second_forces(self) -> None:
        worker = _bare_worker()
        worker._on_signal_received(signal.SIGINT)
        self.dispatched.assert_called_once_with(signal.SIGTERM)
        self.assertIn("Caught SIGINT: stopping ServiceWrapper(0) [1] "
                      "gracefully", self.logger.output)
        worker._on_signal_received(signal.SIGTERM)     # from the master
        worker._on_signal_received(signal.SIGINT)
        self.assertEqual([mock.call(signal.SIGTERM), mock.call(signal.SIGTERM),
                          mock.call(signal.SIGINT)],
                         self.dispatched.call_args_list)
        self.assertIn("Caught a second SIGINT: forced exit of "
                      "ServiceWrapper(0) [1] (exit code 1)",
                      self.logger.output)

    def test_other_signals_pass_through(self) -> None:
        worker = _bare_worker()
        worker._on_signal_received(signal.SIGHUP)
        worker._on_signal_received(signal.SIGTERM)
        self.assertEqual([mock.call(signal.SIGHUP), mock.call(signal.SIGTERM)],
                         self.dispatched.call_args_list)


class _Exited(Exception):
    pass


class TestWorkerStartAndStop(base.TestCase):
    """A stop waits for a start in progress; a failed start exits 1."""

    def setUp(self) -> None:
        super().setUp()
        self.terminate = self.useFixture(fixtures.MockPatchObject(
            _service_worker.ServiceWorker, "_service_terminate")).mock
        self.exit = self.useFixture(fixtures.MockPatch(
            "os._exit", side_effect=_Exited)).mock
        self.logger = self.useFixture(fixtures.FakeLogger(
            level=logging.INFO))
        self.worker = _bare_worker()
        self.ended = mock.Mock(spec=threading.Event)
        self.worker._start_ended = self.ended
        self.instance = mock.Mock(spec=service.ConductorService)
        self.worker.service = mock.Mock(service_instance=self.instance)

    def test_stop_waits_for_the_start_to_end(self) -> None:
        calls = mock.Mock()
        calls.attach_mock(self.ended.wait, "wait")
        calls.attach_mock(self.terminate, "terminate")
        self.ended.wait.return_value = True
        self.worker._service_terminate()
        self.assertEqual([mock.call.wait(5.0), mock.call.terminate()],
                         calls.mock_calls)
        self.assertNotIn("still starting", self.logger.output)

    def test_a_start_that_does_not_end_is_stopped_anyway(self) -> None:
        self.ended.wait.return_value = False
        self.worker._service_terminate()
        self.terminate.assert_called_once_with()
        self.assertIn("ServiceWrapper(0) [1] still starting after 5 s; "
                      "stopping it anyway", self.logger.output)

    def test_run_starts_then_waits(self) -> None:
        self.worker._service_run()
        self.assertEqual([mock.call.start(), mock.call.wait()],
                         self.instance.mock_calls)
        self.ended.set.assert_called_once_with()
        self.exit.assert_not_called()

    def test_a_failed_start_exits_1_quietly(self) -> None:
        self.instance.start.side_effect = lifecycle.StartFailed(0, "E: a")
        stderr = self.useFixture(fixtures.StringStream("stderr")).stream
        self.useFixture(fixtures.MonkeyPatch("sys.stderr", stderr))
        self.assertRaises(_Exited, self.worker._service_run)
        self.exit.assert_called_once_with(1)
        self.ended.set.assert_called_once_with()
        self.instance.wait.assert_not_called()
        stderr.seek(0)
        self.assertEqual("", stderr.read())


class TestManager(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dispatched = self.useFixture(fixtures.MockPatchObject(
            cotyledon.ServiceManager, "_on_signal_received")).mock
        self.started = self.useFixture(fixtures.MockPatchObject(
            cotyledon.ServiceManager, "_start_worker")).mock
        self.fast_exit = self.useFixture(fixtures.MockPatchObject(
            cotyledon.ServiceManager, "_fast_exit")).mock
        self.set_handler = self.useFixture(fixtures.MockPatch(
            "signal.signal")).mock
        self.kill = self.useFixture(fixtures.MockPatch("os.kill")).mock
        self.logger = self.useFixture(fixtures.FakeLogger(
            level=logging.INFO))
        self.clock = FakeClock()
        self.failures = lifecycle.StartFailures(2)
        self.stopping = threading.Event()
        self.policy = master.RestartPolicy(2, wait=self.clock.wait)
        manager = self.manager = object.__new__(master._ServiceManager)
        manager._policy = self.policy
        manager._failures = self.failures
        manager._stopping = self.stopping
        manager._sigints = 0
        manager._worker_ids = {"sid-0": 0, "sid-1": 1}
        manager._forked = 0
        self.check_reload = manager._check_reload = mock.Mock(
            return_value=None)
        self.monitor = manager.monitor = mock.Mock(spec=health.Monitor)
        self.worker_died = self.useFixture(fixtures.MockPatchObject(
            metrics, "worker_died", autospec=True)).mock

    def test_sigint_takes_the_sigterm_path(self) -> None:
        self.manager._on_signal_received(signal.SIGINT)
        self.dispatched.assert_called_once_with(signal.SIGTERM)
        self.assertTrue(self.stopping.is_set())
        # The graceful stop blocks the signal loop: a real handler
        # counts the next SIGINT, which forces the exit.
        self.set_handler.assert_called_once_with(
            signal.SIGINT, self.manager._on_sigint_while_stopping)
        self.fast_exit.assert_not_called()
        self.manager._on_sigint_while_stopping(signal.SIGINT, None)
        self.fast_exit.assert_called_once_with(
            reason="Forced exit of the master process")
        self.assertIn("Caught a second SIGINT: forced exit (exit code 1)",
                      self.logger.output)

    def test_one_sigint_during_a_sigterm_stop_does_not_force(self) -> None:
        self.manager._on_signal_received(signal.SIGTERM)
        self.dispatched.assert_called_once_with(signal.SIGTERM)
        self.manager._on_sigint_while_stopping(signal.SIGINT, None)
        self.fast_exit.assert_not_called()
        self.manager._on_sigint_while_stopping(signal.SIGINT, None)
        self.fast_exit.assert_called_once_with(
            reason="Forced exit of the master process")

    def test_other_signals_pass_through(self) -> None:
        self.manager._on_signal_received(signal.SIGHUP)
        self.check_reload.assert_called_once_with()
        self.dispatched.assert_called_once_with(signal.SIGHUP)
        self.assertFalse(self.stopping.is_set())
        self.set_handler.assert_not_called()

    def test_a_reload_of_bad_files_is_refused(self) -> None:
        self.check_reload.side_effect = exceptions.ConfigInvalid(
            problem="[conductor] power_state_timeout: must be a finite "
                    "number, got nan")
        self.manager._on_signal_received(signal.SIGHUP)
        # Not passed on: no file re-read, no worker restarted.
        self.dispatched.assert_not_called()
        self.assertEqual(
            "Caught SIGHUP: reload refused, the workers go on with the "
            "configuration they have. Invalid configuration: [conductor] "
            "power_state_timeout: must be a finite number, got nan\n",
            self.logger.output)
        # Nothing the check meets ends the master.
        self.check_reload.side_effect = RuntimeError("unexpected")
        self.manager._on_signal_received(signal.SIGHUP)
        self.dispatched.assert_not_called()
        self.assertIn("checking the files failed", self.logger.output)
        # The next SIGHUP, once the file is mended, reloads.
        self.check_reload.side_effect = None
        self.manager._on_signal_received(signal.SIGHUP)
        self.dispatched.assert_called_once_with(signal.SIGHUP)

    def test_failed_start_waits_then_forks_again(self) -> None:
        self.failures.record(1, "E: a")
        self.manager._on_dead_worker("sid-1", 0, 1)
        self.assertEqual([1.0], self.clock.waits)
        self.assertEqual(1, self.policy.failures_in_a_row(1))
        self.manager._start_worker("sid-1", 0)
        self.started.assert_called_once_with("sid-1", 0)
        self.kill.assert_not_called()

    def test_monitor_starts_once_every_worker_was_forked(self) -> None:
        self.manager._start_worker("sid-0", 0)
        self.monitor.start.assert_not_called()
        self.manager._start_worker("sid-1", 0)
        self.monitor.start.assert_called_once_with()
        # A respawn later does not start it again.
        self.manager._start_worker("sid-1", 0)
        self.monitor.start.assert_called_once_with()

    def test_no_early_systemd_ready(self) -> None:
        sock = self.useFixture(fixtures.MockPatch("socket.socket")).mock
        self.useFixture(fixtures.EnvironmentVariable("NOTIFY_SOCKET",
                                                     "/run/x.sock"))
        self.manager._systemd_notify_once()
        sock.assert_not_called()

    def test_dead_worker_metrics(self) -> None:
        self.manager._on_dead_worker("sid-1", 0, -9)
        self.worker_died.assert_called_once_with(mock.ANY, 1, restart=True)
        self.stopping.set()
        self.manager._on_dead_worker("sid-0", 0, 0)
        self.worker_died.assert_called_with(mock.ANY, 0, restart=False)

    def test_gives_up_stops_and_forks_no_more(self) -> None:
        for _ in range(2):
            self.failures.record(0, "E: a")
            self.manager._on_dead_worker("sid-0", 0, 1)
        self.assertEqual("worker 0 failed to start 2 time(s) in a row: E: a",
                         self.policy.gave_up)
        self.assertIn("Stopping the conductor: worker 0 failed to start",
                      self.logger.output)
        self.assertTrue(self.stopping.is_set())
        self.kill.assert_called_once_with(mock.ANY, signal.SIGTERM)
        self.manager._start_worker("sid-0", 0)
        self.started.assert_not_called()

    def test_a_worker_that_had_started_resets_the_count(self) -> None:
        self.failures.record(0, "E: a")
        self.manager._on_dead_worker("sid-0", 0, 1)
        self.manager._on_dead_worker("sid-0", 0, -9)   # SIGKILLed later
        self.assertEqual(0, self.policy.failures_in_a_row(0))

    def test_add_maps_cotyledon_services_to_worker_ids(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            cotyledon.ServiceManager, "add", return_value="sid-7"))
        svc = service.ConductorService("h", 7, self.conf)
        self.assertEqual("sid-7", self.manager.add(object, 1, args=(svc,)))
        self.assertEqual(7, self.manager._worker_ids["sid-7"])


class _BrokenPower(fake.FakePower):

    @periodics.periodic(spacing=lambda: 1 / 0)
    def refresh(self) -> None:
        pass


class TestFailedStart(test_service.ServiceTestCase):
    """A worker whose start fails says why once, and is left offline."""

    def test_failed_start_logs_marks_offline_and_records(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        # A previous life left the row online, with figures.
        self.db.register_conductor("test-host", 0, ["fake"], pid=1)
        self.db.heartbeat("test-host", 0, drivers=["fake"], pid=1,
                          status={"pool": {"size": 99}})
        failures = lifecycle.StartFailures(1)
        lifecycle.install(failures)
        self.addCleanup(lifecycle.install, None)
        driver = fake.FakeDriver()
        driver.power = _BrokenPower()
        svc = service.ConductorService("test-host", 0, self.conf)
        self.addCleanup(svc.stop)
        with mock.patch.object(loader, "load", autospec=True,
                               return_value={"fake": driver}):
            exc = self.assertRaises(lifecycle.StartFailed, svc.start)
        self.assertEqual(1, exc.code)
        reason = ("ValueError: Periodic task _BrokenPower.refresh: resolving "
                  "spacing failed: division by zero")
        self.assertEqual(reason, exc.reason)
        self.assertEqual(reason, failures.take(0))
        [row] = self.db.list_conductors()
        self.assertFalse(row.online)
        # status does not show the stale figures as a live worker's.
        data = status.build(self.db, heartbeat_timeout=60)
        self.assertEqual([(False, False)],
                         [(w["online"], w["alive"]) for w in data["workers"]])
        errors = [line for line in logger.output.splitlines()
                  if "failed to start" in line]
        self.assertEqual(["Worker 0 of test-host failed to start: " + reason],
                         errors)
        # With its traceback, through the logger.
        self.assertIn("ZeroDivisionError: division by zero", logger.output)
        self.assertIn("Worker 0 of test-host stopped", logger.output)

    def test_predictable_error_is_one_line(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        failures = lifecycle.StartFailures(1)
        lifecycle.install(failures)
        self.addCleanup(lifecycle.install, None)
        svc = service.ConductorService("test-host", 0, self.conf)
        self.addCleanup(svc.stop)
        error = exceptions.DriverLoadError(driver="acme", reason="gone")
        with mock.patch.object(loader, "load", autospec=True,
                               side_effect=error):
            self.assertRaises(lifecycle.StartFailed, svc.start)
        errors = [line for line in logger.output.splitlines()
                  if "failed to start" in line]
        self.assertEqual(["Worker 0 of test-host failed to start: "
                          "DriverLoadError: %s" % error], errors)
        self.assertNotIn("Traceback", logger.output)

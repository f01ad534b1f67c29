# SPDX-License-Identifier: Apache-2.0
"""The master's health monitor: /healthz, readiness, watchdog, fork."""

from __future__ import annotations

import json
import os
import socket
from typing import Any
import urllib.error
import urllib.request

import fixtures

from conductor.common import metrics
from conductor.common import systemd
from conductor import health
from tests import base
from tests.unit.common import test_metrics


class FakeClock:

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MonitorTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.workdir = self.useFixture(fixtures.TempDir()).path
        self.clock = FakeClock()
        self.beats = health.WorkerBeats(2)
        self.supervising = True
        self.stopping = False
        self.addCleanup(health.install, None)

    def monitor(self, **kwargs: Any) -> health.Monitor:
        settings: dict[str, Any] = dict(
            host="h", heartbeat_timeout=10.0,
            database_url="sqlite:///%s/db.sqlite" % self.workdir)
        settings.update(kwargs.pop("settings", {}))
        monitor = health.Monitor(self.beats, health.Settings(**settings),
                                 lambda: self.supervising,
                                 clock=self.clock,
                                 stopping=lambda: self.stopping, **kwargs)
        self.addCleanup(monitor.stop)
        return monitor

    def beat_all(self) -> None:
        for worker_id in range(2):
            self.beats.beat(worker_id, 100 + worker_id, now=self.clock.now)


class TestHealth(MonitorTestCase):

    def test_healthy(self) -> None:
        monitor = self.monitor()
        monitor.tick()
        self.beat_all()
        healthy, report = monitor.health()
        self.assertTrue(healthy, report)
        self.assertEqual("ok", report["status"])
        self.assertEqual([], report["problems"])
        self.assertEqual({"0": {"pid": 100, "heartbeat_age": 0.0},
                          "1": {"pid": 101, "heartbeat_age": 0.0}},
                         report["workers"])
        self.assertEqual("ok", report["database"])

    def test_stale_and_missing_workers_are_named(self) -> None:
        monitor = self.monitor()
        self.beats.beat(0, 100, now=self.clock.now)
        self.clock.now += 10.5
        monitor.tick()
        healthy, report = monitor.health()
        self.assertFalse(healthy)
        self.assertEqual(
            ["worker 0: no heartbeat for 10.5s (more than "
             "heartbeat_timeout 10s)", "worker 1: not started"],
            report["problems"])

    def test_master_not_supervising_or_stuck(self) -> None:
        monitor = self.monitor()
        self.beat_all()
        healthy, report = monitor.health()
        self.assertEqual(["master: no heartbeat for more than 10s"],
                         report["problems"])
        monitor.tick()
        self.assertTrue(monitor.health()[0])
        self.supervising = False
        healthy, report = monitor.health()
        self.assertEqual(["master: not supervising its workers"],
                         report["problems"])

    def test_database_down_is_named(self) -> None:
        monitor = self.monitor(settings={
            "database_url": "sqlite:////nonexistent/dir/db.sqlite"})
        monitor.tick()
        self.beat_all()
        healthy, report = monitor.health()
        self.assertFalse(healthy)
        self.assertEqual(1, len(report["problems"]))
        self.assertTrue(report["problems"][0].startswith(
            "database: OperationalError"), report["problems"])


class TestStart(MonitorTestCase):

    def test_no_thread_without_port_or_notify_socket(self) -> None:
        monitor = self.monitor()
        monitor.bind()
        monitor.start()
        self.assertEqual([], monitor._threads)

    def test_loop_with_a_notify_socket(self) -> None:
        monitor = self.monitor(notifier=systemd.Notifier("@unused"))
        monitor.start()
        monitor.start()
        self.assertEqual(["health-monitor"],
                         [t.name for t in monitor._threads])


class TestSystemd(MonitorTestCase):

    def test_ready_once_all_up_then_watchdog(self) -> None:
        path = os.path.join(self.workdir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.setblocking(False)

        def received() -> list[bytes]:
            found = []
            while True:
                try:
                    found.append(sock.recv(200))
                except BlockingIOError:
                    return found

        monitor = self.monitor(notifier=systemd.Notifier(path),
                               watchdog=5.0)
        self.beats.beat(0, 100, now=self.clock.now)
        monitor.tick()
        self.assertEqual([b"WATCHDOG=1"], received())
        self.beats.beat(1, 101, now=self.clock.now)
        self.clock.now += 1
        monitor.tick()
        self.assertEqual([b"READY=1\nSTATUS=2 worker(s) up"], received())
        self.clock.now += 4
        monitor.tick()
        monitor.tick()
        self.assertEqual([b"WATCHDOG=1"], received())
        # No ping while the master does not supervise its workers...
        self.supervising = False
        self.clock.now += 5
        monitor.tick()
        self.assertEqual([], received())
        # ... unless it is stopping them (a graceful stop may outlast
        # WatchdogSec); systemd hears it once.
        self.stopping = True
        monitor.tick()
        self.clock.now += 5
        monitor.tick()
        self.assertEqual([b"STOPPING=1", b"WATCHDOG=1", b"WATCHDOG=1"],
                         received())


class TestHTTP(MonitorTestCase):

    def get(self, port: int, path: str) -> tuple[int, bytes]:
        url = "http://127.0.0.1:%d%s" % (port, path)
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def serve(self) -> tuple[health.Monitor, int]:
        monitor = self.monitor(settings={"bind_host": "127.0.0.1",
                                         "port": 0})
        monitor.bind()
        assert monitor._server is not None
        port = monitor._server.server_address[1]
        monitor.start()
        return monitor, port

    def test_healthz_and_paths(self) -> None:
        monitor, port = self.serve()
        status, body = self.get(port, "/healthz")
        self.assertEqual(503, status)
        report = json.loads(body)
        self.assertIn("worker 0: not started", report["problems"])
        self.beat_all()
        status, body = self.get(port, "/healthz")
        self.assertEqual(200, status, body.decode())
        self.assertEqual(404, self.get(port, "/other")[0])
        metrics.disable()
        self.assertEqual(404, self.get(port, "/metrics")[0])
        request = urllib.request.Request(
            "http://127.0.0.1:%d/healthz" % port, data=b"x", method="POST")
        with self.assertRaisesRegex(urllib.error.HTTPError, "405"):
            urllib.request.urlopen(request, timeout=5)

    def test_metrics_served(self) -> None:
        self.useFixture(test_metrics.MetricsFixture())
        metrics.heartbeat(True)
        monitor, port = self.serve()
        status, body = self.get(port, "/metrics")
        self.assertEqual(200, status)
        self.assertEqual(1.0, test_metrics.samples(body)[(
            "conductor_heartbeats_total", (("result", "success"),))])

    def test_port_in_use_is_named(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monitor = self.monitor(settings={"bind_host": "127.0.0.1",
                                         "port": port})
        error = self.assertRaises(OSError, monitor.bind)
        self.assertIn("cannot serve [metrics] on 127.0.0.1 port %d" % port,
                      str(error))

    def test_a_forked_child_closes_the_listening_socket(self) -> None:
        monitor = self.monitor(settings={"bind_host": "127.0.0.1",
                                         "port": 0})
        monitor.bind()
        assert monitor._server is not None
        fd = monitor._server.socket.fileno()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 3
            try:
                os.fstat(fd)
                code = 1        # still open
            except OSError:
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(0, os.waitstatus_to_exitcode(status))
        # The master's own socket stays open.
        os.fstat(fd)


class TestBeats(base.TestCase):

    def test_installed_beats(self) -> None:
        self.addCleanup(health.install, None)
        self.assertIsNone(health.worker_pid(0))
        health.beat(0)          # nothing installed: a no-op
        beats = health.WorkerBeats(1)
        health.install(beats)
        self.assertIsNone(beats.last(0))
        health.beat(0)
        health.beat(5)          # an unknown id is ignored
        self.assertEqual(os.getpid(), health.worker_pid(0))
        self.assertIsNotNone(beats.last(0))


class TestSampleUnit(base.TestCase):
    """etc/systemd/conductor.service matches the conductor's defaults."""

    def test_type_watchdog_and_stop_timeout(self) -> None:
        import configparser
        root = os.path.join(os.path.dirname(__file__), "..", "..")
        unit = configparser.ConfigParser(strict=False,
                                         interpolation=None)
        unit.optionxform = str  # type: ignore[assignment,method-assign]
        unit.read(os.path.join(root, "etc", "systemd", "conductor.service"))
        service = unit["Service"]
        self.assertEqual("notify", service["Type"])
        self.assertEqual("mixed", service["KillMode"])
        self.assertGreater(int(service["WatchdogSec"]), 0)
        with open(os.path.join(root, "etc", "conductor",
                               "conductor.conf.sample")) as stream:
            graceful = [line.split("=")[1].strip() for line in stream
                        if line.startswith("#graceful_shutdown_timeout =")]
        self.assertEqual(int(graceful[0]) + 15,
                         int(service["TimeoutStopSec"]))

# SPDX-License-Identifier: Apache-2.0
"""The operator surface with real processes: metrics, health, systemd,
notifications on a real RabbitMQ."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import threading
import time
from typing import Any
import urllib.error
import urllib.request

from oslo_config import cfg
import oslo_messaging as messaging
from oslo_utils import uuidutils
from prometheus_client import parser

from tests.functional import base
from tests.functional import services

SYNC_TASK = "ConductorPeriodics.sync_power_states"
WORKER_RE = re.compile(r"\[\S+ worker (\d+)\] \[-\] Fake BMC of node "
                       r"[0-9a-f-]{36}: power state read")


def _options(workdir: str, port: int, **extra: dict[str, Any]
             ) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {
        "DEFAULT": {"host": "ops", "state_path": workdir,
                    "enabled_drivers": "fake", "debug": True,
                    "graceful_shutdown_timeout": 15},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 4,
                      "sync_power_state_interval": 2,
                      "sync_power_state_workers": 8,
                      "workers_pool_size": 16,
                      "power_state_timeout": 2,
                      "hash_ring_reset_interval": 2},
        "metrics": {"port": port},
    }
    for section, values in extra.items():
        options.setdefault(section, {}).update(values)
    return options


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                float]:
    found = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = \
                sample.value
    return found


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name
               and all((k, v) in found for k, v in labels.items()))


class OperationsTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()
        self.port = services.free_port()

    def enrol(self, count: int, prefix: str = "n",
              **driver_info: Any) -> list[str]:
        nodes = self.db.import_nodes([
            {"name": "%s%03d" % (prefix, i), "driver": "fake",
             "driver_info": dict(driver_info)} for i in range(count)])
        return [node.uuid for node in nodes]

    def scrape(self) -> dict[Any, float]:
        status, body = _get(self.port, "/metrics")
        self.assertEqual(200, status, body.decode())
        return _samples(body.decode())


class TestMetrics(OperationsTestCase):

    def test_counters_add_up_across_workers(self) -> None:
        uuids = self.enrol(200)
        conductor = self.start_conductor(_options(self.workdir, self.port))
        self.wait_workers(self.db, "ops", 2)

        def reads_in_log() -> collections.Counter[str]:
            return collections.Counter(
                match.group(1) for match in
                WORKER_RE.finditer(conductor.log()))

        # At least two sweeps' worth of reads, by both workers.
        base.wait_for(lambda: sum(reads_in_log().values()) >= 2 * len(uuids)
                      and len(reads_in_log()) == 2, 60,
                      "two sweeps of 200 nodes by both workers")

        # The fake BMC logs each read before it returns and the counter
        # counts it after: compare at a moment between sweeps, when both
        # are stable.
        def agree() -> tuple[float, int] | None:
            before = _total(self.scrape(), "conductor_driver_calls_total",
                            operation="get_power_state", result="success")
            logged = sum(reads_in_log().values())
            after = _total(self.scrape(), "conductor_driver_calls_total",
                           operation="get_power_state", result="success")
            return (after, logged) if before == after == logged else None

        counted, logged = base.wait_for(agree, 60, "counter == reads logged",
                                        interval=0.2)
        self.assertGreaterEqual(counted, 2 * len(uuids))

        samples = self.scrape()
        counted = _total(samples, "conductor_driver_calls_total",
                         operation="get_power_state")
        # Per-worker gauges: the two workers own every node between them.
        owned = {dict(labels)["worker"]: value for (name, labels), value
                 in samples.items() if name == "conductor_nodes_owned"}
        self.assertEqual({"0", "1"}, set(owned), str(owned))
        self.assertEqual(len(uuids), sum(owned.values()), str(owned))
        self.assertTrue(all(owned.values()), str(owned))
        # The histogram counts every call the counter counts.
        self.assertEqual(
            counted, _total(samples,
                            "conductor_driver_call_duration_seconds_count",
                            operation="get_power_state"))
        self.assertGreater(_total(samples, "conductor_periodic_runs_total",
                                  task=SYNC_TASK), 0)
        self.assertGreater(_total(samples, "conductor_heartbeats_total",
                                  result="success"), 0)
        self.assertEqual(2 * 16, _total(samples, "conductor_pool_size"))
        for name in ("conductor_nodes_overdue",
                     "conductor_oldest_power_reading_age_seconds",
                     "conductor_nodes_maintenance", "conductor_pool_busy"):
            self.assertIn(name, {n for n, _ in samples}, name)

        # A worker killed and respawned: counted, and its counters stay.
        worker = conductor.children()[0]
        worker.send_signal(signal.SIGKILL)
        base.wait_for(lambda: _total(self.scrape(),
                                     "conductor_worker_restarts_total") == 1,
                      30, "one worker restart counted")
        self.assertGreaterEqual(
            _total(self.scrape(), "conductor_driver_calls_total",
                   operation="get_power_state"), counted)


class TestPortTaken(OperationsTestCase):

    def test_one_line_error_and_exit_1(self) -> None:
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", self.port))
        taken.listen()
        conductor = self.start_conductor(_options(self.workdir, self.port))
        self.assertEqual(1, conductor.wait_exit(60))
        with open(conductor.stdout.name) as stream:
            errors = [line for line in stream
                      if line.startswith("conductor: ERROR:")]
        self.assertEqual(1, len(errors), conductor.log_tail())
        self.assertIn("cannot serve [metrics] on 127.0.0.1 port %d"
                      % self.port, errors[0])


class TestHealthAndSystemd(OperationsTestCase):

    def test_ready_watchdog_and_healthz(self) -> None:
        self.enrol(10)
        path = os.path.join(self.workdir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(0.2)
        received: list[tuple[float, str]] = []
        done = threading.Event()

        def listen() -> None:
            while not done.is_set():
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return
                received.append((time.monotonic(), data.decode()))

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        self.addCleanup(listener.join, 5)
        self.addCleanup(done.set)
        conductor = self.start_conductor(
            _options(self.workdir, self.port),
            env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})

        def ready() -> float | None:
            for at, text in received:
                if "READY=1" in text.split("\n"):
                    return at
            return None

        base.wait_for(ready, 60, "READY=1 on the notify socket")
        # READY=1 comes once every worker is up: both are registered.
        records = [row for row in self.db.list_conductors()
                   if row.host == "ops" and row.online]
        self.assertEqual(2, len(records))
        base.wait_for(lambda: sum("WATCHDOG=1" in text
                                  for _, text in received) >= 3, 10,
                      "three watchdog pings (every 0.5 s)")
        self.assertEqual(1, sum("READY=1" in text for _, text in received))

        status, body = _get(self.port, "/healthz")
        self.assertEqual(200, status, body.decode())
        report = json.loads(body)
        self.assertEqual("ok", report["status"])
        self.assertEqual({"0", "1"}, set(report["workers"]))

        worker_pid = report["workers"]["1"]["pid"]
        self.assertIn(worker_pid, [p.pid for p in conductor.children()])
        os.kill(worker_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        self.addCleanup(_cont, worker_pid)
        status, body = base.wait_for(
            lambda: (lambda r: r if r[0] == 503 else None)(
                _get(self.port, "/healthz")), 10, "/healthz answers 503")
        elapsed = time.monotonic() - stopped
        # heartbeat_timeout (4 s), plus the time of one check on a loaded
        # machine.
        self.assertLessEqual(elapsed, 4 + 2.0)
        report = json.loads(body)
        self.assertEqual("unhealthy", report["status"])
        self.assertEqual(1, len(report["problems"]), report)
        self.assertIn("worker 1: no heartbeat", report["problems"][0])

        os.kill(worker_pid, signal.SIGCONT)
        base.wait_for(lambda: _get(self.port, "/healthz")[0] == 200, 10,
                      "/healthz back to 200 after SIGCONT")


def _cont(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


class _Endpoint:

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _add(self, publisher_id: str, event_type: str,
             payload: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((publisher_id, event_type, payload))

    def info(self, ctxt: Any, publisher_id: str, event_type: str,
             payload: dict[str, Any], metadata: Any) -> None:
        self._add(publisher_id, event_type, payload)

    def error(self, ctxt: Any, publisher_id: str, event_type: str,
              payload: dict[str, Any], metadata: Any) -> None:
        self._add(publisher_id, event_type, payload)


class TestNotifications(OperationsTestCase):

    def test_one_power_state_corrected_per_drifted_node(self) -> None:
        topic = "ftest_%s" % uuidutils.generate_uuid(dashed=False)
        conf = cfg.ConfigOpts()
        conf([], project="conductor-test")
        transport = messaging.get_notification_transport(
            conf, url=base.RABBIT_URL)
        self.addCleanup(transport.cleanup)
        endpoint = _Endpoint()
        listener = messaging.get_notification_listener(
            transport, [messaging.Target(topic=topic)], [endpoint])
        listener.start()
        self.addCleanup(listener.wait)
        self.addCleanup(listener.stop)

        drifted = self.enrol(6, fake_power_state="power off",
                             secret_password="hunter2")
        steady = self.enrol(4, prefix="s", fake_power_state="power on")
        for uuid in drifted + steady:
            self.db.update_node(uuid, {"power_state": "power on"})
        self.start_conductor(_options(
            self.workdir, self.port,
            DEFAULT={"transport_url": base.RABBIT_URL},
            conductor={"force_power_state_during_sync": False},
            notifications={"enabled": True, "topics": topic}))

        def corrected() -> list[tuple[str, str, dict[str, Any]]]:
            with endpoint.lock:
                return [e for e in endpoint.events if e[1] ==
                        "baremetal.node.power_state_corrected.success"]

        base.wait_for(lambda: len(corrected()) >= len(drifted), 60,
                      "one power_state_corrected per drifted node")
        # Two more sweeps: no node is reported twice.
        base.wait_for(lambda: all(self.db.get_node(u).power_state ==
                                  "power off" for u in drifted), 30,
                      "drift recorded")
        runs = _total(self.scrape(), "conductor_periodic_runs_total",
                      task=SYNC_TASK)
        base.wait_for(lambda: _total(self.scrape(),
                                     "conductor_periodic_runs_total",
                                     task=SYNC_TASK) >= runs + 4,
                      30, "two more sweeps per worker")
        events = corrected()
        by_node = collections.Counter(
            e[2]["conductor_object.data"]["uuid"] for e in events)
        self.assertEqual({uuid: 1 for uuid in drifted}, dict(by_node))
        publisher, _, payload = events[0]
        self.assertTrue(publisher.startswith("conductor.ops"), publisher)
        self.assertEqual("NodeCorrectedPowerStatePayload",
                         payload["conductor_object.name"])
        data = payload["conductor_object.data"]
        self.assertEqual("power off", data["power_state"])
        self.assertEqual("power on", data["from_power_state"])
        self.assertNotIn("hunter2", json.dumps(events))
        self.assertEqual(len(drifted), _total(
            self.scrape(), "conductor_power_state_changes_total",
            kind="detected"))

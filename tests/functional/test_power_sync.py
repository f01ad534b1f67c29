# SPDX-License-Identifier: Apache-2.0
"""Power sync, power actions and ownership with real conductor processes."""

from __future__ import annotations

import collections
import configparser
import datetime
import json
import os
import re
import signal
import time
from typing import Any, cast

from oslo_utils import timeutils

from conductor.common import log as conductor_log
from conductor.db import models
from tests.functional import base
from tests.functional import test_due_polling

POLL_RE = re.compile(r"\[(?P<who>[^\]]+ worker \d+)\] \[-\] Fake BMC of node "
                     r"(?P<uuid>[0-9a-f-]{36}): power state read")


def _options(workdir: str, host: str = "ftest", **extra: dict) -> dict:
    options: dict[str, dict[str, object]] = {
        "DEFAULT": {"host": host, "state_path": workdir,
                    "enabled_drivers": "fake", "debug": True,
                    "graceful_shutdown_timeout": 15},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 8,
                      "sync_power_state_interval": 1,
                      "sync_power_state_workers": 4,
                      "power_state_timeout": 2,
                      "pending_action_interval": 0.2,
                      "hash_ring_reset_interval": 2},
    }
    for section, values in extra.items():
        options.setdefault(section, {}).update(values)
    return options


class PowerSyncTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()

    def enrol(self, count: int, prefix: str = "n",
              **driver_info: object) -> list[str]:
        nodes = self.db.import_nodes([
            {"name": "%s%03d" % (prefix, i), "driver": "fake",
             "driver_info": dict(driver_info)} for i in range(count)])
        return [node.uuid for node in nodes]

    def node(self, ident: str) -> Any:
        return self.db.get_node(ident)


class TestExactlyOnce(PowerSyncTestCase):
    """Each node once per interval, whoever owns it (due-time polling)."""

    INTERVAL = 4

    def _assert_once_per_interval(self, logs: list[str], uuids: list[str],
                                  since: float) -> None:
        found = test_due_polling.polls(*logs)
        # Never twice within an interval (less its 2 s tolerance and 1 s
        # of log-timestamp slack) ...
        close = {u: [round(b[0] - a[0], 2) for a, b in zip(items, items[1:])
                     if b[0] - a[0] < self.INTERVAL - 3]
                 for u, items in found.items()}
        self.assertEqual({}, {u: c for u, c in close.items() if c},
                         "nodes polled more than once per interval")
        # ... and every node in every interval once everybody is up.
        missed = [u for u in uuids
                  if not any(since <= at <= since + 1.6 * self.INTERVAL
                             for at, _ in found.get(u, ()))]
        self.assertEqual([], missed, "some node was missed")

    def _options(self, host: str) -> dict:
        return _options(self.workdir, host=host, conductor={
            "sync_power_state_interval": self.INTERVAL})

    def test_two_workers_poll_every_node_exactly_once(self) -> None:
        uuids = self.enrol(60)
        conductor = self.start_conductor(self._options("ftest"))
        self.wait_workers(self.db, "ftest", 2)
        since = time.time()
        time.sleep(2.5 * self.INTERVAL)
        self._assert_once_per_interval([conductor.log()], uuids, since)
        workers = {who for items in test_due_polling.polls(
            conductor.log()).values() for _, who in items}
        self.assertEqual({"ftest worker 0", "ftest worker 1"}, workers)

    def test_two_hosts_poll_every_node_exactly_once(self) -> None:
        uuids = self.enrol(80)
        host_a = self.start_conductor(self._options("a"), name="a")
        self.wait_workers(self.db, "a", 2)
        host_b = self.start_conductor(self._options("b"), name="b")
        self.wait_workers(self.db, "b", 2)
        time.sleep(3 * self.INTERVAL)
        self._assert_once_per_interval([host_a.log(), host_b.log()], uuids,
                                       time.time() - 1.6 * self.INTERVAL)
        hosts = {items[-1][1].split()[0] for items in test_due_polling.polls(
            host_a.log(), host_b.log()).values()}
        self.assertEqual({"a", "b"}, hosts)


class TestRunLog(PowerSyncTestCase):

    def test_at_info_a_worker_sums_its_runs_up(self) -> None:
        # The operator's default levels: no line per run; a summary a
        # period, and at the stop for the last, shorter one.
        uuids = self.enrol(10)
        conductor = self.start_conductor(_options(
            self.workdir, DEFAULT={
                "debug": False,
                "default_log_levels": conductor_log.log_levels()}))
        self.wait_workers(self.db, "ftest", 2)
        base.wait_for(lambda: all(self.node(u).power_state is not None
                                  for u in uuids), 30, "every node polled")
        conductor.signal(signal.SIGTERM)
        self.assertEqual(0, conductor.wait_exit(30))
        log = conductor.log()
        self.assertNotIn("Power sync sweep", log)
        summaries = re.findall(r"\[ftest worker (\d)\] \[-\] Power sync, "
                               r"last \d+s: (\d+) node\(s\) polled in \d+ "
                               r"run\(s\)", log)
        self.assertEqual({"0", "1"}, {who for who, _ in summaries},
                         conductor.log_tail())
        self.assertGreaterEqual(sum(int(n) for _, n in summaries), 10)


class TestFailures(PowerSyncTestCase):

    def test_hung_bmcs_do_not_slow_the_others(self) -> None:
        hung = self.enrol(3, prefix="hung", fake_latency_ms=600000)
        fast = self.enrol(20, prefix="fast", fake_latency_ms=20)
        conductor = self.start_conductor(_options(
            self.workdir, conductor={"power_state_sync_max_retries": 100,
                                     "power_state_timeout": 1.5}))
        # Healthy nodes are recorded on the first sweep.
        base.wait_for(lambda: all(self.node(u).power_state for u in fast),
                      10, "every healthy node recorded")
        base.wait_for(
            lambda: all(self.node(u).last_error for u in hung), 15,
            "every hung node recorded as failed")
        for uuid in hung:
            node = self.node(uuid)
            self.assertIsNone(node.power_state)
            self.assertIn("did not finish within 1.5 seconds",
                          node.last_error)
            self.assertIsNone(node.reservation)
        # Sweeps keep completing, bounded by the deadline, not the BMC.

        def totals() -> list[float]:
            return [float(t) for t in re.findall(
                r"Power sync sweep: \d+ node\(s\) in [\d.]+s \(calls\) "
                r"/ ([\d.]+)s", conductor.log())]
        base.wait_for(lambda: len(totals()) >= 2, 15,
                      "a second power-sync sweep")
        self.assertLess(max(totals()), 1.5 + 1.0 + 1.0, totals())

    def test_maintenance_after_max_retries_then_recovery(self) -> None:
        [uuid] = self.enrol(1, prefix="flaky", fake_fail="get")
        self.start_conductor(_options(
            self.workdir, conductor={"power_state_sync_max_retries": 2,
                                     "power_failure_recovery_interval": 1}))
        node = base.wait_for(
            lambda: (lambda n: n if n.maintenance else None)(
                self.node(uuid)), 20, "node enters maintenance")
        self.assertEqual("power failure", node.fault)
        self.assertEqual(3, node.power_sync_failures)
        self.assertIn("failed 3 time(s) in a row", node.maintenance_reason)
        self.assertIn("fake_fail=get", node.last_error)
        # The BMC heals: the recovery periodic clears the fault.
        self.db.update_node(uuid, {"driver_info": {}})
        node = base.wait_for(
            lambda: (lambda n: n if not n.maintenance else None)(
                self.node(uuid)), 20, "node leaves maintenance")
        self.assertIsNone(node.fault)
        self.assertIsNone(node.last_error)
        self.assertEqual(0, node.power_sync_failures)
        self.assertEqual("power off", node.power_state)


class TestPowerActions(PowerSyncTestCase):

    def test_power_action_without_broker(self) -> None:
        [uuid] = self.enrol(1, prefix="act")
        conductor = self.start_conductor(_options(self.workdir))
        self.wait_workers(self.db, "ftest", 2)
        config = conductor.config_file
        result = self.run_manage(config, "node", "power", "act000", "on",
                                 "--wait", "--timeout", "10")
        self.assertEqual("Node act000 is power on\n", result.stdout)
        node = self.node(uuid)
        self.assertEqual(("power on", None, None, None),
                         (node.power_state, node.target_power_state,
                          node.last_error, node.reservation))
        self.db.update_node(uuid, {"driver_info": {"fake_fail": "set"}})
        failed = self.run_manage(config, "node", "power", "act000", "off",
                                 "--wait", "--timeout", "10", check=1)
        self.assertIn("power off failed: Fake BMC of node %s failed" % uuid,
                      failed.stderr)
        self.assertEqual("power on", self.node(uuid).power_state)

    def test_stale_requests_are_cancelled_or_dropped(self) -> None:
        [fresh, stale, never] = self.enrol(3, prefix="st")
        options = _options(self.workdir)
        config = os.path.join(self.workdir, "manage.conf")
        parser = configparser.ConfigParser(interpolation=None)
        for section, values in options.items():
            if section != "DEFAULT":
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, str(value))
        with open(config, "w") as stream:
            parser.write(stream)
        # No conductor: refused, nothing queued.
        refused = self.run_manage(config, "node", "power", "st002", "on",
                                  "--wait", "--timeout", "1", check=1)
        self.assertIn("no live conductor has driver 'fake'", refused.stderr)
        self.assertIsNone(self.node(never).target_power_state)
        # --queue --wait: the wait times out and cancels the request.
        timed_out = self.run_manage(config, "node", "power", "st002", "on",
                                    "--queue", "--wait", "--timeout", "0.3",
                                    check=1)
        self.assertIn("the request was cancelled", timed_out.stderr)
        self.assertIsNone(self.node(never).target_power_state)
        # --cancel drops a queued request.
        self.run_manage(config, "node", "power", "st002", "off", "--queue")
        cancelled = self.run_manage(config, "node", "power", "st002",
                                    "--cancel")
        self.assertEqual("Cancelled the pending 'power off' request of node "
                         "st002\n", cancelled.stdout)
        # A request made long ago is dropped by the conductor, not applied;
        # a recent one is applied.
        self.run_manage(config, "node", "power", "st001", "on", "--queue")
        with self.db.engine.begin() as conn:
            conn.execute(models.nodes.update()
                         .where(models.nodes.c.uuid == stale).values(
                target_power_state_requested_at=timeutils.utcnow()
                - datetime.timedelta(seconds=1000)))
        self.run_manage(config, "node", "power", "st000", "on", "--queue")
        self.start_conductor(options)
        base.wait_for(lambda: self.node(fresh).power_state == "power on",
                      30, "the recent request applied")
        base.wait_for(lambda: self.node(stale).target_power_state is None,
                      30, "the stale request dropped")
        node = self.node(stale)
        self.assertNotEqual("power on", node.power_state)
        self.assertIn("Requested 'power on' dropped: not applied within "
                      "[conductor] power_request_timeout (300s)",
                      str(node.last_error))
        self.assertNotEqual("power on", self.node(never).power_state)

    def test_killed_worker_respawns_and_leaves_no_reservation(self) -> None:
        uuids = self.enrol(12, prefix="slow", fake_latency_ms=3000)
        conductor = self.start_conductor(_options(
            self.workdir, conductor={"power_state_timeout": 10,
                                     "sync_power_state_interval": 2}))
        rows = self.wait_workers(self.db, "ftest", 2)
        for uuid in uuids:
            self.db.request_power_state(uuid, "power on")
        # Wait until worker 1 holds reservations mid-action, then kill it.
        victim = rows[1]
        base.wait_for(
            lambda: any(self.node(u).reservation == "ftest:1"
                        for u in uuids), 10, "worker 1 applying actions")
        os.kill(cast(int, victim.pid), signal.SIGKILL)
        killed_at = timeutils.utcnow()
        base.wait_for(
            lambda: any(r.worker_id == 1 and r.pid != victim.pid
                        and r.heartbeat_at > killed_at
                        for r in self.db.list_conductors()),
            20, "worker 1 respawned")
        # Its actions are applied again by the new worker 1 and nothing
        # stays reserved.
        base.wait_for(
            lambda: all(self.node(u).power_state == "power on"
                        and self.node(u).target_power_state is None
                        for u in uuids), 30, "every action applied")
        base.wait_for(lambda: all(self.node(u).reservation is None
                                  for u in uuids), 10, "no reservation left")
        self.assertIn("Released", conductor.log())
        # And every node is polled again after the respawn.

        def polled_after_respawn() -> set[str]:
            tail = conductor.log().split("Released", 1)[1]
            return {m.group("uuid") for m in POLL_RE.finditer(tail)}
        base.wait_for(lambda: set(uuids) <= polled_after_respawn(), 30,
                      "every node polled after the respawn")


class TestDriverPeriodics(PowerSyncTestCase):

    def _run(self, drivers: str) -> str:
        self.db.import_nodes([{"name": "p0", "driver": "fake"}])
        if "fake-periodic" in drivers:
            self.db.import_nodes([{"name": "p1",
                                   "driver": "fake-periodic"}])
        conductor = self.start_conductor(_options(
            self.workdir, DEFAULT={"enabled_drivers": drivers}))
        self.wait_workers(self.db, "ftest", 2)
        return conductor.log  # type: ignore[return-value]

    def test_enabled_driver_periodics_run(self) -> None:
        log = self._run("fake,fake-periodic")
        for text in ("fake-periodic: periodic task ran",
                     "fake-periodic: legacy driver_periodic_task ran",
                     "fake-periodic: node task for node %s"
                     % self.node("p1").uuid):
            base.wait_for(lambda: text in log(), 15,  # type: ignore
                          "%r in the log" % text)
        # The node task only sees its own driver's nodes.
        self.assertNotIn("node task for node %s" % self.node("p0").uuid,
                         log())  # type: ignore[operator]

    def test_disabled_driver_periodics_never_run(self) -> None:
        log = self._run("fake")
        # Two sweeps prove the periodic loop ran for a while.
        base.wait_for(lambda: log().count(  # type: ignore[operator]
            "Power sync sweep") >= 4, 15, "two sweeps per worker")
        self.assertNotIn("fake-periodic:", log())  # type: ignore
        status = json.loads(self.run_manage(
            os.path.join(self.workdir, "conductor.conf"), "status",
            "--format", "json").stdout)
        names = {task["name"] for worker in status["workers"]
                 for task in worker["status"].get("periodics", [])}
        self.assertIn("ConductorPeriodics.sync_power_states", names)
        self.assertFalse([n for n in names if "FakePeriodic" in n], names)


class TestActionsAcrossARestart(PowerSyncTestCase):
    """Power is never applied twice, nor lost, by a stop or a restart."""

    def set_calls(self, path: str) -> collections.Counter[str]:
        if not os.path.exists(path):
            return collections.Counter()
        with open(path) as stream:
            return collections.Counter(
                json.loads(line)["node"] for line in stream
                if json.loads(line)["op"] == "set_power_state")

    def test_sigterm_mid_action_then_restart_applies_each_once(self) -> None:
        calls = os.path.join(self.workdir, "calls.jsonl")
        uuids = self.enrol(20, prefix="slow", fake_latency_ms=6000,
                           fake_call_log=calls)
        # The actions (6 s) outlast graceful_shutdown_timeout (4 s).

        def options() -> dict:
            return _options(self.workdir,
                            DEFAULT={"graceful_shutdown_timeout": 4},
                            conductor={"power_state_timeout": 30,
                                       "sync_power_state_interval": 0,
                                       "workers_pool_size": 32})
        first = self.start_conductor(options())
        self.wait_workers(self.db, "ftest", 2)
        for uuid in uuids:
            self.db.request_power_state(uuid, "power on")
        # Every set call has begun (and reached the fake BMC).
        base.wait_for(lambda: set(self.set_calls(calls)) == set(uuids), 20,
                      "every node's power on under way")
        first.signal(signal.SIGTERM)
        self.assertEqual(0, first.wait_exit(20))
        # The calls were still running: their nodes stay reserved and
        # claimed for the next owner.
        for uuid in uuids:
            node = self.node(uuid)
            self.assertEqual("power on", node.target_power_state)
            self.assertIsNotNone(node.reservation)
            self.assertIsNotNone(node.power_action_claim)
        self.assertIn("stay reserved", first.log())
        # The pool's warning counts its busy threads only (idle ones not
        # ended yet are not): as many as the nodes each worker left
        # reserved.
        busy = {int(w): int(n) for w, n in re.findall(
            r"Worker pool pool-w(\d+): (\d+) thread\(s\) still busy",
            first.log())}
        held = {int(w): int(n) for n, w in re.findall(
            r"(\d+) node\(s\) stay reserved by ftest:(\d+)", first.log())}
        self.assertEqual(held, busy)
        self.assertEqual(len(uuids), sum(busy.values()))
        second = self.start_conductor(options(), name="restarted")
        base.wait_for(
            lambda: all(self.node(u).target_power_state is None
                        and self.node(u).reservation is None
                        for u in uuids), 40,
            "every interrupted action resolved")
        for uuid in uuids:
            node = self.node(uuid)
            self.assertEqual(("power on", None, None),
                             (node.power_state, node.last_error,
                              node.power_action_claim))
        self.assertEqual({uuid: 1 for uuid in uuids},
                         dict(self.set_calls(calls)))
        self.assertIn("recorded as done without acting again", second.log())


class TestBmcSpacing(PowerSyncTestCase):
    """Calls to one BMC address are one at a time and spaced, per worker."""

    def test_twenty_nodes_behind_one_bmc(self) -> None:
        timing = os.path.join(self.workdir, "timing.jsonl")
        self.enrol(20, prefix="bmc", fake_latency_ms=10,
                   fake_bmc_address="chassis-1", fake_timing_log=timing)
        conductor = self.start_conductor(_options(
            self.workdir, conductor={"bmc_min_interval": 0.1,
                                     "sync_power_state_interval": 2,
                                     "sync_power_state_workers": 8,
                                     "power_state_timeout": 10}))
        self.wait_workers(self.db, "ftest", 2)

        def calls() -> list[dict[str, Any]]:
            if not os.path.exists(timing):
                return []
            with open(timing) as stream:
                return [json.loads(line) for line in stream]

        # A power action meets the sweeps at the same BMC.
        self.run_manage(conductor.config_file, "node", "power", "bmc000",
                        "on", "--wait", "--timeout", "20")
        base.wait_for(lambda: len(calls()) >= 60, 60,
                      "three sweeps' worth of calls")
        by_worker: dict[int, list[dict[str, Any]]] = \
            collections.defaultdict(list)
        for entry in calls():
            by_worker[entry["pid"]].append(entry)
        self.assertEqual(2, len(by_worker))
        ops = {entry["op"] for entry in calls()}
        self.assertEqual({"get_power_state", "set_power_state"}, ops)
        for entries in by_worker.values():
            entries.sort(key=lambda entry: entry["start"])
            for before, after in zip(entries, entries[1:]):
                self.assertGreaterEqual(
                    after["start"] - before["end"], 0.1 - 0.002,
                    (before, after))

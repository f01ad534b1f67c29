# SPDX-License-Identifier: Apache-2.0
"""Faults stay where they start, with real conductor processes.

A driver that ignores its deadline, BMCs that hang, a database that goes
away: each must cost its own nodes, not the worker, the healthy nodes or
the log.
"""

from __future__ import annotations

import collections
import datetime
import json
import re
import time
from typing import Any

import sqlalchemy as sa

from conductor.db import api as db_api
from conductor.db import migration
from tests.functional import base
from tests.functional import services

SWEEP_RE = re.compile(r"\[(?P<who>[^\]]+ worker \d+)\] \[-\] Power sync "
                      r"sweep: (?P<nodes>\d+) node\(s\) in .*")
START_RE = re.compile(r"Fake BMC of node (?P<uuid>[0-9a-f-]{36}): get call "
                      r"starts")
READ_RE = re.compile(r"Fake BMC of node (?P<uuid>[0-9a-f-]{36}): power "
                     r"state read")
STAMP_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) ")


def _options(workdir: str, **conductor: Any) -> dict[str, dict[str, Any]]:
    values: dict[str, Any] = {
        "workers": 1, "heartbeat_interval": 1, "heartbeat_timeout": 30,
        "sync_power_state_interval": 1, "sync_power_state_workers": 4,
        "power_state_timeout": 1, "pending_action_interval": 0.5,
        "hash_ring_reset_interval": 2, "workers_pool_size": 10,
        "power_state_sync_max_retries": 50,
        "force_power_state_during_sync": False}
    values.update(conductor)
    return {"DEFAULT": {"host": "contain", "state_path": workdir,
                        "enabled_drivers": "fake", "debug": True,
                        "graceful_shutdown_timeout": 5},
            "conductor": values}


class ContainmentTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()

    def enrol(self, count: int, prefix: str, **info: Any) -> list[str]:
        self.db.import_nodes([{"name": "%s%02d" % (prefix, i),
                               "driver": "fake", "driver_info": dict(info)}
                              for i in range(count)])
        return [self.db.get_node("%s%02d" % (prefix, i)).uuid
                for i in range(count)]

    def status(self, cond: base.ConductorProcess) -> dict[str, Any]:
        out = self.run_manage(cond.config_file, "status", "--format",
                              "json").stdout
        workers = json.loads(out)["workers"]
        self.assertEqual(1, len(workers), out)
        return dict(workers[0])


class TestAbandonedCalls(ContainmentTestCase):
    """A driver that ignores the per-call deadline (issue: silent stall)."""

    def test_hung_calls_are_abandoned_and_healthy_nodes_polled(self) -> None:
        healthy = self.enrol(8, "ok")
        hung = self.enrol(3, "hung", fake_latency_ms=60000,
                          fake_ignore_deadline=True)
        cond = self.start_conductor(_options(
            self.workdir, max_abandoned_calls=10))
        # Every healthy node polled, every hung one skipped while its
        # abandoned call runs on; the sweep counts what it polled.
        skipped = re.compile(r"Power sync sweep: 8 node\(s\) in .*; 3 "
                             r"skipped \(a call on them still running\)")
        base.wait_for(lambda: skipped.search(cond.log()), 60,
                      "a sweep polling the 8 healthy nodes and skipping "
                      "the 3 hung ones")
        # NOTE: a call is skipped from its start; it is abandoned (and
        # named in a warning) once past its deadline and the pool's grace.
        base.wait_for(lambda: all(
            re.search("%s \\(get_power_state" % uuid, cond.log())
            for uuid in hung), 30, "every hung call named as abandoned")
        self.assertRegex(cond.log(),
                         r"WARNING conductor\.executor\.pool .* "
                         r"abandoned \d driver call\(s\) still running "
                         r"past their deadline")
        self.assertTrue(all(self.db.get_node(uuid).power_state is not None
                            for uuid in healthy))
        # Power actions still start while the hung calls run on.
        self.run_manage(cond.config_file, "node", "power", "ok03", "on",
                        "--wait")
        self.assertEqual("power on", self.db.get_node("ok03").power_state)
        worker = self.status(cond)
        pool = worker["status"]["pool"]
        self.assertEqual("healthy", worker["status"]["health"])
        self.assertEqual((3, 3, 10), (pool["abandoned"],
                                      pool["abandoned_total"],
                                      pool["abandoned_cap"]))
        self.assertTrue(worker["online"])

    def test_past_the_cap_the_worker_says_degraded(self) -> None:
        self.enrol(4, "ok")
        self.enrol(3, "hung", fake_latency_ms=12000,
                   fake_ignore_deadline=True)
        cond = self.start_conductor(_options(
            self.workdir, max_abandoned_calls=2))
        base.wait_for(lambda: "is degraded: 2 abandoned driver call(s)"
                      in cond.log(), 60, "the pool to say it is degraded")
        error = re.compile(r"ERROR conductor\.service \[contain worker 0\] "
                           r".*Worker contain:0 is degraded")
        base.wait_for(lambda: error.search(cond.log()), 10,
                      "the worker to log ERROR: degraded")

        def offline() -> dict[str, Any] | None:
            worker = self.status(cond)
            return None if worker["online"] else worker
        worker = base.wait_for(offline, 10, "the degraded worker to let "
                                            "its nodes go (offline)")
        self.assertEqual("degraded", worker["status"]["health"])
        self.assertTrue(worker["status"]["pool"]["degraded"])
        # Once the hung calls return, it takes its share back.
        base.wait_for(lambda: "Worker contain:0 is healthy again"
                      in cond.log(), 60, "the worker to recover")
        base.wait_for(lambda: self.status(cond)["online"], 10,
                      "the worker to heartbeat as live again")


class TestHungBMCs(ContainmentTestCase):
    """Failing BMCs must not delay healthy nodes (issue: hung BMCs)."""

    def test_healthy_nodes_never_wait_behind_failing_ones(self) -> None:
        healthy = set(self.enrol(12, "ok", fake_latency_ms=50))
        # Hung BMCs behind a cooperative driver: each read fails at the
        # deadline; failed before, so they are suspect from the start.
        hung = set(self.enrol(4, "hung", fake_latency_ms=60000))
        for uuid in hung:
            self.db.update_node(uuid, {"power_sync_failures": 1})
        cond = self.start_conductor(_options(
            self.workdir, power_state_timeout=3, max_abandoned_calls=10))
        base.wait_for(lambda: len(SWEEP_RE.findall(cond.log())) >= 2, 90,
                      "two power sync sweeps")
        sweeps: list[list[tuple[str, str]]] = [[]]
        for line in cond.log_lines():
            if SWEEP_RE.search(line):
                sweeps.append([])
                continue
            start = START_RE.search(line)
            if start:
                sweeps[-1].append(("hung" if start["uuid"] in hung
                                   else "start", start["uuid"]))
            read = READ_RE.search(line)
            if read and read["uuid"] in healthy:
                sweeps[-1].append(("read", read["uuid"]))
        for events in sweeps[:2]:
            self.assertEqual(len(healthy), sum(
                1 for kind, _ in events if kind == "read"), str(events))
            starts = [i for i, (kind, _) in enumerate(events)
                      if kind == "start"]
            # Until every healthy node was taken, only the suspect share
            # of the lanes (1 of 4) took hung nodes; healthy lanes help
            # with them only after that.
            before = [uuid for kind, uuid in events[:starts[-1]]
                      if kind == "hung"]
            self.assertLessEqual(len(before), 1, str(events))


class TestDatabaseOutage(base.FunctionalTestCase):
    """A database outage is told in a few lines (issue: log flood)."""

    OUTAGE = 20.0

    def test_outage_logs_a_few_lines_and_the_recovery(self) -> None:
        mariadb = services.MariaDB(self.workdir)
        mariadb.start()
        self.addCleanup(mariadb.stop)
        admin = sa.create_engine(mariadb.admin_url,
                                 isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE contain"))
        admin.dispose()
        url = mariadb.admin_url + "contain"
        db = db_api.Connection.create(url)
        self.addCleanup(db.dispose)
        migration.upgrade(db.engine)
        db.import_nodes([{"name": "n%02d" % i, "driver": "fake",
                          "driver_info": {}} for i in range(40)])
        options = _options(self.workdir, workers=2,
                           sync_power_state_interval=1,
                           pending_action_interval=0.2)
        options["DEFAULT"]["debug"] = False
        options["database"] = {"connection": url}
        cond = self.start_conductor(options)
        self.wait_workers(db, "contain", 2, timeout=60)
        base.wait_for(lambda: len(set(
            m["who"] for m in SWEEP_RE.finditer(cond.log()))) == 2, 60,
            "a power sync sweep of each worker")
        db.dispose()

        down = time.time()
        mariadb.crash()
        # NOTE: the fault lasts OUTAGE seconds; the assertions below poll.
        time.sleep(self.OUTAGE)
        mariadb.start()
        base.wait_for(lambda: cond.log().count(
            "database available again after") >= 2, 90,
            "both workers to log the recovery")
        recovered = time.time()

        # Lines per second from the crash until the recovery was logged,
        # by second since the crash.
        per_second: collections.Counter[int] = collections.Counter()
        tracebacks = []
        when = 0.0
        for line in cond.log_lines():
            stamp = STAMP_RE.match(line)
            if stamp is not None:
                when = datetime.datetime.strptime(
                    stamp.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if not down <= when <= recovered:
                continue
            if stamp is None or "Traceback" in line:
                tracebacks.append(line)
            else:
                per_second[int(when - down)] += 1
        log = cond.log()
        self.assertEqual([], tracebacks)
        # At most 5 lines a second per worker (2 workers).
        self.assertLessEqual(max(per_second.values()), 10, per_second)
        self.assertLessEqual(sum(per_second.values()),
                             5 * 2 * (recovered - down + 1), per_second)
        for worker in (0, 1):
            self.assertRegex(
                log, r"\[contain worker %d\] \[-\] database unavailable "
                     r"since \d\d:\d\d:\d\d: \d+ operation\(s\) failed"
                % worker)
            self.assertRegex(
                log, r"\[contain worker %d\] \[-\] database available "
                     r"again after [\d.]+ s; \d+ operation\(s\) failed"
                % worker)

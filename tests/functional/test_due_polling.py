# SPDX-License-Identifier: Apache-2.0
"""Due-time polling and partition ownership with real conductor processes.

Every read of the fake BMC is logged (DEBUG) with the worker that made it
and a millisecond timestamp; the tests count them per node, on MariaDB and
PostgreSQL, through a start, a SIGHUP, a host joining, a graceful stop and
a kill -9.
"""

from __future__ import annotations

import collections
import datetime
import re
import signal
import time
import uuid as uuid_lib

import sqlalchemy as sa
import testscenarios

from conductor.db import migration
from conductor.db import models
from tests.functional import base
from tests.functional import test_power_sync

load_tests = testscenarios.load_tests_apply_scenarios

POLL_RE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*\[(?P<who>[^\]]+ "
    r"worker \d+)\] \[-\] Fake BMC of node (?P<uuid>[0-9a-f-]{36}): "
    r"power state read")

#: sync_power_state_interval of these tests; tick 1 s, tolerance 2 s.
INTERVAL = 8.0
#: The shortest gap allowed between two polls of one node: the interval
#: less the tolerance, less a second for clocks and log timestamps.
MIN_GAP = INTERVAL - 2.0 - 1.0


def polls(*logs: str) -> dict[str, list[tuple[float, str]]]:
    """Per node, the (epoch seconds, worker) of each read, in order."""
    found: dict[str, list[tuple[float, str]]] = collections.defaultdict(list)
    for text in logs:
        for line in text.splitlines():
            match = POLL_RE.search(line)
            if match:
                at = datetime.datetime.strptime(match.group("at"),
                                                "%Y-%m-%d %H:%M:%S.%f")
                found[match.group("uuid")].append(
                    (at.timestamp(), match.group("who")))
    for items in found.values():
        items.sort()
    return found


def _options(workdir: str, url: str, host: str) -> dict:
    return test_power_sync._options(
        workdir, host=host, database={"connection": url},
        conductor={"sync_power_state_interval": int(INTERVAL),
                   "hash_ring_reset_interval": 1,
                   "heartbeat_timeout": 6,
                   "power_state_timeout": 2})


class TestDuePolling(base.FunctionalTestCase):

    scenarios = base.SERVER_BACKENDS
    backend: str

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database(self.backend,
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()
        self.uuids = [node.uuid for node in self.db.import_nodes(
            [{"name": "n%03d" % i, "driver": "fake", "driver_info": {}}
             for i in range(240)])]
        # NOTE: autovacuum may be off on the test servers: without fresh
        # statistics the planner scans the whole table.
        with self.db.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE TABLE nodes"
                                 if self.backend == "mysql"
                                 else "ANALYZE nodes"))

    def start(self, host: str) -> base.ConductorProcess:
        return self.start_conductor(_options(self.workdir, self.dbf.url,
                                             host), name=host)

    def assert_no_double_poll(self, found: dict[str, list[tuple[float, str]]]
                              ) -> None:
        close = {uuid: [(round(b[0] - a[0], 2), a[1], b[1])
                        for a, b in zip(items, items[1:])
                        if b[0] - a[0] < MIN_GAP]
                 for uuid, items in found.items()}
        self.assertEqual({}, {u: c for u, c in close.items() if c},
                         "nodes polled twice within an interval")

    def assert_each_polled(self, found: dict[str, list[tuple[float, str]]],
                           since: float, until: float) -> None:
        missed = [uuid for uuid in self.uuids
                  if not any(since <= at <= until
                             for at, _ in found.get(uuid, ()))]
        self.assertEqual([], missed, "nodes not polled in time")

    def test_start_sighup_and_join_never_poll_twice(self) -> None:
        a = self.start("a")
        self.wait_workers(self.db, "a", 2)
        started = time.time()
        # Spread over the interval: a few polls per tick, never a sweep.
        base.wait_for(lambda: len(polls(a.log())) == len(self.uuids),
                      3 * INTERVAL, "every node polled once")
        self.assertGreater(time.time() - started, INTERVAL / 2)
        a.signal(signal.SIGHUP)
        base.wait_for(lambda: a.log().count("Worker 1 of a started") >= 2,
                      30, "the workers restarted after SIGHUP")
        time.sleep(INTERVAL)
        b = self.start("b")
        self.wait_workers(self.db, "b", 2)
        joined = time.time()
        base.wait_for(
            lambda: {who.split()[0] for items in polls(b.log()).values()
                     for _, who in items} == {"b"}, 3 * INTERVAL,
            "host b polling its share")
        time.sleep(2 * INTERVAL)
        found = polls(a.log(), b.log())
        self.assert_no_double_poll(found)
        # After the join settled, every node is polled every interval.
        self.assert_each_polled(found, time.time() - 1.6 * INTERVAL,
                                time.time())
        by_host = collections.Counter(
            items[-1][1].split()[0] for items in found.values())
        self.assertGreater(by_host["b"], 60, by_host)
        self.assertGreater(by_host["a"], 60, by_host)
        self.assertGreater(time.time() - joined, INTERVAL)

    def test_stop_and_kill_hand_partitions_over(self) -> None:
        a = self.start("a")
        b = self.start("b")
        c = self.start("c")
        for host in ("a", "b", "c"):
            self.wait_workers(self.db, host, 2)
        base.wait_for(
            lambda: len(polls(a.log(), b.log(), c.log()))
            == len(self.uuids), 4 * INTERVAL, "every node polled")
        # b stops gracefully: its workers go offline at once and the
        # others take its nodes long before heartbeat_timeout.
        b_nodes = {u for u, items in polls(b.log()).items()}
        b.signal(signal.SIGTERM)
        self.assertEqual(0, b.wait_exit(30))
        stopped = time.time()
        base.wait_for(
            lambda: all(any(at > stopped for at, _ in
                            polls(a.log(), c.log()).get(u, ()))
                        for u in b_nodes),
            INTERVAL + 1 + 3, "b's nodes polled by a and c")
        # c is killed: its rows expire after heartbeat_timeout (6 s), a
        # marks them offline and polls c's overdue nodes at once.
        c_nodes = {u for u, items in polls(c.log()).items()
                   if items[-1][0] > stopped}
        c.kill()
        killed = time.time()
        base.wait_for(
            lambda: all(any(at > killed for at, _ in
                            polls(a.log()).get(u, ()))
                        for u in c_nodes),
            6 + 1 + 2 * INTERVAL, "c's nodes polled by a")
        # Each of c's nodes: its last poll by c, and its first poll by a
        # after the kill with the worker of a that made it.
        found_a, found_c = polls(a.log()), polls(c.log())
        last_c = {u: max(at for at, _ in found_c[u] if at <= killed)
                  for u in c_nodes}
        first_a = {u: min(item for item in found_a[u] if item[0] > killed)
                   for u in c_nodes}
        # When each of a's workers took over (its first poll of c's
        # nodes): within heartbeat_timeout (6 s) + 10 s of the kill.
        took: dict[str, float] = {}
        for at, who in first_a.values():
            took[who] = min(at, took.get(who, at))
        self.assertLess(max(took.values()) - killed, 6 + 10,
                        "takeover after kill -9: %s" % {
                            who: round(at - killed, 1)
                            for who, at in took.items()})
        # Overdue nodes are polled at once, not at their next slot: each
        # node by the time its taker took over or its due time (an
        # interval after c's last poll), whichever is later, plus a tick
        # and some slack for a loaded machine. Waiting for the slot after
        # the takeover would poll the overdue ones (most of them) up to a
        # whole interval later.
        late = {u: (round(at - killed, 1), round(last_c[u] - killed, 1),
                    round(took[who] - killed, 1))
                for u, (at, who) in first_a.items()
                if at > max(took[who], last_c[u] + INTERVAL) + 3.0}
        self.assertLessEqual(
            len(late), 0.1 * len(c_nodes),
            "overdue nodes polled at once (node: first poll by a, last by "
            "c, a's takeover, seconds after the kill): %s" % late)
        self.assertFalse(any(r.online for r in self.db.list_conductors()
                             if r.host in ("b", "c")))
        self.assert_no_double_poll(polls(a.log(), b.log(), c.log()))


class TestMigration0004(base.FunctionalTestCase):

    scenarios = base.SERVER_BACKENDS
    backend: str

    def test_fills_the_partitions_of_existing_rows(self) -> None:
        dbf = self.useFixture(base.Database(self.backend))
        db = dbf.connect(upgrade=False)
        migration.upgrade(db.engine, "0003_power_action_claim")
        old_nodes = sa.table(
            "nodes", sa.column("uuid", sa.String),
            sa.column("name", sa.String), sa.column("driver", sa.String),
            sa.column("driver_info", sa.JSON),
            sa.column("created_at", sa.DateTime))
        uuids = [str(uuid_lib.uuid4()) for _ in range(3000)]
        with db.engine.begin() as conn:
            conn.execute(old_nodes.insert(), [
                {"uuid": u, "name": "m%04d" % i, "driver": "fake",
                 "driver_info": {}, "created_at": datetime.datetime.now()}
                for i, u in enumerate(uuids)])
        migration.upgrade(db.engine)
        self.assertEqual(migration.head(), migration.current(db.engine))
        stored = {n.uuid: n.partition for n in db.list_nodes()}
        self.assertEqual({u: models.partition_of(u) for u in uuids}, stored)
        # The owner's query finds a partition's rows through the index.
        some = sorted(set(stored.values()))[:5]
        self.assertEqual(sorted(u for u, p in stored.items() if p in some),
                         sorted(row.uuid for row in db.sync_rows(
                             drivers=["fake"], partitions=some)))

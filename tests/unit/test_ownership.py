# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.ownership: live workers, the rings, reservations."""

from __future__ import annotations

import dataclasses
import datetime
import threading
from typing import Any, Sequence
from unittest import mock
import uuid as uuid_lib

from oslo_db import exception as db_exc
from oslo_utils import timeutils
import sqlalchemy as sa
from tooz import hashring

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.db import api as db_api
from conductor.db import models
from conductor import ownership
from tests import base
from tests import fakes

NOW = datetime.datetime(2030, 1, 1, 12, 0, 0)
TIMEOUT = 60.0


def uuids(count: int) -> list[str]:
    """``count`` distinct, reproducible uuids."""
    return [str(uuid_lib.UUID(int=index * 7919 + 12345))
            for index in range(count)]


def record_statements(test: base.TestCase, engine: sa.Engine) -> list[str]:
    """SQL statements run on ``engine`` from now on."""
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, params: Any,
                 context: Any, executemany: bool) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    test.addCleanup(sa.event.remove, engine, "before_cursor_execute",
                    listener)
    return statements


def record(host: str, worker_id: int, age: float = 0.0,
           online: bool = True) -> db_api.ConductorRecord:
    beat = NOW - datetime.timedelta(seconds=age)
    return db_api.ConductorRecord(host, worker_id, None, ["fake"], online,
                                  beat, beat, moves_counter=True)


class TestLiveMembership(base.TestCase):

    def test_fresh_online_workers_by_host_sorted(self) -> None:
        membership = ownership.live_membership(
            [record("b", 0), record("a", 1), record("a", 0, age=59.9)],
            NOW, TIMEOUT)
        self.assertEqual({"a": (0, 1), "b": (0,)}, membership.hosts)
        self.assertEqual(["a:0", "a:1", "b:0"], membership.holders)
        self.assertEqual("a[0,1], b[0]", membership.describe())

    def test_stale_and_offline_workers_are_dead(self) -> None:
        membership = ownership.live_membership(
            [record("a", 0), record("a", 1, age=TIMEOUT),
             record("a", 2, age=3600), record("b", 0, online=False)],
            NOW, TIMEOUT)
        # NOTE: a heartbeat exactly heartbeat_timeout old is dead.
        self.assertEqual({"a": (0,)}, membership.hosts)

    def test_draining_host_is_left_out_except_by_itself(self) -> None:
        records = [record("a", 0), record("b", 0),
                   dataclasses.replace(record("b", 1), draining=True),
                   dataclasses.replace(record("c", 0, online=False),
                                       draining=True)]
        others = ownership.live_membership(records, NOW, TIMEOUT, "a")
        self.assertEqual({"a": (0,), "b": (0,)}, others.hosts)
        # Still live: what it holds is not released by the others.
        self.assertEqual(("b:1",), others.draining)
        itself = ownership.live_membership(records, NOW, TIMEOUT, "b")
        self.assertEqual({"a": (0,), "b": (0, 1)}, itself.hosts)
        self.assertEqual((), itself.draining)

    def test_nobody(self) -> None:
        membership = ownership.live_membership([], NOW, TIMEOUT)
        self.assertEqual({}, membership.hosts)
        self.assertEqual([], membership.holders)
        self.assertEqual("nobody", membership.describe())


class RingsTestCase(base.TestCase):
    """A migrated SQLite file; workers registered at chosen ages.

    Rings are built with 2**8 partitions per ring member unless a test
    sets ``real_partitions``: building is linear in partitions and the
    properties under test hold for any number.
    """

    real_partitions = False

    def setUp(self) -> None:
        super().setUp()
        if not self.real_partitions:
            self.use_small_rings()
        self.db = self.make_db()
        self.clock = fakes.FakeClock(1000.0)

    def beat(self, host: str, worker_id: int, age: float = 0.0) -> None:
        """(Re-)register a worker whose last beat was ``age`` s ago."""
        when = NOW - datetime.timedelta(seconds=age)
        with mock.patch.object(timeutils, "utcnow", autospec=True,
                               return_value=when):
            self.db.register_conductor(host, worker_id, ["fake"])

    def rings(self, host: str, worker_id: int,
              reset_interval: float = 15.0) -> ownership.Rings:
        rings = ownership.Rings(self.db, host, worker_id,
                                heartbeat_timeout=TIMEOUT,
                                reset_interval=reset_interval,
                                now_func=lambda: NOW, monotonic=self.clock)
        rings.refresh()
        return rings

    def views(self, *holders: tuple[str, int]) -> list[ownership.Rings]:
        return [self.rings(host, worker) for host, worker in holders]

    def assert_partition(self, views: Sequence[ownership.Rings],
                         items: list[str]) -> dict[str, set[str]]:
        """Every item is owned by exactly one view; returns the shares."""
        shares = {view.holder: set(view.owned(items)) for view in views}
        owners = {item: [holder for holder, share in shares.items()
                         if item in share] for item in items}
        missed = [item for item, who in owners.items() if not who]
        twice = {item: who for item, who in owners.items() if len(who) > 1}
        self.assertEqual([], missed)
        self.assertEqual({}, twice)
        return shares


class TestRingsPartition(RingsTestCase):

    def setUp(self) -> None:
        super().setUp()
        for host, worker in (("a", 0), ("a", 1), ("b", 0)):
            self.beat(host, worker)
        self.items = uuids(2000)

    def test_every_node_has_exactly_one_owner(self) -> None:
        views = self.views(("a", 0), ("a", 1), ("b", 0))
        shares = self.assert_partition(views, self.items)
        self.assertEqual(len(self.items),
                         sum(len(share) for share in shares.values()))

    def test_views_agree_on_owner_and_owner_host(self) -> None:
        views = self.views(("a", 0), ("a", 1), ("b", 0))
        for item in self.items[:300]:
            owners = {view.owner(item) for view in views}
            self.assertEqual(1, len(owners))
            owner = owners.pop()
            assert owner is not None
            self.assertEqual({owner[0]},
                             {view.owner_host(item) for view in views})
            for view in views:
                self.assertEqual(owner == (view.host, view.worker_id),
                                 view.owns(item))

    def test_dead_worker_moves_only_its_own_nodes(self) -> None:
        before = self.assert_partition(
            self.views(("a", 0), ("a", 1), ("b", 0)), self.items)
        self.beat("a", 1, age=TIMEOUT + 1)
        dead = self.rings("a", 1)
        self.assertEqual([], dead.owned(self.items))
        self.assertNotIn(("a", 1), {dead.owner(i) for i in self.items})
        after = self.assert_partition(self.views(("a", 0), ("b", 0)),
                                      self.items)
        # The other host is not affected at all; a:1's nodes went to a:0.
        self.assertEqual(before["b:0"], after["b:0"])
        self.assertEqual(before["a:0"] | before["a:1"], after["a:0"])

    def test_dead_host_moves_only_its_nodes(self) -> None:
        before = self.assert_partition(
            self.views(("a", 0), ("a", 1), ("b", 0)), self.items)
        self.beat("b", 0, age=TIMEOUT + 1)
        after = self.assert_partition(self.views(("a", 0), ("a", 1)),
                                      self.items)
        # a's nodes keep their worker; b's are split between a's workers.
        self.assertLessEqual(before["a:0"], after["a:0"])
        self.assertLessEqual(before["a:1"], after["a:1"])
        self.assertEqual(set(self.items), after["a:0"] | after["a:1"])
        self.assertGreater(len(after["a:0"] - before["a:0"]), 300)
        self.assertGreater(len(after["a:1"] - before["a:1"]), 300)

    def test_new_host_takes_a_share_from_every_one(self) -> None:
        before = self.assert_partition(
            self.views(("a", 0), ("a", 1), ("b", 0)), self.items)
        self.beat("c", 0)
        after = self.assert_partition(
            self.views(("a", 0), ("a", 1), ("b", 0), ("c", 0)), self.items)
        # Consistent hashing: nodes only move to the newcomer.
        for holder in ("a:0", "a:1", "b:0"):
            self.assertLessEqual(after[holder], before[holder])
        self.assertGreater(len(after["c:0"]), 400)
        self.assertLess(len(after["c:0"]), 1000)


class TestRingsDrain(RingsTestCase):

    def test_drained_host_nodes_move_to_the_others_at_once(self) -> None:
        for host, worker in (("a", 0), ("b", 0), ("b", 1)):
            self.beat(host, worker)
        items = uuids(500)
        a0, b0, b1 = self.views(("a", 0), ("b", 0), ("b", 1))
        self.assertGreater(len(b0.owned(items) + b1.owned(items)), 100)
        self.assertIsNone(b0.draining_since)
        self.assertEqual(2, self.db.set_draining("b"))
        for view in (a0, b0, b1):
            view.refresh()
        # The others: b is out of the rings.
        self.assertEqual(set(items), set(a0.owned(items)))
        self.assertEqual({"a"}, {a0.owner_host(i) for i in items})
        # b itself keeps working its share until it stops.
        self.assertGreater(len(b0.owned(items) + b1.owned(items)), 100)
        self.assertEqual(1000.0, b0.draining_since)
        # A new start of b's conductor ends the drain.
        self.assertEqual(2, self.db.clear_draining("b"))
        b0.refresh()
        self.assertIsNone(b0.draining_since)

    def test_the_first_refresh_that_finds_a_drain_says_so(self) -> None:
        for host, worker in (("a", 0), ("b", 0)):
            self.beat(host, worker)
        a0, b0 = self.views(("a", 0), ("b", 0))
        told = {"a:0": 0, "b:0": 0}
        for view in (a0, b0):
            view.on_draining = (
                lambda holder=view.holder: told.__setitem__(
                    holder, told[holder] + 1))
        b0.refresh()
        self.assertEqual({"a:0": 0, "b:0": 0}, told)
        self.db.set_draining("b")
        for _ in range(3):
            a0.refresh()
            b0.refresh()
        # Once, to the draining host's worker only.
        self.assertEqual({"a:0": 0, "b:0": 1}, told)
        self.db.clear_draining("b")
        b0.refresh()
        self.db.set_draining("b")
        b0.refresh()
        self.assertEqual(2, told["b:0"])

    def test_others_keep_a_draining_workers_reservations(self) -> None:
        for host, worker in (("a", 0), ("b", 0)):
            self.beat(host, worker)
        items = uuids(40)
        self.db.import_nodes([{"uuid": item, "driver": "fake"}
                              for item in items])
        for item in items:
            self.db.reserve_node(item, "b:0")
        self.db.set_draining("b")
        a0 = self.rings("a", 0)
        self.assertEqual(set(items), set(a0.owned(items)))
        self.assertEqual(0, a0.release_dead_reservations())
        self.assertEqual({"b:0"}, set(self.db.reservations().values()))


class TestRingsSpread(RingsTestCase):

    real_partitions = True

    def test_shares_are_even_with_the_real_partition_count(self) -> None:
        for host, worker in (("a", 0), ("a", 1), ("b", 0)):
            self.beat(host, worker)
        items = uuids(2000)
        shares = self.assert_partition(
            self.views(("a", 0), ("a", 1), ("b", 0)), items)
        # Two hosts share the nodes about evenly, then a's two workers
        # share a's half.
        self.assertGreater(len(shares["b:0"]), 900)
        self.assertLess(len(shares["b:0"]), 1100)
        self.assertGreater(len(shares["a:0"]), 420)
        self.assertGreater(len(shares["a:1"]), 420)


class TestRingsRefresh(RingsTestCase):

    def test_nobody_live_owns_nothing(self) -> None:
        self.beat("a", 0, age=TIMEOUT + 1)
        rings = self.rings("a", 0)
        item = uuids(1)[0]
        self.assertEqual({}, rings.membership.hosts)
        self.assertIsNone(rings.owner(item))
        self.assertIsNone(rings.owner_host(item))
        self.assertFalse(rings.owns(item))
        self.assertEqual([], rings.owned(uuids(50)))

    def test_unrefreshed_rings_own_nothing(self) -> None:
        self.beat("a", 0)
        rings = ownership.Rings(self.db, "a", 0, TIMEOUT, 15,
                                now_func=lambda: NOW, monotonic=self.clock)
        self.assertIsNone(rings.owner(uuids(1)[0]))

    def test_refresh_reports_membership_changes_only(self) -> None:
        self.beat("a", 0)
        rings = ownership.Rings(self.db, "a", 0, TIMEOUT, 15,
                                now_func=lambda: NOW, monotonic=self.clock)
        self.assertTrue(rings.refresh())
        self.assertEqual(1, rings.generation)
        self.assertFalse(rings.refresh())
        self.beat("b", 0)
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)
        self.db.set_offline("b")
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        self.assertEqual(3, rings.generation)

    def test_rebuilds_only_when_membership_changes(self) -> None:
        self.beat("a", 0)
        with mock.patch.object(ownership.hashring, "HashRing",
                               autospec=True,
                               side_effect=hashring.HashRing) as ring_cls:
            rings = self.rings("a", 0, reset_interval=15)
            built = ring_cls.call_count
            self.assertEqual(2, built)      # the host ring and a's ring
            self.clock.now += 60
            # Same members: the same rings, so nothing is rebuilt ...
            self.assertFalse(rings.refresh())
            self.assertEqual(built, ring_cls.call_count)
            # ... unless asked to.
            self.assertFalse(rings.refresh(force=True))
            self.assertEqual(2 * built, ring_cls.call_count)
            self.beat("b", 0)
            self.assertTrue(rings.refresh())
            self.assertEqual(2 * built + 3, ring_cls.call_count)
        self.assertEqual(2, rings.generation)

    def test_owns_cache_is_dropped_on_rebuild(self) -> None:
        self.beat("a", 0)
        items = uuids(200)
        rings = self.rings("a", 0)
        self.assertEqual(items, rings.owned(items))     # cached: all mine
        self.beat("b", 0)
        self.assertTrue(rings.refresh())
        mine = rings.owned(items)
        self.assertEqual([item for item in items
                          if rings.owner(item) == ("a", 0)], mine)
        self.assertLess(len(mine), 150)
        self.assertGreater(len(mine), 50)

    def test_a_slow_refresh_never_installs_an_older_membership(self) -> None:
        self.beat("a", 0)
        rings = self.rings("a", 0)
        read, resume = threading.Event(), threading.Event()
        self.addCleanup(resume.set)
        real_list = self.db.list_conductors
        calls = []

        def list_conductors(*args: object) -> list[db_api.ConductorRecord]:
            records = real_list()
            calls.append(len(records))
            if len(calls) == 1:       # the slow refresh: pause after reading
                read.set()
                resume.wait(base.WAIT)
            return records

        changed: list[bool] = []
        with mock.patch.object(self.db, "list_conductors", autospec=True,
                               side_effect=list_conductors):
            slow = threading.Thread(
                target=lambda: changed.append(rings.refresh(force=True)))
            slow.start()
            self.assertTrue(read.wait(base.WAIT))
            self.beat("b", 0)                   # joins after the slow read
            self.assertTrue(rings.refresh())    # a newer read wins
            resume.set()
            slow.join(base.WAIT)
        self.assertEqual([1, 2], calls)
        self.assertEqual([False], changed)
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)
        self.assertIsNotNone(rings.owner_host(uuids(1)[0]))
        self.assertEqual({"a", "b"}, {rings.owner_host(item)
                                      for item in uuids(50)})

    def test_heartbeat_age_uses_now_func(self) -> None:
        self.beat("a", 0, age=10)
        now = [NOW]
        rings = ownership.Rings(self.db, "a", 0, TIMEOUT, 15,
                                now_func=lambda: now[0],
                                monotonic=self.clock)
        rings.refresh()
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        now[0] = NOW + datetime.timedelta(seconds=TIMEOUT - 10)
        self.assertTrue(rings.refresh())
        self.assertEqual({}, rings.membership.hosts)


class TestReleaseDeadReservations(RingsTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.beat("a", 0)
        self.beat("a", 1)
        self.beat("b", 0, age=TIMEOUT + 5)     # dead
        self.nodes = [node.uuid for node in self.db.import_nodes(
            [{"driver": "fake"}] * 40)]
        self.rings_a0 = self.rings("a", 0)
        self.mine = set(self.rings_a0.owned(self.nodes))
        self.theirs = [u for u in self.nodes if u not in self.mine]
        self.assertGreater(len(self.mine), 5)
        self.assertGreater(len(self.theirs), 5)

    def reserve(self, uuid: str, holder: str) -> None:
        self.db.reserve_node(uuid, holder)

    def reservations(self) -> dict[str, str | None]:
        return {node.uuid: node.reservation
                for node in self.db.list_nodes()}

    def test_releases_only_dead_holders_on_owned_nodes(self) -> None:
        mine = sorted(self.mine)
        self.reserve(mine[0], "b:0")          # dead worker
        self.reserve(mine[1], "gone:7")       # never registered
        self.reserve(mine[2], "a:1")          # live worker: kept
        self.reserve(mine[3], "a:0")          # ours: kept
        self.reserve(self.theirs[0], "b:0")   # not ours to release
        released = self.rings_a0.release_dead_reservations()
        self.assertEqual(2, released)
        self.assertEqual({mine[2]: "a:1", mine[3]: "a:0",
                          self.theirs[0]: "b:0"},
                         {uuid: holder for uuid, holder in
                          self.reservations().items() if holder})

    def test_the_new_owner_releases_the_rest(self) -> None:
        self.reserve(self.theirs[0], "b:0")
        rings_a1 = self.rings("a", 1)
        self.assertIn(self.theirs[0], rings_a1.owned(self.nodes))
        self.assertEqual(1, rings_a1.release_dead_reservations())
        self.assertIsNone(self.reservations()[self.theirs[0]])

    def test_nothing_owned_nothing_released(self) -> None:
        self.reserve(self.theirs[0], "b:0")
        self.assertEqual(0, self.rings_a0.release_dead_reservations())
        self.assertEqual("b:0", self.reservations()[self.theirs[0]])

    def test_release_reads_no_node_row(self) -> None:
        self.reserve(sorted(self.mine)[0], "b:0")
        statements = record_statements(self, self.db.engine)
        self.assertEqual(1, self.rings_a0.release_dead_reservations())
        self.assertEqual([], [q for q in statements
                              if q.lstrip().upper().startswith("SELECT")])


class TestPartitions(base.TestCase):

    def test_partition_of_is_stable(self) -> None:
        # NOTE: stored in nodes.partition and computed again by every
        # process: these values must never change.
        self.assertEqual(
            [models.partition_of(u) for u in uuids(5)],
            [models.partition_of(u) for u in list(uuids(5))])
        self.assertEqual(
            [385, 909, 931, 352, 81],
            [models.partition_of(u) for u in uuids(5)])

    def test_partition_of_is_uniform(self) -> None:
        counts = [0] * models.PARTITIONS
        for uuid in (str(uuid_lib.uuid4()) for _ in range(100_000)):
            counts[models.partition_of(uuid)] += 1
        mean = 100_000 / models.PARTITIONS       # ~97.7, sd ~9.9
        self.assertGreater(min(counts), mean - 6 * 9.9)
        self.assertLess(max(counts), mean + 6 * 9.9)

    def test_import_stores_the_partition(self) -> None:
        db = self.make_db()
        nodes = db.import_nodes([{"driver": "fake"}] * 20)
        self.assertEqual([models.partition_of(n.uuid) for n in nodes],
                         [n.partition for n in nodes])
        self.assertEqual(
            [n.uuid for n in nodes if n.partition in (1, 2, 3)],
            [n.uuid for n in db.list_nodes(partitions=[1, 2, 3])])


class TestPartitionTable(base.TestCase):

    def test_every_partition_has_one_live_owner(self) -> None:
        membership = ownership.Membership({"a": (0, 1), "b": (0,)})
        table = ownership.partition_table(membership)
        assert table is not None
        self.assertEqual(models.PARTITIONS, len(table))
        self.assertEqual({("a", 0), ("a", 1), ("b", 0)}, set(table))
        self.assertIsNone(ownership.partition_table(
            ownership.Membership({})))


class TestStartAndHandover(RingsTestCase):

    def make(self, host: str, worker_id: int, **kw: Any) -> ownership.Rings:
        rings = ownership.Rings(self.db, host, worker_id,
                                heartbeat_timeout=TIMEOUT,
                                reset_interval=5, now_func=lambda: NOW,
                                monotonic=self.clock, **kw)
        rings.refresh()
        return rings

    def test_a_sibling_keeps_its_share_until_its_grace_passes(self) -> None:
        self.beat("a", 0)
        first = self.make("a", 0, workers=2, start_grace=30)
        self.assertEqual({"a": (0, 1)}, first.membership.hosts)
        share = len(first.partitions())
        self.assertLess(share, 0.7 * ownership.PARTITIONS)
        self.assertGreater(share, 0.3 * ownership.PARTITIONS)
        # a:1 registers: nothing moves.
        self.beat("a", 1)
        self.assertFalse(first.refresh())
        self.assertEqual(share, len(first.partitions()))
        # a:1 never comes back: after the grace, a:0 takes everything.
        self.beat("a", 1, age=TIMEOUT + 1)
        self.clock.now += 31
        self.assertTrue(first.refresh())
        self.assertEqual(ownership.PARTITIONS, len(first.partitions()))

    def test_without_a_worker_count_only_registered_siblings_count(
            self) -> None:
        self.beat("a", 0)
        alone = self.make("a", 0)
        self.assertEqual(ownership.PARTITIONS, len(alone.partitions()))

    def test_partitions_of_a_live_owner_are_held_after_a_join(self) -> None:
        self.beat("a", 0)
        old = self.make("a", 0)
        self.beat("b", 0)
        new = self.make("b", 0, handover_delay=20)
        gained = new.owned_partitions()
        self.assertGreater(len(gained), 100)
        self.assertEqual((), new.partitions())      # a:0 may still poll
        self.assertTrue(old.refresh())
        self.assertEqual(set(), gained & old.owned_partitions())
        self.clock.now += 21
        self.assertEqual(tuple(sorted(gained)), new.partitions())
        # Known as handed over (its owner was live) after the hold too;
        # the first owner's partitions were handed by nobody.
        self.assertTrue(all(new.handed_over(p) and new.was_held(p)
                            for p in gained))
        self.assertFalse(any(old.handed_over(p)
                             for p in old.owned_partitions()))

    def test_partitions_are_worked_out_again_only_on_a_change(
            self) -> None:
        self.beat("a", 0)
        old = self.make("a", 0)
        self.beat("b", 0)
        new = self.make("b", 0, handover_delay=20)
        held = new.partitions()
        self.assertIs(held, new.partitions())
        self.clock.now += 21          # the hold ended
        taken = new.partitions()
        self.assertEqual(tuple(sorted(new.owned_partitions())), taken)
        self.assertIs(taken, new.partitions())
        mine = old.partitions()
        self.assertIs(mine, old.partitions())
        self.assertTrue(old.refresh())     # b joined: a's share shrank
        self.assertEqual(tuple(sorted(old.owned_partitions())),
                         old.partitions())
        self.assertLess(len(old.partitions()), len(mine))

    def test_partitions_of_a_dead_owner_are_taken_at_once(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0)
        b = self.make("b", 0, handover_delay=20)
        self.clock.now += 21
        before = set(b.partitions())
        self.assertEqual(before, set(b.owned_partitions()))
        self.beat("a", 0, age=TIMEOUT + 1)
        self.assertTrue(b.refresh())
        self.assertEqual(tuple(range(ownership.PARTITIONS)), b.partitions())

    def test_a_host_back_after_a_restart_waits_for_the_others(self) -> None:
        # b took a's partitions while a was away; a comes back.
        self.beat("b", 0)
        self.beat("a", 0)
        a = self.make("a", 0, workers=1, handover_delay=20)
        self.assertGreater(len(a.owned_partitions()), 100)
        self.assertEqual((), a.partitions())


class TestTidy(RingsTestCase):

    def test_live_workers_mark_expired_rows_offline(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0, age=TIMEOUT + 1)
        self.beat("b", 1, age=5)
        self.rings("a", 0)
        online = {(r.host, r.worker_id): r.online
                  for r in self.db.list_conductors()}
        self.assertEqual({("a", 0): True, ("b", 0): False, ("b", 1): True},
                         online)

    def test_rows_of_long_gone_hosts_are_removed(self) -> None:
        self.beat("a", 0)
        self.beat("old", 0, age=3 * 3600)
        self.beat("old", 1, age=2 * 3600)
        self.beat("recent", 0, age=600)
        self.db.set_offline("old")
        self.db.set_offline("recent")
        rings = ownership.Rings(self.db, "a", 0, TIMEOUT, 5,
                                now_func=lambda: NOW, monotonic=self.clock,
                                cleanup_age=3600)
        rings.refresh()
        self.assertEqual({"a", "recent"},
                         {r.host for r in self.db.list_conductors()})

    def test_cleanup_age_zero_keeps_every_row(self) -> None:
        self.beat("a", 0)
        self.beat("old", 0, age=30 * 24 * 3600)
        self.rings("a", 0)
        self.assertEqual({"a", "old"},
                         {r.host for r in self.db.list_conductors()})

    def test_refresh_reads_only_conductors_rows(self) -> None:
        self.beat("a", 0)
        self.db.import_nodes([{"driver": "fake"}] * 10)
        rings = self.rings("a", 0)
        rings.update()      # releases what no live worker holds, once
        recorded = record_statements(self, self.db.engine)

        def statements() -> list[str]:
            return [q for q in recorded if q != "BEGIN"]

        # A forced refresh reads the rows; the others the membership
        # counter only, while it does not move (see TestRowsReadAgain).
        self.assertFalse(rings.refresh(force=True))
        self.assertEqual(2, len(statements()))
        self.assertIn("FROM conductors", statements()[1])
        self.assertFalse(rings.update())
        self.assertEqual(3, len(statements()))
        self.assertIn("FROM conductor_changes", statements()[2])
        # maybe_update reads nothing within reset_interval.
        self.assertFalse(rings.maybe_update())
        self.assertEqual(3, len(statements()))
        self.clock.now += 16
        self.assertFalse(rings.maybe_update())
        self.assertEqual(4, len(statements()))
        # A shorter max_age (the periodic refresh's): read only when the
        # last read is older than that.
        self.clock.now += 4
        self.assertFalse(rings.maybe_update(max_age=5))
        self.assertEqual(4, len(statements()))
        self.clock.now += 1
        self.assertFalse(rings.maybe_update(max_age=5))
        self.assertEqual(5, len(statements()))
        self.assertTrue(all("FROM conductor" in q for q in statements()))


class TestRowsReadAgain(RingsTestCase):
    """The peers' rows are read again only when they may have changed."""

    def setUp(self) -> None:
        super().setUp()
        self.recorded = record_statements(self, self.db.engine)

    def rows_read(self) -> int:
        """Reads of the conductors rows (list_conductors) so far."""
        return sum(1 for q in self.recorded
                   if q.startswith("SELECT conductors.host"))

    def clocked_rings(self, timeout: float = TIMEOUT,
                      cleanup_age: float = 0.0) -> ownership.Rings:
        """Rings of a:0 whose wall clock is ``self.wall``."""
        self.wall = NOW
        return ownership.Rings(self.db, "a", 0, timeout, 5,
                               now_func=lambda: self.wall,
                               monotonic=self.clock, cleanup_age=cleanup_age)

    def advance(self, seconds: float, wall: float | None = None) -> None:
        """Both clocks ``seconds`` on (the wall clock ``wall`` if given)."""
        self.clock.now += seconds
        self.wall += datetime.timedelta(
            seconds=seconds if wall is None else wall)

    def test_same_counter_same_rows(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0)
        rings = self.rings("a", 0)
        self.assertEqual(1, self.rows_read())
        for _ in range(5):
            self.clock.now += 10
            self.assertFalse(rings.refresh())
        self.assertEqual(1, self.rows_read())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)

    def test_a_join_a_stop_and_a_drain_are_read_at_once(self) -> None:
        self.beat("a", 0)
        rings = self.rings("a", 0)
        self.beat("b", 0)
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)
        self.db.set_offline("b", 0)
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        self.beat("c", 0)
        self.assertTrue(rings.refresh())
        self.db.set_draining("c")
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        self.assertEqual(5, self.rows_read())

    def test_read_again_when_a_heartbeat_may_have_expired(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0, age=20)
        rings = self.clocked_rings()
        rings.refresh()
        self.assertEqual(1, self.rows_read())
        # b's beat of 20 s ago expires in TIMEOUT - 20 s: not before.
        self.advance(TIMEOUT - 21)
        self.assertFalse(rings.refresh())
        self.assertEqual(1, self.rows_read())
        self.advance(1)
        self.assertTrue(rings.refresh())
        self.assertEqual(2, self.rows_read())
        self.assertEqual({"a": (0,)}, rings.membership.hosts)

    def test_an_expired_row_is_read_until_marked_offline(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0, age=TIMEOUT + 1)
        failures = [db_exc.DBConnectionError("gone")]

        def set_expired_offline(cutoff: datetime.datetime) -> int:
            if failures:
                raise failures.pop()
            return real(cutoff)

        real = self.db.set_expired_offline
        with mock.patch.object(self.db, "set_expired_offline",
                               side_effect=set_expired_offline):
            rings = self.rings("a", 0)
            self.assertEqual(1, self.rows_read())
            rings.refresh()
        self.assertEqual(2, self.rows_read())
        self.assertEqual({"a:0": True, "b:0": False},
                         {r.holder: r.online
                          for r in self.db.list_conductors()})

    def test_read_again_when_a_gone_host_is_due_for_removal(self) -> None:
        self.beat("a", 0)
        self.beat("old", 0, age=3000)
        self.db.set_offline("old")
        # Heartbeats that expire after the hour: only the removal of
        # "old" (gone 3000 s, removed after 3600 s) reads the rows again.
        rings = self.clocked_rings(timeout=10 * 3600, cleanup_age=3600)
        rings.refresh()
        self.advance(599)
        rings.refresh()
        self.assertEqual(1, self.rows_read())
        self.advance(2)
        rings.refresh()
        self.assertEqual(2, self.rows_read())
        self.assertEqual({"a"}, {r.host for r in self.db.list_conductors()})

    def test_a_wall_clock_step_reads_the_rows_again(self) -> None:
        # The wall clock steps 60 s ahead of the monotonic one: b, which
        # beat 9 s before the last read and again since, stays live.
        self.beat("a", 0)
        self.beat("b", 0, age=9)
        rings = self.clocked_rings()
        rings.refresh()
        self.advance(5, wall=65)
        self.assertTrue(self.db.heartbeat("b", 0, at=self.wall))
        self.assertTrue(self.db.heartbeat("a", 0, at=self.wall))
        self.assertFalse(rings.refresh())
        self.assertEqual(2, self.rows_read())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)

    def test_rows_of_an_earlier_release_are_read_every_time(self) -> None:
        # Its workers register and stop without moving the counter.
        self.beat("a", 0)
        self.beat("old", 0)
        with self.db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE conductors SET moves_counter = "
                                 "false WHERE host = 'old'"))
        rings = self.rings("a", 0)
        rings.refresh()
        rings.refresh()
        self.assertEqual(3, self.rows_read())

    def test_a_degraded_worker_and_its_return_are_read_at_once(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0)
        rings = self.rings("a", 0)
        self.assertTrue(self.db.heartbeat("b", 0, online=False, at=NOW))
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        self.assertTrue(self.db.heartbeat("b", 0, at=NOW))
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)

    def test_a_worker_back_after_its_expiry_is_read_at_once(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0, age=TIMEOUT + 1)
        rings = self.rings("a", 0)      # marks b offline
        self.assertEqual({"a": (0,)}, rings.membership.hosts)
        self.assertTrue(self.db.heartbeat("b", 0, at=NOW))
        self.assertTrue(rings.refresh())
        self.assertEqual({"a": (0,), "b": (0,)}, rings.membership.hosts)

    def test_untrusted_and_forced_refreshes_read_the_rows(self) -> None:
        self.beat("a", 0)
        rings = self.rings("a", 0)
        rings.refresh(force=True)
        self.assertEqual(2, self.rows_read())
        rings.liveness = ownership.Liveness(5, TIMEOUT, monotonic=self.clock)
        rings.refresh()
        self.assertEqual(3, self.rows_read())


class TestUpdate(RingsTestCase):

    def test_a_failed_release_is_retried_at_the_next_update(self) -> None:
        self.beat("a", 0)
        rings = self.rings("a", 0)
        [node] = self.db.import_nodes([{"driver": "fake"}])
        self.db.reserve_node(node.uuid, "gone:0")
        real = self.db.release_reservations
        with mock.patch.object(self.db, "release_reservations",
                               autospec=True,
                               side_effect=RuntimeError("blip")):
            self.assertRaises(RuntimeError, rings.update, force=True)
        with mock.patch.object(self.db, "release_reservations",
                               autospec=True, side_effect=real) as release:
            self.assertFalse(rings.update())
            self.assertEqual(1, release.call_count)
            self.assertFalse(rings.update())
            self.assertEqual(1, release.call_count)
        self.assertIsNone(self.db.get_node(node.uuid).reservation)

    def test_a_change_seen_by_an_rpc_refresh_is_released(self) -> None:
        # An RPC call refreshes the rings itself: when it is the one that
        # sees a worker leave, the next update still releases its nodes.
        self.beat("a", 0)
        self.beat("b", 0)
        rings = self.rings("a", 0)
        [node] = self.db.import_nodes([{"driver": "fake"}])
        self.db.reserve_node(node.uuid, "b:0")
        self.db.set_offline("b", 0)
        self.assertTrue(rings.refresh())
        self.assertFalse(rings.update())
        self.assertIsNone(self.db.get_node(node.uuid).reservation)

    def test_a_change_seen_during_a_release_is_released_next(self) -> None:
        self.beat("a", 0)
        self.beat("b", 0)
        rings = self.rings("a", 0)
        [node] = self.db.import_nodes([{"driver": "fake"}])
        self.db.reserve_node(node.uuid, "b:0")
        real = rings.release_dead_reservations

        def release() -> int:
            released = real()       # b is live: its reservation stays
            self.db.set_offline("b", 0)
            self.assertTrue(rings.refresh())    # an RPC call's refresh
            return released

        with mock.patch.object(rings, "release_dead_reservations",
                               side_effect=release):
            rings.update(force=True)
        self.assertEqual("b:0", self.db.get_node(node.uuid).reservation)
        self.assertFalse(rings.update())
        self.assertIsNone(self.db.get_node(node.uuid).reservation)


class TestLiveness(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.clock = fakes.FakeClock(1000.0)
        self.live = ownership.Liveness(10.0, TIMEOUT, monotonic=self.clock)

    def test_not_trusted_before_any_beat(self) -> None:
        self.assertFalse(self.live.trusted())

    def test_a_starting_worker_is_trusted_at_once(self) -> None:
        self.live.started()
        self.assertTrue(self.live.trusted())

    def test_regular_beats_keep_trust(self) -> None:
        self.live.started()
        for _ in range(20):
            self.clock.advance(10.0)
            self.live.beat()
            self.assertTrue(self.live.trusted())

    def test_a_late_heartbeat_loses_trust(self) -> None:
        self.live.started()
        self.clock.advance(self.live.gap + 0.1)
        self.assertFalse(self.live.trusted())

    def test_after_an_outage_others_get_a_full_timeout(self) -> None:
        self.live.started()
        self.clock.advance(TIMEOUT + 30)     # no beat reached the database
        with self.assertLogs(ownership.LOG, "WARNING") as logs:
            self.live.beat()
        self.assertIn("Database access resumed", logs.output[0])
        for _ in range(int(TIMEOUT // 10) - 1):
            self.assertFalse(self.live.trusted())
            self.clock.advance(10.0)
            self.live.beat()
        self.clock.advance(10.0)
        self.live.beat()
        self.assertTrue(self.live.trusted())


class TestJudgementAfterOutage(RingsTestCase):
    """A worker back from an outage does not take the others' nodes."""

    def setUp(self) -> None:
        super().setUp()
        self.now = NOW
        self.beat("a", 0)
        self.beat("b", 0)
        self.live = ownership.Liveness(10.0, TIMEOUT, monotonic=self.clock)
        self.live.started()
        self.view = ownership.Rings(self.db, "a", 0,
                                    heartbeat_timeout=TIMEOUT,
                                    reset_interval=15.0,
                                    now_func=lambda: self.now,
                                    monotonic=self.clock,
                                    liveness=self.live)
        self.view.refresh()
        self.nodes = uuids(200)
        self.theirs = [uuid for uuid in self.nodes
                       if not self.view.owns(uuid)]
        self.assertTrue(self.theirs)
        self.db.import_nodes([{"uuid": uuid, "driver": "fake"}
                              for uuid in self.nodes])
        self.db.reserve_node(self.theirs[0], "b:0")

    def outage(self, seconds: float) -> None:
        """The database was away: every heartbeat in it is that old."""
        self.now += datetime.timedelta(seconds=seconds)
        self.clock.advance(seconds)
        self.beat("a", 0, age=-seconds + 0.0)    # our beat lands first

    def test_b_is_not_judged_dead_until_a_full_timeout_after(self) -> None:
        self.outage(TIMEOUT + 40)
        self.live.beat()
        self.assertFalse(self.view.update(force=True))
        self.assertEqual(["a:0", "b:0"], self.view.membership.holders)
        self.assertEqual("b:0", self.db.get_node(self.theirs[0]).reservation)
        # b never comes back: after a full timeout of regular beats of
        # ours, it is dead and its reservation released.
        for _ in range(int(TIMEOUT // 10)):
            self.now += datetime.timedelta(seconds=10)
            self.clock.advance(10.0)
            self.beat("a", 0, age=-(self.now - NOW).total_seconds())
            self.live.beat()
        self.assertTrue(self.view.update())
        self.assertEqual(["a:0"], self.view.membership.holders)
        self.assertIsNone(self.db.get_node(self.theirs[0]).reservation)

    def test_b_beating_again_stays_live(self) -> None:
        self.outage(TIMEOUT + 40)
        self.live.beat()
        self.view.update(force=True)
        self.beat("b", 0, age=-(self.now - NOW).total_seconds())
        for _ in range(int(TIMEOUT // 10) + 1):
            self.now += datetime.timedelta(seconds=10)
            self.clock.advance(10.0)
            self.beat("a", 0, age=-(self.now - NOW).total_seconds())
            self.beat("b", 0, age=-(self.now - NOW).total_seconds())
            self.live.beat()
            self.view.update(force=True)
            self.assertEqual(["a:0", "b:0"], self.view.membership.holders)
        self.assertEqual("b:0", self.db.get_node(self.theirs[0]).reservation)

    def test_a_worker_gone_offline_leaves_at_once(self) -> None:
        self.outage(TIMEOUT + 40)
        self.live.beat()
        self.db.set_offline("b", 0)
        self.assertTrue(self.view.update())
        self.assertEqual(["a:0"], self.view.membership.holders)

    def test_without_liveness_heartbeat_age_alone_decides(self) -> None:
        self.view.liveness = None
        self.outage(TIMEOUT + 40)
        self.assertTrue(self.view.update())
        self.assertEqual(["a:0"], self.view.membership.holders)
        self.assertIsNone(self.db.get_node(self.theirs[0]).reservation)

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.power_sync against a real SQLite file and pool."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import threading
import time
from typing import Any, Callable
from unittest import mock
import uuid as uuid_mod

import fixtures
from oslo_db import exception as db_exc
from oslo_utils import timeutils
import sqlalchemy as sa

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import deadline
from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.db import models as db_models
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor.executor import pool as pool_mod
from conductor import node_cache
from conductor import ownership
from conductor import power_sync
from conductor import states
from conductor import task
from tests import base
from tests import fakes

HOLDER = "h:0"
Answer = Any  # a state, an exception to raise, or a callable(node)


class ScriptedPower(driver_base.PowerInterface):
    """Answers per node name; records calls and their concurrency."""

    def __init__(self) -> None:
        # NOTE: guards every attribute below.
        self.lock = threading.Lock()
        self.answers: dict[str, Answer] = {}
        self.default: Answer = states.POWER_ON
        self.gets: list[str] = []
        self.sets: list[tuple[str, str]] = []
        self.set_answer: Answer = None
        self.threads: set[str] = set()
        self.active = 0
        self.peak = 0

    def validate(self, node: driver_base.DriverNode) -> None:
        """Nothing to validate."""

    def _answer(self, answer: Answer, node: driver_base.DriverNode) -> Any:
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(node)
        return answer

    def get_power_state(self, node: driver_base.DriverNode) -> str:
        with self.lock:
            self.gets.append(str(node.name))
            self.threads.add(threading.current_thread().name)
            self.active += 1
            self.peak = max(self.peak, self.active)
            answer = self.answers.get(str(node.name), self.default)
        try:
            return str(self._answer(answer, node))
        finally:
            with self.lock:
                self.active -= 1

    def set_power_state(self, node: driver_base.DriverNode,
                        target: str) -> None:
        with self.lock:
            self.sets.append((str(node.name), target))
        self._answer(self.set_answer, node)

    def reboot(self, node: driver_base.DriverNode) -> None:
        raise AssertionError("power sync never reboots")


class ScriptedDriver(driver_base.BaseDriver):
    power: ScriptedPower

    def __init__(self) -> None:
        self.power = ScriptedPower()


class SyncTestCase(base.TestCase):
    """One live worker (HOLDER) that owns every node."""

    def setUp(self) -> None:
        super().setUp()
        # NOTE: small rings build 64 times faster; ownership itself is
        # tested in test_ownership.
        self.use_small_rings()
        self.db = self.make_db()
        self.db.register_conductor("h", 0, ["scripted"])
        self.driver = ScriptedDriver()
        self.power = self.driver.power
        self.stop = threading.Event()
        self.pool = self.make_pool(8)
        self.now = timeutils.utcnow()

    def clock(self) -> datetime.datetime:
        """A wall clock a day further at every reading.

        Every node is due at every sweep (due times: TestDueTime).
        """
        self.now += datetime.timedelta(days=1)
        return self.now

    def make_pool(self, size: int) -> pool_mod.WorkerPool:
        return fakes.start_pool(self, size)

    def rings(self, worker_id: int = 0) -> ownership.Rings:
        return ownership.Rings(self.db, "h", worker_id,
                               heartbeat_timeout=60, reset_interval=15)

    def syncer(self, workers: int = 4, timeout: float = 5.0,
               max_retries: int = 2, force: bool = False,
               rings: ownership.Rings | None = None,
               pool: pool_mod.WorkerPool | None = None,
               drivers: dict[str, driver_base.BaseDriver] | None = None,
               stamps_every: float = 0.0,
               clock: Callable[[], float] = time.monotonic
               ) -> power_sync.PowerSync:
        """A syncer; by default it writes every run's stamps at once."""
        return power_sync.PowerSync(
            self.db, drivers or {"scripted": self.driver},
            rings or self.rings(), pool or self.pool,
            power_sync.SyncSettings(workers=workers, timeout=timeout,
                                    max_retries=max_retries, force=force),
            self.stop, clock=clock, watchdog_interval=0.01,
            now_func=self.clock, since=self.now, stamps_every=stamps_every)

    def nodes(self, *names: str, driver: str = "scripted",
              **values: Any) -> list[str]:
        # NOTE: uuids derived from the names: a node's partition, and so
        # its polling phase, is the same at every run of a test.
        created = self.db.import_nodes(
            [{"driver": driver, "name": name, "driver_info": {},
              "uuid": str(uuid_mod.uuid5(uuid_mod.NAMESPACE_URL, name))}
             for name in names])
        uuids = [node.uuid for node in created]
        if values:
            for uuid in uuids:
                self.db.update_node(uuid, values)
        return uuids

    def get(self, name: str) -> db_api.NodeRecord:
        return self.db.get_node(name)

    def statements(self, match: Callable[[str], bool] = lambda text: True
                   ) -> list[str]:
        """Statements issued from now on (those ``match`` keeps)."""
        statements: list[str] = []

        def listener(conn: Any, cursor: Any, statement: str, params: Any,
                     context: Any, executemany: bool) -> None:
            if match(statement.lstrip().upper()):
                statements.append(statement)

        sa.event.listen(self.db.engine, "before_cursor_execute", listener)
        self.addCleanup(sa.event.remove, self.db.engine,
                        "before_cursor_execute", listener)
        return statements

    def hold_a_call(self, uuid: str) -> None:
        """A driver call on ``uuid`` runs in the pool until the test ends."""
        release = threading.Event()
        self.addCleanup(release.set)
        in_call = threading.Event()

        def hung_call() -> None:
            with pool_mod.guard_call(uuid, "get_power_state", 60):
                in_call.set()
                release.wait(base.WAIT)

        self.pool.submit(hung_call)
        self.assertTrue(in_call.wait(base.WAIT))

    def count_node_updates(self) -> list[str]:
        """UPDATE statements on ``nodes`` issued from now on."""
        return self.statements(lambda text: text.startswith("UPDATE NODES"))


class TestSyncRecords(SyncTestCase):

    def test_first_sweep_records_new_nodes_with_the_fake_driver(self) -> None:
        self.db.import_nodes([
            {"driver": "fake", "name": "on",
             "driver_info": {"fake_power_state": states.POWER_ON}},
            {"driver": "fake", "name": "off",
             "driver_info": {"fake_power_state": states.POWER_OFF}},
            {"driver": "fake", "name": "default", "driver_info": {}}])
        syncer = self.syncer(drivers={"fake": fake.FakeDriver()})
        result = syncer.sync()
        self.assertEqual(states.POWER_ON, self.get("on").power_state)
        self.assertEqual(states.POWER_OFF, self.get("off").power_state)
        self.assertEqual(states.POWER_OFF, self.get("default").power_state)
        self.assertIsNotNone(self.get("on").power_state_updated_at)
        self.assertEqual((3, 3, 0), (result.nodes, result.changed,
                                     result.failures))
        self.assertIs(result, syncer.last["sync"])
        self.assertEqual("sync", result.as_dict()["kind"])

    def test_unchanged_nodes_are_not_written(self) -> None:
        self.nodes("a", "b", "c")
        self.power.answers["b"] = states.POWER_OFF
        syncer = self.syncer()
        self.assertEqual(3, syncer.sync().changed)
        before = {n.uuid: n.updated_at for n in self.db.list_nodes()}
        updates = self.count_node_updates()
        result = syncer.sync()
        self.assertEqual(6, len(self.power.gets))
        self.assertEqual((3, 0), (result.nodes, result.changed))
        # NOTE: one statement records when all three were polled; it
        # changes neither version nor updated_at.
        self.assertEqual(1, len(updates))
        self.assertIn("power_checked_at", updates[0])
        self.assertNotIn("version", updates[0])
        self.assertEqual(before,
                         {n.uuid: n.updated_at for n in self.db.list_nodes()})

    def test_only_changed_nodes_are_written(self) -> None:
        self.nodes("a", "b")
        syncer = self.syncer()
        syncer.sync()
        self.power.answers["b"] = states.POWER_OFF
        updates = self.count_node_updates()
        result = syncer.sync()
        self.assertEqual(1, result.changed)
        # NOTE: the poll time of both, then the one change.
        self.assertEqual(2, len(updates))
        self.assertEqual(states.POWER_ON, self.get("a").power_state)
        self.assertEqual(states.POWER_OFF, self.get("b").power_state)

    def test_skips_reserved_maintenance_and_other_driver_nodes(self) -> None:
        self.nodes("free")
        self.nodes("maint", maintenance=True)
        reserved = self.nodes("reserved")[0]
        self.db.reserve_node(reserved, HOLDER)
        self.nodes("other", driver="ipmi")
        result = self.syncer().sync()
        self.assertEqual(["free"], self.power.gets)
        self.assertEqual(1, result.nodes)
        self.assertIsNone(self.get("maint").power_state)
        self.assertIsNone(self.get("reserved").power_state)

    def test_polls_only_owned_nodes(self) -> None:
        self.db.register_conductor("h", 1, ["scripted"])
        uuids = self.nodes(*["n%02d" % i for i in range(30)])
        rings = self.rings(0)
        rings.refresh()
        mine = rings.owned(uuids)
        self.assertGreater(len(mine), 3)
        self.assertLess(len(mine), 27)
        result = self.syncer(rings=rings).sync()
        self.assertEqual(len(mine), result.nodes)
        self.assertEqual(sorted(str(self.db.get_node(u).name) for u in mine),
                         sorted(self.power.gets))

    def test_releases_reservations_of_dead_workers(self) -> None:
        uuid = self.nodes("a")[0]
        self.db.reserve_node(uuid, "h:7")   # never heartbeat: dead
        self.syncer().sync()
        node = self.get("a")
        self.assertIsNone(node.reservation)
        self.assertEqual(states.POWER_ON, node.power_state)


class TestSyncFailures(SyncTestCase):

    def test_failure_counts_and_records_the_error(self) -> None:
        self.nodes("a", "b")
        self.power.answers["a"] = exceptions.PowerStateFailure(
            err="BMC unreachable")
        self.power.answers["b"] = OSError("connection refused")
        result = self.syncer().sync()
        self.assertEqual((2, 2, 0), (result.failures, result.changed,
                                     result.to_maintenance))
        a, b = self.get("a"), self.get("b")
        self.assertEqual(1, a.power_sync_failures)
        self.assertEqual("BMC unreachable", a.last_error)
        self.assertEqual("OSError: connection refused", b.last_error)
        self.assertIsNone(a.power_state)
        self.assertFalse(a.maintenance)

    def test_warnings_name_the_node_by_name_and_uuid(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        [uuid] = self.nodes("a")
        self.power.answers["a"] = exceptions.PowerStateFailure(
            err="BMC unreachable")
        self.syncer().sync()
        self.assertIn("Node a (%s): power state read failed (1 of 2 "
                      "retries): BMC unreachable" % uuid, logger.output)

    def test_invalid_state_from_the_driver_is_a_failure(self) -> None:
        self.nodes("a")
        self.power.answers["a"] = "on"
        result = self.syncer().sync()
        self.assertEqual(1, result.failures)
        node = self.get("a")
        self.assertIsNone(node.power_state)
        self.assertEqual(1, node.power_sync_failures)
        self.assertEqual("driver scripted returned an invalid power state "
                         "'on'", node.last_error)

    def test_error_state_from_the_bmc_is_a_failure(self) -> None:
        self.nodes("a")
        self.db.update_node("a", {"power_state": states.POWER_ON})
        self.power.answers["a"] = states.ERROR
        result = self.syncer().sync()
        self.assertEqual(1, result.failures)
        node = self.get("a")
        self.assertEqual(states.POWER_ON, node.power_state)
        self.assertEqual(1, node.power_sync_failures)
        self.assertEqual("the BMC reports power state 'error'",
                         node.last_error)

    def test_action_finished_mid_sweep_is_not_overwritten(self) -> None:
        [uuid] = self.nodes("a")
        self.db.update_node(uuid, {"power_state": states.POWER_ON})

        def off_before_an_on_action_lands(node: Any) -> str:
            # The sweep reads "off" just before a requested "power on"
            # reaches the hardware; the action then records "power on"
            # again, so the stored state looks unchanged to the sweep.
            self.db.update_node(uuid, {"power_state": states.POWER_ON,
                                       "last_error": None})
            return states.POWER_OFF

        self.power.answers["a"] = off_before_an_on_action_lands
        result = self.syncer().sync()
        self.assertEqual(0, result.changed)
        self.assertEqual(states.POWER_ON, self.get("a").power_state)
        # The next sweep, with nothing in between, records what it reads.
        self.power.answers["a"] = states.POWER_OFF
        self.assertEqual(1, self.syncer().sync().changed)
        self.assertEqual(states.POWER_OFF, self.get("a").power_state)

    def test_maintenance_after_max_retries(self) -> None:
        self.nodes("a", "b")
        self.power.answers["a"] = exceptions.PowerStateFailure(
            err="BMC unreachable")
        syncer = self.syncer(max_retries=2)
        for attempt in (1, 2):
            self.assertEqual(0, syncer.sync().to_maintenance)
            node = self.get("a")
            self.assertEqual(attempt, node.power_sync_failures)
            self.assertFalse(node.maintenance)
        self.assertEqual(1, syncer.sync().to_maintenance)
        node = self.get("a")
        self.assertTrue(node.maintenance)
        self.assertEqual(power_sync.POWER_FAILURE, node.fault)
        self.assertEqual(3, node.power_sync_failures)
        self.assertEqual("Power state sync failed 3 time(s) in a row: BMC "
                         "unreachable", node.maintenance_reason)
        # In maintenance, sync leaves it to recovery.
        self.assertEqual(1, syncer.sync().nodes)
        self.assertEqual(3, self.power.gets.count("a"))
        self.assertFalse(self.get("b").maintenance)

    def test_zero_retries_means_maintenance_at_first_failure(self) -> None:
        self.nodes("a")
        self.power.answers["a"] = OSError("down")
        self.assertEqual(1, self.syncer(max_retries=0).sync().to_maintenance)
        self.assertTrue(self.get("a").maintenance)

    def test_success_after_failures_resets_the_counter(self) -> None:
        self.nodes("a")
        self.power.answers["a"] = OSError("down")
        syncer = self.syncer(max_retries=5)
        syncer.sync()
        syncer.sync()
        self.assertEqual(2, self.get("a").power_sync_failures)
        self.power.answers["a"] = states.POWER_OFF
        result = syncer.sync()
        self.assertEqual((0, 1), (result.failures, result.changed))
        node = self.get("a")
        self.assertEqual((0, None, states.POWER_OFF),
                         (node.power_sync_failures, node.last_error,
                          node.power_state))

    def test_healthy_nodes_are_polled_before_failing_ones(self) -> None:
        self.nodes("n0", "n1", "n2", "n3", "n4")
        self.db.update_node("n3", {"power_sync_failures": 2})
        self.db.update_node("n1", {"power_sync_failures": 1})
        self.syncer(workers=1, max_retries=5).sync()
        # One lane: it takes every healthy node before a suspect one.
        self.assertEqual(["n0", "n2", "n4"], sorted(self.power.gets[:3]))
        self.assertEqual(["n1", "n3"], sorted(self.power.gets[3:]))


class TestStampsWait(SyncTestCase):
    """Polls' stamps wait in memory to be written together.

    Never past a hand-over, a change, a drain or a stop.
    """

    def setUp(self) -> None:
        super().setUp()
        # Every node due at every run (a day apart), its state known, so
        # that a run writes no change of its own.
        self.uuids = self.nodes("a", "b", "c", power_state=states.POWER_ON)
        for name in ("a", "b", "c"):
            self.power.answers[name] = states.POWER_ON
        # Runs 3 s apart on the monotonic clock, stamps written once 5 s
        # old: the third run writes the stamps of all three.
        self.mono = 0.0
        self.waiting = self.syncer(stamps_every=5.0,
                                   clock=lambda: self.mono)

    def clock(self) -> datetime.datetime:
        """The wall clock a day further, the monotonic one 3 s."""
        self.mono += 3.0
        return super().clock()

    def checked(self) -> set[datetime.datetime | None]:
        return {self.get(name).power_checked_at for name in ("a", "b", "c")}

    def test_several_runs_in_one_statement(self) -> None:
        updates = self.count_node_updates()

        def stamps() -> list[str]:
            return [u for u in updates if "power_checked_at" in u]
        self.waiting.sync()
        self.waiting.sync()
        self.assertEqual(([], {None}), (stamps(), self.checked()))
        self.waiting.sync()
        self.assertEqual(9, len(self.power.gets))
        self.assertEqual(1, len(stamps()))
        self.assertEqual({self.now}, self.checked())

    def test_a_wall_clock_stepped_back_does_not_hold_them(self) -> None:
        self.waiting.sync()
        polled_at = self.now
        for _ in range(2):
            # A day back at every run (the clock adds one): nothing due.
            self.now -= datetime.timedelta(days=2)
            self.waiting.sync()
        self.assertEqual(3, len(self.power.gets))
        self.assertEqual({polled_at}, self.checked())

    def test_each_node_keeps_its_own_time(self) -> None:
        self.waiting.sync()
        first = self.now
        self.power.answers["a"] = OSError("down")
        # A failure is a change: written at once, with what waited; "a"
        # was polled in both runs, "b" and "c" too: the later time.
        self.waiting.sync()
        self.assertEqual({self.now}, self.checked())
        self.assertNotEqual(first, self.now)
        self.assertEqual(1, self.get("a").power_sync_failures)

    def test_written_before_the_partitions_change(self) -> None:
        self.waiting.sync()
        polled_at = self.now
        self.useFixture(fixtures.MockPatchObject(
            self.waiting._rings, "partitions", return_value=()))
        self.waiting.sync()
        self.assertEqual(3, len(self.power.gets))
        self.assertEqual({polled_at}, self.checked())

    def test_written_at_once_while_draining(self) -> None:
        self.waiting.sync()
        self.assertEqual({None}, self.checked())
        rings = self.waiting._rings
        self.useFixture(fixtures.MockPatchObject(
            rings, "maybe_update", return_value=False))
        rings.draining_since = 1.0
        self.waiting.sync()
        self.assertEqual({self.now}, self.checked())

    def test_written_by_a_run_that_stops_and_by_flush(self) -> None:
        self.waiting.sync()
        polled_at = self.now
        self.stop.set()
        self.waiting.sync()
        self.assertEqual({polled_at}, self.checked())
        self.stop.clear()
        self.waiting.sync()
        self.assertEqual({polled_at}, self.checked())
        self.waiting.flush()
        self.assertEqual({self.now}, self.checked())

    def test_a_failed_write_keeps_earlier_runs(self) -> None:
        self.waiting.sync()
        polled_at = self.now
        self.waiting.sync()
        real = self.db.apply_sync_results
        self.useFixture(fixtures.MockPatchObject(
            self.db, "apply_sync_results",
            side_effect=db_exc.DBConnectionError("lost")))
        self.assertRaises(db_exc.DBConnectionError, self.waiting.sync)
        self.db.apply_sync_results = real  # type: ignore[method-assign]
        # The first two runs' stamps waited on; the failed run's nodes are
        # polled again (and were not stamped).
        self.waiting.flush()
        self.assertEqual({polled_at + datetime.timedelta(days=1)},
                         self.checked())


class TestRecover(SyncTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.nodes("broken", maintenance=True, fault=power_sync.POWER_FAILURE,
                   maintenance_reason="Power state sync failed 3 time(s)",
                   power_sync_failures=3, last_error="BMC unreachable",
                   power_state=states.POWER_ON)
        self.nodes("operator", maintenance=True,
                   maintenance_reason="replacing a disk")

    def test_leaves_the_fault_while_the_bmc_fails(self) -> None:
        self.power.answers["broken"] = OSError("still down")
        result = self.syncer().recover()
        self.assertEqual((1, 1, 0), (result.nodes, result.failures,
                                     result.recovered))
        node = self.get("broken")
        self.assertTrue(node.maintenance)
        self.assertEqual(power_sync.POWER_FAILURE, node.fault)
        self.assertEqual(3, node.power_sync_failures)

    def test_clears_the_fault_once_the_bmc_answers(self) -> None:
        self.power.answers["broken"] = states.POWER_OFF
        syncer = self.syncer()
        result = syncer.recover()
        self.assertEqual((1, 0, 1), (result.nodes, result.failures,
                                     result.recovered))
        self.assertIs(result, syncer.last["recovery"])
        node = self.get("broken")
        self.assertEqual(
            (False, None, None, 0, None, states.POWER_OFF),
            (node.maintenance, node.maintenance_reason, node.fault,
             node.power_sync_failures, node.last_error, node.power_state))
        # Operator maintenance is not power sync's to clear.
        self.assertEqual(["broken"], self.power.gets)
        self.assertTrue(self.get("operator").maintenance)
        # Back in the sync sweep.
        self.assertEqual(1, syncer.sync().nodes)


class TestForce(SyncTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.nodes("drifted", power_state=states.POWER_ON)
        self.power.answers["drifted"] = states.POWER_OFF

    def test_force_restores_the_recorded_state_under_lock(self) -> None:
        seen: list[str | None] = []
        self.power.set_answer = lambda node: seen.append(
            self.db.get_node(node.uuid).reservation)
        result = self.syncer(force=True).sync()
        self.assertEqual([("drifted", states.POWER_ON)], self.power.sets)
        self.assertEqual([HOLDER], seen)
        self.assertEqual((1, 0), (result.forced, result.changed))
        node = self.get("drifted")
        self.assertEqual(states.POWER_ON, node.power_state)
        self.assertIsNone(node.last_error)
        self.assertIsNone(node.reservation)

    def test_failed_restore_records_the_error_and_hardware(self) -> None:
        self.power.set_answer = exceptions.PowerStateFailure(err="BMC busy")
        self.syncer(force=True).sync()
        node = self.get("drifted")
        self.assertEqual("Restoring power on failed: BMC busy",
                         node.last_error)
        self.assertEqual(states.POWER_OFF, node.power_state)
        self.assertIsNone(node.reservation)

    def test_restore_runs_under_the_deadline(self) -> None:
        left: list[float | None] = []
        self.power.set_answer = lambda node: left.append(
            deadline.remaining())
        self.syncer(force=True, timeout=3.0).sync()
        self.assertEqual(1, len(left))
        assert left[0] is not None
        self.assertLessEqual(left[0], 3.0)
        self.assertGreater(left[0], 2.0)

    def test_no_force_records_the_hardware_state(self) -> None:
        result = self.syncer(force=False).sync()
        self.assertEqual([], self.power.sets)
        self.assertEqual((0, 1), (result.forced, result.changed))
        self.assertEqual(states.POWER_OFF, self.get("drifted").power_state)

    def test_force_leaves_a_locked_node_alone(self) -> None:
        def reserve_meanwhile(node: driver_base.DriverNode) -> str:
            self.db.reserve_node(node.uuid, "h:1")
            return states.POWER_OFF

        self.power.answers["drifted"] = reserve_meanwhile
        result = self.syncer(force=True).sync()
        self.assertEqual((0, 0), (result.forced, result.changed))
        self.assertEqual([], self.power.sets)
        self.assertEqual(states.POWER_ON, self.get("drifted").power_state)

    def test_force_does_not_undo_a_change_made_meanwhile(self) -> None:
        def power_off_meanwhile(node: driver_base.DriverNode) -> str:
            # A power-off action completes between the read and the
            # restore: the record now matches the hardware.
            with task.acquire(self.db, node.uuid, "h:0", {}, 5.0) as t:
                t.record({"power_state": states.POWER_OFF})
            return states.POWER_OFF

        self.power.answers["drifted"] = power_off_meanwhile
        self.syncer(force=True).sync()
        self.assertEqual([], self.power.sets)
        self.assertEqual(states.POWER_OFF, self.get("drifted").power_state)

    def test_no_force_for_a_node_never_recorded(self) -> None:
        self.nodes("new")
        self.power.answers["new"] = states.POWER_OFF
        self.syncer(force=True).sync()
        self.assertNotIn("new", [name for name, _ in self.power.sets])
        self.assertEqual(states.POWER_OFF, self.get("new").power_state)


class TestLanes(SyncTestCase):

    def test_at_most_p_calls_at_once_and_exactly_p(self) -> None:
        names = ["n%02d" % i for i in range(16)]
        self.nodes(*names)
        barrier = threading.Barrier(4, timeout=base.WAIT)

        def slow(node: driver_base.DriverNode) -> str:
            barrier.wait()      # passes only with 4 calls in flight
            return states.POWER_ON

        self.power.default = slow
        result = self.syncer(workers=4).sync()      # pool has 8 threads
        self.assertEqual(0, result.failures)
        self.assertEqual(16, result.changed)
        self.assertEqual(4, self.power.peak)
        self.assertEqual(4, result.peak_calls)
        self.assertEqual(4, result.lanes)
        self.assertEqual(sorted(names), sorted(self.power.gets))

    def test_lanes_leave_one_free_thread(self) -> None:
        self.nodes(*["n%02d" % i for i in range(9)])
        barrier = threading.Barrier(3, timeout=base.WAIT)
        pool = self.make_pool(4)
        free_during_sweep: list[int] = []

        def slow(node: driver_base.DriverNode) -> str:
            barrier.wait()
            free_during_sweep.append(pool.free)
            return states.POWER_ON

        self.power.default = slow
        result = self.syncer(workers=8, pool=pool).sync()
        self.assertEqual(0, result.failures)
        self.assertEqual((3, 3, 3), (result.lanes, result.peak_calls,
                                     self.power.peak))
        # One thread of four stayed free for the other periodic tasks.
        self.assertEqual(1, min(free_during_sweep))

    def test_a_full_pool_polls_in_the_callers_thread(self) -> None:
        self.nodes("a", "b")
        pool = self.make_pool(1)
        release = threading.Event()
        self.addCleanup(release.set)
        pool.submit(release.wait, base.WAIT)
        result = self.syncer(pool=pool).sync()
        self.assertEqual(1, result.lanes)
        self.assertEqual(2, result.changed)
        self.assertEqual({threading.current_thread().name},
                         self.power.threads)

    def test_a_hung_call_is_a_failure_and_the_rest_is_polled(self) -> None:
        self.nodes("hung", "n0", "n1", "n2", "n3")
        # The hung node goes first, so the only lane is stuck on it.
        self.db.update_node("hung", {"power_sync_failures": 1})
        release = threading.Event()
        self.addCleanup(release.set)      # runs before the pool shutdown
        entered = threading.Event()

        def hang(node: driver_base.DriverNode) -> str:
            entered.set()
            release.wait(base.WAIT)      # ignores the deadline
            return states.POWER_ON

        self.power.answers["hung"] = hang
        timeout = 0.2
        started = time.monotonic()
        result = self.syncer(workers=1, timeout=timeout,
                             max_retries=5).sync()
        elapsed = time.monotonic() - started
        self.assertTrue(entered.is_set())
        self.assertGreaterEqual(elapsed, timeout + power_sync.WATCHDOG_GRACE)
        self.assertLess(elapsed, timeout + power_sync.WATCHDOG_GRACE + 1.0)
        # Four states and one failure written; a second lane replaced the
        # stuck one.
        self.assertEqual((5, 1, 5, 2),
                         (result.nodes, result.failures, result.changed,
                          result.lanes))
        hung = self.get("hung")
        self.assertEqual(2, hung.power_sync_failures)
        self.assertEqual("Power state read did not return within 0.2 "
                         "seconds", hung.last_error)
        for name in ("n0", "n1", "n2", "n3"):
            self.assertEqual(states.POWER_ON, self.get(name).power_state)
        # The late answer of the abandoned call is ignored.
        release.set()
        self.assertTrue(self.pool.shutdown(wait=True, timeout=base.WAIT))
        self.assertIsNone(self.get("hung").power_state)

    def test_stop_ends_the_sweep_early(self) -> None:
        self.nodes(*["n%d" % i for i in range(6)])
        calls = []

        def stop_on_third(node: driver_base.DriverNode) -> str:
            calls.append(node.name)
            if len(calls) == 3:
                self.stop.set()
            return states.POWER_ON

        self.power.default = stop_on_third
        result = self.syncer(workers=1).sync()
        # The sweep counts what it polled, not what it planned.
        self.assertEqual((3, 6), (result.nodes, result.planned))
        self.assertEqual(3, len(self.power.gets))
        self.assertEqual(3, result.changed)
        self.assertEqual(3, sum(1 for node in self.db.list_nodes()
                                if node.power_state is not None))

    def test_calls_run_under_the_deadline(self) -> None:
        self.nodes("a")
        left: list[float | None] = []

        def read(node: driver_base.DriverNode) -> str:
            left.append(deadline.remaining())
            return states.POWER_ON

        self.power.default = read
        self.syncer(timeout=2.0).sync()
        assert left[0] is not None
        self.assertLessEqual(left[0], 2.0)
        self.assertGreater(left[0], 1.0)


class TestContainment(SyncTestCase):

    def test_a_node_with_a_call_in_flight_is_skipped(self) -> None:
        busy, _, _ = self.nodes("busy", "n1", "n2")
        self.hold_a_call(busy)
        with fixtures.FakeLogger(name="conductor.power_sync.runs",
                                 level=logging.DEBUG) as logger:
            result = self.syncer().sync()
        self.assertEqual((2, 3, 1), (result.nodes, result.planned,
                                     result.skipped))
        self.assertEqual(["n1", "n2"], sorted(self.power.gets))
        self.assertIn("Power sync sweep: 2 node(s) in", logger.output)
        self.assertIn("; 1 skipped (a call on them still running)",
                      logger.output)
        self.assertIsNone(self.get("busy").power_state)

    def test_a_node_whose_last_call_was_abandoned_is_suspect(self) -> None:
        self.nodes(*["n%d" % i for i in range(7)])
        odd = self.nodes("odd")[0]
        pool = pool_mod.WorkerPool(8, "s", 4, grace=0.0,
                                   reap_interval=3600)
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
        pool._runtime().suspect.add(odd)
        order: list[str] = []
        self.power.default = lambda node: (order.append(node.name),
                                           states.POWER_ON)[1]
        self.syncer(workers=1, pool=pool).sync()
        # One lane: every healthy node before the suspect one.
        self.assertEqual("odd", order[-1])
        self.assertEqual(8, len(order))


class TestRunLog(SyncTestCase):
    """A sync run's line is DEBUG; INFO sums the runs up per period."""

    def setUp(self) -> None:
        super().setUp()
        #: The syncer's monotonic clock: moved on by run_every().
        self.t = 1000.0

    def timed_syncer(self, **kwargs: Any) -> power_sync.PowerSync:
        return self.syncer(clock=lambda: self.t, **kwargs)

    def run_every(self, syncer: power_sync.PowerSync, runs: int,
                  step: float = 1.0) -> None:
        for _ in range(runs):
            syncer.sync()
            self.t += step

    def test_a_run_logs_at_debug_on_its_own_logger(self) -> None:
        self.nodes("n1", "n2")
        syncer = self.syncer()
        with fixtures.FakeLogger(level=logging.INFO) as info:
            syncer.sync()
        self.assertNotIn("Power sync sweep", info.output)
        self.nodes("n3")
        with fixtures.FakeLogger(name="conductor.power_sync.runs",
                                 level=logging.DEBUG) as runs:
            syncer.sync()
        self.assertIn("Power sync sweep: 3 node(s) in", runs.output)

    def test_a_recovery_run_stays_info(self) -> None:
        self.nodes("bad", maintenance=True, fault=power_sync.POWER_FAILURE)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            self.syncer().recover()
        self.assertIn("Power recovery sweep: 1 node(s) in", info.output)

    def test_a_run_cut_short_by_a_stop_stays_info(self) -> None:
        self.nodes("n1", "n2", "n3")
        self.power.default = lambda node: (self.stop.set(),
                                           states.POWER_ON)[1]
        with fixtures.FakeLogger(level=logging.INFO) as info:
            result = self.syncer(workers=1).sync()
        self.assertEqual((1, 3), (result.nodes, result.planned))
        self.assertIn("Power sync sweep: 1 node(s) in", info.output)
        self.assertIn("; 2 of 3 planned not polled (stopping)", info.output)

    def test_runs_are_summed_up_once_a_period(self) -> None:
        self.nodes("n1", "n2")
        self.power.answers["n2"] = exceptions.ConductorException("down")
        syncer = self.timed_syncer(max_retries=1000)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            # The period starts with the first run, at 1000: the run at
            # 1059 is still in it, the one at 1060 ends it.
            self.run_every(syncer, 60)
            self.assertNotIn("Power sync, last", info.output)
            self.run_every(syncer, 1)
        [line] = [line for line in info.output.splitlines()
                  if "Power sync, last" in line]
        # A change is a row written: n1's first state, and n2's count
        # of failures at every run.
        self.assertIn("Power sync, last 60s: 122 node(s) polled in 61 "
                      "run(s), 61 failure(s), 62 change(s), 0 to "
                      "maintenance; longest run 0.000s", line)
        # The next period starts where the last one ended.
        with fixtures.FakeLogger(level=logging.INFO) as info:
            self.run_every(syncer, 60)
        self.assertIn("Power sync, last 60s: 120 node(s) polled in 60 "
                      "run(s), 60 failure(s), 60 change(s)", info.output)

    def test_the_period_is_at_least_a_minute(self) -> None:
        # interval 1 s: a line a run would flood the log.
        self.nodes("n1")
        syncer = power_sync.PowerSync(
            self.db, {"scripted": self.driver}, self.rings(), self.pool,
            power_sync.SyncSettings(workers=4, timeout=5.0, max_retries=2,
                                    force=False, interval=1.0),
            self.stop, clock=lambda: self.t, watchdog_interval=0.01,
            now_func=self.clock, since=self.now, stamps_every=0.0)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            self.run_every(syncer, 60)
        self.assertNotIn("Power sync, last", info.output)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            self.run_every(syncer, 1)
        self.assertIn("Power sync, last 60s: 61 node(s) polled in 61 "
                      "run(s)", info.output)

    def test_a_worker_that_polls_nothing_still_logs_its_summary(self) -> None:
        syncer = self.timed_syncer()
        with fixtures.FakeLogger(level=logging.INFO) as info:
            self.run_every(syncer, 61)
        self.assertIn("Power sync, last 60s: 0 node(s) polled in 61 "
                      "run(s), 0 failure(s), 0 change(s), 0 to "
                      "maintenance; longest run 0.000s, most overdue 0.0s",
                      info.output)

    def test_a_stopping_worker_logs_its_last_period(self) -> None:
        self.nodes("n1")
        syncer = self.timed_syncer()
        self.run_every(syncer, 5)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            syncer.log_summary()
            syncer.log_summary()
        self.assertEqual(1, info.output.count("Power sync, last"))
        self.assertIn("Power sync, last 5s: 5 node(s) polled in 5 run(s)",
                      info.output)

    def test_a_run_ending_after_the_stop_logs_its_own_period(self) -> None:
        # The stop logged the last period; a run it did not wait for
        # must not be left in a period nobody logs.
        self.nodes("n1")
        syncer = self.timed_syncer()
        self.run_every(syncer, 3)
        with fixtures.FakeLogger(level=logging.INFO) as info:
            syncer.log_summary()
            self.stop.set()
            self.run_every(syncer, 1)
        self.assertIn("Power sync, last 3s: 3 node(s) polled in 3 run(s)",
                      info.output)
        self.assertIn("Power sync, last 0s: 0 node(s) polled in 1 run(s)",
                      info.output)

    def test_nodes_skipped_at_every_run_are_counted_once(self) -> None:
        busy, _ = self.nodes("busy", "n1")
        self.hold_a_call(busy)
        syncer = self.timed_syncer()
        with fixtures.FakeLogger(name="conductor.power_sync",
                                 level=logging.INFO) as info:
            self.run_every(syncer, 61)
        # One line, not one a run, while the call lasts.
        self.assertEqual(1, len(info.output.splitlines()), info.output)
        self.assertIn("Power sync, last 60s: 61 node(s) polled in 61 "
                      "run(s)", info.output)
        self.assertIn("; up to 1 node(s) a run skipped (a call on them "
                      "still running)", info.output)


class TestDueTime(SyncTestCase):
    """Each node is polled once per interval, at its own phase."""

    INTERVAL = 60.0

    def setUp(self) -> None:
        super().setUp()
        self.t = datetime.datetime(2030, 1, 1, 12, 0, 0)

    def timed(self, since: datetime.datetime | None = None,
              rings: ownership.Rings | None = None,
              recovery: float = 300.0, max_retries: int = 10,
              workers: int = 4, stamps_every: float = 0.0
              ) -> power_sync.PowerSync:
        return power_sync.PowerSync(
            self.db, {"scripted": self.driver}, rings or self.rings(),
            self.pool,
            power_sync.SyncSettings(workers=workers, timeout=5.0,
                                    max_retries=max_retries, force=False,
                                    interval=self.INTERVAL,
                                    recovery_interval=recovery),
            self.stop, watchdog_interval=0.01, now_func=lambda: self.t,
            since=since, stamps_every=stamps_every)

    def run_for(self, syncer: power_sync.PowerSync, seconds: float,
                step: float = 1.0) -> list[int]:
        """Sync every ``step`` seconds of the fake clock; polls per run."""
        counts = []
        for _ in range(int(seconds / step)):
            self.t += datetime.timedelta(seconds=step)
            before = len(self.power.gets)
            syncer.sync()
            counts.append(len(self.power.gets) - before)
        return counts

    def test_a_node_due_just_before_a_gain_keeps_its_phase(self) -> None:
        held = {7}
        rings = mock.create_autospec(ownership.Rings, instance=True)
        rings.handed_over.side_effect = lambda p: p in held
        rings.was_held.side_effect = lambda p: p == 7

        def after(interval: float, overdue: float, p: int = 7) -> float:
            self.INTERVAL = interval
            return self.timed(rings=rings).after_gain(p, 1000.0 - overdue,
                                                      1000.0)

        # Not handed over (p=8: its owner died, or stopped after writing
        # its stamps): at once.
        self.assertEqual(998.0, after(60.0, 2.0, p=8))
        self.assertEqual(995.0, after(60.0, 5.0, p=8))
        self.assertEqual(990.0, after(4.0, 10.0, p=8))
        # Held back from a live owner: missed during the hold, by less
        # than the tolerance (15 s of 60, 2 s of 4) at the settle read
        # (3 s after the gain, when its previous owner's last stamps are
        # in): then, still on its phase; further back: its next slot.
        self.assertEqual(1003.0, after(60.0, 2.0))
        self.assertEqual(1003.0, after(60.0, 12.0))
        self.assertEqual(1045.0, after(60.0, 15.0))
        self.assertEqual(1035.0, after(60.0, 25.0))
        self.assertEqual(1003.0, after(4.0, 1.0))
        self.assertEqual(1000.0, after(4.0, 4.0))
        # Handed over by a draining owner, which still polls it (p=9,
        # not held back): its next slot after the settle read.
        held.add(9)
        self.assertEqual(1058.0, after(60.0, 2.0, p=9))
        self.assertEqual(1004.0, after(4.0, 4.0, p=9))

    def test_tick_and_tolerance(self) -> None:
        self.assertEqual(1.0, power_sync.tick(60))
        self.assertEqual(2.0, power_sync.tick(120))
        self.assertEqual(10.0, power_sync.tick(3600))
        self.assertEqual(0.0, power_sync.tick(0))
        self.assertEqual(15.0, power_sync.tolerance(60))
        self.assertEqual(1.0, power_sync.tolerance(1))
        self.assertEqual(1.0, power_sync.tolerance(2))

    def test_nodes_polled_together_off_phase_return_spread(self) -> None:
        # 512 nodes polled at once at t=0 (taken over late, say), their
        # phases all over the interval: none is due again before 45 s
        # (interval - tolerance) nor after 90 s (1.5 intervals), and
        # those whose next slot is past 90 s are spread over that span
        # rather than all due at 90 s.
        interval, cap = 60.0, 300.0
        checked = datetime.datetime(1970, 1, 1)
        rows = [db_api.SyncRow("u%d" % p, None, "fake", {}, None, 0, 1, p,
                               checked)
                for p in range(0, db_models.PARTITIONS, 2)]
        due = [power_sync.due_at(row, interval, cap, 0.0) for row in rows]
        self.assertGreaterEqual(min(due), 45.0)
        self.assertLessEqual(max(due), 90.0)
        # (Twice the mean at most: from 60 to 75 s, the nodes whose
        # phase is in the first 15 s and those sent back half an
        # interval before their slot; not a quarter of them at 90 s.)
        per_second = collections.Counter(int(d) for d in due)
        self.assertLessEqual(max(per_second.values()),
                             2.5 * len(rows) / interval)
        # Back on their phase at the poll after, each gap within the
        # span.
        for row in rows:
            times = []
            for _ in range(2):
                when = power_sync.due_at(row, interval, cap, 0.0)
                times.append(when)
                row = dataclasses.replace(
                    row, power_checked_at=checked
                    + datetime.timedelta(seconds=when))
            gaps = [b - a for a, b in zip([0.0] + times, times)]
            self.assertTrue(all(45.0 <= g <= 90.0 for g in gaps), gaps)
            off = (times[-1] - power_sync.phase_of(row.partition,
                                                   interval)) % interval
            self.assertLess(min(off, interval - off), 1e-6, times)

    def test_an_interval_of_one_tick_polls_every_node_every_run(
            self) -> None:
        self.INTERVAL = 1.0
        self.nodes(*["n%02d" % i for i in range(30)])
        syncer = self.timed()
        counts = self.run_for(syncer, 5)
        self.assertEqual([30] * 4, counts[1:])

    def test_backoff_doubles_up_to_the_cap(self) -> None:
        self.assertEqual([60, 60, 120, 240, 300, 300],
                         [power_sync.backoff(60, f, 300)
                          for f in range(6)])
        self.assertEqual(480, power_sync.backoff(60, 4, 0))

    def test_a_fleet_enrolled_at_once_is_spread_over_the_interval(
            self) -> None:
        names = ["n%03d" % i for i in range(600)]
        self.nodes(*names)
        syncer = self.timed()
        counts = self.run_for(syncer, self.INTERVAL)
        # Every node exactly once in the first interval, none at start.
        self.assertEqual(sorted(names), sorted(self.power.gets))
        self.assertLessEqual(max(counts), 4 * 600 / self.INTERVAL)
        self.assertLessEqual(counts[0], 4 * 600 / self.INTERVAL)
        # And exactly once more in the next one.
        self.run_for(syncer, self.INTERVAL)
        self.assertEqual(sorted(names * 2), sorted(self.power.gets))

    def test_a_new_owner_honours_the_last_poll(self) -> None:
        self.nodes(*["n%02d" % i for i in range(40)])
        first = self.timed()
        self.run_for(first, self.INTERVAL / 2)
        polled = set(self.power.gets)
        self.assertTrue(0 < len(polled) < 40)
        # Another worker takes over (a restart, a takeover) mid-interval.
        second = self.timed()
        self.run_for(second, self.INTERVAL / 2 - 1)
        # Within the interval: none twice, and nearly all polled (those
        # whose phase falls in the last second come next).
        self.assertEqual(len(set(self.power.gets)), len(self.power.gets))
        self.assertGreater(len(self.power.gets), 35)
        self.assertEqual(polled, polled & set(self.power.gets))
        self.run_for(second, self.INTERVAL)
        # The next interval: each node once more (a node whose phase is in
        # the last second of the interval waits for the next run).
        counts = collections.Counter(self.power.gets)
        self.assertEqual(set(counts.values()) - {1, 2}, set())
        self.assertGreaterEqual(len(self.power.gets), 78)

    def test_overdue_nodes_are_polled_at_once_most_overdue_first(
            self) -> None:
        uuids = self.nodes("late1", "late2", "late3", "fresh")
        ages = {"late1": 200, "late2": 900, "late3": 400, "fresh": 10}
        with self.db.engine.begin() as conn:
            for uuid, name in zip(uuids, ["late1", "late2", "late3",
                                          "fresh"]):
                conn.execute(db_api.models.nodes.update()
                             .where(db_api.models.nodes.c.uuid == uuid)
                             .values(power_checked_at=self.t
                                     - datetime.timedelta(
                                         seconds=ages[name])))
        # One lane: the calls are made in the order planned.
        syncer = self.timed(since=self.t, workers=1)
        self.run_for(syncer, 1)
        self.assertEqual(["late2", "late3", "late1"], self.power.gets)

    def test_overdue_is_of_the_nodes_polled(self) -> None:
        uuids = self.nodes("late2", "late3")
        for uuid, age in zip(uuids, (900, 400)):
            with self.db.engine.begin() as conn:
                conn.execute(db_api.models.nodes.update()
                             .where(db_api.models.nodes.c.uuid == uuid)
                             .values(power_checked_at=self.t
                                     - datetime.timedelta(seconds=age)))
        # late2's call still runs: it is skipped, and its lateness is not
        # this run's.
        self.hold_a_call(uuids[0])
        self.t += datetime.timedelta(seconds=1)
        result = self.timed(since=self.t).sync()
        self.assertEqual((1, 1), (result.nodes, result.skipped))
        self.assertGreater(result.overdue, 300.0)
        self.assertLess(result.overdue, 400.0)

    def test_a_failing_node_backs_off(self) -> None:
        self.nodes("bad")
        self.power.answers["bad"] = OSError("BMC unreachable")
        syncer = self.timed(recovery=240.0)
        polls = []
        for second in range(int(16 * self.INTERVAL)):
            before = len(self.power.gets)
            self.run_for(syncer, 1)
            if len(self.power.gets) > before:
                polls.append(second)
        gaps = [b - a for a, b in zip(polls, polls[1:])]
        # 1 failure: the interval; then doubled, capped at 240 s.
        self.assertEqual([60, 120, 240, 240], gaps[:4])
        self.assertEqual(len(polls), self.get("bad").power_sync_failures)


class TestRowsInMemory(TestDueTime):
    """A worker keeps its nodes' rows and reads only what changed."""

    def count_selects(self) -> list[str]:
        """SELECT statements on nodes issued from now on."""
        return self.statements(lambda text: text.startswith("SELECT")
                               and "FROM NODES" in text)

    def test_a_run_reads_only_the_rows_changed(self) -> None:
        # NOTE: the runs here come much faster than the feed's overlap;
        # without it, the feed re-reads no write of an earlier run.
        self.useFixture(fixtures.MonkeyPatch(
            "conductor.node_cache.FEED_OVERLAP", 0.0))
        # As the hardware answers: a poll writes only its stamp.
        self.nodes(*["n%02d" % i for i in range(40)],
                   power_state=states.POWER_ON)
        syncer = self.timed()
        self.run_for(syncer, power_sync.tick(self.INTERVAL) * 4)
        selects = self.count_selects()
        counts = self.run_for(syncer, 2 * self.INTERVAL)
        self.assertEqual(80, sum(counts))
        # One statement a run, the feed's probe for changes (a poll's
        # stamp is no change): no row is read to poll a node.
        self.assertEqual(len(counts), len(selects))
        self.assertTrue(all("changed_at" in s for s in selects), selects)
        # A change: the probe, then the rows.
        self.db.update_node("n00", {"maintenance": True})
        del selects[:]
        self.run_for(syncer, 1.0)
        self.assertEqual(2, len(selects), str(selects))
        self.assertNotIn(self.get("n00").uuid, syncer.rows)

    def test_maintenance_and_reservations_are_followed(self) -> None:
        self.nodes("a", "b")
        syncer = self.timed()
        self.run_for(syncer, self.INTERVAL)
        self.assertEqual(["a", "b"], sorted(self.power.gets))
        self.db.update_node("a", {"maintenance": True})
        self.db.reserve_node(self.get("b").uuid, "someone:0")
        self.run_for(syncer, 2 * self.INTERVAL)
        self.assertEqual(["a", "b"], sorted(self.power.gets))
        # Back: polled again when due.
        self.db.update_node("a", {"maintenance": False})
        self.db.release_node(self.get("b").uuid, "someone:0")
        self.run_for(syncer, self.INTERVAL)
        self.assertEqual(["a", "a", "b", "b"], sorted(self.power.gets))

    def test_a_deleted_node_is_never_polled_again(self) -> None:
        self.nodes("a", "b")
        syncer = self.timed()
        self.run_for(syncer, self.INTERVAL)
        self.db.delete_node("a")
        self.run_for(syncer, 2 * self.INTERVAL)
        self.assertEqual(["a", "b", "b", "b"], sorted(self.power.gets))

    def test_a_node_enrolled_later_is_polled(self) -> None:
        syncer = self.timed()
        self.run_for(syncer, 3)
        self.nodes("late")
        self.run_for(syncer, self.INTERVAL)
        self.assertEqual(["late"], self.power.gets)

    def test_a_stamp_lost_to_a_database_error_is_polled_again(
            self) -> None:
        self.nodes(*["n%02d" % i for i in range(20)])
        syncer = self.timed()
        real = self.db.apply_sync_results
        failed: list[int] = []

        def flaky(*args: Any, **kwargs: Any) -> int:
            if not failed and kwargs.get("stamps"):
                failed.append(len(kwargs["stamps"][-1][1]))
                raise db_exc.DBConnectionError("lost")
            return real(*args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(
            self.db, "apply_sync_results", side_effect=flaky))
        for _ in range(int(self.INTERVAL)):
            self.t += datetime.timedelta(seconds=1)
            try:
                syncer.sync()
            except db_exc.DBConnectionError:
                pass
        # Every node stamped; those whose stamps were lost polled again
        # at the next run rather than never.
        self.assertEqual(1, len(failed))
        self.assertEqual(20 + failed[0], len(self.power.gets))
        self.assertTrue(all(self.get(n).power_checked_at is not None
                            for n in ["n%02d" % i for i in range(20)]))

    def test_an_edit_the_feed_misses_lasts_until_the_full_read(
            self) -> None:
        [uuid] = self.nodes("a")
        syncer = self.timed()
        self.run_for(syncer, self.INTERVAL)
        # A hand edit that keeps changed_at: only a full read sees it.
        with self.db.engine.begin() as conn:
            conn.execute(db_api.models.nodes.update()
                         .where(db_api.models.nodes.c.uuid == uuid)
                         .values(maintenance=True,
                                 changed_at=db_api.models.nodes.c.changed_at))
        self.run_for(syncer, (power_sync.RELOAD_INTERVALS + 2)
                     * self.INTERVAL, step=self.INTERVAL / 4)
        polls = len(self.power.gets)
        self.assertLess(polls, power_sync.RELOAD_INTERVALS + 3)
        self.run_for(syncer, 3 * self.INTERVAL, step=self.INTERVAL / 4)
        self.assertEqual(polls, len(self.power.gets))


class TestNodeCache(SyncTestCase):
    """Gains, losses and the settle read of node_cache."""

    def polled_once(self, reload_every: float
                    ) -> tuple[node_cache.NodeCache, str, int]:
        """A cache of one node ("a"), just polled; its stamp not written.

        Due at 500 once polled, at once before.
        """
        [uuid] = self.nodes("a")
        partition = self.get(uuid).partition
        cache = node_cache.NodeCache(
            self.db, ["scripted"],
            lambda row: 0.0 if row.power_checked_at is None else 500.0,
            interval=60.0, settle=0.0, reload_every=reload_every,
            late=lambda p, when, gained: when)
        cache.update((partition,), 100.0)
        [row] = cache.pop_due(100.0)
        cache.polled([dataclasses.replace(
            row, power_checked_at=datetime.datetime(2030, 1, 1))])
        return cache, uuid, partition

    def test_a_read_never_takes_back_a_poll_not_written_yet(
            self) -> None:
        cache, uuid, partition = self.polled_once(reload_every=10.0)
        # Its stamp waits in memory; the full read finds none in the
        # table: the node stays planned from its poll.
        cache.update((partition,), 111.0)
        self.assertEqual(500.0, cache.due_at(uuid))
        self.assertEqual([], cache.pop_due(499.0))

    def test_a_node_back_from_a_reservation_keeps_its_last_poll(
            self) -> None:
        cache, uuid, partition = self.polled_once(reload_every=1000.0)
        # A power action reserves it (not polled meanwhile) and lets it
        # go before the poll's stamp was written: still planned from it.
        self.db.reserve_node(uuid, "h:1")
        cache.update((partition,), 101.0)
        self.assertNotIn(uuid, cache)
        self.db.release_reservations(holders=["h:1"])
        cache.update((partition,), 102.0)
        self.assertEqual(500.0, cache.due_at(uuid))

    def test_rows_due_just_before_a_gain_wait_for_the_settle_read(
            self) -> None:
        uuids = self.nodes(*["n%02d" % i for i in range(40)])
        by_partition = {self.get(u).partition: u for u in uuids}
        parts = sorted(by_partition)
        half = tuple(parts[:len(parts) // 2])
        due = {u: 100.0 for u in uuids}
        cache = node_cache.NodeCache(self.db, ["scripted"],
                                     lambda row: due[row.uuid],
                                     interval=60.0, settle=5.0,
                                     reload_every=1000.0,
                                     late=lambda p, when, gained: gained + 5)
        cache.update(half, 100.0)
        first = cache.pop_due(100.0)
        self.assertEqual({by_partition[p] for p in half},
                         {row.uuid for row in first})
        for row in first:
            due[row.uuid] = 160.0
        cache.polled(first)
        # The other half is gained at 102: due 2 s before, so its
        # previous owner may be polling it: planned for the settle read.
        cache.update(tuple(parts), 102.0)
        self.assertEqual([], cache.pop_due(106.9))
        # Its previous owner polled some of them meanwhile.
        polled = [by_partition[p] for p in parts[len(parts) // 2:]][:3]
        self.db.apply_sync_results([], stamps=[(timeutils.utcnow(), polled)])
        for uuid in polled:
            due[uuid] = 170.0
        cache.update(tuple(parts), 107.0)
        self.assertEqual(170.0, cache.due_at(polled[0]))
        # Those it missed (it died): at once.
        left = {row.uuid for row in cache.pop_due(107.0)}
        self.assertEqual({by_partition[p] for p in parts[len(parts) // 2:]}
                         - set(polled), left)
        # Partitions lost: their rows dropped.
        cache.update(half, 108.0)
        self.assertEqual(len(half), len(cache))
        self.assertNotIn(polled[0], cache)

    def test_overdue_rows_of_a_gain_are_due_at_once(self) -> None:
        [uuid] = self.nodes("a")
        cache = node_cache.NodeCache(self.db, ["scripted"],
                                     lambda row: 50.0, interval=60.0,
                                     settle=5.0, reload_every=1000.0,
                                     late=lambda p, when, gained: when)
        cache.update((), 100.0)
        cache.update((self.get("a").partition,), 101.0)
        self.assertEqual([uuid], [row.uuid for row in cache.pop_due(101.0)])


class TestNodeCounts(SyncTestCase):
    """The worker's node gauges, counted from the rows in memory."""

    def test_every_node_of_its_partitions_counted_without_a_read(
            self) -> None:
        uuid = dict(zip("amro", self.nodes("a", "m", "r")
                        + self.nodes("o", driver="other")))
        self.db.update_node(uuid["m"], {"maintenance": True})
        self.db.reserve_node(uuid["r"], "h:1")
        mine = tuple(sorted({self.get(u).partition for u in uuid.values()}))
        # A node of another worker's partition is not counted.
        self.nodes(next(name for name in ("x%d" % i for i in range(99))
                        if db_models.partition_of(str(uuid_mod.uuid5(
                            uuid_mod.NAMESPACE_URL, name))) not in mine))
        created = [self.get(u).created_at for u in uuid.values()]
        t = 1000.0
        cache = node_cache.NodeCache(self.db, ["scripted"], lambda row: t,
                                     interval=60.0, settle=0.0,
                                     reload_every=1000.0,
                                     late=lambda p, when, gained: when)
        cache.update(mine, t)
        [row] = cache.pop_due(t)
        second = datetime.timedelta(seconds=1)
        polled = max(created) + 30 * second
        cache.polled([dataclasses.replace(row, power_checked_at=polled)])
        reads = self.statements()
        # Overdue: not in maintenance, and polled (r and o never were:
        # enrolled) before the time given.
        self.assertEqual((4, 0, polled, 1), cache.counts(min(created)
                                                         - second))
        self.assertEqual((4, 2, polled, 1), cache.counts(max(created)
                                                         + second))
        self.assertEqual((4, 3, polled, 1), cache.counts(polled + second))
        self.assertEqual([], reads)
        # Changes come with the feed: m leaves maintenance (never polled
        # either: overdue, with r), o is gone.
        self.db.update_node(uuid["m"], {"maintenance": False})
        self.db.delete_node(uuid["o"])
        cache.update(mine, t + 1)
        self.assertEqual((3, 2, polled, 0), cache.counts(max(created)
                                                         + second))
        cache.update((), t + 2)
        self.assertEqual((0, 0, None, 0), cache.counts(polled))

    def test_none_while_an_update_holds_the_rows(self) -> None:
        cache = node_cache.NodeCache(self.db, ["scripted"], lambda row: 0.0,
                                     interval=60.0, settle=0.0,
                                     reload_every=1000.0,
                                     late=lambda p, when, gained: when)
        self.assertFalse(cache.loaded)
        cache.update((), 1.0)
        self.assertTrue(cache.loaded)       # nothing to read
        self.assertEqual((0, 0, None, 0), cache.counts(self.now))
        with cache._lock:
            self.assertIsNone(cache.counts(self.now, wait=0.01))

    def test_a_failed_gain_read_is_read_again_in_full(self) -> None:
        uuids = self.nodes(*["n%02d" % i for i in range(20)])
        parts = sorted({self.get(u).partition for u in uuids})
        cache = node_cache.NodeCache(self.db, ["scripted"], lambda row: 0.0,
                                     interval=60.0, settle=5.0,
                                     reload_every=1000.0,
                                     late=lambda p, when, gained: when)
        cache.update(tuple(parts[:1]), 100.0)
        real = self.db.partition_rows
        reads: list[Any] = []

        def blip_once(**kwargs: Any) -> list[db_api.SyncRow]:
            reads.append(kwargs["partitions"])
            if len(reads) == 1:
                raise RuntimeError("blip")
            return real(**kwargs)

        self.useFixture(fixtures.MockPatchObject(
            self.db, "partition_rows", side_effect=blip_once))
        # The read of the partitions gained fails: read again, all of
        # them, at the next update (not at the next full read, due at
        # 1100).
        self.assertRaises(RuntimeError, cache.update, tuple(parts), 101.0)
        self.assertFalse(cache.loaded)
        cache.update(tuple(parts), 102.0)
        self.assertEqual(len(uuids), len(cache))
        self.assertEqual(tuple(parts), tuple(reads[-1]))

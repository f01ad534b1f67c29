# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.task: the one path that acts on a node."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import fixtures
from oslo_db import exception as db_exc

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import fake
from conductor.executor import bmc
from conductor.executor import pool as pool_mod
from conductor import states
from conductor import task
from tests import base
from tests import fakes


class TaskTestCase(base.TestCase):
    """A migrated database with one fake node, ``n1``."""

    def setUp(self) -> None:
        super().setUp()
        self.db = self.make_db()
        self.drivers = {"fake": fake.FakeDriver()}
        self.uuid = self.db.create_node({"driver": "fake", "name": "n1",
                                         "driver_info": {}}).uuid


class TestTask(TaskTestCase):

    def reservation(self) -> str | None:
        return self.db.get_node(self.uuid).reservation

    def test_acquire_holds_the_reservation_for_the_block(self) -> None:
        with task.acquire(self.db, self.uuid, "h:0", self.drivers,
                          5.0) as t:
            self.assertEqual("h:0", t.node.reservation)
            self.assertRaises(exceptions.NodeLocked,
                              self.db.reserve_node, self.uuid, "h:1")
        self.assertIsNone(self.reservation())

    def test_acquire_releases_when_the_block_raises(self) -> None:
        def fail() -> None:
            with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0):
                raise RuntimeError("boom")

        self.assertRaises(RuntimeError, fail)
        self.assertIsNone(self.reservation())

    def test_call_runs_the_driver_under_the_deadline(self) -> None:
        left: list[float | None] = []
        power = self.drivers["fake"].power
        real = power.get_power_state

        def read(node: fake.base.DriverNode) -> str:
            left.append(deadline.remaining())
            return real(node)

        with task.acquire(self.db, self.uuid, "h:0", self.drivers,
                          2.0) as t:
            power.get_power_state = read  # type: ignore[method-assign]
            self.assertEqual(states.POWER_OFF, t.call("get_power_state"))
            t.record({"power_state": states.POWER_OFF})
        assert left[0] is not None
        self.assertTrue(1.0 < left[0] <= 2.0)
        self.assertEqual(states.POWER_OFF,
                         self.db.get_node(self.uuid).power_state)

    def test_a_driver_not_enabled_here_is_named(self) -> None:
        with task.acquire(self.db, self.uuid, "h:0", {}, 5.0) as t:
            exc = self.assertRaises(exceptions.DriverNotEnabled, t.call,
                                    "get_power_state")
        self.assertIn("fake", str(exc))

    def test_request_reserves_and_spawn_releases(self) -> None:
        pool = pool_mod.WorkerPool(2, "t")
        pool.start()
        self.addCleanup(pool.shutdown, True, 5.0)
        t = task.request_power(self.db, "n1", states.POWER_ON, "h:0",
                               self.drivers, 5.0)
        self.assertEqual((states.POWER_ON, "h:0"),
                         (t.node.target_power_state, t.node.reservation))
        # A second request is refused while the first is held.
        self.assertRaises(exceptions.NodeLocked, task.request_power,
                          self.db, "n1", states.POWER_OFF, "h:1",
                          self.drivers, 5.0)
        seen: list[str | None] = []
        future = t.spawn(pool, lambda held: seen.append(
            self.db.get_node(held.node.uuid).reservation))
        future.result(5.0)
        self.assertEqual(["h:0"], seen)
        self.assertIsNone(self.reservation())

    def test_a_full_pool_leaves_the_reservation_to_the_caller(self) -> None:
        pool = pool_mod.WorkerPool(1, "t")
        pool.start()
        release = threading.Event()
        self.addCleanup(pool.shutdown, True, 5.0)
        self.addCleanup(release.set)
        pool.submit(release.wait, 5.0)
        t = task.request_power(self.db, self.uuid, states.POWER_ON, "h:0",
                               self.drivers, 5.0)
        self.assertRaises(exceptions.NoFreeWorker, t.spawn, pool,
                          lambda held: None)
        self.assertEqual("h:0", self.reservation())
        task.withdraw(t)
        node = self.db.get_node(self.uuid)
        self.assertEqual((None, None),
                         (node.target_power_state, node.reservation))


class TestClaim(TaskTestCase):

    def test_request_claims_in_the_reserving_update(self) -> None:
        t = task.request_power(self.db, "n1", states.POWER_ON, "h:0",
                               self.drivers, 5.0)
        node = self.db.get_node(self.uuid)
        self.assertEqual(("h:0", t.claim), (node.reservation,
                                            node.power_action_claim))
        self.assertIsNotNone(t.claim)
        self.assertFalse(t.interrupted)
        task.withdraw(t)
        node = self.db.get_node(self.uuid)
        self.assertEqual((None, None, None),
                         (node.target_power_state, node.power_action_claim,
                          node.reservation))

    def test_acquire_claims_a_pending_action(self) -> None:
        self.db.request_power_state(self.uuid, states.POWER_ON)
        self.assertIsNone(self.db.get_node(self.uuid).power_action_claim)
        with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0,
                          claim=True) as t:
            self.assertIsNotNone(t.claim)
            self.assertEqual(t.claim, t.node.power_action_claim)
            self.assertFalse(t.interrupted)
        # Released without a record: the claim stays for the next owner.
        node = self.db.get_node(self.uuid)
        self.assertEqual((None, t.claim),
                         (node.reservation, node.power_action_claim))
        with task.acquire(self.db, self.uuid, "h:1", self.drivers, 5.0,
                          claim=True) as again:
            self.assertTrue(again.interrupted)
            self.assertEqual(t.claim, again.node.power_action_claim)

    def test_acquire_without_claim_leaves_it(self) -> None:
        self.db.request_power_state(self.uuid, states.POWER_ON)
        with task.acquire(self.db, self.uuid, "h:0", self.drivers,
                          5.0) as t:
            self.assertIsNone(t.node.power_action_claim)
            self.assertFalse(t.interrupted)

    def test_nothing_pending_nothing_claimed(self) -> None:
        with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0,
                          claim=True) as t:
            self.assertIsNone(t.node.power_action_claim)
            self.assertFalse(t.interrupted)


class TestFencing(TaskTestCase):
    """A task whose reservation was taken over stops acting on the node."""

    def take_over(self) -> None:
        """Another worker judged h:0 dead and released its reservation."""
        self.assertEqual(1, self.db.release_reservations(keep=["h:1"]))

    def test_every_reserve_and_takeover_bumps_the_epoch(self) -> None:
        epochs = [self.db.get_node(self.uuid).reservation_epoch]
        epochs.append(self.db.reserve_node(self.uuid, "h:0")
                      .reservation_epoch)
        self.take_over()
        epochs.append(self.db.get_node(self.uuid).reservation_epoch)
        self.assertTrue(self.db.release_node(self.uuid, "h:0") is False)
        t = task.request_power(self.db, "n1", states.POWER_ON, "h:0",
                               self.drivers, 5.0)
        epochs.append(t.epoch)
        self.assertEqual([0, 1, 2, 3], epochs)
        task.withdraw(t)

    def test_a_stale_holder_writes_nothing_and_calls_no_bmc(self) -> None:
        calls: list[str] = []
        power = self.drivers["fake"].power
        self.useFixture(fixtures.MockPatchObject(
            power, "set_power_state",
            side_effect=lambda node, target: calls.append(target)))
        stale = task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0)
        t = stale.__enter__()
        self.take_over()
        # The same holder name reserves it again, for another task (a
        # worker that was judged dead and lives on).
        again = task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0)
        new = again.__enter__()
        with self.assertLogs(task.LOG, "ERROR") as logs:
            self.assertRaises(task.ReservationLost, t.record,
                              {"last_error": "stale outcome"})
        self.assertIn("Node %s: the reservation of h:0 (epoch 1) was taken "
                      "over" % self.uuid, logs.output[0])
        self.assertRaises(task.ReservationLost, t.call, "set_power_state",
                          states.POWER_ON)
        self.assertEqual([], calls)
        self.assertIsNone(self.db.get_node(self.uuid).last_error)
        # Its release leaves the new task's reservation alone.
        stale.__exit__(None, None, None)
        node = self.db.get_node(self.uuid)
        self.assertEqual(("h:0", new.epoch),
                         (node.reservation, node.reservation_epoch))
        new.call("set_power_state", states.POWER_ON)
        new.record({"power_state": states.POWER_ON})
        again.__exit__(None, None, None)
        self.assertEqual([states.POWER_ON], calls)
        self.assertIsNone(self.db.get_node(self.uuid).reservation)

    def test_taken_over_before_the_call(self) -> None:
        calls: list[str] = []
        power = self.drivers["fake"].power
        self.useFixture(fixtures.MockPatchObject(
            power, "set_power_state",
            side_effect=lambda node, target: calls.append(target)))
        with task.acquire(self.db, self.uuid, "h:0", self.drivers,
                          5.0) as t:
            self.take_over()
            self.db.reserve_node(self.uuid, "h:1")
            self.assertRaises(task.ReservationLost, t.call,
                              "set_power_state", states.POWER_ON)
            self.assertTrue(t.fenced)
        self.assertEqual([], calls)
        self.assertEqual("h:1", self.db.get_node(self.uuid).reservation)


class TestHoldings(TaskTestCase):

    def failing_releases(self, failures: int) -> list[int]:
        """The next ``failures`` releases fail; returns the attempt count."""
        attempts = [0]
        real = self.db.release_node

        def release(uuid: str, holder: str,
                    epoch: int | None = None) -> bool:
            attempts[0] += 1
            if attempts[0] <= failures:
                raise db_exc.DBConnectionError("database went away")
            return real(uuid, holder, epoch)

        self.useFixture(fixtures.MockPatchObject(self.db, "release_node",
                                                 side_effect=release))
        return attempts

    def test_tasks_are_in_use_until_released(self) -> None:
        held = task.holdings(self.db, "h:0")
        self.assertIs(held, task.holdings(self.db, "h:0"))
        with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0):
            self.assertEqual([self.uuid], held.in_use())
        self.assertEqual([], held.in_use())
        # A refused reservation is not in use either.
        self.db.reserve_node(self.uuid, "h:1")
        self.assertRaises(exceptions.NodeLocked, task.request_power,
                          self.db, "n1", states.POWER_ON, "h:0",
                          self.drivers, 5.0)
        self.assertEqual([], held.in_use())

    def test_another_connection_holds_nothing(self) -> None:
        with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0):
            other = self.make_db()
            self.assertEqual([], task.holdings(other, "h:0").in_use())

    def test_closed_refuses_tasks_and_calls(self) -> None:
        held = task.holdings(self.db, "h:0")
        with task.acquire(self.db, self.uuid, "h:0", self.drivers,
                          5.0) as t:
            self.assertEqual([self.uuid], held.close())
            self.assertRaises(task.WorkerStopping, t.call,
                              "get_power_state")
        other = self.db.create_node({"driver": "fake", "name": "n2"}).uuid
        self.assertRaises(task.WorkerStopping, task.acquire(
            self.db, other, "h:0", self.drivers, 5.0).__enter__)
        self.assertIsNone(self.db.get_node(other).reservation)

    def test_failed_release_is_retried_until_it_succeeds(self) -> None:
        attempts = self.failing_releases(3)
        held = task.holdings(self.db, "h:0")
        with task.acquire(self.db, self.uuid, "h:0", self.drivers, 5.0):
            pass
        # Not raised; queued, and the node is no longer in use.
        self.assertEqual("h:0", self.db.get_node(self.uuid).reservation)
        self.assertEqual({"in_flight": [], "release_pending": [self.uuid]},
                         held.status())
        # Meanwhile no task of this worker takes the node.
        exc = self.assertRaises(
            exceptions.NodeLocked, task.acquire(
                self.db, self.uuid, "h:0", self.drivers, 5.0).__enter__)
        self.assertIn("release failed and is being retried", str(exc))
        self.assertEqual(1, held.retry_releases(now=True))
        self.assertEqual(1, held.retry_releases(now=True))
        self.assertEqual(0, held.retry_releases(now=True))
        self.assertEqual(4, attempts[0])
        self.assertIsNone(self.db.get_node(self.uuid).reservation)
        self.assertEqual([], held.pending_releases())

    def test_retries_back_off(self) -> None:
        clock = fakes.FakeClock(100.0)
        attempts = self.failing_releases(3)
        held = task.Holdings(self.db, "h:0", monotonic=clock)
        self.db.reserve_node(self.uuid, "h:0")
        self.assertFalse(held.release(self.uuid))
        self.assertEqual(1, attempts[0])

        def retry_at(offset: float) -> int:
            clock.now = 100.0 + offset
            held.retry_releases()
            return attempts[0]

        self.assertEqual(1, retry_at(0.9))          # first retry after 1s
        self.assertEqual(2, retry_at(1.0))          # fails: next in 2s
        self.assertEqual(2, retry_at(2.9))
        self.assertEqual(3, retry_at(3.0))          # fails: next in 4s
        self.assertEqual(3, retry_at(6.9))
        self.assertEqual(4, retry_at(7.0))          # succeeds
        self.assertEqual([], held.pending_releases())
        self.assertIsNone(self.db.get_node(self.uuid).reservation)

    def test_a_successful_release_retries_the_due_ones(self) -> None:
        clock = fakes.FakeClock(0.0)
        held = task.Holdings(self.db, "h:0", monotonic=clock)
        other = self.db.create_node({"driver": "fake", "name": "n2"}).uuid
        self.db.reserve_node(self.uuid, "h:0")
        self.db.reserve_node(other, "h:0")
        self.failing_releases(1)
        self.assertFalse(held.release(self.uuid))
        clock.advance(1.0)
        self.assertTrue(held.release(other))
        self.assertEqual([], held.pending_releases())
        self.assertIsNone(self.db.get_node(self.uuid).reservation)


class TestBmcGate(base.TestCase):
    """Every driver call waits for its turn at the node's BMC."""

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(bmc.reset)
        self.driver = fake.FakeDriver()
        self.log = os.path.join(self.conf.state_path, "timing.jsonl")

    def node(self, index: int, **info: object) -> fake.base.DriverNode:
        return fakes.driver_node(
            "fake", "n%d" % index, "00000000-0000-4000-8000-%012d" % index,
            dict({"fake_bmc_address": "chassis-1",
                  "fake_timing_log": self.log}, **info))

    def entries(self) -> list[dict[str, Any]]:
        with open(self.log) as stream:
            return sorted((json.loads(line) for line in stream),
                          key=lambda entry: entry["start"])

    def test_twenty_nodes_behind_one_address_are_spaced(self) -> None:
        interval = 0.05
        bmc.configure(min_interval=interval)
        nodes = [self.node(i, fake_latency_ms=5) for i in range(20)]
        pool = pool_mod.WorkerPool(25, name="bmc-test")
        pool.start()
        self.addCleanup(pool.shutdown, True, base.WAIT)
        # Reads (as power sync makes them) and changes (as power actions
        # make them) all at once, from pool threads.
        futures = [pool.submit(task.call_driver, self.driver,
                               "get_power_state", node, timeout=base.WAIT)
                   for node in nodes]
        futures += [pool.submit(task.call_driver, self.driver,
                                "set_power_state", node, states.POWER_ON,
                                timeout=base.WAIT)
                    for node in nodes[:5]]
        for future in futures:
            future.result(base.WAIT)
        entries = self.entries()
        self.assertEqual(25, len(entries))
        self.assertEqual({"chassis-1"}, {e["bmc"] for e in entries})
        for before, after in zip(entries, entries[1:]):
            # Never overlapping, and bmc_min_interval apart (the log is
            # written by the driver, inside the turn).
            self.assertGreaterEqual(
                after["start"] - before["end"], interval - 0.002,
                (before, after))

    def test_wait_counts_against_the_deadline(self) -> None:
        bmc.configure(min_interval=30)
        node = self.node(1)
        task.call_driver(self.driver, "get_power_state", node, timeout=5)
        exc = self.assertRaises(bmc.BmcBusy, task.call_driver, self.driver,
                                "get_power_state", node, timeout=5)
        self.assertIn("node %s could not start within its 5.0 s deadline"
                      % node.uuid, str(exc))
        self.assertIn("BMC chassis-1 needs bmc_min_interval (30.0 s)",
                      str(exc))
        # The driver was not called the second time.
        self.assertEqual(1, len(self.entries()))

    def test_other_addresses_and_no_address_are_not_held(self) -> None:
        bmc.configure(min_interval=30)
        task.call_driver(self.driver, "get_power_state", self.node(1),
                         timeout=5)
        task.call_driver(self.driver, "get_power_state",
                         self.node(2, fake_bmc_address="chassis-2"),
                         timeout=5)
        plain = fakes.driver_node("fake", "n3", driver_info={})
        for _ in range(3):
            task.call_driver(self.driver, "get_power_state", plain,
                             timeout=5)
        self.assertEqual(5, bmc.current().stats()["calls"])
        self.assertEqual(0, bmc.current().stats()["waited"])

    def test_driver_without_bmc_address(self) -> None:
        class OldPower:
            def get_power_state(self, node: object) -> str:
                return states.POWER_ON

        class OldDriver(fake.base.BaseDriver):
            def __init__(self) -> None:
                self.power = OldPower()  # type: ignore[assignment]

        self.assertEqual(states.POWER_ON, task.call_driver(
            OldDriver(), "get_power_state", self.node(1), timeout=5))

    def test_bad_bmc_address_answer(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            fake.FakePower, "bmc_address", return_value=42))
        exc = self.assertRaises(TypeError, task.call_driver, self.driver,
                                "get_power_state", self.node(1), timeout=5)
        self.assertIn("FakePower.bmc_address returned 42, not a string or "
                      "None", str(exc))

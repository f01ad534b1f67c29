# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.task: the one path that acts on a node."""

from __future__ import annotations

import threading

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import fake
from conductor.executor import pool as pool_mod
from conductor import states
from conductor import task
from tests import base


class TestTask(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db = self.make_db()
        self.drivers = {"fake": fake.FakeDriver()}
        self.uuid = self.db.create_node({"driver": "fake", "name": "n1",
                                         "driver_info": {}}).uuid

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

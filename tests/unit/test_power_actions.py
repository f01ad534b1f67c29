# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.power_actions against a real SQLite file and pool."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from typing import Any
from unittest import mock

import fixtures
from oslo_db import exception as db_exc
from oslo_utils import timeutils

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import deadline
from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.db import models
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor.executor import pool as pool_mod
from conductor import ownership
from conductor import power_actions
from conductor import states
from conductor import task
from tests import base
from tests import fakes

HOLDER = "h:0"


class ActionsTestCase(base.TestCase):
    """One live worker (HOLDER); a mocked ``scripted`` driver and fake."""

    def setUp(self) -> None:
        super().setUp()
        self.use_small_rings()
        self.db = self.make_db()
        self.db.register_conductor("h", 0, ["scripted", "fake"])
        self.power = mock.create_autospec(driver_base.PowerInterface,
                                          instance=True)
        self.power.bmc_address.return_value = None
        self.driver = driver_base.BaseDriver()
        self.driver.power = self.power
        self.fake = fake.FakeDriver()
        self.pool = self.make_pool(25)
        self.rings = ownership.Rings(self.db, "h", 0, heartbeat_timeout=60,
                                     reset_interval=15)
        self.rings.refresh()
        self.actions = self.make_actions()

    def make_pool(self, size: int) -> pool_mod.WorkerPool:
        return fakes.start_pool(self, size)

    def make_actions(self, pool: pool_mod.WorkerPool | None = None,
                     rings: ownership.Rings | None = None
                     ) -> power_actions.PowerActions:
        return power_actions.PowerActions(
            self.db, {"scripted": self.driver, "fake": self.fake},
            rings or self.rings, pool or self.pool, timeout=5.0)

    def node(self, name: str, target: str | None = None,
             driver: str = "scripted", **values: Any) -> str:
        uuid = self.db.create_node({"driver": driver, "name": name,
                                    "driver_info": {}}).uuid
        if values:
            self.db.update_node(uuid, values)
        if target is not None:
            self.db.request_power_state(uuid, target)
        return uuid

    def drain(self, pool: pool_mod.WorkerPool | None = None) -> None:
        pool = pool or self.pool
        self.assertTrue(base.wait_until(lambda: pool.busy == 0))

    def blocker(self, pool: pool_mod.WorkerPool) -> threading.Event:
        """Occupy one thread of ``pool`` until the returned Event is set."""
        release = threading.Event()
        self.addCleanup(release.set)
        pool.submit(release.wait, base.WAIT)
        return release


class TestApply(ActionsTestCase):

    def test_power_on_under_the_reservation(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        seen: list[tuple[str | None, float | None]] = []
        self.power.set_power_state.side_effect = lambda node, target: \
            seen.append((self.db.get_node(node.uuid).reservation,
                         deadline.remaining()))
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.set_power_state.assert_called_once_with(mock.ANY,
                                                           states.POWER_ON)
        view = self.power.set_power_state.call_args[0][0]
        self.assertEqual((uuid, "a", "scripted"),
                         (view.uuid, view.name, view.driver))
        self.assertEqual(HOLDER, seen[0][0])
        remaining = seen[0][1]
        assert remaining is not None
        self.assertTrue(4.0 < remaining <= 5.0)
        self.assertEqual((states.POWER_ON, None, None, None),
                         (node.power_state, node.target_power_state,
                          node.last_error, node.reservation))
        # NOTE: releasing the reservation wrote the row again (changed_at).
        self.assertEqual(node, dataclasses.replace(
            self.db.get_node(uuid), changed_at=node.changed_at))

    def test_taken_over_during_the_call_records_nothing(self) -> None:
        uuid = self.node("a", states.POWER_ON)

        def taken_over(node: Any, target: str) -> None:
            # Another worker judged this one dead meanwhile, released the
            # reservation and took the node.
            self.db.release_reservations(holders=[HOLDER])
            self.db.reserve_node(uuid, "other:0")
        self.power.set_power_state.side_effect = taken_over
        with self.assertLogs(task.LOG, "ERROR") as logs:
            self.actions.submit(uuid)
            self.drain()
        self.assertIn("Node %s: the reservation of %s" % (uuid, HOLDER),
                      logs.output[0])
        node = self.db.get_node(uuid)
        # The outcome is the new owner's to record (its claim check reads
        # the BMC first); the stale worker wrote nothing, released nothing.
        self.assertEqual((states.POWER_ON, None, "other:0"),
                         (node.target_power_state, node.power_state,
                          node.reservation))
        self.assertIsNotNone(node.power_action_claim)
        self.power.set_power_state.assert_called_once()

    def test_power_off(self) -> None:
        uuid = self.node("a", states.POWER_OFF, power_state=states.POWER_ON)
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.set_power_state.assert_called_once_with(mock.ANY,
                                                           states.POWER_OFF)
        self.assertEqual((states.POWER_OFF, None),
                         (node.power_state, node.target_power_state))

    def test_reboot_ends_powered_on(self) -> None:
        uuid = self.node("a", states.REBOOT, power_state=states.POWER_OFF)
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.reboot.assert_called_once_with(mock.ANY)
        self.power.set_power_state.assert_not_called()
        self.assertEqual((states.POWER_ON, None),
                         (node.power_state, node.target_power_state))

    def test_fake_driver_end_to_end(self) -> None:
        uuid = self.node("f", states.POWER_ON, driver="fake")
        self.actions.apply(uuid)
        view = driver_base.DriverNode(uuid, "f", "fake", {}, None)
        self.assertEqual(states.POWER_ON,
                         self.fake.power.get_power_state(view))
        self.assertEqual(states.POWER_ON, self.db.get_node(uuid).power_state)

    def test_driver_failure_records_the_error(self) -> None:
        uuid = self.node("a", states.POWER_ON, power_state=states.POWER_OFF)
        self.power.set_power_state.side_effect = \
            exceptions.PowerStateFailure(err="BMC refused")
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertEqual(("power on failed: BMC refused", None,
                          states.POWER_OFF, None),
                         (node.last_error, node.target_power_state,
                          node.power_state, node.reservation))

    def test_failure_without_a_message_names_the_exception(self) -> None:
        uuid = self.node("a", states.REBOOT)
        self.power.reboot.side_effect = RuntimeError()
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertEqual("rebooting failed: RuntimeError", node.last_error)

    def test_success_clears_an_old_error(self) -> None:
        uuid = self.node("a", last_error="old failure")
        self.db.update_node(uuid, {"target_power_state": states.POWER_ON})
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertIsNone(node.last_error)

    def test_nothing_pending_does_nothing(self) -> None:
        uuid = self.node("a")
        before = self.db.get_node(uuid)
        self.assertIsNone(self.actions.apply(uuid))
        self.power.set_power_state.assert_not_called()
        after = self.db.get_node(uuid)
        self.assertEqual(before.updated_at, after.updated_at)
        self.assertIsNone(after.reservation)

    def test_unknown_target_is_recorded_as_an_error(self) -> None:
        uuid = self.node("a")
        self.db.update_node(uuid, {"target_power_state": "sideways"})
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertEqual("Unknown requested power state 'sideways'",
                         node.last_error)
        self.assertIsNone(node.target_power_state)
        self.power.set_power_state.assert_not_called()
        self.power.reboot.assert_not_called()

    def test_driver_not_enabled_is_recorded_as_an_error(self) -> None:
        uuid = self.node("a", states.POWER_ON, driver="ipmi")
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertEqual("Driver ipmi is not enabled on h:0", node.last_error)
        self.assertIsNone(node.target_power_state)

    def test_node_reserved_by_another_holder(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.db.reserve_node(uuid, "h:1")
        self.assertRaises(exceptions.NodeLocked, self.actions.apply, uuid)
        node = self.db.get_node(uuid)
        self.assertEqual((states.POWER_ON, "h:1"),
                         (node.target_power_state, node.reservation))
        self.power.set_power_state.assert_not_called()

    def test_unknown_node(self) -> None:
        self.assertRaises(exceptions.NodeNotFound, self.actions.apply,
                          "3a1f2b6c-0000-4000-8000-000000000000")


class TestScanAndSubmit(ActionsTestCase):

    def test_scan_applies_owned_pending_unreserved_nodes(self) -> None:
        on = self.node("on", states.POWER_ON)
        off = self.node("off", states.POWER_OFF, power_state=states.POWER_ON)
        idle = self.node("idle")
        busy = self.node("busy", states.POWER_ON)
        self.db.reserve_node(busy, "h:1")
        self.assertEqual(2, self.actions.scan())
        self.drain()
        self.assertEqual(states.POWER_ON, self.db.get_node(on).power_state)
        self.assertEqual(states.POWER_OFF, self.db.get_node(off).power_state)
        self.assertIsNone(self.db.get_node(idle).power_state)
        busy_node = self.db.get_node(busy)
        self.assertEqual((states.POWER_ON, "h:1"),
                         (busy_node.target_power_state,
                          busy_node.reservation))
        self.assertEqual(2, self.power.set_power_state.call_count)

    def _requested(self, uuid: str, seconds_ago: float | None,
                   updated_ago: float = 0) -> None:
        """Backdate the node's request (None: made by an older release)."""
        now = timeutils.utcnow()
        with self.db.engine.begin() as conn:
            conn.execute(models.nodes.update()
                         .where(models.nodes.c.uuid == uuid).values(
                target_power_state_requested_at=None if seconds_ago is None
                else now - datetime.timedelta(seconds=seconds_ago),
                updated_at=now - datetime.timedelta(seconds=updated_ago)))

    def test_scan_drops_requests_older_than_the_timeout(self) -> None:
        stale = self.node("stale", states.POWER_ON)
        fresh = self.node("fresh", states.POWER_OFF)
        legacy = self.node("legacy", states.REBOOT)
        self._requested(stale, 301)
        self._requested(fresh, 299, updated_ago=1000)
        self._requested(legacy, None, updated_ago=400)
        self.assertEqual(1, self.actions.scan(request_timeout=300))
        self.drain()
        node = self.db.get_node(stale)
        self.assertEqual((None, None, None), (
            node.target_power_state, node.power_state, node.reservation))
        self.assertEqual("Requested 'power on' dropped: not applied within "
                         "[conductor] power_request_timeout (300s); request "
                         "it again", node.last_error)
        self.assertIn("Requested 'rebooting' dropped",
                      str(self.db.get_node(legacy).last_error))
        self.assertEqual(states.POWER_OFF, self.db.get_node(fresh).power_state)
        self.power.set_power_state.assert_called_once()
        self.power.reboot.assert_not_called()

    def test_request_timeout_zero_keeps_requests(self) -> None:
        uuid = self.node("old", states.POWER_ON)
        self._requested(uuid, 10 ** 6)
        self.assertEqual(1, self.actions.scan(request_timeout=0))
        self.drain()
        self.assertEqual(states.POWER_ON, self.db.get_node(uuid).power_state)

    def test_request_timeout_of_the_constructor(self) -> None:
        actions = power_actions.PowerActions(
            self.db, {"scripted": self.driver}, self.rings, self.pool,
            timeout=5.0, request_timeout=60)
        uuid = self.node("old", states.POWER_ON)
        self._requested(uuid, 61)
        self.assertEqual(0, actions.scan())
        self.assertIn("(60s)", str(self.db.get_node(uuid).last_error))

    def test_a_stale_request_taken_anyway_is_dropped_not_applied(
            self) -> None:
        # The scan's expiry can lose a race with another write to the
        # node; the worker that takes the request checks its age again.
        actions = power_actions.PowerActions(
            self.db, {"scripted": self.driver}, self.rings, self.pool,
            timeout=5.0, request_timeout=300)
        uuid = self.node("late", states.POWER_ON)
        self._requested(uuid, 1000)
        node = actions.apply(uuid)
        assert node is not None
        self.power.set_power_state.assert_not_called()
        self.assertIsNone(node.target_power_state)
        self.assertIn("Requested 'power on' dropped: not applied within "
                      "[conductor] power_request_timeout (300s)",
                      str(node.last_error))

    def test_expiry_leaves_a_request_being_applied(self) -> None:
        uuid = self.node("taken", states.POWER_ON)
        self._requested(uuid, 1000)
        self.db.reserve_node(uuid, "h:0")
        self.assertEqual(set(), self.actions.expire([uuid], 300))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node(uuid).target_power_state)

    def test_scan_skips_nodes_it_does_not_own(self) -> None:
        self.db.register_conductor("h", 1, ["scripted"])
        self.rings.refresh()
        uuids = [self.node("n%02d" % i, states.POWER_ON) for i in range(20)]
        mine = self.rings.owned(uuids)
        self.assertTrue(0 < len(mine) < 20)
        self.assertEqual(len(mine), self.actions.scan())
        self.drain()
        for uuid in uuids:
            node = self.db.get_node(uuid)
            if uuid in mine:
                self.assertEqual(states.POWER_ON, node.power_state)
            else:
                self.assertEqual((None, states.POWER_ON),
                                 (node.power_state, node.target_power_state))

    def test_scan_releases_reservations_of_dead_workers(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.db.reserve_node(uuid, "h:9")       # never heartbeat: dead
        actions = self.make_actions(
            rings=ownership.Rings(self.db, "h", 0, 60, 15))
        self.assertEqual(1, actions.scan())
        self.drain()
        node = self.db.get_node(uuid)
        self.assertEqual((states.POWER_ON, None),
                         (node.power_state, node.reservation))

    def test_submit_twice_queues_once(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        entered, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)

        def slow(node: driver_base.DriverNode, target: str) -> None:
            entered.set()
            release.wait(base.WAIT)

        self.power.set_power_state.side_effect = slow
        self.assertTrue(self.actions.submit(uuid))
        self.assertTrue(entered.wait(base.WAIT))
        self.assertFalse(self.actions.submit(uuid))
        release.set()
        self.drain()
        self.power.set_power_state.assert_called_once_with(mock.ANY,
                                                           states.POWER_ON)
        # Done: the node may be submitted again (nothing left to do).
        self.assertTrue(self.actions.submit(uuid))
        self.drain()
        self.assertEqual(1, self.power.set_power_state.call_count)

    def test_scan_counts_only_new_submissions(self) -> None:
        self.node("a", states.POWER_ON)
        entered, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)

        def queued_not_started(actions: Any, uuid: str) -> None:
            entered.set()
            release.wait(base.WAIT)

        with mock.patch.object(power_actions.PowerActions, "apply",
                               autospec=True,
                               side_effect=queued_not_started) as apply:
            self.assertEqual(1, self.actions.scan())
            self.assertTrue(entered.wait(base.WAIT))
            # Still unreserved and pending, but already queued here.
            self.assertEqual(0, self.actions.scan())
            release.set()
            self.drain()
        self.assertEqual(1, apply.call_count)

    def test_full_pool_is_not_an_error_for_scan(self) -> None:
        pool = self.make_pool(1)
        actions = self.make_actions(pool=pool)
        uuid = self.node("a", states.POWER_ON)
        release = self.blocker(pool)
        self.assertEqual(0, actions.scan())
        self.assertEqual(states.POWER_ON,
                         self.db.get_node(uuid).target_power_state)
        release.set()
        self.drain(pool)
        # The node waited for the next scan.
        self.assertEqual(1, actions.scan())
        self.drain(pool)
        self.assertEqual(states.POWER_ON, self.db.get_node(uuid).power_state)

    def test_submit_to_a_full_pool_raises_and_forgets(self) -> None:
        pool = self.make_pool(1)
        actions = self.make_actions(pool=pool)
        uuid = self.node("a", states.POWER_ON)
        release = self.blocker(pool)
        self.assertRaises(exceptions.NoFreeWorker, actions.submit, uuid)
        release.set()
        self.drain(pool)
        self.assertTrue(actions.submit(uuid))
        self.drain(pool)
        self.assertEqual(states.POWER_ON, self.db.get_node(uuid).power_state)

    def test_queued_action_on_a_locked_node_is_skipped(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.db.reserve_node(uuid, "h:1")
        self.assertTrue(self.actions.submit(uuid))
        self.drain()
        self.power.set_power_state.assert_not_called()
        self.assertEqual(0, self.pool.stats()["failed"])
        self.assertTrue(self.actions.submit(uuid))      # not stuck queued
        self.drain()

    def test_database_errors_go_to_the_outage_log(self) -> None:
        self.addCleanup(conductor_log.reset_outage_logs)
        conductor_log.reset_outage_logs()
        uuids = [self.node("n%d" % i, states.POWER_ON) for i in range(5)]
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        with mock.patch.object(
                power_actions.PowerActions, "apply", autospec=True,
                side_effect=db_exc.DBConnectionError("gone")):
            for uuid in uuids:
                self.assertTrue(self.actions.submit(uuid))
            self.drain()
        # One line for the five failures, none with a traceback above
        # DEBUG, and no "failed unexpectedly".
        self.assertNotIn("failed unexpectedly", logger.output)
        self.assertEqual(1, logger.output.count(
            "database unavailable since"))
        self.assertTrue(conductor_log.outage_log("database").active)

    def test_unexpected_error_is_logged_and_forgotten(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        with mock.patch.object(power_actions.PowerActions, "apply",
                               autospec=True,
                               side_effect=RuntimeError("db exploded")):
            with self.assertLogs("conductor.power_actions",
                                 level="ERROR") as logs:
                self.assertTrue(self.actions.submit(uuid))
                self.drain()
        self.assertIn("Power action of node %s failed unexpectedly" % uuid,
                      logs.output[0])
        self.assertEqual(0, self.pool.stats()["failed"])
        self.assertTrue(self.actions.submit(uuid))
        self.drain()


class TestInterruptedActions(ActionsTestCase):
    """A worker claimed the action and never recorded its outcome."""

    def interrupted(self, name: str, target: str, **values: Any) -> str:
        uuid = self.node(name, **values)
        # The dead worker h:9 requested, reserved and claimed it; then its
        # reservation was released (start-up or dead-worker release).
        task.request_power(self.db, uuid, target, "h:9", {}, 5.0)
        self.db.release_reservations(holders=["h:9"])
        node = self.db.get_node(uuid)
        self.assertEqual(target, node.target_power_state)
        self.assertIsNotNone(node.power_action_claim)
        return uuid

    def test_an_interrupted_action_is_neither_expired_nor_cancelled(
            self) -> None:
        # Partly applied, maybe: only its next owner, reading the BMC,
        # may resolve it; expiry and --cancel leave it alone.
        uuid = self.interrupted("late", states.POWER_ON)
        long_ago = timeutils.utcnow() - datetime.timedelta(seconds=1000)
        with self.db.engine.begin() as conn:
            conn.execute(models.nodes.update()
                         .where(models.nodes.c.uuid == uuid)
                         .values(target_power_state_requested_at=long_ago))
        self.assertEqual(set(), self.actions.expire([uuid], 300))
        self.assertFalse(self.db.clear_power_request(uuid, "cancelled"))
        node = self.db.get_node(uuid)
        self.assertEqual((states.POWER_ON, None),
                         (node.target_power_state, node.last_error))

    def test_claim_is_held_during_the_call_and_cleared_after(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        seen: list[tuple[str | None, str | None]] = []
        self.power.set_power_state.side_effect = lambda node, target: \
            seen.append((self.db.get_node(node.uuid).reservation,
                         self.db.get_node(node.uuid).power_action_claim))
        node = self.actions.apply(uuid)
        assert node is not None
        self.assertEqual(HOLDER, seen[0][0])
        self.assertIsNotNone(seen[0][1])
        self.assertEqual((None, None, None),
                         (node.target_power_state, node.power_action_claim,
                          node.reservation))

    def test_unclaimed_action_is_applied_once_without_reading(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.actions.apply(uuid)
        self.power.set_power_state.assert_called_once_with(mock.ANY,
                                                           states.POWER_ON)
        self.power.get_power_state.assert_not_called()

    def test_target_already_reached_is_recorded_without_acting(self) -> None:
        uuid = self.interrupted("a", states.POWER_ON,
                                power_state=states.POWER_OFF,
                                last_error="old")
        self.power.get_power_state.return_value = states.POWER_ON
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.get_power_state.assert_called_once_with(mock.ANY)
        self.power.set_power_state.assert_not_called()
        self.assertEqual((states.POWER_ON, None, None, None, None),
                         (node.power_state, node.target_power_state,
                          node.power_action_claim, node.last_error,
                          node.reservation))

    def test_target_not_reached_is_applied_once(self) -> None:
        uuid = self.interrupted("a", states.POWER_OFF,
                                power_state=states.POWER_ON)
        self.power.get_power_state.return_value = states.POWER_ON
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.set_power_state.assert_called_once_with(mock.ANY,
                                                           states.POWER_OFF)
        self.assertEqual((states.POWER_OFF, None, None, None),
                         (node.power_state, node.target_power_state,
                          node.power_action_claim, node.last_error))

    def test_interrupted_reboot_is_never_repeated(self) -> None:
        uuid = self.interrupted("a", states.REBOOT,
                                power_state=states.POWER_OFF)
        self.power.get_power_state.return_value = states.POWER_ON
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.reboot.assert_not_called()
        self.power.set_power_state.assert_not_called()
        self.assertEqual((states.POWER_ON, None, None, None),
                         (node.power_state, node.target_power_state,
                          node.power_action_claim, node.reservation))
        assert node.last_error is not None
        self.assertIn("reboot was interrupted", node.last_error)
        self.assertIn("not repeated", node.last_error)
        # Nothing left to do: a later scan does not reboot it either.
        self.assertEqual(0, self.actions.scan())
        self.drain()
        self.power.reboot.assert_not_called()
        # A new request is a new action: that one reboots, once.
        self.db.request_power_state(uuid, states.REBOOT)
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.reboot.assert_called_once_with(mock.ANY)
        self.assertIsNone(node.last_error)

    def test_unreadable_bmc_is_recorded_without_acting(self) -> None:
        uuid = self.interrupted("a", states.POWER_ON)
        self.power.get_power_state.side_effect = \
            exceptions.PowerStateFailure(err="BMC unreachable")
        node = self.actions.apply(uuid)
        assert node is not None
        self.power.set_power_state.assert_not_called()
        self.assertEqual((None, None),
                         (node.target_power_state, node.power_action_claim))
        assert node.last_error is not None
        self.assertIn("power on was interrupted", node.last_error)
        self.assertIn("BMC unreachable", node.last_error)

    def test_scan_resolves_what_a_dead_worker_claimed(self) -> None:
        uuid = self.node("a")
        t = task.request_power(self.db, uuid, states.POWER_ON, "h:9", {},
                               5.0)
        self.assertEqual("h:9", self.db.get_node(uuid).reservation)
        self.power.get_power_state.return_value = states.POWER_ON
        actions = self.make_actions(
            rings=ownership.Rings(self.db, "h", 0, 60, 15))
        self.assertEqual(1, actions.scan())     # releases h:9's first
        self.drain()
        self.power.set_power_state.assert_not_called()
        node = self.db.get_node(uuid)
        self.assertEqual((states.POWER_ON, None, None, None),
                         (node.power_state, node.target_power_state,
                          node.power_action_claim, node.reservation))
        self.assertIsNotNone(t.claim)

    def test_a_stopping_worker_hands_the_action_over_untouched(
            self) -> None:
        uuid = self.node("a")
        t = task.request_power(self.db, uuid, states.POWER_ON, HOLDER,
                               {"scripted": self.driver}, 5.0)
        task.holdings(self.db, HOLDER).close()
        self.actions.apply_task(t)
        t.release()
        self.power.set_power_state.assert_not_called()
        node = self.db.get_node(uuid)
        # Still pending, no longer claimed: the next owner applies it.
        self.assertEqual((states.POWER_ON, None, None),
                         (node.target_power_state, node.power_action_claim,
                          node.reservation))


class TestQuietScans(ActionsTestCase):
    """With power sync's change feed, a scan reads only when it must."""

    def setUp(self) -> None:
        super().setUp()
        self.now = 100.0
        self.mine = tuple(sorted(self.rings.owned_partitions()))
        self.token: list[Any] = [0, 0, self.mine]
        self.actions = power_actions.PowerActions(
            self.db, {"scripted": self.driver, "fake": self.fake},
            self.rings, self.pool, timeout=5.0,
            requests=lambda: (self.token[0], self.token[1], self.token[2]),
            monotonic=lambda: self.now)
        self.reads = 0
        real = self.db.node_uuids

        def counted(*args: Any, **kwargs: Any) -> list[str]:
            self.reads += 1
            return real(*args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(
            self.db, "node_uuids", side_effect=counted))

    def scan(self, feeds: int = 1, requests: int = 0) -> int:
        """One scan after ``feeds`` feed reads that saw ``requests``."""
        self.token[0] += feeds
        self.token[1] += requests
        self.now += 1.0
        return self.actions.scan()

    def test_no_read_while_the_feed_shows_no_request(self) -> None:
        self.scan()
        self.assertEqual(1, self.reads)
        for _ in range(5):
            self.scan()
        self.assertEqual(1, self.reads)

    def test_a_request_seen_by_the_feed_is_read_and_applied(self) -> None:
        self.scan()
        uuid = self.node("a", target=states.POWER_ON)
        self.assertEqual(1, self.scan(requests=1))
        self.drain()
        self.assertEqual(2, self.reads)
        self.assertIsNone(self.db.get_node(uuid).target_power_state)

    def test_reads_again_without_a_feed_since(self) -> None:
        self.scan()
        self.scan(feeds=0)
        self.assertEqual(2, self.reads)

    def test_reads_while_a_request_is_pending(self) -> None:
        # A request the pool had no room for stays pending: looked for
        # again at the next scan.
        self.node("a", target=states.POWER_ON)
        self.useFixture(fixtures.MockPatchObject(
            self.actions, "submit",
            side_effect=exceptions.NoFreeWorker(size=1)))
        self.scan()
        self.scan()
        self.assertEqual(2, self.reads)

    def test_a_reserved_nodes_request_is_read_once_released(self) -> None:
        # Its release is a write: the next feed returns the request.
        uuid = self.node("a", target=states.POWER_ON)
        self.db.reserve_node(uuid, "other:0")
        self.scan()
        self.scan()
        self.assertEqual(1, self.reads)
        self.db.release_node(uuid, "other:0")
        self.assertEqual(1, self.scan(requests=1))
        self.drain()
        self.assertEqual(2, self.reads)

    def test_reads_when_partitions_differ_and_at_least_every_while(
            self) -> None:
        self.scan()
        self.token[2] = self.mine[1:]
        self.scan()
        self.assertEqual(2, self.reads)
        self.token[2] = self.mine
        self.scan()
        self.scan()
        self.assertEqual(3, self.reads)
        self.now += power_actions.QUIET_SCANS_FOR
        self.scan()
        self.assertEqual(4, self.reads)

    def test_without_a_feed_every_scan_reads(self) -> None:
        actions = self.make_actions()
        for _ in range(3):
            actions.scan()
        self.assertEqual(3, self.reads)

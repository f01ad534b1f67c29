# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.service: periodics, node provider, the worker."""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import pickle
import threading
import time
from typing import Any
from unittest import mock

import fixtures
from oslo_db import exception as db_exc
from oslo_service import service as oslo_service
import sqlalchemy as sa

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.db import api as db_api
from conductor.db import migration
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor.drivers import loader
from conductor.executor import bmc
from conductor.executor import pool as worker_pool
from conductor import ownership
from conductor import periodics
from conductor import power_actions
from conductor import power_sync
from conductor import service
from conductor import states
from tests import base


class DbTestCase(base.TestCase):
    """A migrated SQLite file named by ``[database] connection``."""

    def setUp(self) -> None:
        super().setUp()
        self.use_small_rings()
        self.db_url = "sqlite:///" + os.path.join(self.conf.state_path,
                                                  "conductor.sqlite")
        self.config(connection=self.db_url, group="database")
        self.db = db_api.Connection.create(self.db_url)
        self.addCleanup(self.db.dispose)
        migration.upgrade(self.db.engine)


class TestConductorPeriodics(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.sync = mock.create_autospec(power_sync.PowerSync,
                                         instance=True)
        self.actions = mock.create_autospec(power_actions.PowerActions,
                                            instance=True)
        self.rings = mock.create_autospec(ownership.Rings, instance=True)
        self.own = service.ConductorPeriodics(self.sync, self.actions,
                                              self.rings, self.conf)

    def test_each_task_calls_its_component(self) -> None:
        self.own.sync_power_states()
        self.sync.sync.assert_called_once_with()
        self.own.recover_power_failures()
        self.sync.recover.assert_called_once_with()
        self.own.apply_pending_actions()
        self.actions.scan.assert_called_once_with()
        self.own.refresh_ownership()
        # Not again if power sync or the scan read them lately.
        self.rings.maybe_update.assert_called_once_with(max_age=4.5)
        self.rings.update.assert_not_called()
        self.assertEqual(1, self.sync.sync.call_count)

    def specs(self) -> dict[str, periodics.PeriodicSpec]:
        return {spec.method: spec for spec in periodics.collect(self.own)}

    def test_spacings_are_read_from_config_at_collect_time(self) -> None:
        self.config(sync_power_state_interval=7,
                    power_failure_recovery_interval=120,
                    pending_action_interval=0.25,
                    hash_ring_reset_interval=9, group="conductor")
        specs = self.specs()
        self.assertEqual(
            {"sync_power_states": (1.0, True, True),
             "recover_power_failures": (120.0, True, False),
             "apply_pending_actions": (0.25, True, True),
             "refresh_ownership": (9.0, True, False)},
            {name: (spec.spacing, spec.enabled, spec.run_immediately)
             for name, spec in specs.items()})
        self.config(sync_power_state_interval=300, group="conductor")
        self.assertEqual(5.0, self.specs()["sync_power_states"].spacing)

    def test_zero_interval_disables_a_task(self) -> None:
        self.config(sync_power_state_interval=0,
                    power_failure_recovery_interval=-1, group="conductor")
        specs = self.specs()
        self.assertFalse(specs["sync_power_states"].enabled)
        self.assertFalse(specs["recover_power_failures"].enabled)
        self.assertTrue(specs["apply_pending_actions"].enabled)

    def test_specs_call_the_bound_methods(self) -> None:
        self.config(sync_power_state_interval=5, group="conductor")
        self.specs()["sync_power_states"].func()
        self.sync.sync.assert_called_once_with()


class TestNodeProvider(DbTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db.register_conductor("h", 0, ["fake"])
        self.rings = ownership.Rings(self.db, "h", 0, heartbeat_timeout=60,
                                     reset_interval=15)
        self.rings.refresh()
        self.provider = service._NodeProvider(self.db, self.rings, {}, 5.0)

    def add(self, name: str, driver: str = "fake", **values: Any) -> str:
        uuid = self.db.create_node({"driver": driver, "name": name,
                                    "driver_info": {"k": name}}).uuid
        if values:
            self.db.update_node(uuid, values)
        return uuid

    def names(self, filters: dict[str, Any] | None = None,
              limit: int | None = None) -> list[str | None]:
        return [node.name for node in
                self.provider.iter_owned_nodes(filters, limit)]

    def test_filters_limit_and_reservations(self) -> None:
        self.add("a")
        self.add("b", driver="ipmi")
        self.add("c", maintenance=True)
        self.add("d", power_state=states.POWER_ON)
        busy = self.add("e")
        self.db.reserve_node(busy, "h:1")
        self.assertEqual(["a", "b", "c", "d"], self.names())
        self.assertEqual(["a", "c", "d"], self.names({"driver": "fake"}))
        self.assertEqual(["c"], self.names({"maintenance": True}))
        self.assertEqual(["a", "d"], self.names({"driver": "fake",
                                                 "maintenance": False}))
        self.assertEqual(["d"], self.names({"power_state": states.POWER_ON}))
        self.assertEqual(["a", "b"], self.names(None, limit=2))
        self.assertEqual(["a"], self.names({"driver": "fake"}, limit=1))
        self.assertEqual([], self.names({"name": "e"}))

    def test_yields_driver_nodes(self) -> None:
        uuid = self.add("a", power_state=states.POWER_OFF)
        nodes = list(self.provider.iter_owned_nodes(None, None))
        self.assertEqual([driver_base.DriverNode(
            uuid, "a", "fake", {"k": "a"}, states.POWER_OFF)], nodes)

    def test_skips_nodes_owned_by_another_worker(self) -> None:
        self.db.register_conductor("h", 1, ["fake"])
        self.rings.refresh()
        uuids = [self.add("n%02d" % i) for i in range(20)]
        mine = self.rings.owned(uuids)
        self.assertTrue(0 < len(mine) < 20)
        self.assertEqual(mine, [node.uuid for node in
                                self.provider.iter_owned_nodes(None, None)])
        # The limit counts owned nodes only.
        self.assertEqual(mine[:2], [node.uuid for node in
                                    self.provider.iter_owned_nodes(None, 2)])

    def test_reads_only_the_rows_of_its_partitions(self) -> None:
        self.db.register_conductor("h", 1, ["fake"])
        self.rings.refresh()
        for i in range(20):
            self.add("n%02d" % i)
        with mock.patch.object(self.db, "list_nodes", autospec=True,
                               side_effect=self.db.list_nodes) as listed:
            list(self.provider.iter_owned_nodes(None, None))
        self.assertEqual(sorted(self.rings.owned_partitions()),
                         listed.call_args.kwargs["partitions"])
        self.assertLess(len(listed.call_args.kwargs["partitions"]),
                        0.7 * ownership.PARTITIONS)

    def test_reserved_holds_the_lock_for_the_block(self) -> None:
        uuid = self.add("a")
        with self.provider.reserved(uuid, "testing") as node:
            self.assertEqual((uuid, "a"), (node.uuid, node.name))
            self.assertEqual("h:0", self.db.get_node(uuid).reservation)
        self.assertIsNone(self.db.get_node(uuid).reservation)

    def test_reserved_releases_when_the_block_raises(self) -> None:
        uuid = self.add("a")

        def fail() -> None:
            with self.provider.reserved(uuid, "testing"):
                raise ValueError("task failed")

        self.assertRaises(ValueError, fail)
        self.assertIsNone(self.db.get_node(uuid).reservation)

    def test_reserved_by_another_holder_is_locked(self) -> None:
        uuid = self.add("a")
        self.db.reserve_node(uuid, "h:1")

        def enter() -> None:
            with self.provider.reserved(uuid, "testing"):
                pass

        self.assertRaises(exceptions.NodeLocked, enter)
        self.assertEqual("h:1", self.db.get_node(uuid).reservation)


class ServiceTestCase(DbTestCase):
    """Options for an in-process worker with short intervals."""

    def setUp(self) -> None:
        super().setUp()
        # NOTE: ProcessLauncher registers these in the real service.
        for group, opts in oslo_service.list_opts():
            self.conf.register_opts(opts, group=group)
        self.useFixture(fixtures.MockPatchObject(conductor_log, "_identity",
                                                 "-"))
        self.config(host="test-host", enabled_drivers=["fake"],
                    graceful_shutdown_timeout=3)
        self.config(workers_pool_size=6, heartbeat_interval=1,
                    heartbeat_timeout=30, hash_ring_reset_interval=15,
                    sync_power_state_interval=60,
                    sync_power_state_workers=4,
                    power_state_sync_max_retries=2,
                    power_failure_recovery_interval=0,
                    force_power_state_during_sync=False,
                    power_state_timeout=5.0, pending_action_interval=0.1,
                    group="conductor")


class TestWorkerSettings(ServiceTestCase):

    def test_from_conf(self) -> None:
        expected = service.WorkerSettings(
            host="test-host", database_url=self.db_url,
            db_max_retries=self.conf.database.max_retries,
            db_retry_interval=self.conf.database.retry_interval,
            enabled_drivers=("fake",), pool_size=6, max_abandoned_calls=100,
            heartbeat_interval=1,
            heartbeat_timeout=30, hash_ring_reset_interval=15,
            graceful_shutdown_timeout=3,
            sync=power_sync.SyncSettings(workers=4, timeout=5.0,
                                         max_retries=2, force=False,
                                         interval=60,
                                         recovery_interval=0),
            # One sync interval, one action scan, the margin.
            drain_handover=60 + 0.1 + service.DRAIN_MARGIN,
            conductor_cleanup_age=7 * 24 * 3600)
        self.assertEqual(expected,
                         service.WorkerSettings.from_conf(self.conf))

    def test_zero_graceful_timeout_is_bounded(self) -> None:
        self.config(graceful_shutdown_timeout=0)
        self.assertEqual(
            60, service.WorkerSettings.from_conf(
                self.conf).graceful_shutdown_timeout)


class TestPickle(base.TestCase):

    def test_round_trip_keeps_only_plain_values(self) -> None:
        svc = service.ConductorService("h", 3, self.conf)
        # Runtime state that cannot be pickled is dropped.
        svc._stopped = threading.Event()
        svc._threads.append(threading.Thread(target=lambda: None))
        self.assertEqual({"host", "worker_id", "_conf", "start_extra",
                          "_master_pid", "workers"},
                         set(svc.__getstate__()))
        copy = pickle.loads(pickle.dumps(svc))
        self.assertEqual(("h", 3, "h:3"),
                         (copy.host, copy.worker_id, copy.holder))
        self.assertIs(self.conf, copy._conf)
        self.assertIsNone(copy._stopped)
        self.assertEqual([], copy._threads)
        self.assertIsNone(copy.db)
        self.assertIsNone(copy.pool)
        self.assertEqual({}, copy.status())
        copy.stop()     # never started: nothing to do
        copy.wait()


class TestStartStop(ServiceTestCase):

    def service(self) -> service.ConductorService:
        # NOTE: every node is due within the first (2 s) interval.
        self.config(sync_power_state_interval=2, group="conductor")
        svc = service.ConductorService("test-host", 0, self.conf)
        self.addCleanup(svc.stop)
        return svc

    def node(self, name: str, **info: Any) -> str:
        return self.db.create_node({"driver": "fake", "name": name,
                                    "driver_info": info}).uuid

    def powered(self) -> dict[str | None, str | None]:
        return {node.name: node.power_state
                for node in self.db.list_nodes()}

    def test_start_sync_act_and_stop(self) -> None:
        self.node("on", fake_power_state=states.POWER_ON)
        self.node("off")
        left_over = self.node("left-over")
        self.db.reserve_node(left_over, "test-host:0")   # a previous life
        svc = self.service()
        frozen = gc.get_freeze_count()
        started = time.monotonic()
        svc.start()
        start_seconds = time.monotonic() - started
        # What the started worker holds is kept out of the collector.
        self.assertGreater(gc.get_freeze_count(), frozen)
        # Its SQLite connections are kept for reuse, not opened per use.
        assert svc.db is not None
        self.assertIsInstance(svc.db.engine.pool, sa.pool.QueuePool)
        [row] = self.db.list_conductors()
        self.assertEqual(("test-host", 0, os.getpid(), ["fake"], True),
                         (row.host, row.worker_id, row.pid, row.drivers,
                          row.online))
        # Every node is polled within the first interval.
        self.assertTrue(base.wait_until(
            lambda: None not in self.powered().values()))
        self.assertEqual({"on": states.POWER_ON, "off": states.POWER_OFF,
                          "left-over": states.POWER_OFF}, self.powered())
        self.assertTrue(base.wait_until(
            lambda: "sync" in svc.status()["sweeps"]))
        # A requested action is applied without RPC.
        self.db.request_power_state("off", states.POWER_ON)
        self.assertTrue(base.wait_until(
            lambda: self.db.get_node("off").target_power_state is None))
        self.assertEqual(states.POWER_ON, self.db.get_node("off").power_state)
        status = svc.status()
        self.assertEqual(6, status["pool"]["size"])
        self.assertIn("ConductorPeriodics.sync_power_states",
                      [task["name"] for task in status["periodics"]])
        stopping = time.monotonic()
        svc.stop()
        self.assertLess(time.monotonic() - stopping, 3.0)
        self.assertLess(start_seconds, 3.0)
        [row] = self.db.list_conductors()
        self.assertFalse(row.online)
        self.assertEqual([], [n.uuid for n in self.db.list_nodes()
                              if n.reservation is not None])
        svc.wait()      # returns at once once stopped
        svc.stop()      # idempotent

    def test_power_sync_spaces_calls_to_one_bmc(self) -> None:
        self.addCleanup(bmc.reset)
        self.config(bmc_min_interval=0.1, group="conductor")
        log = os.path.join(self.conf.state_path, "timing.jsonl")
        for index in range(6):
            self.node("shared-%d" % index, fake_bmc_address="chassis",
                      fake_timing_log=log)
        # NOTE: all overdue, so that the first run reads them at once.
        with self.db.engine.begin() as conn:
            conn.execute(sa.update(db_api.models.nodes).values(
                power_checked_at=datetime.datetime(2000, 1, 1)))
        svc = self.service()
        svc.start()

        def reads() -> list[dict[str, Any]]:
            if not os.path.exists(log):
                return []
            with open(log) as stream:
                return sorted((json.loads(line) for line in stream),
                              key=lambda entry: entry["start"])

        # The first run reads the six nodes through its lanes at once;
        # the worker's gate serialises and spaces them.
        self.assertTrue(base.wait_until(lambda: len(reads()) >= 6))
        calls = reads()[:6]
        for before, after in zip(calls, calls[1:]):
            self.assertGreaterEqual(after["start"] - before["end"],
                                    0.1 - 0.002)
        gate = svc.status()["bmc"]
        self.assertEqual(0.1, gate["min_interval"])
        self.assertGreaterEqual(gate["waited"], 5)

    def test_stop_is_bounded_with_a_slow_bmc(self) -> None:
        self.config(power_state_timeout=0.2, sync_power_state_workers=1,
                    group="conductor")
        for index in range(10):
            self.node("slow%d" % index, fake_latency_ms=600000)
        reading = threading.Event()
        real_get = fake.FakePower.get_power_state

        def get_power_state(power: fake.FakePower,
                            node: driver_base.DriverNode) -> str:
            reading.set()
            return real_get(power, node)

        svc = self.service()
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        with mock.patch.object(fake.FakePower, "get_power_state",
                               autospec=True, side_effect=get_power_state):
            svc.start()
            # The sweep is under way: a read is failing slowly.
            self.assertTrue(reading.wait(base.WAIT))
            stopping = time.monotonic()
            svc.stop()
        # The lane ends after the read in flight (0.2 s deadline), within
        # the bound the stop gives the periodic tasks and the pool: had
        # it not, the stop would say so.
        self.assertNotIn("did not all finish in time", logger.output)
        self.assertNotIn("Pool threads still busy", logger.output)
        self.assertLess(time.monotonic() - stopping, 5)
        self.assertFalse(self.db.list_conductors()[0].online)
        self.assertEqual([], [n.uuid for n in self.db.list_nodes()
                              if n.reservation is not None])

    def held_beat(self, offline_lets_go: bool = True
                  ) -> tuple[threading.Event, threading.Event, list[str]]:
        """The worker's first heartbeat write waits to be let go.

        Returns the Event set when that beat starts, the Event that lets
        it go (also set by the first offline write when
        ``offline_lets_go``), and the writes in order ("beat written",
        "beat refused", "offline").
        """
        events: list[str] = []
        in_beat = threading.Event()
        let_go = threading.Event()
        real_beat = db_api.Connection.heartbeat
        real_offline = db_api.Connection.set_offline

        def heartbeat(conn: db_api.Connection, *args: Any,
                      **kwargs: Any) -> bool:
            if not in_beat.is_set():
                in_beat.set()
                let_go.wait(base.WAIT)
            written = real_beat(conn, *args, **kwargs)
            events.append("beat written" if written else "beat refused")
            return written

        def set_offline(conn: db_api.Connection, *args: Any) -> None:
            real_offline(conn, *args)
            events.append("offline")
            if offline_lets_go:
                let_go.set()

        self.useFixture(fixtures.MockPatchObject(
            db_api.Connection, "heartbeat", autospec=True,
            side_effect=heartbeat))
        self.useFixture(fixtures.MockPatchObject(
            db_api.Connection, "set_offline", autospec=True,
            side_effect=set_offline))
        return in_beat, let_go, events

    def test_a_heartbeat_under_way_cannot_undo_the_stop(self) -> None:
        # A beat that began before the stop is written first: the worker
        # is marked offline after it, so that its partitions go to the
        # others at once instead of after heartbeat_timeout.
        self.config(graceful_shutdown_timeout=10)
        self.config(heartbeat_interval=3, group="conductor")
        in_beat, let_go, events = self.held_beat()
        svc = self.service()
        waiting = threading.Event()

        class Lock:
            """The beat lock, telling when the stop waits for it."""

            def __init__(self) -> None:
                self._lock = threading.Lock()

            def acquire(self, timeout: float = -1) -> bool:
                waiting.set()
                return self._lock.acquire(timeout=timeout)

            def release(self) -> None:
                self._lock.release()

            def __enter__(self) -> bool:
                return self._lock.acquire()

            def __exit__(self, *exc: Any) -> None:
                self._lock.release()

        svc._beat_lock = Lock()  # type: ignore[assignment]
        svc.start()
        self.assertTrue(in_beat.wait(base.WAIT))
        stopping = threading.Thread(target=svc.stop)
        stopping.start()
        self.assertTrue(waiting.wait(base.WAIT),
                        "the stop did not wait for the beat under way")
        self.assertEqual([], events)
        let_go.set()
        stopping.join(base.WAIT)
        self.assertFalse(stopping.is_alive())
        self.assertEqual(["beat written", "offline"], events[:2])
        self.assertNotIn("beat written", events[2:])
        self.assertFalse(self.db.list_conductors()[0].online)

    def test_a_hung_heartbeat_does_not_hold_the_stop(self) -> None:
        # The stop waits at most a heartbeat interval (1 s here) for a
        # beat under way, then marks the worker offline, and again once
        # the heartbeat thread ended: the drain keeps its time.
        self.config(graceful_shutdown_timeout=10)
        in_beat, _, events = self.held_beat()
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        svc = self.service()
        svc.start()
        self.assertTrue(in_beat.wait(base.WAIT))
        stopping = time.monotonic()
        svc.stop()
        self.assertLess(time.monotonic() - stopping, 5.0)
        self.assertIn("A heartbeat of test-host:0 is still being written",
                      logger.output)
        self.assertEqual(["offline", "beat refused", "offline"], events)
        self.assertFalse(self.db.list_conductors()[0].online)

    def test_a_heartbeat_landing_after_the_stop_is_refused(self) -> None:
        # A beat hung past the whole stop lands after both offline
        # writes: the database refuses it, as it began before them.
        self.config(graceful_shutdown_timeout=2)
        in_beat, let_go, events = self.held_beat(offline_lets_go=False)
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        svc = self.service()
        svc.start()
        self.assertTrue(in_beat.wait(base.WAIT))
        svc.stop()
        self.assertEqual(["offline", "offline"], events)
        let_go.set()
        self.assertTrue(base.wait_until(lambda: len(events) == 3))
        self.assertEqual("beat refused", events[2])
        [record] = self.db.list_conductors()
        self.assertFalse(record.online)
        self.assertTrue(base.wait_until(
            lambda: "was not written: the worker was marked offline, or "
            "registered by another process, after it began"
            in logger.output))

    def test_stop_is_bounded_with_a_hung_driver_call(self) -> None:
        entered, release = threading.Event(), threading.Event()

        class HungPower(fake.FakePower):
            def set_power_state(self, node: driver_base.DriverNode,
                                target: str) -> None:
                entered.set()
                release.wait(base.WAIT)      # ignores the deadline

        driver = fake.FakeDriver()
        driver.power = HungPower()
        uuid = self.node("stuck")
        self.db.request_power_state(uuid, states.POWER_ON)
        svc = self.service()
        with mock.patch.object(loader, "load", autospec=True,
                               return_value={"fake": driver}):
            svc.start()
        self.assertTrue(entered.wait(base.WAIT))
        self.assertEqual("test-host:0", self.db.get_node(uuid).reservation)
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        stopping = time.monotonic()
        svc.stop()
        elapsed = time.monotonic() - stopping
        # The wait is said, not silent.
        self.assertRegex(logger.output,
                         r"Worker 0 of test-host stops within 1 s; \d+ pool "
                         r"thread\(s\) are busy \(driver calls or periodic "
                         r"tasks\): a driver call in flight ends by its "
                         r"deadline")
        # Bounded by graceful_shutdown_timeout (3 s; 1 s for the pool).
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 3.0)
        # The call may still reach the BMC: the node stays reserved, its
        # action claimed, for the next owner to resolve.
        node = self.db.get_node(uuid)
        self.assertEqual(("test-host:0", states.POWER_ON),
                         (node.reservation, node.target_power_state))
        self.assertIsNotNone(node.power_action_claim)
        self.assertFalse(self.db.list_conductors()[0].online)
        # Let the stuck call end before the database goes away.
        release.set()
        pool = svc.pool
        assert pool is not None
        self.assertTrue(base.wait_until(lambda: pool.busy == 0))

    def test_stop_leaves_a_call_in_progress_to_the_next_owner(self) -> None:
        entered, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)
        calls: list[str] = []

        class BlockingPower(fake.FakePower):
            def set_power_state(self, node: driver_base.DriverNode,
                                target: str) -> None:
                calls.append(target)
                with self._lock:
                    self._hardware[node.uuid] = target  # the BMC took it
                entered.set()
                release.wait(base.WAIT)  # past graceful_shutdown_timeout

        driver = fake.FakeDriver()
        driver.power = BlockingPower()
        uuid = self.node("slow")
        idle = self.node("idle")
        self.db.request_power_state(uuid, states.POWER_ON)
        first = service.ConductorService("test-host", 0, self.conf)
        with mock.patch.object(loader, "load", autospec=True,
                               return_value={"fake": driver}):
            first.start()
            self.assertTrue(entered.wait(base.WAIT))
            # A reservation with no call behind it is still released.
            self.db.reserve_node(idle, "test-host:0")
            first.stop()
            node = self.db.get_node(uuid)
            self.assertEqual(("test-host:0", states.POWER_ON),
                             (node.reservation, node.target_power_state))
            self.assertIsNotNone(node.power_action_claim)
            self.assertIsNone(self.db.get_node(idle).reservation)
            # The restarted worker releases it and reads the BMC first:
            # the power on is in effect, so it is recorded, not repeated.
            second = self.service()
            second.start()
            self.assertTrue(base.wait_until(
                lambda: self.db.get_node(uuid).target_power_state is None))
            second.stop()
        node = self.db.get_node(uuid)
        self.assertEqual((states.POWER_ON, None, None, None),
                         (node.power_state, node.power_action_claim,
                          node.last_error, node.reservation))
        self.assertEqual([states.POWER_ON], calls)
        release.set()
        pool = first.pool
        assert pool is not None
        self.assertTrue(base.wait_until(lambda: pool.busy == 0))
        self.assertEqual([states.POWER_ON], calls)

    def test_a_failed_release_is_retried_without_a_restart(self) -> None:
        uuid = self.node("a")
        attempts = [0]
        real = db_api.Connection.release_node

        def release(conn: db_api.Connection, node_uuid: str,
                    holder: str, epoch: int | None = None) -> bool:
            if node_uuid == uuid:
                attempts[0] += 1
                if attempts[0] <= 3:
                    raise db_exc.DBConnectionError("database went away")
            return real(conn, node_uuid, holder, epoch)

        self.useFixture(fixtures.MockPatchObject(
            db_api.Connection, "release_node", autospec=True,
            side_effect=release))
        svc = self.service()
        svc.start()
        self.db.request_power_state(uuid, states.POWER_ON)
        self.assertTrue(base.wait_until(
            lambda: self.db.get_node(uuid).target_power_state is None))
        self.assertEqual(states.POWER_ON, self.db.get_node(uuid).power_state)
        # The worker retries (on its heartbeats) until the release works;
        # its bookkeeping follows the database write.
        self.assertTrue(base.wait_until(
            lambda: self.db.get_node(uuid).reservation is None
            and svc.status()["reservations"] == {"in_flight": [],
                                                 "release_pending": []}))
        self.assertEqual(4, attempts[0])


class TestDrainLoop(ServiceTestCase):
    """The drain thread, driven with a fast poll and a fake kill."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.MockPatchObject(service, "DRAIN_POLL",
                                                 0.01))
        self.kill = self.useFixture(fixtures.MockPatchObject(
            service.os, "kill", autospec=True)).mock
        for host, worker in (("test-host", 0), ("test-host", 1),
                             ("other", 0)):
            self.db.register_conductor(host, worker, ["fake"])

    def run_loop(self, worker_id: int, handover: float = 0.0
                 ) -> tuple[service.ConductorService, threading.Event,
                            threading.Thread]:
        svc = service.ConductorService("test-host", worker_id, self.conf)
        svc._master_pid = os.getppid()
        rings = self.rings = ownership.Rings(
            self.db, "test-host", worker_id, heartbeat_timeout=30,
            reset_interval=15)
        rt: Any = mock.Mock(
            db=self.db, rings=rings,
            settings=mock.Mock(drain_handover=handover,
                               heartbeat_interval=0.01))
        stopped = threading.Event()
        thread = threading.Thread(target=svc._drain_loop,
                                  args=(rt, stopped))
        thread.start()
        self.addCleanup(thread.join, base.WAIT)
        self.addCleanup(stopped.set)
        return svc, stopped, thread

    def test_sigusr1_marks_the_host_then_worker_0_stops_the_master(
            self) -> None:
        svc, stopped, thread = self.run_loop(0)
        svc.request_drain()
        thread.join(base.WAIT)
        self.assertFalse(thread.is_alive())
        self.kill.assert_called_once_with(os.getppid(), service.signal.SIGTERM)
        self.assertEqual({"test-host:0": True, "test-host:1": True,
                          "other:0": False},
                         {r.holder: r.draining
                          for r in self.db.list_conductors()})

    def test_a_request_and_the_handover_end_wake_the_thread(self) -> None:
        # NOTE: the thread would sleep an hour between looks: only the
        # request's wake and the handover's end let it act in time.
        self.useFixture(fixtures.MockPatchObject(service, "DRAIN_POLL",
                                                 3600.0))
        svc, stopped, thread = self.run_loop(0, handover=0.3)
        svc.request_drain()
        thread.join(base.WAIT)
        self.assertFalse(thread.is_alive())
        self.kill.assert_called_once_with(os.getppid(), service.signal.SIGTERM)

    def test_other_workers_never_stop_the_master(self) -> None:
        self.announced_then_no_kill(worker_id=1, handover=0.0)

    def test_worker_0_waits_for_the_handover(self) -> None:
        self.announced_then_no_kill(worker_id=0, handover=3600.0)

    def announced_then_no_kill(self, worker_id: int,
                               handover: float) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        svc, stopped, thread = self.run_loop(worker_id, handover)
        self.db.set_draining("test-host")      # conductor-manage drain
        self.rings.refresh()                   # as the periodic tasks do
        self.assertTrue(base.wait_until(
            lambda: "Host test-host is draining" in logger.output))
        # The announcement and the handover check are one iteration.
        self.assertTrue(thread.is_alive())
        stopped.set()
        thread.join(base.WAIT)
        self.kill.assert_not_called()
        self.assertIn("worker %d works on for %gs" % (worker_id, handover),
                      logger.output)


class TestDegraded(ServiceTestCase):

    def test_a_degraded_pool_takes_the_worker_offline(self) -> None:
        svc = service.ConductorService("test-host", 0, self.conf)
        self.addCleanup(svc.stop)
        logger = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        degraded = mock.PropertyMock(return_value=False)
        with mock.patch.object(worker_pool.WorkerPool, "degraded",
                               new_callable=lambda: degraded):
            svc.start()

            def online() -> bool:
                return self.db.list_conductors()[0].online
            self.assertTrue(online())
            degraded.return_value = True
            # It heartbeats as offline: its nodes go to the others.
            self.assertTrue(base.wait_until(lambda: not online()))
            self.assertIn("Worker test-host:0 is degraded", logger.output)
            self.assertEqual("degraded", svc.status()["health"])
            degraded.return_value = False
            self.assertTrue(base.wait_until(online))
            self.assertIn("Worker test-host:0 is healthy again",
                          logger.output)
            self.assertEqual("healthy", svc.status()["health"])

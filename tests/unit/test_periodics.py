# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.periodics: decorators, collection and the runner."""

from __future__ import annotations

import contextlib
import logging
import pickle
import threading
import time
from typing import Any, Callable, Iterator, Mapping
from unittest import mock
import warnings

import fixtures
from futurist import periodics as futurist_periodics

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import exceptions
from conductor.drivers import base as driver_base
from conductor.executor import pool as pool_mod
from conductor.executor import runner as runner_mod
from conductor import periodics
from tests import base
from tests import fakes


def make_node(index: int, driver: str = "fake") -> driver_base.DriverNode:
    return fakes.driver_node(driver, name="node-%d" % index,
                             uuid="uuid-%d" % index)


class FakeProvider:
    """A NodeProvider over a list, with locked and vanished nodes."""

    def __init__(self, nodes: list[driver_base.DriverNode],
                 locked: tuple[str, ...] = (),
                 gone: tuple[str, ...] = ()) -> None:
        self.nodes = nodes
        self.locked = set(locked)
        self.gone = set(gone)
        self.lock = threading.Lock()
        self.iterations: list[tuple[Any, Any]] = []
        self.reservations: list[tuple[str, str]] = []
        self.fail_listing: Exception | None = None

    def iter_owned_nodes(self, filters: Mapping[str, Any] | None,
                         limit: int | None
                         ) -> Iterator[driver_base.DriverNode]:
        with self.lock:
            self.iterations.append((filters, limit))
        if self.fail_listing is not None:
            raise self.fail_listing
        count = 0
        for node in self.nodes:
            if filters and any(getattr(node, key) != value
                               for key, value in filters.items()):
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield node

    @contextlib.contextmanager
    def reserved(self, node_uuid: str,
                 purpose: str) -> Iterator[driver_base.DriverNode]:
        if node_uuid in self.gone:
            raise exceptions.NodeNotFound(node=node_uuid)
        if node_uuid in self.locked:
            raise exceptions.NodeLocked(node=node_uuid, holder="other")
        with self.lock:
            self.reservations.append((node_uuid, purpose))
        yield next(n for n in self.nodes if n.uuid == node_uuid)


class Ticker:
    """A periodic task as frequent as the tests' own (spacing 0.01 s).

    Its runs are the positive signal that spacings passed, with the loop
    scheduling meanwhile: a test waits for them instead of a fixed time.
    """

    def __init__(self) -> None:
        self.runs = fakes.Recorder()

    @periodics.periodic(spacing=0.01, run_immediately=True)
    def tick(self) -> None:
        self.runs()

    def wait_more(self, count: int) -> bool:
        """Wait (bounded) for ``count`` runs beginning after this call."""
        return self.runs.wait_calls(self.runs.entered + count)


class PeriodicsTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.recorders: list[fakes.Recorder] = []

    def make_pool(self, size: int = 4) -> pool_mod.WorkerPool:
        return fakes.start_pool(self, size, "tw")

    def make_runner(self, pool: pool_mod.WorkerPool | None = None,
                    provider: Any = None,
                    **kwargs: Any) -> runner_mod.PeriodicRunner:
        runner = runner_mod.PeriodicRunner(pool or self.make_pool(),
                                           provider, **kwargs)

        def cleanup() -> None:
            for rec in self.recorders:
                rec.release.set()
            runner.stop(base.WAIT)

        self.addCleanup(cleanup)
        return runner

    def recorder(self) -> fakes.Recorder:
        rec = fakes.Recorder()
        self.recorders.append(rec)
        self.addCleanup(rec.release.set)
        return rec

    def task_stats(self, runner: runner_mod.PeriodicRunner,
                   name: str) -> dict[str, Any]:
        rows = [r for r in runner.stats() if r["name"] == name]
        self.assertEqual(1, len(rows), str(runner.stats()))
        return rows[0]


class TestDecorators(PeriodicsTestCase):

    def test_nothing_resolved_at_decoration(self) -> None:
        spacing = mock.Mock(return_value=5)
        enabled = mock.Mock(return_value=True)

        class Manager:
            @periodics.periodic(spacing=spacing, enabled=enabled)
            def tick(self) -> str:
                return "ticked"

        spacing.assert_not_called()
        enabled.assert_not_called()
        # The method is left callable as it was.
        self.assertEqual("ticked", Manager().tick())
        specs = periodics.collect(Manager())
        spacing.assert_called_once_with()
        enabled.assert_called_once_with()
        self.assertEqual(5.0, specs[0].spacing)
        self.assertTrue(specs[0].enabled)

    def test_options_read_late(self) -> None:
        conf = self.conf

        class Manager:
            @periodics.periodic(
                spacing=lambda: conf.conductor.sync_power_state_interval)
            def sync(self) -> None:
                pass

        self.config(sync_power_state_interval=7, group="conductor")
        self.assertEqual(7.0, periodics.collect(Manager())[0].spacing)

    def test_periodic_rejects_bad_arguments(self) -> None:
        self.assertRaises(TypeError, periodics.periodic, "5")
        self.assertRaises(TypeError, periodics.periodic, True)
        self.assertRaises(TypeError, periodics.periodic, 1, enabled="yes")
        self.assertRaises(TypeError, periodics.periodic, 1,
                          run_immediately=1)

    def test_node_periodic_rejects_bad_arguments(self) -> None:
        bad: list[dict[str, Any]] = [
            {"purpose": ""},
            {"purpose": "p", "filters": [("driver", "x")]},
            {"purpose": "p", "predicate": 3},
            {"purpose": "p", "limit": 0},
            {"purpose": "p", "concurrency": -1},
        ]
        for kwargs in bad:
            self.assertRaises(TypeError, periodics.node_periodic,
                              spacing=1, **kwargs)

    def test_driver_periodic_task_warns_once_per_method(self) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            class OldDriver:
                @periodics.driver_periodic_task(spacing=3)
                def poll(self) -> None:
                    pass

                @periodics.driver_periodic_task(spacing=4,
                                                run_immediately=True)
                def refresh(self) -> None:
                    pass

            specs = periodics.collect(OldDriver())
            OldDriver().poll()

        self.assertEqual(2, len(caught),
                         str([str(w.message) for w in caught]))
        for warning in caught:
            self.assertIs(DeprecationWarning, warning.category)
            # stacklevel=2: the warning points at the decorated method.
            self.assertEqual(__file__, warning.filename)
        self.assertIn("OldDriver.poll", str(caught[0].message))
        self.assertIn("OldDriver.refresh", str(caught[1].message))
        self.assertEqual([("OldDriver.poll", 3.0, False),
                          ("OldDriver.refresh", 4.0, True)],
                         [(s.name, s.spacing, s.run_immediately)
                          for s in specs])


class Power:
    @periodics.periodic(spacing=10)
    def refresh(self) -> None:
        pass

    @periodics.node_periodic(purpose="checking clocks", spacing=20,
                             filters={"power_state": None})
    def check(self, task: periodics.NodeTask) -> None:
        pass


class Driver:
    def __init__(self) -> None:
        self.power = Power()

    @periodics.periodic(spacing=30)
    def poll(self) -> None:
        pass


class TestCollect(PeriodicsTestCase):

    def test_names_and_once_per_class(self) -> None:
        class Manager:
            @periodics.periodic(spacing=1)
            def b_task(self) -> None:
                pass

            @periodics.periodic(spacing=2)
            def a_task(self) -> None:
                pass

            def not_a_task(self) -> None:
                pass

        first, second = Manager(), Manager()
        specs = periodics.collect(first, second, Driver())
        self.assertEqual(["Manager.a_task", "Manager.b_task", "Driver.poll"],
                         [s.name for s in specs])
        self.assertIs(first, getattr(specs[0].func, "__self__"))

    def test_subclass_may_retire_or_inherit(self) -> None:
        class Parent:
            @periodics.periodic(spacing=1)
            def kept(self) -> None:
                pass

            @periodics.periodic(spacing=1)
            def dropped(self) -> None:
                pass

        class Child(Parent):
            def dropped(self) -> None:
                pass

        self.assertEqual(["Child.kept"],
                         [s.name for s in periodics.collect(Child())])

    def test_disabled(self) -> None:
        class Manager:
            @periodics.periodic(spacing=0)
            def zero(self) -> None:
                pass

            @periodics.periodic(spacing=lambda: -1)
            def negative(self) -> None:
                pass

            @periodics.periodic(spacing=1, enabled=False)
            def off(self) -> None:
                pass

            @periodics.periodic(spacing=1, enabled=lambda: False)
            def off_late(self) -> None:
                pass

            @periodics.periodic(spacing=0.5)
            def on(self) -> None:
                pass

        self.assertEqual(
            {"Manager.zero": False, "Manager.negative": False,
             "Manager.off": False, "Manager.off_late": False,
             "Manager.on": True},
            {s.name: s.enabled for s in periodics.collect(Manager())})

    def test_resolution_errors_name_the_task(self) -> None:
        def broken() -> float:
            raise KeyError("no such option")

        class Manager:
            @periodics.periodic(spacing=broken)
            def tick(self) -> None:
                pass

        class Other:
            @periodics.periodic(spacing=lambda: "often")  # type: ignore
            def tick(self) -> None:
                pass

        exc = self.assertRaises(ValueError, periodics.collect, Manager())
        self.assertIn("Manager.tick", str(exc))
        exc = self.assertRaises(ValueError, periodics.collect, Other())
        self.assertIn("Other.tick", str(exc))

    def test_driver_name_scopes_node_tasks(self) -> None:
        driver = Driver()
        specs = {s.name: s for s in periodics.collect(
            driver, driver.power, driver_name="fake")}
        self.assertEqual({"Driver.poll", "Power.refresh",
                          "Power.check[fake]"}, set(specs))
        self.assertEqual({"power_state": None, "driver": "fake"},
                         specs["Power.check[fake]"].filters)
        self.assertIsNone(specs["Power.refresh"].filters)


class TestRunner(PeriodicsTestCase):

    def test_runs_and_keeps_statistics(self) -> None:
        clock = fakes.FakeClock(100.0)
        ran = threading.Event()

        class Manager:
            @periodics.periodic(spacing=30, run_immediately=True)
            def tick(self) -> None:
                clock.now += 2.5
                ran.set()

            @periodics.periodic(spacing=10)
            def later(self) -> None:
                pass

        runner = self.make_runner(now_func=clock,
                                  wall_func=lambda: 1700000000.0)
        self.assertEqual([], runner.stats())
        runner.start(periodics.collect(Manager()))
        self.assertTrue(ran.wait(base.WAIT))
        self.assertTrue(runner.stop(base.WAIT))
        tick = self.task_stats(runner, "Manager.tick")
        self.assertEqual(
            {"name": "Manager.tick", "kind": "periodic", "enabled": True,
             "spacing": 30.0, "runs": 1, "failures": 0, "rejected": 0,
             "running": False, "retired": False,
             "last_started": "2023-11-14T22:13:20+00:00",
             "last_duration": 2.5, "next_due": 27.5},
            tick)
        later = self.task_stats(runner, "Manager.later")
        self.assertEqual((0, None, None, 7.5),
                         (later["runs"], later["last_started"],
                          later["last_duration"], later["next_due"]))

    def test_disabled_task_logged_once_never_run(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.runner", level=logging.INFO))
        rec = self.recorder()
        off = mock.Mock()

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def on(self) -> None:
                rec()

            @periodics.periodic(spacing=0, run_immediately=True)
            def off(self) -> None:
                off()

        runner = self.make_runner()
        runner.start(periodics.collect(Manager()))
        self.assertTrue(rec.wait_calls(3))
        self.assertTrue(runner.stop(base.WAIT))
        off.assert_not_called()
        self.assertEqual(
            1, logger.output.count("Periodic task Manager.off is disabled"))
        stats = self.task_stats(runner, "Manager.off")
        self.assertEqual((False, 0, None),
                         (stats["enabled"], stats["runs"],
                          stats["next_due"]))

    def _fill(self, pool: pool_mod.WorkerPool) -> threading.Event:
        release = threading.Event()
        self.addCleanup(release.set)
        started = threading.Barrier(pool.size + 1)

        def hold() -> None:
            started.wait(base.WAIT)
            release.wait(base.WAIT)

        for _ in range(pool.size):
            pool.submit(hold)
        started.wait(base.WAIT)
        return release

    def _check_rejections_bounded(self, run_immediately: bool) -> None:
        pool = self.make_pool(2)
        release = self._fill(pool)
        ran = threading.Event()

        class Manager:
            @periodics.periodic(spacing=0.01,
                                run_immediately=run_immediately)
            def tick(self) -> None:
                ran.set()

        runner = self.make_runner(pool, reject_wait=0.2)
        real_wait_for_free = pool.wait_for_free
        waits: list[float] = []
        held = threading.Event()
        let_go = threading.Event()
        self.addCleanup(let_go.set)

        def wait_for_free(timeout: float,
                          stop: threading.Event | None = None) -> bool:
            waits.append(timeout)
            if len(waits) == 3:
                held.set()
                let_go.wait(base.WAIT)
            return real_wait_for_free(timeout, stop)

        self.useFixture(fixtures.MockPatchObject(pool, "wait_for_free",
                                                 wait_for_free))
        cpu_before = time.process_time()
        runner.start(periodics.collect(Manager()))
        # NOTE: no fixed window: the task is held in its third wait for a
        # free thread, after three attempts. futurist 3.5 alone would
        # resubmit a rejected immediate task ~300k times a second, and
        # never wait.
        self.assertTrue(held.wait(base.WAIT))
        self.assertFalse(ran.is_set())
        attempts = pool.stats()["rejected"]
        cpu = time.process_time() - cpu_before
        self.assertGreater(attempts, 0)
        self.assertLess(attempts, 10)
        self.assertLess(cpu, 0.25)
        self.assertEqual(attempts, self.task_stats(runner, "Manager.tick")
                         ["rejected"])
        self.assertEqual(len(waits), attempts)
        # The waiting task gets the first thread that frees up, sooner
        # than futurist's own 0.9-1.1 s retry of a rejected task.
        released_at = time.monotonic()
        release.set()
        let_go.set()
        self.assertTrue(ran.wait(base.WAIT))
        # Taken at its wait, not on a new attempt: no further rejection.
        self.assertEqual(attempts, pool.stats()["rejected"])
        self.assertLess(time.monotonic() - released_at, 0.8)
        self.assertTrue(runner.stop(base.WAIT))

    def test_rejected_immediate_task_waits_without_spinning(self) -> None:
        self._check_rejections_bounded(run_immediately=True)

    def test_rejected_scheduled_task_waits_without_spinning(self) -> None:
        self._check_rejections_bounded(run_immediately=False)

    def test_run_immediately_avoids_futurists_immediate_path(self) -> None:
        # NOTE: futurist 3.5 re-submits a rejected "immediate" task in a
        # tight loop; ours go through the regular schedule, due at once.
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.runner", level=logging.DEBUG))
        ran = threading.Event()

        class Manager:
            @periodics.periodic(spacing=60, run_immediately=True)
            def tick(self) -> None:
                ran.set()

        runner = self.make_runner()
        runner.start(periodics.collect(Manager()))
        self.assertTrue(ran.wait(base.WAIT))
        self.assertTrue(runner.stop(base.WAIT))
        self.assertIn("Submitting periodic callback", logger.output)
        self.assertNotIn("Submitting immediate callback", logger.output)

    def test_stop_with_full_pool_is_prompt(self) -> None:
        pool = self.make_pool(2)
        self._fill(pool)

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def tick(self) -> None:
                pass

        runner = self.make_runner(pool, reject_wait=60)
        runner.start(periodics.collect(Manager()))
        self.assertTrue(base.wait_until(
            lambda: pool.stats()["rejected"] > 0, base.WAIT))
        start = time.monotonic()
        self.assertTrue(runner.stop(base.WAIT))
        # Not held by the task's 60 s wait for a free thread.
        self.assertLess(time.monotonic() - start, 5.0)
        self.assertEqual(1, pool.stats()["rejected"])

    def _check_contained(self, error: BaseException) -> None:
        rec = self.recorder()
        raised: list[BaseException] = []

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def tick(self) -> None:
                if not raised:
                    raised.append(error)
                    raise error
                rec()

        runner = self.make_runner()
        runner.start(periodics.collect(Manager()))
        # The task is still scheduled after it raised.
        self.assertTrue(rec.wait_calls(2), error)
        start = time.monotonic()
        self.assertTrue(runner.stop(base.WAIT), error)
        self.assertLess(time.monotonic() - start, 5.0)
        stats = self.task_stats(runner, "Manager.tick")
        self.assertEqual(1, stats["failures"])
        self.assertGreaterEqual(stats["runs"], 3)

    def test_system_exit_contained(self) -> None:
        self._check_contained(SystemExit(1))

    def test_keyboard_interrupt_contained(self) -> None:
        self._check_contained(KeyboardInterrupt())

    def test_other_base_exception_contained(self) -> None:
        class Custom(BaseException):
            pass

        self._check_contained(Custom("odd"))

    def test_exception_logged_and_counted(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.runner", level=logging.INFO))
        self._check_contained(ValueError("bad value"))
        self.assertIn("Periodic task Manager.tick failed", logger.output)
        self.assertIn("bad value", logger.output)

    def test_never_again_retires_task(self) -> None:
        calls = []
        retired = threading.Event()

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def once(self) -> None:
                calls.append(1)
                retired.set()
                raise periodics.NeverAgain()

        # NOTE: on one pool thread, a task's run and its done callback
        # (where futurist schedules it again, or not) end before the
        # next run begins.
        ticker = Ticker()
        runner = self.make_runner(self.make_pool(1))
        runner.start(periodics.collect(Manager(), ticker))
        self.assertTrue(retired.wait(base.WAIT))
        # NOTE: no window to wait out: the ticker, as frequent, runs twice
        # more; a second run of "once" would have been due before the
        # second of these, so it would have run first.
        self.assertTrue(ticker.wait_more(2))
        self.assertTrue(runner.stop(base.WAIT))
        stats = self.task_stats(runner, "Manager.once")
        self.assertEqual([1], calls)
        self.assertEqual((True, 0, None),
                         (stats["retired"], stats["failures"],
                          stats["next_due"]))

    def test_task_never_overlaps_itself(self) -> None:
        rec = self.recorder()
        rec.release.clear()

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def slow(self) -> None:
                rec()

        ticker = Ticker()
        runner = self.make_runner(self.make_pool(4))
        runner.start(periodics.collect(Manager(), ticker))
        self.assertTrue(rec.wait_calls(1))
        # NOTE: many spacings pass while the first run is blocked: the
        # ticker, as frequent, shows ten of them passing.
        self.assertTrue(ticker.wait_more(10))
        self.assertEqual(1, len(rec.calls))
        self.assertTrue(self.task_stats(runner, "Manager.slow")["running"])
        rec.release.set()
        self.assertTrue(rec.wait_calls(3))
        self.assertEqual(1, rec.max_active)

    def test_slow_task_does_not_delay_others(self) -> None:
        slow = self.recorder()
        slow.release.clear()
        fast = self.recorder()

        class Manager:
            @periodics.periodic(spacing=60, run_immediately=True)
            def slow(self) -> None:
                slow()

            @periodics.periodic(spacing=0.01, run_immediately=True)
            def fast(self) -> None:
                fast()

        runner = self.make_runner(self.make_pool(3))
        runner.start(periodics.collect(Manager()))
        self.assertTrue(slow.wait_calls(1))
        self.assertTrue(fast.wait_calls(10))
        self.assertEqual(1, slow.active)
        self.assertTrue(self.task_stats(runner, "Manager.slow")["running"])

    def test_stop_is_bounded_with_hung_task(self) -> None:
        rec = self.recorder()
        rec.release.clear()

        class Manager:
            @periodics.periodic(spacing=0.01, run_immediately=True)
            def hung(self) -> None:
                rec()

        runner = self.make_runner()
        runner.start(periodics.collect(Manager()))
        self.assertTrue(rec.wait_calls(1))
        start = time.monotonic()
        self.assertFalse(runner.stop(0.1))
        self.assertLess(time.monotonic() - start, 1.0)
        rec.release.set()
        self.assertTrue(runner.stop(base.WAIT))
        self.assertEqual(1, len(rec.calls))

    def test_construction_is_cheap(self) -> None:
        before = threading.active_count()
        runner = runner_mod.PeriodicRunner(pool_mod.WorkerPool(3, "x"))
        self.assertEqual(before, threading.active_count())
        # NOTE: the service holding it may be pickled before the fork.
        pickle.dumps(runner)

    def test_lifecycle_errors(self) -> None:
        unstarted = pool_mod.WorkerPool(3, "x")
        runner = runner_mod.PeriodicRunner(unstarted)
        self.assertTrue(runner.stop(base.WAIT))
        self.assertRaises(RuntimeError, runner.start, [])
        runner = self.make_runner()
        runner.start([])
        self.assertRaises(RuntimeError, runner.start, [])
        self.assertTrue(runner.stop(base.WAIT))
        self.assertTrue(runner.stop(base.WAIT))

    def test_duplicates_across_collect_calls_dropped(self) -> None:
        first, second = Driver(), Driver()
        specs = (periodics.collect(first, first.power, driver_name="a")
                 + periodics.collect(second, second.power,
                                     driver_name="b"))
        runner = self.make_runner(provider=FakeProvider([]))
        runner.start(specs)
        self.assertEqual(
            ["Driver.poll", "Power.check[a]", "Power.check[b]",
             "Power.refresh"],
            sorted(r["name"] for r in runner.stats()))

    def test_loop_crash_is_logged(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.runner", level=logging.INFO))

        class Manager:
            @periodics.periodic(spacing=1)
            def tick(self) -> None:
                pass

        runner = self.make_runner()
        with mock.patch.object(futurist_periodics.PeriodicWorker, "start",
                               autospec=True,
                               side_effect=RuntimeError("loop broke")):
            runner.start(periodics.collect(Manager()))
            self.assertTrue(runner.stop(base.WAIT))
        self.assertIn("periodic task loop of pool tw crashed",
                      logger.output)
        self.assertIn("loop broke", logger.output)


class TestNodePeriodic(PeriodicsTestCase):

    def start_nodes(self, body: Callable[[Any, periodics.NodeTask], Any],
                    provider: FakeProvider, pool_size: int = 4,
                    spacing: float = 60,
                    pool: pool_mod.WorkerPool | None = None,
                    also: tuple[Any, ...] = (), **kwargs: Any
                    ) -> runner_mod.PeriodicRunner:
        """Run ``body`` on each node; ``also``: more objects to collect."""
        class Power:
            @periodics.node_periodic(purpose="testing", spacing=spacing,
                                     run_immediately=True, **kwargs)
            def check(self, task: periodics.NodeTask) -> None:
                body(self, task)

        runner = self.make_runner(pool or self.make_pool(pool_size),
                                  provider)
        runner.start(periodics.collect(Power(), driver_name="fake")
                     + periodics.collect(*also))
        return runner

    def wait_runs(self, runner: runner_mod.PeriodicRunner,
                  runs: int = 1) -> None:
        self.assertTrue(base.wait_until(
            lambda: runner.stats()[0]["runs"] >= runs, base.WAIT),
            runner.stats())

    def test_each_matching_node_once(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.runner", level=logging.DEBUG))
        nodes = [make_node(i) for i in range(6)] + [make_node(9, "other")]
        provider = FakeProvider(nodes, locked=("uuid-2",),
                                gone=("uuid-3",))
        seen: list[tuple[str, str, bool]] = []

        def body(_self: Any, task: periodics.NodeTask) -> None:
            seen.append((task.node.uuid, task.purpose,
                         task.stop_requested()))
            if task.node.uuid == "uuid-4":
                raise ValueError("bmc said no")

        # One run only: a second one, due at once when a loaded machine
        # makes the first take longer than a short spacing, would add to
        # what ``seen`` holds.
        runner = self.start_nodes(
            body, provider,
            predicate=lambda node: node.uuid != "uuid-1")
        self.wait_runs(runner)
        self.assertTrue(runner.stop(base.WAIT))
        first_run = sorted(seen)[:3]
        self.assertEqual([("uuid-0", "testing", False),
                          ("uuid-4", "testing", False),
                          ("uuid-5", "testing", False)], first_run)
        self.assertEqual(({"driver": "fake"}, None), provider.iterations[0])
        self.assertIn(("uuid-0", "testing"), provider.reservations)
        stats = runner.stats()[0]
        self.assertEqual(("node", "testing", 0),
                         (stats["kind"], stats["purpose"],
                          stats["failures"]))
        self.assertEqual(5, stats["last_nodes"])
        self.assertIn("node uuid-2 is locked", logger.output)
        self.assertIn("node uuid-3 is gone", logger.output)
        self.assertIn("Periodic task Power.check[fake] failed on node "
                      "uuid-4 while testing", logger.output)
        self.assertIn("bmc said no", logger.output)

    def test_limit(self) -> None:
        for limit, predicate, expected_provider_limit in (
                (2, None, 2),
                (lambda: 2, None, 2),
                (2, lambda node: node.uuid != "uuid-0", None)):
            provider = FakeProvider([make_node(i) for i in range(6)])
            seen: list[str] = []
            runner = self.start_nodes(
                lambda _s, task: seen.append(task.node.uuid), provider,
                limit=limit, predicate=predicate)
            self.wait_runs(runner)
            self.assertTrue(runner.stop(base.WAIT))
            self.assertEqual(2, len(seen))
            if predicate is not None:
                self.assertNotIn("uuid-0", seen)
            self.assertEqual(expected_provider_limit,
                             provider.iterations[0][1])

    def _check_parallel(self, pool_size: int, expected: int,
                        **kwargs: Any) -> None:
        rec = self.recorder()
        rec.release.clear()
        provider = FakeProvider([make_node(i) for i in range(6)])
        pool = self.make_pool(pool_size)
        runner = self.start_nodes(lambda _s, task: rec(task.node.uuid),
                                  provider, pool=pool, **kwargs)
        self.assertTrue(rec.wait_calls(expected))
        # NOTE: no window to wait out: the run started every lane it has
        # (its own thread is one) before the first node job began, each
        # lane runs one job at a time, and every job is held: the pool's
        # submissions (the run itself plus its lanes) bound the jobs.
        self.assertEqual(expected, pool.stats()["submitted"])
        self.assertEqual(expected, len(rec.calls))
        rec.release.set()
        self.wait_runs(runner)
        self.assertEqual(6, len(rec.calls))
        self.assertEqual(expected, rec.max_active)

    def test_parallel_up_to_concurrency(self) -> None:
        self._check_parallel(pool_size=8, expected=3, concurrency=3)

    def test_parallel_capped_below_pool_size(self) -> None:
        self._check_parallel(pool_size=3, expected=2)

    def test_never_overlaps_itself(self) -> None:
        rec = self.recorder()
        rec.release.clear()
        provider = FakeProvider([make_node(0)])
        ticker = Ticker()
        runner = self.start_nodes(lambda _s, task: rec(),
                                  provider, spacing=0.01, also=(ticker,))
        self.assertTrue(rec.wait_calls(1))
        # NOTE: many spacings pass while the node job is blocked: the
        # ticker, as frequent, shows ten of them passing.
        self.assertTrue(ticker.wait_more(10))
        self.assertEqual(1, len(provider.iterations))
        self.assertTrue(runner.stats()[0]["running"])
        rec.release.set()
        self.assertTrue(rec.wait_calls(3))
        self.assertEqual(1, rec.max_active)

    def test_stop_dispatches_no_more_nodes(self) -> None:
        rec = self.recorder()
        rec.release.clear()
        provider = FakeProvider([make_node(i) for i in range(5)])
        flags: list[bool] = []

        def body(_self: Any, task: periodics.NodeTask) -> None:
            rec()
            flags.append(task.stop_requested())

        runner = self.start_nodes(body, provider, concurrency=1)
        self.assertTrue(rec.wait_calls(1))
        self.assertFalse(runner.stop(0.1))
        rec.release.set()
        self.assertTrue(runner.stop(base.WAIT))
        self.assertEqual(1, len(rec.calls))
        self.assertEqual([True], flags)
        self.assertEqual(1, runner.stats()[0]["last_nodes"])

    def test_needs_a_provider(self) -> None:
        runner = self.make_runner()
        exc = self.assertRaises(ValueError, runner.start,
                                periodics.collect(Power()))
        self.assertIn("Power.check", str(exc))

    def test_listing_failure_is_a_task_failure(self) -> None:
        provider = FakeProvider([make_node(0)])
        provider.fail_listing = RuntimeError("db down")
        runner = self.start_nodes(lambda _s, task: None, provider)
        self.wait_runs(runner)
        self.assertEqual(1, runner.stats()[0]["failures"])

    def test_base_exception_in_node_body_contained(self) -> None:
        seen: list[str] = []

        def body(_self: Any, task: periodics.NodeTask) -> None:
            seen.append(task.node.uuid)
            if task.node.uuid == "uuid-0":
                raise SystemExit(1)

        provider = FakeProvider([make_node(0), make_node(1)])
        runner = self.start_nodes(body, provider, spacing=0.01,
                                  concurrency=1)
        self.wait_runs(runner, 2)
        self.assertTrue(runner.stop(base.WAIT))
        self.assertEqual(["uuid-0", "uuid-1"] * 2, seen[:4])
        self.assertEqual(0, runner.stats()[0]["failures"])

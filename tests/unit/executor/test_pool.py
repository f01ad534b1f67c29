# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.executor.pool: the rules the bounded pool keeps."""

from __future__ import annotations

from concurrent import futures
import logging
import pickle
import threading
import time
from typing import Any

import fixtures

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import exceptions
from conductor.executor import pool as pool_mod
from tests import base
from tests import fakes


class PoolTestCase(base.TestCase):

    def make_pool(self, size: int = 2,
                  name: str = "tp") -> pool_mod.WorkerPool:
        return fakes.start_pool(self, size, name)

    def fill(self, pool: pool_mod.WorkerPool) -> fakes.Recorder:
        blocker = fakes.Recorder(held=True)
        self.addCleanup(blocker.release.set)
        for _ in range(pool.size):
            blocker.futures.append(pool.submit(blocker))
        self.assertTrue(blocker.wait_calls(pool.size))
        return blocker


class TestConstruction(PoolTestCase):

    def test_init_creates_no_thread_and_pickles(self) -> None:
        before = threading.active_count()
        pool = pool_mod.WorkerPool(4, "w0")
        self.assertEqual(before, threading.active_count())
        # NOTE: the service is pickled/forked after construction.
        clone = pickle.loads(pickle.dumps(pool))
        self.assertEqual((4, "w0"), (clone.size, clone.name))
        self.assertFalse(pool.started)
        self.assertEqual(0, pool.stats()["threads"])

    def test_start_creates_no_thread(self) -> None:
        before = threading.active_count()
        pool = self.make_pool(4)
        self.assertEqual(before, threading.active_count())
        self.assertTrue(pool.started)

    def test_invalid_size(self) -> None:
        for size in (0, -1, 1.5, True, "3"):
            self.assertRaises(ValueError, pool_mod.WorkerPool, size, "x")

    def test_submit_before_start(self) -> None:
        pool = pool_mod.WorkerPool(2, "x")
        self.assertRaises(RuntimeError, pool.submit, lambda: None)

    def test_start_twice(self) -> None:
        pool = self.make_pool()
        self.assertRaises(RuntimeError, pool.start)


class TestSubmit(PoolTestCase):

    def test_result_and_counters(self) -> None:
        pool = self.make_pool(3)
        fut = pool.submit(lambda a, b=0: a + b, 2, b=3)
        self.assertEqual(5, fut.result(base.WAIT))
        stats = pool.stats()
        self.assertEqual(1, stats["submitted"])
        self.assertEqual(1, stats["completed"])
        self.assertEqual(0, stats["busy"])
        self.assertEqual(3, stats["free"])
        self.assertEqual(1, stats["threads"])

    def test_rejects_when_all_threads_busy(self) -> None:
        pool = self.make_pool(2)
        blocker = self.fill(pool)
        self.assertEqual(2, pool.busy)
        exc = self.assertRaises(exceptions.NoFreeWorker, pool.submit,
                                lambda: None)
        self.assertIn("All 2 worker threads are busy", str(exc))
        self.assertEqual(1, pool.stats()["rejected"])
        blocker.release.set()
        self.assertTrue(pool.wait_for_free(base.WAIT))
        self.assertEqual(1, pool.submit(lambda: 1).result(base.WAIT))

    def test_thread_free_before_future_done(self) -> None:
        # NOTE: rejection is on busy threads, not on backlog: once a
        # caller sees its result the thread counts as free again.
        pool = self.make_pool(1)
        for i in range(20):
            self.assertEqual(i, pool.submit(lambda v: v, i).result(base.WAIT))
        self.assertEqual(0, pool.stats()["rejected"])
        self.assertEqual(1, pool.stats()["threads"])

    def test_threads_named_after_pool_and_reused(self) -> None:
        pool = self.make_pool(3, name="worker-7")
        blocker = self.fill(pool)
        blocker.release.set()
        futures.wait(blocker.futures, base.WAIT)
        self.assertEqual(
            ["worker-7-1", "worker-7-2", "worker-7-3"],
            sorted(blocker.threads))
        names = {pool.submit(lambda: threading.current_thread().name)
                 .result(base.WAIT) for _ in range(10)}
        self.assertTrue(names <= set(blocker.threads))
        self.assertEqual(3, pool.stats()["threads"])

    def test_exception_goes_to_future(self) -> None:
        pool = self.make_pool(2)

        def boom() -> None:
            raise KeyError("x")

        fut = pool.submit(boom)
        self.assertIsInstance(fut.exception(base.WAIT), KeyError)
        self.assertEqual(1, pool.stats()["failed"])

    def _check_threads_alive(self, pool: pool_mod.WorkerPool) -> None:
        # Every thread still serves: ``size`` blockers all start.
        blocker = fakes.Recorder(held=True)
        self.addCleanup(blocker.release.set)
        for _ in range(pool.size):
            pool.submit(blocker)
        self.assertTrue(blocker.wait_calls(pool.size),
                        "a pool thread died")
        blocker.release.set()

    def test_base_exception_does_not_kill_thread(self) -> None:
        pool = self.make_pool(2)
        for exc_type in (SystemExit, KeyboardInterrupt, GeneratorExit):
            def raiser(e: type[BaseException] = exc_type) -> None:
                raise e()
            fut = pool.submit(raiser)
            self.assertIsInstance(fut.exception(base.WAIT), exc_type)
        self._check_threads_alive(pool)

    def test_callback_raising_base_exception_keeps_thread(self) -> None:
        pool = self.make_pool(1)
        gate = threading.Event()
        called = threading.Event()

        def callback(_fut: futures.Future[Any]) -> None:
            called.set()
            raise SystemExit(1)

        fut = pool.submit(gate.wait, base.WAIT)
        fut.add_done_callback(callback)
        gate.set()
        self.assertTrue(called.wait(base.WAIT))
        self._check_threads_alive(pool)


class TestWaitForFree(PoolTestCase):

    def test_returns_when_thread_frees(self) -> None:
        pool = self.make_pool(1)
        blocker = self.fill(pool)
        threading.Timer(0.05, blocker.release.set).start()
        start = time.monotonic()
        self.assertTrue(pool.wait_for_free(base.WAIT))
        self.assertLess(time.monotonic() - start, base.WAIT / 2)

    def test_times_out(self) -> None:
        pool = self.make_pool(1)
        self.fill(pool)
        start = time.monotonic()
        self.assertFalse(pool.wait_for_free(0.05))
        self.assertGreaterEqual(time.monotonic() - start, 0.04)

    def test_stop_event_and_wake(self) -> None:
        pool = self.make_pool(1)
        self.fill(pool)
        stop = threading.Event()
        result: list[bool] = []
        waiter = threading.Thread(
            target=lambda: result.append(pool.wait_for_free(60, stop)))
        waiter.start()
        stop.set()
        pool.wake_waiters()
        waiter.join(base.WAIT)
        self.assertFalse(waiter.is_alive())
        self.assertEqual([False], result)


class TestShutdown(PoolTestCase):

    def test_idle_pool(self) -> None:
        pool = self.make_pool(3)
        for _ in range(3):
            pool.submit(lambda: None).result(base.WAIT)
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))
        self.assertRaises(RuntimeError, pool.submit, lambda: None)
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))

    def test_unstarted(self) -> None:
        self.assertTrue(pool_mod.WorkerPool(2, "x").shutdown())

    def test_bounded_with_blocked_thread(self) -> None:
        pool = self.make_pool(2)
        blocker = self.fill(pool)
        start = time.monotonic()
        self.assertFalse(pool.shutdown(wait=True, timeout=0.1))
        self.assertLess(time.monotonic() - start, 2.0)
        blocker.release.set()
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))

    def test_warning_counts_busy_threads_only(self) -> None:
        pool = self.make_pool(10)
        # Ten threads exist; two stay busy, eight are idle.
        idle = fakes.Recorder(held=True)
        for _ in range(10):
            idle.futures.append(pool.submit(idle))
        self.assertTrue(idle.wait_calls(10))
        idle.release.set()
        futures.wait(idle.futures, base.WAIT)
        busy = fakes.Recorder(held=True)
        self.addCleanup(busy.release.set)
        for _ in range(2):
            busy.futures.append(pool.submit(busy))
        self.assertTrue(busy.wait_calls(2))
        self.assertEqual(10, pool.stats()["threads"])
        with self.assertLogs(pool_mod.LOG, "WARNING") as logs:
            # NOTE: no time left to join: idle threads have not ended yet
            # either, and must not be counted as busy.
            self.assertFalse(pool.shutdown(wait=True, timeout=0))
        [line] = logs.output
        self.assertIn("2 thread(s) still busy", line)
        for name in busy.threads:
            self.assertIn(name, line)
        busy.release.set()
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))

    def test_no_wait(self) -> None:
        pool = self.make_pool(1)
        blocker = self.fill(pool)
        self.assertFalse(pool.shutdown(wait=False))
        blocker.release.set()
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))


class TestAbandonedCalls(PoolTestCase):
    """A call past its deadline leaves the pool's count (see guard_call)."""

    def setUp(self) -> None:
        super().setUp()
        self.clock = fakes.FakeClock(100.0)
        self.release = threading.Event()
        self.addCleanup(self.release.set)
        self.entered: list[str] = []
        self.cond = threading.Condition()

    def guarded_pool(self, size: int = 2,
                     max_abandoned: int = 4) -> pool_mod.WorkerPool:
        # NOTE: a reap interval longer than any test: reap() is called
        # by the test, on the fake clock.
        pool = pool_mod.WorkerPool(size, "ab", max_abandoned,
                                   grace=1.0, reap_interval=3600,
                                   clock=self.clock)
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
        return pool

    def hang(self, node: str, seconds: float = 5.0) -> str:
        """A driver call on ``node`` that ignores its deadline."""
        with pool_mod.guard_call(node, "get_power_state", seconds):
            with self.cond:
                self.entered.append(node)
                self.cond.notify_all()
            assert self.release.wait(base.WAIT), "never released"
        return node

    def wait_entered(self, count: int) -> None:
        with self.cond:
            self.assertTrue(self.cond.wait_for(
                lambda: len(self.entered) >= count, base.WAIT))

    def test_abandoned_call_frees_its_slot(self) -> None:
        pool = self.guarded_pool(size=2)
        hung = pool.submit(self.hang, "n1")
        self.wait_entered(1)
        self.clock.advance(5.9)             # within deadline + grace
        self.assertEqual(0, pool.reap())
        self.assertEqual(1, pool.busy)
        self.clock.advance(0.2)
        with fixtures.FakeLogger(level=logging.INFO) as logger:
            self.assertEqual(1, pool.reap())
        self.assertIn("abandoned 1 driver call(s) still running past their "
                      "deadline: n1 (get_power_state, 6.1 s)",
                      logger.output)
        stats = pool.stats()
        self.assertEqual((0, 2, 1, 1, 0), (
            stats["busy"], stats["free"], stats["abandoned"],
            stats["abandoned_total"], stats["threads"]))
        # Both slots take new work while the abandoned call still runs.
        blocker = self.fill(pool)
        self.assertRaises(exceptions.NoFreeWorker, pool.submit, time.time)
        self.assertFalse(hung.done())
        self.assertEqual((1, 1), pool.abandoned_calls())
        blocker.release.set()
        self.release.set()
        # Whatever the abandoned call returns still reaches its caller.
        self.assertEqual("n1", hung.result(base.WAIT))
        self.assertTrue(base.wait_until(lambda: pool.busy == 0))
        stats = pool.stats()
        self.assertEqual((0, 1, 2), (stats["abandoned"],
                                     stats["abandoned_total"],
                                     stats["threads"]))
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))

    def test_node_is_not_called_again_until_the_call_returns(self) -> None:
        pool = self.guarded_pool()
        hung = pool.submit(self.hang, "n1")
        self.wait_entered(1)
        self.clock.advance(10)
        self.assertEqual(1, pool.reap())
        self.assertTrue(pool.call_blocked("n1"))
        self.assertTrue(pool.suspect("n1"))
        again = pool.submit(self.hang, "n1")
        exc = self.assertRaises(pool_mod.CallStillRunning, again.result,
                                base.WAIT)
        self.assertIn("Node n1: the previous get_power_state call to its "
                      "BMC was abandoned after 10.0 s", str(exc))
        self.release.set()
        self.assertEqual("n1", hung.result(base.WAIT))
        self.assertTrue(base.wait_until(lambda: not pool.call_blocked("n1")))
        # Still suspect until one call on it returns in time.
        self.assertTrue(pool.suspect("n1"))
        self.assertEqual("n1", pool.submit(self.hang, "n1").result(
            base.WAIT))
        self.assertFalse(pool.suspect("n1"))

    def test_cap_makes_the_pool_degraded(self) -> None:
        pool = self.guarded_pool(size=3, max_abandoned=1)
        first = pool.submit(self.hang, "n1")
        self.wait_entered(1)
        self.clock.advance(1)
        second = pool.submit(self.hang, "n2")
        self.wait_entered(2)
        self.clock.advance(10)
        with fixtures.FakeLogger(level=logging.INFO) as logger:
            self.assertEqual(1, pool.reap())
        self.assertIn("n1 (get_power_state", logger.output)
        self.assertIn("is degraded: 1 abandoned driver call(s) still "
                      "running reached the cap", logger.output)
        self.assertTrue(pool.degraded)
        self.assertTrue(pool.stats()["degraded"])
        # Past the cap the second hung call keeps its slot.
        self.assertEqual((1, 1), (pool.busy, pool.abandoned_calls()[1]))
        self.assertFalse(pool.call_blocked("n2"))
        self.assertEqual(0, pool.reap())
        self.release.set()
        self.assertEqual(["n1", "n2"], [first.result(base.WAIT),
                                        second.result(base.WAIT)])
        self.assertTrue(base.wait_until(lambda: not pool.degraded))

    def test_call_in_time_is_not_abandoned(self) -> None:
        pool = self.guarded_pool()
        self.release.set()
        self.assertEqual("n1", pool.submit(self.hang, "n1").result(
            base.WAIT))
        self.clock.advance(100)
        self.assertEqual(0, pool.reap())
        self.assertEqual((0, 0), pool.abandoned_calls())
        self.assertFalse(pool.suspect("n1"))

    def test_guard_outside_a_pool_thread_watches_nothing(self) -> None:
        self.guarded_pool()
        with pool_mod.guard_call("n1", "get_power_state", 0.0) as call:
            self.assertIsNone(call)
        self.assertIsNone(pool_mod.current())
        self.assertFalse(pool_mod.detached())

    def test_reaper_thread_abandons_on_its_own(self) -> None:
        pool = pool_mod.WorkerPool(2, "reaper", 1, grace=0.0,
                                   reap_interval=0.01)
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
        hung = pool.submit(self.hang, "n1", 0.0)
        self.assertTrue(base.wait_until(lambda: pool.call_blocked("n1")))
        self.assertEqual(0, pool.busy)
        self.assertTrue(pool.degraded)
        self.release.set()
        hung.result(base.WAIT)
        self.assertTrue(base.wait_until(lambda: not pool.degraded))

    def test_reaper_sleeps_until_the_earliest_deadline(self) -> None:
        clock = [100.0]
        pool = pool_mod.WorkerPool(3, "sleepy", grace=2.0, reap_interval=0.5,
                                   clock=lambda: clock[0])
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
        rt = pool._runtime()
        pool.submit(self.hang, "n1", 30.0)
        pool.submit(self.hang, "n2", 40.0)
        self.wait_entered(2)
        # The earliest call (deadline at 130) is past its grace at 132.
        self.assertAlmostEqual(32.0, pool._reap_wait(rt))
        clock[0] = 131.9
        self.assertAlmostEqual(0.5, pool._reap_wait(rt))
        self.release.set()
        self.assertTrue(base.wait_until(lambda: not rt.calls))
        # No call in flight: a new one has a deadline of at least 30 s.
        self.assertAlmostEqual(32.0, pool._reap_wait(rt))
        # A deadline without end: the reaper still looks now and then.
        rt.shortest = float("inf")
        self.assertEqual(pool_mod.REAP_MAX_WAIT, pool._reap_wait(rt))

    def test_shutdown_wakes_the_sleeping_reaper(self) -> None:
        pool = pool_mod.WorkerPool(2, "stopped", grace=1.0,
                                   reap_interval=0.01)
        pool.start()
        pool.submit(self.hang, "n1", 3600.0)
        self.wait_entered(1)
        rt = pool._runtime()
        reaper = rt.reaper
        assert reaper is not None
        # NOTE: it sleeps REAP_MAX_WAIT now, far longer than base.WAIT.
        self.release.set()
        self.assertTrue(pool.shutdown(wait=True, timeout=base.WAIT))
        reaper.join(base.WAIT)
        self.assertFalse(reaper.is_alive())

    def test_a_shorter_deadline_wakes_the_reaper(self) -> None:
        pool = pool_mod.WorkerPool(3, "woken", 1, grace=0.0,
                                   reap_interval=0.01)
        planned: list[float] = []
        asleep = threading.Event()
        reap_wait = pool._reap_wait

        def recorded(rt: Any) -> float:
            planned.append(reap_wait(rt))
            asleep.set()
            return planned[-1]

        self.useFixture(fixtures.MockPatchObject(pool, "_reap_wait",
                                                 recorded))
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
        pool.submit(self.hang, "long", 3600.0)
        self.wait_entered(1)
        self.assertTrue(asleep.wait(base.WAIT))
        # NOTE: the reaper now sleeps its longest, far beyond base.WAIT;
        # only the wake of the shorter call below lets it abandon that
        # call in time.
        self.assertEqual(pool_mod.REAP_MAX_WAIT, planned[0])
        self.assertGreater(planned[0], 3 * base.WAIT)
        pool.submit(self.hang, "short", 0.0)
        self.assertTrue(base.wait_until(lambda: pool.call_blocked("short")))
        self.assertFalse(pool.call_blocked("long"))
        self.release.set()

    def test_invalid_cap(self) -> None:
        for cap in (0, -1, 1.5, True):
            self.assertRaises(ValueError, pool_mod.WorkerPool, 2, "x", cap)
        self.assertEqual(2, pool_mod.WorkerPool(2, "x").max_abandoned)

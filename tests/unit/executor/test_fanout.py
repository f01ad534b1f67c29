# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.executor.fanout: the one bounded fan-out."""

from __future__ import annotations

import threading
from typing import Iterator

import fixtures

from conductor.executor import fanout
from tests import base
from tests import fakes
from tests.unit.executor import test_pool

WAIT = base.WAIT


class TestFanOut(test_pool.PoolTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.stop = threading.Event()

    def fan(self, pool: fanout.pool_mod.WorkerPool, limit: int,
            **kwargs: object) -> fanout.FanOut[int, str]:
        return fanout.FanOut(pool, limit, stop=self.stop,
                             **kwargs)  # type: ignore[arg-type]

    def run_blocked(self, fan: fanout.FanOut[int, str], items: int,
                    blocker: fakes.Recorder
                    ) -> fanout.Report[int, str]:
        """Run ``items`` blockers from a helper thread; release them."""
        reports: list[fanout.Report[int, str]] = []
        thread = threading.Thread(
            target=lambda: reports.append(
                fan.run(range(items), lambda item: blocker(item))))
        thread.start()
        self.addCleanup(thread.join, WAIT)
        self.assertTrue(blocker.wait_calls(fan.limit))
        blocker.release.set()
        thread.join(WAIT)
        self.assertFalse(thread.is_alive())
        return reports[0]

    def test_at_most_limit_at_once(self) -> None:
        pool = self.make_pool(8)
        blocker = fakes.Recorder(held=True)
        self.addCleanup(blocker.release.set)
        fan = self.fan(pool, 2)
        report = self.run_blocked(fan, 6, blocker)
        self.assertEqual(2, fan.limit)
        self.assertEqual(2, report.peak)
        self.assertEqual(6, len(blocker.calls))
        # The caller's thread was one of the two lanes.
        self.assertEqual((2, True, 6), (report.lanes, report.inline,
                                        len(report.results)))
        self.assertEqual(0, pool.stats()["rejected"])

    def test_limit_capped_below_pool_size(self) -> None:
        pool = self.make_pool(3)
        blocker = fakes.Recorder(held=True)
        self.addCleanup(blocker.release.set)
        fan = self.fan(pool, 50)
        report = self.run_blocked(fan, 5, blocker)
        self.assertEqual(2, fan.limit)
        self.assertEqual(2, report.peak)

    def test_free_thread_rule_is_stated_once(self) -> None:
        self.assertEqual(99, fanout.lane_limit(100, 500))
        self.assertEqual(8, fanout.lane_limit(100, 8))
        self.assertEqual(1, fanout.lane_limit(1, 8))
        pool = self.make_pool(4)
        self.assertEqual(3, fanout.spare_threads(pool))
        self.fill(pool)
        self.assertEqual(-1, fanout.spare_threads(pool))

    def test_limit_at_least_one(self) -> None:
        pool = self.make_pool(1)
        self.assertEqual(1, self.fan(pool, 5).limit)
        self.assertRaises(ValueError, self.fan, pool, 0)
        self.assertRaises(ValueError, self.fan, pool, True)

    def test_full_pool_runs_in_the_callers_thread(self) -> None:
        pool = self.make_pool(2)
        self.fill(pool)
        report = self.fan(pool, 1).run(
            [1, 2], lambda item: threading.current_thread().name)
        me = threading.current_thread().name
        self.assertEqual([(1, me), (2, me)], report.results)
        self.assertEqual((True, 1), (report.inline, report.lanes))

    def test_an_exception_is_logged_and_counted(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(
            name="conductor.executor.fanout"))
        pool = self.make_pool(4)

        def boom(item: int) -> str:
            if item == 1:
                raise RuntimeError("bad item")
            return "ok"

        report = self.fan(pool, 2, name="probe").run([0, 1, 2], boom)
        self.assertEqual((1, 3), (report.errors, report.taken))
        self.assertEqual([0, 2], sorted(item for item, _ in report.results))
        self.assertIn("probe: the call on 1 failed", logger.output)

    def test_stop_takes_no_new_item(self) -> None:
        pool = self.make_pool(4)
        blocker = fakes.Recorder(held=True)
        self.addCleanup(blocker.release.set)
        reports: list[fanout.Report[int, str]] = []
        fan = self.fan(pool, 1)
        thread = threading.Thread(target=lambda: reports.append(
            fan.run(range(5), lambda item: blocker(item))))
        thread.start()
        self.assertTrue(blocker.wait_calls(1))
        self.stop.set()
        blocker.release.set()
        thread.join(WAIT)
        self.assertFalse(thread.is_alive())
        self.assertEqual((1, 1), (len(blocker.calls), reports[0].taken))

    def test_a_hung_call_is_abandoned_and_the_rest_done(self) -> None:
        pool = self.make_pool(4)
        release = threading.Event()
        self.addCleanup(release.set)
        self.useFixture(fixtures.MockPatchObject(fanout, "WATCHDOG_GRACE",
                                                 0.0))

        def call(item: int) -> str:
            if item == 0:
                release.wait(WAIT)      # ignores any deadline
                return "late"
            return "ok"

        # Long enough that only the hung call outlives it, even when the
        # replacement lane waits for a core on a loaded machine.
        report = self.fan(pool, 1, call_timeout=1.0,
                          watchdog_interval=0.01).run(range(4), call)
        self.assertEqual([0], report.abandoned)
        self.assertEqual([(1, "ok"), (2, "ok"), (3, "ok")], report.results)
        self.assertEqual(2, report.lanes)
        release.set()
        self.assertTrue(pool.shutdown(wait=True, timeout=WAIT))
        self.assertNotIn((0, "late"), report.results)

    def test_a_failing_source_is_raised_after_the_calls(self) -> None:
        pool = self.make_pool(4)
        done: list[int] = []

        def items() -> Iterator[int]:
            yield 1
            yield 2
            raise LookupError("source broke")

        fan = self.fan(pool, 1)
        self.assertRaises(LookupError, fan.run, items(), done.append)
        self.assertEqual([1, 2], done)


class TestSuspectLanes(test_pool.PoolTestCase):
    """Suspect items run on a bounded share of the lanes."""

    def setUp(self) -> None:
        super().setUp()
        self.stop = threading.Event()
        self.release = threading.Event()
        self.addCleanup(self.release.set)
        self.cond = threading.Condition()
        self.started: list[int] = []
        self.finished: list[int] = []

    def call(self, item: int) -> int:
        with self.cond:
            self.started.append(item)
            self.cond.notify_all()
        if item >= 100 or item < 0:      # suspect (>= 100), held (< 0)
            assert self.release.wait(WAIT), "never released"
        with self.cond:
            self.finished.append(item)
            self.cond.notify_all()
        return item

    def run_in_thread(self, fan: fanout.FanOut[int, int], items: list[int]
                      ) -> tuple[threading.Thread,
                                 list[fanout.Report[int, int]]]:
        reports: list[fanout.Report[int, int]] = []
        thread = threading.Thread(target=lambda: reports.append(fan.run(
            items, self.call, suspect=lambda item: item >= 100)))
        thread.start()
        self.addCleanup(thread.join, WAIT)
        return thread, reports

    def wait(self, check: object) -> None:
        with self.cond:
            self.assertTrue(self.cond.wait_for(check, WAIT))  # type: ignore

    def test_healthy_items_never_wait_behind_suspect_ones(self) -> None:
        pool = self.make_pool(8)
        fan: fanout.FanOut[int, int] = fanout.FanOut(
            pool, 4, stop=self.stop, call_timeout=60)
        self.assertEqual(1, fan.suspect_lanes)
        # Suspect items first in the input, as a sort by failures would.
        items = [100, 101, 102] + list(range(20))
        thread, reports = self.run_in_thread(fan, items)
        # Every healthy item is done while the suspect ones hang.
        self.wait(lambda: set(range(20)) <= set(self.finished))
        self.assertFalse(set(self.finished) & {100, 101, 102})
        self.release.set()
        thread.join(WAIT)
        report = reports[0]
        self.assertEqual(sorted(items), sorted(i for i, _ in report.results))
        self.assertEqual(3, report.suspect_taken)

    def test_suspect_share_is_bounded(self) -> None:
        pool = self.make_pool(8)
        fan: fanout.FanOut[int, int] = fanout.FanOut(
            pool, 4, stop=self.stop, call_timeout=60)
        # Three held healthy items keep three lanes busy: the fourth
        # lane is the suspect share, one call at a time.
        thread, reports = self.run_in_thread(
            fan, [100, 101, 102, 103, -1, -2, -3])
        self.wait(lambda: len(self.started) >= 4)
        with self.cond:
            self.assertEqual([-3, -2, -1, 100], sorted(self.started))
        self.release.set()
        thread.join(WAIT)
        self.assertEqual(7, reports[0].taken)

    def test_only_suspect_items_use_their_share(self) -> None:
        pool = self.make_pool(8)
        fan: fanout.FanOut[int, int] = fanout.FanOut(
            pool, 4, stop=self.stop, call_timeout=60, suspect_lanes=2)
        thread, reports = self.run_in_thread(fan, [100, 101, 102, 103])
        self.wait(lambda: len(self.started) >= 2)
        self.release.set()
        thread.join(WAIT)
        self.assertEqual((4, 2), (reports[0].taken, reports[0].lanes))

    def test_invalid_suspect_lanes(self) -> None:
        pool = self.make_pool(4)
        for value in (0, -1, 1.5, True):
            self.assertRaises(ValueError, fanout.FanOut, pool, 2,
                              stop=self.stop, suspect_lanes=value)
        self.assertEqual((1, 1, 2), (fanout.suspect_share(1),
                                     fanout.suspect_share(7),
                                     fanout.suspect_share(8)))

    def test_a_lane_whose_call_was_abandoned_takes_no_more(self) -> None:
        clock = fakes.FakeClock(0.0)
        pool = fanout.pool_mod.WorkerPool(3, "lanes", 4, grace=0.0,
                                          reap_interval=3600, clock=clock)
        pool.start()
        self.addCleanup(pool.shutdown, wait=True, timeout=WAIT)
        taken: list[tuple[int, str]] = []

        def call(item: int) -> int:
            taken.append((item, threading.current_thread().name))
            if item == 0:
                with fanout.pool_mod.guard_call("n0", "get", 1.0):
                    clock.advance(5)
                    self.assertEqual(1, pool.reap())
            return item

        fan: fanout.FanOut[int, int] = fanout.FanOut(
            pool, 1, stop=self.stop, call_timeout=60,
            watchdog_interval=0.01)
        # One lane on a pool thread: its call is abandoned, so the items
        # after it go to a new lane on another thread.
        report = pool.submit(fan.run, range(3), call).result(WAIT)
        self.assertEqual([0, 1, 2], sorted(i for i, _ in report.results))
        self.assertNotEqual(taken[0][1], taken[1][1])

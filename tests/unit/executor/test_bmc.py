# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.executor.bmc: the per-BMC gate and the rate cap."""

from __future__ import annotations

import threading
import time
from typing import Callable
from unittest import mock

import fixtures

from conductor.common import deadline
from conductor.executor import bmc
from tests import base

WAIT = base.WAIT


class _Holder:
    """A call that holds its turn at ``address`` until released."""

    def __init__(self, gate: bmc.Gate, address: str | None,
                 seconds: float = WAIT) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None

        def run() -> None:
            try:
                with deadline.scope(seconds):
                    with gate.turn(address, node="held"):
                        self.started_at = time.monotonic()
                        self.inside.set()
                        self.release.wait(WAIT)
                        self.ended_at = time.monotonic()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.release.set()
        self.thread.join(WAIT)


class TestGate(base.TestCase):

    def holder(self, gate: bmc.Gate, address: str | None,
               seconds: float = WAIT) -> _Holder:
        held = _Holder(gate, address, seconds)
        self.addCleanup(held.finish)
        return held

    def queued(self, gate: bmc.Gate, count: int) -> None:
        self.assertTrue(base.wait_until(
            lambda: gate.stats()["queued"] == count),
            "expected %d queued call(s): %s" % (count, gate.stats()))

    def test_one_call_at_a_time_per_address(self) -> None:
        gate = bmc.Gate()
        first = self.holder(gate, "10.0.0.1:623")
        self.assertTrue(first.inside.wait(WAIT))
        second = self.holder(gate, "10.0.0.1:623")
        self.queued(gate, 1)
        self.assertFalse(second.inside.is_set())
        first.finish()
        self.assertTrue(second.inside.wait(WAIT))
        second.finish()
        self.assertIsNone(first.error)
        self.assertIsNone(second.error)
        assert second.started_at is not None and first.ended_at is not None
        self.assertGreaterEqual(second.started_at, first.ended_at)

    def test_callers_are_served_in_arrival_order(self) -> None:
        gate = bmc.Gate()
        first = self.holder(gate, "bmc")
        self.assertTrue(first.inside.wait(WAIT))
        order: list[int] = []
        threads = []
        for index in range(4):
            def run(index: int = index) -> None:
                with deadline.scope(WAIT):
                    with gate.turn("bmc"):
                        order.append(index)
            thread = threading.Thread(target=run)
            thread.start()
            threads.append(thread)
            self.queued(gate, index + 1)
        first.finish()
        for thread in threads:
            thread.join(WAIT)
        self.assertEqual([0, 1, 2, 3], order)

    def test_min_interval_between_end_and_next_start(self) -> None:
        gate = bmc.Gate(min_interval=0.2)
        ends, starts = [], []
        for _ in range(3):
            with deadline.scope(WAIT):
                with gate.turn("bmc"):
                    starts.append(time.monotonic())
                    ends.append(time.monotonic())
        for end, start in zip(ends, starts[1:]):
            self.assertGreaterEqual(start - end, 0.2)
        self.assertEqual(2, gate.stats()["waited"])

    def test_min_interval_is_per_address(self) -> None:
        gate = bmc.Gate(min_interval=30)
        with deadline.scope(WAIT):
            with gate.turn("a"):
                pass
            # Another address starts at once: no 30 s wait.
            with gate.turn("b"):
                pass
        self.assertEqual(0, gate.stats()["waited"])

    def test_a_slow_machine_is_not_a_wait(self) -> None:
        # On a loaded machine taking a free turn can take milliseconds;
        # only a call that was held back counts as having waited.
        gate = bmc.Gate(min_interval=30)
        now = [1000.0]

        def slow_clock() -> float:
            now[0] += 0.005
            return now[0]

        with mock.patch.object(time, "monotonic", slow_clock):
            with deadline.scope(WAIT):
                with gate.turn("a"):
                    pass
                with gate.turn("b"):
                    pass
        self.assertEqual({"calls": 2, "waited": 0, "wait_seconds": 0.0},
                         {key: gate.stats()[key] for key in
                          ("calls", "waited", "wait_seconds")})

    def test_busy_address_fails_at_the_deadline(self) -> None:
        gate = bmc.Gate()
        first = self.holder(gate, "10.0.0.9:623")
        self.assertTrue(first.inside.wait(WAIT))
        with deadline.scope(0.2):
            exc = self.assertRaises(bmc.BmcBusy, self.enter, gate,
                                    "10.0.0.9:623")
        self.assertIsInstance(exc, deadline.DeadlineExceeded)
        self.assertIn("node n1 could not start within its 0.2 s deadline",
                      str(exc))
        self.assertIn("BMC 10.0.0.9:623 was busy with 1 call(s)", str(exc))
        # The first call still holds its turn; the refused one left the
        # queue.
        self.assertFalse(first.release.is_set())
        self.assertEqual(0, gate.stats()["queued"])
        self.assertEqual(1, gate.stats()["refused"])
        first.finish()
        with deadline.scope(WAIT):
            self.enter(gate, "10.0.0.9:623")

    def enter(self, gate: bmc.Gate, address: str | None) -> None:
        with gate.turn(address, node="n1"):
            pass

    def test_min_interval_beyond_the_deadline_fails_at_once(self) -> None:
        gate = bmc.Gate(min_interval=30)
        with deadline.scope(WAIT):
            self.enter(gate, "bmc")
        started = time.monotonic()
        with deadline.scope(5):
            exc = self.assertRaises(bmc.BmcBusy, self.enter, gate, "bmc")
        # Refused without waiting for the deadline: the turn could not
        # have come before it.
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("BMC bmc needs bmc_min_interval (30.0 s) between "
                      "calls", str(exc))

    def test_a_refused_waiter_lets_the_next_one_in(self) -> None:
        gate = bmc.Gate()
        first = self.holder(gate, "bmc")
        self.assertTrue(first.inside.wait(WAIT))
        # Long enough that ``patient`` queues behind it even on a loaded
        # machine.
        short = self.holder(gate, "bmc", seconds=1.5)
        self.queued(gate, 1)
        patient = self.holder(gate, "bmc")
        self.queued(gate, 2)
        short.thread.join(WAIT)
        self.assertIsInstance(short.error, bmc.BmcBusy)
        first.finish()
        self.assertTrue(patient.inside.wait(WAIT))

    def test_different_addresses_run_in_parallel(self) -> None:
        self.assert_parallel(bmc.Gate(min_interval=5), "a", "b")

    def test_calls_without_address_are_not_serialised(self) -> None:
        self.assert_parallel(bmc.Gate(min_interval=5), None, None)

    def assert_parallel(self, gate: bmc.Gate, one: str | None,
                        other: str | None) -> None:
        # Both calls must be inside at once for the barrier to open.
        barrier = threading.Barrier(2, timeout=WAIT)
        errors: list[BaseException] = []

        def run(address: str | None) -> None:
            try:
                with deadline.scope(WAIT):
                    with gate.turn(address):
                        barrier.wait()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(address,))
                   for address in (one, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        self.assertEqual([], errors)

    def test_waiting_burns_no_cpu(self) -> None:
        gate = bmc.Gate(min_interval=0.5)
        with deadline.scope(WAIT):
            self.enter(gate, "bmc")
        cpu: list[float] = []

        def run() -> None:
            before = time.thread_time()
            with deadline.scope(WAIT):
                self.enter(gate, "bmc")
            cpu.append(time.thread_time() - before)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(WAIT)
        self.assertEqual(1, gate.stats()["waited"])
        # A polling wait would use most of the 0.5 s it waited.
        self.assertLess(cpu[0], 0.1)

    def test_idle_addresses_are_forgotten(self) -> None:
        gate = bmc.Gate()
        with deadline.scope(WAIT):
            for index in range(50):
                self.enter(gate, "bmc-%d" % index)
        self.assertEqual(0, gate.stats()["addresses"])
        self.assertEqual(50, gate.stats()["calls"])

    def test_spaced_addresses_are_pruned_past_the_threshold(self) -> None:
        self.useFixture_threshold(4)
        gate = bmc.Gate(min_interval=0.01)
        with deadline.scope(WAIT):
            for index in range(4):
                self.enter(gate, "bmc-%d" % index)
        self.assertTrue(base.wait_until(lambda: self.settled(gate)))
        with deadline.scope(WAIT):
            self.enter(gate, "bmc-new")
        self.assertEqual(1, gate.stats()["addresses"])

    def test_pruning_stays_rare_with_many_busy_addresses(self) -> None:
        self.useFixture_threshold(4)
        gate = bmc.Gate(min_interval=30)
        prunes = []
        real = gate._prune

        def counting(now: float) -> None:
            prunes.append(now)
            real(now)

        gate._prune = counting  # type: ignore[method-assign]
        with deadline.scope(WAIT):
            for index in range(8):
                self.enter(gate, "bmc-%d" % index)
        # Nothing could be pruned (every address waits 30 s) at the 5th
        # address; the next prune waits until twice as many are tracked.
        self.assertEqual(1, len(prunes))
        self.assertEqual(8, gate.stats()["addresses"])

    def settled(self, gate: bmc.Gate) -> bool:
        return time.monotonic() > self._last_free(gate)

    @staticmethod
    def _last_free(gate: bmc.Gate) -> float:
        with gate._lock:
            return max(state.free_at for state in gate._addresses.values())

    def useFixture_threshold(self, value: int) -> None:
        old = bmc.PRUNE_THRESHOLD
        bmc.PRUNE_THRESHOLD = value
        self.addCleanup(setattr, bmc, "PRUNE_THRESHOLD", old)

    def test_bad_values_are_refused(self) -> None:
        for kwargs, text in (({"min_interval": -1}, "min_interval"),
                             ({"max_calls_per_second": -2},
                              "max_calls_per_second"),
                             ({"burst": 0}, "burst")):
            exc = self.assertRaises(ValueError, bmc.Gate, **kwargs)
            self.assertIn(text, str(exc))


class TestRateCap(base.TestCase):

    def gate(self, rate: float, burst: int = 1
             ) -> tuple[bmc.Gate, list[float]]:
        pauses: list[float] = []
        sleep: Callable[[float], None] = pauses.append
        # The clock stands still for the test, so each recorded pause is
        # exactly what the cap reserved, however slow the machine is.
        self.useFixture(fixtures.MockPatchObject(
            time, "monotonic", lambda: 1000.0))
        return bmc.Gate(max_calls_per_second=rate, burst=burst,
                        sleep=sleep), pauses

    def calls(self, gate: bmc.Gate, count: int, address: str | None = None,
              seconds: float = WAIT) -> None:
        with deadline.scope(seconds):
            for _ in range(count):
                with gate.turn(address):
                    pass

    def test_calls_are_spread_at_the_cap(self) -> None:
        gate, pauses = self.gate(10)
        # The sleep is recorded, not taken: each call reserves the next
        # start 0.1 s after the previous one.
        self.calls(gate, 5)
        self.assertEqual(4, len(pauses))
        for index, pause in enumerate(pauses, start=1):
            self.assertAlmostEqual(0.1 * index, pause, places=9)

    def test_burst_starts_at_once(self) -> None:
        gate, pauses = self.gate(10, burst=3)
        self.calls(gate, 4)
        self.assertEqual(1, len(pauses))
        self.assertAlmostEqual(0.1, pauses[0], places=9)

    def test_cap_applies_across_addresses(self) -> None:
        gate, pauses = self.gate(10)
        with deadline.scope(WAIT):
            for address in ("a", "b", None):
                with gate.turn(address):
                    pass
        self.assertEqual(2, len(pauses))

    def test_cap_beyond_the_deadline_refuses(self) -> None:
        gate, pauses = self.gate(4)
        self.calls(gate, 2)                   # the next start is 0.5 s away
        with deadline.scope(0.2):
            exc = self.assertRaises(bmc.BmcBusy, self.calls, gate, 1, "bmc",
                                    0.2)
        self.assertIn("max_driver_calls_per_second (4) is reached", str(exc))
        # The refused call reserved nothing and freed its address.
        self.assertEqual(1, len(pauses))
        self.assertEqual(0, gate.stats()["addresses"])
        self.assertEqual(1, gate.stats()["refused"])

    def test_real_sleep_spreads_calls(self) -> None:
        gate = bmc.Gate(max_calls_per_second=20)
        starts = []
        began = time.monotonic()
        with deadline.scope(WAIT):
            for _ in range(5):
                with gate.turn(None):
                    starts.append(time.monotonic())
        # Starts are scheduled 0.05 s apart from the first one's
        # reservation (a late wake-up of one does not delay the next).
        self.assertGreaterEqual(starts[-1] - began, 4 * 0.05)


class TestProcessGate(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(bmc.reset)

    def test_default_gate_has_no_spacing(self) -> None:
        bmc.reset()
        gate = bmc.current()
        self.assertEqual(0.0, gate.min_interval)
        self.assertEqual(0.0, gate.max_calls_per_second)
        self.assertIs(gate, bmc.current())

    def test_configure_replaces_it(self) -> None:
        gate = bmc.configure(1.5, 20)
        self.assertIs(gate, bmc.current())
        self.assertEqual(1.5, gate.min_interval)
        self.assertEqual(20.0, gate.max_calls_per_second)

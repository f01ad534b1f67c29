# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.deadline."""

from __future__ import annotations

import threading
import time

import fixtures

from conductor.common import deadline
from tests import base


def _remaining(**kwargs: float) -> float:
    """deadline.remaining() where a deadline (or default) applies."""
    value = deadline.remaining(**kwargs)
    assert value is not None
    return value


class TestDeadline(base.TestCase):

    def test_outside_scope(self) -> None:
        self.assertIsNone(deadline.remaining())
        self.assertEqual(30, deadline.remaining(default=30))
        deadline.check()

    def test_remaining_inside_scope(self) -> None:
        before = time.monotonic()
        with deadline.scope(100) as expires:
            left = _remaining(default=5)
            self.assertGreater(left, 99)
            self.assertLessEqual(left, 100)
            self.assertGreaterEqual(expires, before + 100)
            deadline.check()
        self.assertIsNone(deadline.remaining())

    def test_a_scope_starts_when_entered_and_restores_the_outer(
            self) -> None:
        clock = [1000.0]
        self.useFixture(fixtures.MockPatch(
            "conductor.common.deadline.time.monotonic",
            side_effect=lambda: clock[0]))
        outer, inner = deadline.scope(50), deadline.scope(10)
        clock[0] = 1005.0
        with outer as outer_expires:
            self.assertEqual(1055.0, outer_expires)
            clock[0] = 1050.0
            # The inner scope is shorter than what is left of the outer.
            with inner as inner_expires:
                self.assertEqual(1055.0, inner_expires)
                self.assertEqual(5.0, deadline.remaining())
                self.assertEqual(50.0, deadline.length())
            self.assertEqual(5.0, deadline.remaining())
            self.assertEqual(50.0, deadline.length())
        self.assertIsNone(deadline.remaining())
        self.assertIsNone(deadline.length())

    def test_expired_scope(self) -> None:
        with deadline.scope(0):
            self.assertEqual(0.0, deadline.remaining())
            exc = self.assertRaises(deadline.DeadlineExceeded,
                                    deadline.check, "Reading node n1")
        self.assertEqual("Reading node n1 did not finish within 0.0 "
                         "seconds.", str(exc))

    def test_nested_shorter_scope_wins(self) -> None:
        with deadline.scope(100):
            with deadline.scope(10):
                self.assertLessEqual(_remaining(), 10)
            self.assertGreater(_remaining(), 10)
        self.assertIsNone(deadline.remaining())

    def test_nested_longer_scope_keeps_outer(self) -> None:
        with deadline.scope(10) as outer:
            with deadline.scope(100) as inner:
                self.assertEqual(outer, inner)
                self.assertLessEqual(_remaining(), 10)
            with deadline.scope(0):
                with deadline.scope(100):
                    exc = self.assertRaises(deadline.DeadlineExceeded,
                                            deadline.check)
                    # The message names the scope that expired.
                    self.assertIn("within 0.0 seconds", str(exc))
            self.assertGreater(_remaining(), 0)

    def test_scope_restored_after_error(self) -> None:
        def fail() -> None:
            with deadline.scope(1):
                raise RuntimeError("boom")

        with deadline.scope(100):
            self.assertRaises(RuntimeError, fail)
            self.assertGreater(_remaining(), 50)
        self.assertIsNone(deadline.remaining())

    def test_scope_is_per_thread(self) -> None:
        seen = []
        with deadline.scope(5):
            thread = threading.Thread(
                target=lambda: seen.append(deadline.remaining()))
            thread.start()
            thread.join()
        self.assertEqual([None], seen)

    def test_connect_timeout_is_a_share_of_the_deadline(self) -> None:
        self.assertIsNone(deadline.connect_timeout())
        self.assertEqual(7.0, deadline.connect_timeout(default=7.0))
        with deadline.scope(10):
            connect = deadline.connect_timeout()
            assert connect is not None
            self.assertAlmostEqual(2.0, connect, places=3)
        with deadline.scope(300):
            self.assertEqual(deadline.CONNECT_MAX,
                             deadline.connect_timeout())
        with deadline.scope(0):
            self.assertEqual(0.0, deadline.connect_timeout())

# SPDX-License-Identifier: Apache-2.0
"""Fakes and helpers shared by the unit tests.

Each of these stood, nearly the same, in several test modules; one copy
here keeps them alike.
"""

from __future__ import annotations

from concurrent import futures
import threading
from typing import Any, Callable

import fixtures
import testtools

from conductor.drivers import base as driver_base
from conductor.executor import pool as pool_mod
from tests import base

#: The uuid of the nodes made by :func:`driver_node` unless told otherwise.
NODE_UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c781"


class FakeClock:
    """A monotonic clock that moves only when told.

    ``on_read``, when set, runs on each read (after the value is taken).
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.on_read: Callable[[], None] | None = None

    def __call__(self) -> float:
        value = self.now
        if self.on_read is not None:
            self.on_read()
        return value

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """A callable that records its calls and, while held, blocks them.

    Calls made while :attr:`release` is clear wait for it (at most
    :data:`tests.base.WAIT`, then fail). Other threads can wait, bounded,
    for a number of calls to have begun (:meth:`wait_calls`).

    :param held: start with :attr:`release` clear.
    """

    def __init__(self, held: bool = False) -> None:
        self.release = threading.Event()
        if not held:
            self.release.set()
        self._cond = threading.Condition()
        #: One item per call, in the order the calls began.
        self.calls: list[Any] = []
        #: The name of the thread of each call.
        self.threads: list[str] = []
        #: Futures of submissions of this recorder, kept by the caller.
        self.futures: list[futures.Future[Any]] = []
        self.active = 0
        self.max_active = 0

    def __call__(self, item: Any = None) -> str:
        with self._cond:
            self.calls.append(item)
            self.threads.append(threading.current_thread().name)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            assert self.release.wait(base.WAIT), "never released"
        finally:
            with self._cond:
                self.active -= 1
        return "done"

    @property
    def entered(self) -> int:
        """How many calls began."""
        with self._cond:
            return len(self.calls)

    def wait_calls(self, count: int) -> bool:
        """Wait (bounded) until ``count`` calls began."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= count,
                                       base.WAIT)


class WatchedCondition(threading.Condition):
    """A Condition that tells when a thread starts waiting on it.

    A test that must show a thread is held back (by a limit, a full pool)
    waits for that thread to block here: a positive signal, where a
    fixed pause would only make it likely.
    """

    def __init__(self, lock: Any) -> None:
        super().__init__(lock)
        self._seen = threading.Condition()
        #: Waits begun on this condition so far.
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        with self._seen:
            self.waits += 1
            self._seen.notify_all()
        return super().wait(timeout)

    def wait_for_waits(self, count: int = 1) -> bool:
        """Wait (bounded) until ``count`` waits began on this condition.

        The waiter holds the condition's lock until it really waits: a
        caller that takes that lock next sees the waiter blocked.
        """
        with self._seen:
            return self._seen.wait_for(lambda: self.waits >= count,
                                       base.WAIT)


def watch_pool(test: testtools.TestCase,
               pool: pool_mod.WorkerPool) -> WatchedCondition:
    """Watch the condition every waiter of a started ``pool`` uses.

    :meth:`WorkerPool.wait_for_free` waits on it. Call before anything
    waits on the pool.
    """
    runtime = pool._runtime()
    watched = WatchedCondition(runtime.lock)
    test.useFixture(fixtures.MockPatchObject(runtime, "cond", watched))
    return watched


def start_pool(test: testtools.TestCase, size: int,
               name: str | None = None) -> pool_mod.WorkerPool:
    """A started WorkerPool, shut down (bounded) when ``test`` ends."""
    pool = pool_mod.WorkerPool(size, name or "test-%d" % size)
    pool.start()
    test.addCleanup(pool.shutdown, wait=True, timeout=base.WAIT)
    return pool


def driver_node(driver: str = "fake", name: str | None = "node-1",
                uuid: str = NODE_UUID,
                driver_info: dict[str, Any] | None = None,
                power_state: str | None = None) -> driver_base.DriverNode:
    """A node as drivers see it."""
    return driver_base.DriverNode(uuid=uuid, name=name, driver=driver,
                                  driver_info=dict(driver_info or {}),
                                  power_state=power_state)


def node_with_info(driver: str, info: dict[str, Any],
                   **changes: Any) -> driver_base.DriverNode:
    """:func:`driver_node` with ``info`` changed: None removes a key."""
    merged = dict(info)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return driver_node(driver, driver_info=merged)

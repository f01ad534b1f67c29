# SPDX-License-Identifier: Apache-2.0
"""Politeness towards BMCs: one call at a time per address, spaced, capped.

Many BMCs answer one request at a time and lose or refuse requests that
arrive too close together (UDP-based IPMI above all). A worker therefore
sends every driver call through its :class:`Gate`::

    gate = bmc.configure(min_interval=1.0, max_calls_per_second=50)
    ...
    with deadline.scope(power_state_timeout):
        with gate.turn("10.0.0.7:623", node=uuid):
            driver.power.get_power_state(node)

- at most one call at a time to one BMC address (as the driver names it,
  ``PowerInterface.bmc_address``), callers served in arrival order;
- ``min_interval`` seconds between the end of one call and the start of
  the next to that address;
- at most ``max_calls_per_second`` call starts per second in the worker
  (a token bucket), whatever their address.

A call waits for its turn inside its deadline: the wait counts against
it, and a call that cannot start before its deadline fails with
:class:`BmcBusy` (a :class:`~conductor.common.deadline.DeadlineExceeded`)
instead of hanging. Waiting threads sleep on a condition or a timed
wait; nothing polls.

A worker is a process: :func:`configure` sets the process's gate in the
worker's ``start()``, and :func:`current` returns it to every code path
that calls a driver (they all go through :func:`conductor.task.
call_driver`), so power sync, power actions and driver periodic tasks
share it.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

from conductor.common import deadline

#: Tracked addresses beyond which idle ones are forgotten.
PRUNE_THRESHOLD = 1024


class BmcBusy(deadline.DeadlineExceeded):
    message = ("The driver call to node %(node)s could not start within "
               "its %(seconds).1f s deadline: %(reason)s")


class _Address:
    """The state of one BMC address; guarded by the gate's lock."""

    __slots__ = ("address", "queue", "busy", "free_at", "cond")

    def __init__(self, address: str, lock: threading.Lock) -> None:
        self.address = address
        #: Callers waiting for this address, in arrival order.
        self.queue: collections.deque[object] = collections.deque()
        self.busy = False
        #: Monotonic time from which the next call may start.
        self.free_at = 0.0
        self.cond = threading.Condition(lock)


class Gate:
    """Serialises and spaces driver calls per BMC address; caps the rate.

    :param min_interval: seconds between the end of a call to an address
        and the start of the next one to it (0: back to back).
    :param max_calls_per_second: call starts per second allowed over all
        addresses, calls without an address included (0: no cap).
    :param burst: calls that may start back to back under the cap after
        an idle spell (the token bucket's size; at least 1).
    :param sleep: how a caller waits for a token (tests replace it).
    """

    def __init__(self, min_interval: float = 0.0,
                 max_calls_per_second: float = 0.0, burst: int = 1,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must be >= 0, got %r"
                             % (min_interval,))
        if max_calls_per_second < 0:
            raise ValueError("max_calls_per_second must be >= 0, got %r"
                             % (max_calls_per_second,))
        if burst < 1:
            raise ValueError("burst must be >= 1, got %r" % (burst,))
        self.min_interval = float(min_interval)
        self.max_calls_per_second = float(max_calls_per_second)
        self._burst = burst
        self._sleep = sleep
        # NOTE: guards every attribute below, and each address's
        # condition is built on it; the driver call itself and the wait
        # for a token run outside it.
        self._lock = threading.Lock()
        self._addresses: dict[str, _Address] = {}
        # Prune idle addresses when there are this many (doubled when a
        # prune leaves many, so that pruning stays rare).
        self._prune_at = PRUNE_THRESHOLD
        # The token bucket as a schedule: the earliest time the next call
        # may start if the bucket were full is _next_token - tolerance.
        self._next_token = 0.0
        self._calls = 0
        self._waited = 0
        self._wait_seconds = 0.0
        self._refused = 0
        #: Callers waiting for an address right now.
        self._queued = 0

    def turn(self, address: str | None, node: str = "?") -> "_Turn":
        """Wait for this call's turn, then hold it for the ``with`` block.

        ``with gate.turn(address, node):``. Call inside a
        :func:`deadline.scope`: the wait is bounded by it.

        :param address: the BMC address (None: the call is only counted
            against the rate cap).
        :param node: named in errors.
        :raises BmcBusy: when the turn cannot come before the deadline
            (nothing was called then).
        """
        return _Turn(self, address, node)

    def _take_turn(self, address: str | None,
                   node: str) -> _Address | None:
        """Wait for the turn (see :meth:`turn`); the address's state."""
        started = time.monotonic()
        state = None
        # Counted as waited only when the call really blocked (on a busy
        # address, its interval or the rate cap), not when a loaded
        # machine was merely slow to hand it the lock.
        blocked = False
        try:
            if address is not None:
                state, blocked = self._enter(address, node)
            if self.max_calls_per_second > 0:
                blocked = self._take_token(node) or blocked
        except BmcBusy:
            if state is not None:
                self._leave(state, called=False)
            with self._lock:
                self._refused += 1
            raise
        except BaseException:
            if state is not None:
                self._leave(state, called=False)
            raise
        with self._lock:
            self._calls += 1
            if blocked:
                self._waited += 1
                self._wait_seconds += time.monotonic() - started
        return state

    def stats(self) -> dict[str, Any]:
        """Counters since the gate was built (JSON-safe)."""
        with self._lock:
            return {"min_interval": self.min_interval,
                    "max_calls_per_second": self.max_calls_per_second,
                    "calls": self._calls, "waited": self._waited,
                    "wait_seconds": round(self._wait_seconds, 3),
                    "refused": self._refused, "queued": self._queued,
                    "addresses": len(self._addresses)}

    # -- per address ---------------------------------------------------

    def _enter(self, address: str, node: str) -> tuple[_Address, bool]:
        """Wait for the address; its state, and whether it had to wait."""
        me = object()
        blocked = False
        with self._lock:
            state = self._addresses.get(address)
            if state is None:
                if len(self._addresses) >= self._prune_at:
                    self._prune(time.monotonic())
                state = _Address(address, self._lock)
                self._addresses[address] = state
            state.queue.append(me)
            self._queued += 1
            try:
                while True:
                    pause = self._pause(state, me)
                    if pause is not None and pause <= 0:
                        break
                    left = deadline.remaining()
                    if left is not None:
                        if left <= 0 or (pause is not None and pause > left):
                            raise self._busy(node, address, state, pause)
                        pause = left if pause is None else pause
                    blocked = True
                    state.cond.wait(pause)
            except BaseException:
                self._queued -= 1
                state.queue.remove(me)
                state.cond.notify_all()
                self._forget_if_idle(state)
                raise
            self._queued -= 1
            state.queue.popleft()
            state.busy = True
            return state, blocked

    def _pause(self, state: _Address, me: object) -> float | None:
        """Seconds until ``me`` may start (<= 0: now); None: unknown."""
        if state.busy or state.queue[0] is not me:
            return None
        return state.free_at - time.monotonic()

    def _busy(self, node: str, address: str, state: _Address,
              pause: float | None) -> BmcBusy:
        ahead = len(state.queue) - 1 + (1 if state.busy else 0)
        if pause is not None:
            reason = ("BMC %s needs bmc_min_interval (%.1f s) between calls"
                      " and is free again in %.1f s" % (
                          address, self.min_interval, pause))
        else:
            reason = ("BMC %s was busy with %d call(s) before it the whole "
                      "time (one call at a time per BMC, bmc_min_interval "
                      "%.1f s)" % (address, ahead, self.min_interval))
        return BmcBusy(node=node, reason=reason,
                       seconds=float(deadline.length() or 0.0))

    def _leave(self, state: _Address, called: bool) -> None:
        with self._lock:
            state.busy = False
            if called:
                state.free_at = time.monotonic() + self.min_interval
            state.cond.notify_all()
            if not state.queue and self.min_interval <= 0:
                self._addresses.pop(state.address, None)

    def _forget_if_idle(self, state: _Address) -> None:
        if (not state.queue and not state.busy
                and state.free_at <= time.monotonic()):
            self._addresses.pop(state.address, None)

    def _prune(self, now: float) -> None:
        for address, state in list(self._addresses.items()):
            if not state.queue and not state.busy and state.free_at <= now:
                del self._addresses[address]
        self._prune_at = max(PRUNE_THRESHOLD, 2 * len(self._addresses))

    # -- rate cap ------------------------------------------------------

    def _take_token(self, node: str) -> bool:
        """Reserve the next start time under the cap; sleep until it.

        :returns: whether it had to sleep.
        """
        spacing = 1.0 / self.max_calls_per_second
        tolerance = (self._burst - 1) * spacing
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_token - tolerance)
            pause = start - now
            left = deadline.remaining()
            if left is not None and pause > left:
                raise BmcBusy(
                    node=node, seconds=float(deadline.length() or 0),
                    reason="max_driver_calls_per_second (%g) is reached; "
                           "the next free start is %.1f s away" % (
                               self.max_calls_per_second, pause))
            self._next_token = max(now, self._next_token) + spacing
        if pause > 0:
            self._sleep(pause)
        return pause > 0


class _Turn:
    """One call's turn at its BMC (see :meth:`Gate.turn`).

    A class rather than a generator: every driver call enters one.
    """

    __slots__ = ("_gate", "_address", "_node", "_state")

    def __init__(self, gate: Gate, address: str | None, node: str) -> None:
        self._gate = gate
        self._address = address
        self._node = node
        self._state: _Address | None = None

    def __enter__(self) -> None:
        self._state = self._gate._take_turn(self._address, self._node)

    def __exit__(self, *exc_info: object) -> None:
        state, self._state = self._state, None
        if state is not None:
            self._gate._leave(state, called=True)


_GATE: Gate | None = None
_GATE_LOCK = threading.Lock()


def configure(min_interval: float = 0.0,
              max_calls_per_second: float = 0.0) -> Gate:
    """Give this process (one worker) a new gate; returns it."""
    global _GATE
    with _GATE_LOCK:
        _GATE = Gate(min_interval, max_calls_per_second)
        return _GATE


def current() -> Gate:
    """This process's gate (a default one, no spacing nor cap, if unset)."""
    global _GATE
    gate = _GATE
    if gate is not None:
        # NOTE: every driver call asks; once set, no lock is needed.
        return gate
    with _GATE_LOCK:
        if _GATE is None:
            _GATE = Gate()
        return _GATE


def reset() -> None:
    """Forget this process's gate (for tests)."""
    global _GATE
    with _GATE_LOCK:
        _GATE = None

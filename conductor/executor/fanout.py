# SPDX-License-Identifier: Apache-2.0
"""The one bounded fan-out over a worker's pool: many items, a few lanes.

Power-sync sweeps and node periodic tasks make one call per item (a
node) on the worker's shared :class:`~conductor.executor.pool.WorkerPool`.
Both do it here::

    fan = FanOut(pool, limit=8, stop=stop, call_timeout=30.0)
    report = fan.run(rows, read_power_state)
    for row, state in report.results:
        ...
    for row in report.abandoned:
        ...     # calls still running past call_timeout + WATCHDOG_GRACE

**Lanes.** ``run`` runs up to ``limit`` lanes; each lane takes the next
item, calls ``fn(item)``, and goes on until no item is left. A fan-out
over thousands of items therefore costs one thread hand-off per lane, not
per item, and never more than ``limit`` calls run at once. Without a
watchdog the caller's own thread is one of the lanes.

**The free-thread rule** (stated here only, by :func:`lane_limit` and
:func:`spare_threads`): a fan-out leaves at least one thread of its pool
free. It is started from a pool thread itself (a periodic task), and the
worker's other periodic tasks and power actions need a thread to start
on. When the pool has no thread to spare, the caller runs the one lane
itself, so the items are never silently skipped.

**The watchdog.** With ``call_timeout``, the caller's thread watches the
lanes while they run: a call still running ``WATCHDOG_GRACE`` seconds
past ``call_timeout`` (a driver that ignores its deadline) is abandoned:
its item is reported in :attr:`Report.abandoned`, whatever it returns
later is ignored, and a new lane replaces the stuck one, so one hung BMC
never holds up the other items.

The pool abandons such a call on its own too (see
:mod:`conductor.executor.pool`): its thread leaves the pool's count, so
the replacement lane finds a free thread; a lane whose thread left the
count takes no further item.

**Suspect items.** With ``suspect`` (a predicate: a node that failed or
whose last call was abandoned), suspect items run on their own bounded
share of the lanes (``suspect_lanes``, a quarter of the lanes by
default): healthy items go first on the other lanes and never wait
behind a suspect one; a healthy lane helps with suspect items only once
every healthy item was taken.

**Stop.** Once ``stop`` is set, lanes take no new item; ``run`` returns
when the calls already made have returned (or were abandoned).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from typing import (Any, Callable, Generic, Iterable, Iterator, Sized,
                    TypeVar)

from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.executor import pool as pool_mod

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

#: Seconds the watchdog allows a call past ``call_timeout`` before it
#: abandons it.
WATCHDOG_GRACE = 1.0

_NOTHING: Any = object()


def lane_limit(pool_size: int, wanted: int) -> int:
    """The most lanes a fan-out may run on a pool of ``pool_size`` threads.

    The free-thread rule: at most ``pool_size - 1``, so that one thread
    stays free for the pool's other users, and at least 1 (run in the
    caller's thread when no pool thread can be spared).
    """
    return max(1, min(wanted, pool_size - 1))


def spare_threads(pool: pool_mod.WorkerPool) -> int:
    """Threads of ``pool`` a fan-out may take now: all free ones but one."""
    return pool.free - 1


def suspect_share(lanes: int) -> int:
    """Lanes a fan-out of ``lanes`` lanes gives suspect items by default.

    A quarter, at least 1; with a single lane, that lane does both
    (healthy items first).
    """
    return max(1, lanes // 4)


@dataclasses.dataclass
class Report(Generic[_T, _R]):
    """What one :meth:`FanOut.run` did."""

    #: ``(item, fn(item))`` for every call that returned, in order of
    #: completion; a call that raised is logged and left out.
    results: list[tuple[_T, _R]] = dataclasses.field(default_factory=list)
    #: Items whose call outlived ``call_timeout`` + grace.
    abandoned: list[_T] = dataclasses.field(default_factory=list)
    #: Calls that raised an exception (logged).
    errors: int = 0
    #: Items taken by a lane: the calls made.
    taken: int = 0
    #: Suspect items among them.
    suspect_taken: int = 0
    #: Lanes that ran, replacements of abandoned ones included.
    lanes: int = 0
    #: True when the caller's thread was a lane (no watchdog, or a full
    #: pool).
    inline: bool = False
    #: Most calls in flight at once.
    peak: int = 0
    #: Clock readings at the first call's start and the last call's end.
    first: float | None = None
    last: float | None = None

    @property
    def seconds(self) -> float:
        """From the first call's start to the last call's end."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first


class _Run(Generic[_T, _R]):
    """The shared state of one :meth:`FanOut.run`."""

    def __init__(self, items: Iterator[_T], fn: Callable[[_T], _R],
                 clock: Callable[[], float],
                 suspect: Iterator[_T] | None = None) -> None:
        self.items = items
        self.suspect_items = suspect
        self.suspect_left = suspect is not None
        #: Lanes that take suspect items only.
        self.suspect_lanes: set[int] = set()
        self.fn = fn
        self.clock = clock
        # NOTE: guards everything below, and the ``items`` iterator
        # (pulled by one lane at a time); never held during a call.
        self.lock = threading.Lock()
        self.report: Report[_T, _R] = Report()
        self.exhausted = False
        self.source_error: BaseException | None = None
        #: lane id -> (item, started) of the call it is making.
        self.in_flight: dict[int, tuple[_T, float]] = {}
        self.abandoned: set[int] = set()
        self.live = 0
        self.calls = 0
        self.done = threading.Event()

    def take(self, lane: int) -> _T:
        """The next item for ``lane``, or _NOTHING."""
        with self.lock:
            if lane in self.abandoned:
                return _NOTHING
            item = _NOTHING
            if not self.exhausted and lane not in self.suspect_lanes:
                try:
                    item = next(self.items)
                except StopIteration:
                    self.exhausted = True
                except Exception as exc:
                    # NOTE: raised again by run(), in the caller's thread.
                    self.exhausted = True
                    self.suspect_left = False
                    self.source_error = exc
                    return _NOTHING
            if item is _NOTHING and self.suspect_left:
                assert self.suspect_items is not None
                item = next(self.suspect_items, _NOTHING)
                if item is _NOTHING:
                    self.suspect_left = False
                else:
                    self.report.suspect_taken += 1
            if item is _NOTHING:
                return _NOTHING
            now = self.clock()
            self.in_flight[lane] = (item, now)
            self.calls += 1
            report = self.report
            report.taken += 1
            report.peak = max(report.peak, self.calls)
            if report.first is None:
                report.first = now
            return item

    def finish(self, lane: int, item: _T, result: _R) -> bool:
        """Record ``lane``'s call; False when the lane was abandoned."""
        with self.lock:
            self.calls -= 1
            self.report.last = self.clock()
            self.in_flight.pop(lane, None)
            if lane in self.abandoned:
                return False
            if result is not _NOTHING:
                self.report.results.append((item, result))
            else:
                self.report.errors += 1
            return True

    def lane_started(self, lane: int, suspect: bool = False) -> None:
        with self.lock:
            if suspect:
                self.suspect_lanes.add(lane)
            self.live += 1
            self.report.lanes += 1
            # NOTE: the watchdog may have set ``done`` when it abandoned
            # the last live lane; a lane replacing it keeps the run going.
            self.done.clear()

    def lane_ended(self, lane: int) -> None:
        with self.lock:
            if lane in self.abandoned:
                return
            self.suspect_lanes.discard(lane)
            self.live -= 1
            if self.live <= 0:
                self.done.set()

    def overdue(self, limit: float) -> list[_T]:
        """Abandon the lanes whose call started before ``limit``."""
        stuck = []
        with self.lock:
            for lane, (item, started) in list(self.in_flight.items()):
                if started < limit and lane not in self.abandoned:
                    self.abandoned.add(lane)
                    self.suspect_lanes.discard(lane)
                    self.in_flight.pop(lane)
                    self.live -= 1
                    self.report.abandoned.append(item)
                    stuck.append(item)
            if self.live <= 0:
                self.done.set()
        return stuck

    @property
    def more(self) -> bool:
        with self.lock:
            return not self.exhausted or self.suspect_left

    def lanes_wanted(self, limit: int, share: int) -> tuple[int, int]:
        """(healthy, suspect) lanes to add to reach ``limit`` lanes.

        Suspect lanes get at most ``share`` (and leave one lane to
        healthy items while some are left); healthy lanes the rest.
        """
        with self.lock:
            live_suspect = len(self.suspect_lanes)
            live_healthy = self.live - live_suspect
            want_suspect = 0
            if self.suspect_left:
                want_suspect = (share if self.exhausted
                                else min(share, limit - 1))
            want_healthy = 0 if self.exhausted else limit - want_suspect
            return (max(0, want_healthy - live_healthy),
                    max(0, want_suspect - live_suspect))


class FanOut(Generic[_T, _R]):
    """Calls ``fn(item)`` for many items on at most ``limit`` lanes.

    See the module documentation. One instance may run several times,
    one run at a time.

    :param pool: the worker's pool; started, and owned by the caller.
    :param limit: lanes wanted, an integer >= 1; capped by
        :func:`lane_limit`.
    :param stop: once set, no new item is taken.
    :param call_timeout: seconds after which (plus
        :data:`WATCHDOG_GRACE`) a call is abandoned; None: no watchdog.
    :param clock: monotonic clock for the watchdog and the timings.
    :param watchdog_interval: seconds between the watchdog's checks.
    :param name: names the fan-out in log lines.
    :param suspect_lanes: the most lanes suspect items get (see the
        module documentation); None: :func:`suspect_share` of the lanes.
    :raises ValueError: when ``limit`` is not an integer >= 1, or
        ``suspect_lanes`` not one >= 1.
    """

    def __init__(self, pool: pool_mod.WorkerPool, limit: int, *,
                 stop: threading.Event,
                 call_timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 watchdog_interval: float = 0.5,
                 name: str = "fan-out",
                 suspect_lanes: int | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                "fan-out limit must be an integer >= 1, got %r" % (limit,))
        if suspect_lanes is not None and (
                isinstance(suspect_lanes, bool)
                or not isinstance(suspect_lanes, int) or suspect_lanes < 1):
            raise ValueError("fan-out suspect_lanes must be an integer "
                             ">= 1, got %r" % (suspect_lanes,))
        self._pool = pool
        #: Lanes this fan-out runs at most.
        self.limit = lane_limit(pool.size, limit)
        #: Lanes suspect items get at most.
        self.suspect_lanes = min(self.limit, suspect_lanes or
                                 suspect_share(self.limit))
        self._stop = stop
        self._timeout = call_timeout
        self._clock = clock
        self._interval = watchdog_interval
        self._name = name

    def run(self, items: Iterable[_T], fn: Callable[[_T], _R],
            suspect: Callable[[_T], bool] | None = None
            ) -> Report[_T, _R]:
        """Call ``fn`` on every item (until stopped); see the module doc.

        ``fn`` should handle its own errors; an exception it raises is
        logged with the item and counted in :attr:`Report.errors`.
        ``items`` may be a generator: it is pulled by one lane at a time
        and closed at the end; an exception it raises is raised here
        once the calls in flight are done.

        :param suspect: when given, items for which it is true run on
            the suspect share of the lanes (``items`` is read whole
            first then).
        """
        risky: list[_T] | None = None
        if suspect is not None:
            healthy: list[_T] = []
            risky = []
            for item in items:
                (risky if suspect(item) else healthy).append(item)
            items = healthy
        source = iter(items)
        run: _Run[_T, _R] = _Run(
            source, fn, self._clock,
            iter(risky) if risky else None)
        if risky is not None and not items:
            run.exhausted = True
        wanted = self.limit
        if isinstance(items, Sized):
            wanted = min(wanted, len(items) + len(risky or ()))
        lane_ids = itertools.count()
        try:
            if wanted <= 0:
                return run.report
            # NOTE: without a watchdog the caller is a lane itself.
            caller_lane = self._timeout is None
            started = self._top_up(run, lane_ids, wanted - caller_lane)
            if caller_lane or started == 0:
                self._inline(run, next(lane_ids))
                run.done.wait()
            else:
                self._watch(run, lane_ids, wanted)
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
        if run.source_error is not None:
            raise run.source_error
        return run.report

    def _top_up(self, run: _Run[_T, _R], lane_ids: Iterator[int],
                limit: int) -> int:
        """Start lanes up to ``limit`` (suspect ones first); how many."""
        if limit <= 0:
            return 0
        healthy, suspect = run.lanes_wanted(limit, self.suspect_lanes)
        started = 0
        for kind, count in ((True, suspect), (False, healthy)):
            for _ in range(count):
                if spare_threads(self._pool) <= 0:
                    return started
                if not self._start_lane(run, next(lane_ids), kind):
                    return started
                started += 1
        return started

    def _inline(self, run: _Run[_T, _R], lane: int) -> None:
        run.report.inline = True
        run.lane_started(lane)
        self._lane(run, lane, inline=True)

    def _watch(self, run: _Run[_T, _R], lane_ids: Iterator[int],
               wanted: int) -> None:
        assert self._timeout is not None
        while not run.done.wait(self._interval):
            # NOTE: let the pool abandon the driver calls past their
            # deadline now, not at its own next look: their threads leave
            # its count (room for replacement lanes) and their nodes are
            # blocked before this sweep ends.
            self._pool.reap()
            limit = self._clock() - self._timeout - WATCHDOG_GRACE
            for item in run.overdue(limit):
                # NOTE: the pool logs one WARNING per batch of abandoned
                # driver calls; this line only follows the lanes.
                LOG.debug("%(name)s: a call on %(item)s still running "
                          "after %(secs).1fs; its lane is replaced",
                          {"name": self._name,
                           "item": getattr(item, "uuid", item),
                           "secs": self._timeout})
            if run.more and not self._stop.is_set():
                # NOTE: replace abandoned lanes as soon as the pool has a
                # thread again (it frees the slot of an abandoned call).
                self._top_up(run, lane_ids, wanted)
        if run.more and not self._stop.is_set():
            # NOTE: every lane was abandoned and no replacement could
            # start: finish in this thread rather than skip the rest.
            self._inline(run, next(lane_ids))

    def _start_lane(self, run: _Run[_T, _R], lane: int,
                    suspect: bool = False) -> bool:
        run.lane_started(lane, suspect)
        try:
            self._pool.submit(self._lane, run, lane)
            return True
        except (exceptions.NoFreeWorker, RuntimeError):
            with run.lock:
                run.report.lanes -= 1
            run.lane_ended(lane)
            return False

    def _lane(self, run: _Run[_T, _R], lane: int,
              inline: bool = False) -> None:
        # NOTE: a lane on a pool thread whose call the pool abandoned
        # leaves (the watchdog starts another); the caller's own lane and
        # lanes of a fan-out without watchdog have no replacement.
        leave = self._timeout is not None and not inline
        try:
            while not self._stop.is_set() and not (
                    leave and pool_mod.detached()):
                item = run.take(lane)
                if item is _NOTHING:
                    return
                try:
                    result = run.fn(item)
                except Exception as exc:
                    if not conductor_log.database_failed(self._name, exc):
                        LOG.exception("%(name)s: the call on %(item)s "
                                      "failed",
                                      {"name": self._name,
                                       "item": getattr(item, "uuid", item)})
                    result = _NOTHING
                if not run.finish(lane, item, result):
                    return      # abandoned: a new lane took over
        finally:
            run.lane_ended(lane)

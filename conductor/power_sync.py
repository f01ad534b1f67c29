"""Power-state sync: read every owned node's power state, record changes.

One sweep (the ``sync_power_states`` periodic)::

    rows   = one query: unreserved, non-maintenance nodes of enabled drivers
    mine   = rows this worker owns (ownership rings), recent failures first
    lanes  = P pool tasks, each taking the next node and calling its driver
             under the power_state_timeout deadline, until none is left
    writes = only what changed, in one transaction

Lanes pull from a shared queue instead of submitting one future per node:
a sweep over thousands of nodes costs one thread hand-off per lane, not per
node. A call still running past its deadline (a driver that ignores
``deadline.remaining()``) is counted as a failure by a watchdog, and a new
lane replaces the stuck one, so one hung BMC never slows the others.

A read that fails increments the node's durable ``power_sync_failures``;
beyond ``max_retries`` the node enters maintenance with fault
:data:`POWER_FAILURE`. The ``recover_power_failures`` periodic reads those
nodes' BMCs and clears the fault when they answer.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from conductor.common import deadline
from conductor.common import exceptions
from conductor.common import pool as worker_pool
from conductor.db import api as db_api
from conductor.drivers import base
from conductor import ownership
from conductor import states

LOG = logging.getLogger(__name__)

#: The ``fault`` of a node put into maintenance by power sync.
POWER_FAILURE = "power failure"
#: Extra seconds the watchdog allows past the deadline before giving up.
WATCHDOG_GRACE = 1.0


@dataclasses.dataclass(frozen=True)
class SyncSettings:
    """Plain values power sync reads from ``[conductor]``."""

    workers: int
    timeout: float
    max_retries: int
    force: bool


@dataclasses.dataclass
class SweepResult:
    """What one sweep did; logged, and kept for ``status``."""

    kind: str
    nodes: int = 0
    failures: int = 0
    changed: int = 0
    forced: int = 0
    to_maintenance: int = 0
    recovered: int = 0
    lanes: int = 0
    peak_calls: int = 0
    #: First driver call start to last driver call end (seconds).
    seconds: float = 0.0
    #: Whole sweep, query and writes included (seconds).
    total_seconds: float = 0.0
    finished_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Outcome:
    row: db_api.SyncRow
    state: str | None = None
    error: str | None = None


class _Sweep:
    """One sweep's shared state: the queue, the lanes, the outcomes."""

    def __init__(self, rows: list[db_api.SyncRow], timeout: float,
                 clock: Callable[[], float]) -> None:
        self.clock = clock
        self.timeout = timeout
        # NOTE: guards queue, outcomes, in_flight, calls, peak, first/last.
        self.lock = threading.Lock()
        self.queue = collections.deque(rows)
        self.outcomes: dict[str, _Outcome] = {}
        #: lane id -> (row, started) of the call it is making.
        self.in_flight: dict[int, tuple[db_api.SyncRow, float]] = {}
        self.abandoned: set[int] = set()
        self.calls = 0
        self.peak = 0
        self.first: float | None = None
        self.last: float | None = None
        self.done = threading.Event()
        self.live_lanes = 0

    def take(self, lane: int) -> db_api.SyncRow | None:
        with self.lock:
            if lane in self.abandoned or not self.queue:
                return None
            row = self.queue.popleft()
            now = self.clock()
            self.in_flight[lane] = (row, now)
            self.calls += 1
            self.peak = max(self.peak, self.calls)
            if self.first is None:
                self.first = now
            return row

    def finish(self, lane: int, outcome: _Outcome) -> bool:
        with self.lock:
            self.calls -= 1
            self.last = self.clock()
            self.in_flight.pop(lane, None)
            if lane in self.abandoned:
                return False
            self.outcomes.setdefault(outcome.row.uuid, outcome)
            return True

    def lane_exit(self) -> None:
        with self.lock:
            self.live_lanes -= 1
            if self.live_lanes <= 0:
                self.done.set()

    def overdue(self) -> list[tuple[int, db_api.SyncRow]]:
        """Abandon lanes whose call outlived the deadline plus grace."""
        limit = self.clock() - self.timeout - WATCHDOG_GRACE
        stuck = []
        with self.lock:
            for lane, (row, started) in list(self.in_flight.items()):
                if started < limit and lane not in self.abandoned:
                    self.abandoned.add(lane)
                    self.live_lanes -= 1
                    self.outcomes[row.uuid] = _Outcome(
                        row, error="Power state read did not return within "
                                   "%.1f seconds" % self.timeout)
                    stuck.append((lane, row))
            if self.live_lanes <= 0:
                self.done.set()
        return stuck


class PowerSync:
    """Power-state sync and failure recovery for one worker.

    :param db: the worker's database connection.
    :param drivers: enabled drivers by name.
    :param rings: this worker's ownership view.
    :param pool: the worker's bounded pool (lanes run on it).
    :param settings: see :class:`SyncSettings`.
    :param stop: set when the worker stops; sweeps end early.
    :param clock: monotonic clock for deadlines and durations.
    :param watchdog_interval: seconds between the watchdog's checks for
        calls past their deadline (and for the stop request).
    """

    def __init__(self, db: db_api.Connection,
                 drivers: Mapping[str, base.BaseDriver],
                 rings: ownership.Rings, pool: worker_pool.WorkerPool,
                 settings: SyncSettings, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic,
                 watchdog_interval: float = 0.5) -> None:
        self._db = db
        self._drivers = dict(drivers)
        self._rings = rings
        self._pool = pool
        self._settings = settings
        self._stop = stop
        self._clock = clock
        self._watchdog_interval = watchdog_interval
        #: The last finished sweep of each kind ("sync", "recovery").
        self.last: dict[str, SweepResult] = {}

    # -- the two periodic bodies ---------------------------------------

    def sync(self) -> SweepResult:
        """One power-sync sweep over owned, healthy, unreserved nodes."""
        started = self._clock()
        self._refresh_rings()
        rows = self._db.sync_rows(drivers=list(self._drivers))
        mine = [row for row in rows if self._rings.owns(row.uuid)]
        # NOTE: nodes that failed recently go first, so a flapping BMC is
        # retried (and put into maintenance) without waiting a sweep.
        mine.sort(key=lambda row: -row.power_sync_failures)
        result = SweepResult(kind="sync", nodes=len(mine))
        outcomes = self._run_lanes(mine, result)
        changes, drifted = self._sync_changes(outcomes, result)
        result.changed = self._db.apply_sync_results(changes)
        if drifted:
            result.forced = self._force_states(drifted)
        return self._finish(result, started)

    def recover(self) -> SweepResult:
        """Clear the power-failure fault of owned nodes whose BMC answers."""
        started = self._clock()
        self._refresh_rings()
        rows = self._db.sync_rows(drivers=list(self._drivers),
                                  maintenance=True, fault=POWER_FAILURE)
        mine = [row for row in rows if self._rings.owns(row.uuid)]
        result = SweepResult(kind="recovery", nodes=len(mine))
        outcomes = self._run_lanes(mine, result)
        changes = []
        for outcome in outcomes:
            if outcome.error is not None:
                continue
            change = {"uuid": outcome.row.uuid, "maintenance": False,
                      "maintenance_reason": None, "fault": None,
                      "power_sync_failures": 0, "last_error": None,
                      "expected_version": outcome.row.version}
            if outcome.state != outcome.row.power_state:
                change["power_state"] = outcome.state
            changes.append(change)
            LOG.info("Node %(node)s: BMC answers again (%(state)s); "
                     "leaving maintenance", {"node": outcome.row.uuid,
                                             "state": outcome.state})
        result.recovered = self._db.apply_sync_results(changes)
        return self._finish(result, started)

    # -- machinery -----------------------------------------------------

    def _refresh_rings(self) -> None:
        if self._rings.refresh():
            self._rings.release_dead_reservations(self._db.node_uuids())

    def _finish(self, result: SweepResult, started: float) -> SweepResult:
        result.total_seconds = self._clock() - started
        result.finished_at = time.time()
        self.last[result.kind] = result
        if result.nodes or result.kind == "sync":
            LOG.info("Power %(kind)s sweep: %(nodes)d node(s) in "
                     "%(secs).3fs (calls) / %(total).3fs (total), "
                     "%(failures)d failure(s), %(changed)d change(s), "
                     "%(maint)d to maintenance, %(rec)d recovered, "
                     "%(lanes)d lane(s), peak %(peak)d concurrent call(s)",
                     {"kind": result.kind, "nodes": result.nodes,
                      "secs": result.seconds, "total": result.total_seconds,
                      "failures": result.failures,
                      "changed": result.changed + result.forced,
                      "maint": result.to_maintenance,
                      "rec": result.recovered, "lanes": result.lanes,
                      "peak": result.peak_calls})
        return result

    def _lane_count(self, nodes: int) -> int:
        # NOTE: one pool thread stays free for the periodic loop's other
        # tasks; the sweep itself runs on a pool thread too.
        free = max(1, self._pool.free - 1)
        return max(0, min(self._settings.workers, nodes, free))

    def _run_lanes(self, rows: list[db_api.SyncRow],
                   result: SweepResult) -> list[_Outcome]:
        if not rows:
            return []
        sweep = _Sweep(rows, self._settings.timeout, self._clock)
        wanted = self._lane_count(len(rows))
        lane_ids = iter(range(1 << 30))
        started = 0
        for _ in range(wanted):
            if self._start_lane(sweep, next(lane_ids)):
                started += 1
        if started == 0:
            # NOTE: the pool is full: poll inline rather than skip the
            # sweep, so nodes are never silently left unpolled.
            sweep.live_lanes += 1
            self._lane(sweep, next(lane_ids))
        result.lanes = max(started, 1)
        while not sweep.done.wait(self._watchdog_interval):
            for lane, row in sweep.overdue():
                LOG.warning("Node %(node)s: power state read still running "
                            "after %(secs).1fs; counted as a failure",
                            {"node": row.uuid, "secs": sweep.timeout})
                if sweep.queue and self._start_lane(sweep, next(lane_ids)):
                    result.lanes += 1
            if self._stop.is_set():
                with sweep.lock:
                    sweep.queue.clear()
        result.peak_calls = sweep.peak
        if sweep.first is not None and sweep.last is not None:
            result.seconds = sweep.last - sweep.first
        outcomes = list(sweep.outcomes.values())
        result.failures = sum(1 for o in outcomes if o.error is not None)
        return outcomes

    def _start_lane(self, sweep: _Sweep, lane: int) -> bool:
        with sweep.lock:
            sweep.live_lanes += 1
            # NOTE: the watchdog may have set ``done`` when it abandoned
            # the last live lane; a lane replacing it must keep the sweep
            # going until the queue is drained, or the nodes still queued
            # would silently go unpolled.
            sweep.done.clear()
        try:
            self._pool.submit(self._lane, sweep, lane)
            return True
        except (exceptions.NoFreeWorker, RuntimeError):
            sweep.lane_exit()
            return False

    def _lane(self, sweep: _Sweep, lane: int) -> None:
        try:
            while not self._stop.is_set():
                row = sweep.take(lane)
                if row is None:
                    return
                outcome = self._read(row)
                if not sweep.finish(lane, outcome):
                    return  # abandoned by the watchdog: a new lane took over
        finally:
            with sweep.lock:
                abandoned = lane in sweep.abandoned
            if not abandoned:
                sweep.lane_exit()

    def _read(self, row: db_api.SyncRow) -> _Outcome:
        driver = self._drivers[row.driver]
        node = base.DriverNode(row.uuid, row.name, row.driver,
                               row.driver_info, row.power_state)
        try:
            with deadline.scope(self._settings.timeout):
                state = driver.power.get_power_state(node)
            if state == states.ERROR:
                # NOTE: the BMC answered but cannot tell the state: that is
                # a failed read, retried and counted like any other.
                raise exceptions.PowerStateFailure(
                    err="the BMC reports power state 'error'")
            if state not in states.STABLE_POWER_STATES:
                raise exceptions.PowerStateFailure(
                    err="driver %s returned an invalid power state %r"
                        % (row.driver, state))
            return _Outcome(row, state=state)
        except Exception as exc:
            return _Outcome(row, error=_error_text(exc))

    def _sync_changes(self, outcomes: Iterable[_Outcome],
                      result: SweepResult
                      ) -> tuple[list[dict[str, Any]], list[_Outcome]]:
        changes: list[dict[str, Any]] = []
        drifted: list[_Outcome] = []
        max_retries = self._settings.max_retries
        for outcome in outcomes:
            row = outcome.row
            change: dict[str, Any] = {}
            if outcome.error is not None:
                failures = row.power_sync_failures + 1
                change = {"power_sync_failures": failures,
                          "last_error": outcome.error}
                if failures > max_retries:
                    change.update(
                        maintenance=True, fault=POWER_FAILURE,
                        maintenance_reason="Power state sync failed %d "
                        "time(s) in a row: %s" % (failures, outcome.error))
                    result.to_maintenance += 1
                    LOG.warning("Node %(node)s: power state read failed "
                                "%(n)d time(s); entering maintenance: "
                                "%(err)s", {"node": row.uuid, "n": failures,
                                            "err": outcome.error})
                else:
                    LOG.warning("Node %(node)s: power state read failed "
                                "(%(n)d of %(max)d retries): %(err)s",
                                {"node": row.uuid, "n": failures,
                                 "max": max_retries, "err": outcome.error})
            else:
                if row.power_sync_failures:
                    change.update(power_sync_failures=0, last_error=None)
                if outcome.state != row.power_state:
                    if (self._settings.force and outcome.state in
                            (states.POWER_ON, states.POWER_OFF)
                            and row.power_state in (states.POWER_ON,
                                                    states.POWER_OFF)):
                        drifted.append(outcome)
                    else:
                        change["power_state"] = outcome.state
                        if row.power_state is not None:
                            LOG.info("Node %(node)s: power state changed "
                                     "outside conductor: %(old)s -> %(new)s;"
                                     " recorded", {"node": row.uuid,
                                                   "old": row.power_state,
                                                   "new": outcome.state})
            if change:
                change["uuid"] = row.uuid
                change["expected_version"] = row.version
                changes.append(change)
        return changes, drifted

    def _force_states(self, drifted: list[_Outcome]) -> int:
        """Put drifted hardware back to the recorded state, under lock."""
        forced = 0
        for outcome in drifted:
            if self._stop.is_set():
                break
            row = outcome.row
            recorded = row.power_state
            assert recorded is not None
            try:
                with self._db.reserved(row.uuid,
                                       self._rings.holder) as current:
                    # NOTE: the sweep read the node before taking its
                    # lock; a power action or an operator may have
                    # changed it since. Restoring the stale record would
                    # undo that change.
                    if (current.power_state != recorded
                            or current.maintenance
                            or current.target_power_state is not None):
                        LOG.info("Node %(node)s changed during the sweep; "
                                 "not restoring %(rec)s",
                                 {"node": row.uuid, "rec": recorded})
                        continue
                    LOG.warning("Node %(node)s: hardware is %(hw)s but "
                                "%(rec)s is recorded; restoring %(rec)s", {
                                    "node": row.uuid, "hw": outcome.state,
                                    "rec": recorded})
                    node = base.DriverNode(row.uuid, row.name, row.driver,
                                           row.driver_info, recorded)
                    error = None
                    try:
                        with deadline.scope(self._settings.timeout):
                            self._drivers[row.driver].power.set_power_state(
                                node, recorded)
                    except Exception as exc:
                        error = "Restoring %s failed: %s" % (
                            recorded, _error_text(exc))
                    values: dict[str, Any] = {"last_error": error}
                    if error is not None:
                        values["power_state"] = outcome.state
                    self._db.update_node(row.uuid, values,
                                         holder=self._rings.holder)
                    forced += 1
            except (exceptions.NodeLocked, exceptions.NodeNotFound):
                continue
        return forced


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, exceptions.ConductorException) and text:
        return text
    return "%s: %s" % (type(exc).__name__, text) if text else \
        type(exc).__name__

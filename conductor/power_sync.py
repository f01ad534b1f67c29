# SPDX-License-Identifier: Apache-2.0
"""Power-state sync: read every owned node's power state, record changes.

One sweep (the ``sync_power_states`` periodic)::

    rows   = one query: unreserved, non-maintenance nodes of enabled drivers
    mine   = rows this worker owns (ownership rings), less the nodes with
             a driver call still running (an abandoned one, typically)
    reads  = a fan-out over the pool (conductor.executor.fanout): at most
             sync_power_state_workers driver calls at once, each under the
             power_state_timeout deadline
    writes = only what changed, in one transaction

A call still running past its deadline (a driver that ignores
``deadline.remaining()``) is abandoned by the fan-out's watchdog and
counted as a failure, so one hung BMC never slows the others; its node
is not polled again until that call returned. Nodes that failed or whose
last call was abandoned are *suspect*: they run on a bounded share of
the lanes, so healthy nodes never wait behind them.

A read that fails increments the node's durable ``power_sync_failures``;
beyond ``max_retries`` the node enters maintenance with fault
:data:`POWER_FAILURE`. The ``recover_power_failures`` periodic reads those
nodes' BMCs and clears the fault when they answer.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping

from conductor.common import exceptions
from conductor.common import metrics
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import fanout
from conductor.executor import pool as worker_pool
from conductor import nodes
from conductor import notifications
from conductor import ownership
from conductor import states
from conductor import task

LOG = logging.getLogger(__name__)

#: The ``fault`` of a node put into maintenance by power sync.
POWER_FAILURE = "power failure"
#: Extra seconds the watchdog allows past the deadline before giving up.
WATCHDOG_GRACE = fanout.WATCHDOG_GRACE


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
    #: Nodes polled (driver calls made).
    nodes: int = 0
    #: Nodes the sweep meant to poll.
    planned: int = 0
    #: Nodes not polled: a call on them (abandoned, typically) is still
    #: running.
    skipped: int = 0
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
        self._rings.update()
        rows = self._db.sync_rows(drivers=list(self._drivers))
        mine = [row for row in rows if self._rings.owns(row.uuid)]
        result = SweepResult(kind="sync")
        outcomes = self._run_lanes(mine, result, suspect=self._suspect)
        metrics.nodes_read(result.nodes, (o.row.uuid for o in outcomes
                                          if o.error is not None))
        changes, drifted = self._sync_changes(outcomes, result)
        result.changed = self._db.apply_sync_results(changes)
        if drifted:
            result.forced = self._force_states(drifted)
        return self._finish(result, started)

    def recover(self) -> SweepResult:
        """Clear the power-failure fault of owned nodes whose BMC answers."""
        started = self._clock()
        self._rings.update()
        rows = self._db.sync_rows(drivers=list(self._drivers),
                                  maintenance=True, fault=POWER_FAILURE)
        mine = [row for row in rows if self._rings.owns(row.uuid)]
        result = SweepResult(kind="recovery")
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
                     "leaving maintenance", {"node": nodes.label(outcome.row),
                                             "state": outcome.state})
        result.recovered = self._db.apply_sync_results(changes)
        return self._finish(result, started)

    # -- machinery -----------------------------------------------------

    def _finish(self, result: SweepResult, started: float) -> SweepResult:
        result.total_seconds = self._clock() - started
        result.finished_at = time.time()
        self.last[result.kind] = result
        if result.planned or result.kind == "sync":
            # NOTE: "node(s)" counts the nodes polled, not those planned.
            left = result.planned - result.nodes - result.skipped
            LOG.info("Power %(kind)s sweep: %(nodes)d node(s) in "
                     "%(secs).3fs (calls) / %(total).3fs (total), "
                     "%(failures)d failure(s), %(changed)d change(s), "
                     "%(maint)d to maintenance, %(rec)d recovered, "
                     "%(lanes)d lane(s), peak %(peak)d concurrent call(s)"
                     "%(skipped)s%(left)s",
                     {"kind": result.kind, "nodes": result.nodes,
                      "secs": result.seconds, "total": result.total_seconds,
                      "failures": result.failures,
                      "changed": result.changed + result.forced,
                      "maint": result.to_maintenance,
                      "rec": result.recovered, "lanes": result.lanes,
                      "peak": result.peak_calls,
                      "skipped": "; %d skipped (a call on them still "
                                 "running)" % result.skipped
                                 if result.skipped else "",
                      "left": "; %d of %d planned not polled (stopping)"
                              % (left, result.planned) if left > 0 else ""})
        return result

    def _suspect(self, row: db_api.SyncRow) -> bool:
        """Failed lately, or its last call was abandoned."""
        return row.power_sync_failures > 0 or self._pool.suspect(row.uuid)

    def _run_lanes(self, rows: list[db_api.SyncRow], result: SweepResult,
                   suspect: Callable[[db_api.SyncRow], bool] | None = None
                   ) -> list[_Outcome]:
        """Read every row's power state over the pool (see fanout)."""
        result.planned = len(rows)
        rows = [row for row in rows if not self._pool.in_call(row.uuid)]
        result.skipped = result.planned - len(rows)
        if not rows:
            return []
        timeout = self._settings.timeout
        fan: fanout.FanOut[db_api.SyncRow, _Outcome] = fanout.FanOut(
            self._pool, self._settings.workers, stop=self._stop,
            call_timeout=timeout, clock=self._clock,
            watchdog_interval=self._watchdog_interval,
            name="Power %s sweep" % result.kind)
        report = fan.run(rows, self._read, suspect=suspect)
        result.nodes = report.taken
        outcomes = {row.uuid: outcome for row, outcome in report.results}
        for row in report.abandoned:
            outcomes[row.uuid] = _Outcome(
                row, error="Power state read did not return within "
                           "%.1f seconds" % timeout)
        result.lanes = report.lanes
        result.peak_calls = report.peak
        result.seconds = report.seconds
        result.failures = sum(1 for o in outcomes.values()
                              if o.error is not None)
        return list(outcomes.values())

    def _read(self, row: db_api.SyncRow) -> _Outcome:
        driver = self._drivers[row.driver]
        try:
            state = task.call_driver(driver, "get_power_state", row,
                                     timeout=self._settings.timeout)
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
                                "%(err)s", {"node": nodes.label(row),
                                            "n": failures,
                                            "err": outcome.error})
                else:
                    LOG.warning("Node %(node)s: power state read failed "
                                "(%(n)d of %(max)d retries): %(err)s",
                                {"node": nodes.label(row), "n": failures,
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
                            _drift_recorded(row, outcome.state)
                            LOG.info("Node %(node)s: power state changed "
                                     "outside conductor: %(old)s -> %(new)s;"
                                     " recorded", {"node": nodes.label(row),
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
                with task.acquire(self._db, row.uuid, self._rings.holder,
                                  self._drivers,
                                  self._settings.timeout) as t:
                    current = t.node
                    # NOTE: the sweep read the node before taking its
                    # lock; a power action or an operator may have
                    # changed it since. Restoring the stale record would
                    # undo that change.
                    if (current.power_state != recorded
                            or current.maintenance
                            or current.target_power_state is not None):
                        LOG.info("Node %(node)s changed during the sweep; "
                                 "not restoring %(rec)s",
                                 {"node": nodes.label(row), "rec": recorded})
                        continue
                    LOG.warning("Node %(node)s: hardware is %(hw)s but "
                                "%(rec)s is recorded; restoring %(rec)s", {
                                    "node": nodes.label(row),
                                    "hw": outcome.state, "rec": recorded})
                    error = None
                    _forcing("start", current, recorded)
                    try:
                        t.call("set_power_state", recorded)
                    except Exception as exc:
                        error = "Restoring %s failed: %s" % (
                            recorded, _error_text(exc))
                    _forcing("end" if error is None else "error", current,
                             recorded, error)
                    values: dict[str, Any] = {"last_error": error}
                    if error is not None:
                        values["power_state"] = outcome.state
                    t.record(values)
                    forced += 1
            except (exceptions.NodeLocked, exceptions.NodeNotFound,
                    task.ReservationLost):
                continue
        return forced


def _drift_recorded(row: db_api.SyncRow, state: str | None) -> None:
    """Metrics and notification of a drift whose record follows."""
    metrics.power_change("detected")
    if state is not None:
        notifications.power_state_corrected(row, row.power_state, state)


def _forcing(phase: str, node: Any, target: str,
             error: str | None = None) -> None:
    """Metrics and notifications of a drift forced back."""
    if phase == "start":
        metrics.power_change("forced")
    notifications.power_set(phase, node, target, error)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, exceptions.ConductorException) and text:
        return text
    return "%s: %s" % (type(exc).__name__, text) if text else \
        type(exc).__name__

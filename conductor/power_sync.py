# SPDX-License-Identifier: Apache-2.0
"""Power-state sync: read every owned node's power state, record changes.

One sweep (the ``sync_power_states`` periodic)::

    rows   = one query: unreserved, non-maintenance nodes of enabled drivers
    mine   = rows this worker owns (ownership rings), recent failures first
    reads  = a fan-out over the pool (conductor.executor.fanout): at most
             sync_power_state_workers driver calls at once, each under the
             power_state_timeout deadline
    writes = only what changed, in one transaction

A call still running past its deadline (a driver that ignores
``deadline.remaining()``) is abandoned by the fan-out's watchdog and
counted as a failure, so one hung BMC never slows the others.

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
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import fanout
from conductor.executor import pool as worker_pool
from conductor import ownership
from conductor import power_reads
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
    #: Most nodes handed to one ``get_power_states`` call (batch drivers).
    batch_size: int = 64


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
        self._rings.update()
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

    def _run_lanes(self, rows: list[db_api.SyncRow],
                   result: SweepResult) -> list[_Outcome]:
        """Read every row's power state over the pool (see fanout)."""
        if not rows:
            return []
        timeout = self._settings.timeout
        # NOTE: one fan-out item is one node, or a batch of a batch-capable
        # driver's nodes (conductor.power_reads), under one deadline.
        units = power_reads.plan(rows, self._drivers,
                                 self._settings.batch_size)
        fan: fanout.FanOut[power_reads.Unit, list[_Outcome]] = fanout.FanOut(
            self._pool, self._settings.workers, stop=self._stop,
            call_timeout=timeout, clock=self._clock,
            watchdog_interval=self._watchdog_interval,
            name="Power %s sweep" % result.kind)
        report = fan.run(units, self._read)
        outcomes = {outcome.row.uuid: outcome
                    for _, unit_outcomes in report.results
                    for outcome in unit_outcomes}
        for unit in report.abandoned:
            for read in power_reads.abandoned(unit, timeout):
                outcomes[read.row.uuid] = _Outcome(read.row,
                                                   error=read.error)
        result.lanes = report.lanes
        result.peak_calls = report.peak
        result.seconds = report.seconds
        result.failures = sum(1 for o in outcomes.values()
                              if o.error is not None)
        return list(outcomes.values())

    def _read(self, unit: power_reads.Unit) -> list[_Outcome]:
        return [_Outcome(read.row, state=read.state, error=read.error)
                for read in power_reads.read(self._drivers, unit,
                                             self._settings.timeout)]

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
                                 {"node": row.uuid, "rec": recorded})
                        continue
                    LOG.warning("Node %(node)s: hardware is %(hw)s but "
                                "%(rec)s is recorded; restoring %(rec)s", {
                                    "node": row.uuid, "hw": outcome.state,
                                    "rec": recorded})
                    error = None
                    try:
                        t.call("set_power_state", recorded)
                    except Exception as exc:
                        error = "Restoring %s failed: %s" % (
                            recorded, _error_text(exc))
                    values: dict[str, Any] = {"last_error": error}
                    if error is not None:
                        values["power_state"] = outcome.state
                    t.record(values)
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

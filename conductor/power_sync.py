# SPDX-License-Identifier: Apache-2.0
"""Power-state sync: poll each owned node's power state when it is due.

Every node is polled once per ``interval``, at a stable phase of its own:
its slots are ``phase + k * interval`` (epoch seconds), with ``phase``
spread by the node's partition (:func:`phase_of`), so that a fleet
enrolled at once is polled evenly over the interval rather than in
sweeps. A node is due at its first slot at least ``interval - tolerance``
after its last poll (``power_checked_at``, written on every poll,
successful or not), so whoever owns it, it is never polled twice in one
interval because its owner changed. A node never polled is due at its
first slot after the worker started. A failing node backs off: its
``interval`` doubles with every failure in a row, up to
``power_failure_recovery_interval``.

One run (the ``sync_power_states`` periodic, every :func:`tick` seconds)::

    rows   = the worker's nodes are kept in memory with their due times
             (conductor.node_cache): read in full when it gains their
             partitions, then only the rows written since its last read
             (one indexed query a run, which finds nothing when nothing
             changed), so a poll reads no row but writes its stamp
    due    = rows whose due time passed, most overdue first, less the
             nodes with a driver call still running (an abandoned one)
    reads  = a fan-out over the pool (conductor.executor.fanout): at most
             sync_power_state_workers driver calls at once, each under the
             power_state_timeout deadline
    writes = what changed, in one transaction, with power_checked_at of
             every node polled: that stamp alone waits in memory to be
             written with later runs' (at most STAMPS_EVERY seconds; at
             once when this worker's partitions change, while its host
             drains, and when it stops), one statement for them all

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
import datetime
import functools
import logging
import math
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from oslo_utils import timeutils

from conductor.common import exceptions
from conductor.common import metrics
from conductor.db import api as db_api
from conductor.db import models
from conductor.drivers import base
from conductor.executor import fanout
from conductor.executor import pool as worker_pool
from conductor import node_cache
from conductor import nodes
from conductor import notifications
from conductor import ownership
from conductor import power_reads
from conductor import states
from conductor import task

LOG = logging.getLogger(__name__)
#: One DEBUG line for each sync run (a worker runs about one a second);
#: enable it without ``debug`` with ``default_log_levels =
#: ...,conductor.power_sync.runs=DEBUG``. At INFO, :data:`LOG` sums the
#: runs up once per interval, at most once a minute (see :class:`_Summary`).
RUN_LOG = logging.getLogger(__name__ + ".runs")
#: The shortest period of that summary (seconds): with a short interval,
#: a line per interval would still flood the log.
SUMMARY_MIN_PERIOD = 60.0

#: The ``fault`` of a node put into maintenance by power sync.
POWER_FAILURE = "power failure"
#: Extra seconds the watchdog allows past the deadline before giving up.
WATCHDOG_GRACE = fanout.WATCHDOG_GRACE
#: Intervals between two full reads of a worker's rows (see node_cache).
RELOAD_INTERVALS = 10
#: Seconds a poll's stamp (``power_checked_at``) may wait in memory, to be
#: written with later runs' in one statement: a transaction a second was
#: about a third of a run's cost. They are written at once when the
#: worker's partitions change, while its host drains and when it stops
#: (see PowerSync._write); a worker killed loses at most these seconds of
#: stamps, whose nodes its successor then polls once more.
STAMPS_EVERY = 5.0


@dataclasses.dataclass(frozen=True)
class SyncSettings:
    """Plain values power sync reads from ``[conductor]``."""

    workers: int
    timeout: float
    max_retries: int
    force: bool
    #: ``sync_power_state_interval`` (seconds).
    interval: float = 60.0
    #: ``power_failure_recovery_interval``: the back-off cap (<= 0: none).
    recovery_interval: float = 300.0
    #: Most nodes handed to one ``get_power_states`` call (batch drivers).
    batch_size: int = 64


@functools.lru_cache(maxsize=64)
def tick(interval: float) -> float:
    """Seconds between two runs of the sync periodic for ``interval``.

    1/60 of the interval, between 1 and 10 seconds: the calls due in one
    tick start together, so the peak call rate stays within a few
    percent of the mean; each run costs a few indexed queries reading
    only due rows. 0 when sync is disabled (``interval`` <= 0).
    """
    if interval <= 0:
        return 0.0
    return min(10.0, max(1.0, interval / 60.0))


@functools.lru_cache(maxsize=64)
def tolerance(interval: float) -> float:
    """How early a node may be polled after its last poll (seconds).

    A poll made a little after its slot (runs are a tick apart) keeps the
    node's phase; one made later than this re-phases it to the next slot
    (gap between 1 and 2 intervals), never sooner. At least a tick (at
    most the interval), so that an interval shorter than two ticks still
    polls every node at every run.
    """
    usual = min(interval / 2.0, max(interval / 4.0, 2.0 * tick(interval)))
    return max(usual, min(tick(interval), interval))


@functools.lru_cache(maxsize=64)
def settle_delay(interval: float) -> float:
    """Seconds a new owner waits for the previous one's last stamps.

    Two ticks and a second: a run of fast BMCs under way when ownership
    moved.
    """
    return 2.0 * tick(interval) + 1.0


def phase_of(partition: int, interval: float) -> float:
    """The node's slot phase within ``interval``, from its partition."""
    return interval * partition / models.PARTITIONS


def backoff(interval: float, failures: int, cap: float) -> float:
    """Seconds between polls of a node that failed ``failures`` times.

    ``interval`` for a healthy node; doubled for every further failure
    in a row, at most ``cap`` (when ``cap`` > 0, and never below
    ``interval``).
    """
    if failures <= 1:
        return interval
    wait = interval * 2.0 ** min(failures - 1, 30)
    if cap > 0:
        wait = min(wait, max(interval, cap))
    return wait


#: Seconds since the epoch of a naive UTC datetime.
epoch = node_cache.epoch


def due_at(row: db_api.SyncRow, interval: float, cap: float,
           anchor: float) -> float:
    """When ``row`` is next due (epoch seconds).

    :param anchor: for a node never polled: its first slot at or after
        this time.
    """
    phase = phase_of(row.partition, interval)
    if row.power_checked_at is None:
        return phase + math.ceil((anchor - phase) / interval) * interval
    checked = epoch(row.power_checked_at)
    wait = backoff(interval, row.power_sync_failures, cap)
    start = checked + wait - tolerance(interval)
    slot = phase + math.ceil((start - phase) / interval) * interval
    latest = checked + wait + interval / 2.0
    # NOTE: a millisecond of slack: stamps are stored to the microsecond.
    if slot <= latest + 0.001:
        return slot
    # NOTE: a node polled off its phase (taken over late, polled at once
    # with many others) whose next slot is more than 1.5 waits away is
    # polled half an interval before it: from there its next slot is
    # within reach, and it is back on its phase. Not at ``latest``: the
    # nodes polled together would all come due again together.
    return slot - interval / 2.0


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
    #: Largest lateness of a polled node past its due time (seconds).
    overdue: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Outcome:
    row: db_api.SyncRow
    state: str | None = None
    error: str | None = None


class _Summary:
    """The sync runs of one worker, summed up at INFO once per period.

    A period lasts ``max(interval, SUMMARY_MIN_PERIOD)`` seconds of the
    monotonic clock from the start of its first run; the first run that
    ends at or after that logs the period's totals and starts the next
    one. A worker that polls nothing still logs its line, so that the log
    shows each worker alive and syncing; a stopping worker logs the runs
    of its last, shorter period (:meth:`log`).
    """

    def __init__(self) -> None:
        # NOTE: a sync run left running by a stop that timed out may
        # count itself while the stop logs the last period.
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, start: float | None) -> None:
        self.start = start
        self.runs = self.nodes = self.failures = self.changed = 0
        self.to_maintenance = self.skipped = 0
        self.longest = self.overdue = 0.0

    def add(self, result: SweepResult, interval: float, now: float,
            last: bool = False) -> None:
        """Count one sync run that ended at ``now`` (monotonic).

        :param last: the worker is stopping: log the period now.
        """
        with self._lock:
            self._add(result, interval, now, last)

    def _add(self, result: SweepResult, interval: float, now: float,
             last: bool) -> None:
        if self.start is None:
            self.start = now - result.total_seconds
        self.runs += 1
        self.nodes += result.nodes
        self.failures += result.failures
        self.changed += result.changed + result.forced
        self.to_maintenance += result.to_maintenance
        # NOTE: a node whose call is still running is skipped again at
        # every run: the most in one run, not the sum, says how many.
        self.skipped = max(self.skipped, result.skipped)
        self.longest = max(self.longest, result.total_seconds)
        self.overdue = max(self.overdue, result.overdue)
        if last or now - self.start >= max(interval, SUMMARY_MIN_PERIOD):
            self._log(now)

    def log(self, now: float) -> None:
        """Log the period's runs up to ``now``, if any; start a new one."""
        with self._lock:
            self._log(now)

    def _log(self, now: float) -> None:
        if self.start is None or not self.runs:
            return
        LOG.info("Power sync, last %(secs).0fs: %(nodes)d node(s) polled "
                 "in %(runs)d run(s), %(failures)d failure(s), "
                 "%(changed)d change(s), %(maint)d to maintenance; "
                 "longest run %(longest).3fs, most overdue "
                 "%(overdue).1fs%(skipped)s",
                 {"secs": now - self.start, "nodes": self.nodes,
                  "runs": self.runs, "failures": self.failures,
                  "changed": self.changed, "maint": self.to_maintenance,
                  "longest": self.longest, "overdue": self.overdue,
                  "skipped": "; up to %d node(s) a run skipped (a call on "
                             "them still running)" % self.skipped
                             if self.skipped else ""})
        self._reset(now)


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
    :param now_func: wall clock (UTC, naive) for due times.
    :param since: slots before this time are not this worker's to poll
        (their nodes are polled only if overdue), and a node never
        polled is due from its first slot after it. Default: one tick
        before the first run.
    """

    def __init__(self, db: db_api.Connection,
                 drivers: Mapping[str, base.BaseDriver],
                 rings: ownership.Rings, pool: worker_pool.WorkerPool,
                 settings: SyncSettings, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic,
                 watchdog_interval: float = 0.5,
                 now_func: Callable[[], datetime.datetime] = timeutils.utcnow,
                 since: datetime.datetime | None = None,
                 stamps_every: float = STAMPS_EVERY) -> None:
        self._db = db
        self._drivers = dict(drivers)
        self._rings = rings
        self._pool = pool
        self._settings = settings
        self._stop = stop
        self._clock = clock
        self._watchdog_interval = watchdog_interval
        self._now = now_func
        #: Epoch seconds up to which slots were handled; None before the
        #: first run.
        self._window_end: float | None = (
            None if since is None else epoch(since))
        #: Never-polled nodes are due from their first slot after this.
        self._anchor: float | None = self._window_end
        #: When a run that polled nothing was last logged (``clock``).
        self._quiet_logged = -float("inf")
        #: The sync runs since the last INFO summary.
        self._summary = _Summary()
        interval = settings.interval
        #: The rows of this worker's nodes and when each is due.
        self._rows = node_cache.NodeCache(
            db, self._drivers, self._due, interval=interval,
            settle=settle_delay(interval),
            reload_every=RELOAD_INTERVALS * interval,
            late=self.after_gain)
        #: The last finished sweep of each kind ("sync", "recovery").
        self.last: dict[str, SweepResult] = {}
        self._stamps_every = stamps_every
        #: Polls not stamped in the database yet: (time, uuids) per run.
        self._stamps: list[tuple[datetime.datetime, list[str]]] = []
        #: ``clock`` time when the oldest of them was made (monotonic: a
        #: wall clock stepped back must not keep them in memory).
        self._stamps_since = 0.0
        #: The partitions the last run polled.
        self._polled_mine: tuple[int, ...] | None = None
        self._stamps_lock = threading.Lock()

    @property
    def rows(self) -> node_cache.NodeCache:
        """This worker's nodes' rows (see :mod:`conductor.node_cache`)."""
        return self._rows

    # -- the two periodic bodies ---------------------------------------

    def due_rows(self, now: datetime.datetime) -> list[db_api.SyncRow]:
        """Owned, healthy, unreserved nodes due at ``now``.

        Most overdue first; see the module docstring. They are taken off
        the plan (node_cache.NodeCache.pop_due): :meth:`sync` hands each
        back, polled or to retry.
        """
        t = epoch(now)
        first = self._window_end is None
        start = t - tick(self._settings.interval) if first \
            else self._window_end
        if self._anchor is None:
            self._anchor = start
        self._rows.update(self._rings.partitions(), t,
                          gained_at=start if first else None)
        self._window_end = t
        return self._rows.pop_due(t)

    def after_gain(self, partition: int, when: float,
                   gained: float) -> float:
        """When a node due before its partition was gained is polled.

        ``when``: its due time; ``gained``: when ``partition`` was gained.

        * held back from a live owner: that owner stopped polling it
          before the hold ended and wrote its stamps when it noticed
          (see :meth:`sync`), or when its run then under way ended, which
          the settle read shows. So a slot missed during the hold is
          polled at that read, when it passed less than the tolerance
          before it (the node keeps its phase; the read plans it again if
          its previous owner did poll it), else at its next slot (polled
          further off its phase, its next poll would come up to half an
          interval late);
        * handed over by a draining owner, which still polls it: at its
          next slot after the settle read, which shows that owner's last
          polls;
        * else (its owner died, or stopped after writing its last
          stamps; the worker starts): at once.
        """
        if not self._rings.handed_over(partition):
            return when
        interval = self._settings.interval
        if self._rings.was_held(partition):
            settled = gained + settle_delay(interval)
            if settled - when <= tolerance(interval):
                return settled
            start = gained
        else:
            start = gained + settle_delay(interval)
        return when + math.ceil((start - when) / interval) * interval

    def _due(self, row: db_api.SyncRow) -> float:
        return due_at(row, self._settings.interval,
                      self._settings.recovery_interval, self._anchor or 0.0)

    def sync(self) -> SweepResult:
        """Poll the owned, healthy, unreserved nodes that are due."""
        started = self._clock()
        self._rings.maybe_update()
        partitions = self._rings.partitions()
        if partitions != self._polled_mine:
            # NOTE: a partition lost goes to a worker that plans its nodes
            # from their stamps: they must be in the database first.
            self.flush()
            self._polled_mine = partitions
        now = self._now()
        mine = self.due_rows(now)
        result = SweepResult(kind="sync")
        # NOTE: the most overdue node polled: one whose call is still
        # running is skipped (see _run_lanes), and its lateness, growing
        # at every run, says nothing of this run's.
        first = next((row for row in mine
                      if not self._pool.in_call(row.uuid)), None)
        if first is not None:
            result.overdue = round(epoch(now) - due_at(
                first, self._settings.interval,
                self._settings.recovery_interval, self._anchor or 0.0), 3)
        polled: list[db_api.SyncRow] = []
        try:
            outcomes = self._run_lanes(mine, result, suspect=self._suspect)
            metrics.nodes_read(result.nodes)
            changes, drifted = self._sync_changes(outcomes, result)
            result.changed = self._write(
                changes, now, [o.row.uuid for o in outcomes])
            polled = [_after(outcome, now) for outcome in outcomes]
        finally:
            # NOTE: nodes planned but not polled (a call still running,
            # stopping) or whose stamps were not written (a database
            # error) are planned for the next run.
            self._rows.polled(polled)
            self._rows.retry([row.uuid for row in mine],
                             epoch(now) + tick(self._settings.interval))
        if drifted:
            result.forced = self._force_states(drifted)
        return self._finish(result, started)

    def log_summary(self) -> None:
        """Log the sync runs not summed up yet (a stopping worker's)."""
        self._summary.log(self._clock())

    def flush(self) -> None:
        """Write the stamps of the polls that wait in memory.

        Called before this worker's partitions change hands (by
        :meth:`sync`) and when the worker stops.
        """
        self._write((), None, [], force=True)

    def _write(self, changes: Sequence[Mapping[str, Any]],
               now: datetime.datetime | None, checked: list[str],
               force: bool = False) -> int:
        """Write ``changes``, and the stamps when they are due; rows changed.

        The stamps of ``checked`` (polled at ``now``) join those waiting;
        they are all written with any change, at once while the host
        drains or the worker stops, else once the oldest is
        ``stamps_every`` seconds old. Should the
        write fail, the stamps of earlier runs wait on; those of
        ``checked`` are dropped (the caller plans their nodes again).
        """
        missing: set[str] = set()
        with self._stamps_lock:
            stamps = list(self._stamps)
            if checked:
                assert now is not None
                stamps.append((now, checked))
            if not stamps and not changes:
                return 0
            if not (changes or force or self._stamps_due()):
                if not self._stamps:
                    self._stamps_since = self._clock()
                self._stamps = stamps
                return 0
            changed = self._db.apply_sync_results(
                changes, stamps=stamps, missing=missing)
            self._stamps = []
            self._rows.forget(missing)
        return changed

    def _stamps_due(self) -> bool:
        if self._stamps_every <= 0 or self._stop.is_set() or \
                self._rings.draining_since is not None:
            return True
        return bool(self._stamps) and \
            self._clock() - self._stamps_since >= self._stamps_every

    def recover(self) -> SweepResult:
        """Clear the power-failure fault of owned nodes whose BMC answers."""
        started = self._clock()
        self._rings.maybe_update()
        partitions = self._rings.partitions()
        mine = self._db.sync_rows(
            drivers=list(self._drivers), maintenance=True,
            fault=POWER_FAILURE, partitions=partitions) if partitions else []
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
        result.recovered = self._db.apply_sync_results(
            changes, stamps=[(timeutils.utcnow(),
                              [str(change["uuid"]) for change in changes])])
        return self._finish(result, started)

    # -- machinery -----------------------------------------------------

    def _finish(self, result: SweepResult, started: float) -> SweepResult:
        ended = self._clock()
        result.total_seconds = ended - started
        result.finished_at = time.time()
        self.last[result.kind] = result
        left = result.planned - result.nodes - result.skipped
        if result.kind == "sync":
            # NOTE: a run that ends after the stop logged the last period
            # (the stop's wait for it ran out) logs its own.
            self._summary.add(result, self._settings.interval, ended,
                              last=self._stop.is_set())
        # NOTE: a sync run's line is DEBUG, on RUN_LOG: at INFO, a worker
        # would log one a second (a run that skips a node whose call is
        # still running too: it does so at every run while the call
        # lasts). A recovery run (rare) and the run cut short by a stop
        # stay INFO.
        notable = result.kind != "sync" or left > 0
        logger, level = ((LOG, logging.INFO) if notable
                         else (RUN_LOG, logging.DEBUG))
        # NOTE: a run that planned nothing is logged once per interval;
        # "node(s)" counts the nodes polled, not those planned.
        quiet = not result.planned and (
            result.kind != "sync" or ended
            < self._quiet_logged + self._settings.interval)
        if not quiet and logger.isEnabledFor(level):
            if not result.planned:
                self._quiet_logged = ended
            logger.log(
                level,
                "Power %(kind)s sweep: %(nodes)d node(s) in "
                "%(secs).3fs (calls) / %(total).3fs (total), "
                "%(failures)d failure(s), %(changed)d change(s), "
                "%(maint)d to maintenance, %(rec)d recovered, "
                "%(lanes)d lane(s), peak %(peak)d concurrent call(s)"
                "%(skipped)s%(left)s",
                {"kind": result.kind, "nodes": result.nodes,
                 "secs": result.seconds,
                 "total": result.total_seconds,
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
        # NOTE: one fan-out item is one node, or a batch of a batch-capable
        # driver's nodes (conductor.power_reads), under one deadline;
        # suspect nodes are planned apart, so that a batch is wholly
        # healthy or wholly suspect (see fanout's suspect lanes).
        healthy: list[db_api.SyncRow] = []
        risky: list[db_api.SyncRow] = []
        for row in rows:
            (risky if suspect is not None and suspect(row)
             else healthy).append(row)
        units = power_reads.plan(healthy, self._drivers,
                                 self._settings.batch_size)
        suspects = power_reads.plan(risky, self._drivers,
                                    self._settings.batch_size)
        flagged = {id(unit) for unit in suspects}
        units += suspects

        def unit_suspect(unit: power_reads.Unit) -> bool:
            return id(unit) in flagged

        fan: fanout.FanOut[power_reads.Unit, list[_Outcome]] = fanout.FanOut(
            self._pool, self._settings.workers, stop=self._stop,
            call_timeout=timeout, clock=self._clock,
            watchdog_interval=self._watchdog_interval,
            name="Power %s sweep" % result.kind)
        report = fan.run(units, self._read, suspect=unit_suspect)
        outcomes = {outcome.row.uuid: outcome
                    for _, unit_outcomes in report.results
                    for outcome in unit_outcomes}
        for unit in report.abandoned:
            for read in power_reads.abandoned(unit, timeout):
                outcomes[read.row.uuid] = _Outcome(read.row,
                                                   error=read.error)
        # NOTE: nodes whose unit a lane took (a batch is several nodes).
        result.nodes = len(outcomes)
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
                failures = _failures(outcome)
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


def _failures(outcome: _Outcome) -> int:
    """The node's failures in a row after this poll."""
    if outcome.error is None:
        return 0
    return outcome.row.power_sync_failures + 1


def _after(outcome: _Outcome, now: datetime.datetime) -> db_api.SyncRow:
    """The row of a node just polled, as the sweep wrote it."""
    return db_api.restamped(outcome.row, now, _failures(outcome))


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

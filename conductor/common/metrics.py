# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics of one conductor host, all its workers together.

Usage::

    metrics.setup(directory)          # master, before the fork (or off)
    metrics.set_worker(0, interval=60)        # in a worker's start()
    metrics.driver_call("fake", "get_power_state", "success", 0.002)
    text = metrics.exposition()       # master: every process, summed

The master and its workers share prometheus_client's *multiprocess mode*:
each process writes its samples to memory-mapped files in one directory
(``$state_path/metrics/<host>``, emptied when the master starts) and the
master merges them when scraped. That mode was chosen over the master
collecting from the workers because a sample costs a worker one locked
write to a mapped page (no message, no thread, no socket), counters of a
worker that died or was respawned keep counting, and the master keeps
working when a worker hangs, which is when its metrics matter most.

Until :func:`setup` ran, or after :func:`disable`, every recording
function returns at once: the conductor runs with no metrics overhead
when ``[metrics] port`` is unset.

Names follow the Prometheus conventions: base units (seconds), ``_total``
counters, histograms for durations. No label carries a node: labels are
drivers, operations, results, periodic task names, RPC methods and worker
ids, all bounded.
"""

from __future__ import annotations

import bisect
import glob
import logging
import os
import threading
import time
from typing import Any

LOG = logging.getLogger(__name__)

#: The environment variable prometheus_client's multiprocess mode reads.
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Histogram buckets of driver calls (seconds): BMCs answer in
#: milliseconds to tens of seconds.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0)
#: Histogram buckets of periodic task durations and start lags (seconds).
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                900.0)


class _Metrics:
    """The metric objects; built once by :func:`setup`."""

    def __init__(self) -> None:
        import prometheus_client as prom

        self.driver_calls = prom.Counter(
            "conductor_driver_calls", "Driver (BMC) calls by driver, "
            "operation and result.", ["driver", "operation", "result"],
            registry=None)
        self.driver_seconds = prom.Histogram(
            "conductor_driver_call_duration_seconds", "Duration of driver "
            "(BMC) calls.", ["driver", "operation"], buckets=CALL_BUCKETS,
            registry=None)
        self.power_changes = prom.Counter(
            "conductor_power_state_changes", "Power-state drifts found by "
            "power sync: 'detected' (the record follows the hardware) or "
            "'forced' (the hardware is put back).", ["kind"],
            registry=None)
        self.nodes_owned = prom.Gauge(
            "conductor_nodes_owned", "Nodes the worker polls (its last "
            "power sync).", ["worker"], multiprocess_mode="livesum",
            registry=None)
        self.nodes_maintenance = prom.Gauge(
            "conductor_nodes_maintenance", "Owned nodes in maintenance.",
            ["worker"], multiprocess_mode="livesum", registry=None)
        self.nodes_overdue = prom.Gauge(
            "conductor_nodes_overdue", "Owned nodes whose power state was "
            "not read for longer than sync_power_state_interval.",
            ["worker"], multiprocess_mode="livesum", registry=None)
        self.oldest_reading = prom.Gauge(
            "conductor_oldest_power_reading_age_seconds", "Age of the "
            "oldest power-state reading among the owned nodes.",
            ["worker"], multiprocess_mode="livemax", registry=None)
        self.pool_size = prom.Gauge(
            "conductor_pool_size", "Threads of the worker's bounded pool.",
            ["worker"], multiprocess_mode="livesum", registry=None)
        self.pool_busy = prom.Gauge(
            "conductor_pool_busy", "Busy threads of the worker's pool.",
            ["worker"], multiprocess_mode="livesum", registry=None)
        self.pool_rejected = prom.Counter(
            "conductor_pool_rejected", "Submissions the pool refused "
            "(all threads busy).", ["worker"], registry=None)
        self.periodic_runs = prom.Counter(
            "conductor_periodic_runs", "Periodic task runs.", ["task"],
            registry=None)
        self.periodic_failures = prom.Counter(
            "conductor_periodic_failures", "Periodic task runs that "
            "failed.", ["task"], registry=None)
        self.periodic_seconds = prom.Histogram(
            "conductor_periodic_duration_seconds", "Duration of periodic "
            "task runs.", ["task"], buckets=TASK_BUCKETS, registry=None)
        self.periodic_lag = prom.Histogram(
            "conductor_periodic_start_lag_seconds", "How late a periodic "
            "task started after it was due.", ["task"],
            buckets=TASK_BUCKETS, registry=None)
        self.rpc_calls = prom.Counter(
            "conductor_rpc_calls", "RPC calls served, by method and "
            "result ('success' or the error's class).",
            ["method", "result"], registry=None)
        self.worker_restarts = prom.Counter(
            "conductor_worker_restarts", "Workers that ended and were "
            "forked again by the master.", ["worker"], registry=None)
        self.heartbeats = prom.Counter(
            "conductor_heartbeats", "Worker heartbeats written to the "
            "database, by result.", ["result"], registry=None)
        self.db_errors = prom.Counter(
            "conductor_db_errors", "Database errors, by exception class.",
            ["error"], registry=None)
        self.notifications = prom.Counter(
            "conductor_notifications", "Versioned notifications, by event "
            "type and result (sent, failed, dropped).",
            ["event_type", "result"], registry=None)
        # NOTE: label children cached by their label values: labels()
        # takes a lock and builds a tuple each time; a sweep of 10,000
        # nodes records 10,000 calls.
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        key = (id(metric),) + values
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


_metrics: _Metrics | None = None
_paused: _Metrics | None = None
_directory: str | None = None
# NOTE: per-process, set in a worker's start(): the worker's id and its
# power sync interval.
_worker: str = "master"
_interval: float = 0.0
# NOTE: driver calls, added up by each thread in its own totals (see
# driver_call): (driver, operation, result) -> [count, sum of seconds,
# count per bucket...]. flush() writes what grew since it last copied
# them. The lock protects the list of every thread's totals (with the
# copy flushed last) and serialises flushes.
_local = threading.local()
_all_totals: list[tuple[dict[tuple[str, str, str], list[Any]],
                        dict[tuple[str, str, str], list[Any]]]] = []
_pending_lock = threading.Lock()
#: The clock of the node gauges (tests replace it).
_clock = time.monotonic


def _reset_totals() -> None:
    # NOTE: only while no driver call runs (start-up, tests).
    with _pending_lock:
        for totals, flushed in _all_totals:
            totals.clear()
            flushed.clear()


def directory_for(state_path: str, host: str) -> str:
    """The multiprocess directory of ``host`` under ``state_path``."""
    return os.path.join(state_path, "metrics", host)


def setup(directory: str) -> None:
    """Enable metrics in multiprocess mode (in the master, before forking).

    Empties ``directory`` (the files of a previous run would add to this
    run's counters), points prometheus_client at it through the
    environment, which forked workers inherit, and builds the metrics.

    :raises OSError: when the directory cannot be created or emptied.
    """
    global _metrics, _directory, _paused
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.unlink(path)
    os.environ[ENV] = directory
    from prometheus_client import values
    # NOTE: prometheus_client picks its value class from the environment
    # when first imported; a library may have imported it before the
    # variable was set, so pick again now that it is.
    values.ValueClass = values.get_value_class()
    _directory = directory
    _paused = None
    _reset_totals()
    _metrics = _Metrics()


def disable() -> None:
    """Stop recording; :func:`enable` resumes with the same metrics."""
    global _metrics, _paused
    if _metrics is not None:
        _paused = _metrics
    _metrics = None


def enable() -> None:
    """Resume recording after :func:`disable`.

    :raises RuntimeError: when :func:`setup` never ran.
    """
    global _metrics
    if _paused is None and _metrics is None:
        raise RuntimeError("metrics.setup() never ran")
    _metrics = _metrics or _paused


def enabled() -> bool:
    return _metrics is not None


def set_worker(worker_id: int, interval: float) -> None:
    """In a worker's ``start()``: its id and power sync interval."""
    global _worker, _interval
    _worker = str(worker_id)
    _interval = float(interval)
    _reset_totals()


def worker_died(pid: int | None, worker_id: int,
                restart: bool = True) -> None:
    """In the master: a worker ended; drop its process's gauges.

    :param restart: it will be forked again (counted as a restart).
    """
    m = _metrics
    if m is None:
        return
    if restart:
        m.child(m.worker_restarts, str(worker_id)).inc()
    if pid:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid, _directory)


def exposition() -> tuple[bytes, str]:
    """Every process's metrics, merged: (body, content type)."""
    import prometheus_client as prom

    registry = prom.CollectorRegistry()
    registry.register(_Collector(_directory))
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST


class _Collector:
    """Every process's sample files, merged, but those still being made.

    A process creates its file empty and then sizes it: prometheus_client's
    own collector failed the whole scrape (HTTP 500) on a file read in
    between, e.g. right after a worker was respawned. An empty file holds
    no sample yet.
    """

    def __init__(self, path: str | None) -> None:
        self._path = path

    def collect(self) -> Any:
        from prometheus_client import multiprocess

        assert self._path is not None
        files = []
        for path in glob.glob(os.path.join(self._path, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except FileNotFoundError:
                # NOTE: a dead worker's gauges, just removed.
                continue
        return multiprocess.MultiProcessCollector.merge(files,
                                                        accumulate=True)


# -- recording (cheap no-ops while disabled) ------------------------------

def driver_call(driver: str, operation: str, result: str,
                seconds: float) -> None:
    """One driver call: ``result`` is 'success' or 'error'.

    Added up in memory by the calling thread and written by :func:`flush`
    (after each power sync and at each heartbeat): a multiprocess sample
    costs ~5 us and a lock shared by the sweep's threads more; a sweep
    makes one call per node.
    """
    if _metrics is None:
        return
    totals = getattr(_local, "totals", None)
    if totals is None:
        totals = _local.totals = {}
        with _pending_lock:
            _all_totals.append((totals, {}))
    key = (driver, operation, result)
    entry = totals.get(key)
    if entry is None:
        entry = totals[key] = [0, 0.0] + [0] * (len(CALL_BUCKETS) + 1)
    # NOTE: only this thread writes its totals; flush() reads them.
    entry[0] += 1
    entry[1] += seconds
    entry[2 + bisect.bisect_left(CALL_BUCKETS, seconds)] += 1


def flush() -> None:
    """Write the driver calls added up since the last flush."""
    m = _metrics
    if m is None:
        return
    with _pending_lock:
        for totals, flushed in _all_totals:
            # NOTE: the values may still grow after the copy; what grew
            # is written at the next flush.
            # NOTE: list() copies at once (no Python code runs while a
            # dict of str tuples is copied) while the thread may add keys.
            for key, entry in list(totals.items()):
                now = list(entry)
                before = flushed.get(key)
                flushed[key] = now
                if before is not None:
                    now = [a - b for a, b in zip(now, before)]
                if not now[0]:
                    continue
                driver, operation, result = key
                m.child(m.driver_calls, driver, operation,
                        result).inc(now[0])
                _observe_many(m.child(m.driver_seconds, driver, operation),
                              now[1], now[2:])


def _observe_many(child: Any, total: float, buckets: list[int]) -> None:
    """Add many observations to a histogram child at once.

    NOTE: prometheus_client has no bulk observe; this adds to the values
    ``Histogram.observe`` adds to (the sum, and one non-cumulative value
    per bucket, +Inf last). tests/unit/test_metrics.py pins that both
    give the same exposition.
    """
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


def power_change(kind: str, count: int = 1) -> None:
    """Drifts found by power sync: kind 'detected' or 'forced'."""
    m = _metrics
    if m is None or not count:
        return
    m.child(m.power_changes, kind).inc(count)


def nodes_read(polled: int) -> None:
    """After a power-sync run that polled ``polled`` nodes: flush.

    The calls counted since the last flush become visible to a scrape.
    """
    if _metrics is None or not polled:
        return
    flush()


def refresh_nodes(owned: int | None = None, overdue: int | None = None,
                  oldest: float | None = None,
                  maintenance: int | None = None) -> None:
    """Set this worker's node gauges; None leaves a gauge as it is.

    :param owned: nodes of the worker's partitions.
    :param overdue: of those, healthy nodes not polled within 1.5
        intervals.
    :param oldest: seconds since the oldest reading of a healthy owned
        node.
    :param maintenance: owned nodes in maintenance.
    """
    m = _metrics
    if m is None:
        return
    flush()
    for gauge, value in ((m.nodes_owned, owned), (m.nodes_overdue, overdue),
                         (m.oldest_reading, oldest),
                         (m.nodes_maintenance, maintenance)):
        if value is not None:
            m.child(gauge, _worker).set(value)


def pool(size: int, busy: int) -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.pool_size, _worker).set(size)
    m.child(m.pool_busy, _worker).set(busy)


def pool_rejected() -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.pool_rejected, _worker).inc()


def periodic_run(task: str, failed: bool, seconds: float,
                 lag: float) -> None:
    """One periodic task run: its duration and how late it started."""
    m = _metrics
    if m is None:
        return
    m.child(m.periodic_runs, task).inc()
    if failed:
        m.child(m.periodic_failures, task).inc()
    m.child(m.periodic_seconds, task).observe(seconds)
    m.child(m.periodic_lag, task).observe(max(0.0, lag))


def rpc_call(method: str, result: str) -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.rpc_calls, method, result).inc()


def heartbeat(ok: bool) -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.heartbeats, "success" if ok else "error").inc()


def db_error(error: str) -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.db_errors, error).inc()


def notification(event_type: str, result: str) -> None:
    m = _metrics
    if m is None:
        return
    m.child(m.notifications, event_type, result).inc()

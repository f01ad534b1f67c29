# SPDX-License-Identifier: Apache-2.0
"""Runs a worker's periodic tasks on its pool, over futurist.

A worker builds the runner before the fork (plain values) and starts it
in ``start()`` with the specs :func:`conductor.periodics.collect` found::

    pool = WorkerPool(size, name)                 # plain values
    runner = PeriodicRunner(pool, node_provider)  # plain values
    # ... fork ...
    pool.start()
    specs = periodics.collect(conductor_tasks)
    for name, driver in drivers.items():
        specs += periodics.collect(driver, driver.power, driver_name=name)
    runner.start(specs)
    ...
    runner.stop(timeout)       # stop scheduling, wait for running tasks
    pool.shutdown(wait=True, timeout=...)

One futurist ``PeriodicWorker`` schedules the tasks; each due task runs
on the worker's bounded pool; a task never overlaps itself; a slow task
does not delay the others while the pool has free threads. When the pool
is full a task waits (without spinning) and is retried. A node task fans
out over its nodes through :class:`~conductor.executor.fanout.FanOut`.

futurist internals this module relies on (futurist is pinned below its
next major release, and ``tests/unit/executor/test_runner.py`` pins each
of them): a callback is recognised by the ``_is_periodic``,
``_periodic_spacing`` and ``_periodic_run_immediately`` attributes its
decorator would set; ``PeriodicWorker.BUILT_IN_STRATEGIES`` maps a
strategy name to its ``(next, first)`` schedule functions; and the
executor is handed ``runner.run(work)`` whose ``work.callback`` is the
task.
"""

from __future__ import annotations

from concurrent import futures
import datetime
import logging
import threading
import time
from typing import (Any, Callable, ContextManager, Iterable, Iterator,
                    Mapping, Protocol)

import futurist
from futurist import periodics as futurist_periodics

from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.common import metrics
from conductor.drivers import base as driver_base
from conductor.executor import fanout
from conductor.executor import pool as pool_mod
from conductor import periodics

LOG = logging.getLogger(__name__)

#: The name of our schedule in futurist (see _Worker).
_STRATEGY = "conductor"


class NodeProvider(Protocol):
    """Where node periodic tasks get their nodes and locks from."""

    def iter_owned_nodes(self, filters: Mapping[str, Any] | None,
                         limit: int | None
                         ) -> Iterable[driver_base.DriverNode]:
        """Yield up to ``limit`` nodes owned by this worker.

        ``filters`` maps node field names to required values (for example
        ``{"driver": "ipmi", "maintenance": False}``); None means all.
        Called from a pool thread; may be a generator (it is closed when a
        run stops early). Raising ends the run as a failure.
        """
        ...

    def reserved(self, node_uuid: str,
                 purpose: str) -> ContextManager[driver_base.DriverNode]:
        """Reserve the node for ``purpose``; yield it as read under the lock.

        Entered and left in the same thread; the reservation is released
        on exit whatever happens inside.

        :raises conductor.common.exceptions.NodeLocked: when it is busy.
        :raises conductor.common.exceptions.NodeNotFound: when it is gone.
        """
        ...


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(
        timestamp, tz=datetime.timezone.utc).isoformat()


class _Task:
    """One scheduled task: the callable futurist runs, and its statistics.

    futurist recognises it by the ``_periodic_*`` attributes its own
    decorator would set. Calling it never raises, except
    :data:`NeverAgain` (futurist then retires the task).
    """

    def __init__(self, spec: periodics.PeriodicSpec,
                 body: Callable[[_Task], Any],
                 now_func: Callable[[], float],
                 wall_func: Callable[[], float]) -> None:
        self.spec = spec
        self._body = body
        self._now = now_func
        self._wall = wall_func
        # NOTE: the attributes futurist.periodics requires of a callback.
        # futurist's own run_immediately path re-submits a rejected task
        # with no delay (100% CPU while the pool is full, futurist 3.5),
        # so futurist never sees an immediate task: our first-run
        # strategy (_first_run) schedules it for "now" instead.
        self._is_periodic = spec.enabled
        self._periodic_spacing = spec.spacing
        self._periodic_run_immediately = False
        self.run_immediately = spec.run_immediately
        # NOTE: read by futurist to name the task in its own log lines.
        self.__qualname__ = spec.name
        self.__module__ = spec.owner.__module__
        # NOTE: protects every statistic below; held only to read or
        # update them, never while the task body runs.
        self._lock = threading.Lock()
        self.running = False
        self.retired = False
        self.runs = 0
        self.failures = 0
        self.rejected = 0
        self.last_nodes: int | None = None
        self.last_started_wall: float | None = None
        self.last_duration: float | None = None
        self.due: float | None = None

    def schedule_from(self, start: float) -> None:
        with self._lock:
            self.due = start + (0.0 if self.spec.run_immediately
                                else self.spec.spacing)

    def count_rejection(self) -> None:
        with self._lock:
            self.rejected += 1

    def record_nodes(self, count: int) -> None:
        with self._lock:
            self.last_nodes = count

    def __call__(self) -> None:
        name = self.spec.name
        with self._lock:
            if self.running:
                # NOTE: futurist re-queues a task only when it finished,
                # so this is a defence against a future change there.
                LOG.warning("Periodic task %(task)s is still running; "
                            "skipping an overlapping run", {"task": name})
                return
            self.running = True
            started = self._now()
            lag = 0.0 if self.due is None else started - self.due
            self.last_started_wall = self._wall()
            self.due = started + self.spec.spacing
        LOG.debug("Periodic task %(task)s starting", {"task": name})
        failed = False
        try:
            self._body(self)
        except (periodics.NeverAgain, futurist_periodics.NeverAgain):
            LOG.info("Periodic task %(task)s asked never to run again",
                     {"task": name})
            with self._lock:
                self.retired = True
            raise futurist_periodics.NeverAgain() from None
        except Exception as exc:
            failed = True
            # NOTE: in a database outage every task fails at once, each
            # with a long traceback: counted in one line per interval.
            if not conductor_log.database_failed(
                    "periodic task %s" % name, exc):
                LOG.exception("Periodic task %(task)s failed; it will run "
                              "again in %(spacing).1f s",
                              {"task": name, "spacing": self.spec.spacing})
        except BaseException as exc:
            # NOTE: futurist's runner catches only Exception: a
            # SystemExit escaping here would reach futurist's done
            # callback, which never reschedules the task and never
            # releases the barrier PeriodicWorker.start() waits on, so
            # stop() would hang. Contain it here.
            failed = True
            LOG.error("Periodic task %(task)s raised %(exc)r; counted as "
                      "a failure, it stays scheduled",
                      {"task": name, "exc": exc}, exc_info=True)
        finally:
            finished = self._now()
            with self._lock:
                self.running = False
                self.runs += 1
                if failed:
                    self.failures += 1
                self.last_duration = max(0.0, finished - started)
            metrics.periodic_run(name, failed, finished - started, lag)
            LOG.debug("Periodic task %(task)s finished in %(elapsed).3f s",
                      {"task": name, "elapsed": finished - started})

    def stats(self, now: float) -> dict[str, Any]:
        spec = self.spec
        with self._lock:
            next_due = None
            if spec.enabled and not self.retired and self.due is not None:
                next_due = max(0.0, self.due - now)
            row: dict[str, Any] = {
                "name": spec.name,
                "kind": "node" if spec.node is not None else "periodic",
                "enabled": spec.enabled,
                "spacing": spec.spacing,
                "runs": self.runs,
                "failures": self.failures,
                "rejected": self.rejected,
                "running": self.running,
                "retired": self.retired,
                "last_started": _iso(self.last_started_wall),
                "last_duration": self.last_duration,
                "next_due": next_due,
            }
            if spec.node is not None:
                row["purpose"] = spec.node.purpose
                row["last_nodes"] = self.last_nodes
            return row


class _PoolExecutor(futures.Executor):
    """Feeds futurist's PeriodicWorker from the worker's pool.

    A submission that finds the pool full waits for a free thread (on the
    pool's condition, re-checking at least every ``reject_wait`` seconds)
    and retries; it is rejected with ``RejectedSubmission`` only once the
    runner is stopping.
    """

    def __init__(self, pool: pool_mod.WorkerPool, stop: threading.Event,
                 reject_wait: float) -> None:
        self._pool = pool
        self._stop = stop
        self._reject_wait = reject_wait

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> futures.Future[Any]:
        task = _find_task(args)
        # NOTE: when the pool is full, wait here for a thread rather than
        # reject: futurist would retry a rejected task only 0.9-1.1 s
        # later. Each new attempt follows a thread freeing up or a
        # reject_wait timeout, so this never spins. Holding futurist's
        # loop meanwhile costs nothing, as no other task could get a
        # thread either; and a finishing task frees its thread before
        # futurist's done callback runs (see WorkerPool.submit), so that
        # callback, which needs futurist's lock, cannot hold this wait up.
        while not self._stop.is_set():
            try:
                return self._pool.submit(fn, *args, **kwargs)
            except exceptions.NoFreeWorker:
                if task is not None:
                    task.count_rejection()
            self._pool.wait_for_free(self._reject_wait, self._stop)
        # NOTE: stopping: futurist re-queues the task ~1 s later and
        # releases its lock, so that PeriodicWorker.stop() gets in.
        raise futurist.RejectedSubmission(
            "the periodic tasks of pool %s are stopping" % self._pool.name)

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        """The pool belongs to the worker: nothing to do here."""


def _first_run(cb: Callable[..., Any], now: float) -> float:
    """futurist initial strategy: now, or one spacing from now."""
    if getattr(cb, "run_immediately", False):
        return now
    return now + float(getattr(cb, "_periodic_spacing"))


def _next_run(cb: Callable[..., Any], started_at: float,
              finished_at: float, metrics: Any) -> float:
    """futurist strategy: one spacing after the last start."""
    return started_at + float(getattr(cb, "_periodic_spacing"))


class _Worker(futurist_periodics.PeriodicWorker):
    """futurist's worker with one more (documented) schedule strategy."""

    BUILT_IN_STRATEGIES = dict(
        futurist_periodics.PeriodicWorker.BUILT_IN_STRATEGIES,
        **{_STRATEGY: (_next_run, _first_run)})


def _find_task(args: tuple[Any, ...]) -> _Task | None:
    # NOTE: futurist submits ``runner.run(work)``; the work's callback is
    # our _Task. Only used for statistics: any other shape is fine.
    for arg in args:
        callback = getattr(arg, "callback", None)
        if isinstance(callback, _Task):
            return callback
    return None


class PeriodicRunner:
    """Runs collected periodic tasks on one worker's pool.

    Build it before the fork (it stores values only), then :meth:`start`
    it in the worker after ``pool.start()``, and :meth:`stop` it before
    shutting the pool down. One futurist ``PeriodicWorker`` runs in a
    thread named ``<pool name>-periodics`` and submits each due task to
    the pool (``ExistingExecutor``: futurist never shuts the pool down).

    :param pool: the worker's pool; its lifecycle belongs to the caller.
    :param node_provider: required when a node periodic task is started.
    :param now_func: monotonic clock for schedules and durations.
    :param event_cls: builds the stop event.
    :param wall_func: wall clock for ``last_started`` in :meth:`stats`.
    :param reject_wait: when the pool is full, a due task waits for a
        free thread and retries at least this often (seconds).
    """

    def __init__(self, pool: pool_mod.WorkerPool,
                 node_provider: NodeProvider | None = None, *,
                 now_func: Callable[[], float] = time.monotonic,
                 event_cls: type[threading.Event] = threading.Event,
                 wall_func: Callable[[], float] = time.time,
                 reject_wait: float = 1.0) -> None:
        self._pool = pool
        self._provider = node_provider
        self._now = now_func
        self._event_cls = event_cls
        self._wall = wall_func
        self._reject_wait = reject_wait
        self._tasks: list[_Task] = []
        self._stop: threading.Event | None = None
        self._worker: futurist_periodics.PeriodicWorker | None = None
        self._thread: threading.Thread | None = None

    def start(self, tasks: Iterable[periodics.PeriodicSpec]) -> None:
        """Schedule the enabled ``tasks`` and start the loop thread.

        Duplicates (same class and method, as
        :attr:`conductor.periodics.PeriodicSpec.key`) are dropped.
        Disabled tasks are logged once at INFO and kept in :meth:`stats`.
        Returns at once.

        :raises RuntimeError: when already started, or the pool is not.
        :raises ValueError: when a node task is given without a
            node provider.
        """
        if self._stop is not None:
            raise RuntimeError("PeriodicRunner is already started")
        if not self._pool.started:
            raise RuntimeError("Start the pool %s before the periodic "
                               "tasks" % self._pool.name)
        unique: dict[tuple[Any, ...], periodics.PeriodicSpec] = {}
        for spec in tasks:
            unique.setdefault(spec.key, spec)
        specs = list(unique.values())
        node_tasks = [s.name for s in specs if s.enabled and s.is_node_task]
        if node_tasks and self._provider is None:
            raise ValueError("Node periodic tasks %s need a node provider"
                             % ", ".join(node_tasks))
        stop = self._event_cls()
        self._stop = stop
        now = self._now()
        for spec in specs:
            task = _Task(spec, self._body_for(spec), self._now, self._wall)
            self._tasks.append(task)
            if spec.enabled:
                task.schedule_from(now)
            else:
                LOG.info("Periodic task %(task)s is disabled (spacing "
                         "%(spacing)s s); it will not run",
                         {"task": spec.name, "spacing": spec.spacing})
        enabled = [t for t in self._tasks if t.spec.enabled]
        if not enabled:
            LOG.info("No periodic task is enabled on pool %(pool)s",
                     {"pool": self._pool.name})
            return
        LOG.info("Starting %(count)d periodic task(s) on pool %(pool)s: "
                 "%(tasks)s",
                 {"count": len(enabled), "pool": self._pool.name,
                  "tasks": ", ".join("%s every %gs" % (t.spec.name,
                                                       t.spec.spacing)
                                     for t in enabled)})
        executor = _PoolExecutor(self._pool, stop, self._reject_wait)
        self._worker = _Worker(
            [(task, None, None) for task in enabled],
            log=LOG,
            executor_factory=futurist_periodics.ExistingExecutor(executor),
            event_cls=self._event_cls,
            schedule_strategy=_STRATEGY,
            now_func=self._now)
        self._thread = threading.Thread(
            target=self._loop, args=(self._worker, stop),
            name="%s-periodics" % self._pool.name, daemon=True)
        self._thread.start()

    def _loop(self, worker: futurist_periodics.PeriodicWorker,
              stop: threading.Event) -> None:
        try:
            worker.start()
        except BaseException:
            LOG.exception("The periodic task loop of pool %(pool)s "
                          "crashed; periodic tasks no longer run",
                          {"pool": self._pool.name})
        else:
            if not stop.is_set():
                LOG.error("The periodic task loop of pool %(pool)s ended "
                          "without a stop request; periodic tasks no "
                          "longer run", {"pool": self._pool.name})
            else:
                LOG.debug("The periodic task loop of pool %(pool)s ended",
                          {"pool": self._pool.name})

    def _body_for(self, spec: periodics.PeriodicSpec
                  ) -> Callable[[_Task], Any]:
        if spec.node is None:
            return lambda task: spec.func()
        return self._run_node_task

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop scheduling; wait at most ``timeout`` s for running tasks.

        Node tasks dispatch no further node after this. Never blocks
        longer than ``timeout`` (plus a moment), even when a task hangs or
        raised a ``BaseException``. Idempotent.

        :returns: True when the loop and every running task finished.
        """
        stop, worker, thread = self._stop, self._worker, self._thread
        if stop is None:
            return True
        stop.set()
        # NOTE: wake any wait for a free thread (ours or a node task's)
        # so that it sees the stop request now.
        self._pool.wake_waiters()
        if worker is None or thread is None:
            return True
        worker.stop()
        # NOTE: PeriodicWorker.start() returns only when the running
        # tasks finished, so joining the thread waits for them too.
        thread.join(timeout)
        if thread.is_alive():
            running = [t.spec.name for t in self._tasks if t.running]
            LOG.warning("Periodic tasks still running after %(timeout)s s "
                        "on pool %(pool)s: %(tasks)s",
                        {"timeout": timeout, "pool": self._pool.name,
                         "tasks": ", ".join(running) or "none"})
            return False
        return True

    def stats(self) -> list[dict[str, Any]]:
        """Per-task statistics for ``status``, one dict per task.

        Keys: ``name``, ``kind`` (``periodic`` or ``node``), ``enabled``,
        ``spacing``, ``runs`` and ``failures`` (finished runs),
        ``rejected`` (submissions refused by a full pool), ``running``,
        ``retired`` (raised NeverAgain), ``last_started`` (ISO 8601 UTC or
        None), ``last_duration`` (s or None), ``next_due`` (s from now,
        0 when overdue, None when it will not run); node tasks add
        ``purpose`` and ``last_nodes`` (nodes dispatched by the last run).
        """
        now = self._now()
        return [task.stats(now) for task in self._tasks]

    def _run_node_task(self, task: _Task) -> None:
        """One run of a node task; runs in a pool thread."""
        spec = task.spec
        assert spec.node is not None and self._provider is not None
        assert self._stop is not None
        decl, stop = spec.node, self._stop
        owner = getattr(spec.func, "__self__", None)
        limit = periodics.resolve_count(spec.name, "limit", decl.limit,
                                        owner)
        concurrency = (periodics.resolve_count(
            spec.name, "concurrency", decl.concurrency, owner)
            or self._pool.size)
        fan: fanout.FanOut[str, None] = fanout.FanOut(
            self._pool, concurrency, stop=stop, name=spec.name)
        report = fan.run(self._wanted_nodes(spec, limit),
                         lambda uuid: self._node_job(spec, uuid))
        # NOTE: run() returns only when its node jobs did, so that the
        # next run (futurist schedules it when this one returns) never
        # overlaps this one.
        task.record_nodes(report.taken)
        if stop.is_set():
            LOG.debug("Periodic task %(task)s stopped early after "
                      "%(count)d node(s)", {"task": spec.name,
                                            "count": report.taken})

    def _wanted_nodes(self, spec: periodics.PeriodicSpec,
                      limit: int | None) -> Iterator[str]:
        """Uuids of the owned nodes a node task runs on, up to ``limit``."""
        decl = spec.node
        assert decl is not None and self._provider is not None
        # NOTE: with a predicate, the provider cannot know which nodes
        # count towards the limit: we count them here.
        nodes = self._provider.iter_owned_nodes(
            spec.filters, limit if decl.predicate is None else None)
        wanted = 0
        try:
            for node in nodes:
                if limit is not None and wanted >= limit:
                    return
                if decl.predicate is not None:
                    try:
                        if not decl.predicate(node):
                            continue
                    except Exception:
                        LOG.exception("Periodic task %(task)s: predicate "
                                      "failed for node %(node)s while "
                                      "%(purpose)s; skipping it",
                                      {"task": spec.name, "node": node.uuid,
                                       "purpose": decl.purpose})
                        continue
                wanted += 1
                yield node.uuid
        finally:
            close = getattr(nodes, "close", None)
            if callable(close):
                close()

    def _node_job(self, spec: periodics.PeriodicSpec, node_uuid: str) -> None:
        """Reserve one node and run the task body on it; never raises."""
        assert spec.node is not None and self._provider is not None
        assert self._stop is not None
        purpose = spec.node.purpose
        try:
            with self._provider.reserved(node_uuid, purpose) as node:
                spec.func(periodics.NodeTask(
                    node=node, purpose=purpose,
                    stop_requested=self._stop.is_set))
        except exceptions.NodeLocked:
            LOG.debug("Periodic task %(task)s: node %(node)s is locked, "
                      "skipping %(purpose)s",
                      {"task": spec.name, "node": node_uuid,
                       "purpose": purpose})
        except exceptions.NodeNotFound:
            LOG.debug("Periodic task %(task)s: node %(node)s is gone, "
                      "skipping %(purpose)s",
                      {"task": spec.name, "node": node_uuid,
                       "purpose": purpose})
        except Exception as exc:
            if not conductor_log.database_failed(
                    "periodic task %s" % spec.name, exc):
                LOG.exception("Periodic task %(task)s failed on node "
                              "%(node)s while %(purpose)s",
                              {"task": spec.name, "node": node_uuid,
                               "purpose": purpose})
        except BaseException as exc:
            # NOTE: contained for the same reason as in _Task.__call__.
            LOG.error("Periodic task %(task)s raised %(exc)r on node "
                      "%(node)s while %(purpose)s",
                      {"task": spec.name, "exc": exc, "node": node_uuid,
                       "purpose": purpose}, exc_info=True)

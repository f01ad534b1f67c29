"""Periodic tasks of the conductor and of drivers, on the worker's pool.

Declare tasks with decorators; options are read when the worker starts,
never at import::

    from conductor import periodics

    class MyPower(base.PowerInterface):

        @periodics.periodic(spacing=lambda: CONF.my.refresh_interval)
        def refresh_tokens(self) -> None:
            ...

        @periodics.node_periodic(purpose="checking the BMC clock",
                                 spacing=600,
                                 filters={"maintenance": False})
        def check_clock(self, task: periodics.NodeTask) -> None:
            ...  # runs once per owned node, nodes in parallel

A worker collects the tasks and runs them (see :class:`PeriodicRunner`)::

    pool = WorkerPool(size, name)                 # plain values
    runner = PeriodicRunner(pool, node_provider)  # plain values
    # ... fork ...
    pool.start()
    specs = periodics.collect(manager)
    for name, driver in drivers.items():
        specs += periodics.collect(driver, driver.power, driver_name=name)
    runner.start(specs)
    ...
    runner.stop(timeout)       # stop scheduling, wait for running tasks
    pool.shutdown(wait=True, timeout=...)

Every task runs on the worker's bounded :class:`WorkerPool`; a task never
overlaps itself; a slow task does not delay the others while the pool has
free threads. When the pool is full a task waits (without spinning) and
is retried.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import datetime
import logging
import numbers
import threading
import time
from typing import (Any, Callable, ContextManager, Iterable, Mapping,
                    Protocol, TypeVar)
import warnings

import futurist
from futurist import periodics as futurist_periodics

from conductor.common import exceptions
from conductor.common import pool as pool_mod
from conductor.drivers import base as driver_base

LOG = logging.getLogger(__name__)

__all__ = [
    "NeverAgain",
    "NodeProvider",
    "NodeTask",
    "PeriodicRunner",
    "PeriodicSpec",
    "collect",
    "driver_periodic_task",
    "node_periodic",
    "periodic",
]

#: Raise from a periodic task to retire it for the life of the worker.
NeverAgain = futurist_periodics.NeverAgain

_F = TypeVar("_F", bound=Callable[..., Any])

#: A number of seconds, or a zero-argument callable returning one.
Spacing = float | int | Callable[[], float | int]
#: A boolean, or a zero-argument callable returning one.
Enabled = bool | Callable[[], bool]
#: A count (None: no limit), or a zero-argument callable returning one.
Count = int | None | Callable[[], int | None]

#: The attribute the decorators set on the functions they mark.
_MARK = "_conductor_periodic"

#: The name of our schedule in futurist (see _Worker).
_STRATEGY = "conductor"


@dataclasses.dataclass(frozen=True)
class _NodeDeclaration:
    purpose: str
    filters: Mapping[str, Any] | None
    predicate: Callable[[driver_base.DriverNode], bool] | None
    limit: Count
    concurrency: Count


@dataclasses.dataclass(frozen=True)
class _Declaration:
    spacing: Spacing
    enabled: Enabled
    run_immediately: bool
    node: _NodeDeclaration | None = None


def _check_number_or_callable(what: str, value: Any) -> None:
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a number of seconds or a zero-argument "
                        "callable returning one, got %r" % (what, value))


def _check_count(what: str, value: Any) -> None:
    if value is None or callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError("%s must be None, an integer >= 1 or a "
                        "zero-argument callable returning one, got %r"
                        % (what, value))


def _declare(declaration: _Declaration) -> Callable[[_F], _F]:
    def decorator(func: _F) -> _F:
        if not callable(func):
            raise TypeError("A periodic task must be a method, got %r"
                            % (func,))
        setattr(func, _MARK, declaration)
        return func
    return decorator


def periodic(spacing: Spacing, enabled: Enabled = True,
             run_immediately: bool = False) -> Callable[[_F], _F]:
    """Mark a method as a periodic task: ``method(self) -> None``.

    The method is returned unchanged (it stays callable directly). Nothing
    is evaluated at decoration: ``spacing`` and ``enabled`` may be
    zero-argument callables, called once by :func:`collect` when the worker
    starts. A task whose spacing is 0 or less, or which is not enabled,
    never runs (this is logged once at start).

    When the task raises, the error is logged with the task's name,
    counted as a failure, and the task runs again at its next time; this
    holds for ``SystemExit`` and every other ``BaseException`` too.
    Raising :data:`NeverAgain` retires the task.

    :param spacing: seconds from one start to the next.
    :param enabled: whether the task runs at all.
    :param run_immediately: start the first run at worker start instead of
        one ``spacing`` later.
    :raises TypeError: for arguments of the wrong type.
    """
    _check_number_or_callable("spacing", spacing)
    if not (isinstance(enabled, bool) or callable(enabled)):
        raise TypeError("enabled must be a bool or a zero-argument "
                        "callable returning one, got %r" % (enabled,))
    if not isinstance(run_immediately, bool):
        raise TypeError("run_immediately must be a bool, got %r"
                        % (run_immediately,))
    return _declare(_Declaration(spacing, enabled, run_immediately))


def node_periodic(purpose: str, spacing: Spacing,
                  filters: Mapping[str, Any] | None = None,
                  predicate: Callable[[driver_base.DriverNode], bool]
                  | None = None,
                  limit: Count = None, enabled: Enabled = True,
                  concurrency: Count = None,
                  run_immediately: bool = False) -> Callable[[_F], _F]:
    """Mark a method as a per-node periodic task: ``method(self, task)``.

    Each run lists the worker's *owned* nodes matching ``filters``, skips
    those for which ``predicate(node)`` is false, reserves each remaining
    node for ``purpose`` and calls the method with a :class:`NodeTask`.
    Nodes are processed in parallel on the worker's pool, at most
    ``concurrency`` at once (default and cap: pool size - 1). A node that
    is locked or gone is skipped (logged at DEBUG); any other exception
    from the method or the predicate is logged with the node and the
    purpose and the run goes on with the next node. The run ends when
    every node job has finished, so a run never overlaps the next one; a
    stop request ends the run after the jobs already started.

    When the task is collected with a ``driver_name`` (a driver's task),
    only that driver's nodes are listed.

    :param purpose: what the task does to a node, for logs and locks,
        e.g. ``"checking the BMC clock"``.
    :param spacing: see :func:`periodic`.
    :param filters: equality filters on node fields, passed to
        :meth:`NodeProvider.iter_owned_nodes`.
    :param predicate: called with each listed :class:`DriverNode` before
        reserving it; the node is skipped when it returns false.
    :param limit: at most this many nodes per run (None: all); may be a
        callable, called at every run.
    :param enabled: see :func:`periodic`.
    :param concurrency: nodes processed at once; may be a callable,
        called at every run.
    :param run_immediately: see :func:`periodic`.
    :raises TypeError: for arguments of the wrong type.
    """
    if not isinstance(purpose, str) or not purpose:
        raise TypeError("purpose must be a non-empty string, got %r"
                        % (purpose,))
    _check_number_or_callable("spacing", spacing)
    if not (isinstance(enabled, bool) or callable(enabled)):
        raise TypeError("enabled must be a bool or a zero-argument "
                        "callable returning one, got %r" % (enabled,))
    if filters is not None and not isinstance(filters, Mapping):
        raise TypeError("filters must be a mapping or None, got %r"
                        % (filters,))
    if predicate is not None and not callable(predicate):
        raise TypeError("predicate must be callable or None, got %r"
                        % (predicate,))
    _check_count("limit", limit)
    _check_count("concurrency", concurrency)
    if not isinstance(run_immediately, bool):
        raise TypeError("run_immediately must be a bool, got %r"
                        % (run_immediately,))
    node = _NodeDeclaration(purpose, dict(filters) if filters else None,
                            predicate, limit, concurrency)
    return _declare(_Declaration(spacing, enabled, run_immediately, node))


def driver_periodic_task(**kwargs: Any) -> Callable[[_F], _F]:
    """Deprecated name of :func:`periodic`; takes the same keywords.

    Emits one ``DeprecationWarning`` per decorated method, pointing at the
    decorated method's definition.
    """
    decorate = periodic(**kwargs)

    def decorator(func: _F) -> _F:
        warnings.warn(
            "driver_periodic_task is deprecated, use "
            "conductor.periodics.periodic instead (on %s)"
            % getattr(func, "__qualname__", func),
            DeprecationWarning, stacklevel=2)
        return decorate(func)
    return decorator


@dataclasses.dataclass(frozen=True)
class NodeTask:
    """What a :func:`node_periodic` method receives for one node."""

    #: The node, as read after it was reserved for this task.
    node: driver_base.DriverNode
    #: The purpose given to :func:`node_periodic`.
    purpose: str
    #: True once the worker is stopping: a long job should return early.
    stop_requested: Callable[[], bool] = lambda: False


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


@dataclasses.dataclass(frozen=True)
class PeriodicSpec:
    """A collected task, with ``spacing`` and ``enabled`` resolved.

    Built by :func:`collect`; run by :class:`PeriodicRunner`.
    """

    #: ``<ClassName>.<method>``, plus ``[driver]`` for a driver's node task.
    name: str
    #: The bound method.
    func: Callable[..., Any]
    #: Seconds from one start to the next.
    spacing: float
    #: False when disabled or when ``spacing`` <= 0: the task never runs.
    enabled: bool
    run_immediately: bool
    #: The class and method name the task was found on (deduplication).
    owner: type
    method: str
    #: The node task declaration, None for a plain periodic task.
    node: _NodeDeclaration | None = None
    #: Extra node filters (the driver) added by :func:`collect`.
    scope_filters: Mapping[str, Any] | None = None

    @property
    def is_node_task(self) -> bool:
        return self.node is not None

    @property
    def key(self) -> tuple[Any, ...]:
        """Identifies a task across collect() calls: one per class."""
        scope = (tuple(sorted(self.scope_filters.items()))
                 if self.node is not None and self.scope_filters else None)
        return (self.owner, self.method, scope)

    @property
    def filters(self) -> Mapping[str, Any] | None:
        """The node filters of a node task: declared plus scope."""
        if self.node is None:
            return None
        merged = dict(self.node.filters or {})
        merged.update(self.scope_filters or {})
        return merged or None


def _resolve(name: str, what: str, value: Any) -> Any:
    if not callable(value):
        return value
    try:
        return value()
    except Exception as exc:
        raise ValueError("Periodic task %s: resolving %s failed: %s"
                         % (name, what, exc)) from exc


def _resolve_count(name: str, what: str, value: Count) -> int | None:
    resolved = _resolve(name, what, value)
    if resolved is None:
        return None
    if (isinstance(resolved, bool) or not isinstance(resolved, int)
            or resolved < 1):
        raise ValueError("Periodic task %s: %s must be None or an integer "
                         ">= 1, got %r" % (name, what, resolved))
    return int(resolved)


def _iter_declared(cls: type) -> Iterable[tuple[str, _Declaration]]:
    # NOTE: walk the MRO ourselves, first definition wins, so that a
    # subclass overriding a task without the decorator retires it.
    seen: set[str] = set()
    for klass in cls.__mro__:
        for attr, value in vars(klass).items():
            if attr in seen:
                continue
            seen.add(attr)
            func = getattr(value, "__func__", value)
            declaration = getattr(func, _MARK, None)
            if isinstance(declaration, _Declaration):
                yield attr, declaration


def collect(*objects: Any,
            driver_name: str | None = None) -> list[PeriodicSpec]:
    """Find the decorated methods of ``objects``; resolve their options now.

    Call it at worker start with the conductor's own objects, and with
    each enabled driver and its interfaces. Several objects of one class
    contribute once. With ``driver_name``, node tasks only see that
    driver's nodes (filter ``driver``) and are named ``Class.method[name]``.

    :returns: the specs, disabled ones included (with ``enabled`` False),
        in a stable order.
    :raises ValueError: when a ``spacing``/``enabled`` callable raises or
        ``spacing`` is not a number; the message names the task.
    """
    specs: list[PeriodicSpec] = []
    classes: set[type] = set()
    for obj in objects:
        cls = type(obj)
        if cls in classes:
            continue
        classes.add(cls)
        for attr, decl in sorted(_iter_declared(cls), key=lambda i: i[0]):
            name = "%s.%s" % (cls.__name__, attr)
            scope = None
            if decl.node is not None and driver_name is not None:
                name = "%s[%s]" % (name, driver_name)
                scope = {"driver": driver_name}
            spacing = _resolve(name, "spacing", decl.spacing)
            if isinstance(spacing, bool) or not isinstance(spacing,
                                                           numbers.Real):
                raise ValueError("Periodic task %s: spacing must be a "
                                 "number, got %r" % (name, spacing))
            seconds = float(spacing)
            enabled = bool(_resolve(name, "enabled", decl.enabled))
            specs.append(PeriodicSpec(
                name=name, func=getattr(obj, attr), spacing=seconds,
                enabled=enabled and seconds > 0,
                run_immediately=decl.run_immediately, owner=cls,
                method=attr, node=decl.node, scope_filters=scope))
    return specs


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

    def __init__(self, spec: PeriodicSpec, body: Callable[[_Task], Any],
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
            self.last_started_wall = self._wall()
            self.due = started + self.spec.spacing
        LOG.debug("Periodic task %(task)s starting", {"task": name})
        failed = False
        try:
            self._body(self)
        except NeverAgain:
            LOG.info("Periodic task %(task)s asked never to run again",
                     {"task": name})
            with self._lock:
                self.retired = True
            raise
        except Exception:
            failed = True
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

    def start(self, tasks: Iterable[PeriodicSpec]) -> None:
        """Schedule the enabled ``tasks`` and start the loop thread.

        Duplicates (same class and method, as :attr:`PeriodicSpec.key`)
        are dropped. Disabled tasks are logged once at INFO and kept in
        :meth:`stats`. Returns at once.

        :raises RuntimeError: when already started, or the pool is not.
        :raises ValueError: when a node task is given without a
            node provider.
        """
        if self._stop is not None:
            raise RuntimeError("PeriodicRunner is already started")
        if not self._pool.started:
            raise RuntimeError("Start the pool %s before the periodic "
                               "tasks" % self._pool.name)
        unique: dict[tuple[Any, ...], PeriodicSpec] = {}
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

    def _body_for(self, spec: PeriodicSpec) -> Callable[[_Task], Any]:
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
        decl, provider, stop = spec.node, self._provider, self._stop
        limit = _resolve_count(spec.name, "limit", decl.limit)
        concurrency = (_resolve_count(spec.name, "concurrency",
                                      decl.concurrency)
                       or self._pool.size - 1)
        slots = self._pool.slots(max(1, concurrency), stop=stop)
        # NOTE: with a predicate, the provider cannot know which nodes
        # count towards the limit: we count them here.
        nodes = provider.iter_owned_nodes(
            spec.filters, limit if decl.predicate is None else None)
        dispatched = 0
        try:
            for node in nodes:
                if stop.is_set():
                    break
                if limit is not None and dispatched >= limit:
                    break
                if decl.predicate is not None:
                    try:
                        wanted = decl.predicate(node)
                    except Exception:
                        LOG.exception("Periodic task %(task)s: predicate "
                                      "failed for node %(node)s while "
                                      "%(purpose)s; skipping it",
                                      {"task": spec.name, "node": node.uuid,
                                       "purpose": decl.purpose})
                        continue
                    if not wanted:
                        continue
                if slots.submit(self._node_job, spec, node.uuid) is None:
                    break
                dispatched += 1
        finally:
            close = getattr(nodes, "close", None)
            if callable(close):
                close()
            # NOTE: the run ends only when its node jobs did, so that the
            # next run (futurist schedules it when this one returns)
            # never overlaps this one.
            slots.join()
            task.record_nodes(dispatched)
        if stop.is_set():
            LOG.debug("Periodic task %(task)s stopped early after "
                      "%(count)d node(s)", {"task": spec.name,
                                            "count": dispatched})

    def _node_job(self, spec: PeriodicSpec, node_uuid: str) -> None:
        """Reserve one node and run the task body on it; never raises."""
        assert spec.node is not None and self._provider is not None
        assert self._stop is not None
        purpose = spec.node.purpose
        try:
            with self._provider.reserved(node_uuid, purpose) as node:
                spec.func(NodeTask(node=node, purpose=purpose,
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
        except Exception:
            LOG.exception("Periodic task %(task)s failed on node %(node)s "
                          "while %(purpose)s",
                          {"task": spec.name, "node": node_uuid,
                           "purpose": purpose})
        except BaseException as exc:
            # NOTE: contained for the same reason as in _Task.__call__.
            LOG.error("Periodic task %(task)s raised %(exc)r on node "
                      "%(node)s while %(purpose)s",
                      {"task": spec.name, "exc": exc, "node": node_uuid,
                       "purpose": purpose}, exc_info=True)

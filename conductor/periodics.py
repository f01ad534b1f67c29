# SPDX-License-Identifier: Apache-2.0
"""Periodic tasks of the conductor and of drivers: the declarations.

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

At start, a worker collects the tasks of its own objects and of every
enabled driver with :func:`collect`, and runs them on its bounded pool
(:class:`conductor.executor.runner.PeriodicRunner`): a task never
overlaps itself, and a slow task does not delay the others while the
pool has free threads. This module is only the declaration side: a
driver importing it loads no pool, runner or futurist.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
from typing import Any, Callable, Iterable, Mapping, TypeVar
import warnings

from conductor.drivers import base as driver_base

__all__ = [
    "NeverAgain",
    "NodeTask",
    "PeriodicSpec",
    "collect",
    "driver_periodic_task",
    "node_periodic",
    "periodic",
]


class NeverAgain(Exception):
    """Raise from a periodic task to retire it for the life of the worker.

    futurist's own ``NeverAgain`` is honoured the same way.
    """


_F = TypeVar("_F", bound=Callable[..., Any])

#: A number of seconds, or a callable returning one (see :func:`periodic`).
Spacing = float | int | Callable[..., float | int]
#: A boolean, or a callable returning one.
Enabled = bool | Callable[..., bool]
#: A count (None: no limit), or a callable returning one.
Count = int | None | Callable[..., int | None]

#: The attribute the decorators set on the functions they mark.
_MARK = "_conductor_periodic"


@dataclasses.dataclass(frozen=True)
class NodeDeclaration:
    """What :func:`node_periodic` declared; read by the runner."""

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
    node: NodeDeclaration | None = None


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
    callables, called once by :func:`collect` when the worker starts, with
    no argument, or with the object the task is collected from when they
    take one (``spacing=lambda self: self.interval``). A task whose
    spacing is 0 or less, or which is not enabled,
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
    ``concurrency`` at once (default and cap: the fan-out rule of
    :mod:`conductor.executor.fanout`, pool size - 1). A node that
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
    node = NodeDeclaration(purpose, dict(filters) if filters else None,
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
    node: NodeDeclaration | None = None
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


def _takes_object(value: Callable[..., Any]) -> bool:
    """True when ``value`` takes one positional argument (the object)."""
    try:
        params = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY,
             inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    return (len(positional) == 1
            and positional[0].default is inspect.Parameter.empty)


def resolve(name: str, what: str, value: Any, obj: Any = None) -> Any:
    """``value``, or what it returns when it is a callable.

    A callable taking one argument is given ``obj``.

    :raises ValueError: naming the task when the callable raises.
    """
    if not callable(value):
        return value
    try:
        return value(obj) if _takes_object(value) else value()
    except Exception as exc:
        raise ValueError("Periodic task %s: resolving %s failed: %s"
                         % (name, what, exc)) from exc


def resolve_count(name: str, what: str, value: Count,
                  obj: Any = None) -> int | None:
    """A ``limit`` or ``concurrency``: None or an integer >= 1.

    :raises ValueError: naming the task for any other value.
    """
    resolved = resolve(name, what, value, obj)
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
            spacing = resolve(name, "spacing", decl.spacing, obj)
            if isinstance(spacing, bool) or not isinstance(spacing,
                                                           numbers.Real):
                raise ValueError("Periodic task %s: spacing must be a "
                                 "number, got %r" % (name, spacing))
            seconds = float(spacing)
            enabled = bool(resolve(name, "enabled", decl.enabled, obj))
            specs.append(PeriodicSpec(
                name=name, func=getattr(obj, attr), spacing=seconds,
                enabled=enabled and seconds > 0,
                run_immediately=decl.run_immediately, owner=cls,
                method=attr, node=decl.node, scope_filters=scope))
    return specs

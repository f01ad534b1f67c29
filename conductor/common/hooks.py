# SPDX-License-Identifier: Apache-2.0
"""Operator lifecycle hooks: devstack's ``extras.d`` for the conductor.

Hooks come from two places and run together in ``NN`` order:

* entry points in the group ``conductor.hooks`` named ``NN-name``, each a
  callable ``hook(phase, subphase, conf)``;
* executable files named ``NN-name`` in ``[hooks] hooks_dir``, run as
  ``hook PHASE [SUBPHASE]`` with the configuration file paths in
  ``CONDUCTOR_CONFIG_FILES``.

``NN`` 00-09 and 90-99 are reserved for hooks shipped by conductor itself::

    found = hooks.discover(conf.hooks.hooks_dir)
    hooks.run_hooks(found, "start", "pre-start", conf=conf,
                    config_files=conf.config_file)

Phases, in order: ``override_defaults`` (before
the configuration files are parsed), ``source`` (configuration loaded),
``start`` with sub-phase ``pre-start``, ``post-config`` (start-up tasks
done, before workers fork) or ``extra`` (all workers up), ``stop`` and
``clean`` (``conductor-manage clean``). A failing hook stops ``start``
(and the phases before it) with an error naming the hook; in ``stop`` and
``clean`` it is logged and the other hooks still run.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import re
import subprocess
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from conductor.common import async_tasks
from conductor.common import exceptions

LOG = logging.getLogger(__name__)

#: The entry point group Python hooks are registered in.
NAMESPACE = "conductor.hooks"

#: Lifecycle phases, in the order they happen.
PHASES = ("override_defaults", "source", "start", "stop", "clean")

#: Sub-phases of ``start``, in order; the other phases have none.
START_SUBPHASES = ("pre-start", "post-config", "extra")

#: Phases in which a failing hook is fatal by default.
STRICT_PHASES = frozenset({"override_defaults", "source", "start"})

#: Default limit, in seconds, on one executable hook's run.
DEFAULT_TIMEOUT = 300.0

#: ``NN`` values only conductor's own hooks may use.
RESERVED_ORDERS = frozenset(range(0, 10)) | frozenset(range(90, 100))

#: Distribution whose entry points count as built-in hooks.
BUILTIN_DISTRIBUTION = "conductor"

_NAME_RE = re.compile(r"^(\d\d)-[A-Za-z0-9_.-]+$")

HookCallable = Callable[[str, Optional[str], Any], Any]


class HookError(exceptions.ConductorException):
    """A hook is invalid, could not be loaded or failed.

    :attr:`hook` is the hook's name and :attr:`phase` the phase label
    (both None for errors not tied to one).
    """

    message = "%(reason)s"

    def __init__(self, reason: str, hook: str | None = None,
                 phase: str | None = None) -> None:
        #: Name of the hook at fault (``NN-name``), if any.
        self.hook = hook
        #: Label of the phase it failed in (``start pre-start``), if any.
        self.phase = phase
        #: What went wrong, without the hook and phase.
        self.reason = reason
        if hook is not None and phase is not None:
            text = "Hook %s failed in phase '%s': %s" % (hook, phase, reason)
        elif hook is not None:
            text = "Hook %s: %s" % (hook, reason)
        else:
            text = reason
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.hook, self.phase))


@dataclasses.dataclass
class Hook:
    """One hook, Python or executable.

    Hooks run in :attr:`sort_key` order: :attr:`order`, then
    :attr:`name`.
    """

    #: ``NN-name``: the entry point name or the file name.
    name: str
    #: ``'python'`` (entry point) or ``'exec'`` (file in hooks_dir).
    kind: str
    #: Where it comes from: the distribution name, or the directory.
    origin: str
    #: Absolute path of an ``'exec'`` hook.
    path: str | None = None
    #: The callable of a ``'python'`` hook, once loaded.
    func: HookCallable | None = dataclasses.field(default=None,
                                                  compare=False)
    #: The entry point a ``'python'`` hook is loaded from on first run.
    entry_point: importlib.metadata.EntryPoint | None = dataclasses.field(
        default=None, compare=False, repr=False)

    @property
    def order(self) -> int:
        """The ``NN`` of the name, 0-99."""
        return int(self.name[:2])

    @property
    def sort_key(self) -> tuple[int, str]:
        """``(order, name)``."""
        return (self.order, self.name)

    def load(self) -> HookCallable:
        """The callable of a Python hook, loading its entry point.

        :raises HookError: not a Python hook, or the entry point cannot be
            imported or does not name a callable.
        """
        if self.kind != "python":
            raise HookError("is not a Python hook", hook=self.name)
        if self.func is not None:
            return self.func
        if self.entry_point is None:
            raise HookError("has neither a callable nor an entry point",
                            hook=self.name)
        try:
            func = self.entry_point.load()
        except Exception as exc:
            raise HookError("entry point %s could not be loaded: %s: %s" % (
                self.entry_point.value, type(exc).__name__, exc),
                hook=self.name) from exc
        if not callable(func):
            raise HookError("entry point %s is not callable" % (
                self.entry_point.value,), hook=self.name)
        self.func = func
        return self.func


def phase_label(phase: str, subphase: str | None = None) -> str:
    """``"start pre-start"`` for a sub-phase, else just the phase."""
    return "%s %s" % (phase, subphase) if subphase else phase


def validate_phase(phase: str, subphase: str | None = None) -> None:
    """Check a phase and sub-phase pair.

    :raises ValueError: unknown phase, ``start`` without a valid
        sub-phase, or a sub-phase given to another phase.
    """
    if phase not in PHASES:
        raise ValueError("Unknown hook phase %r; valid phases: %s" % (
            phase, ", ".join(PHASES)))
    if phase == "start":
        if subphase not in START_SUBPHASES:
            raise ValueError(
                "Phase 'start' needs a sub-phase, one of %s; got %r" % (
                    ", ".join(START_SUBPHASES), subphase))
    elif subphase is not None:
        raise ValueError("Phase %r takes no sub-phase; got %r" % (
            phase, subphase))


def _check_name(name: str, origin: str, third_party: bool,
                allow_reserved: bool) -> None:
    match = _NAME_RE.match(name)
    if match is None:
        raise HookError(
            "invalid hook name %r from %s: names are NN-name, two digits, "
            "a dash, then letters, digits, '.', '_' or '-'" % (name, origin),
            hook=name)
    order = int(match.group(1))
    if third_party and not allow_reserved and order in RESERVED_ORDERS:
        raise HookError(
            "hook %s from %s uses the reserved number %02d: 00-09 and "
            "90-99 are for conductor's own hooks; use 10-89" % (
                name, origin, order), hook=name)


def _is_ignored(filename: str) -> bool:
    return (filename.startswith(".") or filename.endswith(".sample")
            or filename.startswith("README"))


def _distribution_name(entry_point: importlib.metadata.EntryPoint,
                       ) -> str | None:
    dist = getattr(entry_point, "dist", None)
    name = getattr(dist, "name", None)
    return name if isinstance(name, str) and name else None


def _from_entry_points(namespace: str,
                       allow_reserved: bool) -> list[Hook]:
    found = []
    for entry_point in importlib.metadata.entry_points(group=namespace):
        dist = _distribution_name(entry_point)
        builtin = (dist is not None
                   and _normalize(dist) == BUILTIN_DISTRIBUTION)
        origin = "distribution %s" % dist if dist else "an entry point"
        _check_name(entry_point.name, origin, not builtin, allow_reserved)
        found.append(Hook(name=entry_point.name, kind="python",
                          origin=dist or "unknown",
                          entry_point=entry_point))
    return found


def _normalize(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def _from_directory(hooks_dir: str, allow_reserved: bool) -> list[Hook]:
    directory = os.path.abspath(hooks_dir)
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise HookError("cannot read [hooks] hooks_dir %s: %s" % (
            directory, exc.strerror or exc)) from exc
    found = []
    for filename in entries:
        if _is_ignored(filename):
            continue
        path = os.path.join(directory, filename)
        _check_name(filename, directory, True, allow_reserved)
        if not os.path.isfile(path):
            raise HookError("%s is not a regular file" % path,
                            hook=filename)
        if not os.access(path, os.X_OK):
            raise HookError(
                "%s is not executable; make it executable (chmod +x), or "
                "rename it to end in .sample to disable it" % path,
                hook=filename)
        found.append(Hook(name=filename, kind="exec", origin=directory,
                          path=path))
    return found


def discover(hooks_dir: str | None, *, namespace: str = NAMESPACE,
             allow_reserved: bool = False) -> list[Hook]:
    """Find every hook, sorted by ``NN`` then name.

    Entry points of ``namespace`` are listed but not imported (that
    happens when a hook first runs, see :meth:`Hook.load`). Files in
    ``hooks_dir`` starting with ``.``, ending in ``.sample`` or named
    ``README*`` are ignored; every other entry must be an executable
    file named ``NN-name``.

    :param hooks_dir: directory of executable hooks; None or empty for
        entry points only.
    :param namespace: the entry point group.
    :param allow_reserved: let third-party hooks use 00-09 and 90-99.
    :raises HookError: a bad name, a reserved number used by a hook not
        shipped in the ``conductor`` distribution (every file in
        ``hooks_dir`` is third-party), a non-executable or non-file
        entry, an unreadable ``hooks_dir``, or two hooks with one name.
    """
    found = _from_entry_points(namespace, allow_reserved)
    if hooks_dir:
        found.extend(_from_directory(hooks_dir, allow_reserved))
    seen: dict[str, Hook] = {}
    for hook in found:
        if hook.name in seen:
            raise HookError("defined twice, by %s and by %s" % (
                seen[hook.name].origin, hook.origin), hook=hook.name)
        seen[hook.name] = hook
    return sorted(found, key=lambda hook: hook.sort_key)


def run_hooks(hooks: Iterable[Hook], phase: str,
              subphase: str | None = None, conf: Any = None,
              config_files: Sequence[str] = (),
              logger: logging.Logger = LOG, strict: bool | None = None,
              timeout: float | None = DEFAULT_TIMEOUT) -> list[HookError]:
    """Run ``hooks`` for one phase, in ``NN`` order.

    Python hooks are called as ``func(phase, subphase, conf)``.
    Executable hooks run as ``[path, phase] + [subphase]`` (no shell),
    with this process's environment plus ``CONDUCTOR_CONFIG_FILES`` (the
    absolute ``config_files`` joined by ``os.pathsep``),
    ``CONDUCTOR_HOOK_PHASE``, ``CONDUCTOR_HOOK_SUBPHASE`` (empty if none)
    and ``CONDUCTOR_HOOK_NAME``; their stdout and stderr are logged line
    by line, as ``NN-name: line``, through ``logger``. A hook fails when
    it raises, exits non-zero, cannot be executed, or is still running
    after ``timeout`` seconds (it is then killed with everything it
    started).

    :param strict: stop at the first failure by raising it; default True
        for ``override_defaults``, ``source`` and ``start``, False for
        ``stop`` and ``clean``. When not strict, each failure is logged
        and the remaining hooks run.
    :param timeout: seconds allowed to each executable hook; None for no
        limit. Python hooks are not interrupted.
    :returns: the failures (always empty when strict).
    :raises ValueError: invalid phase or sub-phase (see
        :func:`validate_phase`).
    :raises HookError: strict and a hook failed; names the hook, the
        phase and the reason.
    """
    validate_phase(phase, subphase)
    if strict is None:
        strict = phase in STRICT_PHASES
    label = phase_label(phase, subphase)
    failures: list[HookError] = []
    for hook in sorted(hooks, key=lambda hook: hook.sort_key):
        logger.info("Running %s hook %s", label, hook.name)
        started = time.monotonic()
        try:
            if hook.kind == "exec":
                _run_exec(hook, phase, subphase, config_files, logger,
                          timeout, label)
            else:
                _run_python(hook, phase, subphase, conf, label)
        except HookError as exc:
            # The cause, when there is one, is the hook's own traceback.
            logger.error("%s", exc, exc_info=exc.__cause__)
            if strict:
                raise
            failures.append(exc)
            continue
        logger.debug("Hook %s finished %s in %.2fs", hook.name, label,
                     time.monotonic() - started)
    return failures


def _run_python(hook: Hook, phase: str, subphase: str | None, conf: Any,
                label: str) -> None:
    try:
        func = hook.load()
    except HookError as exc:
        raise HookError(exc.reason, hook=hook.name, phase=label) from (
            exc.__cause__)
    try:
        func(phase, subphase, conf)
    except Exception as exc:
        # NOTE: hook boundary: whatever a hook raises becomes a HookError
        # naming it; the traceback stays attached as the cause.
        raise HookError("raised %s: %s" % (type(exc).__name__, exc),
                        hook=hook.name, phase=label) from exc


def _run_exec(hook: Hook, phase: str, subphase: str | None,
              config_files: Sequence[str], logger: logging.Logger,
              timeout: float | None, label: str) -> None:
    assert hook.path is not None
    argv = [hook.path, phase] + ([subphase] if subphase else [])
    env = dict(os.environ)
    env.update({
        "CONDUCTOR_CONFIG_FILES": os.pathsep.join(
            os.path.abspath(path) for path in config_files),
        "CONDUCTOR_HOOK_PHASE": phase,
        "CONDUCTOR_HOOK_SUBPHASE": subphase or "",
        "CONDUCTOR_HOOK_NAME": hook.name,
    })
    try:
        result = async_tasks.run_command(argv, env=env, timeout=timeout,
                                         check=False, logger=logger,
                                         label=hook.name)
    except subprocess.TimeoutExpired:
        raise HookError("killed after the %ss timeout" % (
            _seconds(timeout),), hook=hook.name, phase=label) from None
    except OSError as exc:
        raise HookError("could not be executed: %s" % (
            exc.strerror or exc,), hook=hook.name, phase=label) from exc
    if result.returncode < 0:
        raise HookError("killed by signal %d" % -result.returncode,
                        hook=hook.name, phase=label)
    if result.returncode != 0:
        raise HookError("exited with status %d" % result.returncode,
                        hook=hook.name, phase=label)


def _seconds(value: float | None) -> str:
    return "%g" % value if value is not None else "?"

# SPDX-License-Identifier: Apache-2.0
"""Start-up checks: small functions taking ``conf``, run by the master.

Each raises ConfigInvalid (or a more specific ConductorException) with a
one-line message naming the option and the problem, so the master can exit
1 before it forks anything.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterable, Sequence

from oslo_config import cfg

from conductor.common import exceptions
from conductor.common import private
from conductor.common import rpc
from conductor.executor import fanout

LOG = logging.getLogger(__name__)


def check_option_values(conf: cfg.ConfigOpts) -> None:
    """Read every registered option so a bad value fails now, by name.

    oslo.config only converts a value when it is first read; reading all of
    them here turns a typo in any option into a start-up error instead of a
    worker crash later.
    """
    for group_name, opts in _all_opts(conf):
        group = conf if group_name is None else conf[group_name]
        for name in opts:
            label = "[%s] %s" % (group_name or "DEFAULT", name)
            try:
                value = getattr(group, name)
            except cfg.NoSuchOptError as exc:
                # NOTE: oslo.config names the option being read, not the
                # one its $reference names.
                raise exceptions.ConfigInvalid(
                    problem="%s: its value refers ($name) to an option that "
                            "does not exist" % label) from exc
            except (cfg.Error, ValueError) as exc:
                raise exceptions.ConfigInvalid(
                    problem="%s: %s" % (label, _value_error(exc))) from exc
            # NOTE: oslo.config's min and max let nan through (every
            # comparison with it is false): a nan timeout would fail every
            # call at once.
            if isinstance(value, float) and not math.isfinite(value):
                raise exceptions.ConfigInvalid(
                    problem="%s: must be a finite number, got %s"
                            % (label, value))


def _all_opts(conf: cfg.ConfigOpts) -> list[tuple[str | None, list[str]]]:
    result: list[tuple[str | None, list[str]]] = [(None, sorted(
        name for name, info in conf._opts.items()
        if not info["opt"].positional))]
    for group_name in sorted(conf._groups):
        group = conf._groups[group_name]
        result.append((group_name, sorted(group._opts)))
    return result


def _value_error(exc: Exception) -> str:
    text = str(exc)
    # NOTE: oslo.config says "Value for option X from LocationInfo(...) is
    # not valid: <reason>"; the reason is the useful part.
    marker = "is not valid: "
    if marker in text:
        text = text.split(marker, 1)[1]
    return text.strip().rstrip(".")


def effective_workers(conf: cfg.ConfigOpts) -> int:
    """``[conductor] workers``, defaulting to the number of CPUs."""
    workers = conf.conductor.workers
    if workers is None:
        workers = os.cpu_count() or 1
    return int(workers)


def check_workers(conf: cfg.ConfigOpts) -> int:
    """Return the number of workers to fork."""
    workers = effective_workers(conf)
    if workers < 1:
        raise exceptions.ConfigInvalid(
            problem="[conductor] workers must be at least 1, got %d"
            % workers)
    return workers


def check_pool(conf: cfg.ConfigOpts) -> None:
    """The pool must hold the periodic loop's tasks and node work."""
    size = conf.conductor.workers_pool_size
    if size < 3:
        raise exceptions.ConfigInvalid(
            problem="[conductor] workers_pool_size must be at least 3, got "
                    "%d" % size)
    sync = conf.conductor.sync_power_state_workers
    cap = fanout.lane_limit(size, sync)
    if sync > cap:
        LOG.warning("[conductor] sync_power_state_workers = %(sync)d does "
                    "not fit in workers_pool_size = %(size)d; at most "
                    "%(cap)d nodes will be polled at once",
                    {"sync": sync, "size": size, "cap": cap})


def check_heartbeat(conf: cfg.ConfigOpts) -> None:
    interval = conf.conductor.heartbeat_interval
    timeout = conf.conductor.heartbeat_timeout
    if interval >= timeout:
        raise exceptions.ConfigInvalid(
            problem="[conductor] heartbeat_interval (%d) must be less than "
                    "heartbeat_timeout (%d), or live workers would be "
                    "declared dead" % (interval, timeout))


def check_host(conf: cfg.ConfigOpts) -> None:
    host = conf.host
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] host must be 1 to 255 characters without "
                    "spaces, got %r" % host)


def _writable_dir(path: str, option: str) -> str:
    """Create ``path`` when missing; it must be a writable directory.

    Directories created here are private (0700): they hold the SQLite
    database and the task logs, which may hold BMC passwords.

    :raises: ConfigInvalid naming ``option`` ("[GROUP] name").
    """
    try:
        private.makedirs(path)
    except OSError as exc:
        raise exceptions.ConfigInvalid(
            problem="%s %s cannot be created: %s"
                    % (option, path, exc.strerror or exc)) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise exceptions.ConfigInvalid(
            problem="%s %s is not writable" % (option, path))
    return path


def check_state_path(conf: cfg.ConfigOpts) -> str:
    """Create ``state_path`` when missing; it must be a writable directory."""
    return _writable_dir(conf.state_path, "[DEFAULT] state_path")


def check_async_log_dir(conf: cfg.ConfigOpts) -> str:
    """``async_log_dir`` must be a directory we can create and write."""
    return _writable_dir(conf.async_log_dir, "[DEFAULT] async_log_dir")


def register_library_opts(conf: cfg.ConfigOpts) -> None:
    """Register the oslo.service and oslo.messaging options now.

    Both libraries register theirs late (when a launcher or transport is
    built); registered first, a bad value in them is reported by
    :func:`check_option_values` like any other, before anything starts.
    """
    from oslo_service import opts as service_opts
    service_opts.register_service_opts(conf)
    rpc.register_opts(conf)


#: What parsing the configuration files may raise (see config_error).
CONFIG_ERRORS = (cfg.Error, OSError, ValueError)


def config_error(exc: BaseException) -> str:
    """One line for an error in :data:`CONFIG_ERRORS` from parsing files.

    Used by every command that parses them, and by :func:`check_reload`.
    """
    if isinstance(exc, cfg.ConfigFilesNotFoundError):
        return "config file(s) not found: %s" % ", ".join(exc.config_files)
    text = str(exc).splitlines()
    if isinstance(exc, cfg.Error):
        return text[0] if text else type(exc).__name__
    # NOTE: a --config-file that is a directory, not readable or not
    # UTF-8.
    return "cannot read the configuration: %s" % exc


def check_reload(conf: cfg.ConfigOpts) -> None:
    """Check the configuration files as a SIGHUP would load them now.

    The files and directories ``conf`` was started with (given, in their
    order, or found by default) are parsed into a fresh copy holding the
    same options and defaults, and the checks that read nothing but
    options run on it; ``conf`` itself is left as it is. The master runs
    this before it passes a reload on, so a typo in an edited file is
    refused by name instead of failing every new worker.

    :raises: ConfigInvalid naming the first problem.
    """
    try:
        fresh = _fresh_copy(conf)
        check_option_values(fresh)
        check_host(fresh)
        check_pool(fresh)
        check_heartbeat(fresh)
    except exceptions.ConductorException:
        raise
    except CONFIG_ERRORS as exc:
        raise exceptions.ConfigInvalid(problem=config_error(exc)) from exc


def _fresh_copy(conf: cfg.ConfigOpts) -> cfg.ConfigOpts:
    """``conf``'s options, defaults and config sources, parsed anew."""
    fresh = cfg.ConfigOpts()
    # NOTE: oslo.config makes its own --config-file and --config-dir at
    # each parse; every other option is copied as a file option, so that
    # a bad value is read (and named) by check_option_values rather than
    # refused by the command-line parser, which exits.
    own = {id(opt) for opt in conf._config_opts}

    def copy(infos: Iterable[Any], group: str | None) -> None:
        for info in infos:
            opt = info["opt"]
            if id(opt) in own:
                continue
            fresh.register_opt(opt, group=group)
            if info.get("default") is not None:
                fresh.set_default(opt.dest, info["default"], group=group)
            if info.get("override") is not None:
                fresh.set_override(opt.dest, info["override"], group=group)

    copy(conf._opts.values(), None)
    for group_name, group in conf._groups.items():
        copy(group._opts.values(), group_name)
    fresh(_config_args(conf._args or []), project=conf.project,
          prog=conf.prog, default_config_files=conf.default_config_files,
          default_config_dirs=conf.default_config_dirs,
          use_env=conf._use_env)
    return fresh


def _config_args(args: Sequence[str]) -> list[str]:
    """The ``--config-file`` and ``--config-dir`` arguments, in order."""
    kept: list[str] = []
    names = ("--config-file", "--config-dir")
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            kept += [arg, args[index + 1]]
        elif arg.startswith(tuple(name + "=" for name in names)):
            kept.append(arg)
    return kept


def check_all(conf: cfg.ConfigOpts) -> int:
    """Run every check that needs no I/O beyond ``state_path``.

    :returns: the number of workers to fork.
    """
    register_library_opts(conf)
    check_option_values(conf)
    check_host(conf)
    workers = check_workers(conf)
    check_pool(conf)
    check_heartbeat(conf)
    check_state_path(conf)
    check_async_log_dir(conf)
    rpc.check_transport_url(conf)
    return workers

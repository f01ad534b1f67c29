# SPDX-License-Identifier: Apache-2.0
"""Guru Meditation Reports (oslo.reports) on SIGUSR2.

``kill -USR2 <master pid>`` makes the master and every worker of the
host write a report: the package version, every thread's stack, the
processes, the configuration (secrets masked) and the conductor's own
state (for a worker: its pool, its ownership view, whether it drains).
Reports go to stderr, or, with ``[oslo_reports] log_dir`` set, to one
file per process, ``conductor-<host>-<master|worker-N>_gurumeditation_
<time>``. SIGUSR1 is the drain signal (see :mod:`conductor.master`).

Usage::

    reports.setup(conf)        # the master, before the workers fork
    reports.add_state("pool", pool.stats)   # a worker, once started

The handler is installed in the master and inherited by the forked
workers; the master also passes the signal on to its workers.
``[oslo_reports] file_event_handler`` is not used: its watcher is a
thread, and the master starts no thread before it forks.
"""

from __future__ import annotations

import logging
import os
import signal
import types
from typing import Any, Callable

from oslo_config import cfg
from oslo_reports import guru_meditation_report as gmr
from oslo_reports.models import with_default_views
from oslo_reports import opts as gmr_opts
from oslo_reports.views.text import generic
import psutil

from conductor.common import version

LOG = logging.getLogger(__name__)

#: The signal that asks for a report.
REPORT_SIGNAL = signal.SIGUSR2

# NOTE: per process; a forked worker inherits the master's and replaces
# the name and the state providers in ConductorService.start().
_process = {"name": "master", "master_pid": 0}
_state: dict[str, Callable[[], Any]] = {}


class _Version:
    """What oslo.reports' package section asks of a version object."""

    vendor_string = staticmethod(lambda: "conductor")
    product_string = staticmethod(lambda: "conductor")
    version_string_with_package = staticmethod(version.version_string)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register ``[oslo_reports]`` (log_dir...)."""
    gmr_opts.set_defaults(conf)


def setup(conf: cfg.ConfigOpts) -> None:
    """Install the SIGUSR2 handler in the master (before the fork).

    :param conf: its ``[oslo_reports] log_dir`` is read now.
    """
    register_opts(conf)
    log_dir = conf.oslo_reports.log_dir
    host = conf.host
    _process["master_pid"] = os.getpid()
    _process["name"] = "master"
    gmr.TextGuruMeditation.register_section("Conductor", _section)

    def handler(signum: int, frame: types.FrameType | None) -> None:
        name = "conductor-%s-%s" % (host, _process["name"])
        gmr.TextGuruMeditation.handle_signal(_Version(), name, log_dir,
                                             frame)
        if os.getpid() == _process["master_pid"]:
            _forward(signum)

    signal.signal(REPORT_SIGNAL, handler)


def set_process(name: str) -> None:
    """Name this process in its reports (``worker-0``).

    The state providers inherited from the master are forgotten.
    """
    _process["name"] = name
    _state.clear()


def add_state(title: str, provider: Callable[[], Any]) -> None:
    """Show ``provider()`` (JSON-like data) under ``title`` in reports."""
    _state[title] = provider


def state() -> dict[str, Any]:
    """This process's conductor state, as the report shows it."""
    data: dict[str, Any] = {"process": _process["name"], "pid": os.getpid()}
    for title, provider in sorted(_state.items()):
        try:
            data[title] = provider()
        except Exception as exc:
            # NOTE: a report must come out even when one part cannot.
            data[title] = "unavailable: %s" % exc
    return data


def _section() -> with_default_views.ModelWithDefaultViews:
    return with_default_views.ModelWithDefaultViews(
        state(), text_view=generic.KeyValueView())


def _forward(signum: int) -> None:
    """Pass the signal on to the workers (the master's children)."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        try:
            child.send_signal(signum)
        except psutil.Error:
            pass

"""The master process after start-up: fork workers, watch, stop.

Usage (what ``conductor.cmd.conductor`` does)::

    start_extra = master.StartExtra(conf, workers, hook_list)
    launcher = master.launch(conf, workers, start_extra)
    try:
        launcher.wait()          # ends the process with sys.exit
    finally:
        master.on_stop(conf, hook_list)
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Sequence

from oslo_config import cfg
from oslo_service import service
from oslo_utils import timeutils

from conductor.common import hooks
from conductor.db import api as db_api
from conductor import service as conductor_service

LOG = logging.getLogger(__name__)


def launch(conf: cfg.ConfigOpts, workers: int,
           start_extra: "StartExtra | None" = None
           ) -> service.ProcessLauncher:
    """One service per worker id, so a respawned worker keeps its id."""
    launcher = service.ProcessLauncher(conf, restart_method="mutate")
    for worker_id in range(workers):
        launcher.launch_service(
            conductor_service.ConductorService(
                conf.host, worker_id, conf,
                start_extra=start_extra if worker_id == 0 else None),
            workers=1)
    LOG.info("Conductor %(host)s starting %(workers)d worker(s)",
             {"host": conf.host, "workers": workers})
    return launcher


class StartExtra:
    """The ``start extra`` hooks: run once, when every worker is up.

    Created in the master before the fork (shared-memory flags, no
    threads: a thread running in the master while it forks can leave a
    lock held in the child). Worker 0 calls :meth:`run` from a thread of
    its own once it has started: it waits until ``workers`` workers of its
    host registered after the launch, runs the hooks, and records the
    outcome. A failing hook stops the conductor (SIGTERM to the master),
    which then exits 1. A respawned worker 0 does not run them again.

    :param timeout: seconds to wait for the workers before warning.
    """

    PENDING, DONE, FAILED = 0, 1, 2

    def __init__(self, conf: cfg.ConfigOpts, workers: int,
                 hook_list: Sequence[hooks.Hook],
                 timeout: float = 120.0) -> None:
        self._conf = conf
        self._workers = workers
        self._hooks = list(hook_list)
        self._timeout = timeout
        # NOTE: MySQL/MariaDB store DATETIME to the second; a worker that
        # registers within the launch's second must still count.
        self._since = timeutils.utcnow().replace(microsecond=0) - \
            datetime.timedelta(seconds=1)
        self._state = multiprocessing.get_context("fork").Value("b", 0)

    @property
    def failed(self) -> bool:
        return bool(self._state.value == self.FAILED)

    def run(self, db: db_api.Connection, stop: threading.Event) -> None:
        """Wait for the workers, then run the hooks (in worker 0)."""
        with self._state.get_lock():
            if self._state.value != self.PENDING:
                return
            # NOTE: claimed now, so a respawned worker 0 never runs them
            # twice even if this one dies half-way.
            self._state.value = self.DONE
        started = time.monotonic()
        if not self._wait_for_workers(db, stop):
            return
        LOG.info("All %(n)d worker(s) of %(host)s are up after %(secs).2fs",
                 {"n": self._workers, "host": self._conf.host,
                  "secs": time.monotonic() - started})
        try:
            hooks.run_hooks(self._hooks, "start", "extra", conf=self._conf,
                            config_files=list(self._conf.config_file))
        except hooks.HookError as exc:
            LOG.error("Stopping the conductor: %s", exc)
            self._state.value = self.FAILED
            os.kill(os.getppid(), signal.SIGTERM)

    def _wait_for_workers(self, db: db_api.Connection,
                          stop: threading.Event) -> bool:
        deadline = time.monotonic() + self._timeout
        while not stop.wait(0.2):
            try:
                records = db.list_conductors()
            except Exception:
                # NOTE: a database blip must not cancel the hooks for good.
                LOG.exception("Could not read the workers; retrying")
                continue
            rows = [row for row in records
                    if row.host == self._conf.host and row.online
                    and row.started_at >= self._since]
            if len(rows) >= self._workers:
                return True
            if deadline and time.monotonic() > deadline:
                LOG.warning("Only %(up)d of %(n)d workers registered within "
                            "%(secs)ds; 'start extra' hooks wait on",
                            {"up": len(rows), "n": self._workers,
                             "secs": self._timeout})
                deadline = 0.0
        return False


def on_stop(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook]) -> None:
    """Run the ``stop`` hooks; failures are logged and the rest still run."""
    hooks.run_hooks(hook_list, "stop", conf=conf,
                    config_files=list(conf.config_file))

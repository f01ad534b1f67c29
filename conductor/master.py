"""The master process after start-up: fork workers, watch, stop.

Usage (what ``conductor.cmd.conductor`` does)::

    launcher = master.launch(conf, workers)
    watcher = master.WorkersUpWatcher(conf, workers, hook_list)
    watcher.start()
    try:
        launcher.wait()          # ends the process with sys.exit
    finally:
        master.on_stop(conf, hook_list)
"""

from __future__ import annotations

import logging
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


def launch(conf: cfg.ConfigOpts, workers: int) -> service.ProcessLauncher:
    """One service per worker id, so a respawned worker keeps its id."""
    launcher = service.ProcessLauncher(conf, restart_method="mutate")
    for worker_id in range(workers):
        launcher.launch_service(
            conductor_service.ConductorService(conf.host, worker_id, conf),
            workers=1)
    LOG.info("Conductor %(host)s starting %(workers)d worker(s)",
             {"host": conf.host, "workers": workers})
    return launcher


class WorkersUpWatcher:
    """Runs the ``start extra`` hooks once every worker has registered.

    A daemon thread polls the ``conductors`` table with its own short-lived
    engine until ``workers`` rows of this host started after the launch are
    online, logs how long that took, runs the hooks, and ends. A failing
    hook stops the conductor (SIGTERM to the master) and makes it exit 1.

    :param timeout: seconds to wait for the workers before warning.
    """

    def __init__(self, conf: cfg.ConfigOpts, workers: int,
                 hook_list: Sequence[hooks.Hook],
                 timeout: float = 120.0) -> None:
        self._conf = conf
        self._workers = workers
        self._hooks = list(hook_list)
        self._timeout = timeout
        #: Set when a ``start extra`` hook failed: the master exits 1.
        self.failed = False
        self._since = timeutils.utcnow()
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="workers-up",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            up = self._wait_for_workers()
        except Exception:
            LOG.exception("Could not watch the workers start")
            return
        if not up:
            return
        LOG.info("All %(n)d worker(s) of %(host)s are up after %(secs).2fs",
                 {"n": self._workers, "host": self._conf.host,
                  "secs": time.monotonic() - started})
        try:
            hooks.run_hooks(self._hooks, "start", "extra", conf=self._conf,
                            config_files=list(self._conf.config_file))
        except hooks.HookError as exc:
            LOG.error("Stopping: %s", exc)
            self.failed = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _wait_for_workers(self) -> bool:
        db = db_api.Connection.create(self._conf.database.connection)
        try:
            deadline = time.monotonic() + self._timeout
            while not self._stop.wait(0.2):
                rows = [row for row in db.list_conductors()
                        if row.host == self._conf.host and row.online
                        and row.started_at >= self._since]
                if len(rows) >= self._workers:
                    return True
                if deadline and time.monotonic() > deadline:
                    LOG.warning("Only %(up)d of %(n)d workers registered "
                                "within %(secs)ds; 'start extra' hooks "
                                "wait on", {"up": len(rows),
                                            "n": self._workers,
                                            "secs": self._timeout})
                    deadline = 0.0
            return False
        finally:
            db.dispose()


def on_stop(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook]) -> None:
    """Run the ``stop`` hooks; failures are logged and the rest still run."""
    hooks.run_hooks(hook_list, "stop", conf=conf,
                    config_files=list(conf.config_file))

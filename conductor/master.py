# SPDX-License-Identifier: Apache-2.0
"""The master process after start-up: fork workers, watch, stop.

Usage (what ``conductor.cmd.conductor`` does)::

    launcher, start_extra = master.launch(conf, workers, hook_list)
    try:
        launcher.wait()          # ends the process with sys.exit
    finally:
        master.on_stop(conf, hook_list)
        if start_extra.failed: ...
"""

from __future__ import annotations

import logging
from typing import Sequence

from oslo_config import cfg
from oslo_service import service

from conductor.common import hooks
from conductor import service as conductor_service

LOG = logging.getLogger(__name__)


def launch(conf: cfg.ConfigOpts, workers: int,
           hook_list: Sequence[hooks.Hook] = ()
           ) -> tuple[service.ProcessLauncher, conductor_service.StartExtra]:
    """One service per worker id, so a respawned worker keeps its id.

    Worker 0 runs the ``start extra`` hooks once every worker is up (see
    :class:`conductor.service.StartExtra`, returned so the caller can
    tell whether they failed).
    """
    start_extra = conductor_service.StartExtra(conf, workers, hook_list)
    launcher = service.ProcessLauncher(conf, restart_method="mutate")
    for worker_id in range(workers):
        launcher.launch_service(
            conductor_service.ConductorService(
                conf.host, worker_id, conf,
                start_extra=start_extra if worker_id == 0 else None),
            workers=1)
    LOG.info("Conductor %(host)s starting %(workers)d worker(s)",
             {"host": conf.host, "workers": workers})
    return launcher, start_extra


def on_stop(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook]) -> None:
    """Run the ``stop`` hooks; failures are logged and the rest still run."""
    hooks.run_hooks(hook_list, "stop", conf=conf,
                    config_files=list(conf.config_file))

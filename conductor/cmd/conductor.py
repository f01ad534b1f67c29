# SPDX-License-Identifier: Apache-2.0
"""``conductor --config-file F``: the service's entry point.

The master parses config, sets up logging, validates everything it can
(failing fast with one line naming the problem), runs the start-up steps
and hooks, then forks ``[conductor] workers`` workers and supervises them.

SIGTERM and SIGINT (Ctrl-C) stop the conductor gracefully (exit 0); a
second SIGINT forces the exit (exit 1). SIGUSR1 drains the host (its
nodes move to the other hosts, then it stops, exit 0); SIGUSR2 writes a
Guru Meditation Report of the master and of every worker. The master
exits 1 as well when a worker failed to start ``[conductor]
max_worker_start_failures`` times in a row (see :mod:`conductor.master`).
"""

from __future__ import annotations

import logging
import signal
import sys

import conductor.cmd  # noqa: F401  (backend first: see the package doc)

from oslo_config import cfg
from oslo_log import log as oslo_log

from conductor import checks
from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import log as conductor_log
from conductor.common import masking
from conductor.common import version
from conductor import conf as conductor_conf
from conductor.conf import validate
from conductor import master
from conductor import reports
from conductor import startup

LOG = logging.getLogger(__name__)


def fail(message: str, log: bool = True) -> None:
    """Report a fatal start-up problem on one line and exit 1.

    :param log: also log it (False before logging is set up: the record
        would reach stderr too, as a second line saying the same).
    """
    if log:
        LOG.error("Start-up failed: %s", message)
    sys.stderr.write("conductor: ERROR: %s\n" % masking.mask_url(message))
    sys.exit(1)


_FORCE = cfg.BoolOpt(
    "force", default=False,
    help="Start even when the database shows a live conductor with this "
         "[DEFAULT] host, for recovery when that conductor is known to be "
         "dead (its heartbeats stop counting after heartbeat_timeout).")


def main(argv: list[str] | None = None) -> None:
    # NOTE: until their handlers are installed (reports on SIGUSR2 before
    # the fork, drain on SIGUSR1 at the launch), a drain or report request
    # must not kill the master, as their default action would.
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    conf = conductor_conf.CONF
    conductor_log.set_defaults()
    conductor_log.register_options(conf)
    conf.register_cli_opt(_FORCE)
    # NOTE: every fatal error is reported by fail() after its except block:
    # oslo.log appends the exception being handled to a WARNING or ERROR
    # logged inside one, which would repeat the reason on the same line.
    error: str | None = None
    try:
        # NOTE: hooks_dir is not parsed yet: only entry point hooks can
        # change option defaults.
        hooks.run_hooks(hooks.discover(None), "override_defaults",
                        conf=conf)
        conf(sys.argv[1:] if argv is None else argv, project="conductor",
             prog="conductor", version=version.version_string())
    except exceptions.ConductorException as exc:
        error = str(exc)
    except checks.CONFIG_ERRORS as exc:
        error = checks.config_error(exc)
    if error is not None:
        fail(error, log=False)
    try:
        checks.check_option_values(conf)
        conductor_log.setup(conf, conductor_log.master_identity(conf.host))
    except exceptions.ConductorException as exc:
        error = str(exc)
    except (OSError, oslo_log.LogConfigError) as exc:
        error = "cannot set up logging ([DEFAULT] log_file, log_dir or " \
                "log_config_append): %s" % exc
    if error is not None:
        fail(error, log=False)
    for problem in validate.unknown_options(conf):
        LOG.warning("%s", problem)
    try:
        hook_list = hooks.discover(conf.hooks.hooks_dir)
        hooks.run_hooks(hook_list, "source", conf=conf,
                        config_files=list(conf.config_file))
        workers = checks.check_all(conf)
        reports.setup(conf)
        startup.run(conf, hook_list, force=conf.force)
        launcher, start_extra, policy = master.launch(conf, workers,
                                                      hook_list)
    except exceptions.ConductorException as exc:
        LOG.debug("Start-up failed", exc_info=True)
        error = str(exc)
    except (OSError, ValueError, cfg.Error) as exc:
        LOG.debug("Start-up failed", exc_info=True)
        error = "%s: %s" % (type(exc).__name__, exc)
    if error is not None:
        fail(error)
    try:
        launcher.wait()
    finally:
        master.on_stop(conf, hook_list)
        LOG.info("Conductor %s master exiting", conf.host)
        if policy.gave_up:
            # NOTE: already logged at ERROR when the master gave up.
            sys.stderr.write("conductor: ERROR: %s\n" % policy.gave_up)
            sys.exit(1)
        if start_extra.failed:
            sys.exit(1)

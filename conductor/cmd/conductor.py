"""``conductor --config-file F``: the service's entry point.

The master parses config, sets up logging, validates everything it can
(failing fast with one line naming the problem), runs the start-up
steps, then forks ``[conductor] workers`` workers and supervises them.
"""

from __future__ import annotations

import logging
import sys

import conductor.cmd  # noqa: F401  (backend first: see the package doc)

from oslo_config import cfg
from oslo_service import service

from conductor import checks
from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor import conf as conductor_conf
from conductor import service as conductor_service
from conductor import startup

LOG = logging.getLogger(__name__)


def parse_args(conf: cfg.ConfigOpts, argv: list[str]) -> None:
    """Register logging options and parse the command line and files."""
    conductor_log.set_defaults()
    conductor_log.register_options(conf)
    conf(argv, project="conductor", prog="conductor")


def fail(message: str) -> None:
    """Report a fatal start-up problem on one line and exit 1."""
    LOG.error("Start-up failed: %s", message)
    sys.stderr.write("conductor: ERROR: %s\n" % message)
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    conf = conductor_conf.CONF
    args = sys.argv[1:] if argv is None else argv
    try:
        parse_args(conf, args)
    except cfg.ConfigFilesNotFoundError as exc:
        fail("config file(s) not found: %s"
             % ", ".join(exc.config_files))
    except cfg.Error as exc:
        fail(str(exc).splitlines()[0])
    conductor_log.setup(conf, conductor_log.master_identity(conf.host))
    try:
        workers = checks.check_all(conf)
        startup.prepare_database(conf)
        drivers = startup.load_drivers(conf)
        startup.import_inventory(conf, drivers)
    except exceptions.ConductorException as exc:
        fail(str(exc))
    launcher = service.ProcessLauncher(conf, restart_method="mutate")
    for worker_id in range(workers):
        launcher.launch_service(
            conductor_service.ConductorService(conf.host, worker_id, conf),
            workers=1)
    LOG.info("Conductor %(host)s starting %(workers)d worker(s)",
             {"host": conf.host, "workers": workers})
    try:
        launcher.wait()
    finally:
        LOG.info("Conductor %s master exiting", conf.host)

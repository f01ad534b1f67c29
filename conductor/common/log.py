# SPDX-License-Identifier: Apache-2.0
"""Logging set-up: oslo.log, with every line naming its host and worker.

A record factory adds ``conductor_id`` (``"<host> master"`` or
``"<host> worker <id>"``) to every record, and the default format strings
print it, so lines from the master and from each forked worker can be told
apart in one shared log file.
"""

from __future__ import annotations

import logging
from typing import Any

from oslo_config import cfg
from oslo_log import log as oslo_log

from conductor.common import masking

_identity = "-"
_factory_installed = False

CONTEXT_FORMAT = ("%(asctime)s.%(msecs)03d %(process)d %(levelname)s "
                  "%(name)s [%(conductor_id)s] [%(global_request_id)s "
                  "%(request_id)s] %(message)s")
DEFAULT_FORMAT = ("%(asctime)s.%(msecs)03d %(process)d %(levelname)s "
                  "%(name)s [%(conductor_id)s] [-] %(message)s")
DEFAULT_LOG_LEVELS = [
    "amqp=WARN", "amqplib=WARN", "kombu=WARN", "oslo.messaging=INFO",
    "oslo_messaging=INFO", "sqlalchemy=WARN", "alembic=WARN",
    "stevedore=INFO", "cotyledon=INFO", "urllib3=WARN", "sushy=WARN",
    "oslo_service=INFO", "futurist=INFO", "tooz=WARN", "iso8601=WARN",
    # NOTE: sushy logs every connection failure at ERROR and then raises;
    # the driver reports it once, with the node, as last_error.
    "sushy.connector=CRITICAL",
    "oslo_db=WARN",
]


def set_defaults() -> None:
    """Conductor's defaults for oslo.log options (before config parsing)."""
    oslo_log.set_defaults(logging_context_format_string=CONTEXT_FORMAT,
                          default_log_levels=DEFAULT_LOG_LEVELS)
    _install_factory()


def register_options(conf: cfg.ConfigOpts) -> None:
    oslo_log.register_options(conf)
    # NOTE: oslo.log has no set_defaults argument for the default format
    # string, so set it on the option directly.
    conf.set_default("logging_default_format_string", DEFAULT_FORMAT)


def setup(conf: cfg.ConfigOpts, identity: str) -> None:
    """Configure oslo.log and name this process in every line."""
    set_identity(identity)
    oslo_log.setup(conf, "conductor")
    # NOTE: a line may quote an address typed with a password in it.
    masking.install()


def set_identity(identity: str) -> None:
    """Set what ``%(conductor_id)s`` prints for this process."""
    global _identity
    _install_factory()
    _identity = identity


def master_identity(host: str) -> str:
    return "%s master" % host


def worker_identity(host: str, worker_id: int) -> str:
    return "%s worker %d" % (host, worker_id)


def _install_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.conductor_id = _identity
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True

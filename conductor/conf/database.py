# SPDX-License-Identifier: Apache-2.0
"""Defaults for oslo.db's [database] group.

The options themselves belong to oslo.db; conductor only sets the default
connection to an embedded SQLite file under ``$state_path``.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_db import options as db_options

DEFAULT_CONNECTION = "sqlite:///$state_path/conductor.sqlite"


def register_opts(conf: cfg.ConfigOpts) -> None:
    db_options.set_defaults(conf, connection=DEFAULT_CONNECTION)


def list_opts() -> list[cfg.Opt]:
    return []

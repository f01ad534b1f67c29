# SPDX-License-Identifier: Apache-2.0
"""Options of the [DEFAULT] group that conductor itself declares."""

from __future__ import annotations

import socket

from oslo_config import cfg

opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this conductor host. Nodes are split among hosts by "
             "this name, so every host sharing a database needs a distinct "
             "value, stable across restarts."),
    cfg.ListOpt(
        "enabled_drivers",
        default=["fake"],
        help="Drivers to load from the 'conductor.drivers' entry point "
             "group. An unknown name stops start-up. Nodes whose driver "
             "is not enabled on any host are never polled."),
    cfg.StrOpt(
        "state_path",
        default="/var/lib/conductor",
        help="Directory for conductor's local state: the embedded SQLite "
             "database and the start-up task logs live here by default. "
             "Created at start-up when missing."),
    cfg.StrOpt(
        "inventory_file",
        help="Optional YAML or JSON list of nodes (the format of "
             "'conductor-manage node import') enrolled at start-up. Nodes "
             "whose name already exists are left as they are, so a restart "
             "never duplicates them. Unset (the default) imports nothing."),
    cfg.BoolOpt(
        "parallel_startup",
        default=True,
        help="Run independent start-up steps (schema check, driver "
             "loading, inventory import, hooks) as parallel named tasks. "
             "False runs the same steps inline, one after the other, with "
             "the same logs: useful when debugging start-up."),
    cfg.StrOpt(
        "async_log_dir",
        default="$state_path/async",
        help="Directory for the per-task logs of start-up tasks; each "
             "task writes <name>.log here and the file is kept."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts)


def list_opts() -> list[cfg.Opt]:
    return opts

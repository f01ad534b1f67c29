# SPDX-License-Identifier: Apache-2.0
"""The option list for oslo-config-generator (namespace ``conductor``)."""

from __future__ import annotations

from oslo_config import cfg

from conductor.conf import conductor
from conductor.conf import default
from conductor.conf import hooks
from conductor.conf import ipmi
from conductor.conf import metrics
from conductor.conf import notifications
from conductor.conf import redfish

# NOTE: explicit and alphabetical by group, so a new module is a visible
# one-line change here.
_GROUPS = [
    ("DEFAULT", default),
    ("conductor", conductor),
    ("hooks", hooks),
    ("ipmi", ipmi),
    ("metrics", metrics),
    ("notifications", notifications),
    ("redfish", redfish),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Return ``(group, options)`` pairs for the sample config generator."""
    return [(group, list(module.list_opts())) for group, module in _GROUPS]


def set_lib_defaults() -> None:
    """Apply conductor's defaults for library options (sample generator).

    The generator and the docs list oslo.db's own option objects, not the
    copies registered on a ``ConfigOpts``; the default must be set on
    those objects for the sample to show the embedded SQLite connection.
    """
    from oslo_db import options as db_options

    from conductor.conf import database
    cfg.set_defaults(db_options.database_opts,
                     connection=database.DEFAULT_CONNECTION)

# SPDX-License-Identifier: Apache-2.0
"""Configuration: every option conductor reads, registered on ``CONF``.

Options are read at the edges (entry points, ``Service.create``-style
factories) and passed inward as plain values; no module reads ``CONF`` at
import time.
"""

from __future__ import annotations

from oslo_config import cfg

from conductor.conf import conductor
from conductor.conf import database
from conductor.conf import default
from conductor.conf import hooks
from conductor.conf import ipmi
from conductor.conf import metrics
from conductor.conf import notifications
from conductor.conf import redfish

CONF = cfg.CONF

default.register_opts(CONF)
conductor.register_opts(CONF)
database.register_opts(CONF)
hooks.register_opts(CONF)
ipmi.register_opts(CONF)
metrics.register_opts(CONF)
notifications.register_opts(CONF)
redfish.register_opts(CONF)

# SPDX-License-Identifier: Apache-2.0
"""Acme: an example driver with periodic tasks.

Included in doc/source/periodics.rst; tests/unit/test_doc_examples.py
loads it and collects and runs its tasks as a worker does, so the page
cannot show code that does not work.
"""

import logging

from oslo_config import cfg

from conductor.drivers import base
from conductor import periodics
from conductor import states

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

# Register every option your tasks read, when your module is imported: a
# worker calls the spacing/enabled functions when it starts, and an
# option nobody registered makes every worker fail to start.
acme_opts = [
    cfg.IntOpt("session_refresh_interval", default=600,
               help="Seconds between refreshes of the BMC sessions; "
                    "0 disables them."),
    cfg.BoolOpt("keep_sessions", default=True,
                help="Keep a session open with each BMC."),
    cfg.IntOpt("clock_check_interval", default=3600,
               help="Seconds between checks of the BMC clocks."),
    cfg.IntOpt("clock_checks_per_run", default=50, min=1,
               help="Nodes whose BMC clock is checked in one run."),
]
CONF.register_opts(acme_opts, group="acme")


class AcmeClient:
    """Talks to one Acme BMC (a stand-in for a real client library)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def clock_drift(self) -> float:
        return 0.0


class AcmePower(base.PowerInterface):

    @periodics.periodic(
        spacing=lambda: CONF.acme.session_refresh_interval,
        enabled=lambda: CONF.acme.keep_sessions)
    def refresh_sessions(self) -> None:
        """Renew the BMC sessions that are about to expire."""
        LOG.debug("Acme sessions refreshed")

    @periodics.node_periodic(
        purpose="checking the BMC clock",
        spacing=lambda: CONF.acme.clock_check_interval,
        predicate=lambda node: "acme_address" in node.driver_info,
        limit=lambda: CONF.acme.clock_checks_per_run)
    def check_clock(self, task: periodics.NodeTask) -> None:
        drift = self._client(task.node).clock_drift()
        if drift > 60:
            LOG.warning("Node %(node)s: BMC clock is %(drift)s s off",
                        {"node": task.node.uuid, "drift": drift})

    def _client(self, node: base.DriverNode) -> AcmeClient:
        return AcmeClient(node.driver_info["acme_address"])

    # The power operations every driver implements (see driver-api).
    def validate(self, node: base.DriverNode) -> None:
        self._client(node)

    def get_power_state(self, node: base.DriverNode) -> str:
        return states.POWER_OFF

    def set_power_state(self, node: base.DriverNode, target: str) -> None:
        pass

    def reboot(self, node: base.DriverNode) -> None:
        pass


class AcmeDriver(base.BaseDriver):
    def __init__(self) -> None:
        self.power = AcmePower()

# SPDX-License-Identifier: Apache-2.0
"""The public states module: the driver API's power states."""

from __future__ import annotations

from conductor.conf import conductor as conductor_opts
from conductor import states
from tests import base


class TestStates(base.TestCase):

    def test_public_module_has_the_contract_values(self) -> None:
        self.assertEqual(("power on", "power off", "rebooting", "error",
                          None),
                         (states.POWER_ON, states.POWER_OFF, states.REBOOT,
                          states.ERROR, states.NOSTATE))
        self.assertEqual(frozenset({"power on", "power off", "rebooting"}),
                         states.POWER_TARGETS)


class TestMutableOptions(base.TestCase):

    def test_intervals_and_timeouts_reload_on_sighup(self) -> None:
        mutable = {opt.name for opt in conductor_opts.opts if opt.mutable}
        self.assertLessEqual(
            {"heartbeat_interval", "heartbeat_timeout",
             "hash_ring_reset_interval", "sync_power_state_interval",
             "sync_power_state_workers", "power_state_sync_max_retries",
             "power_failure_recovery_interval",
             "force_power_state_during_sync", "power_state_timeout",
             "pending_action_interval"}, mutable)
        # Process shape cannot change without a restart.
        self.assertNotIn("workers", mutable)
        self.assertNotIn("workers_pool_size", mutable)

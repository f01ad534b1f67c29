# SPDX-License-Identifier: Apache-2.0
"""The redfish driver against sushy-tools' emulator and misbehaving peers."""

from __future__ import annotations

from concurrent import futures
import logging
import time

import fixtures

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base as drivers_base
from conductor.drivers import redfish
from conductor import states
from tests import base
from tests.functional import bmc

#: The emulator's fake systems apply a power change after 1 to 11 s.
POWER_CHANGE_TIMEOUT = 15.0


class RedfishDriverTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=10.0, group="conductor")
        self.config(connection_retry_interval=0.1, group="redfish")
        self.emulator = self.useFixture(bmc.RedfishEmulator(
            4, power=["Off", "On", "On", "Off"]))
        self.power = redfish.RedfishDriver().power
        # Whatever a test does, no secret reaches any log, at any level.
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        self.addCleanup(lambda: self.assertSecretFree(self.logs.output))

    def node(self, index: int, **changes: object) -> drivers_base.DriverNode:
        return bmc.driver_node(self.emulator.driver_info(index, **changes),
                               name="node-%d" % index, driver="redfish")

    def assertSecretFree(self, text: str) -> None:
        self.assertNotIn(self.emulator.password, text)
        self.assertNotIn("wrong-pass", text)

    def test_enrol_validates(self) -> None:
        for index in range(4):
            self.power.validate(self.node(index))
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.power.validate,
            bmc.driver_node({"redfish_address": "ftp://127.0.0.1",
                             "redfish_password": "wrong-pass"},
                            name="bad", driver="redfish"))
        self.assertIn("Node bad", str(exc))
        self.assertIn("missing required field(s) redfish_username",
                      str(exc))
        self.assertIn("http:// or https://", str(exc))
        self.assertSecretFree(str(exc))

    def test_power_sync_in_parallel(self) -> None:
        nodes = [self.node(index) for index in range(4)]
        with futures.ThreadPoolExecutor(4) as pool:
            found = list(pool.map(self.power.get_power_state, nodes))
        self.assertEqual([states.POWER_OFF, states.POWER_ON,
                          states.POWER_ON, states.POWER_OFF], found)
        # The secret check in setUp does see the driver's debug log.
        self.assertIn("Opening a Redfish client", self.logs.output)

    def test_power_actions(self) -> None:
        # All four at once: each change takes the emulator 1 to 11 s.
        nodes = [self.node(index) for index in range(4)]
        self.power.set_power_state(nodes[0], states.POWER_ON)
        self.power.set_power_state(nodes[1], states.POWER_OFF)
        self.power.reboot(nodes[2])
        self.power.reboot(nodes[3])
        seen: list[list[str]] = [[] for _ in nodes]

        def settled() -> bool:
            for index, node in enumerate(nodes):
                state = self.power.get_power_state(node)
                if not seen[index] or seen[index][-1] != state:
                    seen[index].append(state)
            return [trail[-1] for trail in seen] == [
                states.POWER_ON, states.POWER_OFF, states.POWER_ON,
                states.POWER_ON]

        bmc.wait_for(settled, POWER_CHANGE_TIMEOUT,
                     "power changes were not applied: %s" % seen,
                     interval=0.2)
        # Both reboots reached the BMC as resets, and left the systems on.
        # NOTE: whether the brief "off" of a restart is seen depends on
        # timing (the emulator may end it within milliseconds), so it is
        # not asserted; the reset type sent is checked in the unit tests.
        log = self.emulator.log()
        for index in (2, 3):
            self.assertIn('POST /redfish/v1/Systems/%s/Actions/'
                          'ComputerSystem.Reset' % self.emulator.ids[index],
                          log)
        self.assertEqual(["On", "Off", "On", "On"],
                         [self.emulator.power(i) for i in range(4)])

    def test_asking_for_the_current_state_sends_nothing(self) -> None:
        self.power.set_power_state(self.node(1), states.POWER_ON)
        self.power.set_power_state(self.node(0), states.POWER_OFF)
        self.assertIn("GET /redfish/v1/Systems/" + self.emulator.ids[1],
                      self.emulator.log())
        self.assertNotIn("ComputerSystem.Reset", self.emulator.log())

    def test_wrong_password(self) -> None:
        node = self.node(0, redfish_password="wrong-pass")
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        self.assertIn("refused user 'admin' or its password (HTTP 401",
                      str(exc))
        self.assertIn(self.emulator.address, str(exc))
        self.assertSecretFree(str(exc))
        # The right password works at once: clients are per password.
        self.assertEqual(states.POWER_OFF,
                         self.power.get_power_state(self.node(0)))

    def test_unknown_system(self) -> None:
        node = self.node(0, redfish_system_id="no-such-system")
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        self.assertIn("/redfish/v1/Systems/no-such-system was not found",
                      str(exc))

    def test_unreachable_address(self) -> None:
        node = self.node(0, redfish_address="http://127.0.0.1:%d"
                         % bmc.closed_port())
        started = time.monotonic()
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIn("the connection was refused", str(exc))
        self.assertSecretFree(str(exc))

    def test_hung_bmc_is_abandoned_at_the_deadline(self) -> None:
        self.config(power_state_timeout=1.5, group="conductor")
        silent = self.useFixture(bmc.SilentHTTPServer())
        node = self.node(0, redfish_address=silent.address)
        started = time.monotonic()
        exc = self.assertRaises(deadline.DeadlineExceeded,
                                self.power.get_power_state, node)
        self.assertLess(time.monotonic() - started, 1.5 + 2.0)
        self.assertIn("no answer within", str(exc))
        self.assertSecretFree(str(exc))

    def test_dead_address_costs_the_connect_timeout(self) -> None:
        self.config(power_state_timeout=10.0, group="conductor")
        self.config(connect_timeout=0.5, connection_attempts=1,
                    group="redfish")
        dead = self.useFixture(bmc.DeadTCPAddress())
        node = self.node(0, redfish_address=dead.address)
        started = time.monotonic()
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        # The connect timeout, not the 10 s deadline.
        self.assertLess(time.monotonic() - started, 0.5 + 2.0)
        self.assertIn("the connection timed out", str(exc))
        self.assertSecretFree(str(exc))

    def test_conductor_deadline_is_honoured(self) -> None:
        silent = self.useFixture(bmc.SilentHTTPServer())
        node = self.node(0, redfish_address=silent.address)
        started = time.monotonic()
        with deadline.scope(0.5):
            self.assertRaises(deadline.DeadlineExceeded,
                              self.power.set_power_state, node,
                              states.POWER_ON)
        self.assertLess(time.monotonic() - started, 0.5 + 2.0)

    def test_server_errors_are_retried_briefly(self) -> None:
        self.config(connection_attempts=3, group="redfish")
        failing = self.useFixture(bmc.ErrorHTTPServer(503))
        node = self.node(0, redfish_address=failing.address)
        started = time.monotonic()
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        # Three attempts 0.1 s apart, not sushy's 10 x 3 s.
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(3, failing.requests)
        self.assertIn("the BMC failed with HTTP 503: Simulated BMC failure",
                      str(exc))
        self.assertSecretFree(str(exc))

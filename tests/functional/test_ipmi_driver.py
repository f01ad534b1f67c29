# SPDX-License-Identifier: Apache-2.0
"""The ipmi driver against real ipmi_sim BMCs, through real ipmitool."""

from __future__ import annotations

from concurrent import futures
import logging
import os
import socket
import time

import fixtures
import psutil

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base as drivers_base
from conductor.drivers import ipmi
from conductor import states
from tests import base
from tests.functional import bmc


class IPMIDriverTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=10.0, group="conductor")
        self.sims = self.useFixture(bmc.IPMISims(3, power=["off", "on",
                                                           "on"]))
        self.power = ipmi.IPMIDriver().power
        # Whatever a test does, no secret reaches any log, at any level.
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        self.addCleanup(lambda: self.assertSecretFree(self.logs.output))

    def node(self, index: int, **changes: object) -> drivers_base.DriverNode:
        return bmc.driver_node(self.sims.driver_info(index, **changes),
                               name="node-%d" % index)

    def assertSecretFree(self, text: str) -> None:
        self.assertNotIn(self.sims.password, text)
        self.assertNotIn("wrong-pass", text)

    def test_enrol_validates(self) -> None:
        for index in range(3):
            self.power.validate(self.node(index))
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.power.validate,
            bmc.driver_node({"ipmi_address": "127.0.0.1",
                             "ipmi_port": "not-a-port"}, name="bad"))
        self.assertIn("Node bad", str(exc))
        self.assertIn("ipmi_username, ipmi_password", str(exc))
        self.assertIn("ipmi_port must be an integer", str(exc))

    def test_power_sync_in_parallel(self) -> None:
        nodes = [self.node(index) for index in range(3)]
        with futures.ThreadPoolExecutor(3) as pool:
            found = list(pool.map(self.power.get_power_state, nodes))
        self.assertEqual([states.POWER_OFF, states.POWER_ON,
                          states.POWER_ON], found)

    def test_power_on_and_off(self) -> None:
        node = self.node(0)
        self.power.set_power_state(node, states.POWER_ON)
        self.assertEqual("on", self.sims.power(0))
        self.assertEqual(states.POWER_ON, self.power.get_power_state(node))
        self.power.set_power_state(node, states.POWER_OFF)
        self.assertEqual("off", self.sims.power(0))
        self.assertEqual(states.POWER_OFF, self.power.get_power_state(node))
        # The secret check in setUp does see the driver's debug log.
        self.assertIn("chassis power off", self.logs.output)

    def test_reboot_cycles_a_node_that_is_on(self) -> None:
        self.power.reboot(self.node(1))
        # ipmi_sim powers the chassis off at once and back on a second
        # later.
        bmc.wait_for(lambda: self.sims.actions(1) == ["power 0", "power 1"],
                     5, "node 1 was not power-cycled: %s"
                     % self.sims.actions(1))
        self.assertEqual(states.POWER_ON,
                         self.power.get_power_state(self.node(1)))

    def test_reboot_powers_on_a_node_that_is_off(self) -> None:
        self.power.reboot(self.node(0))
        self.assertEqual(["power 1"], self.sims.actions(0))
        self.assertEqual("on", self.sims.power(0))

    def test_wrong_password(self) -> None:
        node = self.node(0, ipmi_password="wrong-pass")
        started = time.monotonic()
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        self.assertLess(time.monotonic() - started, 2)
        self.assertIn("refused user 'admin' or its password", str(exc))
        self.assertIn("127.0.0.1:%d" % self.sims.ports[0], str(exc))
        self.assertSecretFree(str(exc))
        self.assertEqual("off", self.sims.power(0))

    def test_unreachable_address(self) -> None:
        self.config(retransmit_attempts=1, group="ipmi")
        node = bmc.driver_node(self.sims.driver_info(
            0, ipmi_port=bmc.closed_port(socket.SOCK_DGRAM)))
        started = time.monotonic()
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, node)
        # -N 1 -R 1: two requests, one second each.
        self.assertLess(time.monotonic() - started, 4)
        self.assertIn("no answer from the BMC", str(exc))
        self.assertSecretFree(str(exc))

    def test_hung_bmc_is_abandoned_at_the_deadline(self) -> None:
        self.config(power_state_timeout=1.5, group="conductor")
        # Left alone, ipmitool would wait 2 x (1 + 2 + ... + 6) = 42 s.
        self.config(retransmit_attempts=6, group="ipmi")
        silent = self.useFixture(bmc.SilentUDPPort())
        node = bmc.driver_node(self.sims.driver_info(
            0, ipmi_port=silent.port))
        me = psutil.Process()
        with futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            future = pool.submit(self.power.get_power_state, node)
            child = bmc.wait_for(
                lambda: [p for p in me.children() if p.name() == "ipmitool"],
                5.0, "ipmitool was not started")[0]
            # While it runs, the password is neither in its arguments (ps)
            # nor in its environment.
            cmdline = " ".join(child.cmdline())
            self.assertIn("-f /dev/fd/", cmdline)
            self.assertSecretFree(cmdline)
            self.assertSecretFree(repr(child.environ()))
            # It reads the driver's one-entry registry, not the system's.
            home = child.environ()["HOME"]
            self.assertNotEqual(os.environ.get("HOME"), home)
            self.assertTrue(os.path.isfile(os.path.join(
                home, ".local/usr/share/misc/enterprise-numbers.txt")))
            error = future.exception(timeout=5)
            elapsed = time.monotonic() - started
        self.assertIsInstance(error, deadline.DeadlineExceeded)
        self.assertLess(elapsed, 1.5 + 2.0)
        self.assertIn("got no answer within", str(error))
        self.assertSecretFree(str(error))
        # Killed and reaped: no ipmitool left behind, not even a zombie.
        self.assertEqual([], [p for p in me.children()
                              if p.name() == "ipmitool"])

    def test_conductor_deadline_is_honoured(self) -> None:
        silent = self.useFixture(bmc.SilentUDPPort())
        node = bmc.driver_node(self.sims.driver_info(
            0, ipmi_port=silent.port))
        started = time.monotonic()
        with deadline.scope(0.5):
            self.assertRaises(deadline.DeadlineExceeded,
                              self.power.get_power_state, node)
        self.assertLess(time.monotonic() - started, 0.5 + 2.0)

# SPDX-License-Identifier: Apache-2.0
"""The ipmipower side of the ipmi driver: command line, parser, batches."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from unittest import mock

from conductor.common import exceptions
from conductor.drivers import _freeipmi
from conductor.drivers import base as drivers_base
from conductor.drivers import ipmi
from conductor import states
from tests import base

PASSWORD = "pa55-word"
OPTIONS = _freeipmi.Options(path="/usr/sbin/ipmipower",
                            workaround_flags=["opensesspriv"],
                            session_timeout=6.0,
                            retransmission_timeout=1.0)
GROUP = _freeipmi.Group("admin", PASSWORD, 3, "ADMINISTRATOR", 623)


def node(uuid: str, address: str, **changes: Any) -> drivers_base.DriverNode:
    info = {"ipmi_address": address, "ipmi_username": "admin",
            "ipmi_password": PASSWORD}
    info.update(changes)
    return drivers_base.DriverNode(uuid=uuid, name=None, driver="ipmi",
                                   driver_info=info, power_state=None)


def done(stdout: str, returncode: int = 0) -> Any:
    return subprocess.CompletedProcess([], returncode, stdout.encode(), b"")


class ParseOutputTest(base.TestCase):

    def test_one_answer_per_host(self) -> None:
        self.assertEqual(
            {"10.0.0.1": "on", "10.0.0.2": "off",
             "10.0.0.3": "connection timeout"},
            _freeipmi.parse_output(
                "10.0.0.1: on\n10.0.0.2: off\n10.0.0.3: connection timeout\n",
                ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))

    def test_a_prefix_of_another_host_is_not_confused(self) -> None:
        # 10.0.0.1 is a prefix of 10.0.0.10: only an exact "host: " counts.
        self.assertEqual(
            {"10.0.0.10": "off"},
            _freeipmi.parse_output("10.0.0.10: off\n",
                                   ["10.0.0.1", "10.0.0.10"]))

    def test_ipv6_hosts_have_colons_of_their_own(self) -> None:
        self.assertEqual(
            {"fd00::1": "on", "fd00::1:2": "password invalid"},
            _freeipmi.parse_output("fd00::1:2: password invalid\n"
                                   "fd00::1: on\n",
                                   ["fd00::1", "fd00::1:2"]))

    def test_unknown_hosts_and_noise_are_ignored(self) -> None:
        self.assertEqual(
            {"bmc-a": "on"},
            _freeipmi.parse_output("ipmipower> \nbmc-z: off\nwarning\n"
                                   "bmc-a: ON \nbmc-a: off\nbmc-b:\n",
                                   ["bmc-a", "bmc-b"]))


class ArgvTest(base.TestCase):

    def test_command_line_has_no_secret(self) -> None:
        argv = _freeipmi.argv(GROUP, ["10.0.0.1", "fd00::2"], OPTIONS,
                              config_fd=7, budget=30.0)
        self.assertEqual(
            ["/usr/sbin/ipmipower", "--driver-type=LAN_2_0",
             "--hostname=10.0.0.1,[fd00::2]", "--username=admin",
             "--cipher-suite-id=3", "--privilege-level=ADMIN",
             "--config-file=/dev/fd/7", "--session-timeout=6000",
             "--retransmission-timeout=1000", "--always-prefix", "--stat",
             "--workaround-flags=opensesspriv"], argv)
        self.assertNotIn(PASSWORD, " ".join(argv))

    def test_port_and_budget(self) -> None:
        group = _freeipmi.Group("op", PASSWORD, 17, "OPERATOR", 6230)
        argv = _freeipmi.argv(group, ["bmc-1"], OPTIONS, config_fd=3,
                              budget=2.0)
        self.assertIn("--hostname=bmc-1:6230", argv)
        self.assertIn("--privilege-level=OPERATOR", argv)
        # The session timeout never outlasts the call's budget.
        self.assertIn("--session-timeout=2000", argv)
        self.assertIn("--retransmission-timeout=1000", argv)

    def test_config_safe(self) -> None:
        self.assertTrue(_freeipmi.config_safe("Pa55-w0rd!"))
        for bad in ("two words", "a#b", 'q"', "q'", "back\\slash"):
            self.assertFalse(_freeipmi.config_safe(bad), bad)


class BatchTest(base.TestCase):
    """IPMIBatchPower.get_power_states over a faked ipmipower."""

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=5.0, group="conductor")
        self.config(freeipmi_workaround_flags=["opensesspriv"],
                    group="ipmi")
        self.power = ipmi.IPMIBatchPower()
        patcher = mock.patch.object(_freeipmi.subprocess, "run",
                                    autospec=True)
        self.ipmipower = patcher.start()
        self.addCleanup(patcher.stop)
        self.configs: list[bytes] = []
        self.outputs: list[str] = []

        def fake(argv: list[str], **kwargs: Any) -> Any:
            self.configs.append(os.read(kwargs["pass_fds"][0], 200))
            return done(self.outputs.pop(0))

        self.ipmipower.side_effect = fake

    def test_one_run_answers_every_node(self) -> None:
        self.outputs = ["10.0.0.1: on\n10.0.0.2: off\n"
                        "10.0.0.3: connection timeout\n"
                        "10.0.0.4: password invalid\n"]
        found = self.power.get_power_states(
            [node("a", "10.0.0.1"), node("b", "10.0.0.2"),
             node("c", "10.0.0.3"), node("d", "10.0.0.4")])
        self.assertEqual(1, self.ipmipower.call_count)
        self.assertEqual(states.POWER_ON, found["a"])
        self.assertEqual(states.POWER_OFF, found["b"])
        self.assertIsInstance(found["c"], exceptions.PowerStateFailure)
        self.assertIn("node c at BMC 10.0.0.3:623 failed: no answer from "
                      "the BMC", str(found["c"]))
        self.assertIn("refused user 'admin' or its password", str(found["d"]))
        self.assertEqual([b"ipmipower-password %s\n" % PASSWORD.encode()],
                         self.configs)
        kwargs = self.ipmipower.call_args.kwargs
        self.assertNotIn(PASSWORD, " ".join(self.ipmipower.call_args.args[0]))
        self.assertNotIn(PASSWORD, repr(kwargs["env"]))

    def test_groups_by_credentials_suite_privilege_and_port(self) -> None:
        self.outputs = ["10.0.0.1: on\n10.0.0.2: on\n", "10.0.0.3: off\n",
                        "10.0.0.4: off\n", "10.0.0.5: on\n"]
        found = self.power.get_power_states(
            [node("a", "10.0.0.1"), node("b", "10.0.0.2"),
             node("c", "10.0.0.3", ipmi_cipher_suite=17),
             node("d", "10.0.0.4", ipmi_port=6230),
             node("e", "10.0.0.5", ipmi_priv_level="OPERATOR")])
        self.assertEqual(4, self.ipmipower.call_count)
        self.assertEqual({"a": states.POWER_ON, "b": states.POWER_ON,
                          "c": states.POWER_OFF, "d": states.POWER_OFF,
                          "e": states.POWER_ON}, found)
        hosts = [[arg for arg in call.args[0]
                  if arg.startswith("--hostname=")][0]
                 for call in self.ipmipower.call_args_list]
        self.assertEqual(["--hostname=10.0.0.1,10.0.0.2",
                          "--hostname=10.0.0.3", "--hostname=10.0.0.4:6230",
                          "--hostname=10.0.0.5"], hosts)

    def test_two_nodes_of_one_bmc_share_its_answer(self) -> None:
        self.outputs = ["10.0.0.1: off\n"]
        found = self.power.get_power_states([node("a", "10.0.0.1"),
                                             node("b", "10.0.0.1")])
        self.assertEqual({"a": states.POWER_OFF, "b": states.POWER_OFF},
                         found)

    def test_an_unresolvable_name_fails_that_node_only(self) -> None:
        # ipmipower answers only for the bad name and skips the others.
        self.outputs = ["nosuch.invalid: invalid hostname\n",
                        "10.0.0.1: on\n"]
        found = self.power.get_power_states(
            [node("a", "10.0.0.1"), node("b", "nosuch.invalid")])
        self.assertEqual(states.POWER_ON, found["a"])
        self.assertIn("host name 'nosuch.invalid' does not resolve",
                      str(found["b"]))
        self.assertEqual("--hostname=10.0.0.1",
                         self.ipmipower.call_args.args[0][2])

    def test_a_missing_answer_fails_the_group_clearly(self) -> None:
        self.outputs = ["10.0.0.1: on\n"]
        found = self.power.get_power_states([node("a", "10.0.0.1"),
                                             node("b", "10.0.0.2")])
        self.assertIn("ipmipower gave no answer for 1 host(s) (10.0.0.2)",
                      str(found["b"]))

    def test_invalid_driver_info_fails_that_node_only(self) -> None:
        self.outputs = ["10.0.0.1: on\n"]
        found = self.power.get_power_states(
            [node("a", "10.0.0.1"), node("b", "10.0.0.2", ipmi_port="x")])
        self.assertEqual(states.POWER_ON, found["a"])
        self.assertIsInstance(found["b"], exceptions.InvalidParameterValue)

    def test_missing_ipmipower_is_named(self) -> None:
        self.ipmipower.side_effect = FileNotFoundError(2, "No such file")
        found = self.power.get_power_states([node("a", "10.0.0.1")])
        self.assertIn("could not run 'ipmipower'", str(found["a"]))
        self.assertIn("install freeipmi-tools", str(found["a"]))

    def test_a_run_past_its_deadline_fails_its_nodes(self) -> None:
        self.ipmipower.side_effect = subprocess.TimeoutExpired(
            ["ipmipower"], 1)
        found = self.power.get_power_states([node("a", "10.0.0.1")])
        self.assertIn("did not finish within", str(found["a"]))

    def test_no_run_starts_without_time_left(self) -> None:
        exc = self.assertRaises(
            _freeipmi.RunFailed, _freeipmi.read_group, GROUP, ["10.0.0.1"],
            OPTIONS, budget=0.05, env={})
        self.assertIn("no time was left in the call's deadline", str(exc))
        self.ipmipower.assert_not_called()

    def test_unsafe_password_is_read_with_ipmitool(self) -> None:
        with mock.patch.object(ipmi.IPMIPower, "_status", autospec=True,
                               return_value=states.POWER_OFF) as status:
            found = self.power.get_power_states(
                [node("a", "10.0.0.1", ipmi_password="with space")])
        self.assertEqual({"a": states.POWER_OFF}, found)
        self.assertEqual(1, status.call_count)
        self.ipmipower.assert_not_called()

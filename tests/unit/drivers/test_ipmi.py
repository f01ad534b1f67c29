# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the ipmi driver, with ipmitool faked."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from unittest import mock

import fixtures

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base as drivers_base
from conductor.drivers import ipmi
from conductor import states
from tests import base
from tests import fakes

PASSWORD = "pa55-word"
INFO = {"ipmi_address": "10.0.0.5", "ipmi_username": "admin",
        "ipmi_password": PASSWORD}


def make_node(**changes: Any) -> drivers_base.DriverNode:
    return fakes.node_with_info("ipmi", INFO, **changes)


def done(stdout: str = "", stderr: str = "",
         returncode: int = 0) -> subprocess.CompletedProcess[bytes]:
    return subprocess.CompletedProcess([], returncode, stdout.encode(),
                                       stderr.encode())


class ValidateTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.power = ipmi.IPMIPower()

    def invalid(self, **changes: Any) -> str:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.power.validate, make_node(**changes))
        self.assertNotIn(PASSWORD, str(exc))
        return str(exc)

    def test_minimal_info_is_valid(self) -> None:
        self.power.validate(make_node())
        bmc = ipmi.parse_driver_info(make_node())
        self.assertEqual(("10.0.0.5", 623, 3),
                         (bmc.address, bmc.port, bmc.cipher_suite))

    def test_full_info_is_valid(self) -> None:
        bmc = ipmi.parse_driver_info(make_node(
            ipmi_address="bmc-1.example.com", ipmi_port="6230",
            ipmi_cipher_suite=17))
        self.assertEqual(("bmc-1.example.com", 6230, 17),
                         (bmc.address, bmc.port, bmc.cipher_suite))
        self.assertEqual("bmc-1.example.com:6230", str(bmc))

    def test_ipv6_address(self) -> None:
        bmc = ipmi.parse_driver_info(make_node(ipmi_address="fd00::5"))
        self.assertEqual("[fd00::5]:623", str(bmc))

    def test_missing_fields_are_all_named(self) -> None:
        text = self.invalid(ipmi_address=None, ipmi_username="",
                            ipmi_password=None)
        self.assertIn("Node node-1: invalid driver_info for the ipmi "
                      "driver: missing required field(s) ipmi_address, "
                      "ipmi_username, ipmi_password", text)

    def test_every_problem_is_named_at_once(self) -> None:
        text = self.invalid(ipmi_port=70000, ipmi_cipher_suite="x",
                            ipmi_adress="10.0.0.6")
        self.assertIn("unknown field(s) ipmi_adress", text)
        self.assertIn("ipmi_port must be an integer from 1 to 65535, got "
                      "70000", text)
        self.assertIn("ipmi_cipher_suite must be an integer from 0 to 17, "
                      "got 'x'", text)

    def test_privilege_level(self) -> None:
        self.assertIn("ipmi_priv_level must be one of ADMINISTRATOR, "
                      "OPERATOR, USER, got 'CALLBACK'",
                      self.invalid(ipmi_priv_level="CALLBACK"))
        bmc = ipmi.parse_driver_info(make_node(ipmi_priv_level="OPERATOR"))
        self.assertEqual("OPERATOR", bmc.privilege)
        self.assertEqual("ADMINISTRATOR",
                         ipmi.parse_driver_info(make_node()).privilege)

    def test_address_that_could_be_an_option_is_refused(self) -> None:
        self.assertIn("ipmi_address must be a host name or an IP address, "
                      "got '-oProxyCommand=x'",
                      self.invalid(ipmi_address="-oProxyCommand=x"))
        self.assertIn("got 'two words'",
                      self.invalid(ipmi_address="two words"))

    def test_boolean_port_is_refused(self) -> None:
        self.assertIn("ipmi_port must be an integer",
                      self.invalid(ipmi_port=True))

    def test_long_password_is_refused_without_quoting_it(self) -> None:
        text = self.invalid(ipmi_password="x" * 21)
        self.assertIn("ipmi_password must be 1 to 20 bytes on one line "
                      "(IPMI 2.0 limit); the value given is 21 bytes", text)
        self.assertNotIn("x" * 21, text)

    def test_password_with_a_line_break_is_refused(self) -> None:
        self.assertIn("ipmi_password must be 1 to 20 bytes on one line",
                      self.invalid(ipmi_password=PASSWORD + "\n"))

    def test_numeric_password_from_the_cli_is_read_as_typed(self) -> None:
        bmc = ipmi.parse_driver_info(make_node(ipmi_password=1234))
        self.assertEqual("1234", bmc.password)

    def test_password_of_another_type_is_refused(self) -> None:
        self.assertIn("ipmi_password must be a string, got a list",
                      self.invalid(ipmi_password=[PASSWORD]))

    def test_long_username_is_refused(self) -> None:
        self.assertIn("ipmi_username must be a string of 1 to 16 bytes",
                      self.invalid(ipmi_username="u" * 17))

    def test_repr_leaves_the_password_out(self) -> None:
        self.assertNotIn(PASSWORD, repr(ipmi.parse_driver_info(make_node())))


class IPMIPowerTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=5.0, group="conductor")
        self.power = ipmi.IPMIPower()
        patcher = mock.patch.object(ipmi.subprocess, "run", autospec=True)
        self.ipmitool = patcher.start()
        self.addCleanup(patcher.stop)
        self.ipmitool.return_value = done("Chassis Power is on\n")
        self.received: list[bytes] = []

        def read_password(argv: list[str], **kwargs: Any) -> Any:
            # The pipe is still open while ipmitool runs: read it as
            # ipmitool would.
            self.received.append(os.read(kwargs["pass_fds"][0], 100))
            return self.ipmitool.return_value

        self.ipmitool.side_effect = read_password

    def argv(self, call: int = -1) -> list[str]:
        return list(self.ipmitool.call_args_list[call].args[0])

    def test_status_on(self) -> None:
        self.assertEqual(states.POWER_ON,
                         self.power.get_power_state(make_node()))

    def test_status_off(self) -> None:
        self.ipmitool.return_value = done(
            "Discovered IPMB address 0x0\nChassis Power is off\n")
        self.assertEqual(states.POWER_OFF,
                         self.power.get_power_state(make_node()))

    def test_status_not_understood(self) -> None:
        self.ipmitool.return_value = done("Chassis Power is sideways\n")
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, make_node())
        self.assertIn("is not understood: 'Chassis Power is sideways'",
                      str(exc))

    def test_command_line(self) -> None:
        self.config(ipmitool_path="/opt/bin/ipmitool",
                    retransmit_timeout=2, retransmit_attempts=3,
                    group="ipmi")
        self.power.get_power_state(make_node(ipmi_port=6230,
                                             ipmi_cipher_suite=17))
        argv = self.argv()
        fd = self.ipmitool.call_args.kwargs["pass_fds"][0]
        self.assertEqual(
            ["/opt/bin/ipmitool", "-I", "lanplus", "-H", "10.0.0.5",
             "-p", "6230", "-U", "admin", "-C", "17", "-L", "ADMINISTRATOR",
             "-N", "2", "-R", "3",
             "-v", "-f", "/dev/fd/%d" % fd, "chassis", "power", "status"],
            argv)

    def test_ipmitool_reads_a_one_entry_registry(self) -> None:
        self.power.get_power_state(make_node())
        home = self.ipmitool.call_args.kwargs["env"]["HOME"]
        self.assertNotEqual(os.environ.get("HOME"), home)
        self.assertEqual(0o700, os.stat(home).st_mode & 0o777)
        registry = os.path.join(home, ".local", "usr", "share", "misc",
                                "enterprise-numbers.txt")
        with open(registry) as stream:
            self.assertEqual("0\n  Reserved\n", stream.read())
        # One directory per process, not one per call.
        self.power.get_power_state(make_node())
        self.assertEqual(home,
                         self.ipmitool.call_args.kwargs["env"]["HOME"])

    def test_stock_registry_when_asked(self) -> None:
        self.config(ipmitool_short_registry=False, group="ipmi")
        self.power.get_power_state(make_node())
        self.assertEqual(os.environ.get("HOME"),
                         self.ipmitool.call_args.kwargs["env"].get("HOME"))

    def test_password_goes_through_a_pipe_only(self) -> None:
        self.power.get_power_state(make_node())
        self.assertEqual([PASSWORD.encode()], self.received)
        kwargs = self.ipmitool.call_args.kwargs
        self.assertNotIn(PASSWORD, " ".join(self.argv()))
        self.assertNotIn(PASSWORD, repr(kwargs["env"]))
        self.assertNotIn("IPMI_PASSWORD", kwargs["env"])
        self.assertEqual("C", kwargs["env"]["LC_ALL"])
        self.assertEqual(subprocess.DEVNULL, kwargs["stdin"])
        # The pipe is closed once ipmitool is done.
        self.assertRaises(OSError, os.fstat, kwargs["pass_fds"][0])

    def test_ipmitool_password_variable_is_not_passed_on(self) -> None:
        self.useFixture(
            fixtures.EnvironmentVariable("IPMI_PASSWORD", "leaked"))
        self.power.get_power_state(make_node())
        self.assertNotIn("IPMI_PASSWORD",
                         self.ipmitool.call_args.kwargs["env"])

    def test_timeout_is_the_power_state_timeout(self) -> None:
        self.power.get_power_state(make_node())
        timeout = self.ipmitool.call_args.kwargs["timeout"]
        self.assertLess(timeout, 5.0)
        self.assertGreater(timeout, 4.8)

    def test_timeout_is_bounded_by_the_callers_deadline(self) -> None:
        with deadline.scope(0.5):
            self.power.get_power_state(make_node())
        self.assertLess(self.ipmitool.call_args.kwargs["timeout"], 0.5)

    def test_expired_deadline_starts_nothing(self) -> None:
        with deadline.scope(0.0):
            exc = self.assertRaises(deadline.DeadlineExceeded,
                                    self.power.get_power_state, make_node())
        self.assertIn("was not started", str(exc))
        self.ipmitool.assert_not_called()

    def test_timeout_is_a_clear_deadline_error(self) -> None:
        self.ipmitool.side_effect = subprocess.TimeoutExpired(
            ["ipmitool"], 4.9)
        exc = self.assertRaises(deadline.DeadlineExceeded,
                                self.power.get_power_state, make_node())
        self.assertIn("IPMI 'chassis power status' for node "
                      "1be26c0b-03f2-4d2e-ae87-c02d7f33c781 at BMC "
                      "10.0.0.5:623 got no answer within", str(exc))
        self.assertIn("ipmitool was stopped", str(exc))
        self.assertNotIn(PASSWORD, str(exc))

    def test_missing_ipmitool(self) -> None:
        self.ipmitool.side_effect = FileNotFoundError(
            2, "No such file or directory")
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, make_node())
        self.assertIn("could not run 'ipmitool': No such file or directory; "
                      "install ipmitool or set [ipmi] ipmitool_path",
                      str(exc))

    def fail_with(self, stderr: str) -> str:
        self.ipmitool.return_value = done(stderr=stderr, returncode=1)
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.get_power_state, make_node())
        self.assertNotIn(PASSWORD, str(exc))
        return str(exc)

    def test_wrong_password(self) -> None:
        self.assertIn(
            "at BMC 10.0.0.5:623 failed: the BMC refused user 'admin' or "
            "its password",
            self.fail_with("> RAKP 2 HMAC is invalid\nError: Unable to "
                           "establish IPMI v2 / RMCP+ session\n"))

    def test_unknown_user(self) -> None:
        self.assertIn("refused user 'admin'", self.fail_with(
            "RAKP 2 message indicates an error : unauthorized name\n"))

    def test_silent_bmc(self) -> None:
        self.assertIn("no answer from the BMC", self.fail_with(
            "Get Auth Capabilities error\nError issuing Get Channel "
            "Authentication Capabilities request\n"))

    def test_unresolvable_address(self) -> None:
        self.assertIn("host name '10.0.0.5' does not resolve",
                      self.fail_with("Address lookup for 10.0.0.5 failed"))

    def test_cipher_suite_refused(self) -> None:
        self.assertIn("does not accept cipher suite 3", self.fail_with(
            "Error in open session response message : invalid "
            "authentication algorithm\n"))

    def test_other_errors_are_quoted_without_noise_or_secrets(self) -> None:
        text = self.fail_with("Loading IANA PEN Registry...\n"
                              "Something odd about %s\n" % PASSWORD)
        self.assertIn("ipmitool said: Something odd about ******", text)
        self.assertNotIn("IANA", text)

    def test_set_power_state(self) -> None:
        self.ipmitool.return_value = done("Chassis Power Control: Up/On\n")
        self.power.set_power_state(make_node(), states.POWER_ON)
        self.assertEqual(["chassis", "power", "on"], self.argv()[-3:])
        self.power.set_power_state(make_node(), states.POWER_OFF)
        self.assertEqual(["chassis", "power", "off"], self.argv()[-3:])

    def test_set_power_state_refuses_other_targets(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.power.set_power_state, make_node(),
                                states.REBOOT)
        self.assertIn("valid targets: power off, power on", str(exc))
        self.ipmitool.assert_not_called()

    def test_invalid_info_is_refused_before_any_call(self) -> None:
        self.assertRaises(exceptions.InvalidParameterValue,
                          self.power.get_power_state,
                          make_node(ipmi_address=None))
        self.ipmitool.assert_not_called()

    def test_reboot_cycles_a_node_that_is_on(self) -> None:
        self.power.reboot(make_node())
        self.assertEqual(["status", "cycle"],
                         [self.argv(i)[-1] for i in range(2)])

    def test_reboot_powers_on_a_node_that_is_off(self) -> None:
        self.ipmitool.return_value = done("Chassis Power is off\n")
        self.power.reboot(make_node())
        self.assertEqual(["status", "on"],
                         [self.argv(i)[-1] for i in range(2)])


class DriverTest(base.TestCase):

    def test_driver_has_a_power_interface(self) -> None:
        driver = ipmi.IPMIDriver()
        self.assertIsInstance(driver.power, drivers_base.PowerInterface)

    def _tool(self, script: str) -> str:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            "ipmitool")
        with open(path, "w") as stream:
            stream.write("#!/bin/sh\n" + script)
        os.chmod(path, 0o755)
        self.config(ipmitool_path=path, group="ipmi")
        return path

    def test_prepare_runs_ipmitool_version(self) -> None:
        self._tool('[ "$1" = -V ] && echo "ipmitool version 9.9" && exit 0\n'
                   "exit 7\n")
        logger = self.useFixture(fixtures.FakeLogger(name=ipmi.__name__))
        ipmi.IPMIDriver().prepare()
        self.assertIn("ipmi driver: ipmitool version 9.9", logger.output)

    def test_prepare_names_a_missing_ipmitool(self) -> None:
        self.config(ipmitool_path="/nonexistent/ipmitool", group="ipmi")
        exc = self.assertRaises(exceptions.DriverLoadError,
                                ipmi.IPMIDriver().prepare)
        self.assertIn("Driver ipmi could not be loaded: cannot run [ipmi] "
                      "ipmitool_path '/nonexistent/ipmitool': No such file",
                      str(exc))

    def test_prepare_names_a_missing_ipmipower(self) -> None:
        self._tool('[ "$1" = -V ] && echo "ipmitool version 9.9"\n')
        self.config(ipmipower_path="/nonexistent/ipmipower", group="ipmi")
        exc = self.assertRaises(exceptions.DriverLoadError,
                                ipmi.IPMIDriver().prepare)
        self.assertIn("cannot run [ipmi] ipmipower_path "
                      "'/nonexistent/ipmipower': No such file", str(exc))
        self.assertIn("install freeipmi-tools", str(exc))

    def test_ipmipower_is_not_needed_when_ipmitool_reads(self) -> None:
        self._tool('[ "$1" = -V ] && echo "ipmitool version 9.9"\n')
        self.config(ipmipower_path="/nonexistent/ipmipower",
                    power_status_tool="ipmitool", group="ipmi")
        driver = ipmi.IPMIDriver()
        driver.prepare()
        self.assertFalse(hasattr(driver.power, "get_power_states"))

    def test_batch_reads_by_default(self) -> None:
        self.assertTrue(callable(getattr(ipmi.IPMIDriver().power,
                                         "get_power_states", None)))

    def test_prepare_names_a_failing_ipmitool(self) -> None:
        path = self._tool("echo 'libcrypto.so.3: cannot open'\nexit 127\n")
        exc = self.assertRaises(exceptions.DriverLoadError,
                                ipmi.IPMIDriver().prepare)
        self.assertIn("'%s -V' exited with status 127: libcrypto.so.3: "
                      "cannot open" % path, str(exc))


class BmcAddressTest(base.TestCase):

    def test_address_and_port(self) -> None:
        power = ipmi.IPMIPower()
        self.assertEqual("10.0.0.5:623", power.bmc_address(make_node()))
        self.assertEqual("bmc-7.example.com:6230", power.bmc_address(
            make_node(ipmi_address="BMC-7.example.com", ipmi_port=6230)))
        self.assertEqual("[fd00::5]:623", power.bmc_address(
            make_node(ipmi_address="fd00::5")))

    def test_no_address_no_gating(self) -> None:
        self.assertIsNone(ipmi.IPMIPower().bmc_address(
            make_node(ipmi_address=None)))

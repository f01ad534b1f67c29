# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the redfish driver, with sushy faked."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import time
from typing import Any
from unittest import mock

import fixtures
import requests
import sushy
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc
from sushy.resources.system import system as sushy_system

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import _redfish_sushy
from conductor.drivers import base as drivers_base
from conductor.drivers import redfish
from conductor import states
from tests import base
from tests import fakes

PASSWORD = "pa55-word"
INFO = {"redfish_address": "https://bmc.example.com",
        "redfish_system_id": "1", "redfish_username": "admin",
        "redfish_password": PASSWORD}
ALL_RESETS = set(sushy.ResetType)


def make_node(**changes: Any) -> drivers_base.DriverNode:
    return fakes.node_with_info("redfish", INFO, **changes)


def http_error(cls: type[sushy_exc.HTTPError], status: int,
               message: str = "Boom") -> sushy_exc.HTTPError:
    response = mock.Mock(status_code=status)
    response.json.return_value = {"error": {"code": "Base.1.0.X",
                                            "message": message}}
    return cls("GET", "https://bmc.example.com/redfish/v1/Systems/1",
               response)


def connection_error(cause: Exception) -> sushy_exc.ConnectionError:
    try:
        raise cause
    except Exception as exc:
        try:
            raise sushy_exc.ConnectionError(url="https://bmc.example.com",
                                            error=exc)
        except sushy_exc.ConnectionError as wrapped:
            return wrapped
    raise AssertionError("unreachable")


class ValidateTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.power = redfish.RedfishPower()

    def invalid(self, **changes: Any) -> str:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.power.validate, make_node(**changes))
        self.assertNotIn(PASSWORD, str(exc))
        return str(exc)

    def target(self, **changes: Any) -> redfish.Target:
        return redfish.parse_driver_info(make_node(**changes))

    def test_minimal_info_is_valid(self) -> None:
        self.power.validate(make_node(redfish_system_id=None))
        target = self.target(redfish_system_id=None)
        self.assertEqual(("https://bmc.example.com", None, True),
                         (target.base_url, target.system_path,
                          target.verify))

    def test_address_forms(self) -> None:
        for given, url in [("bmc.example.com", "https://bmc.example.com"),
                           ("http://10.0.0.5:8000/", "http://10.0.0.5:8000"),
                           ("https://[fd00::5]:8443",
                            "https://[fd00::5]:8443")]:
            self.assertEqual(url,
                             self.target(redfish_address=given).base_url)

    def test_bad_addresses(self) -> None:
        self.assertIn("must be an http:// or https:// URL with a host, got "
                      "'ftp://bmc'", self.invalid(redfish_address="ftp://bmc"))
        self.assertIn("must have no path, query or fragment",
                      self.invalid(redfish_address="https://bmc/redfish/v1"))
        self.assertIn("redfish_address must be a URL",
                      self.invalid(redfish_address="two words"))
        self.assertIn("is not a valid URL",
                      self.invalid(redfish_address="https://bmc:99999"))

    def test_credentials_in_the_address_are_refused_unquoted(self) -> None:
        text = self.invalid(redfish_address="https://admin:%s@bmc"
                            % PASSWORD)
        self.assertIn("redfish_address must not hold credentials", text)

    def test_credentials_in_a_malformed_address_are_never_quoted(
            self) -> None:
        # Typos that broke the URL used to be quoted whole in the error.
        for typo in ("https://admin:%s@bmc:44x3", "https:/admin:%s@bmc",
                     "admin:%s@bmc/redfish", "https://admin:%s@bmc ",
                     "htps://admin:%s@bmc"):
            text = self.invalid(redfish_address=typo % PASSWORD)
            self.assertIn("redfish_address must not hold credentials", text)
            self.assertNotIn(PASSWORD, text)

    def test_system_id_forms(self) -> None:
        self.assertEqual("/redfish/v1/Systems/1", self.target().system_path)
        self.assertEqual("/redfish/v1/Systems/7",
                         self.target(redfish_system_id=7).system_path)
        self.assertEqual("/redfish/v1/Systems/System.Embedded.1",
                         self.target(redfish_system_id="System.Embedded.1")
                         .system_path)
        self.assertEqual("/redfish/v1/Systems/a%3Fb",
                         self.target(redfish_system_id="a?b").system_path)
        self.assertEqual("/custom/Systems/1", self.target(
            redfish_system_id="/custom/Systems/1").system_path)

    def test_bad_system_ids(self) -> None:
        self.assertIn("is neither an id (no '/') nor a path",
                      self.invalid(redfish_system_id="Systems/1"))
        self.assertIn("redfish_system_id must be a system id",
                      self.invalid(redfish_system_id="/a/../b"))

    def test_verify_ca(self) -> None:
        self.assertFalse(self.target(redfish_verify_ca=False).verify)
        self.assertFalse(self.target(redfish_verify_ca="no").verify)
        self.assertTrue(self.target(redfish_verify_ca="True").verify)
        bundle = self.useFixture(fixtures.TempDir()).path
        self.assertEqual(bundle,
                         self.target(redfish_verify_ca=bundle).verify)
        self.assertIn("redfish_verify_ca must be true, false or the path of "
                      "an existing CA bundle file or directory, got "
                      "'/no/such/ca.pem'",
                      self.invalid(redfish_verify_ca="/no/such/ca.pem"))

    def test_every_problem_is_named_at_once(self) -> None:
        text = self.invalid(redfish_address=None, redfish_username=None,
                            redfish_pasword="x", redfish_password=None)
        self.assertIn("Node node-1: invalid driver_info for the redfish "
                      "driver: missing required field(s) redfish_address, "
                      "redfish_username, redfish_password", text)
        self.assertIn("unknown field(s) redfish_pasword", text)

    def test_password_of_another_type_is_refused(self) -> None:
        self.assertIn("redfish_password must be a string on one line (the "
                      "value given is a float)",
                      self.invalid(redfish_password=1.5))
        self.assertEqual("1234",
                         self.target(redfish_password=1234).password)

    def test_repr_leaves_the_password_out(self) -> None:
        self.assertNotIn(PASSWORD, repr(self.target()))
        self.assertNotIn(PASSWORD, repr(self.target().cache_key("auto")))


class RedfishPowerTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=5.0, group="conductor")
        self.power = redfish.RedfishPower()
        patcher = mock.patch.object(_redfish_sushy.sushy, "Sushy",
                                    autospec=True)
        self.sushy_cls = patcher.start()
        self.addCleanup(patcher.stop)
        self.client = self.sushy_cls.return_value
        self.system = mock.create_autospec(sushy_system.System,
                                           instance=True)
        self.system.identity = "1"
        self.system.power_state = sushy.PowerState.ON
        self.system.get_allowed_reset_system_values.return_value = (
            ALL_RESETS)
        self.client.get_system.return_value = self.system

    def test_power_states(self) -> None:
        for raw, expected in [
                (sushy.PowerState.ON, states.POWER_ON),
                (sushy.PowerState.POWERING_ON, states.POWER_ON),
                (sushy.PowerState.OFF, states.POWER_OFF),
                (sushy.PowerState.POWERING_OFF, states.POWER_OFF),
                (sushy.PowerState.PAUSED, states.ERROR),
                (None, states.ERROR)]:
            self.system.power_state = raw
            self.assertEqual(expected,
                             self.power.get_power_state(make_node()))
        self.client.get_system.assert_called_with("/redfish/v1/Systems/1")

    def test_single_system_is_found_by_sushy(self) -> None:
        self.power.get_power_state(make_node(redfish_system_id=None))
        self.client.get_system.assert_called_once_with()

    def test_client_is_built_with_bounded_connector_and_auth(self) -> None:
        self.config(auth_type="basic", connection_attempts=3,
                    connection_retry_interval=0.5, group="redfish")
        self.power.get_power_state(make_node(redfish_verify_ca=False))
        args, kwargs = self.sushy_cls.call_args
        self.assertEqual(("https://bmc.example.com",), args)
        self.assertIsInstance(kwargs["auth"], sushy.auth.BasicAuth)
        connector = kwargs["connector"]
        self.assertIsInstance(connector, _redfish_sushy.BoundedConnector)
        self.assertEqual((3, 0.5, False),
                         (connector._attempts, connector._interval,
                          connector._verify))
        self.assertNotIn("password", kwargs)

    def test_client_is_reused(self) -> None:
        for _ in range(3):
            self.power.get_power_state(make_node())
        self.assertEqual(1, self.sushy_cls.call_count)
        self.assertEqual(3, self.client.get_system.call_count)

    def test_client_is_per_password(self) -> None:
        self.power.get_power_state(make_node())
        self.power.get_power_state(make_node(redfish_password="other"))
        self.assertEqual(2, self.sushy_cls.call_count)

    def test_cache_size_zero_builds_a_client_per_call(self) -> None:
        self.config(connection_cache_size=0, group="redfish")
        self.power.get_power_state(make_node())
        self.power.get_power_state(make_node())
        self.assertEqual(2, self.sushy_cls.call_count)
        self.assertEqual(0, len(self.power._sushy()._clients))

    def test_least_recently_used_client_is_dropped(self) -> None:
        self.config(connection_cache_size=1, group="redfish")
        first = make_node()
        second = make_node(redfish_address="https://bmc-2.example.com")
        self.power.get_power_state(first)
        self.power.get_power_state(second)
        self.power.get_power_state(first)
        self.assertEqual(3, self.sushy_cls.call_count)
        self.assertEqual(1, len(self.power._sushy()._clients))

    def fail_with(self, exc: Exception,
                  expected: type[Exception] = exceptions.PowerStateFailure
                  ) -> str:
        self.client.get_system.side_effect = exc
        error = self.assertRaises(expected, self.power.get_power_state,
                                  make_node())
        self.assertNotIn(PASSWORD, str(error))
        self.assertIsNone(error.__cause__)
        return str(error)

    def test_refused_credentials_drop_the_client(self) -> None:
        text = self.fail_with(http_error(sushy_exc.AccessError, 401))
        self.assertIn("Redfish BMC https://bmc.example.com could not read "
                      "the power state for node "
                      "1be26c0b-03f2-4d2e-ae87-c02d7f33c781: the BMC refused "
                      "user 'admin' or its password (HTTP 401", text)
        self.client.get_system.side_effect = None
        self.power.get_power_state(make_node())
        self.assertEqual(2, self.sushy_cls.call_count)

    def test_unknown_system(self) -> None:
        self.assertIn("/redfish/v1/Systems/1 was not found on the BMC",
                      self.fail_with(http_error(
                          sushy_exc.ResourceNotFoundError, 404)))

    def test_no_single_system(self) -> None:
        self.assertIn("does not have exactly one system; set "
                      "redfish_system_id", self.fail_with(
                          sushy_exc.UnknownDefaultError(
                              entity="ComputerSystem", error="2 found")))

    def test_server_error(self) -> None:
        self.assertIn("the BMC failed with HTTP 503: Busy", self.fail_with(
            http_error(sushy_exc.ServerSideError, 503, "Busy")))

    def test_connection_refused(self) -> None:
        self.assertIn("the connection was refused", self.fail_with(
            connection_error(requests.exceptions.ConnectionError(
                "[Errno 111] Connection refused"))))

    def test_no_answer(self) -> None:
        self.assertIn("accepted the connection but did not answer",
                      self.fail_with(connection_error(
                          requests.exceptions.ReadTimeout("timed out"))))

    def test_tls_failure(self) -> None:
        self.assertIn("TLS failed", self.fail_with(connection_error(
            requests.exceptions.SSLError("certificate verify failed"))))

    def test_secret_echoed_by_a_bmc_is_masked(self) -> None:
        self.assertIn("HTTP 400: bad password ******", self.fail_with(
            http_error(sushy_exc.BadRequestError, 400,
                       "bad password %s" % PASSWORD)))

    def test_deadline_reached_is_a_deadline_error(self) -> None:
        def slow(*args: Any) -> Any:
            time.sleep(0.05)
            raise connection_error(requests.exceptions.ReadTimeout("t/o"))

        self.client.get_system.side_effect = slow
        with deadline.scope(0.01):
            exc = self.assertRaises(deadline.DeadlineExceeded,
                                    self.power.get_power_state, make_node())
        self.assertIn("no answer within", str(exc))

    def test_set_power_on(self) -> None:
        self.system.power_state = sushy.PowerState.OFF
        self.power.set_power_state(make_node(), states.POWER_ON)
        self.system.reset_system.assert_called_once_with(sushy.ResetType.ON)

    def test_set_power_on_with_force_on_only(self) -> None:
        self.system.power_state = sushy.PowerState.OFF
        self.system.get_allowed_reset_system_values.return_value = {
            sushy.ResetType.FORCE_ON, sushy.ResetType.FORCE_OFF}
        self.power.set_power_state(make_node(), states.POWER_ON)
        self.system.reset_system.assert_called_once_with(
            sushy.ResetType.FORCE_ON)

    def test_set_power_off_is_a_hard_off(self) -> None:
        self.power.set_power_state(make_node(), states.POWER_OFF)
        self.system.reset_system.assert_called_once_with(
            sushy.ResetType.FORCE_OFF)

    def test_nothing_is_sent_when_already_there(self) -> None:
        self.system.power_state = sushy.PowerState.POWERING_ON
        self.power.set_power_state(make_node(), states.POWER_ON)
        self.system.reset_system.assert_not_called()

    def test_reset_type_not_offered(self) -> None:
        self.system.get_allowed_reset_system_values.return_value = {
            sushy.ResetType.ON}
        exc = self.assertRaises(exceptions.PowerStateFailure,
                                self.power.set_power_state, make_node(),
                                states.POWER_OFF)
        self.assertIn("System 1 offers none of the reset types ForceOff (it "
                      "offers On)", str(exc))

    def test_set_power_state_refuses_other_targets(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.power.set_power_state, make_node(),
                                states.REBOOT)
        self.assertIn("valid targets: power off, power on", str(exc))
        self.sushy_cls.assert_not_called()

    def test_reboot_restarts_a_system_that_is_on(self) -> None:
        self.power.reboot(make_node())
        self.system.reset_system.assert_called_once_with(
            sushy.ResetType.FORCE_RESTART)

    def test_reboot_power_cycles_when_restart_is_not_offered(self) -> None:
        self.system.get_allowed_reset_system_values.return_value = {
            sushy.ResetType.POWER_CYCLE, sushy.ResetType.ON}
        self.power.reboot(make_node())
        self.system.reset_system.assert_called_once_with(
            sushy.ResetType.POWER_CYCLE)

    def test_reboot_powers_on_a_system_that_is_off(self) -> None:
        self.system.power_state = sushy.PowerState.OFF
        self.power.reboot(make_node())
        self.system.reset_system.assert_called_once_with(sushy.ResetType.ON)

    def test_invalid_info_is_refused_before_any_call(self) -> None:
        self.assertRaises(exceptions.InvalidParameterValue,
                          self.power.get_power_state,
                          make_node(redfish_address=None))
        self.sushy_cls.assert_not_called()


class BoundedConnectorTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        patcher = mock.patch.object(sushy_connector.Connector, "_op",
                                    autospec=True)
        self.op = patcher.start()
        self.addCleanup(patcher.stop)
        patcher = mock.patch.object(_redfish_sushy.time, "sleep",
                                    autospec=True)
        self.sleep = patcher.start()
        self.addCleanup(patcher.stop)
        self.connector = _redfish_sushy.BoundedConnector(
            "https://bmc.example.com", verify=True, attempts=3, interval=0.5,
            fallback_timeout=5.0)

    def test_sushy_own_retries_are_off(self) -> None:
        self.connector.get("/redfish/v1/")
        kwargs = self.op.call_args.kwargs
        self.assertEqual(0, kwargs["server_side_retries_left"])
        # sushy loops over transient errors server_side_retries times.
        self.assertEqual(1, self.connector._server_side_retries)

    def test_timeout_outside_a_deadline(self) -> None:
        self.connector.get("/redfish/v1/")
        self.assertAlmostEqual(5.0, self.op.call_args.kwargs["timeout"],
                               places=1)

    def test_timeout_is_what_is_left_of_the_deadline(self) -> None:
        with deadline.scope(1.0):
            self.connector.get("/redfish/v1/")
        self.assertLessEqual(self.op.call_args.kwargs["timeout"], 1.0)

    def test_connect_timeout_is_apart_from_the_read_timeout(self) -> None:
        connector = _redfish_sushy.BoundedConnector(
            "https://bmc.example.com", verify=True, attempts=1, interval=0.5,
            fallback_timeout=5.0, connect_timeout=2.0)
        with deadline.scope(4.0):
            connector.get("/redfish/v1/")
        connect, read = self.op.call_args.kwargs["timeout"]
        self.assertEqual(2.0, connect)
        self.assertTrue(3.5 < read <= 4.0, read)
        # Never more than what is left of the deadline.
        with deadline.scope(1.0):
            connector.get("/redfish/v1/")
        connect, read = self.op.call_args.kwargs["timeout"]
        self.assertLessEqual(connect, 1.0)
        self.assertLessEqual(read, 1.0)

    def test_reads_are_retried(self) -> None:
        self.op.side_effect = [
            connection_error(requests.exceptions.ConnectionError("x")),
            http_error(sushy_exc.ServerSideError, 500), "response"]
        self.assertEqual("response", self.connector.get("/redfish/v1/"))
        self.assertEqual(3, self.op.call_count)
        self.sleep.assert_has_calls([mock.call(0.5), mock.call(0.5)])

    def test_reads_give_up_after_the_attempts(self) -> None:
        self.op.side_effect = http_error(sushy_exc.ServerSideError, 500)
        self.assertRaises(sushy_exc.ServerSideError, self.connector.get,
                          "/redfish/v1/")
        self.assertEqual(3, self.op.call_count)

    def test_client_errors_are_not_retried(self) -> None:
        self.op.side_effect = http_error(sushy_exc.AccessError, 401)
        self.assertRaises(sushy_exc.AccessError, self.connector.get,
                          "/redfish/v1/")
        self.assertEqual(1, self.op.call_count)

    def test_writes_are_sent_once(self) -> None:
        self.op.side_effect = http_error(sushy_exc.ServerSideError, 500)
        self.assertRaises(sushy_exc.ServerSideError, self.connector.post,
                          "/redfish/v1/Systems/1/Actions/"
                          "ComputerSystem.Reset", data={"ResetType": "On"})
        self.assertEqual(1, self.op.call_count)

    def test_no_retry_past_the_deadline(self) -> None:
        self.op.side_effect = http_error(sushy_exc.ServerSideError, 500)
        with deadline.scope(0.3):
            self.assertRaises(sushy_exc.ServerSideError, self.connector.get,
                              "/redfish/v1/")
        self.assertEqual(1, self.op.call_count)
        self.sleep.assert_not_called()

    def test_nothing_is_sent_after_the_deadline(self) -> None:
        with deadline.scope(0.0):
            exc = self.assertRaises(sushy_exc.ConnectionError,
                                    self.connector.get, "/redfish/v1/")
        self.assertIn("deadline passed", str(exc))
        self.op.assert_not_called()


class DriverTest(base.TestCase):

    def test_driver_has_a_power_interface(self) -> None:
        driver = redfish.RedfishDriver()
        self.assertIsInstance(driver.power, drivers_base.PowerInterface)

    def test_prepare_logs_the_sushy_version(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(name=redfish.__name__))
        redfish.RedfishDriver().prepare()
        self.assertRegex(logger.output, r"redfish driver: sushy \d+\.")

    def test_prepare_names_a_missing_sushy(self) -> None:
        with mock.patch.object(redfish.importlib.util, "find_spec",
                               return_value=None) as find_spec:
            exc = self.assertRaises(exceptions.DriverLoadError,
                                    redfish.RedfishDriver().prepare)
        find_spec.assert_called_once_with("sushy")
        self.assertIn("Driver redfish could not be loaded: the sushy "
                      "library is not installed", str(exc))

    def test_prepare_accepts_sushy_without_package_metadata(self) -> None:
        # A checkout on the path works though pip never installed it.
        missing = importlib.metadata.PackageNotFoundError("sushy")
        logger = self.useFixture(fixtures.FakeLogger(name=redfish.__name__))
        with mock.patch.object(redfish.importlib.metadata, "version",
                               side_effect=missing):
            redfish.RedfishDriver().prepare()
        self.assertIn("sushy (version unknown", logger.output)


class LazyImportTest(base.TestCase):

    def test_validation_does_not_import_sushy(self) -> None:
        probe = (
            "import sys\n"
            "import conductor.cmd\n"
            "from conductor.drivers import base, redfish\n"
            "node = base.DriverNode('u', 'n', 'redfish', {\n"
            "    'redfish_address': 'https://10.0.0.1',\n"
            "    'redfish_username': 'a', 'redfish_password': 'b'}, None)\n"
            "redfish.RedfishDriver().power.validate(node)\n"
            "print(sorted(m for m in ('sushy', 'requests')\n"
            "             if m in sys.modules))\n")
        result = subprocess.run([sys.executable, "-c", probe],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("[]", result.stdout.strip())


class BmcAddressTest(base.TestCase):

    def test_host_and_port(self) -> None:
        power = redfish.RedfishPower()
        for address, expected in (
                ("https://bmc.example.com", "bmc.example.com:443"),
                ("http://BMC.example.com", "bmc.example.com:80"),
                ("bmc.example.com:8000", "bmc.example.com:8000"),
                ("https://[fd00::7]:8443/", "[fd00::7]:8443")):
            self.assertEqual(expected, power.bmc_address(
                make_node(redfish_address=address)), str(address))

    def test_systems_of_one_service_share_it(self) -> None:
        power = redfish.RedfishPower()
        self.assertEqual(
            power.bmc_address(make_node(redfish_system_id="1")),
            power.bmc_address(make_node(redfish_system_id="2")))

    def test_bad_or_missing_address_no_gating(self) -> None:
        power = redfish.RedfishPower()
        for address in (None, "", "http://[bad", 5):
            self.assertIsNone(power.bmc_address(
                make_node(redfish_address=address)), str(address))

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.nodes."""

from __future__ import annotations

from typing import Any
from unittest import mock


from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor import nodes
from conductor import states
from tests import base

UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def _record(**values: Any) -> db_api.NodeRecord:
    fields: dict[str, Any] = {
        "id": 1, "uuid": UUID, "name": "n1", "driver": "fake",
        "driver_info": {"fake_latency_ms": 5}, "power_state": None,
        "target_power_state": None, "power_state_updated_at": None,
        "maintenance": False, "maintenance_reason": None, "fault": None,
        "power_sync_failures": 0, "last_error": None, "reservation": None,
        "created_at": None, "updated_at": None}
    fields.update(values)
    return db_api.NodeRecord(**fields)


class TestChecks(base.TestCase):

    def assertInvalid(self, text: str, func: Any, *args: Any) -> str:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                func, *args)
        self.assertIn(text, str(exc))
        return str(exc)

    def test_check_name_valid(self) -> None:
        for name in ("n", "node-1", "rack1.node_2~a", "0abc", "x" * 255):
            self.assertEqual(name, nodes.check_name(name))
        self.assertIsNone(nodes.check_name(None))

    def test_check_name_too_long_or_empty(self) -> None:
        for name in ("", "x" * 256):
            self.assertInvalid("must be 1 to 255 characters long",
                               nodes.check_name, name)

    def test_check_name_uuid_like(self) -> None:
        for name in (UUID, UUID.replace("-", ""), UUID.upper()):
            self.assertInvalid("looks like a UUID",
                               nodes.check_name, name)

    def test_check_name_bad_characters(self) -> None:
        for name in ("with space", "-leading", ".hidden", "a/b", "a:b",
                     "ñode", "node\n", "a\nb"):
            self.assertInvalid("is invalid: use letters, digits",
                               nodes.check_name, name)

    def test_check_name_not_string(self) -> None:
        self.assertInvalid("must be a string, got int",
                           nodes.check_name, 5)

    def test_check_uuid(self) -> None:
        self.assertIsNone(nodes.check_uuid(None))
        self.assertEqual(UUID, nodes.check_uuid(UUID))
        for spelling in (UUID.upper(), UUID.replace("-", ""),
                         "{%s}" % UUID, "urn:uuid:%s" % UUID):
            self.assertEqual(UUID, nodes.check_uuid(spelling))

    def test_check_uuid_invalid(self) -> None:
        for value in ("not-a-uuid", UUID + "0", 42, ""):
            self.assertInvalid("is not a valid UUID",
                               nodes.check_uuid, value)

    def test_check_driver_info(self) -> None:
        self.assertEqual({}, nodes.check_driver_info(None))
        info = {"a": 1, "b": {"c": [1, 2]}}
        result = nodes.check_driver_info(info)
        self.assertEqual(info, result)
        self.assertIsNot(info, result)

    def test_check_driver_info_not_mapping(self) -> None:
        self.assertInvalid("must be a mapping of field to value, got list",
                           nodes.check_driver_info, ["a=1"])

    def test_check_driver_info_bad_keys(self) -> None:
        message = self.assertInvalid(
            "keys must be non-empty strings",
            nodes.check_driver_info, {1: "x", "": "y", "ok": 1})
        self.assertIn("1", message)
        self.assertIn("''", message)

    def test_check_driver_info_too_big(self) -> None:
        info = {"blob": "x" * nodes.MAX_DRIVER_INFO_BYTES}
        self.assertInvalid("bytes as JSON; the limit is 16384",
                           nodes.check_driver_info, info)

    def test_check_driver_info_not_json(self) -> None:
        self.assertInvalid("must be JSON-serialisable",
                           nodes.check_driver_info, {"a": object()})
        self.assertInvalid("must be JSON-serialisable",
                           nodes.check_driver_info, {"a": {1, 2}})

    def test_check_driver_info_not_standard_json(self) -> None:
        # NaN and Infinity are not JSON: MySQL and PostgreSQL refuse them.
        for value in (float("nan"), float("inf"), [float("-inf")]):
            self.assertInvalid("must be JSON-serialisable",
                               nodes.check_driver_info, {"a": value})

    def test_check_bool(self) -> None:
        self.assertTrue(nodes.check_bool("maintenance", True))
        self.assertFalse(nodes.check_bool("maintenance", False))
        for value in ("true", 1, None):
            self.assertInvalid("maintenance must be true or false",
                               nodes.check_bool, "maintenance", value)

    def test_check_text(self) -> None:
        self.assertIsNone(nodes.check_text("reason", None))
        self.assertEqual("x", nodes.check_text("reason", "x"))
        self.assertInvalid("reason must be a string, got int",
                           nodes.check_text, "reason", 3)
        self.assertInvalid("reason is 4097 characters long",
                           nodes.check_text, "reason", "x" * 4097)


class TestValidate(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.driver = fake.FakeDriver()
        self.drivers = {"fake": self.driver}

    def test_validate_new_normalises(self) -> None:
        clean = nodes.validate_new(
            {"driver": "fake", "name": "n1", "uuid": UUID.upper(),
             "driver_info": {"fake_latency_ms": 1}}, self.drivers)
        self.assertEqual({"driver": "fake", "name": "n1", "uuid": UUID,
                          "driver_info": {"fake_latency_ms": 1},
                          "maintenance": False}, clean)

    def test_any_driver_error_becomes_a_named_refusal(self) -> None:
        with mock.patch.object(self.driver.power, "validate", autospec=True,
                               side_effect=KeyError("ipmi_port")):
            exc = self.assertRaises(
                exceptions.InvalidParameterValue, nodes.validate_new,
                {"driver": "fake", "name": "n1"}, self.drivers)
        self.assertEqual("Driver fake refused node n1: KeyError: "
                         "'ipmi_port'", str(exc))

    def test_validate_new_minimal(self) -> None:
        self.assertEqual(
            {"driver": "fake", "driver_info": {}, "maintenance": False},
            nodes.validate_new({"driver": "fake"}, self.drivers))

    def test_validate_new_not_mapping(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                nodes.validate_new, ["fake"],
                                self.drivers)
        self.assertIn("must be a mapping of field to value, got list",
                      str(exc))

    def test_validate_new_unknown_fields(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                nodes.validate_new,
                                {"driver": "fake", "power_state": "on",
                                 "zzz": 1}, self.drivers)
        self.assertIn("Unknown node field(s): power_state, zzz; allowed: "
                      "uuid, name, driver", str(exc))

    def test_validate_new_missing_driver(self) -> None:
        for values in ({"name": "n1"}, {"driver": ""}, {"driver": 3}):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    nodes.validate_new, values,
                                    self.drivers)
            self.assertIn("driver is required", str(exc))

    def test_validate_new_unknown_driver(self) -> None:
        exc = self.assertRaises(exceptions.DriverNotEnabled,
                                nodes.validate_new,
                                {"driver": "ipmi"}, self.drivers)
        self.assertEqual("Driver ipmi is not enabled; enabled drivers: "
                         "fake.", str(exc))
        exc = self.assertRaises(exceptions.DriverNotEnabled,
                                nodes.validate_new,
                                {"driver": "ipmi"}, {})
        self.assertIn("enabled drivers: none", str(exc))

    def test_validate_new_calls_driver_validate(self) -> None:
        with mock.patch.object(fake.FakePower, "validate",
                               autospec=True) as validate:
            nodes.validate_new(
                {"driver": "fake", "name": "n1",
                 "driver_info": {"x": 1}}, self.drivers)
        validate.assert_called_once_with(
            self.driver.power, driver_base.DriverNode(
                uuid="<new node>", name="n1", driver="fake",
                driver_info={"x": 1}, power_state=None))

    def test_validate_new_driver_refuses(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                nodes.validate_new,
                                {"driver": "fake", "name": "n1",
                                 "driver_info": {"ipmi_address": "x"}},
                                self.drivers)
        self.assertIn("Node n1: unknown field(s) ipmi_address (the fake "
                      "driver reads", str(exc))

    def test_validate_new_bad_maintenance(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                nodes.validate_new,
                                {"driver": "fake", "maintenance": "yes"},
                                self.drivers)
        self.assertIn("maintenance must be true or false", str(exc))

    def test_validate_update_rename_and_info(self) -> None:
        node = _record()
        clean = nodes.validate_update(
            node, {"name": "n2", "driver_info": {"fake_fail": "get"}},
            self.drivers)
        self.assertEqual({"name": "n2", "driver_info": {"fake_fail": "get"}},
                         clean)

    def test_validate_update_remove_name(self) -> None:
        self.assertEqual({"name": None}, nodes.validate_update(
            _record(), {"name": None}, self.drivers))

    def test_validate_update_maintenance_off_clears_fault(self) -> None:
        node = _record(maintenance=True, maintenance_reason="x",
                       fault="power failure")
        self.assertEqual(
            {"maintenance": False, "maintenance_reason": None,
             "fault": None},
            nodes.validate_update(node, {"maintenance": False},
                                  self.drivers))

    def test_validate_update_maintenance_on_with_reason(self) -> None:
        self.assertEqual(
            {"maintenance": True, "maintenance_reason": "fan"},
            nodes.validate_update(
                _record(), {"maintenance": True,
                            "maintenance_reason": "fan"}, self.drivers))

    def test_validate_update_refuses_read_only_fields(self) -> None:
        for field in ("uuid", "power_state", "reservation", "fault"):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    nodes.validate_update, _record(),
                                    {field: "x"}, self.drivers)
            self.assertIn("Unknown node field(s): %s" % field, str(exc))

    def test_validate_update_validates_node_after_change(self) -> None:
        node = _record(power_state=states.POWER_ON)
        with mock.patch.object(fake.FakePower, "validate",
                               autospec=True) as validate:
            nodes.validate_update(node, {"name": "n2"}, self.drivers)
        validate.assert_called_once_with(
            self.driver.power, driver_base.DriverNode(
                uuid=UUID, name="n2", driver="fake",
                driver_info={"fake_latency_ms": 5},
                power_state=states.POWER_ON))

    def test_validate_update_new_driver(self) -> None:
        node = _record(driver="ipmi", driver_info={})
        self.assertEqual({"driver": "fake"}, nodes.validate_update(
            node, {"driver": "fake"}, self.drivers))
        exc = self.assertRaises(exceptions.DriverNotEnabled,
                                nodes.validate_update, _record(),
                                {"driver": "redfish"}, self.drivers)
        self.assertIn("redfish", str(exc))

    def test_validate_update_driver_refuses(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                nodes.validate_update, _record(),
                                {"driver_info": {"fake_latency_ms": -1}},
                                self.drivers)
        self.assertIn("fake_latency_ms must be a number >= 0", str(exc))


class TestParsePairs(base.TestCase):

    def test_values_parsed_as_json_else_text(self) -> None:
        self.assertEqual(
            {"fake_latency_ms": 50, "verify": False, "address": "10.0.0.1",
             "ratio": 0.5, "empty": "", "list": [1, "a"], "eq": "a=b",
             "nothing": None},
            nodes.parse_pairs([
                "fake_latency_ms=50", "verify=false", "address=10.0.0.1",
                "ratio=0.5", "empty=", 'list=[1, "a"]', "eq=a=b",
                "nothing=null"]))

    def test_later_pair_wins(self) -> None:
        self.assertEqual({"a": 2}, nodes.parse_pairs(["a=1", "a=2"]))

    def test_malformed(self) -> None:
        for pair in ("novalue", "=value"):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    nodes.parse_pairs, [pair],
                                    "--thing")
            self.assertEqual("--thing expects KEY=VALUE, got %r" % pair,
                             str(exc))


class TestAsDriverNode(base.TestCase):

    def test_from_record_and_mapping(self) -> None:
        node = nodes.as_driver_node(
            {"uuid": UUID, "name": "n", "driver": "fake",
             "driver_info": {"a": 1}, "power_state": states.POWER_OFF})
        self.assertEqual(driver_base.DriverNode(
            UUID, "n", "fake", {"a": 1}, states.POWER_OFF), node)
        self.assertEqual("<new node>",
                         nodes.as_driver_node({}).uuid)

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor-manage, run in-process through ``manage.main``.

Every test parses its own config file with the real ``CONF``; the config
fixture of ``tests.base.TestCase`` resets it afterwards.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from typing import Any
from unittest import mock

import fixtures
from oslo_utils import timeutils

from conductor.cmd import manage
from conductor.common import version
from conductor.db import api as db_api
from conductor.db import migration
from conductor.db import models
from conductor import states
from tests import base

UNREACHABLE_MYSQL = "mysql+pymysql://root:s3cret@127.0.0.1:1/conductor"

INVENTORY = """\
- name: a
  driver: fake
- name: b
  driver: fake
  driver_info: {fake_latency_ms: 1}
- name: c
  driver: fake
  maintenance: true
"""


class ManageTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        # NOTE: main() calls logging.basicConfig, which does nothing while
        # the root logger has a handler: this one, removed after the test.
        self.logger = self.useFixture(fixtures.FakeLogger(
            level=logging.WARNING))
        self.state = self.conf.state_path
        self.db_url = "sqlite:///" + os.path.join(self.state, "conductor.db")
        self.config_file = self.write_config()

    def write_config(self, extra: str = "", connection: str | None = None
                     ) -> str:
        path = os.path.join(self.state, "conductor.conf")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write("[DEFAULT]\nstate_path = %s\nenabled_drivers = fake\n"
                         "[database]\nconnection = %s\n%s"
                         % (self.state, connection or self.db_url, extra))
        return path

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.state, name)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return path

    def manage(self, *argv: str) -> tuple[int, str, str]:
        """Run conductor-manage; returns (exit code, stdout, stderr)."""
        args = ["--config-file", self.config_file, *argv]
        with mock.patch("sys.stdout", new_callable=io.StringIO) as out, \
                mock.patch("sys.stderr", new_callable=io.StringIO) as err:
            code = manage.main(args)
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str) -> str:
        code, out, err = self.manage(*argv)
        self.assertEqual((0, ""), (code, err), out)
        return out

    def fails(self, *argv: str) -> str:
        """Run a command that must fail with exit 1 and one error line."""
        code, out, err = self.manage(*argv)
        self.assertEqual(1, code, out)
        self.assertEqual("", out)
        self.assertTrue(err.startswith("conductor-manage: ERROR: "), err)
        self.assertEqual(1, len(err.splitlines()), err)
        return err[len("conductor-manage: ERROR: "):].rstrip("\n")

    def usage_error(self, *argv: str) -> str:
        err = io.StringIO()
        with mock.patch("sys.stderr", err), \
                mock.patch("sys.stdout", new_callable=io.StringIO):
            exc = self.assertRaises(SystemExit, manage.main,
                                    ["--config-file", self.config_file,
                                     *argv])
        self.assertEqual(2, exc.code)
        return err.getvalue()

    def patch_sleep(self, side_effect: Any = None) -> mock.MagicMock:
        """Fake the commands' ``time.sleep`` (``side_effect`` on each)."""
        mocked: mock.MagicMock = self.useFixture(fixtures.MockPatchObject(
            time, "sleep", autospec=True, side_effect=side_effect)).mock
        return mocked

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv, "--format", "json"))


class DbManageTestCase(ManageTestCase):
    """With the schema created by ``db sync`` and a Connection to check."""

    def setUp(self) -> None:
        super().setUp()
        self.ok("db", "sync")
        self.db = db_api.Connection.create(self.db_url)
        self.addCleanup(self.db.dispose)

    def names(self) -> list[str | None]:
        return [node.name for node in self.db.list_nodes()]


class TestDb(ManageTestCase):

    def test_version_sync_version(self) -> None:
        head = migration.head()
        self.assertIn("there is no database file",
                      self.fails("db", "version"))
        self.assertEqual("Database schema is at revision %s\n" % head,
                         self.ok("db", "sync"))
        self.assertEqual("%s (head: %s)\n" % (head, head),
                         self.ok("db", "version"))
        self.assertEqual("Database schema is at revision %s\n" % head,
                         self.ok("db", "sync"))

    def test_commands_need_the_database_and_its_schema(self) -> None:
        path = self.db_url[len("sqlite:///"):]
        for argv in (["node", "list"], ["status"], ["clean"],
                     ["node", "show", "x"], ["db", "version"]):
            # A mistyped path is an error, not a new empty database.
            self.assertEqual(
                "Database %s is not usable: there is no database file "
                "%s: check [database] connection, or run "
                "'conductor-manage db sync' to create it (the conductor "
                "creates it at its first start)" % (self.db_url, path),
                self.fails(*argv))
            self.assertFalse(os.path.exists(path))
        open(path, "w").close()
        for argv in (["node", "list"], ["status"], ["clean"],
                     ["node", "show", "x"]):
            message = self.fails(*argv)
            self.assertIn("Database schema is at revision <empty>", message)
            self.assertIn("run 'conductor-manage db sync'", message)

    def test_unreachable_database(self) -> None:
        self.config_file = self.write_config(connection=UNREACHABLE_MYSQL)
        for argv in (["db", "sync"], ["db", "version"], ["node", "list"],
                     ["status"]):
            message = self.fails(*argv)
            self.assertIn("Database mysql+pymysql://root:***@127.0.0.1:1/"
                          "conductor is not usable: ", message)
            self.assertNotIn("s3cret", message)

    def test_missing_config_file(self) -> None:
        self.config_file = os.path.join(self.state, "nope.conf")
        self.assertEqual("config file(s) not found: %s" % self.config_file,
                         self.fails("status"))

    def test_a_directory_as_config_file(self) -> None:
        self.config_file = self.state
        self.assertEqual("cannot read the configuration: [Errno 21] Is a "
                         "directory: '%s'" % self.state,
                         self.fails("status"))

    def test_config_file_not_utf8_or_referring_to_nothing(self) -> None:
        with open(self.config_file, "wb") as stream:
            stream.write(b"[DEFAULT]\nhost = caf\xe9\n")
        self.assertIn("cannot read the configuration: 'utf-8' codec can't "
                      "decode byte 0xe9", self.fails("status"))
        with open(self.config_file, "w") as stream:
            stream.write("[DEFAULT]\nhost = $nosuch\n")
        self.assertEqual("Invalid configuration: [DEFAULT] host: its value "
                         "refers ($name) to an option that does not exist",
                         self.fails("status"))

    def test_malformed_config_file(self) -> None:
        self.write("conductor.conf", "this is not ini\n")
        message = self.fails("status")
        self.assertIn("conductor.conf", message)

    def test_bad_option_value(self) -> None:
        self.config_file = self.write_config(
            "[conductor]\nheartbeat_timeout = soon\n")
        for argv in (["db", "sync"], ["status"], ["node", "list"]):
            self.assertEqual("Invalid configuration: [conductor] "
                             "heartbeat_timeout: invalid literal for int() "
                             "with base 10: 'soon'", self.fails(*argv))

    def test_usage_errors(self) -> None:
        self.assertIn("usage: conductor-manage", self.usage_error())
        self.usage_error("node")
        self.usage_error("frobnicate")
        self.usage_error("node", "list", "--format", "xml")
        self.usage_error("node", "list", "--maintenance", "perhaps")
        self.usage_error("node", "power", "n1", "explode")
        self.assertIn("must be a number of seconds > 0",
                      self.usage_error("node", "power", "n1", "on",
                                       "--timeout", "0"))
        self.usage_error("node", "create", "--name", "n1")

    def test_config_is_reset_between_runs(self) -> None:
        # Two runs in one process: the second sees its own config only.
        self.ok("db", "sync")
        other_state = self.useFixture(fixtures.TempDir()).path
        other_url = "sqlite:///" + os.path.join(other_state, "other.db")
        self.config_file = self.write_config(connection=other_url)
        self.assertIn("there is no database file %s"
                      % os.path.join(other_state, "other.db"),
                      self.fails("db", "version"))


class TestNodeCreate(DbManageTestCase):

    def test_create_table(self) -> None:
        out = self.ok("node", "create", "--driver", "fake", "--name", "n1",
                      "--driver-info", "fake_latency_ms=5")
        lines = out.splitlines()
        self.assertEqual(["Field", "Value"], lines[0].split())
        self.assertIn("name                    n1", out)
        self.assertIn('{"fake_latency_ms": 5}', out)
        node = self.db.get_node("n1")
        self.assertEqual({"fake_latency_ms": 5}, node.driver_info)
        self.assertIn(node.uuid, out)

    def test_driver_info_takes_several_pairs_per_flag(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "n1",
                "--driver-info", "fake_latency_ms=5", "fake_fail=get",
                "--driver-info", "fake_power_state=power on")
        self.assertEqual({"fake_latency_ms": 5, "fake_fail": "get",
                          "fake_power_state": "power on"},
                         self.db.get_node("n1").driver_info)

    def test_create_json(self) -> None:
        uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        data = self.json("node", "create", "--driver", "fake", "--name",
                         "n1", "--uuid", uuid.upper(), "--maintenance",
                         "--maintenance-reason", "new rack",
                         "--driver-info", "fake_fail=get",
                         "--driver-info", "fake_power_state=power on")
        self.assertEqual(uuid, data["uuid"])
        self.assertEqual("n1", data["name"])
        self.assertTrue(data["maintenance"])
        self.assertEqual("new rack", data["maintenance_reason"])
        self.assertEqual({"fake_fail": "get",
                          "fake_power_state": "power on"},
                         data["driver_info"])
        self.assertIsNone(data["power_state"])
        self.assertIsInstance(data["created_at"], str)
        self.assertEqual(uuid, self.db.get_node("n1").uuid)

    def test_create_errors(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "n1")
        self.assertEqual("A node with name n1 already exists.",
                         self.fails("node", "create", "--driver", "fake",
                                    "--name", "n1"))
        self.assertEqual("Driver ipmi is not enabled; enabled drivers: "
                         "fake.", self.fails("node", "create", "--driver",
                                             "ipmi"))
        self.assertIn("Node name 'bad name' is invalid",
                      self.fails("node", "create", "--driver", "fake",
                                 "--name", "bad name"))
        self.assertEqual("--driver-info expects KEY=VALUE, got 'oops'",
                         self.fails("node", "create", "--driver", "fake",
                                    "--driver-info", "oops"))
        self.assertIn("unknown field(s) "
                      "ipmi_address",
                      self.fails("node", "create", "--driver", "fake",
                                 "--driver-info", "ipmi_address=1.2.3.4"))
        self.assertEqual(["n1"], self.names())


class TestNodeImport(DbManageTestCase):

    def test_import(self) -> None:
        path = self.write("fleet.yaml", INVENTORY)
        self.assertEqual("Imported 3 node(s) from %s\n" % path,
                         self.ok("node", "import", path))
        self.assertEqual(["a", "b", "c"], self.names())
        self.assertTrue(self.db.get_node("c").maintenance)

    def test_import_json(self) -> None:
        path = self.write("fleet.json", json.dumps(
            {"nodes": [{"name": "j", "driver": "fake"}]}))
        self.ok("node", "import", path)
        self.assertEqual(["j"], self.names())

    def test_bad_entry_in_the_middle_stores_nothing(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "old")
        path = self.write("fleet.yaml", INVENTORY.replace(
            "fake_latency_ms: 1", "fake_latency_ms: -1"))
        message = self.fails("node", "import", path)
        self.assertIn("%s: node #2 (b): " % path, message)
        self.assertIn("fake_latency_ms must be a number >= 0", message)
        self.assertEqual(["old"], self.names())

    def test_clash_with_existing_stores_nothing(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "c")
        path = self.write("fleet.yaml", INVENTORY)
        self.assertEqual("A node with name c already exists.",
                         self.fails("node", "import", path))
        self.assertEqual(["c"], self.names())

    def test_duplicate_inside_file(self) -> None:
        path = self.write("fleet.yaml", INVENTORY + "- {name: a, "
                          "driver: fake}\n")
        self.assertIn("node #4 (a): name a is also used by node #1",
                      self.fails("node", "import", path))
        self.assertEqual([], self.names())

    def test_malformed_and_missing_files(self) -> None:
        path = self.write("bad.yaml", "- name: [a\n")
        self.assertIn("malformed YAML at line 2",
                      self.fails("node", "import", path))
        missing = os.path.join(self.state, "missing.yaml")
        self.assertIn("cannot read inventory file",
                      self.fails("node", "import", missing))


class TestNodeListShow(DbManageTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.ok("node", "import", self.write("fleet.yaml", INVENTORY))
        # Stored directly: the fake driver would refuse these keys, but
        # another driver's node must not show its secrets either.
        self.secret = self.db.create_node({
            "driver": "ipmi", "name": "s",
            "driver_info": {"ipmi_address": "10.0.0.9",
                            "ipmi_password": "hunter2",
                            "auth_token": "t0k3n"}})

    def test_list_table(self) -> None:
        lines = self.ok("node", "list").splitlines()
        self.assertEqual(list(manage.NODE_COLUMNS), lines[0].split())
        self.assertEqual(6, len(lines))
        self.assertEqual(["a", "b", "c", "s"],
                         [line.split()[1] for line in lines[2:]])

    def test_list_json_and_filters(self) -> None:
        self.assertEqual(["a", "b", "c", "s"],
                         [n["name"] for n in self.json("node", "list")])
        self.assertEqual(["s"], [n["name"] for n in self.json(
            "node", "list", "--driver", "ipmi")])
        self.assertEqual(["c"], [n["name"] for n in self.json(
            "node", "list", "--maintenance", "true")])
        self.assertEqual(["a", "b", "s"], [n["name"] for n in self.json(
            "node", "list", "--maintenance", "no")])
        self.assertEqual([], self.json("node", "list", "--driver", "x"))

    def test_show_by_name_and_uuid(self) -> None:
        node = self.db.get_node("b")
        for ident in ("b", node.uuid, node.uuid.upper()):
            data = self.json("node", "show", ident)
            self.assertEqual((node.uuid, "b", {"fake_latency_ms": 1}),
                             (data["uuid"], data["name"],
                              data["driver_info"]))
        self.assertIn(node.uuid, self.ok("node", "show", "b"))

    def test_show_not_found(self) -> None:
        self.assertEqual("Node nope could not be found.",
                         self.fails("node", "show", "nope"))

    def test_secrets_masked(self) -> None:
        expected = {"ipmi_address": "10.0.0.9", "ipmi_password": "******",
                    "auth_token": "******"}
        self.assertEqual(expected,
                         self.json("node", "show", "s")["driver_info"])
        self.assertEqual(expected, self.json("node", "list")[3]["driver_info"])
        for argv in (["node", "show", "s"], ["node", "list"],
                     ["node", "show", "s", "--format", "json"],
                     ["node", "list", "--format", "json"]):
            out = self.ok(*argv)
            self.assertNotIn("hunter2", out)
            self.assertNotIn("t0k3n", out)
        # Stored unmasked: the driver needs them.
        self.assertEqual("hunter2",
                         self.db.get_node("s").driver_info["ipmi_password"])


class TestNodeSet(DbManageTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.ok("node", "create", "--driver", "fake", "--name", "n1",
                "--driver-info", "fake_latency_ms=5")
        self.uuid = self.db.get_node("n1").uuid

    def test_rename_and_remove_name(self) -> None:
        self.assertEqual("n2", self.json("node", "set", "n1", "--name",
                                         "n2")["name"])
        self.assertIsNone(self.json("node", "set", self.uuid, "--name",
                                    "")["name"])
        self.assertEqual([None], self.names())

    def test_driver_info_set_and_unset(self) -> None:
        data = self.json("node", "set", "n1", "--driver-info", "fake_fail=set",
                         "--driver-info", "fake_latency_ms=7")
        self.assertEqual({"fake_fail": "set", "fake_latency_ms": 7},
                         data["driver_info"])
        data = self.json("node", "set", "n1", "--unset-driver-info",
                         "fake_latency_ms")
        self.assertEqual({"fake_fail": "set"}, data["driver_info"])
        self.assertEqual({"fake_fail": "set"},
                         self.db.get_node("n1").driver_info)

    def test_unset_missing_key(self) -> None:
        self.assertEqual("driver_info has no field 'nope' to unset",
                         self.fails("node", "set", "n1",
                                    "--unset-driver-info", "nope"))

    def test_invalid_driver_info_refused(self) -> None:
        self.assertIn("fake_fail must be true, false, 'get' or 'set'",
                      self.fails("node", "set", "n1", "--driver-info",
                                 "fake_fail=often"))
        self.assertEqual({"fake_latency_ms": 5},
                         self.db.get_node("n1").driver_info)

    def test_maintenance_on_and_off(self) -> None:
        data = self.json("node", "set", "n1", "--maintenance", "on",
                         "--maintenance-reason", "disk swap")
        self.assertEqual((True, "disk swap"), (data["maintenance"],
                                               data["maintenance_reason"]))
        self.db.update_node("n1", {"fault": "power failure"})
        data = self.json("node", "set", "n1", "--maintenance", "off")
        self.assertEqual((False, None, None),
                         (data["maintenance"], data["maintenance_reason"],
                          data["fault"]))

    def test_node_after_driver_info_is_not_swallowed(self) -> None:
        data = self.json("node", "set", "--driver-info", "fake_fail=set",
                         "fake_latency_ms=9", "n1")
        self.assertEqual({"fake_fail": "set", "fake_latency_ms": 9},
                         data["driver_info"])
        data = self.json("node", "set", "--unset-driver-info",
                         "fake_fail", self.uuid)
        self.assertEqual({"fake_latency_ms": 9}, data["driver_info"])
        self.assertIn("the following arguments are required: NODE",
                      self.usage_error("node", "set", "--driver-info",
                                       "fake_fail=set"))

    def test_one_maintenance_syntax(self) -> None:
        # The same --maintenance [true|false] on create, list and set.
        self.ok("node", "create", "--driver", "fake", "--name", "n2",
                "--maintenance", "false")
        self.ok("node", "create", "--driver", "fake", "--name", "n3",
                "--maintenance")
        self.json("node", "set", "n1", "--maintenance", "true")
        self.json("node", "set", "n2", "--maintenance", "yes")
        self.json("node", "set", "n2", "--maintenance", "false")
        listed = self.json("node", "list", "--maintenance", "true")
        self.assertEqual(["n1", "n3"], sorted(n["name"] for n in listed))
        listed = self.json("node", "list", "--maintenance", "off")
        self.assertEqual(["n2"], [n["name"] for n in listed])
        self.assertIn("expected true or false, got 'perhaps'",
                      self.usage_error("node", "set", "n1", "--maintenance",
                                       "perhaps"))

    def test_nothing_to_change(self) -> None:
        self.assertEqual("node set: nothing to change; give at least one "
                         "option", self.fails("node", "set", "n1"))

    def test_set_errors(self) -> None:
        self.assertEqual("Node nope could not be found.",
                         self.fails("node", "set", "nope", "--name", "x"))
        self.assertIn("is not enabled",
                      self.fails("node", "set", "n1", "--driver", "ipmi"))
        self.db.reserve_node(self.uuid, "host-a:0")
        self.assertIn("Node %s is locked by host-a:0" % self.uuid,
                      self.fails("node", "set", "n1", "--name", "n3"))
        self.assertEqual(["n1"], self.names())

    def test_table_output(self) -> None:
        out = self.ok("node", "set", "n1", "--maintenance", "on")
        self.assertIn("maintenance             true", out)


class TestVersion(ManageTestCase):

    def test_every_command_prints_its_version(self) -> None:
        # The installed console scripts, as an operator runs them.
        expected = version.version_string()
        bindir = os.path.dirname(sys.executable)
        for command in ("conductor", "conductor-manage", "conductor-status"):
            result = subprocess.run(
                [os.path.join(bindir, command), "--version"],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(0, result.returncode, result.stderr)
            self.assertIn(expected, result.stdout + result.stderr, command)


class TestNodeDelete(DbManageTestCase):

    def test_delete(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "n1")
        self.ok("node", "create", "--driver", "fake")
        unnamed = self.db.list_nodes()[1].uuid
        self.assertEqual("Deleted node n1\n",
                         self.ok("node", "delete", "n1"))
        self.assertEqual("Deleted node %s\n" % unnamed,
                         self.ok("node", "delete", unnamed))
        self.assertEqual([], self.names())
        self.assertEqual("Node n1 could not be found.",
                         self.fails("node", "delete", "n1"))

    def test_delete_locked(self) -> None:
        self.ok("node", "create", "--driver", "fake", "--name", "n1")
        node = self.db.get_node("n1")
        self.db.reserve_node(node.uuid, "host-a:1")
        self.assertIn("is locked by host-a:1",
                      self.fails("node", "delete", "n1"))
        self.assertEqual(["n1"], self.names())


class TestNodePower(DbManageTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.ok("node", "create", "--driver", "fake", "--name", "n1")
        # NOTE: a live worker with the fake driver (a heartbeat, no
        # process): requests are accepted and nothing applies them.
        self.db.register_conductor("host-a", 0, ["fake"], pid=1)

    def test_request_without_conductor(self) -> None:
        self.assertEqual("Requested power on for node n1\n",
                         self.ok("node", "power", "n1", "on"))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)
        self.assertEqual("Node n1 is locked by a pending 'power on' action, "
                         "please retry after the current operation is "
                         "completed.",
                         self.fails("node", "power", "n1", "off"))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_reboot_and_off_targets(self) -> None:
        self.ok("node", "power", "n1", "reboot")
        self.assertEqual(states.REBOOT,
                         self.db.get_node("n1").target_power_state)
        self.db.update_node("n1", {"target_power_state": None})
        self.ok("node", "power", "n1", "off")
        self.assertEqual(states.POWER_OFF,
                         self.db.get_node("n1").target_power_state)

    def test_reserved_or_missing(self) -> None:
        self.db.reserve_node(self.db.get_node("n1").uuid, "host-a:2")
        self.assertIn("locked by host-a:2",
                      self.fails("node", "power", "n1", "on"))
        self.assertEqual("Node nope could not be found.",
                         self.fails("node", "power", "nope", "on"))

    def _conductor_applies(self, **outcome: Any) -> mock.MagicMock:
        """Patch the --wait poll's sleep to apply the action meanwhile."""
        def apply(seconds: float) -> None:
            self.db.update_node("n1", dict(outcome, target_power_state=None))

        return self.patch_sleep(apply)

    def test_wait_success(self) -> None:
        sleep = self._conductor_applies(power_state=states.POWER_ON)
        self.assertEqual("Node n1 is power on\n",
                         self.ok("node", "power", "n1", "on", "--wait"))
        sleep.assert_called_once_with(0.1)

    def test_wait_failure(self) -> None:
        self._conductor_applies(last_error="BMC said no")
        self.assertEqual("Node n1: power on failed: BMC said no",
                         self.fails("node", "power", "n1", "on", "--wait"))

    def test_wait_failure_is_said_once(self) -> None:
        # The conductor's last_error of a failed action names it already.
        self._conductor_applies(last_error="power on failed: BMC said no")
        self.assertEqual("Node n1: power on failed: BMC said no",
                         self.fails("node", "power", "n1", "on", "--wait"))

    def test_wait_timeout(self) -> None:
        self.patch_sleep()
        message = self.fails("node", "power", "n1", "on", "--wait",
                             "--timeout", "0.05")
        self.assertTrue(message.startswith(
            "Timed out after 0.05s waiting for node n1 to apply "
            "'power on'; is a conductor running? (see "
            "'conductor-manage status')"), message)
        self.assertIn("the request was cancelled", message)
        node = self.db.get_node("n1")
        self.assertIsNone(node.target_power_state)
        self.assertIn("cancelled: conductor-manage --wait timed out",
                      str(node.last_error))

    def test_wait_timeout_must_be_finite(self) -> None:
        for value in ("nan", "inf", "-1"):
            self.assertIn("--timeout: must be a number of seconds > 0 and "
                          "at most 604800 (a week), got '%s'" % value,
                          self.usage_error("node", "power", "n1", "on",
                                           "--wait", "--timeout", value))
        self.assertIsNone(self.db.get_node("n1").target_power_state)

    def test_ctrl_c_while_waiting_leaves_the_request(self) -> None:
        self.patch_sleep(KeyboardInterrupt)
        code, out, err = self.manage("node", "power", "n1", "on", "--wait")
        self.assertEqual((130, ""), (code, out))
        self.assertEqual(
            "\nconductor-manage: ERROR: interrupted; the 'power on' request "
            "of node n1 stays and a conductor applies it (see "
            "'conductor-manage node show n1'; 'conductor-manage node power "
            "n1 --cancel' withdraws it while it waits)\n", err)
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_wait_timeout_keep_leaves_the_request(self) -> None:
        self.patch_sleep()
        message = self.fails("node", "power", "n1", "on", "--wait",
                             "--timeout", "0.05", "--keep")
        self.assertIn("the request stays queued for at most [conductor] "
                      "power_request_timeout = 300s (cancel it with "
                      "'conductor-manage node power n1 --cancel')", message)
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_wait_timeout_while_being_applied_is_not_cancelled(self) -> None:
        def take(seconds: float) -> None:
            node = self.db.get_node("n1")
            if node.reservation is None:
                self.db.reserve_node(node.uuid, "host-a:0")

        self.patch_sleep(take)
        message = self.fails("node", "power", "n1", "on", "--wait",
                             "--timeout", "0.05")
        self.assertIn("it is being applied by host-a:0 now and was not "
                      "cancelled", message)
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_no_live_owner_refused_unless_queue(self) -> None:
        self.db.set_offline("host-a")
        self.assertEqual(
            "no live conductor has driver 'fake' to apply 'power on' to "
            "node n1 (see 'conductor-manage status'); nothing was "
            "requested: start one, or give --queue to leave the request "
            "for it", self.fails("node", "power", "n1", "on"))
        self.assertIsNone(self.db.get_node("n1").target_power_state)
        # A stale heartbeat is no live owner either.
        self.db.register_conductor("host-b", 0, ["fake"], pid=2)
        with self.db.engine.begin() as conn:
            conn.execute(models.conductors.update().values(
                heartbeat_at=timeutils.utcnow() - datetime.timedelta(
                    seconds=61)))
        self.assertIn("no live conductor",
                      self.fails("node", "power", "n1", "on", "--wait"))
        # A live worker without the node's driver is none either.
        self.db.register_conductor("host-c", 0, ["ipmi"], pid=3)
        self.assertIn("no live conductor",
                      self.fails("node", "power", "n1", "on"))
        self.assertEqual("Requested power on for node n1\n",
                         self.ok("node", "power", "n1", "on", "--queue"))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_cancel(self) -> None:
        self.ok("node", "power", "n1", "reboot")
        self.assertEqual("Cancelled the pending 'rebooting' request of node "
                         "n1\n", self.ok("node", "power", "n1", "--cancel"))
        node = self.db.get_node("n1")
        self.assertIsNone(node.target_power_state)
        self.assertEqual("Requested 'rebooting' cancelled by "
                         "conductor-manage",
                         node.last_error)
        self.assertEqual("node n1 has no pending power request to cancel",
                         self.fails("node", "power", "n1", "--cancel"))
        # Another action is accepted again.
        self.ok("node", "power", "n1", "off")

    def test_cancel_refused_while_being_applied(self) -> None:
        self.ok("node", "power", "n1", "on")
        self.db.reserve_node(self.db.get_node("n1").uuid, "host-a:0")
        self.assertEqual("node n1: the 'power on' request is being applied "
                         "by host-a:0 and cannot be cancelled",
                         self.fails("node", "power", "n1", "--cancel"))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_power_usage_errors(self) -> None:
        for argv, text in (
                (("n1",), "ACTION (off, on, reboot) is required unless "
                          "--cancel"),
                (("n1", "on", "--cancel"), "--cancel takes no ACTION"),
                (("n1", "--cancel", "--wait"), "--cancel takes no --wait"),
                (("n1", "--cancel", "--queue"), "--cancel takes no --queue"),
                (("n1", "on", "--keep"), "--keep applies to --wait only"),
                # It used to be accepted and ignored.
                (("n1", "on", "--timeout", "5"),
                 "--timeout applies to --wait only"),
                (("n1", "--cancel", "--timeout", "5"),
                 "--cancel takes no --timeout")):
            self.assertIn(text, self.usage_error("node", "power", *argv))
        self.assertIsNone(self.db.get_node("n1").target_power_state)
        self.assertIn("--timeout applies to --wait only",
                      self.usage_error("drain", "b", "--timeout", "5"))


class TestDrain(DbManageTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db.register_conductor("a", 0, ["fake"], pid=10)
        self.db.register_conductor("b", 0, ["fake"], pid=20)
        self.db.register_conductor("b", 1, ["fake"], pid=21)

    def draining(self) -> dict[str, bool]:
        return {record.holder: record.draining
                for record in self.db.list_conductors()}

    def test_drain_marks_the_hosts_workers(self) -> None:
        self.assertEqual("Draining b (2 worker(s)): the other hosts take its "
                         "nodes now; it stops once they had the time to poll "
                         "them\n", self.ok("drain", "b"))
        self.assertEqual({"a:0": False, "b:0": True, "b:1": True},
                         self.draining())
        data = self.json("status")
        self.assertEqual({"a": False, "b": True},
                         {host: info["draining"]
                          for host, info in data["hosts"].items()})
        self.assertIn("Draining (their nodes moved to the other hosts; they "
                      "stop once the handover is done): b",
                      self.ok("status"))
        # A worker respawned during the drain keeps draining.
        self.db.register_conductor("b", 0, ["fake"])
        self.assertTrue(self.draining()["b:0"])

    def test_refusals(self) -> None:
        self.assertEqual("no live conductor on host c to drain (see "
                         "'conductor-manage status')",
                         self.fails("drain", "c"))
        self.db.set_offline("b")
        self.assertEqual("a is the only live host: no other would take its "
                         "nodes; give --force to drain it anyway",
                         self.fails("drain", "a"))
        self.assertEqual({"a:0": False, "b:0": False, "b:1": False},
                         self.draining())
        self.ok("drain", "a", "--force")
        self.assertTrue(self.draining()["a:0"])

    def test_ctrl_c_while_waiting_leaves_it_draining(self) -> None:
        self.patch_sleep(KeyboardInterrupt)
        code, out, err = self.manage("drain", "b", "--wait")
        self.assertEqual(130, code)
        self.assertIn("Draining b", out)
        self.assertEqual(
            "\nconductor-manage: ERROR: interrupted; b stays draining and "
            "stops once the other hosts have its nodes (see "
            "'conductor-manage status')\n", err)
        self.assertTrue(self.draining()["b:0"])

    def test_wait_until_stopped_or_timeout(self) -> None:
        code, out, err = self.manage("drain", "b", "--wait", "--timeout",
                                     "0.3")
        self.assertEqual(1, code)
        self.assertIn("Draining b", out)
        self.assertIn("b still running after 0.3s; it stays draining", err)
        self.db.set_offline("b")
        self.db.clear_draining("b")
        self.db.register_conductor("b", 0, ["fake"])
        stopper = threading.Timer(0.3, self.db.set_offline, ("b",))
        stopper.start()
        self.addCleanup(stopper.join)
        self.assertIn("Host b drained and stopped",
                      self.ok("drain", "b", "--wait", "--timeout", "30"))


class TestStatusWatch(DbManageTestCase):
    """``status --watch``, run as the installed command."""

    def setUp(self) -> None:
        super().setUp()
        self.db.register_conductor("w", 0, ["fake"], pid=7)

    def command(self, *extra: str) -> list[str]:
        return [os.path.join(os.path.dirname(sys.executable),
                             "conductor-manage"), "--config-file",
                self.config_file, "status", "--watch", *extra]

    def read_until(self, fd: int, count: int, marker: bytes) -> bytes:
        data = b""
        deadline = time.monotonic() + base.WAIT
        while data.count(marker) < count:
            self.assertLess(time.monotonic(), deadline, str(data))
            chunk = os.read(fd, 65536)
            self.assertTrue(chunk, str(data))
            data += chunk
        return data

    def test_plain_repeated_output_when_not_a_tty(self) -> None:
        proc = subprocess.Popen(self.command("--interval", "0.2"),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(proc.kill)
        assert proc.stdout is not None
        data = self.read_until(proc.stdout.fileno(), 3,
                               b"Every 0.2s: conductor-manage status")
        self.assertNotIn(b"\x1b[", data)
        self.assertEqual(3, data.count(b"\nw     0       7"), str(data))
        proc.send_signal(signal.SIGINT)        # Ctrl-C
        self.assertEqual(0, proc.wait(base.WAIT))
        self.assertEqual(b"", proc.stderr.read() if proc.stderr else b"")

    def test_in_place_in_a_terminal(self) -> None:
        primary, secondary = pty.openpty()
        self.addCleanup(os.close, primary)
        proc = subprocess.Popen(self.command("--interval", "0.2"),
                                stdout=secondary, stderr=subprocess.PIPE)
        os.close(secondary)
        self.addCleanup(proc.kill)
        data = self.read_until(primary, 2, b"\x1b[H\x1b[2J")
        # Each report starts by going home and clearing the screen.
        self.assertTrue(data.startswith(b"\x1b[H\x1b[2JEvery 0.2s"), data)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(0, proc.wait(base.WAIT))

    def test_interval_must_be_positive_and_needs_watch(self) -> None:
        self.assertIn("must be a number of seconds > 0 and at most 604800 "
                      "(a week), got '0'",
                      self.usage_error("status", "--watch", "--interval",
                                       "0"))
        # nan compares false with everything; inf, 1e400 and 1e19
        # overflowed the clock; a tiny interval re-read the database in a
        # loop.
        for value in ("nan", "inf", "1e400", "1e19"):
            self.assertIn("at most 604800 (a week), got '%s'" % value,
                          self.usage_error("status", "--watch",
                                           "--interval", value))
        self.assertIn("must be at least 0.1, got '1e-09'",
                      self.usage_error("status", "--watch", "--interval",
                                       "1e-09"))
        self.assertIn("--interval applies to --watch only",
                      self.usage_error("status", "--interval", "5"))


class TestStatusAndClean(DbManageTestCase):

    def setUp(self) -> None:
        super().setUp()
        now = datetime.datetime(2030, 5, 1, 12, 0, 0)
        self.now = now - datetime.timedelta(seconds=120)
        self.useFixture(fixtures.MockPatchObject(
            timeutils, "utcnow", autospec=True,
            side_effect=lambda *a, **kw: self.now))
        # Worker h:1 last beat 2 minutes ago: older than the 60 s timeout.
        self.db.register_conductor("h", 1, ["fake"], pid=41)
        self.now = now - datetime.timedelta(seconds=5)
        self.db.register_conductor("h", 0, ["fake", "ipmi"], pid=40)
        self.snapshot = {"pool": {"size": 10, "busy": 2, "rejected": 3},
                         "sweeps": {"sync": {"nodes": 7, "failures": 1,
                                             "total_seconds": 0.25}}}
        self.db.heartbeat("h", 0, status=self.snapshot)
        self.db.register_conductor("g", 0, ["fake"], pid=50)
        self.db.set_offline("g", 0)
        self.now = now

    def test_status_json(self) -> None:
        for i in range(3):
            self.ok("node", "create", "--driver", "fake", "--name",
                    "n%d" % i)
        self.db.update_node("n0", {"power_state": states.POWER_ON,
                                   "maintenance": True})
        self.db.update_node("n1", {"power_state": states.POWER_ON})
        data = self.json("status")
        self.assertEqual([
            {"host": "g", "worker_id": 0, "pid": 50, "online": False,
             "alive": False, "draining": False, "heartbeat_age": 5.0,
             "drivers": ["fake"], "status": {}},
            {"host": "h", "worker_id": 0, "pid": 40, "online": True,
             "alive": True, "draining": False, "heartbeat_age": 5.0,
             "drivers": ["fake", "ipmi"], "status": self.snapshot},
            {"host": "h", "worker_id": 1, "pid": 41, "online": True,
             "alive": False, "draining": False, "heartbeat_age": 120.0,
             "drivers": ["fake"], "status": {}},
        ], data["workers"])
        self.assertEqual({"total": 3, "maintenance": 1,
                          "by_power_state": {"power on": 2, "none": 1}},
                         data["nodes"])

    def test_status_uses_heartbeat_timeout(self) -> None:
        self.config_file = self.write_config(
            "[conductor]\nheartbeat_interval = 10\n"
            "heartbeat_timeout = 300\n")
        alive = {(w["host"], w["worker_id"]): w["alive"]
                 for w in self.json("status")["workers"]}
        self.assertEqual({("g", 0): False, ("h", 0): True, ("h", 1): True},
                         alive)

    def test_status_table(self) -> None:
        out = self.ok("status")
        lines = out.splitlines()
        self.assertEqual(["host", "worker", "pid", "alive", "online",
                          "health", "(abandoned", "calls)",
                          "heartbeat", "age", "(s)", "drivers", "pool",
                          "busy/size", "(rejected)", "last", "power",
                          "sync"], lines[0].split())
        self.assertEqual(["h", "0", "40", "true", "true", "5.0", "fake,",
                          "ipmi", "2/10", "(3)", "7", "nodes", "in", "0.25s,",
                          "1", "failed"], lines[3].split())
        self.assertEqual("0 node(s), 0 in maintenance", lines[-1])

    def test_status_table_shows_a_degraded_worker(self) -> None:
        self.snapshot["health"] = "degraded"
        self.snapshot["pool"] = {"size": 10, "busy": 2, "rejected": 3,
                                 "abandoned": 4, "abandoned_cap": 4,
                                 "abandoned_total": 9}
        self.db.heartbeat("h", 0, status=self.snapshot, online=False)
        row = [line for line in self.ok("status").splitlines()
               if line.startswith("h ")][0]
        self.assertEqual(["h", "0", "40", "false", "false", "degraded",
                          "(4", "running", "of", "4,", "9", "in", "total)"],
                         row.split()[:13])

    def test_status_table_lists_periodic_tasks_of_live_workers(self) -> None:
        self.snapshot["periodics"] = [
            {"name": "ConductorPeriodics.sync_power_states", "enabled": True,
             "runs": 12, "failures": 1, "last_duration": 0.25,
             "last_started": "2030-05-01T11:59:55+00:00", "next_due": 4.5},
            {"name": "Off.task", "enabled": False, "runs": 0}]
        self.db.heartbeat("h", 0, status=self.snapshot)
        out = self.ok("status")
        rows = [line.split() for line in out.splitlines()
                if "ConductorPeriodics" in line or "Off.task" in line]
        self.assertEqual([["h", "0", "ConductorPeriodics.sync_power_states",
                           "12", "1", "2030-05-01T11:59:55+00:00", "0.250",
                           "4.5"]], rows)

    def test_status_node_shares_per_host(self) -> None:
        for name in ("maint", "recent", "late", "never"):
            self.ok("node", "create", "--driver", "fake", "--name", name)
        self.db.update_node("maint", {"maintenance": True})
        for name, age in (("maint", 1000), ("recent", 30), ("late", 200)):
            with self.db.engine.begin() as conn:
                conn.execute(models.nodes.update()
                             .where(models.nodes.c.name == name)
                             .values(power_checked_at=self.now
                                     - datetime.timedelta(seconds=age)))
        hosts = self.json("status")["hosts"]
        # Only h:0 is live: h owns every node. Overdue: not polled within
        # 1.5 x 60 s and not in maintenance ("never" was enrolled now).
        self.assertEqual((4, 1, 200.0), (hosts["h"]["nodes_owned"],
                                         hosts["h"]["nodes_overdue"],
                                         hosts["h"]["oldest_reading_age"]))
        self.assertEqual((0, 0, None), (hosts["g"]["nodes_owned"],
                                        hosts["g"]["nodes_overdue"],
                                        hosts["g"]["oldest_reading_age"]))
        rows = [line.split() for line in self.ok("status").splitlines()]
        self.assertIn(["h", "1", "4", "1", "200.0"], rows)
        self.assertIn(["g", "0", "0", "0"], rows)

    def test_status_empty(self) -> None:
        self.db.delete_conductors("h", [0, 1])
        self.db.delete_conductors("g", [0])
        data = self.json("status")
        self.assertEqual([], data["workers"])
        self.assertEqual({"total": 0, "maintenance": 0,
                          "by_power_state": {}}, data["nodes"])

    def test_clean(self) -> None:
        for name in ("dead", "alive", "unknown", "free"):
            self.ok("node", "create", "--driver", "fake", "--name", name)
        for name, holder in (("dead", "h:1"), ("alive", "h:0"),
                             ("unknown", "x:9")):
            self.db.reserve_node(self.db.get_node(name).uuid, holder)
        self.assertEqual("Removed 2 dead worker record(s) and 0 start-up "
                         "task log(s), released 2 stale reservation(s)\n",
                         self.ok("clean"))
        self.assertEqual(["h:0"],
                         [r.holder for r in self.db.list_conductors()])
        self.assertEqual({"dead": None, "alive": "h:0", "unknown": None,
                          "free": None},
                         {n.name: n.reservation
                          for n in self.db.list_nodes()})
        self.assertEqual("Removed 0 dead worker record(s) and 0 start-up "
                         "task log(s), released 0 stale reservation(s)\n",
                         self.ok("clean"))

    def test_clean_reports_reservations_with_no_call_in_progress(
            self) -> None:
        uuids = {}
        for name in ("busy", "stuck", "idle", "free"):
            self.ok("node", "create", "--driver", "fake", "--name", name)
            uuids[name] = self.db.get_node(name).uuid
        for name in ("busy", "stuck", "idle"):
            self.db.reserve_node(uuids[name], "h:0")
        self.snapshot["reservations"] = {
            "in_flight": [uuids["busy"]],
            "release_pending": [uuids["stuck"]]}
        self.db.heartbeat("h", 0, status=self.snapshot)
        out = self.ok("clean").splitlines()
        self.assertEqual(
            "2 reservation(s) held by live workers with no call in progress "
            "at their last heartbeat (left alone; a worker retries its "
            "failed releases itself):", out[1])
        self.assertEqual(sorted([
            "  node %s: h:0, no call in progress" % uuids["idle"],
            "  node %s: h:0, its release failed and is being retried"
            % uuids["stuck"]]), sorted(out[2:]))
        # Only reported: the live worker keeps them.
        self.assertEqual({"busy": "h:0", "stuck": "h:0", "idle": "h:0",
                          "free": None},
                         {n.name: n.reservation
                          for n in self.db.list_nodes()})

    def _task_logs(self, host: str) -> tuple[str, str]:
        log_dir = os.path.join(self.state, "async")
        os.makedirs(log_dir)
        for name in ("database", "drivers", "inventory-parse-1",
                     "inventory-parse-12"):
            self.write(os.path.join("async", "%s.log" % name), "x\n")
        other = self.write(os.path.join("async", "conductor.log"), "main\n")
        self.write(os.path.join("async", "inventory-parse-x.log"), "y\n")
        self.config_file = self.write_config("[DEFAULT]\nhost = %s\n"
                                             % host)
        return log_dir, other

    def test_clean_removes_only_task_logs_of_a_stopped_host(self) -> None:
        log_dir, other = self._task_logs("g")
        out = self.ok("clean")
        self.assertIn("and 4 start-up task log(s)", out)
        self.assertEqual(["conductor.log", "inventory-parse-x.log"],
                         sorted(os.listdir(log_dir)))
        self.assertTrue(os.path.exists(other))

    def test_clean_keeps_task_logs_of_a_running_host(self) -> None:
        log_dir, _ = self._task_logs("h")
        self.assertIn("and 0 start-up task log(s)", self.ok("clean"))
        self.assertEqual(6, len(os.listdir(log_dir)))

    def test_clean_runs_clean_hooks_and_reports_failures(self) -> None:
        hooks_dir = os.path.join(self.state, "hooks")
        os.makedirs(hooks_dir)
        marker = os.path.join(self.state, "ran")
        for name, body in (("20-good", "echo \"$1\" > %s" % marker),
                           ("30-bad", "exit 4")):
            path = self.write(os.path.join("hooks", name),
                              "#!/bin/sh\n%s\n" % body)
            os.chmod(path, 0o755)
        self.config_file = self.write_config("[hooks]\nhooks_dir = %s\n"
                                             % hooks_dir)
        code, out, err = self.manage("clean")
        self.assertEqual(1, code)
        self.assertIn("Removed 2 dead worker record(s)", out)
        self.assertIn("1 clean hook(s) failed: Hook 30-bad failed in phase "
                      "'clean': exited with status 4", err)
        with open(marker) as stream:
            self.assertEqual("clean\n", stream.read())


class TestClosedOutput(ManageTestCase):

    def test_reader_going_away_exits_quietly(self) -> None:
        config = self.write_config()
        probe = ("import sys\nfrom conductor.cmd import manage\n"
                 "sys.exit(manage.main(['--config-file', %r, 'db', 'sync']"
                 "))\n" % config)
        self.assertEqual(0, subprocess.run(
            [sys.executable, "-c", probe], capture_output=True,
            timeout=60).returncode)
        listing = probe.replace("'db', 'sync'", "'node', 'list'")
        # A reader that closes its end at once, like ``| head -0``.
        proc = subprocess.Popen([sys.executable, "-c", listing],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.close()
        _, err = proc.communicate(timeout=60)
        self.assertEqual(1, proc.returncode)
        self.assertNotIn(b"Traceback", err)
        self.assertNotIn(b"BrokenPipeError", err)

# SPDX-License-Identifier: Apache-2.0
"""A password typed into a BMC address is never shown, end to end.

The operator's typo: ``redfish_address`` written as
``https://admin:<password>@bmc:44x3`` (credentials in the URL, and a bad
port). It is refused everywhere it can be entered, with a message that
says why, and the password appears in no command output, RPC error,
conductor log or start-up task log. A node stored with such an address
by an older release is shown and logged masked.
"""

from __future__ import annotations

import os
from typing import Any

from conductor.common import exceptions
from conductor import states
from tests.functional import base
from tests.functional import test_rpc

SECRET = "Typo-S3cret-91"
ADDRESS = "https://admin:%s@bmc.example.com:44x3" % SECRET
REFUSED = "redfish_address must not hold credentials"


def typo_node(name: str) -> dict[str, Any]:
    return {"name": name, "driver": "redfish",
            "driver_info": {"redfish_address": ADDRESS,
                            "redfish_username": "admin",
                            "redfish_password": "elsewhere"}}


class TestTypedPassword(test_rpc.RpcTestCase):

    def files_holding_the_secret(self, *skip: str) -> list[str]:
        """Every file under the work directory that holds SECRET."""
        found = []
        for root, _dirs, files in os.walk(self.workdir):
            for name in files:
                path = os.path.join(root, name)
                if path in skip:
                    continue
                with open(path, "rb") as stream:
                    if SECRET.encode() in stream.read():
                        found.append(path)
        return found

    def test_refused_and_masked_everywhere(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        inventory = os.path.join(self.workdir, "inventory.yaml")
        with open(inventory, "w") as stream:
            stream.write("- name: good\n  driver: fake\n"
                         "- name: typo\n  driver: redfish\n"
                         "  driver_info:\n"
                         "    redfish_address: '%s'\n"
                         "    redfish_username: admin\n"
                         "    redfish_password: elsewhere\n" % ADDRESS)
        # A conductor whose start-up inventory holds the typo: it refuses
        # the inventory (its start-up task logs and its log say why).
        refused = self.start_conductor(self.options(
            "hx", db_fixture.url, workers=1,
            DEFAULT={"enabled_drivers": "fake,redfish",
                     "inventory_file": inventory}), name="hx")
        self.assertEqual(1, refused.wait_exit(60))
        self.assertIn(REFUSED, refused.log())

        conductor = self.start("ha", db_fixture, workers=1,
                               DEFAULT={"enabled_drivers": "fake,redfish"})
        db = db_fixture.connect(upgrade=False)
        manage = self.manage_config(db_fixture)
        with open(manage) as stream:
            text = stream.read()
        with open(manage, "w") as stream:
            stream.write(text.replace("enabled_drivers = fake\n",
                                      "enabled_drivers = fake,redfish\n"))

        # The CLI: node create and node import.
        out = self.run_manage(manage, "node", "create", "--driver",
                              "redfish", "--name", "typo",
                              "--driver-info", "redfish_address=" + ADDRESS,
                              "--driver-info", "redfish_username=admin",
                              "--driver-info", "redfish_password=x",
                              check=1)
        self.assertIn(REFUSED, out.stderr)
        self.assertNotIn(SECRET, out.stderr + out.stdout)
        out = self.run_manage(manage, "node", "import", inventory, check=1)
        self.assertIn(REFUSED, out.stderr)
        self.assertNotIn(SECRET, out.stderr + out.stdout)

        # RPC: create and update.
        api = self.api()
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                api.create_node, typo_node("typo"))
        self.assertIn(REFUSED, str(exc))
        self.assertNotIn(SECRET, str(exc))
        good = db.create_node({"driver": "fake", "name": "good"})
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, api.update_node, good.uuid,
            {"driver": "redfish",
             "driver_info": typo_node("x")["driver_info"]})
        self.assertNotIn(SECRET, str(exc))

        # A node stored with the address by an older release (no check
        # then): shown masked by the CLI and RPC, and its failing power
        # reads never log the password.
        old = db.create_node(typo_node("old"))
        shown = self.run_manage(manage, "node", "show", "old", "--format",
                                "json")
        self.assertIn("https://admin:***@bmc.example.com:44x3",
                      shown.stdout)
        self.assertNotIn(SECRET, shown.stdout)
        self.assertNotIn(SECRET, str(api.get_node(old.uuid)))
        self.assertNotIn(SECRET, str(api.list_nodes()))
        done = api.set_power_state(old.uuid, states.POWER_ON, wait=True)
        self.assertIsNotNone(done["last_error"])
        self.assertNotIn(SECRET, str(done))
        base.wait_for(lambda: "(%s): power state read failed" % old.uuid
                      in conductor.log(), 30, "a failed power read logged")
        status = self.run_manage(manage, "status", "--format", "json")
        self.assertNotIn(SECRET, status.stdout)

        # No log, task log or output file holds it: only the inventory
        # and the database, where the operator put it.
        db_file = db_fixture.url.split("///", 1)[1]
        self.assertEqual([], self.files_holding_the_secret(
            inventory, db_file, db_file + "-wal", db_file + "-shm"))

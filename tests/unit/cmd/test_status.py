# SPDX-License-Identifier: Apache-2.0
"""``conductor-status upgrade check``, run as the installed command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import sqlalchemy as sa

from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.db import models
from tests import base

_BIN = os.path.join(os.path.dirname(sys.executable), "conductor-status")


class TestUpgradeCheck(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.state = self.conf.state_path
        self.url = "sqlite:///" + os.path.join(self.state, "conductor.db")
        self.config_file = self.write_config()

    def write_config(self, extra: str = "") -> str:
        path = os.path.join(self.state, "conductor.conf")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write("[DEFAULT]\nstate_path = %s\n[database]\n"
                         "connection = %s\n%s" % (self.state, self.url,
                                                  extra))
        return path

    def migrate(self, revision: str = "head") -> None:
        engine = db_engine.create_engine(self.url)
        try:
            migration.upgrade(engine, revision)
        finally:
            engine.dispose()

    def check(self, *extra: str) -> tuple[int, dict[str, Any]]:
        result = subprocess.run(
            [_BIN, "--config-file", self.config_file, "upgrade", "check",
             "--json", *extra], capture_output=True, text=True, timeout=60)
        self.assertEqual("", result.stderr)
        data = json.loads(result.stdout)
        return result.returncode, {c["check"]: c for c in data["checks"]}

    def test_fresh_database_passes(self) -> None:
        self.migrate()
        code, checks = self.check()
        self.assertEqual(0, code, str(checks))
        self.assertEqual({0}, {c["result"] for c in checks.values()})
        self.assertIn("(head)", checks["Database schema"]["details"])
        self.assertIn("every node has its partition (0 checked)",
                      checks["Node partitions"]["details"])
        self.assertTrue(checks["Database version"]["details"].startswith(
            "sqlite 3."))

    def test_old_schema_fails_naming_it(self) -> None:
        self.migrate("0002_power_request_time")
        code, checks = self.check()
        self.assertEqual(2, code)
        schema = checks["Database schema"]
        self.assertEqual(2, schema["result"])
        self.assertEqual(
            "schema revision 0002_power_request_time is older than this "
            "release's %s: run 'conductor-manage db sync' before starting "
            "the new conductors" % migration.head(), schema["details"])

    def test_a_node_outside_its_partition_fails(self) -> None:
        self.migrate()
        db = db_api.Connection.create(self.url)
        self.addCleanup(db.dispose)
        good, bad = db.import_nodes([{"driver": "fake", "name": "good"},
                                     {"driver": "fake", "name": "bad"}])
        with db.engine.begin() as conn:
            conn.execute(sa.update(models.nodes)
                         .where(models.nodes.c.uuid == bad.uuid)
                         .values(partition=(bad.partition + 1)
                                 % models.PARTITIONS))
        code, checks = self.check()
        self.assertEqual(2, code)
        self.assertIn("1 of 2 node(s) have a partition that is not their "
                      "own (e.g. %s)" % bad.uuid,
                      checks["Node partitions"]["details"])

    def test_unknown_revision_fails(self) -> None:
        self.migrate()
        engine = db_engine.create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET "
                                 "version_num = '9999_future'"))
        engine.dispose()
        code, checks = self.check()
        self.assertEqual(2, code)
        self.assertIn("9999_future is unknown to this release",
                      checks["Database schema"]["details"])

    def test_config_typo_is_a_warning(self) -> None:
        self.migrate()
        self.config_file = self.write_config("[conducter]\nworkers = 2\n")
        code, checks = self.check()
        self.assertEqual(1, code)
        self.assertEqual(
            "%s: [conducter]: unknown section, its option(s) workers are "
            "ignored (did you mean [conductor]?)" % self.config_file,
            checks["Configuration options"]["details"])

    def test_unreachable_database_fails(self) -> None:
        self.url = "mysql+pymysql://root:s3cret@127.0.0.1:1/conductor"
        self.config_file = self.write_config()
        code, checks = self.check()
        self.assertEqual(2, code)
        details = checks["Database version"]["details"]
        self.assertIn("cannot reach the database", details)
        self.assertNotIn("s3cret", details)

    def test_before_the_first_start_passes_and_creates_nothing(self
                                                               ) -> None:
        # The default embedded database, not created yet.
        self.url = "sqlite:///%s/conductor.sqlite" % self.state
        with open(os.path.join(self.state, "conductor.conf"), "w") as stream:
            stream.write("[DEFAULT]\nstate_path = %s\n" % self.state)
        code, checks = self.check()
        self.assertEqual(0, code, str(checks))
        self.assertEqual(
            "no database yet: the conductor creates %s/conductor.sqlite at "
            "its first start" % self.state,
            checks["Database schema"]["details"])
        self.assertFalse(os.path.exists(self.url[len("sqlite:///"):]))

    def test_a_mistyped_sqlite_path_warns_and_creates_nothing(self) -> None:
        self.url = "sqlite:///" + os.path.join(self.state, "typo",
                                               "conductor.db")
        self.config_file = self.write_config()
        code, checks = self.check()
        self.assertEqual(1, code)
        self.assertEqual(
            "there is no database file %s/typo/conductor.db: check "
            "[database] connection (the conductor would start on a new, "
            "empty database there)" % self.state,
            checks["Database version"]["details"])
        self.assertFalse(os.path.exists(os.path.join(self.state, "typo")))

    def test_a_value_the_conductor_refuses_fails(self) -> None:
        self.migrate()
        self.config_file = self.write_config(
            "[conductor]\npower_state_timeout = nan\n")
        code, checks = self.check()
        self.assertEqual(2, code)
        self.assertEqual("Invalid configuration: [conductor] "
                         "power_state_timeout: must be a finite number, "
                         "got nan",
                         checks["Configuration options"]["details"])

    def test_a_directory_as_config_file(self) -> None:
        result = subprocess.run(
            [_BIN, "--config-file", self.state, "upgrade", "check"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual((2, "conductor-status: ERROR: cannot read the "
                          "configuration: [Errno 21] Is a directory: '%s'\n"
                          % self.state),
                         (result.returncode, result.stderr))

    def test_table_output_and_missing_file(self) -> None:
        self.migrate()
        result = subprocess.run(
            [_BIN, "--config-file", self.config_file, "upgrade", "check"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stdout)
        self.assertIn("Check: Database schema", result.stdout)
        result = subprocess.run(
            [_BIN, "--config-file", "/nonexistent.conf", "upgrade",
             "check"], capture_output=True, text=True, timeout=60)
        self.assertEqual((2, "conductor-status: ERROR: config file(s) not "
                          "found: /nonexistent.conf\n"),
                         (result.returncode, result.stderr))

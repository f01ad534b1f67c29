# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.db.migration on a temp-file SQLite database."""

from __future__ import annotations

import importlib.util
import os
import uuid as uuid_lib

from alembic import autogenerate
from alembic import migration as alembic_migration
from oslo_utils import timeutils
import sqlalchemy as sa

from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.db import models
from tests import base


class TestMigration(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        path = os.path.join(self.conf.state_path, "conductor.sqlite")
        self.engine = db_engine.create_engine("sqlite:///" + path)
        self.addCleanup(self.engine.dispose)

    def tables(self) -> set[str]:
        return set(sa.inspect(self.engine).get_table_names())

    def test_head(self) -> None:
        self.assertEqual("0009_conductor_changes", migration.head())

    def test_empty_database(self) -> None:
        self.assertIsNone(migration.current(self.engine))
        exc = self.assertRaises(exceptions.SchemaOutOfDate,
                                migration.check, self.engine)
        self.assertIn("revision <empty>", str(exc))
        self.assertIn(migration.head(), str(exc))
        self.assertIn("conductor-manage db sync", str(exc))

    def test_upgrade_empty_database(self) -> None:
        self.assertEqual(migration.head(), migration.upgrade(self.engine))
        self.assertEqual(migration.head(), migration.current(self.engine))
        self.assertEqual(migration.head(), migration.check(self.engine))
        self.assertTrue({"nodes", "conductors", "alembic_version"}
                        <= self.tables())

    def test_upgrade_is_idempotent(self) -> None:
        migration.upgrade(self.engine)
        db = db_api.Connection(self.engine)
        db.create_node({"driver": "fake", "name": "n1"})
        self.assertEqual(migration.head(), migration.upgrade(self.engine))
        self.assertEqual(["n1"], [node.name for node in db.list_nodes()])
        with self.engine.connect() as conn:
            versions = conn.execute(
                sa.text("SELECT version_num FROM alembic_version")).all()
        self.assertEqual([(migration.head(),)], versions)

    def test_check_behind_head(self) -> None:
        migration.upgrade(self.engine)
        with self.engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version "
                                 "SET version_num = 'older'"))
        exc = self.assertRaises(exceptions.SchemaOutOfDate,
                                migration.check, self.engine)
        self.assertIn("revision older", str(exc))

    def test_models_match_migrations(self) -> None:
        migration.upgrade(self.engine)
        with self.engine.connect() as conn:
            context = alembic_migration.MigrationContext.configure(
                conn, opts={"compare_type": True,
                            "compare_server_default": True})
            diff = autogenerate.compare_metadata(context, models.metadata)
        self.assertEqual([], diff)

    def test_0004_fills_the_partitions_of_existing_rows(self) -> None:
        migration.upgrade(self.engine, "0003_power_action_claim")
        old_nodes = sa.table(
            "nodes", sa.column("uuid", sa.String),
            sa.column("driver", sa.String), sa.column("driver_info", sa.JSON),
            sa.column("created_at", sa.DateTime))
        uuids = [str(uuid_lib.UUID(int=i * 104729 + 7)) for i in range(2500)]
        with self.engine.begin() as conn:
            conn.execute(old_nodes.insert(), [
                {"uuid": u, "driver": "fake", "driver_info": {},
                 "created_at": timeutils.utcnow()} for u in uuids])
        migration.upgrade(self.engine)
        db = db_api.Connection(self.engine)
        stored = {n.uuid: n.partition for n in db.list_nodes()}
        self.assertEqual({u: models.partition_of(u) for u in uuids}, stored)
        self.assertGreater(len(set(stored.values())), 800)
        self.assertEqual({None}, {n.power_checked_at
                                  for n in db.list_nodes()})
        indexes = {i["name"]: i["column_names"]
                   for i in sa.inspect(self.engine).get_indexes("nodes")}
        self.assertEqual(["partition", "power_checked_at"],
                         indexes["nodes_partition_checked_idx"])

    def test_0004_hashes_like_the_model(self) -> None:
        # NOTE: the migration keeps its own copy of the hash; the two must
        # never drift apart, or nodes enrolled later would be read by the
        # wrong worker.
        path = os.path.join(os.path.dirname(migration.__file__),
                            "migrations", "versions",
                            "0004_partitions_due_time.py")
        spec = importlib.util.spec_from_file_location("m0004", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for uuid in (str(uuid_lib.uuid4()) for _ in range(2000)):
            self.assertEqual(models.partition_of(uuid),
                             module._partition(uuid))

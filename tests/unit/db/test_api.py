# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.db.api against a real, migrated SQLite file."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import stat
import sys
import threading
from typing import Any
from unittest import mock
import uuid as uuid_lib

import fixtures
from oslo_db import exception as db_exc
from oslo_utils import timeutils
from oslo_utils import uuidutils
import sqlalchemy as sa

from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.db import models
from conductor import states
from tests import base

UNREACHABLE_MYSQL = "mysql+pymysql://root:s3cret@127.0.0.1:1/conductor"


class DbTestCase(base.TestCase):
    """Gives ``self.db``: a Connection to a migrated temp SQLite file."""

    def setUp(self) -> None:
        super().setUp()
        self.db_path = os.path.join(self.conf.state_path, "conductor.sqlite")
        self.db = db_api.Connection.create("sqlite:///" + self.db_path)
        self.addCleanup(self.db.dispose)
        migration.upgrade(self.db.engine)

    def node(self, name: str | None = None, **values: object
             ) -> db_api.NodeRecord:
        fields: dict[str, object] = {"driver": "fake", "driver_info": {}}
        if name is not None:
            fields["name"] = name
        fields.update(values)
        return self.db.create_node(fields)

    def count_nodes(self) -> int:
        with self.db.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(models.nodes)
            ).scalar_one()

    def set_columns(self, uuid: str, **values: object) -> None:
        """Write columns directly, bypassing the API under test."""
        with self.db.engine.begin() as conn:
            conn.execute(models.nodes.update()
                         .where(models.nodes.c.uuid == uuid).values(**values))


class TestCreateAndImport(DbTestCase):

    def test_create_node_defaults(self) -> None:
        node = self.node("n1", driver_info={"fake_latency_ms": 5})
        self.assertTrue(uuidutils.is_uuid_like(node.uuid))
        self.assertEqual("n1", node.name)
        self.assertEqual("fake", node.driver)
        self.assertEqual({"fake_latency_ms": 5}, node.driver_info)
        self.assertIsNone(node.power_state)
        self.assertIsNone(node.target_power_state)
        self.assertFalse(node.maintenance)
        self.assertEqual(0, node.power_sync_failures)
        self.assertIsNone(node.reservation)
        self.assertIsInstance(node.created_at, datetime.datetime)
        self.assertIsNone(node.updated_at)

    def test_create_node_keeps_given_uuid_and_maintenance(self) -> None:
        uuid = uuidutils.generate_uuid()
        node = self.node("n1", uuid=uuid, maintenance=True,
                         maintenance_reason="broken fan")
        self.assertEqual(uuid, node.uuid)
        self.assertTrue(node.maintenance)
        self.assertEqual("broken fan", node.maintenance_reason)

    def test_create_node_without_name(self) -> None:
        first = self.node()
        second = self.node()
        self.assertIsNone(first.name)
        self.assertNotEqual(first.uuid, second.uuid)

    def test_create_node_unknown_field(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.db.create_node,
                                {"driver": "fake", "reservation": "x"})
        self.assertIn("reservation", str(exc))
        self.assertEqual(0, self.count_nodes())

    def test_create_node_duplicate_name(self) -> None:
        self.node("n1")
        exc = self.assertRaises(exceptions.DuplicateName, self.node, "n1")
        self.assertEqual("A node with name n1 already exists.", str(exc))
        self.assertEqual(1, self.count_nodes())

    def test_create_node_duplicate_uuid(self) -> None:
        node = self.node("n1")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.node, "n2", uuid=node.uuid)
        self.assertIn(node.uuid, str(exc))
        self.assertEqual(1, self.count_nodes())

    def test_import_nodes_returns_all_in_order(self) -> None:
        nodes = self.db.import_nodes([
            {"driver": "fake", "name": "n%d" % i} for i in range(5)])
        self.assertEqual(["n0", "n1", "n2", "n3", "n4"],
                         [node.name for node in nodes])
        self.assertEqual(5, self.count_nodes())

    def test_import_nodes_empty(self) -> None:
        self.assertEqual([], self.db.import_nodes([]))

    def test_import_duplicate_name_inside_batch_stores_nothing(self) -> None:
        exc = self.assertRaises(exceptions.DuplicateName,
                                self.db.import_nodes,
                                [{"driver": "fake", "name": "a"},
                                 {"driver": "fake", "name": "b"},
                                 {"driver": "fake", "name": "a"}])
        self.assertIn("name a ", str(exc))
        self.assertEqual(0, self.count_nodes())

    def test_import_clash_with_existing_node_stores_nothing(self) -> None:
        self.node("b")
        exc = self.assertRaises(exceptions.DuplicateName,
                                self.db.import_nodes,
                                [{"driver": "fake", "name": "a"},
                                 {"driver": "fake", "name": "b"},
                                 {"driver": "fake", "name": "c"}])
        self.assertIn("name b ", str(exc))
        self.assertEqual(["b"], [n.name for n in self.db.list_nodes()])

    def test_import_duplicate_uuid_inside_batch_stores_nothing(self) -> None:
        uuid = uuidutils.generate_uuid()
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.db.import_nodes,
                                [{"driver": "fake", "name": "a",
                                  "uuid": uuid},
                                 {"driver": "fake", "name": "b",
                                  "uuid": uuid}])
        self.assertIn(uuid, str(exc))
        self.assertEqual(0, self.count_nodes())

    def test_import_unknown_field_stores_nothing(self) -> None:
        self.assertRaises(exceptions.InvalidParameterValue,
                          self.db.import_nodes,
                          [{"driver": "fake", "name": "a"},
                           {"driver": "fake", "power_state": "power on"}])
        self.assertEqual(0, self.count_nodes())


class TestGetAndList(DbTestCase):

    def test_get_by_uuid_and_by_name(self) -> None:
        node = self.node("n1")
        self.assertEqual(node, self.db.get_node(node.uuid))
        self.assertEqual(node, self.db.get_node("n1"))

    def test_get_by_uuid_in_other_spellings(self) -> None:
        node = self.node("n1")
        for ident in (node.uuid.upper(), node.uuid.replace("-", ""),
                      "{%s}" % node.uuid, "urn:uuid:%s" % node.uuid):
            self.assertEqual(node.uuid, self.db.get_node(ident).uuid, ident)

    def test_get_not_found(self) -> None:
        self.node("n1")
        uuid = uuidutils.generate_uuid()
        for ident in ("nope", uuid):
            exc = self.assertRaises(exceptions.NodeNotFound,
                                    self.db.get_node, ident)
            self.assertEqual("Node %s could not be found." % ident, str(exc))

    def test_get_nodes_by_uuid_keeps_order_skips_missing(self) -> None:
        a, b = self.node("a"), self.node("b")
        found = self.db.get_nodes_by_uuid(
            [b.uuid, uuidutils.generate_uuid(), a.uuid])
        self.assertEqual(["b", "a"], [node.name for node in found])

    def test_list_filters(self) -> None:
        self.node("a")
        self.node("b", driver="ipmi")
        self.node("c", maintenance=True)
        self.node("d", driver="ipmi", maintenance=True)

        def names(**kw: Any) -> list[str | None]:
            return [node.name for node in self.db.list_nodes(**kw)]

        self.assertEqual(["a", "b", "c", "d"], names())
        self.assertEqual(["b", "d"], names(driver="ipmi"))
        self.assertEqual(["c", "d"], names(maintenance=True))
        self.assertEqual(["a", "b"], names(maintenance=False))
        self.assertEqual(["d"], names(driver="ipmi", maintenance=True))
        self.assertEqual(["a", "b"], names(limit=2))
        self.assertEqual([], names(driver="redfish"))

    def test_driver_info_decoded_from_text(self) -> None:
        # Some MySQL drivers return JSON columns as text.
        self.assertEqual({"a": 1}, db_api._as_dict('{"a": 1}'))
        self.assertEqual({}, db_api._as_dict(None))
        self.assertEqual(["fake"], db_api._as_list(b'["fake"]'))


class TestUpdateAndDelete(DbTestCase):

    def test_update_fields(self) -> None:
        node = self.node("n1")
        updated = self.db.update_node("n1", {
            "name": "n2", "maintenance": True, "maintenance_reason": "x",
            "driver_info": {"fake_fail": True}})
        self.assertEqual(node.uuid, updated.uuid)
        self.assertEqual("n2", updated.name)
        self.assertTrue(updated.maintenance)
        self.assertEqual({"fake_fail": True}, updated.driver_info)
        self.assertIsNotNone(updated.updated_at)
        self.assertIsNone(updated.power_state_updated_at)
        self.assertEqual(updated, self.db.get_node(node.uuid))

    def test_update_power_state_stamps_time(self) -> None:
        self.node("n1")
        updated = self.db.update_node("n1", {"power_state": states.POWER_ON})
        self.assertEqual(states.POWER_ON, updated.power_state)
        self.assertEqual(updated.updated_at, updated.power_state_updated_at)

    def test_update_unknown_field_refused(self) -> None:
        self.node("n1")
        for field in ("reservation", "uuid", "bogus"):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    self.db.update_node, "n1", {field: "x"})
            self.assertIn(field, str(exc))
        self.assertIsNone(self.db.get_node("n1").reservation)

    def test_update_not_found(self) -> None:
        self.assertRaises(exceptions.NodeNotFound,
                          self.db.update_node, "nope", {"name": "x"})

    def test_update_duplicate_name(self) -> None:
        self.node("a")
        self.node("b")
        exc = self.assertRaises(exceptions.DuplicateName,
                                self.db.update_node, "b", {"name": "a"})
        self.assertIn("name a ", str(exc))
        self.assertEqual("b", self.db.get_node("b").name)

    def test_update_reserved_by_other_holder(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "host-a:0")
        for holder in (None, "host-b:1"):
            exc = self.assertRaises(exceptions.NodeLocked,
                                    self.db.update_node, "n1",
                                    {"last_error": "x"}, holder=holder)
            self.assertIn("host-a:0", str(exc))
        self.assertIsNone(self.db.get_node("n1").last_error)

    def test_update_reserved_by_same_holder(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "host-a:0")
        updated = self.db.update_node(node.uuid, {"last_error": "boom"},
                                      holder="host-a:0")
        self.assertEqual("boom", updated.last_error)
        self.assertEqual("host-a:0", updated.reservation)

    def test_delete(self) -> None:
        node = self.node("n1")
        self.db.delete_node("n1")
        self.assertRaises(exceptions.NodeNotFound,
                          self.db.get_node, node.uuid)
        self.assertRaises(exceptions.NodeNotFound,
                          self.db.delete_node, "n1")

    def test_delete_locked_refused(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "host-a:0")
        exc = self.assertRaises(exceptions.NodeLocked,
                                self.db.delete_node, "n1")
        self.assertIn("host-a:0", str(exc))
        self.assertEqual(node.uuid, self.db.get_node("n1").uuid)


class TestRequestPowerState(DbTestCase):

    def test_request_records_target_and_clears_error(self) -> None:
        node = self.node("n1")
        self.set_columns(node.uuid, last_error="old failure")
        updated = self.db.request_power_state("n1", states.POWER_ON)
        self.assertEqual(states.POWER_ON, updated.target_power_state)
        self.assertIsNone(updated.last_error)
        self.assertIsNone(updated.reservation)

    def test_request_refused_when_pending(self) -> None:
        self.node("n1")
        self.db.request_power_state("n1", states.POWER_ON)
        exc = self.assertRaises(exceptions.NodeLocked,
                                self.db.request_power_state, "n1",
                                states.POWER_OFF)
        self.assertIn("a pending 'power on' action", str(exc))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node("n1").target_power_state)

    def test_request_refused_when_reserved(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "host-a:3")
        exc = self.assertRaises(exceptions.NodeLocked,
                                self.db.request_power_state, "n1",
                                states.REBOOT)
        self.assertIn("locked by host-a:3", str(exc))
        self.assertIsNone(self.db.get_node("n1").target_power_state)

    def test_request_not_found(self) -> None:
        self.assertRaises(exceptions.NodeNotFound,
                          self.db.request_power_state, "nope",
                          states.POWER_ON)


class TestReservations(DbTestCase):

    def test_reserve_and_release(self) -> None:
        node = self.node("n1")
        reserved = self.db.reserve_node(node.uuid, "h:0")
        self.assertEqual("h:0", reserved.reservation)
        exc = self.assertRaises(exceptions.NodeLocked,
                                self.db.reserve_node, node.uuid, "h:1")
        self.assertIn("h:0", str(exc))
        self.assertTrue(self.db.release_node(node.uuid, "h:0"))
        self.assertIsNone(self.db.get_node(node.uuid).reservation)

    def test_release_by_non_holder(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "h:0")
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.assertFalse(self.db.release_node(node.uuid, "h:1"))
        self.assertEqual("h:0", self.db.get_node(node.uuid).reservation)
        self.assertIn("was not reserved by h:1", logger.output)

    def test_reserve_not_found(self) -> None:
        self.assertRaises(exceptions.NodeNotFound, self.db.reserve_node,
                          uuidutils.generate_uuid(), "h:0")

    def _reserve_three(self) -> list[db_api.NodeRecord]:
        nodes = [self.node("n%d" % i) for i in range(4)]
        for node, holder in zip(nodes, ("h:0", "h:1", "g:0")):
            self.db.reserve_node(node.uuid, holder)
        return nodes

    def reservations(self) -> list[str | None]:
        return [node.reservation for node in self.db.list_nodes()]

    def test_release_reservations_all(self) -> None:
        self._reserve_three()
        self.assertEqual(3, self.db.release_reservations())
        self.assertEqual([None] * 4, self.reservations())

    def test_release_reservations_of_holders(self) -> None:
        self._reserve_three()
        self.assertEqual(2, self.db.release_reservations(
            holders=["h:0", "g:0"]))
        self.assertEqual([None, "h:1", None, None], self.reservations())
        self.assertEqual(0, self.db.release_reservations(holders=[]))

    def test_release_reservations_keep(self) -> None:
        self._reserve_three()
        self.assertEqual(2, self.db.release_reservations(keep=["h:1"]))
        self.assertEqual([None, "h:1", None, None], self.reservations())

    def test_release_reservations_among_uuids(self) -> None:
        nodes = self._reserve_three()
        self.assertEqual(1, self.db.release_reservations(
            holders=["h:0", "h:1"], uuids=[nodes[1].uuid, nodes[2].uuid]))
        self.assertEqual(["h:0", None, "g:0", None], self.reservations())

    def test_release_reservations_exclude(self) -> None:
        nodes = self._reserve_three()
        self.assertEqual(1, self.db.release_reservations(
            holders=["h:0", "h:1"], exclude=[nodes[1].uuid]))
        self.assertEqual([None, "h:1", "g:0", None], self.reservations())
        self.assertEqual(1, self.db.release_reservations(
            holders=["h:1"], exclude=[]))

    def test_reservations(self) -> None:
        nodes = self._reserve_three()
        self.assertEqual({nodes[0].uuid: "h:0", nodes[1].uuid: "h:1",
                          nodes[2].uuid: "g:0"}, self.db.reservations())

    def test_release_keeps_the_claim(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_ON,
                                    holder="h:0", claim="c1")
        self.assertEqual(1, self.db.release_reservations(holders=["h:0"]))
        stored = self.db.get_node(node.uuid)
        self.assertEqual((None, states.POWER_ON, "c1"),
                         (stored.reservation, stored.target_power_state,
                          stored.power_action_claim))


class TestClaims(DbTestCase):

    def claim(self, uuid: str) -> str | None:
        return self.db.get_node(uuid).power_action_claim

    def test_reserve_claims_a_pending_action(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_ON)
        reserved = self.db.reserve_node(node.uuid, "h:0", claim="c1")
        self.assertEqual(("h:0", "c1"), (reserved.reservation,
                                         reserved.power_action_claim))

    def test_reserve_keeps_an_older_claim(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_ON,
                                    holder="h:0", claim="c1")
        self.db.release_node(node.uuid, "h:0")
        reserved = self.db.reserve_node(node.uuid, "h:1", claim="c2")
        self.assertEqual(("h:1", "c1"), (reserved.reservation,
                                         reserved.power_action_claim))

    def test_reserve_claims_nothing_without_an_action(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "h:0", claim="c1")
        self.assertIsNone(self.claim(node.uuid))

    def test_reserve_without_claim_leaves_it(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_ON)
        self.db.reserve_node(node.uuid, "h:0")
        self.assertIsNone(self.claim(node.uuid))

    def test_request_without_holder_claims_nothing(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_ON,
                                    claim="ignored")
        self.assertIsNone(self.claim(node.uuid))


class TestPowerSync(DbTestCase):

    def test_node_uuids_filters(self) -> None:
        a = self.node("a")
        b = self.node("b", maintenance=True)
        c = self.node("c", driver="ipmi")
        self.db.reserve_node(c.uuid, "h:0")
        self.db.request_power_state("a", states.POWER_ON)
        self.assertCountEqual([a.uuid, b.uuid, c.uuid], self.db.node_uuids())
        self.assertEqual([b.uuid], self.db.node_uuids(maintenance=True))
        self.assertEqual([c.uuid], self.db.node_uuids(reserved=True))
        self.assertCountEqual([a.uuid, b.uuid],
                              self.db.node_uuids(reserved=False))
        self.assertEqual([a.uuid], self.db.node_uuids(with_target=True))
        self.assertCountEqual([b.uuid, c.uuid],
                              self.db.node_uuids(with_target=False))
        self.assertEqual([c.uuid], self.db.node_uuids(drivers=["ipmi"]))

    def test_sync_rows_filters(self) -> None:
        a = self.node("a", driver_info={"fake_latency_ms": 1})
        self.node("b", maintenance=True)
        c = self.node("c")
        self.db.reserve_node(c.uuid, "h:0")
        self.node("d", driver="ipmi")
        e = self.node("e", maintenance=True)
        self.set_columns(e.uuid, fault="power failure",
                         power_sync_failures=4, power_state="error")

        rows = self.db.sync_rows(drivers=["fake"])
        self.assertEqual([db_api.SyncRow(a.uuid, "a", "fake",
                                         {"fake_latency_ms": 1}, None, 0,
                                         partition=a.partition)],
                         rows)
        self.assertCountEqual(
            ["a", "d"],
            [row.name for row in self.db.sync_rows(drivers=["fake",
                                                            "ipmi"])])
        self.assertCountEqual(
            ["b", "e"], [row.name for row in self.db.sync_rows(
                drivers=["fake"], maintenance=True)])
        recovery = self.db.sync_rows(drivers=["fake"], maintenance=True,
                                     fault="power failure")
        self.assertEqual([db_api.SyncRow(e.uuid, "e", "fake", {}, "error",
                                         4, partition=e.partition)],
                         [dataclasses.replace(row, version=0)
                          for row in recovery])
        self.assertEqual([], self.db.sync_rows(drivers=[]))

    def test_restamped_is_replace_of_the_stamp_and_failures(self) -> None:
        row = db_api.SyncRow("u", "n", "fake", {"k": 1}, "power on", 2,
                             version=7, partition=9,
                             power_checked_at=datetime.datetime(2026, 1, 1),
                             maintenance=True, reserved=True, requested=True,
                             created_at=datetime.datetime(2025, 1, 1))
        checked = datetime.datetime(2026, 1, 2, 3, 4, 5, 6)
        self.assertEqual(
            dataclasses.replace(row, power_checked_at=checked),
            db_api.restamped(row, checked))
        self.assertEqual(
            dataclasses.replace(row, power_checked_at=None,
                                power_sync_failures=0),
            db_api.restamped(row, None, 0))
        # A copy: the row read stays as it was.
        self.assertEqual(datetime.datetime(2026, 1, 1), row.power_checked_at)
        # It copies the fields as they are: nothing in SyncRow may expect
        # __init__ to run on a copy.
        self.assertFalse(hasattr(db_api.SyncRow, "__post_init__"))
        self.assertTrue(all(field.init for field in
                            dataclasses.fields(db_api.SyncRow)))

    def test_partition_filters_are_one_statement_and_reused(self) -> None:
        nodes = [self.node("p%02d" % i) for i in range(40)]
        by_partition: dict[int, set[str]] = {}
        for node in nodes:
            by_partition.setdefault(node.partition, set()).add(node.uuid)
        some = sorted(by_partition)[:7]
        want = set().union(*(by_partition[p] for p in some))
        statements: list[str] = []

        def count(conn, cursor, statement, *args) -> None:
            # NOTE: not the pings of connection checkout.
            if "nodes" in statement:
                statements.append(statement)

        sa.event.listen(self.db.engine, "before_cursor_execute", count)
        self.addCleanup(sa.event.remove, self.db.engine,
                        "before_cursor_execute", count)
        # Every partition there is: still one statement, no parameter per
        # partition.
        every = list(range(models.PARTITIONS))
        self.assertEqual(len(nodes), len(self.db.node_uuids(
            partitions=every)))
        self.assertEqual(1, len(statements))
        self.assertEqual(want, set(self.db.node_uuids(
            partitions=reversed(some))))
        self.assertEqual(want, {row.uuid for row in self.db.sync_rows(
            drivers=["fake"], partitions=some + some[:2])})
        self.assertEqual(want, {node.uuid for node in self.db.list_nodes(
            partitions=some)})
        # The same set of partitions (in any order) reuses its clause.
        self.assertIs(self.db._in_partitions(some),
                      self.db._in_partitions(reversed(some)))
        self.assertEqual([], self.db.node_uuids(partitions=[]))
        self.assertEqual(4, len(statements))
        self.assertRaises(ValueError, self.db.node_uuids,
                          partitions=["1) OR (1=1"])

    def test_stamps_of_several_runs_across_batches(self) -> None:
        self.useFixture(fixtures.MockPatchObject(db_api, "IN_BATCH", 10))
        uuids = [self.node("n%02d" % i).uuid for i in range(30)]
        t1 = datetime.datetime(2030, 1, 1, 12, 0, 0)
        t2 = t1 + datetime.timedelta(seconds=1)
        t3 = t2 + datetime.timedelta(seconds=1)
        updates: list[str] = []

        def capture(conn: Any, cursor: Any, statement: str,
                    *args: Any) -> None:
            if statement.startswith("UPDATE nodes"):
                updates.append(statement)

        sa.event.listen(self.db.engine, "before_cursor_execute", capture)
        self.addCleanup(sa.event.remove, self.db.engine,
                        "before_cursor_execute", capture)
        # Every node in the two older runs, a third of them in a newer
        # one: each gets its latest time, whatever the batch it falls in.
        self.db.apply_sync_results([], stamps=[(t2, uuids), (t1, uuids),
                                               (t3, uuids[10:20])])
        self.assertEqual(
            {uuid: t3 if uuid in uuids[10:20] else t2 for uuid in uuids},
            {node.uuid: node.power_checked_at
             for node in self.db.list_nodes()})
        # Two times: half a batch per statement (SQLite's parameter
        # limit), each node once.
        self.assertEqual(6, len(updates))

    def test_changed_sync_rows_is_the_feed_of_writes_and_deletes(
            self) -> None:
        a = self.node("a")
        b = self.node("b")
        c = self.node("c")
        every = list(range(models.PARTITIONS))
        rows, start = self.db.changed_sync_rows(
            partitions=every, since=datetime.datetime(2000, 1, 1))
        self.assertEqual({"a", "b", "c"}, {row.name for row in rows})
        # The database's clock, in UTC, whatever the hosts' clocks say.
        self.assertLess(abs((start - timeutils.utcnow()).total_seconds()),
                        5)
        with fixtures.MockPatchObject(
                timeutils, "utcnow", return_value=datetime.datetime(2001, 1,
                                                                    1)):
            # A poll's stamp is not a change.
            self.db.apply_sync_results([], stamps=[(
                timeutils.utcnow(), [a.uuid, b.uuid, c.uuid])])
            self.assertEqual([], self.db.changed_sync_rows(
                partitions=every, since=start)[0])
            self.db.update_node("a", {"maintenance": True})
            self.db.reserve_node(b.uuid, "h:0")
            self.db.delete_node("c")
        found, now = self.db.changed_sync_rows(partitions=every, since=start)
        self.assertGreaterEqual(now, start)
        by_name = {row.name or row.uuid: row for row in found}
        self.assertEqual({"a", "b", c.uuid}, set(by_name))
        self.assertEqual((True, False), (by_name["a"].maintenance,
                                         by_name["a"].reserved))
        self.assertEqual(datetime.datetime(2001, 1, 1),
                         by_name["a"].power_checked_at)
        self.assertEqual((False, True), (by_name["b"].maintenance,
                                         by_name["b"].reserved))
        self.assertEqual([False, False], [by_name[n].requested
                                          for n in ("a", "b")])
        d = self.node("d")
        self.db.request_power_state("d", states.POWER_ON)
        [requested] = [row for row in self.db.changed_sync_rows(
            partitions=[d.partition], since=start)[0] if row.name == "d"]
        self.assertTrue(requested.requested)
        self.assertEqual((True, c.partition),
                         (by_name[c.uuid].maintenance,
                          by_name[c.uuid].partition))
        # Only the partitions asked for.
        only, _ = self.db.changed_sync_rows(partitions=[a.partition],
                                            since=start)
        self.assertIn("a", [row.name for row in only])
        self.assertEqual({a.partition}, {row.partition for row in only})
        self.assertEqual([], self.db.changed_sync_rows(
            partitions=[], since=start)[0])
        self.assertEqual([], self.db.changed_sync_rows(
            partitions=every, since=now + datetime.timedelta(seconds=1))[0])

    def test_partition_rows_are_every_row_with_its_state(self) -> None:
        a = self.node("a")
        b = self.node("b")
        self.node("c")
        self.db.update_node("a", {"maintenance": True})
        self.db.reserve_node(b.uuid, "h:0")
        self.db.request_power_state("c", states.POWER_ON)
        every = list(range(models.PARTITIONS))
        by_name = {row.name: row
                   for row in self.db.partition_rows(partitions=every)}
        self.assertEqual(
            {"a": (True, False, False, a.created_at),
             "b": (False, True, False, b.created_at),
             "c": (False, False, True, self.db.get_node("c").created_at)},
            {name: (row.maintenance, row.reserved, row.requested,
                    row.created_at) for name, row in by_name.items()})
        self.assertEqual(["a"], [row.name for row in self.db.partition_rows(
            partitions=[a.partition]) if row.name == "a"])
        self.assertEqual({a.partition}, {row.partition for row in
                                         self.db.partition_rows(
                                             partitions=[a.partition])})
        self.assertEqual([], self.db.partition_rows(partitions=[]))

    def test_rows_kept_in_memory_share_their_repeated_strings(self) -> None:
        # A worker keeps its nodes' rows: one copy of the driver, the
        # power state and driver_info's keys for all of them, not one a
        # row (the database driver decodes a new string each time).
        for name in ("a", "b"):
            self.node(name, driver_info={"fake_power_state": "power on",
                                         "fake_latency_ms": 5})
            self.db.update_node(name, {"power_state": states.POWER_ON})
        every = list(range(models.PARTITIONS))
        for read in (lambda: self.db.partition_rows(partitions=every),
                     lambda: self.db.changed_sync_rows(
                         partitions=every,
                         since=datetime.datetime(2000, 1, 1))[0]):
            a, b = sorted(read(), key=lambda row: str(row.name))
            self.assertIs(a.driver, b.driver)
            self.assertIs(a.power_state, b.power_state)
            for key_a, key_b in zip(sorted(a.driver_info),
                                    sorted(b.driver_info)):
                self.assertIs(key_a, key_b)
            self.assertEqual({"fake_power_state": "power on",
                              "fake_latency_ms": 5}, a.driver_info)

    def test_a_stamp_tells_which_nodes_are_gone(self) -> None:
        a = self.node("a")
        b = self.node("b")
        self.db.delete_node("b")
        missing: set[str] = set()
        self.db.apply_sync_results(
            [], stamps=[(timeutils.utcnow(), [a.uuid, b.uuid])],
            missing=missing)
        self.assertEqual({b.uuid}, missing)
        self.assertIsNotNone(self.db.get_node("a").power_checked_at)

    def test_deletions_are_kept_a_day(self) -> None:
        self.node("a")
        self.node("b")
        start = timeutils.utcnow()
        self.db.delete_node("a")
        with fixtures.MockPatchObject(
                timeutils, "utcnow",
                return_value=start + db_api.DELETIONS_KEPT
                + datetime.timedelta(seconds=1)):
            self.db.delete_node("b")
        with self.db.engine.connect() as conn:
            kept = conn.execute(sa.select(models.node_deletions.c.uuid)
                                ).scalars().all()
        self.assertEqual(1, len(kept))

    def test_owned_node_counts(self) -> None:
        # Three uuids in three partitions.
        uuids: dict[int, str] = {}
        while len(uuids) < 3:
            candidate = str(uuid_lib.uuid4())
            uuids.setdefault(models.partition_of(candidate), candidate)
        a, b, c = (self.node(name, uuid=uuid)
                   for name, uuid in zip("abc", uuids.values()))
        self.assertEqual(list(uuids), [a.partition, b.partition,
                                       c.partition])
        old = datetime.datetime(2020, 1, 1)
        recent = datetime.datetime(2030, 1, 1)
        self.set_columns(a.uuid, power_checked_at=old)
        self.set_columns(b.uuid, power_checked_at=recent)
        self.set_columns(c.uuid, maintenance=True, power_checked_at=old)
        every = list(range(models.PARTITIONS))
        cutoff = datetime.datetime(2025, 1, 1)
        # a is overdue; c, in maintenance, is neither overdue nor oldest.
        self.assertEqual((3, 1, old, 1), self.db.owned_node_counts(
            every, overdue_before=cutoff))
        self.assertEqual((1, 0, recent, 0), self.db.owned_node_counts(
            [b.partition], overdue_before=cutoff))
        self.assertEqual((0, 0, None, 0), self.db.owned_node_counts(
            [], overdue_before=cutoff))

    def test_apply_sync_results_mixed_shapes(self) -> None:
        a, b, c = self.node("a"), self.node("b"), self.node("c")
        self.set_columns(c.uuid, last_error="keep me")
        count = self.db.apply_sync_results([
            {"uuid": a.uuid, "power_state": states.POWER_ON},
            {"uuid": b.uuid, "power_sync_failures": 2,
             "last_error": "timeout"},
            {"uuid": c.uuid, "power_state": states.POWER_OFF},
        ])
        self.assertEqual(3, count)
        a, b, c = (self.db.get_node(n) for n in "abc")
        self.assertEqual(states.POWER_ON, a.power_state)
        self.assertIsNotNone(a.power_state_updated_at)
        self.assertIsNone(a.last_error)
        self.assertEqual(0, a.power_sync_failures)
        self.assertIsNone(b.power_state)
        self.assertIsNone(b.power_state_updated_at)
        self.assertEqual(2, b.power_sync_failures)
        self.assertEqual("timeout", b.last_error)
        self.assertEqual(states.POWER_OFF, c.power_state)
        # Only the fields given change: c's last_error is untouched.
        self.assertEqual("keep me", c.last_error)

    def test_apply_sync_results_skips_reserved(self) -> None:
        a, b = self.node("a"), self.node("b")
        self.db.reserve_node(b.uuid, "h:0")
        count = self.db.apply_sync_results([
            {"uuid": a.uuid, "power_state": states.POWER_ON},
            {"uuid": b.uuid, "power_state": states.POWER_ON},
        ])
        self.assertEqual(1, count)
        self.assertEqual(states.POWER_ON, self.db.get_node("a").power_state)
        b = self.db.get_node("b")
        self.assertIsNone(b.power_state)
        self.assertIsNone(b.updated_at)

    def test_apply_sync_results_maintenance(self) -> None:
        a = self.node("a")
        self.db.apply_sync_results([{
            "uuid": a.uuid, "maintenance": True, "fault": "power failure",
            "maintenance_reason": "BMC unreachable",
            "power_sync_failures": 4}])
        a = self.db.get_node("a")
        self.assertTrue(a.maintenance)
        self.assertEqual("power failure", a.fault)
        self.assertEqual(4, a.power_sync_failures)

    def test_apply_sync_results_empty_and_unknown(self) -> None:
        self.assertEqual(0, self.db.apply_sync_results([]))
        a = self.node("a")
        self.assertRaises(ValueError, self.db.apply_sync_results,
                          [{"uuid": a.uuid, "reservation": "h:0"}])
        self.assertIsNone(self.db.get_node("a").reservation)


class TestConductors(DbTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.now = datetime.datetime(2030, 1, 1, 12, 0, 0)
        self.useFixture(fixtures.MockPatchObject(
            timeutils, "utcnow", autospec=True,
            side_effect=lambda *a, **kw: self.now))

    def test_register_inserts_then_updates(self) -> None:
        start = self.now
        self.db.register_conductor("h", 0, ["fake"], pid=100)
        self.db.set_offline("h", 0)
        later = start + datetime.timedelta(minutes=5)
        self.now = later
        self.db.register_conductor("h", 0, ["fake", "ipmi"], pid=200)
        [record] = self.db.list_conductors()
        self.assertEqual(db_api.ConductorRecord(
            host="h", worker_id=0, pid=200, drivers=["fake", "ipmi"],
            online=True, started_at=later, heartbeat_at=later,
            moves_counter=True), record)
        self.assertEqual("h:0", record.holder)

    def test_register_tries_a_deadlock_victim_again(self) -> None:
        real = db_api._update_conductor
        calls: list[int] = []

        def first_deadlocks(*args: Any, **kwargs: Any) -> int:
            calls.append(1)
            if len(calls) == 1:
                raise db_exc.DBDeadlock()
            return real(*args, **kwargs)

        self.useFixture(fixtures.MockPatchObject(
            db_api, "_update_conductor", side_effect=first_deadlocks))
        self.db.register_conductor("h", 0, ["fake"], pid=100)
        [record] = self.db.list_conductors()
        self.assertEqual(("h:0", 100, True),
                         (record.holder, record.pid, record.online))
        self.assertEqual(2, len(calls))

    def test_register_without_pid(self) -> None:
        self.db.register_conductor("h", 1, [])
        [record] = self.db.list_conductors()
        self.assertIsNone(record.pid)
        self.assertEqual([], record.drivers)

    def test_list_conductors_ordered(self) -> None:
        for host, worker in (("b", 0), ("a", 1), ("a", 0)):
            self.db.register_conductor(host, worker, ["fake"])
        self.assertEqual(["a:0", "a:1", "b:0"],
                         [r.holder for r in self.db.list_conductors()])

    def test_heartbeat_refreshes(self) -> None:
        start = self.now
        self.db.register_conductor("h", 0, ["fake"], pid=7)
        self.db.set_offline("h", 0)
        later = start + datetime.timedelta(seconds=10)
        self.now = later
        self.db.heartbeat("h", 0)
        [record] = self.db.list_conductors()
        self.assertEqual(later, record.heartbeat_at)
        self.assertEqual(start, record.started_at)
        self.assertTrue(record.online)
        self.assertEqual(7, record.pid)
        self.assertEqual(["fake"], record.drivers)

    def test_heartbeat_reregisters_missing_row(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.db.heartbeat("h", 3)
        [record] = self.db.list_conductors()
        self.assertEqual(("h", 3, True), (record.host, record.worker_id,
                                          record.online))
        self.assertIn("registering it again", logger.output)
        self.assertEqual([], record.drivers)
        self.assertIsNone(record.pid)

    def test_heartbeat_reregisters_with_drivers_and_pid(self) -> None:
        self.db.register_conductor("h", 3, ["fake"], pid=9)
        self.db.delete_conductors("h", [3])
        self.db.heartbeat("h", 3, drivers=["fake", "ipmi"], pid=9)
        [record] = self.db.list_conductors()
        self.assertEqual((["fake", "ipmi"], 9, True),
                         (record.drivers, record.pid, record.online))
        # While the row exists the heartbeat only refreshes it.
        self.assertTrue(self.db.heartbeat("h", 3, drivers=["other"], pid=9))
        [record] = self.db.list_conductors()
        self.assertEqual((["fake", "ipmi"], 9), (record.drivers, record.pid))

    def test_a_beat_of_the_previous_process_is_not_written(self) -> None:
        # Process 7 of worker h:0 sent a beat that landed after its
        # successor, process 8, registered.
        start = self.now
        self.db.register_conductor("h", 0, ["fake"], pid=7)
        self.now = start + datetime.timedelta(seconds=10)
        self.db.register_conductor("h", 0, ["fake"], pid=8)
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.assertFalse(self.db.heartbeat(
            "h", 0, pid=7, status={"old": True},
            at=start + datetime.timedelta(seconds=5)))
        [record] = self.db.list_conductors()
        self.assertEqual((8, self.now, True, None),
                         (record.pid, record.heartbeat_at, record.online,
                          record.status))
        self.assertNotIn("registering it again", logger.output)
        self.assertIn("Heartbeat of h worker 0 from process 7 not written: "
                      "the row is process 8's", logger.output)
        at = start + datetime.timedelta(seconds=15)
        self.assertTrue(self.db.heartbeat("h", 0, pid=8, at=at))
        self.assertEqual(at, self.db.list_conductors()[0].heartbeat_at)

    def test_a_row_without_a_pid_takes_any_process_beat(self) -> None:
        # A row registered without a process id (by a tool, or an earlier
        # release) is not held against a beat that names one.
        self.db.register_conductor("h", 0, ["fake"])
        self.assertTrue(self.db.heartbeat("h", 0, pid=7))
        self.assertIsNone(self.db.list_conductors()[0].pid)

    def test_a_beat_begun_before_the_stop_is_not_written(self) -> None:
        # A beat slow to land (begun at 12:00:01.2) after the stop marked
        # the worker offline (12:00:01.5) would show it online again.
        start = self.now
        self.db.register_conductor("h", 0, ["fake"], pid=7)
        begun = start + datetime.timedelta(seconds=1.2)
        self.now = start + datetime.timedelta(seconds=1.5)
        self.db.set_offline("h", 0)
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.assertFalse(self.db.heartbeat("h", 0, at=begun, pid=7))
        [record] = self.db.list_conductors()
        self.assertEqual((False, start, 7),
                         (record.online, record.heartbeat_at, record.pid))
        self.assertNotIn("registering it again", logger.output)

    def test_a_beat_begun_after_the_mark_is_written(self) -> None:
        # The mark is the next whole second (12:00:02 here).
        start = self.now
        self.db.register_conductor("h", 0, ["fake"])
        self.now = start + datetime.timedelta(seconds=1.5)
        self.db.set_offline("h", 0)
        self.assertFalse(self.db.heartbeat(
            "h", 0, at=start + datetime.timedelta(seconds=1.9)))
        at = start + datetime.timedelta(seconds=2)
        self.assertTrue(self.db.heartbeat("h", 0, at=at))
        [record] = self.db.list_conductors()
        self.assertEqual((True, at), (record.online, record.heartbeat_at))

    def test_registering_clears_the_stop_mark(self) -> None:
        start = self.now
        self.db.register_conductor("h", 0, ["fake"])
        self.now = start + datetime.timedelta(seconds=30)
        self.db.set_offline("h", 0)
        self.db.register_conductor("h", 0, ["fake"])
        # Even a beat dated before the old mark (the clock went back).
        self.assertTrue(self.db.heartbeat(
            "h", 0, at=start + datetime.timedelta(seconds=10)))
        self.assertTrue(self.db.list_conductors()[0].online)

    def test_a_degraded_beat_does_not_hold_back_the_next(self) -> None:
        start = self.now
        self.db.register_conductor("h", 0, ["fake"])
        self.assertTrue(self.db.heartbeat(
            "h", 0, online=False, at=start + datetime.timedelta(seconds=5)))
        self.assertFalse(self.db.list_conductors()[0].online)
        self.assertTrue(self.db.heartbeat(
            "h", 0, at=start + datetime.timedelta(seconds=6)))
        self.assertTrue(self.db.list_conductors()[0].online)

    def test_stop_mark_is_the_next_whole_second(self) -> None:
        whole = datetime.datetime(2030, 1, 1, 12, 0, 5)
        self.assertEqual(whole, db_api.stop_mark(whole))
        self.assertEqual(
            whole + datetime.timedelta(seconds=1),
            db_api.stop_mark(whole + datetime.timedelta(microseconds=1)))

    def test_membership_counter_moves_with_membership_only(self) -> None:
        version = self.db.membership_version()
        assert version is not None

        def moved() -> bool:
            nonlocal version
            now = self.db.membership_version()
            assert now is not None
            changed, version = now != version, now
            return changed

        self.db.register_conductor("h", 0, ["fake"])
        self.assertTrue(moved())
        self.db.heartbeat("h", 0, status={"n": 1})
        self.assertFalse(moved())
        self.db.heartbeat("h", 0, online=False)       # degraded
        self.assertTrue(moved())
        self.db.heartbeat("h", 0, online=False)
        self.assertFalse(moved())
        self.db.heartbeat("h", 0)                     # healthy again
        self.assertTrue(moved())
        self.db.set_draining("h")
        self.assertTrue(moved())
        self.db.clear_draining("h")
        self.assertTrue(moved())
        self.assertEqual(0, self.db.clear_draining("h"))
        self.assertFalse(moved())
        self.assertEqual(0, self.db.set_expired_offline(
            self.now - datetime.timedelta(seconds=60)))
        self.assertFalse(moved())
        self.now += datetime.timedelta(seconds=120)
        self.assertEqual(1, self.db.set_expired_offline(
            self.now - datetime.timedelta(seconds=60)))
        self.assertTrue(moved())
        self.db.heartbeat("h", 0)                     # back online
        self.assertTrue(moved())
        self.db.set_offline("h", 0)
        self.assertTrue(moved())
        self.now += datetime.timedelta(seconds=120)
        self.assertEqual(1, self.db.delete_gone_host(
            "h", self.now - datetime.timedelta(seconds=60)))
        self.assertTrue(moved())
        self.db.register_conductor("h", 1, ["fake"])
        self.assertTrue(moved())
        self.assertEqual(1, self.db.delete_conductors("h", [1]))
        self.assertTrue(moved())
        self.assertEqual(0, self.db.delete_conductors("h", [1]))
        self.assertFalse(moved())

    def test_set_offline_one_or_all(self) -> None:
        for host, worker in (("h", 0), ("h", 1), ("g", 0)):
            self.db.register_conductor(host, worker, ["fake"])
        self.db.set_offline("h", 1)
        self.assertEqual({"g:0": True, "h:0": True, "h:1": False},
                         {r.holder: r.online
                          for r in self.db.list_conductors()})
        self.db.set_offline("h")
        self.assertEqual({"g:0": True, "h:0": False, "h:1": False},
                         {r.holder: r.online
                          for r in self.db.list_conductors()})

    def test_delete_conductors(self) -> None:
        for host, worker in (("h", 0), ("h", 1), ("h", 2), ("g", 1)):
            self.db.register_conductor(host, worker, ["fake"])
        self.assertEqual(2, self.db.delete_conductors("h", [1, 2, 5]))
        self.assertEqual(["g:1", "h:0"],
                         [r.holder for r in self.db.list_conductors()])
        self.assertEqual(0, self.db.delete_conductors("h", []))

    def test_counts(self) -> None:
        self.assertEqual({}, self.db.power_state_counts())
        self.assertEqual(0, self.db.maintenance_count())
        a, b = self.node("a"), self.node("b", maintenance=True)
        self.node("c")
        self.db.apply_sync_results([
            {"uuid": a.uuid, "power_state": states.POWER_ON},
            {"uuid": b.uuid, "power_state": states.POWER_ON}])
        self.assertEqual({"power on": 2, "none": 1},
                         self.db.power_state_counts())
        self.assertEqual(1, self.db.maintenance_count())


def _isolation_level(conn: sa.Connection) -> Any:
    """The pysqlite connection's own ``isolation_level`` (None: off)."""
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    return getattr(dbapi_connection, "isolation_level")


class TestCreateEngine(base.TestCase):

    def test_malformed_url(self) -> None:
        exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                db_engine.create_engine, "not a url")
        self.assertIn("<malformed URL>", str(exc))

    def test_unknown_dialect(self) -> None:
        exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                db_engine.create_engine,
                                "nosuchdb://u:hunter2@host/db")
        self.assertIn("nosuchdb", str(exc))
        self.assertNotIn("hunter2", str(exc))

    def test_unreachable_mysql_masks_password(self) -> None:
        exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                db_engine.create_engine, UNREACHABLE_MYSQL)
        message = str(exc)
        self.assertNotIn("s3cret", message)
        self.assertIn("root:***@127.0.0.1:1", message)
        self.assertIn("Can't connect", message)
        self.assertEqual(1, len(message.splitlines()))

    def test_mask_url(self) -> None:
        self.assertEqual("mysql+pymysql://root:***@db/conductor",
                         db_engine.mask_url("mysql+pymysql://root:pw@db/"
                                            "conductor"))
        self.assertEqual("sqlite:////tmp/x.db",
                         db_engine.mask_url("sqlite:////tmp/x.db"))
        self.assertEqual("<malformed URL>", db_engine.mask_url("::"))

    def test_sqlite_parent_directories_created(self) -> None:
        path = os.path.join(self.conf.state_path, "a", "b", "c.sqlite")
        engine = db_engine.create_engine("sqlite:///" + path)
        self.addCleanup(engine.dispose)
        self.assertTrue(os.path.isfile(path))
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        self.assertEqual("wal", mode)

    def _mode(self, path: str) -> int:
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_sqlite_file_and_directories_private(self) -> None:
        # NOTE: the file holds every node's BMC password.
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        top = os.path.join(self.conf.state_path, "a")
        path = os.path.join(top, "b", "c.sqlite")
        engine = db_engine.create_engine("sqlite:///" + path)
        self.addCleanup(engine.dispose)
        migration.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(models.nodes.insert().values(
                uuid=uuidutils.generate_uuid(), driver="fake",
                driver_info={"ipmi_password": "pw"},
                created_at=timeutils.utcnow()))
        # NOTE: -wal and -shm exist while a connection is open.
        keep = engine.connect()
        self.addCleanup(keep.close)
        keep.exec_driver_sql("SELECT count(*) FROM nodes").scalar()
        for suffix in ("", "-wal", "-shm"):
            self.assertTrue(os.path.exists(path + suffix), suffix)
            self.assertEqual(0o600, self._mode(path + suffix), suffix)
        for directory in (top, os.path.dirname(path)):
            self.assertEqual(0o700, self._mode(directory), directory)

    def test_sqlite_files_of_an_older_release_tightened(self) -> None:
        path = os.path.join(self.conf.state_path, "old.sqlite")
        engine = db_engine.create_engine("sqlite:///" + path)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        # NOTE: keep -wal and -shm: a connection stays open meanwhile.
        keep = engine.connect()
        self.addCleanup(engine.dispose)
        self.addCleanup(keep.close)
        for suffix in ("", "-wal", "-shm"):
            os.chmod(path + suffix, 0o644)
        again = db_engine.create_engine("sqlite:///" + path)
        self.addCleanup(again.dispose)
        for suffix in ("", "-wal", "-shm"):
            self.assertEqual(0o600, self._mode(path + suffix), suffix)

    def _sqlite_engine(self, sqlite_pool: bool = True,
                       **kwargs: Any) -> sa.Engine:
        """An SQLite engine; ``self.opened`` counts its new connections."""
        path = os.path.join(self.conf.state_path, "pooled.sqlite")
        engine = db_engine.create_engine("sqlite:///" + path,
                                         sqlite_pool=sqlite_pool, **kwargs)
        self.addCleanup(engine.dispose)
        self.opened = 0
        lock = threading.Lock()

        def opened(*args: Any) -> None:
            with lock:
                self.opened += 1
        sa.event.listen(engine, "connect", opened)
        return engine

    def test_sqlite_connection_opened_per_use_by_default(self) -> None:
        engine = self._sqlite_engine(sqlite_pool=False)
        for _ in range(3):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
        self.assertEqual(3, self.opened)

    def test_sqlite_pool_reuses_connections(self) -> None:
        engine = self._sqlite_engine()
        for _ in range(5):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1").scalar()
        self.assertEqual(1, self.opened)

    def test_sqlite_pool_dialect_initialised(self) -> None:
        # NOTE: SQLAlchemy learns the server's version and defaults from
        # the first connection of the pool it built.
        engine = self._sqlite_engine()
        self.assertIsNotNone(engine.dialect.server_version_info)
        migration.upgrade(engine)
        self.assertIn("nodes", sa.inspect(engine).get_table_names())

    def test_sqlite_pool_connections_set_up(self) -> None:
        engine = self._sqlite_engine()
        for _ in range(2):
            # NOTE: after dispose() too: the engine recreates the pool.
            with engine.connect() as conn:
                self.assertEqual(
                    30000, conn.exec_driver_sql("PRAGMA busy_timeout")
                    .scalar())
                self.assertIsNone(_isolation_level(conn))
                # NOTE: SQLAlchemy's own SQL functions (plain SQLite has
                # no REGEXP).
                self.assertEqual(1, conn.exec_driver_sql(
                    "SELECT 'abc' REGEXP 'b'").scalar())
            engine.dispose()
        self.assertEqual(2, self.opened)

    def test_sqlite_pool_no_thread_waits_for_a_connection(self) -> None:
        # NOTE: the pool options of the other databases do not apply: a
        # pool of one, no overflow, would make the others wait.
        engine = self._sqlite_engine(max_pool_size=1, max_overflow=0)
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.commit()
        count = db_engine.SQLITE_KEPT + 3
        together = threading.Barrier(count, timeout=10)
        errors: list[BaseException] = []

        def use() -> None:
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql("SELECT count(*) FROM t").scalar()
                    # NOTE: every thread holds a connection at once.
                    together.wait()
            except BaseException as exc:
                errors.append(exc)
        threads = [threading.Thread(target=use) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual([], errors)
        self.assertEqual(count, self.opened)
        # The connections beyond those kept were closed; the kept ones
        # serve the next uses, from any thread.
        pool = engine.pool
        assert isinstance(pool, sa.pool.QueuePool)
        self.assertEqual(db_engine.SQLITE_KEPT, pool.checkedin())
        for _ in range(3):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        self.assertEqual(count, self.opened)

    def _rolled_back(self, engine: sa.Engine) -> bool:
        """Whether a failed transaction left nothing (DDL included)."""
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE gone (x INTEGER)")
                conn.exec_driver_sql("INSERT INTO gone VALUES (1)")
                raise RuntimeError("fail")
        except RuntimeError:
            pass
        with engine.connect() as conn:
            return not conn.exec_driver_sql(
                "SELECT count(*) FROM sqlite_master WHERE name = 'gone'"
            ).scalar()

    def test_sqlite_pool_transactions_atomic(self) -> None:
        engine = self._sqlite_engine()
        self.assertTrue(self._rolled_back(engine))
        self.assertTrue(self._rolled_back(engine))
        self.assertEqual(1, self.opened)

    def test_sqlite_pool_forgets_a_transaction_mark_left(self) -> None:
        engine = self._sqlite_engine()
        # NOTE: a mark left in a connection's record (its use did not end
        # through the engine's commit or rollback): it must go at
        # check-in, or the next use would send no BEGIN and commit each
        # statement on its own.
        raw = engine.raw_connection()
        raw.info["in_transaction"] = True
        raw.close()
        self.assertTrue(self._rolled_back(engine))
        self.assertEqual(1, self.opened)

    def test_sqlite_pool_autocommit_use_leaves_no_trace(self) -> None:
        engine = self._sqlite_engine()
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("SELECT 1").scalar()
        with engine.connect() as conn:
            self.assertIsNone(_isolation_level(conn))
        self.assertTrue(self._rolled_back(engine))
        self.assertEqual(1, self.opened)

    def test_sqlite_pool_reads_see_other_connections_writes(self) -> None:
        engine = self._sqlite_engine()
        other = db_engine.create_engine(str(engine.url))
        self.addCleanup(other.dispose)
        with other.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        for expected in (0, 1, 2):
            with engine.connect() as conn:
                self.assertEqual(expected, conn.exec_driver_sql(
                    "SELECT count(*) FROM t").scalar())
            with other.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        self.assertEqual(1, self.opened)

    def test_missing_driver_names_the_extra(self) -> None:
        for url, module, extra in (
                ("mysql+pymysql://root:s3cret@127.0.0.1/c", "pymysql",
                 "conductor[mysql]"),
                ("postgresql+psycopg2://u:s3cret@127.0.0.1/c", "psycopg2",
                 "conductor[postgresql]")):
            with mock.patch.dict(sys.modules, {module: None}):
                exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                        db_engine.create_engine, url)
            message = str(exc)
            self.assertIn(module, message)
            self.assertIn("install it with pip install '%s'" % extra,
                          message)
            self.assertNotIn("s3cret", message)
            self.assertEqual(1, len(message.splitlines()))

    def test_url_without_driver_names_the_one_loaded(self) -> None:
        # NOTE: SQLAlchemy 2.1 loads psycopg (3) for postgresql://, 2.0
        # psycopg2: installing the extra alone may not do.
        url = "postgresql://u:s3cret@127.0.0.1/c"
        driver = sa.engine.make_url(url).get_driver_name()
        with mock.patch.dict(sys.modules, {driver: None}):
            exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                    db_engine.create_engine, url)
        message = str(exc)
        self.assertIn("a postgresql:// URL names no driver, and "
                      "SQLAlchemy %s loads %s for it, which could not be "
                      "imported; write postgresql+psycopg2:// and pip "
                      "install 'conductor[postgresql]'"
                      % (sa.__version__, driver), message)
        self.assertNotIn("s3cret", message)
        self.assertEqual(1, len(message.splitlines()))

    def test_missing_driver_of_another_package(self) -> None:
        self.assertEqual(
            "No module named 'MySQLdb': the database driver is not "
            "installed; install it with pip install mysqlclient",
            db_engine.missing_driver(
                "mysql+mysqldb://u:pw@h/c",
                ImportError("No module named 'MySQLdb'", name="MySQLdb")))
        self.assertEqual(
            "No module named 'x': the database driver for oracle:// is "
            "not installed",
            db_engine.missing_driver(
                "oracle://u:pw@h/c", ImportError("No module named 'x'")))
        self.assertEqual(
            "ImportError: a mariadb:// URL names no driver, and SQLAlchemy "
            "%s loads mysqldb for it, which could not be imported; write "
            "mariadb+pymysql:// and pip install 'conductor[mysql]'"
            % sa.__version__,
            db_engine.missing_driver("mariadb://u:pw@h/c", ImportError()))

    def test_sqlite_parent_not_creatable(self) -> None:
        blocker = os.path.join(self.conf.state_path, "file")
        with open(blocker, "w"):
            pass
        url = "sqlite:///" + os.path.join(blocker, "sub", "c.sqlite")
        exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                db_engine.create_engine, url)
        self.assertIn("cannot create directory", str(exc))

    def test_sqlite_memory(self) -> None:
        engine = db_engine.create_engine("sqlite://")
        self.addCleanup(engine.dispose)
        self.assertEqual("sqlite", engine.dialect.name)


class TestSecretsAndLeaks(DbTestCase):

    def test_sql_errors_never_carry_parameters(self) -> None:
        with self.db.engine.connect() as conn:
            conn.execute(sa.text("DROP TABLE nodes"))
            conn.commit()
        exc = self.assertRaises(
            db_exc.DBError, self.db.create_node,
            {"driver": "fake", "name": "n1",
             "driver_info": {"ipmi_password": "s3cretpw"}})
        self.assertNotIn("s3cretpw", str(exc))
        self.assertIn("parameters hidden", str(exc))

    def test_reservation_is_given_back_when_reading_the_node_fails(
            self) -> None:
        node = self.node("n1")
        with mock.patch.object(self.db, "get_node", autospec=True,
                               side_effect=sa.exc.OperationalError(
                                   "SELECT", {}, Exception("gone"))):
            self.assertRaises(sa.exc.OperationalError,
                              self.db.reserve_node, node.uuid, "h:0")
        self.assertIsNone(self.db.get_node(node.uuid).reservation)

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.manager: the RPC endpoint, called directly.

The endpoint runs against a real SQLite file, pool, rings and the fake
driver; only the forwarding client is a mock. Errors leave the endpoint
wrapped in oslo.messaging's ExpectedException (what the RPC server sends
back); :meth:`ManagerTestCase.call` unwraps them.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from unittest import mock

import fixtures
import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import exceptions
from conductor.common import rpc
from conductor.db import api as db_api
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor.executor import pool as pool_mod
from conductor import manager
from conductor import nodes
from conductor import ownership
from conductor import power_actions
from conductor import rpcapi
from conductor import states
from tests import base
from tests import fakes


class ManagerTestCase(base.TestCase):
    """Host ``h`` with worker 0 live; ``other`` may join with ``peer()``."""

    pool_size = 10

    def setUp(self) -> None:
        super().setUp()
        self.use_small_rings()
        self.db = self.make_db()
        self.db.register_conductor("h", 0, ["fake"])
        self.pool: pool_mod.WorkerPool = fakes.start_pool(
            self, self.pool_size, "tm")
        self.rings = ownership.Rings(self.db, "h", 0, heartbeat_timeout=60,
                                     reset_interval=15)
        self.rings.refresh()
        self.drivers = {"fake": fake.FakeDriver()}
        self.actions = power_actions.PowerActions(
            self.db, self.drivers, self.rings, self.pool, timeout=5.0)
        self.forwarder = mock.create_autospec(rpcapi.ConductorAPI,
                                              instance=True)
        self.manager = manager.ConductorManager(
            "h", self.db, self.drivers, self.rings, self.pool, self.actions,
            self.forwarder, heartbeat_timeout=60, action_timeout=5.0)
        self.context = rpc.RequestContext(overwrite=False)

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call an endpoint method; raise what the caller would get."""
        try:
            return getattr(self.manager, method)(self.context, **kwargs)
        except rpc_dispatcher.ExpectedException as exc:
            self.assertIsNone(exc.exc_info[2], "a traceback would be sent")
            error = exc.exc_info[1]
        # NOTE: raised outside the except block, so that __context__ shows
        # what the endpoint attached, not the ExpectedException.
        raise error

    def error(self, cls: type[Exception], method: str,
              **kwargs: Any) -> Exception:
        exc = self.assertRaises(cls, self.call, method, **kwargs)
        self.assertIs(cls, type(exc))
        self.assertIsNone(exc.__cause__)
        self.assertIsNone(exc.__context__)
        return exc

    def node(self, name: str, **values: Any) -> db_api.NodeRecord:
        fields: dict[str, Any] = {"driver": "fake", "name": name,
                                  "driver_info": {}}
        fields.update(values)
        return self.db.create_node(fields)

    def peer(self) -> None:
        """Make host ``other`` live, so that it owns some nodes."""
        self.db.register_conductor("other", 0, ["fake"])
        self.rings.refresh(force=True)

    def node_owned_by(self, host: str) -> db_api.NodeRecord:
        for index in range(200):
            node = self.node("%s-%d" % (host, index))
            if self.rings.owner_host(node.uuid) == host:
                return node
        self.fail("no node owned by %s in 200 tries" % host)


class TestReads(ManagerTestCase):

    def test_get_node_by_name_or_uuid_masked_and_json_safe(self) -> None:
        node = self.node("n1", driver_info={"fake_latency_ms": 1})
        self.db.update_node(node.uuid, {"driver_info": {
            "fake_latency_ms": 1, "ipmi_password": "s3cret"}})
        for ident in ("n1", node.uuid, node.uuid.upper()):
            data = self.call("get_node", node=ident)
            self.assertEqual(node.uuid, data["uuid"])
        self.assertEqual({"fake_latency_ms": 1,
                          "ipmi_password": driver_base.MASK},
                         data["driver_info"])
        self.assertNotIn("s3cret", json.dumps(data))
        self.assertEqual(node.created_at.isoformat(), data["created_at"])
        self.assertEqual(nodes.FIELDS, tuple(data))

    def test_get_node_errors(self) -> None:
        exc = self.error(exceptions.NodeNotFound, "get_node", node="nope")
        self.assertEqual("Node nope could not be found.", str(exc))
        for ident, text in ((5, "got int"), ("", "got 0 characters"),
                            ("x" * 256, "got 256 characters"),
                            (None, "got NoneType")):
            exc = self.error(exceptions.InvalidParameterValue, "get_node",
                             node=ident)
            self.assertIn(text, str(exc))

    def test_unknown_or_missing_arguments(self) -> None:
        self.node("n1")
        exc = self.error(exceptions.InvalidParameterValue, "get_node",
                         node="n1", extra=1)
        self.assertEqual("get_node: got an unexpected keyword argument "
                         "'extra'", str(exc))
        exc = self.error(exceptions.InvalidParameterValue, "get_node")
        self.assertEqual("get_node: missing a required argument: 'node'",
                         str(exc))
        exc = self.error(exceptions.InvalidParameterValue, "set_power_state",
                         node="n1")
        self.assertIn("'target'", str(exc))

    def test_list_nodes_filters_and_limit(self) -> None:
        self.node("a")
        self.node("b", maintenance=True)
        self.node("c")
        self.assertEqual(["a", "b", "c"], [
            n["name"] for n in self.call("list_nodes")])
        self.assertEqual(["b"], [n["name"] for n in self.call(
            "list_nodes", filters={"maintenance": True})])
        self.assertEqual(["a", "c"], [n["name"] for n in self.call(
            "list_nodes", filters={"driver": "fake", "maintenance": False})])
        self.assertEqual(["a", "b"], [n["name"] for n in self.call(
            "list_nodes", limit=2)])
        self.assertEqual([], self.call("list_nodes",
                                       filters={"driver": "ipmi"}))
        self.assertEqual(3, len(self.call(
            "list_nodes", limit=manager.MAX_LIST_LIMIT)))

    def test_list_nodes_bad_arguments(self) -> None:
        for kwargs, text in (
                ({"filters": ["driver"]}, "filters must be a mapping"),
                ({"filters": {"power_state": "x"}}, "Unknown filter"),
                ({"filters": {"maintenance": 1}}, "maintenance must be true"),
                ({"filters": {"driver": 3}}, "driver must be a string"),
                ({"filters": {"driver": "d" * 300}}, "1 to 255"),
                ({"limit": 0}, "got 0"),
                ({"limit": True}, "got True"),
                ({"limit": "5"}, "got str"),
                ({"limit": 2.5}, "got 2.5"),
                # NOTE: beyond the database's integers: an SQL error before.
                ({"limit": 10 ** 30}, "limit must be an integer >= 1 and "
                                      "<= 100000, or null, got 1000000")):
            exc = self.error(exceptions.InvalidParameterValue, "list_nodes",
                             **kwargs)
            self.assertIn(text, str(exc))

    def test_get_status(self) -> None:
        self.node("a", maintenance=True)
        data = self.call("get_status")
        self.assertEqual({"h": {"workers": 1, "alive_workers": 1,
                                "draining": False, "drivers": ["fake"],
                                "nodes_owned": 1, "nodes_overdue": None,
                                "oldest_reading_age": None}},
                         data["hosts"])
        self.assertEqual([("h", 0, True)], [
            (w["host"], w["worker_id"], w["alive"]) for w in data["workers"]])
        self.assertEqual({"total": 1, "maintenance": 1,
                          "by_power_state": {"none": 1}}, data["nodes"])
        json.dumps(data)


class TestChanges(ManagerTestCase):

    def test_create_node(self) -> None:
        data = self.call("create_node", values={
            "driver": "fake", "name": "n1",
            "driver_info": {"fake_latency_ms": 5}})
        self.assertEqual("n1", data["name"])
        self.assertEqual(data["uuid"], self.db.get_node("n1").uuid)

    def test_create_node_rejects_bad_values_and_stores_nothing(self) -> None:
        for values, cls, text in (
                ({"driver": "fake", "bogus": 1},
                 exceptions.InvalidParameterValue, "Unknown node field"),
                ({"driver": "fake", "name": 5},
                 exceptions.InvalidParameterValue, "must be a string"),
                ({"driver": "fake", "name": "n" * 300},
                 exceptions.InvalidParameterValue, "characters long"),
                ({"driver": "fake", "maintenance_reason": "r" * 5000},
                 exceptions.InvalidParameterValue, "the limit is 4096"),
                ({"driver": "fake", "maintenance": "yes"},
                 exceptions.InvalidParameterValue, "true or false"),
                ({"driver": "fake", "driver_info": {"fake_latency_ms": -1}},
                 exceptions.InvalidParameterValue, "fake_latency_ms"),
                ({"driver": "fake", "uuid": "not-a-uuid"},
                 exceptions.InvalidParameterValue, "not a valid UUID"),
                (["driver", "fake"], exceptions.InvalidParameterValue,
                 "must be a mapping"),
                ({"driver": "ipmi"}, exceptions.DriverNotEnabled,
                 "Driver ipmi is not enabled; enabled drivers: fake.")):
            exc = self.error(cls, "create_node", values=values)
            self.assertIn(text, str(exc))
        self.assertEqual([], self.db.list_nodes())

    def test_duplicate_name_carries_no_database_error(self) -> None:
        self.node("n1")
        exc = self.error(exceptions.DuplicateName, "create_node",
                         values={"driver": "fake", "name": "n1"})
        self.assertEqual("A node with name n1 already exists.", str(exc))

    def test_update_node(self) -> None:
        node = self.node("n1")
        data = self.call("update_node", node="n1", values={
            "maintenance": True, "maintenance_reason": "disk"})
        self.assertEqual((True, "disk"), (data["maintenance"],
                                          data["maintenance_reason"]))
        self.assertTrue(self.db.get_node(node.uuid).maintenance)
        self.forwarder.update_node.assert_not_called()

    def test_update_keeps_a_masked_secret(self) -> None:
        node = self.node("n1")
        self.db.update_node(node.uuid, {"driver_info": {
            "fake_latency_ms": 1, "token": "t0k3n"}})
        # NOTE: the fake driver refuses unknown fields; check the merge
        # itself, then that a real change goes through validation.
        merged = manager._keep_masked_secrets(
            {"driver_info": {"token": driver_base.MASK, "other": "v",
                             "fake_latency_ms": driver_base.MASK}},
            self.db.get_node(node.uuid).driver_info)
        self.assertEqual({"token": "t0k3n", "other": "v",
                          "fake_latency_ms": driver_base.MASK},
                         merged["driver_info"])
        exc = self.error(exceptions.InvalidParameterValue, "update_node",
                         node="n1", values={"driver_info": {
                             "token": driver_base.MASK}})
        self.assertIn("unknown field(s) "
                      "token", str(exc))
        self.assertNotIn("t0k3n", str(exc))

    def test_update_node_bad_values_store_nothing(self) -> None:
        node = self.node("n1")
        for values, text in (({}, "nothing to change"),
                             ({"power_state": "power on"},
                              "Unknown node field(s): power_state"),
                             ({"reservation": "me"}, "Unknown node field"),
                             ("maintenance", "values must be a mapping"),
                             ({"maintenance": 1}, "true or false")):
            exc = self.error(exceptions.InvalidParameterValue, "update_node",
                             node="n1", values=values)
            self.assertIn(text, str(exc))
        self.assertEqual(node, self.db.get_node(node.uuid))

    def test_update_and_delete_locked_or_missing(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "h:7")
        exc = self.error(exceptions.NodeLocked, "update_node", node="n1",
                         values={"maintenance": True})
        self.assertIn("locked by h:7", str(exc))
        self.error(exceptions.NodeLocked, "delete_node", node="n1")
        self.error(exceptions.NodeNotFound, "delete_node", node="nope")
        self.db.release_node(node.uuid, "h:7")
        self.assertIsNone(self.call("delete_node", node="n1"))
        self.assertEqual([], self.db.list_nodes())


class TestSetPowerState(ManagerTestCase):

    pool_size = 3

    def test_applied_at_once_and_wait_returns_the_outcome(self) -> None:
        self.node("n1", driver_info={"fake_latency_ms": 20})
        data = self.call("set_power_state", node="n1", target="on",
                         wait=True)
        self.assertEqual((states.POWER_ON, None, None, None),
                         (data["power_state"], data["target_power_state"],
                          data["last_error"], data["reservation"]))
        data = self.call("set_power_state", node="n1",
                         target=states.REBOOT, wait=True)
        self.assertEqual(states.POWER_ON, data["power_state"])

    def test_without_wait_returns_the_request_then_applies(self) -> None:
        node = self.node("n1")
        data = self.call("set_power_state", node="n1", target="power on")
        self.assertEqual(states.POWER_ON, data["target_power_state"])
        self.assertTrue(base.wait_until(
            lambda: self.db.get_node(node.uuid).power_state
            == states.POWER_ON))
        self.assertIsNone(self.db.get_node(node.uuid).target_power_state)

    def test_failure_is_in_last_error(self) -> None:
        self.node("n1", driver_info={"fake_fail": "set"})
        data = self.call("set_power_state", node="n1", target="off",
                         wait=True)
        self.assertIn("fake_fail=set", data["last_error"])
        self.assertIsNone(data["target_power_state"])

    def test_bad_arguments_store_nothing(self) -> None:
        node = self.node("n1")
        for kwargs, text in (
                ({"target": "sideways"}, "got 'sideways'"),
                ({"target": "error"}, "got 'error'"),
                ({"target": None}, "got None"),
                ({"target": ["on"]}, "got ['on']"),
                ({"target": "on", "wait": "yes"}, "wait must be true"),
                ({"target": "on", "forwarded_by": 5}, "forwarded_by")):
            exc = self.error(exceptions.InvalidParameterValue,
                             "set_power_state", node="n1", **kwargs)
            self.assertIn(text, str(exc))
        self.assertEqual(node, self.db.get_node(node.uuid))
        self.assertEqual(0, self.pool.busy)

    def test_pending_action_is_locked_and_frees_the_thread(self) -> None:
        node = self.node("n1")
        self.db.request_power_state(node.uuid, states.POWER_OFF)
        exc = self.error(exceptions.NodeLocked, "set_power_state",
                         node="n1", target="on")
        self.assertIn("pending 'power off' action", str(exc))
        self.assertTrue(base.wait_until(lambda: self.pool.busy == 0))
        self.assertEqual(states.POWER_OFF,
                         self.db.get_node(node.uuid).target_power_state)

    def test_full_pool_rejects_and_stores_nothing(self) -> None:
        release = threading.Event()
        self.addCleanup(release.set)
        for _ in range(self.pool_size):
            self.pool.submit(release.wait, base.WAIT)
        node = self.node("n1")
        exc = self.error(exceptions.NoFreeWorker, "set_power_state",
                         node="n1", target="on")
        self.assertEqual("All 3 worker threads are busy; the request was "
                         "rejected, retry later.", str(exc))
        self.assertEqual(node, self.db.get_node(node.uuid))
        release.set()
        self.assertTrue(base.wait_until(lambda: self.pool.busy == 0))
        self.call("set_power_state", node="n1", target="on", wait=True)

    def test_periodic_applying_first_is_waited_for(self) -> None:
        node = self.node("n1")
        # The pending-action scan reserves the node as soon as the request
        # is recorded: this call's own attempt sees NodeLocked.
        real_request = self.db.request_power_state

        def request_then_scan(ident: str, target: str,
                              **kwargs: Any) -> db_api.NodeRecord:
            record = real_request(ident, target, **kwargs)
            self.actions.submit(record.uuid)
            return record

        with mock.patch.object(self.db, "request_power_state",
                               autospec=True,
                               side_effect=request_then_scan):
            data = self.call("set_power_state", node="n1", target="on",
                             wait=True)
        self.assertEqual((states.POWER_ON, None),
                         (data["power_state"], data["target_power_state"]))
        self.assertEqual(states.POWER_ON,
                         self.db.get_node(node.uuid).power_state)


class TestRouting(ManagerTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.peer()

    def test_changes_go_to_the_owner_once(self) -> None:
        node = self.node_owned_by("other")
        answer = {"uuid": node.uuid, "name": node.name,
                  "created_at": node.created_at}
        self.forwarder.set_power_state.return_value = answer
        data = self.call("set_power_state", node=node.name, target="on",
                         wait=True)
        self.forwarder.set_power_state.assert_called_once_with(
            node.name, states.POWER_ON, wait=True, context=self.context,
            host="other", forwarded_by="h")
        self.assertEqual(node.created_at.isoformat(), data["created_at"])
        self.assertIsNone(self.db.get_node(node.uuid).target_power_state)

        self.forwarder.update_node.return_value = answer
        self.call("update_node", node=node.uuid,
                  values={"maintenance": True})
        self.forwarder.update_node.assert_called_once_with(
            node.uuid, {"maintenance": True}, context=self.context,
            host="other", forwarded_by="h")
        self.call("delete_node", node=node.uuid)
        self.forwarder.delete_node.assert_called_once_with(
            node.uuid, context=self.context, host="other", forwarded_by="h")
        self.assertEqual(node, self.db.get_node(node.uuid))

    def test_forwarded_call_is_handled_here(self) -> None:
        node = self.node_owned_by("other")
        data = self.call("set_power_state", node=node.uuid, target="on",
                         wait=True, forwarded_by="other")
        self.assertEqual(states.POWER_ON, data["power_state"])
        self.call("update_node", node=node.uuid,
                  values={"maintenance": True}, forwarded_by="other")
        self.assertTrue(self.db.get_node(node.uuid).maintenance)
        self.forwarder.set_power_state.assert_not_called()
        self.forwarder.update_node.assert_not_called()

    def test_forwarded_by_must_be_another_live_host(self) -> None:
        node = self.node_owned_by("other")
        for forwarded_by, text in (
                ("nobody-like-this", "'nobody-like-this' is not a live "
                                     "conductor host"),
                ("h", "forwarded_by names this host (h)"),
                ("", "host name of 1 to 255 characters"),
                ("x" * 1000000, "got 1000000 characters"),
                (["other"], "got list")):
            for method, kwargs in (
                    ("set_power_state", {"target": "on"}),
                    ("update_node", {"values": {"maintenance": True}}),
                    ("delete_node", {})):
                exc = self.error(exceptions.InvalidParameterValue, method,
                                 node=node.uuid, forwarded_by=forwarded_by,
                                 **kwargs)
                self.assertIn(text, str(exc))
                self.assertLess(len(str(exc)), 400)
        self.assertEqual(node, self.db.get_node(node.uuid))
        self.forwarder.set_power_state.assert_not_called()
        # A host that stopped is no longer believed.
        self.db.set_offline("other")
        exc = self.error(exceptions.InvalidParameterValue, "set_power_state",
                         node=node.uuid, target="on", forwarded_by="other")
        self.assertIn("not a live conductor host", str(exc))

    def test_oversized_strings_are_refused_not_echoed(self) -> None:
        huge = "z" * 1000000
        for method, kwargs in (
                ("create_node", {"values": {"driver": huge}}),
                ("create_node", {"values": {"driver": "fake", huge: 1}}),
                ("create_node", {"values": {"driver": "fake", "uuid": huge}}),
                ("create_node", {"values": {"driver": "fake",
                                            "maintenance": huge}}),
                ("create_node", {"values": {"driver": "fake",
                                            "driver_info": {huge: 1}}}),
                ("list_nodes", {"filters": {huge: 1}}),
                ("set_power_state", {"node": "n1", "target": huge}),
                ("get_node", {"node": huge})):
            exc = self.error(exceptions.InvalidParameterValue, method,
                             **kwargs)
            self.assertLess(len(str(exc)), 1000, (method, str(exc)[:200]))
        self.assertEqual([], self.db.list_nodes())

    def test_own_nodes_and_reads_are_not_forwarded(self) -> None:
        mine = self.node_owned_by("h")
        other = self.node_owned_by("other")
        self.call("set_power_state", node=mine.uuid, target="on", wait=True)
        self.call("get_node", node=other.uuid)
        self.call("list_nodes")
        self.call("get_status")
        self.assertEqual([], self.forwarder.method_calls)

    def test_owner_errors_reach_the_caller(self) -> None:
        node = self.node_owned_by("other")
        self.forwarder.set_power_state.side_effect = \
            exceptions.NoFreeWorker(size=3)
        exc = self.error(exceptions.NoFreeWorker, "set_power_state",
                         node=node.uuid, target="on")
        self.assertIn("All 3 worker threads", str(exc))

    def test_silent_owner(self) -> None:
        node = self.node_owned_by("other")
        self.forwarder.set_power_state.side_effect = \
            messaging.MessagingTimeout("Timed out waiting for a reply")
        exc = self.error(exceptions.ConductorException, "set_power_state",
                         node=node.uuid, target="on")
        self.assertEqual("Host other, owner of node %s, did not answer "
                         "set_power_state in time; retry later"
                         % node.uuid, str(exc))
        self.forwarder.delete_node.side_effect = \
            messaging.MessageDeliveryFailure("no broker")
        exc = self.error(exceptions.ConductorException, "delete_node",
                         node=node.uuid)
        self.assertIn("could not be reached for delete_node", str(exc))


class TestInternalErrors(ManagerTestCase):

    def test_details_stay_in_the_log(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))
        secret = "mysql+pymysql://conductor:s3cret@db/conductor"
        with mock.patch.object(self.db, "get_node", autospec=True,
                               side_effect=RuntimeError(secret)):
            exc = self.error(exceptions.ConductorException, "get_node",
                             node="n1")
        self.assertEqual("Internal error in get_node; see the conductor log "
                         "(request %s)" % self.context.request_id, str(exc))
        self.assertNotIn("s3cret", str(exc))
        self.assertIn("Internal error in get_node (request %s)"
                      % self.context.request_id, logger.output)
        self.assertIn("RuntimeError: %s" % secret, logger.output)

    def test_other_conductor_exceptions_are_internal(self) -> None:
        error = exceptions.DatabaseUnavailable(url="mysql://db/x",
                                               reason="gone")
        with mock.patch.object(self.db, "list_nodes", autospec=True,
                               side_effect=error):
            exc = self.error(exceptions.ConductorException, "list_nodes")
        self.assertIn("Internal error in list_nodes", str(exc))
        self.assertNotIn("mysql", str(exc))

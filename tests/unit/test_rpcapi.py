# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.rpcapi and conductor.common.rpc over ``fake://``.

A real oslo.messaging server and client run in this process on the
in-memory transport, with the real endpoint behind them: what a caller
gets (classes, messages, routing, payloads) is what travels over RabbitMQ.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import threading
from typing import Any, cast
from unittest import mock

import fixtures
import oslo_messaging as messaging
from oslo_messaging._drivers import common as driver_common
from oslo_messaging.rpc import dispatcher as rpc_dispatcher
from oslo_utils import timeutils

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.cmd import manage
from conductor.common import exceptions
from conductor.common import rpc
from conductor.db import api as db_api
from conductor.drivers import base as driver_base
from conductor import manager
from conductor import nodes
from conductor import ownership
from conductor import power_actions
from conductor import rpcapi
from conductor import states
from conductor import task
from tests import base
from tests.unit import test_manager


class TestOptions(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        rpc.register_opts(self.conf)

    def test_disabled_unless_transport_url_is_set(self) -> None:
        self.assertEqual("rabbit://", self.conf.transport_url)
        self.assertFalse(rpc.enabled(self.conf))
        self.config(transport_url="")
        self.assertFalse(rpc.enabled(self.conf))
        self.config(transport_url="rabbit://guest:guest@127.0.0.1:5672/")
        self.assertTrue(rpc.enabled(self.conf))

    def test_set_in_a_config_file(self) -> None:
        path = os.path.join(self.conf.state_path, "c.conf")
        with open(path, "w") as stream:
            stream.write("[DEFAULT]\ntransport_url = rabbit://\n")
        self.conf(["--config-file", path], project="conductor")
        self.assertTrue(rpc.enabled(self.conf))

    def test_missing_reply_queue_retry_is_short(self) -> None:
        # NOTE: oslo.messaging's own 60 s lets replies to vanished callers
        # hold executor threads long enough to stall valid calls.
        rabbit = self.conf.oslo_messaging_rabbit
        self.assertEqual(rpc.MISSING_CONSUMER_RETRY_TIMEOUT,
                         rabbit.kombu_missing_consumer_retry_timeout)
        self.assertLessEqual(rabbit.kombu_missing_consumer_retry_timeout, 10)
        # An operator's value still wins.
        self.config(kombu_missing_consumer_retry_timeout=30,
                    group="oslo_messaging_rabbit")
        self.assertEqual(30, rabbit.kombu_missing_consumer_retry_timeout)

    def test_malformed_url_is_named_without_its_password(self) -> None:
        for url, text in (("rabbit://u:pw9@h:notaport/", "notaport"),
                          ("nodriver", "No scheme specified"),
                          ("bogus://u:pw9@h/",
                           "no messaging driver 'bogus'")):
            self.config(transport_url=url)
            exc = self.assertRaises(exceptions.ConfigInvalid,
                                    rpc.get_transport, self.conf)
            self.assertIn("[DEFAULT] transport_url: ", str(exc))
            self.assertIn(text, str(exc))
            self.assertNotIn("pw9", str(exc))

    def _entry_points(self) -> None:
        """The messaging drivers installed: rabbit and one that is broken."""
        import importlib.metadata
        from stevedore import extension
        group = rpc.DRIVER_NAMESPACE
        entry_point = importlib.metadata.EntryPoint
        points = [
            entry_point("rabbit",
                        "oslo_messaging._drivers.impl_rabbit:RabbitDriver",
                        group),
            entry_point("broken", "conductor_no_such_module:Driver", group)]
        self.useFixture(fixtures.MockPatchObject(
            extension.ExtensionManager, "list_entry_points",
            return_value=points))

    def test_only_the_named_driver_is_loaded(self) -> None:
        self._entry_points()
        logs = self.useFixture(fixtures.FakeLogger(level=logging.INFO))
        self.config(transport_url="rabbit://guest:guest@127.0.0.1:5672/")
        rpc.check_transport_url(self.conf)
        # NOTE: loading every installed driver logged an ERROR for each
        # that could not be imported, on every start.
        self.assertEqual("", logs.output)

    def test_named_driver_that_cannot_be_loaded(self) -> None:
        self._entry_points()
        self.config(transport_url="broken://u:pw9@h/")
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                rpc.check_transport_url, self.conf)
        self.assertIn("[DEFAULT] transport_url: messaging driver 'broken' "
                      "cannot be loaded: ModuleNotFoundError: ", str(exc))
        self.assertIn("conductor_no_such_module", str(exc))
        self.assertNotIn("pw9", str(exc))

    def test_unknown_driver_lists_the_installed_ones(self) -> None:
        self._entry_points()
        self.config(transport_url="bogus://h/")
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                rpc.check_transport_url, self.conf)
        self.assertIn("no messaging driver 'bogus'; installed: broken, "
                      "rabbit", str(exc))

    def test_tracing_options_on_another_conf(self) -> None:
        from oslo_config import cfg
        conf = cfg.ConfigOpts()
        rpc.register_opts(conf)
        rpc.register_opts(conf)
        self.assertFalse(conf.oslo_messaging_tracing.tracing_enabled)
        self.assertFalse(conf.oslo_messaging_metrics.metrics_enabled)
        conf([], project="conductor-tests")
        conf.set_override("transport_url", "fake:/")
        transport = rpc.get_transport(conf)
        self.addCleanup(transport.cleanup)
        client = rpcapi.ConductorAPI(transport, timeout=0.1)
        self.assertRaises(messaging.MessagingTimeout, client.get_status)

    def test_node_round_trip(self) -> None:
        created = datetime.datetime(2030, 1, 2, 3, 4, 5, 678901)
        record = db_api.NodeRecord(
            id=1, uuid="u", name="n", driver="fake",
            driver_info={"password": "p", "address": "a"},
            power_state=None, target_power_state=None,
            power_state_updated_at=None, maintenance=False,
            maintenance_reason=None, fault=None, power_sync_failures=0,
            last_error=None, reservation=None, created_at=created,
            updated_at=None)
        wire = nodes.to_primitive(record)
        self.assertEqual(json.loads(json.dumps(wire)), wire)
        self.assertEqual(driver_base.MASK, wire["driver_info"]["password"])
        node = nodes.from_primitive(wire)
        self.assertEqual(created, node["created_at"])
        self.assertEqual(wire, nodes.dict_to_primitive(node))
        self.assertEqual(nodes.as_dict(record), node)


class TestWireErrors(test_manager.ManagerTestCase):
    """What RabbitMQ carries: the serialised failure, rebuilt client-side.

    The fake driver hands exceptions over as objects; this runs the
    serialisation oslo.messaging's AMQP drivers use.
    """

    def over_the_wire(self, method: str, **kwargs: Any) -> Exception:
        try:
            getattr(self.manager, method)(self.context, **kwargs)
        except rpc_dispatcher.ExpectedException as exc:
            data = driver_common.serialize_remote_exception(exc.exc_info)
        else:
            self.fail("%s did not fail" % method)
        self.assertNotIn("Traceback", data)
        self.assertNotIn("manager.py", data)
        remote = driver_common.deserialize_remote_exception(
            data, rpc.ALLOWED_EXMODS)
        self.assertIsInstance(remote, exceptions.ConductorException)
        assert isinstance(remote, exceptions.ConductorException)
        return rpcapi._local(remote)

    def test_named_exception_and_message_intact(self) -> None:
        exc = self.over_the_wire("get_node", node="nope")
        self.assertIs(exceptions.NodeNotFound, type(exc))
        self.assertEqual("Node nope could not be found.", str(exc))
        self.assertEqual({"node": "nope"},
                         cast(exceptions.ConductorException, exc).kwargs)

    def test_duplicate_sends_no_sql(self) -> None:
        self.node("n1", driver_info={"fake_latency_ms": 1})
        exc = self.over_the_wire("create_node", values={
            "driver": "fake", "name": "n1",
            "driver_info": {"fake_latency_ms": 987654}})
        self.assertIs(exceptions.DuplicateName, type(exc))
        self.assertEqual("A node with name n1 already exists.", str(exc))

    def test_internal_error(self) -> None:
        self.useFixture(fixtures.FakeLogger(level=logging.ERROR))
        with mock.patch.object(self.db, "get_node", autospec=True,
                               side_effect=RuntimeError("s3cret")):
            exc = self.over_the_wire("get_node", node="n1")
        self.assertIs(exceptions.ConductorException, type(exc))
        self.assertNotIn("s3cret", str(exc))


class FakeTransportTestCase(test_manager.ManagerTestCase):
    """The endpoint of host ``h`` served over ``fake://``."""

    def setUp(self) -> None:
        super().setUp()
        rpc.register_opts(self.conf)
        self.config(transport_url="fake:/")
        self.transport = rpc.get_transport(self.conf)
        self.serve(self.manager, "h")
        self.api = rpcapi.ConductorAPI(self.transport, timeout=base.WAIT)
        self.manager._forwarder = self.api

    def serve(self, endpoint: Any, host: str) -> None:
        server = rpc.build_server(self.transport, host, [endpoint])
        server.start()
        self.addCleanup(rpc.stop_server, server, None, base.WAIT)


class TestMethods(FakeTransportTestCase):

    def test_every_method(self) -> None:
        created = self.api.create_node({"driver": "fake", "name": "n1",
                                        "driver_info": {"fake_fail": "get"}})
        record = self.db.get_node("n1")
        self.assertEqual(nodes.as_dict(record), created)
        self.assertIsInstance(created["created_at"], datetime.datetime)
        self.assertEqual({"fake_fail": "get"}, created["driver_info"])
        self.assertEqual(created, self.api.get_node(record.uuid))
        self.assertEqual([created], self.api.list_nodes(
            filters={"driver": "fake"}, limit=1))
        updated = self.api.update_node("n1", {"maintenance": True})
        self.assertTrue(updated["maintenance"])
        self.api.update_node("n1", {"maintenance": False})
        done = self.api.set_power_state("n1", "on", wait=True)
        self.assertEqual((states.POWER_ON, None),
                         (done["power_state"], done["target_power_state"]))
        status = self.api.get_status()
        self.assertEqual(1, status["hosts"]["h"]["alive_workers"])
        self.assertIsNone(self.api.delete_node("n1"))
        self.assertEqual([], self.api.list_nodes())

    def test_named_errors_arrive_by_class_with_their_message(self) -> None:
        node = self.node("n1")
        self.db.reserve_node(node.uuid, "h:9")
        cases = [
            (exceptions.NodeNotFound, "Node nope could not be found.",
             lambda: self.api.get_node("nope")),
            (exceptions.NodeLocked, "Node n1 is locked by h:9, please "
             "retry after the current operation is completed.",
             lambda: self.api.set_power_state("n1", "on")),
            (exceptions.InvalidParameterValue, "target must be one of "
             "'power off', 'power on', 'rebooting' (or off, on, reboot), "
             "got 'up'", lambda: self.api.set_power_state("n1", "up")),
            (exceptions.DriverNotEnabled, "Driver ipmi is not enabled; "
             "enabled drivers: fake.",
             lambda: self.api.create_node({"driver": "ipmi"})),
            (exceptions.DuplicateName, "A node with name n1 already "
             "exists.", lambda: self.api.create_node(
                 {"driver": "fake", "name": "n1"})),
        ]
        for cls, message, call in cases:
            exc = self.assertRaises(cls, call)
            self.assertIs(cls, type(exc))
            self.assertEqual(message, str(exc))
            self.assertIsNone(exc.__cause__)

    def test_no_free_worker(self) -> None:
        self.node("n1")
        release = threading.Event()
        self.addCleanup(release.set)
        for _ in range(self.pool.size):
            self.pool.submit(release.wait, base.WAIT)
        exc = self.assertRaises(exceptions.NoFreeWorker,
                                self.api.set_power_state, "n1", "on")
        self.assertIs(exceptions.NoFreeWorker, type(exc))
        self.assertIsNone(self.db.get_node("n1").target_power_state)

    def test_unknown_argument_and_private_methods(self) -> None:
        self.node("n1")
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.api._call, "get_node",
            node="n1", fields=["uuid"])
        self.assertEqual("get_node: got an unexpected keyword argument "
                         "'fields'", str(exc))
        # NOTE: over RabbitMQ these arrive as RemoteError("NoSuchMethod");
        # the fake driver hands the server's exception over as it is.
        for method in ("_contain", "_forward", "nope"):
            self.assertRaises(rpc_dispatcher.NoSuchMethod, self.api._call,
                              method)

    def test_internal_error_names_the_request(self) -> None:
        self.useFixture(fixtures.FakeLogger(level=logging.ERROR))
        context = rpc.new_context()
        with mock.patch.object(db_api.Connection, "get_node", autospec=True,
                               side_effect=RuntimeError("password=s3cret")):
            exc = self.assertRaises(exceptions.ConductorException,
                                    self.api.get_node, "n1",
                                    context=context)
        self.assertIs(exceptions.ConductorException, type(exc))
        self.assertEqual("Internal error in get_node; see the conductor log "
                         "(request %s)" % context.request_id, str(exc))

    def test_version_cap(self) -> None:
        capped = rpcapi.ConductorAPI(self.transport, version_cap="0.9")
        self.assertRaises(messaging.RPCVersionCapError, capped.get_status)
        self.config(rpc_version_cap="1.0", group="conductor")
        api = rpcapi.ConductorAPI.from_conf(self.conf, self.transport,
                                            timeout=base.WAIT)
        self.assertEqual({}, api.get_status()["hosts"]["h"].get("x", {}))

    def test_addressed_to_a_host(self) -> None:
        self.node("n1")
        self.assertEqual("n1", self.api.get_node("n1", host="h")["name"])
        quick = rpcapi.ConductorAPI(self.transport, timeout=0.2)
        self.assertRaises(messaging.MessagingTimeout, quick.get_node, "n1",
                          host="nobody")


class TestForwarding(FakeTransportTestCase):
    """Hosts ``h`` and ``other`` both served; calls enter through ``h``."""

    def setUp(self) -> None:
        super().setUp()
        self.peer()
        other_rings = ownership.Rings(self.db, "other", 0,
                                      heartbeat_timeout=60,
                                      reset_interval=15)
        other_rings.refresh()
        self.other_actions = power_actions.PowerActions(
            self.db, self.drivers, other_rings, self.pool, timeout=5.0)
        self.serve(manager.ConductorManager(
            "other", self.db, self.drivers, other_rings, self.pool,
            self.other_actions, self.api, heartbeat_timeout=60,
            action_timeout=5.0), "other")

    def test_the_owner_applies_it(self) -> None:
        node = self.node_owned_by("other")
        applied_by = []
        real_apply = power_actions.PowerActions.apply_task

        def apply(actions: power_actions.PowerActions,
                  t: task.Task) -> db_api.NodeRecord | None:
            applied_by.append(actions)
            return real_apply(actions, t)

        with mock.patch.object(power_actions.PowerActions, "apply_task",
                               autospec=True, side_effect=apply):
            done = self.api.set_power_state(node.uuid, "on", wait=True,
                                            host="h")
        self.assertEqual(states.POWER_ON, done["power_state"])
        self.assertEqual([self.other_actions], applied_by)
        self.assertEqual(self.db.get_node(node.uuid).created_at,
                         done["created_at"])

    def test_owner_errors_come_back_clean(self) -> None:
        node = self.node_owned_by("other")
        self.db.reserve_node(node.uuid, "other:0")
        exc = self.assertRaises(exceptions.NodeLocked,
                                self.api.update_node, node.uuid,
                                {"maintenance": True}, host="h")
        self.assertIs(exceptions.NodeLocked, type(exc))
        self.assertEqual("Node %s is locked by other:0, please retry after "
                         "the current operation is completed." % node.uuid,
                         str(exc))


class TestStopServer(base.TestCase):

    def test_bounded_when_calls_hang(self) -> None:
        release = threading.Event()
        self.addCleanup(release.set)
        server = mock.create_autospec(messaging.MessageHandlingServer,
                                      instance=True)
        server.wait.side_effect = lambda: release.wait(base.WAIT)
        transport = mock.create_autospec(messaging.Transport, instance=True)
        self.assertFalse(rpc.stop_server(server, transport, 0.05))
        server.stop.assert_called_once_with()
        transport.cleanup.assert_not_called()
        release.set()

    def test_order(self) -> None:
        parent = mock.Mock()
        server = mock.create_autospec(messaging.MessageHandlingServer,
                                      instance=True)
        transport = mock.create_autospec(messaging.Transport, instance=True)
        parent.attach_mock(server, "server")
        parent.attach_mock(transport, "transport")
        self.assertTrue(rpc.stop_server(server, transport, base.WAIT))
        self.assertEqual([mock.call.server.stop(), mock.call.server.wait(),
                          mock.call.transport.cleanup()], parent.mock_calls)


class TestManageOverRpc(FakeTransportTestCase):
    """``conductor-manage`` with transport_url set: same output as the DB."""

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.useFixture(fixtures.MockPatchObject(
            rpc, "get_transport", autospec=True,
            side_effect=lambda conf: self.transport))
        self.useFixture(fixtures.MockPatchObject(
            rpc, "check_broker", autospec=True))
        self.db_url = str(self.db.engine.url)

    def run_manage(self, rpc_on: bool, *args: str) -> tuple[int, str, str]:
        path = os.path.join(self.conf.state_path, "m.conf")
        with open(path, "w") as stream:
            stream.write("[DEFAULT]\nstate_path = %s\nenabled_drivers = fake"
                         "\n%s\n[database]\nconnection = %s\n" % (
                             self.conf.state_path,
                             "transport_url = fake:/" if rpc_on else "",
                             self.db_url))
        out, err = io.StringIO(), io.StringIO()
        with mock.patch("builtins.print", autospec=True,
                        side_effect=lambda text: out.write(text + "\n")), \
                mock.patch("sys.stderr", new=err):
            code = manage.main(["--config-file", path] + list(args))
        return code, out.getvalue(), err.getvalue()

    def test_power_and_status_same_as_database(self) -> None:
        self.node("n1", driver_info={"fake_latency_ms": 5})
        self.assertEqual((0, "Node n1 is power on\n", ""),
                         self.run_manage(True, "node", "power", "n1", "on",
                                         "--wait"))
        self.assertEqual((0, "Requested power off for node n1\n", ""),
                         self.run_manage(True, "node", "power", "n1", "off"))
        self.assertTrue(base.wait_until(
            lambda: self.db.get_node("n1").target_power_state is None))
        now = timeutils.utcnow()
        self.useFixture(fixtures.MockPatchObject(
            timeutils, "utcnow", autospec=True, return_value=now))
        for fmt in ("json", "table"):
            over_rpc = self.run_manage(True, "status", "--format", fmt)
            from_db = self.run_manage(False, "status", "--format", fmt)
            self.assertEqual(0, over_rpc[0])
            self.assertEqual(from_db, over_rpc)

    def test_errors_are_one_line(self) -> None:
        self.node("n1", driver_info={"fake_fail": "set"})
        code, out, err = self.run_manage(True, "node", "power", "n1", "on",
                                         "--wait")
        self.assertEqual(1, code)
        self.assertRegex(err, r"^conductor-manage: ERROR: Node n1: power on "
                              r"failed: .*fake_fail=set\)\n$")
        code, out, err = self.run_manage(True, "node", "power", "nope", "on")
        self.assertEqual((1, "conductor-manage: ERROR: Node nope could not "
                             "be found.\n"), (code, err))

    def test_silent_conductor(self) -> None:
        self.config(rpc_response_timeout=1)
        with mock.patch.object(rpcapi.ConductorAPI, "get_status",
                               autospec=True,
                               side_effect=messaging.MessagingTimeout("x")):
            code, out, err = self.run_manage(True, "status")
        self.assertEqual(1, code)
        self.assertEqual("conductor-manage: ERROR: no conductor answered "
                         "over RPC within [DEFAULT] rpc_response_timeout; is "
                         "one running? (see its log)\n", err)

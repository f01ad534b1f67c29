# SPDX-License-Identifier: Apache-2.0
"""RPC end to end: real conductors, real RabbitMQ, real databases.

Every test gets its own RabbitMQ virtual host on the local shared broker,
so tests running at the same time never answer each other's calls. The
broker-restart test stops and starts a private RabbitMQ node it started
itself (tests/functional/services.py); the shared broker is never
stopped. RabbitMQ must be running (``rabbitmq-server -detached``, as
``.ci/run`` does); when it is not, every test fails saying so.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Callable
import uuid

import fixtures
import kombu
from oslo_config import cfg
import oslo_messaging as messaging
from oslo_messaging._drivers import amqp as rpc_amqp
from oslo_messaging._drivers import common as rpc_common
import sqlalchemy as sa

from conductor.common import exceptions
from conductor.common import rpc
from conductor.conf import conductor as conductor_opts
from conductor import ownership
from conductor import rpcapi
from conductor import states
from tests.functional import base
from tests.functional import services

#: Seconds between heartbeats, after which a worker is dead, and between
#: power sync sweeps, in every test here.
HEARTBEAT_INTERVAL = 1
HEARTBEAT_TIMEOUT = 4
SYNC_INTERVAL = 1
_SWEEP = re.compile(r"^(\S+ \S+) \d+ (?:INFO conductor\.power_sync|"
                    r"DEBUG conductor\.power_sync\.runs) "
                    r"\[(\S+) worker (\d+)\] \[-\] Power sync sweep: "
                    r"(\d+) node\(s\)")


def _rabbitmqctl(*args: str) -> str:
    try:
        result = subprocess.run(["rabbitmqctl", *args], capture_output=True,
                                text=True, timeout=60)
    except FileNotFoundError:
        raise AssertionError("rabbitmqctl is not installed; the RPC tests "
                             "need a local RabbitMQ (see .ci/run)")
    if result.returncode != 0:
        raise AssertionError("rabbitmqctl %s failed (%d): %s"
                             % (" ".join(args), result.returncode,
                                result.stderr.strip() or result.stdout))
    return result.stdout


class RabbitVhost(fixtures.Fixture):
    """A fresh virtual host on the local RabbitMQ, deleted afterwards."""

    def _setUp(self) -> None:
        parsed = sa.engine.make_url(base.RABBIT_URL.replace(
            "rabbit://", "amqp://", 1))
        host, port = parsed.host or "127.0.0.1", parsed.port or 5672
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            raise AssertionError(
                "RabbitMQ at %s:%s is not reachable (%s). Start it with "
                "'rabbitmq-server -detached' (see .ci/run) or point "
                "CONDUCTOR_TEST_TRANSPORT_URL at one." % (host, port, exc))
        self.name = "conductor_test_%d_%d" % (os.getpid(),
                                              int(time.monotonic() * 1e6))
        _rabbitmqctl("add_vhost", self.name)
        self.addCleanup(_rabbitmqctl, "delete_vhost", self.name)
        _rabbitmqctl("set_permissions", "-p", self.name,
                     parsed.username or "guest", ".*", ".*", ".*")
        self.url = "%s/%s" % (base.RABBIT_URL.rstrip("/"), self.name)


class PrivateRabbitMQ(fixtures.Fixture):
    """A private RabbitMQ node this test starts, stopped at its cleanup.

    For tests that stop the broker: the shared one must never be stopped.
    """

    #: Lines added to the node's rabbitmq.conf.
    CONFIG = ""

    def _setUp(self) -> None:
        workdir = self.useFixture(fixtures.TempDir()).path
        # NOTE: the node runs as the rabbitmq user when we are root.
        os.chmod(workdir, 0o755)
        try:
            self.node = services.RabbitMQ(workdir, prefix="conductor-test",
                                          config=self.CONFIG)
            # NOTE: registered before start(), so that a node that fails
            # half-way still goes.
            self.addCleanup(self.node.stop)
            self.node.start()
        except services.ServiceError as exc:
            raise AssertionError("cannot run the private RabbitMQ this "
                                 "test needs: %s" % exc)
        self.url = self.node.url


class RpcTestCase(base.FunctionalTestCase):
    """One vhost per test; ``self.api()`` is a client in this process."""

    def broker(self) -> RabbitVhost | PrivateRabbitMQ:
        """Where this test's conductors and clients talk (``.url``)."""
        return RabbitVhost()

    def setUp(self) -> None:
        super().setUp()
        self.vhost = self.useFixture(self.broker())

    def options(self, host: str, db_url: str, workers: int = 2,
                **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
        state = os.path.join(self.workdir, host)
        os.makedirs(state, exist_ok=True)
        options: dict[str, dict[str, Any]] = {
            "DEFAULT": {"host": host, "state_path": state,
                        "enabled_drivers": "fake", "debug": True,
                        "transport_url": self.vhost.url,
                        "graceful_shutdown_timeout": 15,
                        "rpc_response_timeout": 20},
            "conductor": {"workers": workers,
                          "heartbeat_interval": HEARTBEAT_INTERVAL,
                          "heartbeat_timeout": HEARTBEAT_TIMEOUT,
                          "sync_power_state_interval": SYNC_INTERVAL},
            "database": {"connection": db_url},
        }
        for section, values in extra.items():
            options.setdefault(section, {}).update(values)
        return options

    def start(self, host: str, db: base.Database, workers: int = 2,
              **extra: dict[str, Any]) -> base.ConductorProcess:
        """Start host ``host`` and wait until every worker consumes RPC."""
        conductor = self.start_conductor(
            self.options(host, db.url, workers, **extra), name=host)
        self.wait_rpc(conductor, host, workers)
        return conductor

    def wait_rpc(self, conductor: base.ConductorProcess, host: str,
                 workers: int, since: int = 0) -> None:
        def ready() -> bool:
            log = conductor.log()[since:]
            return all("RPC server of %s:%d consuming" % (host, worker)
                       in log for worker in range(workers))
        try:
            base.wait_for(ready, 60, "%d RPC servers of %s" % (workers,
                                                               host))
        except AssertionError as exc:
            raise AssertionError("%s\n%s" % (exc, conductor.log_tail()))

    def api(self, timeout: float = 20) -> rpcapi.ConductorAPI:
        conf = cfg.ConfigOpts()
        conductor_opts.register_opts(conf)
        rpc.register_opts(conf)
        conf([], project="conductor-tests")
        conf.set_override("transport_url", self.vhost.url)
        transport = rpc.get_transport(conf)
        self.addCleanup(transport.cleanup)
        return rpcapi.ConductorAPI.from_conf(conf, transport,
                                             timeout=timeout, retry=3)

    def manage_config(self, db: base.Database) -> str:
        path = os.path.join(self.workdir, "manage.conf")
        with open(path, "w") as stream:
            stream.write("[DEFAULT]\nenabled_drivers = fake\n"
                         "transport_url = %s\nrpc_response_timeout = 20\n"
                         "[database]\nconnection = %s\n"
                         % (self.vhost.url, db.url))
        return path


def sweeps(conductor: base.ConductorProcess, host: str
           ) -> list[tuple[float, int, int]]:
    """(log time, worker id, nodes) of every power sync sweep of ``host``."""
    result = []
    for line in conductor.log_lines():
        match = _SWEEP.match(line)
        if match and match.group(2) == host:
            when = time.mktime(time.strptime(match.group(1)[:19],
                                             "%Y-%m-%d %H:%M:%S"))
            when += float("0" + match.group(1)[19:])
            result.append((when, int(match.group(3)), int(match.group(4))))
    return result


class TestMethods(RpcTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))

    def test_every_method_and_manage(self) -> None:
        conductor = self.start("ha", self.db_fixture)
        db = self.db_fixture.connect(upgrade=False)
        api = self.api()
        created = api.create_node({"driver": "fake", "name": "n1",
                                   "driver_info": {"fake_latency_ms": 10}})
        record = db.get_node("n1")
        self.assertEqual(record.uuid, created["uuid"])
        self.assertEqual(record.created_at, created["created_at"])
        self.assertEqual(created, api.get_node(record.uuid))
        self.assertEqual(["n1"], [n["name"] for n in api.list_nodes(
            filters={"driver": "fake", "maintenance": False}, limit=10)])
        updated = api.update_node("n1", {"maintenance_reason": "racked"})
        self.assertEqual("racked", updated["maintenance_reason"])
        done = api.set_power_state("n1", "on", wait=True)
        self.assertEqual((states.POWER_ON, None, None),
                         (done["power_state"], done["target_power_state"],
                          done["last_error"]))
        self.assertEqual(states.POWER_ON, db.get_node("n1").power_state)

        def status_complete() -> Any:
            data = api.get_status()
            workers = data["workers"]
            return data if (len(workers) == 2 and all(
                w["alive"] and w["status"].get("sweeps", {}).get("sync")
                for w in workers)) else None
        status = base.wait_for(status_complete, 20, "status of 2 workers")
        self.assertEqual({"workers": 2, "alive_workers": 2,
                          "drivers": ["fake"], "nodes_owned": 1},
                         {key: status["hosts"]["ha"][key] for key in (
                             "workers", "alive_workers", "drivers",
                             "nodes_owned")})
        for worker in status["workers"]:
            self.assertLess(worker["heartbeat_age"], HEARTBEAT_TIMEOUT)
            self.assertEqual({"size", "busy", "rejected"},
                             {"size", "busy", "rejected"}
                             & set(worker["status"]["pool"]))
            self.assertTrue(worker["status"]["periodics"])
            self.assertEqual({"nodes", "seconds", "failures"},
                             {"nodes", "seconds", "failures"}
                             & set(worker["status"]["sweeps"]["sync"]))
        self.assertEqual(1, status["nodes"]["total"])

        # conductor-manage goes through RPC with transport_url set.
        config = self.manage_config(self.db_fixture)
        out = self.run_manage(config, "node", "power", "n1", "off", "--wait")
        self.assertEqual("Node n1 is power off\n", out.stdout)
        out = self.run_manage(config, "status")
        self.assertIn("ha    0", out.stdout)
        self.assertIn("1 node(s), 0 in maintenance", out.stdout)
        requests = [line for line in conductor.log_lines()
                    if "power off requested over RPC" in line]
        self.assertEqual(1, len(requests), str(requests))

        self.assertIsNone(api.delete_node("n1"))
        self.assertEqual([], db.list_nodes())

    def test_named_errors(self) -> None:
        conductor = self.start("ha", self.db_fixture, workers=1,
                               DEFAULT={"debug": False},
                               conductor={"workers_pool_size": 3,
                                          "sync_power_state_interval": 0})
        db = self.db_fixture.connect(upgrade=False)
        api = self.api()
        locked = db.create_node({"driver": "fake", "name": "locked"})
        db.reserve_node(locked.uuid, "elsewhere:0")
        cases: list[tuple[type[Exception], str, Callable[[], Any]]] = [
            (exceptions.NodeNotFound, "Node nope could not be found.",
             lambda: api.get_node("nope")),
            (exceptions.NodeLocked, "Node locked is locked by elsewhere:0, "
             "please retry after the current operation is completed.",
             lambda: api.set_power_state("locked", "off")),
            (exceptions.InvalidParameterValue, "Unknown node field(s): "
             "colour; allowed: uuid, name, driver, driver_info, "
             "maintenance, maintenance_reason",
             lambda: api.create_node({"driver": "fake", "colour": "red"})),
            (exceptions.DriverNotEnabled, "Driver ipmi is not enabled; "
             "enabled drivers: fake.",
             lambda: api.create_node({"driver": "ipmi", "name": "x"})),
            (exceptions.DuplicateName, "A node with name locked already "
             "exists.",
             lambda: api.create_node({"driver": "fake", "name": "locked"})),
        ]
        for cls, message, call in cases:
            exc = self.assertRaises(cls, call)
            self.assertIs(cls, type(exc))
            self.assertEqual(message, str(exc))

        # NoFreeWorker: slow actions fill the 3 threads; the next call is
        # rejected and nothing is recorded for it.
        slow = [db.create_node({"driver": "fake", "name": "slow%d" % i,
                                "driver_info": {"fake_latency_ms": 4000}})
                for i in range(5)]
        rejected = None
        for node in slow:
            try:
                api.set_power_state(node.uuid, "on")
            except exceptions.NoFreeWorker as exc:
                self.assertIs(exceptions.NoFreeWorker, type(exc))
                self.assertEqual("All 3 worker threads are busy; the request "
                                 "was rejected, retry later.", str(exc))
                rejected = node
                break
        self.assertIsNotNone(rejected, "no call was rejected")
        assert rejected is not None
        self.assertIsNone(db.get_node(rejected.uuid).target_power_state)

        # Not an API method, or a private one: a RemoteError naming it.
        for method in ("_contain", "drop_tables"):
            remote = self.assertRaises(messaging.RemoteError, api._call,
                                       method)
            self.assertEqual("NoSuchMethod", remote.exc_type)
        self.assertNotIn("Traceback", "\n".join(
            line for line in conductor.log_lines()
            if "conductor.manager" in line))

    def test_power_action_applied_at_once_over_rpc(self) -> None:
        # The pending-action periodic would take 30 s: only RPC is fast.
        # Applying takes well under a second; the bounds leave room for
        # a loaded machine.
        self.start("ha", self.db_fixture,
                   conductor={"pending_action_interval": 30})
        db = self.db_fixture.connect(upgrade=False)
        api = self.api()
        node = db.create_node({"driver": "fake", "name": "n1"})
        api.get_node("n1")  # the client's connection is up
        started = time.monotonic()
        requested = api.set_power_state("n1", states.POWER_ON)
        self.assertEqual(states.POWER_ON, requested["target_power_state"])
        base.wait_for(
            lambda: db.get_node(node.uuid).power_state == states.POWER_ON,
            5, "power on applied", interval=0.01)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5.0)
        started = time.monotonic()
        done = api.set_power_state("n1", "reboot", wait=True)
        self.assertEqual((states.POWER_ON, None),
                         (done["power_state"], done["target_power_state"]))
        self.assertLess(time.monotonic() - started, 5.0)

    def test_bad_arguments_rejected_and_nothing_stored(self) -> None:
        self.start("ha", self.db_fixture, workers=1)
        db = self.db_fixture.connect(upgrade=False)
        api = self.api()
        node = db.create_node({"driver": "fake", "name": "n1"})
        bad: list[tuple[str, Callable[[], Any]]] = [
            ("node must be a UUID or a name (a string), got int",
             lambda: api._call("get_node", node=42)),
            ("node must be a UUID or a name of 1 to 255 characters, got "
             "300 characters", lambda: api.set_power_state("x" * 300, "on")),
            ("target must be one of", lambda: api.set_power_state(
                "n1", "sideways")),
            ("target must be one of", lambda: api._call(
                "set_power_state", node="n1", target=1)),
            ("wait must be true or false", lambda: api._call(
                "set_power_state", node="n1", target="on", wait="soon")),
            ("set_power_state: got an unexpected keyword argument 'force'",
             lambda: api._call("set_power_state", node="n1", target="on",
                               force=True)),
            ("Node name must be a string, got int", lambda: api.create_node(
                {"driver": "fake", "name": 7})),
            ("Node name must be 1 to", lambda: api.create_node(
                {"driver": "fake", "name": "n" * 300})),
            ("maintenance_reason is 5000 characters long", lambda:
                api.create_node({"driver": "fake",
                                 "maintenance_reason": "r" * 5000})),
            ("driver_info is", lambda: api.create_node(
                {"driver": "fake", "driver_info": {"k" * 20000: 1}})),
            ("Unknown node field(s): owner", lambda: api.create_node(
                {"driver": "fake", "owner": "me"})),
            ("Unknown node field(s): power_state", lambda: api.update_node(
                "n1", {"power_state": states.POWER_ON})),
            ("maintenance must be true or false", lambda: api.update_node(
                "n1", {"maintenance": "yes"})),
            ("fake_latency_ms must be a number", lambda: api.update_node(
                "n1", {"driver_info": {"fake_latency_ms": "slow"}})),
            ("Unknown filter 'owner'", lambda: api.list_nodes(
                filters={"owner": "me"})),
            ("limit must be an integer >= 1", lambda: api.list_nodes(
                limit=-1)),
            ("values must be a mapping", lambda: api._call(
                "update_node", node="n1", values=["maintenance"])),
        ]
        for text, call in bad:
            exc = self.assertRaises(exceptions.InvalidParameterValue, call)
            self.assertIn(text, str(exc))
        self.assertEqual([node], db.list_nodes())


class TestRouting(RpcTestCase):

    def test_change_sent_via_a_reaches_the_owner_b(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        db = db_fixture.connect()
        host_a = self.start("ha", db_fixture, workers=1)
        host_b = self.start("hb", db_fixture, workers=1)
        view = ownership.Rings(db, "probe", 0,
                               heartbeat_timeout=HEARTBEAT_TIMEOUT,
                               reset_interval=1)
        base.wait_for(lambda: (view.refresh(force=True) or True) and
                      set(view.membership.hosts) == {"ha", "hb"}, 20,
                      "both hosts live")
        owned_by_b = None
        for index in range(100):
            node = db.create_node({"driver": "fake", "name": "n%d" % index})
            if view.owner_host(node.uuid) == "hb":
                owned_by_b = node
                break
        assert owned_by_b is not None
        api = self.api()
        done = api.set_power_state(owned_by_b.name or "", "on", wait=True,
                                   host="ha")
        self.assertEqual(states.POWER_ON, done["power_state"])
        api.update_node(owned_by_b.uuid, {"maintenance": True}, host="ha")
        uuid = owned_by_b.uuid
        b_log = host_b.log()
        self.assertIn("Node %s: power on requested over RPC (via ha)" % uuid,
                      b_log)
        self.assertIn("(%s): power on done" % uuid, b_log)
        self.assertIn("Node %s updated over RPC: maintenance" % uuid, b_log)
        a_log = host_a.log()
        self.assertIn("Forwarding set_power_state of node %s to its owner "
                      "hb" % owned_by_b.name, a_log)
        self.assertNotIn("Node %s: power on" % uuid, a_log)
        # Reads are answered by the host asked.
        self.assertEqual(uuid, api.get_node(uuid, host="ha")["uuid"])


class TestGracefulStop(RpcTestCase):

    def test_sigterm_finishes_the_call_in_flight(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        conductor = self.start("ha", db_fixture, workers=1)
        db = db_fixture.connect(upgrade=False)
        node = db.create_node({"driver": "fake", "name": "n1",
                               "driver_info": {"fake_latency_ms": 2000}})
        api = self.api()
        result: dict[str, Any] = {}

        def call() -> None:
            try:
                result["node"] = api.set_power_state("n1", "on", wait=True)
            except Exception as exc:
                result["error"] = exc
        thread = threading.Thread(target=call)
        thread.start()
        base.wait_for(lambda: "power on requested over RPC" in
                      conductor.log(), 10, "the call arrived")
        conductor.signal(signal.SIGTERM)
        self.assertEqual(0, conductor.wait_exit(20))
        thread.join(20)
        self.assertNotIn("error", result)
        self.assertEqual(states.POWER_ON, result["node"]["power_state"])
        record = db.get_node(node.uuid)
        self.assertEqual((states.POWER_ON, None),
                         (record.power_state, record.reservation))


class TestWithoutBroker(RpcTestCase):

    def test_no_transport_url_no_rpc(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        options = self.options("ha", db_fixture.url)
        del options["DEFAULT"]["transport_url"]
        conductor = self.start_conductor(options, name="ha")
        db = db_fixture.connect(upgrade=False)
        self.wait_workers(db, "ha", 2)
        base.wait_for(lambda: conductor.log().count(
            "RPC disabled: [DEFAULT] transport_url is not set") == 2, 10,
            "each worker says RPC is disabled")
        self.assertNotIn("RPC server of", conductor.log())

    def test_manage_with_unreachable_broker(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        db_fixture.connect()
        path = os.path.join(self.workdir, "m.conf")
        with open(path, "w") as stream:
            stream.write("[DEFAULT]\ntransport_url = rabbit://guest:"
                         "s3cret@127.0.0.1:1/\n[database]\nconnection = %s\n"
                         % db_fixture.url)
        out = self.run_manage(path, "status", check=1)
        self.assertEqual("conductor-manage: ERROR: Message broker "
                         "unreachable: 127.0.0.1:1 ([Errno 111] Connection "
                         "refused)\n", out.stderr)


class TestBrokerRestart(RpcTestCase):

    def broker(self) -> RabbitVhost | PrivateRabbitMQ:
        # NOTE: this test stops the broker: a private one, never the
        # shared one the other tests use.
        self.private = PrivateRabbitMQ()
        return self.private

    def test_rpc_resumes_and_periodics_go_on(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        conductor = self.start("ha", db_fixture)
        db = db_fixture.connect(upgrade=False)
        db.create_node({"driver": "fake", "name": "n1"})
        api = self.api(timeout=5)
        self.assertEqual("n1", api.get_node("n1")["name"])
        pids = sorted(child.pid for child in conductor.children())

        self.private.node.stop_app()
        stopped = time.time()
        # Power sync sweeps keep coming while the broker is away.
        try:
            base.wait_for(
                lambda: len({worker for when, worker, _
                             in sweeps(conductor, "ha")
                             if when > stopped + 2 * SYNC_INTERVAL}) == 2,
                15, "sweeps of both workers during the outage")
        except AssertionError as exc:
            raise AssertionError("%s; stopped at %.3f, log:\n%s" % (
                exc, stopped, "\n".join(
                    line for line in conductor.log_lines()
                    if "sweep" in line or "ERROR" in line
                    or "WARNING" in line)[-6000:]))
        self.private.node.start_app()
        mark = len(conductor.log())

        def answers() -> bool:
            try:
                return api.get_node("n1")["name"] == "n1"
            except (messaging.MessagingException,
                    exceptions.ConductorException):
                return False
        base.wait_for(answers, 60, "RPC answers again", interval=0.5)
        done = api.set_power_state("n1", "on", wait=True)
        self.assertEqual(states.POWER_ON, done["power_state"])

        # Both workers consume again, each when its own reconnect back-off
        # ends (the first to answer may be alone for a few seconds): calls
        # made to the topic come to land on both, in the same processes.
        def answered() -> set[str]:
            return {match.group(1) for match in re.finditer(
                r"\[ha worker (\d)\] .*get_node: Node nope could not be "
                r"found", conductor.log()[mark:])}

        def both_answer() -> bool:
            self.assertRaises(exceptions.NodeNotFound, api.get_node, "nope")
            return answered() == {"0", "1"}
        try:
            base.wait_for(both_answer, 45, "calls answered by both workers",
                          interval=0.2)
        except AssertionError as exc:
            raise AssertionError("%s; answered by %s; log:\n%s" % (
                exc, sorted(answered()), conductor.log_tail()))
        self.assertEqual(pids, sorted(child.pid
                                      for child in conductor.children()))


class TestTwoHostTakeover(RpcTestCase):

    def test_sigkill_of_a_host_hands_its_nodes_over(self) -> None:
        db_fixture = self.useFixture(base.Database("mysql"))
        db = db_fixture.connect()
        nodes = [db.create_node({"driver": "fake", "name": "n%02d" % i})
                 for i in range(20)]
        host_a = self.start("ha", db_fixture, workers=2)
        host_b = self.start("hb", db_fixture, workers=2)

        def polled(conductor: base.ConductorProcess, host: str,
                   after: float) -> int:
            """Nodes in the last sweep after ``after`` of each worker."""
            last: dict[int, int] = {}
            for when, worker, count in sweeps(conductor, host):
                if when > after:
                    last[worker] = count
            return sum(last.values()) if len(last) == 2 else -1

        now = time.time()
        base.wait_for(lambda: polled(host_a, "ha", now) > 0
                      and polled(host_a, "ha", now)
                      + polled(host_b, "hb", now) == len(nodes), 30,
                      "the nodes split between ha and hb")
        shared = polled(host_a, "ha", now)
        self.assertLess(shared, len(nodes))
        view = ownership.Rings(db, "probe", 0,
                               heartbeat_timeout=HEARTBEAT_TIMEOUT,
                               reset_interval=1)
        view.refresh(force=True)
        of_b = [n for n in nodes if view.owner_host(n.uuid) == "hb"]
        # A reservation hb held when it died.
        db.reserve_node(of_b[0].uuid, "hb:1")

        host_b.kill()
        killed = time.time()
        deadline = HEARTBEAT_TIMEOUT + SYNC_INTERVAL
        base.wait_for(lambda: polled(host_a, "ha", killed) == len(nodes),
                      deadline + 10, "ha polls every node")
        took = time.time() - killed
        # NOTE: three seconds of slack for the sweep itself and log
        # polling on a loaded machine.
        self.assertLess(took, deadline + 3.0,
                        "ha took %.1fs to poll hb's nodes" % took)
        self.assertIsNone(db.get_node(of_b[0].uuid).reservation)
        # RPC for a former hb node now lands on ha, which owns it.
        api = self.api()
        done = api.set_power_state(of_b[0].uuid, "on", wait=True)
        self.assertEqual(states.POWER_ON, done["power_state"])
        self.assertIn("(%s): power on done" % of_b[0].uuid,
                      host_a.log())


def publish_orphaned_calls(url: str, node: str, count: int) -> str:
    """``count`` get_node calls naming a reply queue that does not exist.

    Built with oslo.messaging's own envelope helpers, as its RPC client
    builds a call, as if the caller was killed right after sending.
    :returns: the missing reply queue's name.
    """
    gone = "reply_gone_%s" % uuid.uuid4().hex
    context = rpc.new_context().to_dict()
    with kombu.Connection(url.replace("rabbit://", "amqp://", 1)) as conn:
        producer = conn.Producer()
        for _ in range(count):
            msg: dict[str, Any] = {
                "method": "get_node", "args": {"node": node},
                "version": rpcapi.ConductorAPI.RPC_API_VERSION,
                "_msg_id": uuid.uuid4().hex, "_reply_q": gone,
                "_timeout": None}
            rpc_amqp._add_unique_id(msg)
            rpc_amqp.pack_context(msg, context)
            # NOTE: oslo.messaging's default control exchange.
            producer.publish(rpc_common.serialize_msg(msg),
                             exchange="openstack", routing_key=rpc.TOPIC)
    return gone


class TestOrphanedCallFlood(RpcTestCase):

    #: Orphaned calls, five times the RPC threads of the one worker.
    FLOOD = 20
    RPC_THREADS = 4
    #: Well below oslo.messaging's own 60 s retry of a missing reply queue.
    BOUND = 15

    def test_valid_call_answered_soon_after_a_flood(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        conductor = self.start(
            "ha", db_fixture, workers=1,
            DEFAULT={"executor_thread_pool_size": self.RPC_THREADS},
            conductor={"sync_power_state_interval": 0})
        db = db_fixture.connect(upgrade=False)
        node = db.create_node({"driver": "fake", "name": "n1"})
        api = self.api(timeout=self.BOUND + 5)
        self.assertEqual(node.uuid, api.get_node("n1")["uuid"])

        gone = publish_orphaned_calls(self.vhost.url, node.uuid, self.FLOOD)
        started = time.monotonic()
        try:
            answer = api.get_node("n1")
        except messaging.MessagingTimeout:
            self.fail("no answer %ds after %d orphaned calls\n%s"
                      % (self.BOUND + 5, self.FLOOD, conductor.log_tail()))
        took = time.monotonic() - started
        self.assertEqual(node.uuid, answer["uuid"])
        self.assertLessEqual(took, self.BOUND, "answered after %.1fs" % took)
        # The flood did take every RPC thread: the worker gave up a reply
        # to the missing queue, and dropped the others to it.
        log = conductor.log()
        self.assertIn("due to a missing queue (%s). Abandoning" % gone, log)
        self.assertIn("%s doesn't exist, drop reply" % gone, log)

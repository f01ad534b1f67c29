# SPDX-License-Identifier: Apache-2.0
"""The same schema and CLI on SQLite, MariaDB and PostgreSQL, for real."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import threading
from typing import Any
from unittest import mock

import fixtures
from oslo_utils import timeutils
import sqlalchemy as sa
import testscenarios

from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor import startup
from tests.functional import base

load_tests = testscenarios.load_tests_apply_scenarios


class TestCliOnBackend(base.FunctionalTestCase):

    scenarios = [("sqlite", {"backend": "sqlite"})] + base.SERVER_BACKENDS
    backend: str

    def setUp(self) -> None:
        super().setUp()
        self.db_fixture = self.useFixture(
            base.Database(self.backend, state_dir=self.workdir))
        self.config_file = os.path.join(self.workdir, "manage.conf")
        with open(self.config_file, "w") as stream:
            stream.write("[DEFAULT]\nstate_path = %s\nenabled_drivers = "
                         "fake\n[database]\nconnection = %s\n"
                         % (self.workdir, self.db_fixture.url))

    def manage(self, *args: str, check: int | None = 0
               ) -> subprocess.CompletedProcess[str]:
        return self.run_manage(self.config_file, *args, check=check)

    def nodes(self) -> list[dict]:
        return json.loads(self.manage("node", "list", "--format",
                                      "json").stdout)

    def test_schema_and_node_lifecycle(self) -> None:
        unsynced = self.manage("node", "list", check=1)
        self.assertIn("run 'conductor-manage db sync'", unsynced.stderr)
        self.manage("db", "sync")
        self.assertIn("0009_conductor_changes (head: "
                      "0009_conductor_changes)",
                      self.manage("db", "version").stdout)
        # Again: upgrading an up-to-date schema does nothing.
        self.manage("db", "sync")

        created = json.loads(self.manage(
            "node", "create", "--driver", "fake", "--name", "n1",
            "--driver-info", "fake_latency_ms=5", "--format", "json").stdout)
        self.assertEqual({"fake_latency_ms": 5}, created["driver_info"])

        dup = self.manage("node", "create", "--driver", "fake", "--name",
                          "n1", check=1)
        self.assertEqual("conductor-manage: ERROR: A node with name n1 "
                         "already exists.", dup.stderr.strip())
        bad_driver = self.manage("node", "create", "--driver", "nosuch",
                                 check=1)
        self.assertIn("Driver nosuch is not enabled", bad_driver.stderr)
        bad_name = self.manage("node", "create", "--driver", "fake",
                               "--name", "bad name", check=1)
        self.assertIn("Node name 'bad name' is invalid", bad_name.stderr)

        inventory = os.path.join(self.workdir, "fleet.yaml")
        with open(inventory, "w") as stream:
            stream.write("- {name: n2, driver: fake}\n"
                         "- {name: n3, driver: fake,"
                         " driver_info: {fake_fail: get}}\n")
        self.manage("node", "import", inventory)
        self.assertEqual(["n1", "n2", "n3"],
                         [node["name"] for node in self.nodes()])

        # All or nothing: a clash in the middle stores nothing.
        with open(inventory, "w") as stream:
            stream.write("- {name: n4, driver: fake}\n"
                         "- {name: n1, driver: fake}\n")
        clash = self.manage("node", "import", inventory, check=1)
        self.assertIn("n1 already exists", clash.stderr)
        with open(inventory, "w") as stream:
            stream.write("- {name: n4, driver: fake\n")
        malformed = self.manage("node", "import", inventory, check=1)
        self.assertIn("malformed YAML at line 2", malformed.stderr)
        self.assertEqual(3, len(self.nodes()))

        updated = json.loads(self.manage(
            "node", "set", "n2", "--name", "n2b", "--maintenance", "on",
            "--maintenance-reason", "testing", "--format", "json").stdout)
        self.assertEqual(("n2b", True, "testing"),
                         (updated["name"], updated["maintenance"],
                          updated["maintenance_reason"]))
        self.manage("node", "set", "n2b", "--name", "n3", check=1)

        self.manage("node", "power", "n1", "on", "--queue")
        shown = json.loads(self.manage("node", "show", created["uuid"],
                                       "--format", "json").stdout)
        self.assertEqual("power on", shown["target_power_state"])
        locked = self.manage("node", "power", "n1", "off", "--queue",
                             check=1)
        self.assertIn("pending 'power on' action", locked.stderr)

        self.manage("node", "delete", "n3")
        missing = self.manage("node", "show", "n3", check=1)
        self.assertEqual("conductor-manage: ERROR: Node n3 could not be "
                         "found.", missing.stderr.strip())
        self.assertEqual(["n1", "n2b"],
                         [node["name"] for node in self.nodes()])

        status = json.loads(self.manage("status", "--format",
                                        "json").stdout)
        self.assertEqual(2, status["nodes"]["total"])
        self.assertEqual(1, status["nodes"]["maintenance"])

    def upgrade_check(self) -> tuple[int, dict[str, dict]]:
        result = subprocess.run(
            [base.binary("conductor-status"), "--config-file",
             self.config_file, "upgrade", "check", "--json"],
            capture_output=True, text=True, timeout=120)
        checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
        return result.returncode, checks

    def test_upgrade_check(self) -> None:
        # An older schema fails, naming the problem.
        engine = db_engine.create_engine(self.db_fixture.url)
        self.addCleanup(engine.dispose)
        migration.upgrade(engine, "0002_power_request_time")
        code, checks = self.upgrade_check()
        self.assertEqual(2, code, str(checks))
        self.assertIn("schema revision 0002_power_request_time is older than "
                      "this release's", checks["Database schema"]["details"])
        # At head (a fresh database after db sync), every check passes.
        self.manage("db", "sync")
        code, checks = self.upgrade_check()
        self.assertEqual(0, code, str(checks))
        expected = {"sqlite": "sqlite", "mysql": "mariadb",
                    "postgresql": "postgresql"}[self.backend]
        self.assertTrue(checks["Database version"]["details"].startswith(
            expected + " "), str(checks))

    def test_power_action_claims(self) -> None:
        db = self.db_fixture.connect()
        one, two = db.import_nodes([{"name": "c1", "driver": "fake"},
                                    {"name": "c2", "driver": "fake"}])
        db.request_power_state(one.uuid, "power on")
        # The reserving UPDATE claims a pending action, once.
        self.assertEqual("first", db.reserve_node(
            one.uuid, "h:0", claim="first").power_action_claim)
        self.assertIsNone(db.reserve_node(
            two.uuid, "h:0", claim="other").power_action_claim)
        self.assertEqual(1, db.release_reservations(holders=["h:0"],
                                                    exclude=[two.uuid]))
        self.assertEqual({two.uuid: "h:0"}, db.reservations())
        again = db.reserve_node(one.uuid, "h:1", claim="second")
        self.assertEqual(("h:1", "first"),
                         (again.reservation, again.power_action_claim))

    def test_conductor_runs_on_backend(self) -> None:
        self.manage("db", "sync")
        conductor = self.start_conductor({
            "DEFAULT": {"host": "bk-%s" % self.backend,
                        "enabled_drivers": "fake"},
            "database": {"connection": self.db_fixture.url},
            "conductor": {"workers": 2, "heartbeat_interval": 1,
                          "heartbeat_timeout": 5}})
        db = self.db_fixture.connect(upgrade=False)
        rows = self.wait_workers(db, "bk-%s" % self.backend, 2)
        self.assertEqual([0, 1], [row.worker_id for row in rows])
        status = json.loads(self.manage("status", "--format",
                                        "json").stdout)
        self.assertEqual([True, True],
                         [w["alive"] for w in status["workers"]])
        conductor.signal(15)
        self.assertEqual(0, conductor.wait_exit(15))
        self.assertFalse(any(row.online for row in db.list_conductors()))

    def _inventory_conductor(self, count: int, bad_at: int = 0
                             ) -> base.ConductorProcess:
        path = os.path.join(self.workdir, "fleet.yaml")
        with open(path, "w") as stream:
            for number in range(1, count + 1):
                stream.write("- name: n%04d\n  driver: %s\n" % (
                    number, "nope" if number == bad_at else "fake"))
        return self.start_conductor({
            "DEFAULT": {"host": "inv-%s" % self.backend,
                        "enabled_drivers": "fake", "inventory_file": path},
            "database": {"connection": self.db_fixture.url},
            "conductor": {"workers": 1, "sync_power_state_interval": 0}})

    def test_start_up_enrols_a_large_inventory(self) -> None:
        # Big enough to be parsed and validated in parts (one child
        # process each), then enrolled in one transaction.
        conductor = self._inventory_conductor(1200)
        base.wait_for(lambda: "starting 1 worker(s)" in conductor.log(),
                      60, "start-up to finish")
        log = conductor.log()
        self.assertIn("1200 node(s) enrolled, 0 already present", log)
        parts = min(startup.parse_parts(), 1200 // 500)
        for number in range(1, parts + 1):
            self.assertIn("[async inventory-parse-%d] finished" % number,
                          log)
        self.assertNotIn("checking it whole", log)
        db = self.db_fixture.connect(upgrade=False)
        self.assertEqual(1200, len(db.list_nodes()))
        conductor.signal(15)
        self.assertEqual(0, conductor.wait_exit(30))

    def test_bad_late_inventory_entry_enrols_nothing(self) -> None:
        # Entry 1150, in the last part, fails validation after the other
        # parts passed theirs: nothing may be enrolled.
        conductor = self._inventory_conductor(1200, bad_at=1150)
        self.assertEqual(1, conductor.wait_exit(60))
        self.assertIn("node #1150 (n1150): Driver nope is not enabled",
                      conductor.log())
        db = self.db_fixture.connect(upgrade=False)
        self.assertEqual([], db.list_nodes())


class TestWorkersRegisterAtOnce(base.FunctionalTestCase):
    """A fleet of new hosts starting at once: every worker registers."""

    scenarios = base.SERVER_BACKENDS
    backend: str

    def test_concurrent_registrations_all_land(self) -> None:
        dbf = self.useFixture(base.Database(self.backend))
        dbf.connect()       # the schema
        workers = [("h%02d" % host, worker) for host in range(12)
                   for worker in range(2)]
        # NOTE: one engine each, as in separate worker processes.
        connections = [db_api.Connection.create(dbf.url) for _ in workers]
        for db in connections:
            self.addCleanup(db.dispose)
        failures: list[str] = []
        for round_ in range(3):
            go = threading.Barrier(len(workers))

            def register(db: db_api.Connection, host: str,
                         worker: int) -> None:
                go.wait()
                try:
                    db.register_conductor(host, worker, ["fake"],
                                          pid=round_)
                except Exception as exc:
                    failures.append("%s:%d: %s" % (
                        host, worker, str(exc).splitlines()[0]))

            threads = [threading.Thread(target=register, args=(db,) + w)
                       for db, w in zip(connections, workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            # NOTE: left in place, the rows would make the next round's
            # registrations updates; deleted, every round races to insert.
            if round_ < 2:
                records = connections[0].list_conductors()
                self.assertEqual(len(workers), len(records),
                                 "; ".join(failures))
                for host in {h for h, _ in workers}:
                    connections[0].delete_conductors(host, [0, 1])
        self.assertEqual([], failures)
        records = connections[0].list_conductors()
        self.assertEqual(sorted("%s:%d" % w for w in workers),
                         sorted(r.holder for r in records))
        self.assertEqual({2}, {r.pid for r in records})


class TestAStoppedWorkerStaysOffline(base.FunctionalTestCase):
    """A heartbeat begun before the stop's offline mark is not written.

    Also where the server keeps whole seconds (MariaDB): the mark and the
    beat fall in the same second here.
    """

    scenarios = base.SERVER_BACKENDS
    backend: str

    def test_a_late_beat_is_refused(self) -> None:
        dbf = self.useFixture(base.Database(self.backend))
        db = dbf.connect()
        self.addCleanup(db.dispose)
        db.register_conductor("h", 0, ["fake"], pid=7)
        second = timeutils.utcnow().replace(microsecond=0)
        with mock.patch.object(
                timeutils, "utcnow", autospec=True,
                return_value=second + datetime.timedelta(seconds=0.7)):
            db.set_offline("h", 0)
        begun = second + datetime.timedelta(seconds=0.2)
        self.assertFalse(db.heartbeat("h", 0, at=begun, pid=7))
        [record] = db.list_conductors()
        self.assertEqual((False, 7), (record.online, record.pid))
        later = second + datetime.timedelta(seconds=1.7)
        self.assertTrue(db.heartbeat("h", 0, at=later))
        self.assertTrue(db.list_conductors()[0].online)


class TestChangeFeedUsesTheIndex(base.FunctionalTestCase):
    """A worker's change feed reads the rows changed, not all of its."""

    def test_many_partitions_on_a_small_table(self) -> None:
        dbf = self.useFixture(base.Database("mysql"))
        db = dbf.connect()
        db.import_nodes([{"name": "n%04d" % i, "driver": "fake",
                          "driver_info": {}} for i in range(600)],
                        read_back=False)
        now = datetime.datetime(2030, 1, 1, 12, 0, 0)
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any,
                    *args: Any) -> None:
            if "changed_at" in statement:
                statements.append((statement, params))

        with db.engine.begin() as conn:
            conn.execute(sa.text("UPDATE nodes SET changed_at = :at"),
                         {"at": now - datetime.timedelta(hours=1)})
            conn.execute(sa.text("ANALYZE TABLE nodes"))
        sa.event.listen(db.engine, "before_cursor_execute", capture)
        # One worker of one host: half of the 1024 partitions, more than
        # the server's index-dive limit.
        mine = list(range(0, 1024, 2))
        self.assertEqual([], db.changed_sync_rows(partitions=mine,
                                                  since=now)[0])
        statement, params = statements[-1]
        with db.engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("EXPLAIN " + statement, params)
            columns = [d[0] for d in cursor.description]
            plans = [dict(zip(columns, row)) for row in cursor.fetchall()]
        [plan] = [plan for plan in plans if plan["table"] == "nodes"]
        self.assertEqual(("range", db_api.CHANGED_INDEX),
                         (plan["type"], plan["key"]), str(plans))


class TestWorkersReadOnce(base.FunctionalTestCase):
    """Every worker reads the workers' rows often: each row once a read."""

    def test_no_sort_by_the_server(self) -> None:
        dbf = self.useFixture(base.Database("mysql"))
        db = dbf.connect()
        # Registered out of order: the records still come sorted.
        for host, worker_id in [("h2", 1), ("h1", 1), ("h2", 0), ("h1", 0)]:
            db.register_conductor(host, worker_id, ["fake"])
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any,
                    *args: Any) -> None:
            if "FROM conductors" in statement:
                statements.append((statement, params))

        sa.event.listen(db.engine, "before_cursor_execute", capture)
        records = db.list_conductors()
        self.assertEqual([("h1", 0), ("h1", 1), ("h2", 0), ("h2", 1)],
                         [(r.host, r.worker_id) for r in records])
        [(statement, params)] = statements
        with db.engine.connect() as conn:
            cursor = conn.connection.cursor()
            cursor.execute("EXPLAIN " + statement, params)
            columns = [d[0] for d in cursor.description]
            plans = [dict(zip(columns, row)) for row in cursor.fetchall()]
        # NOTE: a filesort reads every row a second time (MariaDB's
        # Innodb_rows_read doubles): 20 workers of 10 hosts reading 20
        # rows every 5 s read 160 rows a second instead of 80.
        self.assertFalse(any("filesort" in str(plan.get("Extra"))
                             for plan in plans), str(plans))


class TestStampsOfSeveralRuns(base.FunctionalTestCase):
    """Stamps of several sync runs, one statement: each node its time."""

    scenarios = [("sqlite", {"backend": "sqlite"})] + base.SERVER_BACKENDS
    backend: str

    def test_each_node_its_latest_time(self) -> None:
        db = self.useFixture(base.Database(self.backend)).connect()
        nodes = db.import_nodes([{"name": name, "driver": "fake",
                                  "driver_info": {}}
                                 for name in ("a", "b", "c", "gone")])
        uuid = {node.name: node.uuid for node in nodes}
        db.delete_node("gone")
        t1 = datetime.datetime(2030, 1, 1, 12, 0, 1)
        t2 = t1 + datetime.timedelta(seconds=1)
        t3 = t2 + datetime.timedelta(seconds=1)
        missing: set[str] = set()
        self.assertEqual(0, db.apply_sync_results(
            [], missing=missing,
            stamps=[(t1, [uuid["a"], uuid["b"], uuid["gone"]]),
                    (t3, [uuid["a"]]), (t2, [uuid["c"]])]))
        self.assertEqual({"a": t3, "b": t1, "c": t2},
                         {name: db.get_node(name).power_checked_at
                          for name in ("a", "b", "c")})
        self.assertEqual({uuid["gone"]}, missing)


class KeptConnectionTestCase(base.FunctionalTestCase):
    """One node on a server backend; counts the pool's checkouts."""

    scenarios = base.SERVER_BACKENDS
    backend: str

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database(self.backend))
        self.db = self.dbf.connect()
        self.addCleanup(self.db.dispose)
        self.node = self.db.import_nodes([{"name": "n1", "driver": "fake",
                                           "driver_info": {}}])[0]
        self.checkouts = 0

        def checkout(*args: Any) -> None:
            self.checkouts += 1

        sa.event.listen(self.db.engine.pool, "checkout", checkout)

    def server_id(self) -> int:
        """The server's id of the kept connection (one is checked out)."""
        query = sa.text("SELECT CONNECTION_ID()" if self.backend == "mysql"
                        else "SELECT pg_backend_pid()")
        return int(self.db._fetch(query)[0][0])

    def kill_kept_connection(self, admin: db_api.Connection) -> int:
        """End the kept connection on the server side; its id."""
        lost = self.server_id()
        with admin.engine.begin() as conn:
            conn.execute(sa.text("KILL %d" % lost if self.backend == "mysql"
                                 else "SELECT pg_terminate_backend(%d)"
                                 % lost))
        return lost


class TestFrequentReadsKeepOneConnection(KeptConnectionTestCase):
    """The per-second reads share one kept autocommit connection."""

    def reads(self) -> list[Any]:
        """Five reads: clock, feed (probe and rows), workers, nodes."""
        since = self.db.clock() - datetime.timedelta(hours=1)
        return [self.db.changed_sync_rows(partitions=[self.node.partition],
                                          since=since)[0],
                self.db.list_conductors(),
                self.db.node_uuids(partitions=[self.node.partition])]

    def test_one_checkout_for_many_reads(self) -> None:
        for _ in range(5):
            self.reads()
        self.assertEqual(1, self.checkouts)

    def test_each_read_sees_writes_committed_since(self) -> None:
        # NOTE: held in a transaction, a MariaDB connection would read its
        # first snapshot again (REPEATABLE READ) and miss this change.
        since = self.db.clock() - datetime.timedelta(seconds=1)
        self.assertEqual([self.node.uuid], self.db.node_uuids())
        other = self.dbf.connect(upgrade=False)
        self.addCleanup(other.dispose)
        other.update_node("n1", {"maintenance": True})
        rows, _ = self.db.changed_sync_rows(
            partitions=[self.node.partition], since=since)
        self.assertEqual([True], [row.maintenance for row in rows])
        self.assertEqual([self.node.uuid],
                         self.db.node_uuids(maintenance=True))
        self.assertEqual(1, self.checkouts)

    def test_a_lost_connection_is_read_again_on_a_new_one(self) -> None:
        self.reads()
        admin = self.dbf.connect(upgrade=False)
        self.addCleanup(admin.dispose)
        lost = self.kill_kept_connection(admin)
        self.assertEqual([self.node.uuid], self.reads()[2])
        self.assertNotEqual(lost, self.server_id())
        self.assertEqual(2, self.checkouts)

    def test_checked_out_again_after_its_age(self) -> None:
        self.useFixture(fixtures.MonkeyPatch(
            "conductor.db.api.KEPT_MAX_AGE", 0.0))
        self.reads()
        self.assertEqual(5, self.checkouts)

    def test_reads_after_dispose_go_through_the_pool(self) -> None:
        self.reads()
        self.db.dispose()
        self.assertIsNone(self.db._kept)
        self.reads()
        self.assertIsNone(self.db._kept)
        self.assertEqual(6, self.checkouts)

    def test_a_read_beside_another_goes_through_the_pool(self) -> None:
        self.reads()
        with self.db._kept_lock:
            self.assertEqual([self.node.uuid], self.db.node_uuids())
        self.assertEqual(2, self.checkouts)


class TestSmallWritesOnTheKeptConnection(KeptConnectionTestCase):
    """Heartbeats and stamps alone go on the kept connection, committed."""

    def setUp(self) -> None:
        super().setUp()
        self.db.register_conductor("h", 0, ["fake"])
        self.checkouts = 0
        self.other = self.dbf.connect(upgrade=False)
        self.addCleanup(self.other.dispose)

    def write(self, at: datetime.datetime) -> None:
        self.db.heartbeat("h", 0, status={"at": at.isoformat()})
        self.db.apply_sync_results([], stamps=[(at, [self.node.uuid])])

    def seen(self) -> tuple[Any, Any]:
        """The heartbeat's status and the stamp, read by another client."""
        [worker] = self.other.list_conductors(with_status=True)
        return worker.status, self.other.get_node("n1").power_checked_at

    def test_one_checkout_and_each_write_is_committed(self) -> None:
        for second in range(1, 4):
            at = datetime.datetime(2026, 1, 1, 0, 0, second)
            self.write(at)
            # NOTE: another client sees each at once: nothing is left in
            # an open transaction.
            self.assertEqual(({"at": at.isoformat()}, at), self.seen())
        self.db.clock()
        self.assertEqual(1, self.checkouts)

    def test_a_lost_connection_is_written_again_on_a_new_one(self) -> None:
        self.write(datetime.datetime(2026, 1, 1))
        self.kill_kept_connection(self.other)
        at = datetime.datetime(2026, 1, 2)
        self.write(at)
        self.assertEqual(({"at": at.isoformat()}, at), self.seen())
        self.assertEqual(2, self.checkouts)

    def test_writes_beside_a_read_are_committed_through_the_pool(
            self) -> None:
        self.write(datetime.datetime(2026, 1, 1))
        at = datetime.datetime(2026, 1, 4)
        with self.db._kept_lock:      # another thread reads meanwhile
            self.write(at)
        self.assertEqual(({"at": at.isoformat()}, at), self.seen())
        self.assertEqual(3, self.checkouts)

    def test_stamps_with_changes_keep_their_transaction(self) -> None:
        self.write(datetime.datetime(2026, 1, 1))
        at = datetime.datetime(2026, 1, 3)
        self.db.apply_sync_results(
            [{"uuid": self.node.uuid, "power_state": "power on"}],
            stamps=[(at, [self.node.uuid])])
        node = self.other.get_node("n1")
        self.assertEqual(("power on", at),
                         (node.power_state, node.power_checked_at))
        self.assertEqual(2, self.checkouts)


class TestNoKeptConnectionOnSqlite(base.FunctionalTestCase):
    """SQLite reads through the pool: no round trip to save."""

    def test_no_connection_kept(self) -> None:
        db = self.useFixture(base.Database("sqlite")).connect()
        self.addCleanup(db.dispose)
        db.list_conductors()
        db.clock()
        self.assertIsNone(db._kept)

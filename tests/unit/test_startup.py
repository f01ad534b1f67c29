# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the start-up steps (conductor.startup), on SQLite."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any, Callable, cast
from unittest import mock

import fixtures
from oslo_db import exception as db_exc
import sqlalchemy as sa

from conductor.common import async_tasks
from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.drivers import fake
from conductor import inventory
from conductor import startup
from tests import base


def entries(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "driver": "fake"} for name in names]


def _dying_parser(marker: str) -> Callable[[str, str], list[Any]]:
    """inventory.parse_text, but the process dies on a text with ``marker``.

    Patched in the parent, it is what the forked checking processes run.
    """
    real_parse = inventory.parse_text

    def parse(text: str, path: str) -> list[Any]:
        if marker in text:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_parse(text, path)
    return parse


class StartupTestCase(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db = self.make_db()
        self.config(connection=str(self.db.engine.url), group="database")
        self.config(inventory_file="/srv/fleet.yaml")
        self.drivers = {"fake": fake.FakeDriver()}
        self.logger = self.useFixture(fixtures.FakeLogger(
            name=startup.__name__, level=logging.INFO))

    def stored_names(self) -> list[str]:
        return sorted(cast(str, n.name) for n in self.db.list_nodes())

    def prepare(self, read_nodes: bool = False) -> startup.DatabaseState:
        return startup.prepare_database(self.conf, self.db, read_nodes)


class TestPrepareDatabase(StartupTestCase):

    def test_reads_the_stored_nodes_when_asked(self) -> None:
        self.db.import_nodes(entries("a", "b"))
        state = self.prepare(read_nodes=True)
        self.assertEqual(frozenset({"a", "b"}), state.names)
        self.assertEqual(2, len(state.uuids))
        self.assertIn("2 node(s) stored", self.logger.output)

    def test_reads_nothing_otherwise(self) -> None:
        self.db.import_nodes(entries("a"))
        state = self.prepare()
        self.assertEqual((frozenset(), frozenset()),
                         (state.names, state.uuids))
        self.assertTrue(state.revision)


class TestOpenDatabase(StartupTestCase):

    def test_a_new_start_ends_the_drain_of_its_host(self) -> None:
        self.config(host="h1")
        for host in ("h1", "h2"):
            self.db.register_conductor(host, 0, ["fake"])
            self.db.set_draining(host)
            self.db.set_offline(host)
        opened: list[Any] = []
        startup.open_database(self.conf, False, opened)
        for db in opened:
            db.dispose()
        self.assertEqual({"h1": False, "h2": True},
                         {r.host: r.draining
                          for r in self.db.list_conductors()})
        self.assertIn("h1 was drained when it last stopped",
                      self.logger.output)


class TestImportInventory(StartupTestCase):

    def validated(self, *names: str) -> list[dict[str, Any]]:
        return inventory.validate(entries(*names), self.drivers)

    def test_enrols_only_what_was_not_stored(self) -> None:
        self.db.import_nodes(entries("a"))
        stored = self.prepare(read_nodes=True)
        added = startup.import_inventory(
            self.conf, self.validated("a", "b", "c"), stored, self.db)
        self.assertEqual(2, added)
        self.assertEqual(["a", "b", "c"], self.stored_names())
        self.assertIn("2 node(s) enrolled, 1 already present",
                      self.logger.output)

    def test_nothing_new_writes_nothing(self) -> None:
        self.db.import_nodes(entries("a", "b"))
        stored = self.prepare(read_nodes=True)
        with mock.patch.object(self.db, "import_nodes",
                               autospec=True) as insert:
            added = startup.import_inventory(
                self.conf, self.validated("a", "b"), stored, self.db)
        self.assertEqual(0, added)
        insert.assert_not_called()

    def test_nodes_enrolled_meanwhile_by_another_conductor(self) -> None:
        # Read before another conductor, sharing the database and the
        # inventory, enrolled "b": its row must not fail this start.
        stored = self.prepare(read_nodes=True)
        self.db.import_nodes(entries("b"))
        added = startup.import_inventory(
            self.conf, self.validated("a", "b", "c"), stored, self.db)
        self.assertEqual(2, added)
        self.assertEqual(["a", "b", "c"], self.stored_names())
        self.assertIn("1 of these nodes were enrolled by another conductor "
                      "meanwhile; enrolling the other 2", self.logger.output)

    def test_a_clash_nobody_explains_is_raised(self) -> None:
        stored = self.prepare(read_nodes=True)
        clash = exceptions.DuplicateName(name="a")
        with mock.patch.object(db_api.Connection, "import_nodes",
                               autospec=True, side_effect=clash) as insert:
            exc = self.assertRaises(
                exceptions.DuplicateName, startup.import_inventory,
                self.conf, self.validated("a"), stored, self.db)
        self.assertIs(clash, exc)
        self.assertEqual(1, insert.call_count)
        self.assertEqual([], self.stored_names())

    def test_a_deadlock_victim_is_tried_again(self) -> None:
        stored = self.prepare(read_nodes=True)
        real_insert = db_api.Connection.import_nodes
        attempts: list[int] = []

        def insert(db: db_api.Connection, *args: Any, **kw: Any) -> Any:
            attempts.append(1)
            if len(attempts) < 3:
                raise db_exc.DBDeadlock()
            return real_insert(db, *args, **kw)

        with mock.patch.object(db_api.Connection, "import_nodes", insert), \
                mock.patch("time.sleep") as sleep:
            added = startup.import_inventory(
                self.conf, self.validated("a", "b"), stored, self.db)
        self.assertEqual(2, added)
        self.assertEqual(3, len(attempts))
        self.assertEqual(2, sleep.call_count)
        self.assertEqual(["a", "b"], self.stored_names())

    def test_a_server_lost_meanwhile_names_the_database(self) -> None:
        stored = self.prepare(read_nodes=True)
        lost = sa.exc.OperationalError("INSERT", {}, Exception("gone"))
        with mock.patch.object(self.db, "import_nodes", autospec=True,
                               side_effect=lost):
            exc = self.assertRaises(
                exceptions.DatabaseUnavailable, startup.import_inventory,
                self.conf, self.validated("a"), stored, self.db)
        self.assertIn(db_engine.mask_url(self.conf.database.connection),
                      str(exc))
        self.assertIn("gone", str(exc))

    def test_other_errors_are_not_blamed_on_the_database(self) -> None:
        stored = self.prepare(read_nodes=True)
        with mock.patch.object(self.db, "import_nodes", autospec=True,
                               side_effect=TypeError("a bug")):
            self.assertRaises(TypeError, startup.import_inventory,
                              self.conf, self.validated("a"), stored,
                              self.db)


class TestCheckInventoryPart(StartupTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(enabled_drivers=["fake"])

    def check(self, text: str, first: int = 1,
              count: int | None = None) -> list[dict[str, Any]]:
        return startup.check_inventory_part(
            self.conf, inventory.Part(first=first, count=count, text=text))

    def test_entries_are_validated(self) -> None:
        nodes = self.check("- {name: a, driver: fake}\n"
                           "- {name: b, driver: fake,"
                           " driver_info: {fake_latency_ms: 5}}\n")
        self.assertEqual(["a", "b"], [n["name"] for n in nodes])
        self.assertEqual({"fake_latency_ms": 5}, nodes[1]["driver_info"])

    def test_errors_name_the_entry_by_its_place_in_the_file(self) -> None:
        exc = self.assertRaises(
            exceptions.DriverNotEnabled, self.check,
            "- {name: a, driver: fake}\n- {name: b, driver: nope}\n",
            first=501)
        self.assertIn("/srv/fleet.yaml: node #502 (b): Driver nope",
                      str(exc))
        nameless = self.assertRaises(exceptions.InvalidParameterValue,
                                     self.check, "- {driver: fake}\n",
                                     first=7)
        self.assertIn("node #7 has neither a name nor a uuid",
                      str(nameless))

    def test_a_part_not_holding_its_count_fails(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.check, "- {name: a, driver: fake}\n",
                                first=3, count=2)
        self.assertIn("the part from entry #3 holds 1 entries, not 2",
                      str(exc))


class TestCheckedInParts(StartupTestCase):
    """_checked joins the parts, or checks the whole file again."""

    parallel = True

    def setUp(self) -> None:
        super().setUp()
        self.config(enabled_drivers=["fake"])
        self.group = async_tasks.TaskGroup(
            self.useFixture(fixtures.TempDir()).path,
            parallel=self.parallel)
        self.addCleanup(self.group.cleanup)

    def checked(self, text: str) -> list[dict[str, Any]]:
        parts = inventory.split_text(text, "f.yaml", 2, min_entries=2)
        self.assertEqual(2, len(parts))
        for number, part in enumerate(parts, start=1):
            self.group.run_process("inventory-parse-%d" % number,
                                   startup.check_inventory_part, self.conf,
                                   part)
        return startup._checked(self.group, self.conf, parts, text)

    def test_parts_are_joined_in_order(self) -> None:
        text = "".join("- {name: n%d, driver: fake}\n" % i
                       for i in range(6))
        self.assertEqual(["n%d" % i for i in range(6)],
                         [n["name"] for n in self.checked(text)])
        self.assertNotIn("checking it whole", self.logger.output)

    def test_alias_across_parts_is_checked_whole(self) -> None:
        text = ("- &x {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n- {<<: *x, name: d}\n"
                "- {name: e, driver: fake}\n")
        self.assertEqual(["a", "b", "c", "d", "e"],
                         [n["name"] for n in self.checked(text)])
        self.assertIn("Checking /srv/fleet.yaml in 2 parts failed "
                      "(inventory-parse-2: ", self.logger.output)

    def test_a_syntax_error_names_the_line_in_the_whole_file(self) -> None:
        text = ("- {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n- {name: d, driver: fake}\n"
                "- {name: [e}\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.checked, text)
        self.assertIn("/srv/fleet.yaml: malformed YAML at line 5", str(exc))

    def test_a_name_in_two_parts_is_the_first_problem_named(self) -> None:
        # Entry 4 repeats entry 1's name (across parts); entry 5 is bad
        # too, but an uncut file reports entry 4 first.
        text = ("- {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n- {name: a, driver: fake}\n"
                "- {name: e, driver: nope}\n- {name: f, driver: fake}\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.checked, text)
        self.assertIn("node #4 (a): name a is also used by node #1",
                      str(exc))

    def test_a_file_too_deep_for_the_parser_spares_the_master(self) -> None:
        # Lists nested this deep are refused by PyYAML >= 6.0.4 ("exceeded
        # maximum nesting depth") and overflowed libyaml's stack before:
        # either way the check fails naming the file, and this process,
        # the master, goes on.
        text = ("- {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n- " + "[" * 30000
                + "]" * 30000 + "\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.checked, text)
        self.assertRegex(str(exc),
                         r"^/srv/fleet\.yaml: (malformed YAML at line 4 |"
                         r"cannot be checked, its checking process died)")

    def test_a_checking_process_that_dies_spares_the_master(self) -> None:
        # A checker that dies (a parser crash, the OOM killer) without a
        # result, made certain here by a SIGKILL in the child.
        die_on = "- {name: d, driver: fake}\n"
        text = ("- {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n" + die_on)
        with mock.patch.object(inventory, "parse_text",
                               side_effect=_dying_parser(die_on)):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    self.checked, text)
        self.assertIn("/srv/fleet.yaml: cannot be checked, its checking "
                      "process died (the process of task inventory-recheck "
                      "ended without a result (killed by signal %d))"
                      % signal.SIGKILL, str(exc))

    def test_a_name_in_two_valid_parts_is_refused(self) -> None:
        text = ("- {name: a, driver: fake}\n- {name: b, driver: fake}\n"
                "- {name: c, driver: fake}\n- {name: a, driver: fake}\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.checked, text)
        self.assertIn("node #4 (a): name a is also used by node #1",
                      str(exc))
        self.assertIn("two parts share a name or uuid", self.logger.output)


class TestRunConnection(StartupTestCase):
    """run(): the database task's one connection serves the import."""

    parallel = True

    def setUp(self) -> None:
        super().setUp()
        self.conf([], project="conductor", default_config_files=[])
        workdir = self.useFixture(fixtures.TempDir()).path
        path = os.path.join(workdir, "fleet.yaml")
        with open(path, "w") as stream:
            stream.write("".join("- {name: n%d, driver: fake}\n" % i
                                 for i in range(4)))
        self.config(enabled_drivers=["fake"], inventory_file=path,
                    parallel_startup=self.parallel,
                    async_log_dir=os.path.join(workdir, "async"))
        self.addCleanup(async_tasks.reset)
        self.made: list[db_api.Connection] = []
        self.disposed: list[db_api.Connection] = []
        real_create = db_api.Connection.create.__func__  # type: ignore
        real_dispose = db_api.Connection.dispose

        def create(cls: Any, *args: Any, **kwargs: Any) -> Any:
            self.made.append(real_create(cls, *args, **kwargs))
            return self.made[-1]

        def dispose(db: db_api.Connection) -> None:
            self.disposed.append(db)
            real_dispose(db)

        self.useFixture(fixtures.MockPatchObject(
            db_api.Connection, "create", classmethod(create)))
        self.useFixture(fixtures.MockPatchObject(
            db_api.Connection, "dispose", dispose))

    def test_one_connection_enrols_and_is_disposed(self) -> None:
        # The schema is created and the nodes written over the one
        # connection the database task made, in this process.
        engines: list[tuple[str, Any]] = []
        real_upgrade = startup.migration.upgrade
        real_insert = db_api.Connection.import_nodes

        def upgrade(engine: Any, *args: Any) -> str:
            engines.append(("upgrade", engine))
            return real_upgrade(engine, *args)

        def insert(db: db_api.Connection, *args: Any, **kw: Any) -> Any:
            engines.append(("insert", db.engine))
            return real_insert(db, *args, **kw)

        with mock.patch.object(startup.migration, "upgrade", upgrade), \
                mock.patch.object(db_api.Connection, "import_nodes", insert):
            startup.run(self.conf, [])
        self.assertEqual(["n0", "n1", "n2", "n3"], self.stored_names())
        self.assertEqual(1, len(self.made))
        self.assertEqual([("upgrade", self.made[0].engine),
                          ("insert", self.made[0].engine)], engines)
        self.assertEqual(self.made, self.disposed)

    def test_disposed_when_another_step_fails(self) -> None:
        self.config(enabled_drivers=["fake", "nosuchdriver"])
        self.assertRaises(exceptions.ConductorException, startup.run,
                          self.conf, [])
        self.assertEqual(1, len(self.made))
        self.assertEqual(self.made, self.disposed)
        self.assertEqual([], self.stored_names())

    def test_an_inventory_whose_checker_dies_enrols_nothing(self) -> None:
        # The master (this process) survives its checking process dying,
        # stops start-up naming the file, and has enrolled no node.
        with mock.patch.object(inventory, "parse_text",
                               side_effect=_dying_parser("- {name: n")):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    startup.run, self.conf, [])
        self.assertIn("%s: cannot be checked, its checking process died"
                      % self.conf.inventory_file, str(exc))
        self.assertEqual([], self.stored_names())
        self.assertEqual(self.made, self.disposed)

    def test_an_inventory_too_deep_to_parse_enrols_nothing(self) -> None:
        # Whatever PyYAML does with it (refuse it, or crash its checking
        # process), start-up stops naming the file, enrolling nothing.
        with open(self.conf.inventory_file, "a") as stream:
            stream.write("- " + "[" * 30000 + "]" * 30000 + "\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                startup.run, self.conf, [])
        self.assertTrue(str(exc).startswith(self.conf.inventory_file + ": "),
                        str(exc))
        self.assertEqual([], self.stored_names())

    def test_no_connection_names_the_database(self) -> None:
        self.config(connection="mysql+pymysql://u:secret@127.0.0.1:1/x",
                    group="database")
        exc = self.assertRaises(exceptions.DatabaseUnavailable,
                                startup.run, self.conf, [])
        self.assertIn("127.0.0.1:1", str(exc))
        self.assertNotIn("secret", str(exc))
        self.assertEqual([], self.disposed)


class TestRunConnectionInline(TestRunConnection):
    """The same with parallel_startup = False."""

    parallel = False


class TestCheckedInPartsInline(TestCheckedInParts):
    """The same with parallel_startup = False."""

    parallel = False


class TestStartupHelpers(base.TestCase):

    def test_task_log_names(self) -> None:
        for name in ("database.log", "inventory-parse-3.log",
                     "inventory-parse.log", "inventory-import.log"):
            self.assertTrue(startup.is_task_log(name), name)
        for name in ("conductor.log", "inventory-parse-x.log",
                     "database.log.1", "drivers"):
            self.assertFalse(startup.is_task_log(name), name)

    def test_parse_parts_follow_the_usable_cpus(self) -> None:
        for cpus, parts in ((1, 1), (2, 2), (3, 3), (64, 4)):
            with mock.patch.object(startup.os, "sched_getaffinity",
                                   return_value=set(range(cpus))):
                self.assertEqual(parts, startup.parse_parts())


class TestLoadDrivers(base.TestCase):

    def test_every_driver_is_prepared(self) -> None:
        self.config(enabled_drivers=["fake"])
        with mock.patch.object(fake.FakeDriver, "prepare",
                               autospec=True) as prepare:
            drivers = startup.load_drivers(self.conf)
        prepare.assert_called_once_with(drivers["fake"])

    def test_a_failing_prepare_names_the_driver(self) -> None:
        self.config(enabled_drivers=["fake"])
        with mock.patch.object(fake.FakeDriver, "prepare", autospec=True,
                               side_effect=RuntimeError("no /dev/ipmi0")):
            exc = self.assertRaises(exceptions.DriverLoadError,
                                    startup.load_drivers, self.conf)
        self.assertEqual("Driver fake could not be loaded: RuntimeError: "
                         "no /dev/ipmi0", str(exc))


class TestCheckHostFree(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db = self.make_db()
        self.useFixture(fixtures.MockPatchObject(
            startup.processutils, "boot_id", return_value="boot-a"))

    def live_pid(self) -> int:
        child = subprocess.Popen(["sleep", "30"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        return child.pid

    def dead_pid(self) -> int:
        child = subprocess.Popen(["true"])
        child.wait()
        return child.pid

    def register(self, pid: int, boot: str | None = None,
                 host: str = "h1", worker: int = 0) -> None:
        self.db.register_conductor(host, worker, ["fake"], pid=pid)
        if boot is not None:
            self.db.heartbeat(host, worker, drivers=["fake"], pid=pid,
                              status={"boot_id": boot})

    def check(self) -> None:
        startup.check_host_free(self.db, "h1", heartbeat_timeout=60)

    def test_a_live_process_on_this_machine_is_refused(self) -> None:
        pid = self.live_pid()
        self.register(pid, boot="boot-a")
        exc = self.assertRaises(exceptions.HostInUse, self.check)
        self.assertEqual(
            "[DEFAULT] host h1 is already run by a live conductor (worker 0, "
            "pid %d on this machine); stop it, give this one a distinct "
            "[DEFAULT] host, or start with --force if that conductor is "
            "dead" % pid, str(exc))

    def test_a_conductor_on_another_machine_is_refused(self) -> None:
        self.register(self.dead_pid(), boot="boot-b")
        exc = self.assertRaises(exceptions.HostInUse, self.check)
        self.assertIn("on another machine", str(exc))

    def test_rows_left_by_a_killed_conductor_do_not_count(self) -> None:
        self.register(self.dead_pid(), boot="boot-a")
        self.register(self.dead_pid(), worker=1)      # never beat
        self.check()

    def test_offline_stale_and_other_hosts_do_not_count(self) -> None:
        pid = self.live_pid()
        self.register(pid, host="h2")
        self.register(pid, worker=1)
        self.db.set_offline("h1", 1)
        self.check()
        self.register(pid, worker=2)
        startup.check_host_free(self.db, "h1", heartbeat_timeout=-1)

    def test_our_own_pid_does_not_count(self) -> None:
        self.register(os.getpid(), boot="boot-a")
        self.check()

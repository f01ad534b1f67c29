# SPDX-License-Identifier: Apache-2.0
"""Functional test support: real databases and real conductor processes.

Tests here start the installed ``conductor`` binary in a subprocess, talk
to the real MariaDB/PostgreSQL/RabbitMQ of the machine, send signals and
read logs. A missing service fails the test with a message saying what to
start; nothing is skipped silently.
"""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import fixtures
from oslo_db import exception as db_exc
import psutil
import sqlalchemy as sa
import testtools

from conductor.common import log as conductor_log
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration

#: Where the console scripts of the running interpreter live.
BIN_DIR = os.path.dirname(sys.executable)
MYSQL_ADMIN_URL = os.environ.get(
    "CONDUCTOR_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
PGSQL_ADMIN_URL = os.environ.get(
    "CONDUCTOR_TEST_PGSQL_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
#: testscenarios scenarios: one per database server the tests run on.
SERVER_BACKENDS = [("mysql", {"backend": "mysql"}),
                   ("postgresql", {"backend": "postgresql"})]
RABBIT_URL = os.environ.get("CONDUCTOR_TEST_TRANSPORT_URL",
                            "rabbit://guest:guest@127.0.0.1:5672/")


def binary(name: str) -> str:
    path = os.path.join(BIN_DIR, name)
    if not os.path.exists(path):
        raise AssertionError("%s is not installed next to %s; install the "
                             "package (pip install -e .)" % (name,
                                                             sys.executable))
    return path


def wait_for(predicate: Callable[[], Any], timeout: float,
             message: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a true value or time runs out.

    This is bounded polling of an external process's observable state, not
    a sleep that makes a test pass: the assertion is the predicate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("Timed out after %.1fs: %s"
                                 % (timeout, message))
        time.sleep(interval)


class Database(fixtures.Fixture):
    """A fresh, empty database of one backend, dropped afterwards."""

    def __init__(self, backend: str, state_dir: str | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.state_dir = state_dir
        self.url = ""

    def _setUp(self) -> None:
        name = "conductor_test_%d_%d" % (os.getpid(),
                                         int(time.monotonic() * 1e6))
        if self.backend == "sqlite":
            directory = self.state_dir or self.useFixture(
                fixtures.TempDir()).path
            self.url = "sqlite:///%s/conductor.sqlite" % directory
            return
        admin_url = {"mysql": MYSQL_ADMIN_URL,
                     "postgresql": PGSQL_ADMIN_URL}[self.backend]
        try:
            admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text("CREATE DATABASE %s" % name))
        except sa.exc.OperationalError as exc:
            raise AssertionError(
                "The %s server at %s is not reachable (%s). Start it (see "
                ".ci/run) or point CONDUCTOR_TEST_%s_URL at one."
                % (self.backend, db_engine.mask_url(admin_url),
                   str(exc.orig).splitlines()[0],
                   "MYSQL" if self.backend == "mysql" else "PGSQL"))
        url = sa.engine.make_url(admin_url).set(database=name)
        self.url = url.render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as conn:
                if self.backend == "postgresql":
                    conn.execute(sa.text(
                        "SELECT pg_terminate_backend(pid) FROM "
                        "pg_stat_activity WHERE datname = :name"),
                        {"name": name})
                conn.execute(sa.text("DROP DATABASE IF EXISTS %s" % name))
            admin.dispose()
        self.addCleanup(drop)

    def connect(self, upgrade: bool = True) -> db_api.Connection:
        conn = db_api.Connection.create(self.url)
        if upgrade:
            migration.upgrade(conn.engine)
        self.addCleanup(conn.dispose)
        return conn


class ConductorProcess(fixtures.Fixture):
    """A real ``conductor`` master process with its own config and log.

    :param options: {section: {option: value}} written to the config file.
    """

    def __init__(self, workdir: str, options: dict[str, dict[str, Any]],
                 name: str = "conductor") -> None:
        super().__init__()
        self.workdir = workdir
        self.options = options
        self.name = name
        self.config_file = os.path.join(workdir, "%s.conf" % name)
        self.log_file = os.path.join(workdir, "%s.log" % name)
        self.process: subprocess.Popen[bytes] | None = None
        #: Extra environment variables of the process.
        self.env: dict[str, str] = {}

    def write_config(self, **changes: dict[str, Any]) -> None:
        for section, values in changes.items():
            self.options.setdefault(section, {}).update(values)
        parser = configparser.ConfigParser(interpolation=None)
        for section, values in self.options.items():
            if section != "DEFAULT":
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, _ini(value))
        with open(self.config_file, "w") as stream:
            parser.write(stream)

    def _setUp(self) -> None:
        self.options.setdefault("DEFAULT", {}).setdefault(
            "state_path", self.workdir)
        self.options["DEFAULT"].setdefault("log_file", self.log_file)
        # NOTE: the tests read power sync's line for each run (DEBUG
        # since the per-interval summary), whatever their debug option.
        self.options["DEFAULT"].setdefault(
            "default_log_levels",
            conductor_log.log_levels("conductor.power_sync.runs=DEBUG"))
        self.write_config()
        self.start()
        self.addCleanup(self.kill)

    def start(self) -> None:
        self.stdout = open(os.path.join(self.workdir, "%s.stdout"
                                        % self.name), "ab")
        self.process = subprocess.Popen(
            [binary("conductor"), "--config-file", self.config_file],
            stdout=self.stdout, stderr=subprocess.STDOUT,
            cwd=self.workdir, env=dict(os.environ, **self.env))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("conductor did not exit within %.1fs; log "
                                 "tail:\n%s" % (timeout, self.log_tail()))

    def kill(self) -> None:
        """Clean-up: SIGKILL the master and every worker still running."""
        if self.process is None:
            return
        procs = self.children()
        for proc in procs + [psutil.Process(self.pid)] if \
                self.process.poll() is None else procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        if self.process.poll() is None:
            self.process.wait(10)
        psutil.wait_procs(procs, timeout=10)
        self.stdout.close()

    def log(self) -> str:
        text = ""
        for path in (self.log_file, self.stdout.name):
            if os.path.exists(path):
                with open(path, errors="replace") as stream:
                    text += stream.read()
        return text

    def log_lines(self) -> Iterator[str]:
        return iter(self.log().splitlines())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _ini(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


class FunctionalTestCase(testtools.TestCase):
    """Base for tests that run real processes against real services."""

    def setUp(self) -> None:
        super().setUp()
        timeout = int(os.environ.get("OS_TEST_TIMEOUT", "120"))
        self.useFixture(fixtures.Timeout(timeout, gentle=True))
        self.workdir = self.useFixture(fixtures.TempDir()).path

    def run_manage(self, config_file: str, *args: str,
                   check: int | None = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary("conductor-manage"), "--config-file", config_file,
             *args], capture_output=True, text=True, timeout=120)
        if check is not None and result.returncode != check:
            raise AssertionError(
                "conductor-manage %s exited %d (expected %d)\nstdout: %s\n"
                "stderr: %s" % (" ".join(args), result.returncode, check,
                                result.stdout, result.stderr))
        return result

    def start_conductor(self, options: dict[str, dict[str, Any]],
                        name: str = "conductor",
                        env: dict[str, str] | None = None
                        ) -> ConductorProcess:
        process = ConductorProcess(self.workdir, options, name)
        process.env.update(env or {})
        return self.useFixture(process)

    def wait_workers(self, db: db_api.Connection, host: str, count: int,
                     timeout: float = 30,
                     since: Any = None) -> list[db_api.ConductorRecord]:
        def ready() -> list[db_api.ConductorRecord] | None:
            try:
                records = db.list_conductors()
            except (db_exc.DBError, sa.exc.SQLAlchemyError):
                return None  # the master has not created the schema yet
            rows = [row for row in records
                    if row.host == host and row.online
                    and (since is None or row.started_at >= since)]
            return rows if len(rows) == count else None
        return wait_for(ready, timeout,
                        "%d workers of %s online" % (count, host))

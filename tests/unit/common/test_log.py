# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.log: every record names its process."""

from __future__ import annotations

import logging
import time

from oslo_config import cfg
from oslo_db import exception as db_exc
import sqlalchemy as sa

from conductor.common import log
from tests import base
from tests import fakes


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestLog(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(log.set_identity, log._identity)
        self.handler = _Records()
        self.logger = logging.getLogger("tests.unit.common.test_log")
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.addCleanup(self.logger.removeHandler, self.handler)

    def test_identities(self) -> None:
        self.assertEqual("h1 master", log.master_identity("h1"))
        self.assertEqual("h1 worker 3", log.worker_identity("h1", 3))

    def test_records_carry_conductor_id(self) -> None:
        log.set_identity(log.master_identity("h1"))
        self.logger.info("from the master")
        log.set_identity(log.worker_identity("h1", 2))
        self.logger.info("from a worker")
        self.assertEqual(["h1 master", "h1 worker 2"],
                         [getattr(r, "conductor_id")
                          for r in self.handler.records])

    def test_default_format_prints_it(self) -> None:
        log.set_identity(log.worker_identity("h1", 0))
        self.handler.setFormatter(logging.Formatter(log.DEFAULT_FORMAT))
        self.logger.warning("hello %s", "there")
        line = self.handler.format(self.handler.records[0])
        self.assertIn("WARNING tests.unit.common.test_log [h1 worker 0] [-] "
                      "hello there", line)

    def test_factory_installed_once(self) -> None:
        log.set_identity("a")
        factory = logging.getLogRecordFactory()
        log._install_factory()
        log.set_identity("b")
        self.assertIs(factory, logging.getLogRecordFactory())
        self.assertEqual("b", getattr(factory("n", logging.INFO, "p", 1,
                                              "m", (), None),
                                      "conductor_id"))

    def test_register_options_sets_default_format(self) -> None:
        conf = cfg.ConfigOpts()
        log.register_options(conf)
        conf([])
        self.assertEqual(log.DEFAULT_FORMAT,
                         conf.logging_default_format_string)


def _db_error() -> Exception:
    try:
        raise db_exc.DBConnectionError("(2003, \"Can't connect\")")
    except db_exc.DBConnectionError as exc:
        return exc


class TestOutageLog(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.handler = _Records()
        self.logger = logging.getLogger("tests.unit.common.test_log.out")
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.addCleanup(self.logger.removeHandler, self.handler)
        self.clock = fakes.FakeClock(1000.0)
        self.outage = log.OutageLog("database", 10.0, logger=self.logger,
                                    clock=self.clock,
                                    wall=lambda: 1_700_000_000.0)
        self.addCleanup(log.reset_outage_logs)

    def lines(self, level: int = logging.INFO) -> list[str]:
        return [r.getMessage() for r in self.handler.records
                if r.levelno >= level]

    def test_a_flood_becomes_one_line_per_interval(self) -> None:
        since = time.strftime("%H:%M:%S", time.localtime(1_700_000_000.0))
        # 25 s of outage, 32 failures a second from every call site.
        for _ in range(800):
            self.outage.failed("heartbeat", _db_error())
            self.clock.advance(1 / 32)
        self.assertTrue(self.outage.active)
        self.outage.succeeded()
        self.assertFalse(self.outage.active)
        self.assertEqual([
            "database unavailable since %s: 1 operation(s) failed "
            "(heartbeat: DBConnectionError: (2003, \"Can't connect\"))"
            % since,
            "database unavailable since %s: 321 operation(s) failed" % since,
            "database unavailable since %s: 641 operation(s) failed" % since,
            "database available again after 25.0 s; 800 operation(s) "
            "failed"], self.lines())
        tracebacks = [r for r in self.handler.records if r.exc_info]
        self.assertEqual([logging.DEBUG], [r.levelno for r in tracebacks])

    def test_each_outage_is_reported_anew(self) -> None:
        self.outage.succeeded()
        self.assertEqual([], self.lines(logging.DEBUG))
        for _ in range(2):
            self.outage.failed("sync", _db_error())
            self.clock.advance(1)
            self.outage.succeeded()
            self.outage.succeeded()
        self.assertEqual(2, self.outage.outages)
        self.assertEqual(4, len(self.lines()))
        self.assertTrue(self.lines()[3].startswith(
            "database available again after 1.0 s; 1 operation(s)"))

    def test_database_errors_are_told_apart(self) -> None:
        self.assertTrue(log.is_database_error(_db_error()))
        self.assertTrue(log.is_database_error(
            sa.exc.OperationalError("SELECT 1", {}, OSError("gone"))))
        wrapped = RuntimeError("sweep failed")
        wrapped.__cause__ = _db_error()
        self.assertTrue(log.is_database_error(wrapped))
        # Raised while handling one is not one.
        handled = KeyError("node")
        handled.__context__ = _db_error()
        self.assertFalse(log.is_database_error(handled))
        self.assertFalse(log.is_database_error(OSError("bmc")))

    def test_database_failed_counts_only_database_errors(self) -> None:
        log.reset_outage_logs()
        self.assertFalse(log.database_failed("x", OSError("bmc")))
        log.database_ok()       # no outage: nothing happens
        self.assertTrue(log.database_failed("x", _db_error()))
        self.assertTrue(log.outage_log("database").active)
        log.database_ok()
        self.assertFalse(log.outage_log("database").active)

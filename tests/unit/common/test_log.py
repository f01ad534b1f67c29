# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.log: every record names its process."""

from __future__ import annotations

import logging

from oslo_config import cfg

from conductor.common import log
from tests import base


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

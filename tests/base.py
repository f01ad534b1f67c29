# SPDX-License-Identifier: Apache-2.0
"""Base test classes: every test gets a clean config and a timeout."""

from __future__ import annotations

import gc
import importlib.util
import os
import threading
import time
from types import ModuleType
from typing import Any, Callable

import fixtures
from oslo_config import cfg
from oslo_config import fixture as config_fixture
from oslotest import base

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor import conf as conductor_conf
from conductor.db import api as db_api
from conductor.db import migration
from conductor import ownership

#: Bound (seconds) on every wait for another thread or process: never
#: reached by a passing test, it makes a failing one fail, not hang.
WAIT = 10.0
#: The repository's root (its tools/ are scripts, not a package).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def load_tool(name: str) -> ModuleType:
    """The script ``tools/<name>.py`` as a module, for its tests."""
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "tools", name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Bounded wait for a condition another thread makes true.

    :returns: the last value of ``check()``: true once the condition
        holds, false when ``timeout`` seconds passed first.
    """
    limit = time.monotonic() + timeout
    pause = threading.Event()
    while not (value := check()):
        if time.monotonic() > limit:
            return value
        pause.wait(0.005)
    return value


class TestCase(base.BaseTestCase):
    """Unit test base: ``self.config(opt=value, group=...)`` sets options.

    The oslotest base applies ``OS_TEST_TIMEOUT`` and captures output; the
    config fixture resets every option after each test.
    """

    def setUp(self) -> None:
        super().setUp()
        self.cfg_fixture = self.useFixture(
            config_fixture.Config(conductor_conf.CONF))
        self.conf: cfg.ConfigOpts = conductor_conf.CONF
        state = self.useFixture(fixtures.TempDir()).path
        self.config(state_path=state)
        self.config(workers=2, group="conductor")
        # NOTE: a worker started in-process freezes the heap out of the
        # garbage collector (see ConductorService._start); give it back.
        self.addCleanup(gc.unfreeze)

    def config(self, **kw: object) -> None:
        self.cfg_fixture.config(**kw)

    def make_db(self, name: str = "conductor.sqlite") -> db_api.Connection:
        """A Connection to a migrated SQLite file in ``state_path``.

        Disposed when the test ends.
        """
        path = os.path.join(self.conf.state_path, name)
        db = db_api.Connection.create("sqlite:///" + path)
        self.addCleanup(db.dispose)
        migration.upgrade(db.engine)
        return db

    def use_small_rings(self) -> None:
        """Build hash rings with 2**8 partitions: faster, same behaviour.

        Ownership's spread over real partition counts is tested in
        test_ownership.
        """
        self.useFixture(fixtures.MockPatchObject(
            ownership, "RING_EXPONENT", 8))

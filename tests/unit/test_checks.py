# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.checks: start-up validation of the configuration."""

from __future__ import annotations

import logging
import os
import stat
import types
from typing import Any, Callable
from unittest import mock

import fixtures

from conductor import checks
from conductor.common import exceptions
from tests import base


class TestChecks(base.TestCase):

    def load_config(self, text: str) -> None:
        """Parse ``text`` as the only config file, the way services do.

        The base class overrides ``[conductor] workers``; an override
        beats the file, so drop it to let the file's value be read.
        """
        self.conf.clear_override("workers", group="conductor")
        path = os.path.join(self.conf.state_path, "conductor.conf")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        self.conf(["--config-file", path])

    def assertInvalid(self, text: str,
                      func: Callable[..., Any]) -> str:
        exc = self.assertRaises(exceptions.ConfigInvalid, func, self.conf)
        self.assertIn(text, str(exc))
        return str(exc)

    def test_check_option_values_good(self) -> None:
        self.load_config("[DEFAULT]\nparallel_startup = false\n"
                         "[conductor]\nworkers = 3\n")
        checks.check_option_values(self.conf)
        self.assertFalse(self.conf.parallel_startup)

    def test_check_option_values_below_min(self) -> None:
        self.load_config("[conductor]\nworkers = 0\n")
        message = self.assertInvalid("[conductor] workers",
                                     checks.check_option_values)
        self.assertEqual("Invalid configuration: [conductor] workers: Should "
                         "be greater than or equal to 1", message)

    def test_check_option_values_not_a_number(self) -> None:
        self.load_config("[conductor]\nheartbeat_interval = soon\n")
        message = self.assertInvalid("[conductor] heartbeat_interval: ",
                                     checks.check_option_values)
        self.assertIn("'soon'", message)

    def test_check_option_values_default_group(self) -> None:
        self.load_config("[DEFAULT]\nparallel_startup = perhaps\n")
        self.assertInvalid("[DEFAULT] parallel_startup: ",
                           checks.check_option_values)

    def test_check_option_values_pool_below_min(self) -> None:
        self.load_config("[conductor]\nworkers_pool_size = 2\n")
        self.assertInvalid("[conductor] workers_pool_size: Should be "
                           "greater than or equal to 3",
                           checks.check_option_values)

    def test_check_option_values_not_finite(self) -> None:
        for value in ("nan", "inf"):
            self.load_config("[conductor]\npower_state_timeout = %s\n"
                             % value)
            message = self.assertInvalid("[conductor] power_state_timeout",
                                         checks.check_option_values)
            self.assertEqual("Invalid configuration: [conductor] "
                             "power_state_timeout: must be a finite number, "
                             "got %s" % value, message)

    def write(self, text: str) -> str:
        path = os.path.join(self.conf.state_path, "conductor.conf")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return path

    def test_check_reload_reads_the_files_again(self) -> None:
        self.load_config("[conductor]\npower_state_timeout = 12\n")
        checks.check_reload(self.conf)
        for text, expected in (
                ("[conductor]\npower_state_timeout = nan\n",
                 "[conductor] power_state_timeout: must be a finite "
                 "number, got nan"),
                ("[conductor]\npower_state_timeout = -1\n",
                 "[conductor] power_state_timeout: Should be greater than "
                 "or equal to 0.1"),
                ("[conductor]\nheartbeat_interval = 60\n",
                 "heartbeat_interval (60) must be less than "
                 "heartbeat_timeout"),
                ("[DEFAULT\n", "Invalid section (must end with ])")):
            self.write(text)
            exc = self.assertRaises(exceptions.ConfigInvalid,
                                    checks.check_reload, self.conf)
            self.assertIn(expected, str(exc))
            self.assertEqual(1, len(str(exc).splitlines()))
            # The running configuration is left as it was.
            self.assertEqual(12.0, self.conf.conductor.power_state_timeout)
        os.unlink(self.write(""))
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                checks.check_reload, self.conf)
        self.assertIn("config file(s) not found", str(exc))
        self.write("[conductor]\npower_state_timeout = 7\n")
        checks.check_reload(self.conf)
        self.assertEqual(12.0, self.conf.conductor.power_state_timeout)

    def test_check_reload_errors_that_are_not_values(self) -> None:
        self.load_config("[conductor]\npower_state_timeout = 12\n")

        def refused(expected: str) -> None:
            exc = self.assertRaises(exceptions.ConfigInvalid,
                                    checks.check_reload, self.conf)
            self.assertIn(expected, str(exc))

        path = self.write("[conductor]\npower_state_timeout = $nosuch\n")
        refused("[conductor] power_state_timeout: its value refers ($name) "
                "to an option that does not exist")
        with open(path, "wb") as stream:
            stream.write(b"[conductor]\nhost = \xff\n")
        refused("'utf-8' codec can't decode byte 0xff")
        os.unlink(path)
        os.mkdir(path)
        refused("[Errno 21] Is a directory")

    def test_check_reload_reads_the_sources_as_started(self) -> None:
        first = os.path.join(self.conf.state_path, "first.d")
        second = os.path.join(self.conf.state_path, "second.d")
        os.mkdir(first)
        os.mkdir(second)
        # A bad value in the first directory, overridden by the file given
        # after it: the running value is good, so is the reload.
        with open(os.path.join(first, "a.conf"), "w") as stream:
            stream.write("[conductor]\npower_state_timeout = nan\n")
        path = self.write("[conductor]\npower_state_timeout = 12\n")
        self.conf.clear_override("workers", group="conductor")
        self.conf(["--config-dir", first, "--config-dir", second,
                   "--config-file=%s" % path])
        checks.check_reload(self.conf)
        # Each directory is read, not only the last.
        with open(os.path.join(first, "b.conf"), "w") as stream:
            stream.write("[conductor]\nbmc_min_interval = nan\n")
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                checks.check_reload, self.conf)
        self.assertIn("[conductor] bmc_min_interval", str(exc))
        os.unlink(os.path.join(first, "b.conf"))
        # Defaults set in code (by a hook) hold in the copy too.
        self.conf.set_default("heartbeat_timeout", 4, group="conductor")
        self.write("[conductor]\npower_state_timeout = 12\n"
                   "heartbeat_interval = 5\n")
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                checks.check_reload, self.conf)
        self.assertIn("heartbeat_interval (5) must be less than "
                      "heartbeat_timeout (4)", str(exc))

    def test_check_workers(self) -> None:
        self.config(workers=5, group="conductor")
        self.assertEqual(5, checks.check_workers(self.conf))

    def test_check_workers_defaults_to_cpus(self) -> None:
        self.config(workers=None, group="conductor")
        with mock.patch.object(os, "cpu_count", autospec=True,
                               return_value=6):
            self.assertEqual(6, checks.check_workers(self.conf))
        with mock.patch.object(os, "cpu_count", autospec=True,
                               return_value=None):
            self.assertEqual(1, checks.check_workers(self.conf))

    def test_check_pool_too_small(self) -> None:
        # [conductor] workers_pool_size has min=3, so oslo.config refuses
        # a smaller value before check_pool sees it; check the guard with a
        # plain object standing in for the options.
        conf = types.SimpleNamespace(conductor=types.SimpleNamespace(
            workers_pool_size=2, sync_power_state_workers=1))
        exc = self.assertRaises(exceptions.ConfigInvalid,
                                checks.check_pool, conf)
        self.assertIn("[conductor] workers_pool_size must be at least 3, "
                      "got 2", str(exc))

    def test_check_pool_warns_when_sync_workers_do_not_fit(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger(level=logging.WARNING))
        self.config(workers_pool_size=4, sync_power_state_workers=3,
                    group="conductor")
        checks.check_pool(self.conf)
        self.assertEqual("", logger.output)
        self.config(sync_power_state_workers=8, group="conductor")
        checks.check_pool(self.conf)
        self.assertIn("sync_power_state_workers = 8 does not fit in "
                      "workers_pool_size = 4; at most 3 nodes",
                      logger.output)

    def test_check_heartbeat(self) -> None:
        self.config(heartbeat_interval=10, heartbeat_timeout=11,
                    group="conductor")
        checks.check_heartbeat(self.conf)
        for interval in (60, 61):
            self.config(heartbeat_interval=interval, heartbeat_timeout=60,
                        group="conductor")
            self.assertInvalid("[conductor] heartbeat_interval (%d) must be "
                               "less than heartbeat_timeout (60)" % interval,
                               checks.check_heartbeat)

    def test_check_host(self) -> None:
        self.config(host="rack1-host.example.com")
        checks.check_host(self.conf)
        for host in ("my host", "tab\there", "", "h" * 256):
            self.config(host=host)
            self.assertInvalid("[DEFAULT] host must be 1 to 255 characters "
                               "without spaces", checks.check_host)

    def test_check_state_path_creates(self) -> None:
        path = os.path.join(self.conf.state_path, "a", "b")
        self.config(state_path=path)
        self.assertEqual(path, checks.check_state_path(self.conf))
        self.assertTrue(os.path.isdir(path))

    def test_check_state_path_and_async_log_dir_created_private(
            self) -> None:
        old_umask = os.umask(0o022)
        self.addCleanup(os.umask, old_umask)
        path = os.path.join(self.conf.state_path, "a", "b")
        self.config(state_path=path)
        checks.check_state_path(self.conf)
        checks.check_async_log_dir(self.conf)
        for directory in (os.path.dirname(path), path,
                          os.path.join(path, "async")):
            self.assertEqual(0o700, stat.S_IMODE(os.stat(directory).st_mode),
                             directory)

    def test_check_state_path_not_creatable(self) -> None:
        blocker = os.path.join(self.conf.state_path, "file")
        with open(blocker, "w"):
            pass
        for path in (blocker, os.path.join(blocker, "sub")):
            self.config(state_path=path)
            self.assertInvalid("[DEFAULT] state_path %s cannot be created: "
                               % path, checks.check_state_path)

    def test_check_state_path_not_writable(self) -> None:
        # NOTE: tests may run as root, for whom every directory is
        # writable; stand in for the permission check.
        with mock.patch.object(os, "access", autospec=True,
                               return_value=False) as access:
            self.assertInvalid("[DEFAULT] state_path %s is not writable"
                               % self.conf.state_path,
                               checks.check_state_path)
        access.assert_called_once_with(self.conf.state_path,
                                       os.W_OK | os.X_OK)

    def test_check_all(self) -> None:
        self.config(workers=3, group="conductor")
        self.assertEqual(3, checks.check_all(self.conf))

    def test_check_all_stops_at_bad_value(self) -> None:
        self.load_config("[conductor]\nworkers = -1\n")
        self.assertInvalid("[conductor] workers", checks.check_all)

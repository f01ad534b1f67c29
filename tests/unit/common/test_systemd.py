# SPDX-License-Identifier: Apache-2.0
"""systemd notifications on real datagram sockets."""

from __future__ import annotations

import os
import socket

import fixtures

from conductor.common import systemd
from tests import base


class TestNotifier(base.TestCase):

    def _listen(self, address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(address)
        sock.settimeout(5)
        return sock

    def test_path_socket(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path, "n")
        sock = self._listen(path)
        notifier = systemd.Notifier.from_environ({"NOTIFY_SOCKET": path})
        assert notifier is not None
        self.assertTrue(notifier.notify("READY=1"))
        self.assertEqual(b"READY=1", sock.recv(100))
        # The address is kept: the watchdog pings keep going.
        self.assertTrue(notifier.notify("WATCHDOG=1"))
        self.assertEqual(b"WATCHDOG=1", sock.recv(100))

    def test_abstract_socket(self) -> None:
        name = "conductor-test-%d" % os.getpid()
        sock = self._listen("\0" + name)
        notifier = systemd.Notifier("@" + name)
        self.assertTrue(notifier.notify("READY=1"))
        self.assertEqual(b"READY=1", sock.recv(100))

    def test_unset_and_unreachable(self) -> None:
        self.assertIsNone(systemd.Notifier.from_environ({}))
        self.assertIsNone(systemd.Notifier.from_environ(
            {"NOTIFY_SOCKET": ""}))
        missing = systemd.Notifier("/nonexistent/notify.sock")
        self.assertFalse(missing.notify("READY=1"))


class TestWatchdogInterval(base.TestCase):

    def test_half_of_watchdog_usec(self) -> None:
        self.assertEqual(15.0, systemd.watchdog_interval(
            {"WATCHDOG_USEC": "30000000"}))

    def test_unset_invalid_or_not_ours(self) -> None:
        self.assertIsNone(systemd.watchdog_interval({}))
        self.assertIsNone(systemd.watchdog_interval(
            {"WATCHDOG_USEC": "soon"}))
        self.assertIsNone(systemd.watchdog_interval(
            {"WATCHDOG_USEC": "0"}))
        self.assertIsNone(systemd.watchdog_interval(
            {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2))
        self.assertEqual(0.5, systemd.watchdog_interval(
            {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, pid=2))

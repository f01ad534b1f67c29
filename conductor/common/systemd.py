# SPDX-License-Identifier: Apache-2.0
"""systemd's notification protocol: readiness and watchdog pings.

A service started with ``Type=notify`` finds the address of systemd's
datagram socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` for an
abstract socket) and sends it newline-separated ``KEY=value`` lines::

    notifier = systemd.Notifier.from_environ()
    if notifier is not None:
        notifier.notify("READY=1")
    interval = systemd.watchdog_interval()   # None: no watchdog asked for

Unlike the library helpers that unset ``NOTIFY_SOCKET`` after the first
message, the address is kept so that watchdog pings keep flowing.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping


class Notifier:
    """Sends datagrams to one notification socket.

    :param address: ``NOTIFY_SOCKET``'s value.
    """

    def __init__(self, address: str) -> None:
        if address.startswith("@"):
            # NOTE: an abstract socket: a leading NUL byte, no file.
            address = "\0" + address[1:]
        self.address = address

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None
                     ) -> "Notifier | None":
        """The notifier ``NOTIFY_SOCKET`` asks for, or None."""
        address = (os.environ if environ is None else environ).get(
            "NOTIFY_SOCKET")
        return cls(address) if address else None

    def notify(self, message: str) -> bool:
        """Send ``message``; False (never an exception) when it failed."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode())
            return True
        except OSError:
            return False


def watchdog_interval(environ: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None.

    None when ``WATCHDOG_USEC`` is unset or invalid, or when
    ``WATCHDOG_PID`` names another process.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.strip() != str(os.getpid() if pid is None else pid):
        return None
    return usec / 2e6

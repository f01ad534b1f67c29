# SPDX-License-Identifier: Apache-2.0
"""Per-call deadlines for driver calls.

The conductor runs every driver call inside :func:`scope`; drivers bound
their own waits (subprocess timeouts, HTTP timeouts, sleeps) with
:func:`remaining`, so a hung BMC holds a thread for at most the deadline::

    with deadline.scope(conf_timeout):
        state = driver.power.get_power_state(node)

    # inside a driver
    subprocess.run(argv, timeout=deadline.remaining(default=30))
    requests.get(url, timeout=(deadline.connect_timeout(default=5),
                               deadline.remaining(default=30)))

A BMC that does not even accept a connection is told apart quickly:
:func:`connect_timeout` is a share of the call's deadline
(:data:`CONNECT_SHARE`, at most :data:`CONNECT_MAX` seconds), so a hung
BMC costs a fraction of the deadline where the driver can bound the
connect on its own.
"""

from __future__ import annotations

import threading
import time

from conductor.common import exceptions

# NOTE: thread-local because each pool thread runs one driver call at a
# time; the value is the monotonic time at which the current call expires.
_local = threading.local()

#: Share of a call's deadline a driver should allow for connecting.
CONNECT_SHARE = 0.2
#: Upper bound of :func:`connect_timeout` (seconds).
CONNECT_MAX = 5.0


class DeadlineExceeded(exceptions.ConductorException):
    message = "%(what)s did not finish within %(seconds).1f seconds."


class scope:
    """Run the block under a deadline ``seconds`` from now (nestable).

    ``with scope(seconds) as expires:``; the deadline starts when the
    block is entered. A class rather than a generator: every driver call
    enters one, and a generator-based context manager cost several times
    more.
    """

    __slots__ = ("_seconds", "_outer", "_outer_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._outer: float | None = None
        self._outer_seconds: float | None = None

    def __enter__(self) -> float:
        outer = self._outer = getattr(_local, "expires", None)
        outer_seconds = self._outer_seconds = getattr(_local, "seconds",
                                                      None)
        seconds = self._seconds
        expires = time.monotonic() + seconds
        if outer is not None and outer < expires:
            # NOTE: "is not None", not "or": an outer scope of 0 seconds
            # must be reported as 0, not as the inner scope's length.
            expires = outer
            seconds = outer_seconds if outer_seconds is not None \
                else seconds
        _local.expires, _local.seconds = expires, seconds
        return expires

    def __exit__(self, *exc_info: object) -> None:
        _local.expires, _local.seconds = self._outer, self._outer_seconds


def remaining(default: float | None = None) -> float | None:
    """Seconds left in the current scope (>= 0), or ``default`` outside one."""
    expires = getattr(_local, "expires", None)
    if expires is None:
        return default
    return max(0.0, expires - time.monotonic())


def length() -> float | None:
    """The length (seconds) of the current scope, or None outside one."""
    seconds = getattr(_local, "seconds", None)
    return None if seconds is None else float(seconds)


def check(what: str = "The driver call") -> None:
    """Raise DeadlineExceeded when the current scope has expired."""
    left = remaining()
    if left is not None and left <= 0:
        raise DeadlineExceeded(what=what,
                               seconds=float(getattr(_local, "seconds", 0)))


def connect_timeout(default: float | None = None) -> float | None:
    """Seconds a driver should allow for connecting to its BMC.

    :data:`CONNECT_SHARE` of the current scope's deadline, at most
    :data:`CONNECT_MAX` and never more than :func:`remaining`; ``default``
    outside a scope.
    """
    left = remaining()
    if left is None:
        return default
    seconds = float(getattr(_local, "seconds", left) or 0.0)
    return min(left, CONNECT_MAX, seconds * CONNECT_SHARE)

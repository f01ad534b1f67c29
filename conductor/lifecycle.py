# SPDX-License-Identifier: Apache-2.0
"""How a worker that fails to start tells the master why.

The master creates one :class:`StartFailures` before it forks (shared
memory, like :class:`conductor.service.StartExtra`) and :func:`install`\\ s
it; a forked worker inherits it. A worker whose ``start()`` fails logs the
error itself, then raises :func:`start_failed`, which records the error's
one-line text for the master and ends the worker with exit code 1 without
a second, raw traceback on stderr::

    failures = lifecycle.StartFailures(workers=2)
    lifecycle.install(failures)            # in the master, before forking
    ...
    raise lifecycle.start_failed(1, exc)   # in worker 1
    ...
    failures.take(1)    # in the master: "ValueError: ...", then None
"""

from __future__ import annotations

import multiprocessing
from typing import Any

#: Longest reason kept, in bytes of UTF-8.
REASON_SIZE = 480


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (just ``Type`` without one)."""
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0]) if text else \
        type(exc).__name__


class StartFailed(SystemExit):
    """Ends a worker whose start failed (exit code 1).

    A ``SystemExit`` so that the launcher ends the process quietly: the
    worker already logged the error with its traceback.
    """

    def __init__(self, worker_id: int, reason: str) -> None:
        super().__init__(1)
        self.worker_id = worker_id
        self.reason = reason

    def __str__(self) -> str:
        return "worker %d failed to start: %s" % (self.worker_id,
                                                  self.reason)


class StartFailures:
    """One slot per worker id: why its last start failed, if it did."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("fork")
        self._slots: list[Any] = [context.Array("c", REASON_SIZE)
                                  for _ in range(workers)]

    def record(self, worker_id: int, reason: str) -> None:
        """In the worker: remember ``reason`` for the master."""
        if 0 <= worker_id < len(self._slots):
            data = reason.encode("utf-8", "replace")[:REASON_SIZE - 1]
            self._slots[worker_id].value = data or b"?"

    def take(self, worker_id: int) -> str | None:
        """In the master: the recorded reason, once; None without one."""
        slot = self._slots[worker_id]
        with slot.get_lock():
            data = slot.value
            slot.value = b""
        return data.decode("utf-8", "replace") if data else None


_installed: StartFailures | None = None


def install(failures: StartFailures | None) -> None:
    """Make ``failures`` the registry forked workers report to."""
    global _installed
    _installed = failures


def start_failed(worker_id: int, exc: BaseException) -> StartFailed:
    """Record why ``worker_id`` failed to start; the exception to raise."""
    reason = one_line(exc)
    if _installed is not None:
        _installed.record(worker_id, reason)
    return StartFailed(worker_id, reason)

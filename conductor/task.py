# SPDX-License-Identifier: Apache-2.0
"""Acting on one node: reserve it, call its driver under the deadline.

Every change the conductor makes to a node goes through a :class:`Task`:
power actions, power-sync corrections, driver node periodic tasks and RPC
requests. A task holds the node's reservation (an atomic conditional
UPDATE, so two workers never both hold it) from :func:`acquire` until it
is released, whatever happens in between::

    with task.acquire(db, uuid, holder, drivers, timeout) as t:
        if t.node.target_power_state is not None:
            t.call("set_power_state", t.node.target_power_state)
            t.record({"target_power_state": None})

A caller that wants the work done on a pool thread reserves first and
spawns after, so a busy node is refused before a thread is taken, and a
full pool is refused before anything is left half done::

    t = task.request_power(db, uuid, target, holder, drivers, timeout)
    t.spawn(pool, apply)        # the pool thread releases the node
                                # NoFreeWorker: the request is undone

Reads that change nothing (a power-sync sweep) do not reserve; they use
:func:`call_driver` for the same deadline.
"""

from __future__ import annotations

from concurrent import futures
import contextlib
import dataclasses
import logging
from typing import Any, Callable, Iterator, Mapping, TypeVar

from conductor.common import deadline
from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import pool as pool_mod
from conductor import nodes

LOG = logging.getLogger(__name__)

_R = TypeVar("_R")


def call_driver(driver: base.BaseDriver, method: str, node: Any,
                *args: Any, timeout: float) -> Any:
    """``driver.power.<method>(view of node, *args)`` under the deadline.

    :param node: a stored node or a sync row (see
        :func:`conductor.nodes.driver_view`).
    :param timeout: the per-call deadline (``power_state_timeout``).
    :returns: what the driver returned; its exceptions pass through.
    """
    with deadline.scope(timeout):
        return getattr(driver.power, method)(nodes.driver_view(node), *args)


class Task:
    """A node reserved by this worker, with its driver.

    Built by :func:`acquire` or :func:`request_power`; release it exactly
    once (``acquire`` does, :meth:`spawn` hands that to the pool thread).

    :ivar node: the node as read when it was reserved, updated by
        :meth:`record`; its ``reservation`` is cleared by :meth:`release`.
    :ivar driver: its enabled driver, or None when the driver is not
        enabled on this worker.
    """

    def __init__(self, db: db_api.Connection, node: db_api.NodeRecord,
                 holder: str, drivers: Mapping[str, base.BaseDriver],
                 timeout: float) -> None:
        self.node = node
        self.holder = holder
        self.driver = drivers.get(node.driver)
        self._db = db
        self._timeout = timeout
        self._released = False

    def call(self, method: str, *args: Any) -> Any:
        """Call the node's driver under the deadline (see call_driver).

        :raises DriverNotEnabled: when the driver is not enabled here.
        """
        if self.driver is None:
            raise exceptions.DriverNotEnabled(driver=self.node.driver,
                                              enabled=self.holder)
        return call_driver(self.driver, method, self.node, *args,
                           timeout=self._timeout)

    def record(self, values: Mapping[str, Any]) -> db_api.NodeRecord:
        """Write ``values`` to the node under this reservation."""
        self.node = self._db.update_node(self.node.uuid, values,
                                         holder=self.holder)
        return self.node

    def release(self) -> None:
        """Release the reservation (once; later calls do nothing)."""
        if self._released:
            return
        self._released = True
        self._db.release_node(self.node.uuid, self.holder)
        self.node = dataclasses.replace(self.node, reservation=None)

    def spawn(self, pool: pool_mod.WorkerPool,
              fn: Callable[["Task"], _R]) -> futures.Future[_R]:
        """Run ``fn(self)`` on a pool thread, which then releases the node.

        The returned future completes after the release, so whoever waits
        on it reads :attr:`node` as released.

        :raises NoFreeWorker: when the pool is full (or shutting down);
            the reservation is still the caller's then.
        """
        def run() -> _R:
            try:
                return fn(self)
            finally:
                self.release()

        try:
            return pool.submit(run)
        except RuntimeError:  # the pool is shutting down
            raise exceptions.NoFreeWorker(size=pool.size) from None


@contextlib.contextmanager
def acquire(db: db_api.Connection, uuid: str, holder: str,
            drivers: Mapping[str, base.BaseDriver],
            timeout: float) -> Iterator[Task]:
    """Reserve node ``uuid`` for the ``with`` block; release it after.

    :raises NodeLocked: when another holder has it.
    :raises NodeNotFound: when it is gone.
    """
    t = Task(db, db.reserve_node(uuid, holder), holder, drivers, timeout)
    try:
        yield t
    finally:
        t.release()


def request_power(db: db_api.Connection, uuid: str, target: str,
                  holder: str, drivers: Mapping[str, base.BaseDriver],
                  timeout: float) -> Task:
    """Record ``target`` as the node's requested action, reserved by us.

    One conditional UPDATE: accepted only when the node is neither
    reserved nor already has an action pending. The caller then
    :meth:`Task.spawn` s the action, or calls :func:`withdraw`.

    :raises NodeLocked: when it is reserved or has an action pending.
    :raises NodeNotFound: when it is gone.
    """
    node = db.request_power_state(uuid, target, holder=holder)
    return Task(db, node, holder, drivers, timeout)


def withdraw(t: Task) -> None:
    """Undo :func:`request_power`: clear the request, release the node."""
    try:
        t.record({"target_power_state": None})
    finally:
        t.release()

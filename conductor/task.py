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

A power action is *claimed* in the UPDATE that reserves the node for it
(``power_action_claim``), then applied, then recorded (target and claim
cleared). A task that finds a claim it did not write knows the action
was interrupted (:attr:`Task.interrupted`).

Each worker knows what it holds (:func:`holdings`): the nodes whose task
is not released yet, never released by a stopping worker (their call may
still be running), and the releases that failed, retried until they
succeed.

Every reservation carries a fencing token, the node's
``reservation_epoch`` as the reserving UPDATE left it; the database
increments it at every reserve and every takeover. A task writes and
releases only at its own epoch, and checks it before every driver call.
A task whose reservation was taken over (another worker judged this one
dead and released it) is *fenced*: it logs an error naming the node,
records nothing and calls the BMC no more (:class:`ReservationLost`).
"""

from __future__ import annotations

from concurrent import futures
import contextlib
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterator, Mapping, TypeVar
import weakref

from oslo_utils import uuidutils

from conductor.common import deadline
from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.common import metrics
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import bmc
from conductor.executor import pool as pool_mod
from conductor import nodes

LOG = logging.getLogger(__name__)

_R = TypeVar("_R")

#: Seconds before the first retry of a failed release; doubled after
#: every failed retry, up to :data:`RETRY_MAX`.
RETRY_FIRST = 1.0
RETRY_MAX = 60.0


#: Raised by a task whose reservation was taken over (see the module doc).
ReservationLost = exceptions.ReservationLost


class WorkerStopping(exceptions.ConductorException):
    message = ("Worker %(holder)s is stopping; node %(node)s is left to "
               "its next owner.")


@dataclasses.dataclass
class _Retry:
    attempts: int
    due: float
    epoch: int | None = None


class Holdings:
    """What one worker holds: nodes in use by its tasks, releases to retry.

    A node is *in use* from just before its reservation is taken until
    its task released it: its driver call may be running, so a stopping
    worker never releases it (:meth:`close`). A release that fails is
    queued and retried (:meth:`retry_releases`) with a backoff, until it
    succeeds; meanwhile the node is refused to new tasks of this worker.

    Built by :func:`holdings`, one per database connection and holder.
    """

    def __init__(self, db: db_api.Connection, holder: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self.holder = holder
        self._monotonic = monotonic
        # NOTE: guards every attribute below; database calls are made
        # outside it.
        self._lock = threading.Lock()
        self._in_use: dict[str, int] = {}
        self._retry: dict[str, _Retry] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: no new task, no new driver call."""
        with self._lock:
            return self._closed

    def enter(self, uuid: str) -> None:
        """Mark ``uuid`` in use, before its reservation is taken.

        :raises WorkerStopping: after :meth:`close`.
        :raises NodeLocked: while a failed release of it waits for retry.
        """
        with self._lock:
            if self._closed:
                raise WorkerStopping(holder=self.holder, node=uuid)
            if uuid in self._retry:
                raise exceptions.NodeLocked(
                    node=uuid, holder="%s (its release failed and is being "
                    "retried)" % self.holder)
            self._in_use[uuid] = self._in_use.get(uuid, 0) + 1

    def leave(self, uuid: str) -> None:
        """``uuid`` is no longer used by a task of this worker."""
        with self._lock:
            count = self._in_use.get(uuid, 0) - 1
            if count > 0:
                self._in_use[uuid] = count
            else:
                self._in_use.pop(uuid, None)

    def in_use(self) -> list[str]:
        """The nodes whose task is not released yet (sorted)."""
        with self._lock:
            return sorted(self._in_use)

    def pending_releases(self) -> list[str]:
        """The nodes whose release failed and waits for a retry (sorted)."""
        with self._lock:
            return sorted(self._retry)

    def status(self) -> dict[str, list[str]]:
        """For the worker's status snapshot (JSON-safe)."""
        return {"in_flight": self.in_use(),
                "release_pending": self.pending_releases()}

    def close(self) -> list[str]:
        """Refuse new tasks and driver calls; returns the nodes in use.

        Everything else this worker holds may then be released: nothing
        can start using it any more.
        """
        with self._lock:
            self._closed = True
            return sorted(self._in_use)

    def forget_releases(self) -> None:
        """Drop the queued releases (the caller released them in bulk)."""
        with self._lock:
            self._retry.clear()

    def release(self, uuid: str, epoch: int | None = None) -> bool:
        """Release ``uuid``; a failure is queued for retry, never raised.

        A success proves the database answers: due retries follow.

        :param epoch: the reservation's fencing token (a reservation
            taken over since is left alone).
        :returns: True when released now.
        """
        try:
            self._db.release_node(uuid, self.holder, epoch)
        except Exception as exc:
            with self._lock:
                self._retry[uuid] = _Retry(
                    1, self._monotonic() + RETRY_FIRST, epoch)
            if not conductor_log.database_failed(
                    "releasing node %s" % uuid, exc):
                LOG.warning("Releasing node %(node)s failed (%(err)s); "
                            "%(holder)s retries until it succeeds",
                            {"node": uuid, "err": _text(exc),
                             "holder": self.holder})
            return False
        if self._retry:
            self.retry_releases()
        return True

    def retry_releases(self, now: bool = False) -> int:
        """Retry the queued releases that are due; returns how many remain.

        Stops at the first failure (the database is likely away), which
        waits twice as long as before, up to :data:`RETRY_MAX` seconds.

        :param now: retry every queued release, due or not (the database
            just answered).
        """
        with self._lock:
            clock = self._monotonic()
            due = [(uuid, entry.epoch)
                   for uuid, entry in sorted(self._retry.items())
                   if now or entry.due <= clock]
        for uuid, epoch in due:
            try:
                self._db.release_node(uuid, self.holder, epoch)
            except Exception as exc:
                with self._lock:
                    entry = self._retry.get(uuid)
                    if entry is not None:
                        entry.due = self._monotonic() + min(
                            RETRY_MAX, RETRY_FIRST * 2 ** entry.attempts)
                        entry.attempts += 1
                if not conductor_log.database_failed(
                        "releasing node %s" % uuid, exc):
                    LOG.warning("Releasing node %(node)s failed again "
                                "(%(err)s); retrying later",
                                {"node": uuid, "err": _text(exc)})
                break
            with self._lock:
                self._retry.pop(uuid, None)
            LOG.info("Node %(node)s released by %(holder)s after a failed "
                     "release", {"node": uuid, "holder": self.holder})
        with self._lock:
            return len(self._retry)


_HOLDINGS: weakref.WeakKeyDictionary[
    db_api.Connection, dict[str, Holdings]] = weakref.WeakKeyDictionary()
_HOLDINGS_LOCK = threading.Lock()


def holdings(db: db_api.Connection, holder: str) -> Holdings:
    """The :class:`Holdings` of ``holder`` over connection ``db``.

    One worker has one connection, so this is the worker's own; another
    connection (another worker, a restarted one) starts with none.
    """
    with _HOLDINGS_LOCK:
        by_holder = _HOLDINGS.setdefault(db, {})
        found = by_holder.get(holder)
        if found is None:
            found = by_holder[holder] = Holdings(db, holder)
        return found


def new_claim() -> str:
    """A fresh ``power_action_claim`` marker."""
    return uuidutils.generate_uuid(dashed=False)


def call_driver(driver: base.BaseDriver, method: str, node: Any,
                *args: Any, timeout: float) -> Any:
    """``driver.power.<method>(view of node, *args)`` under the deadline.

    The call waits for its turn at the node's BMC first (the worker's
    :class:`conductor.executor.bmc.Gate`: one call at a time per BMC
    address, ``bmc_min_interval`` apart, ``max_driver_calls_per_second``);
    that wait counts against the deadline.

    On a pool thread the call is watched by the pool: a driver that
    ignores the deadline is abandoned ``pool.GRACE`` seconds past it (its
    thread no longer holds a pool slot), and the node is not called again
    until that call returned (see :mod:`conductor.executor.pool`).

    :param node: a stored node or a sync row (see
        :func:`conductor.nodes.driver_view`).
    :param timeout: the per-call deadline (``power_state_timeout``).
    :returns: what the driver returned; its exceptions pass through.
    :raises BmcBusy: when the call's turn did not come before the
        deadline (the driver was not called).
    :raises conductor.executor.pool.CallStillRunning: when an abandoned
        call on this node has not returned yet.
    """
    view = nodes.driver_view(node)
    power = driver.power
    with pool_mod.guard_call(view.uuid, method, timeout), \
            deadline.scope(timeout):
        address = bmc_address(power, view)
        with bmc.current().turn(address, node=view.uuid):
            # NOTE: the latency recorded is the driver's own, without the
            # wait for the BMC's turn.
            started = time.monotonic()
            result = "error"
            try:
                answer = getattr(power, method)(view, *args)
                result = "success"
                return answer
            finally:
                metrics.driver_call(view.driver, method, result,
                                    time.monotonic() - started)


def bmc_address(power: base.PowerInterface,
                view: base.DriverNode) -> str | None:
    """The node's BMC address as its driver names it (None: not gated).

    Drivers written before ``bmc_address`` existed have none: their
    calls are not serialised per address.

    :raises TypeError: when the driver answers something else than a
        string or None.
    """
    getter = getattr(power, "bmc_address", None)
    if getter is None:
        return None
    address = getter(view)
    if address is not None and not isinstance(address, str):
        raise TypeError("%s.bmc_address returned %r, not a string or None"
                        % (type(power).__name__, address))
    return address or None


class Task:
    """A node reserved by this worker, with its driver.

    Built by :func:`acquire` or :func:`request_power`; release it exactly
    once (``acquire`` does, :meth:`spawn` hands that to the pool thread).

    :ivar node: the node as read when it was reserved, updated by
        :meth:`record`; its ``reservation`` is cleared by :meth:`release`.
    :ivar driver: its enabled driver, or None when the driver is not
        enabled on this worker.
    :ivar claim: the ``power_action_claim`` this task wrote, or None.
    :ivar epoch: the fencing token of the reservation.
    :ivar fenced: True once the reservation was found taken over.
    """

    def __init__(self, db: db_api.Connection, node: db_api.NodeRecord,
                 holder: str, drivers: Mapping[str, base.BaseDriver],
                 timeout: float, claim: str | None = None) -> None:
        self.node = node
        self.holder = holder
        self.driver = drivers.get(node.driver)
        self.claim = claim
        self.epoch = node.reservation_epoch
        self.fenced = False
        self._db = db
        self._timeout = timeout
        self._released = False
        self._holdings = holdings(db, holder)

    @property
    def interrupted(self) -> bool:
        """The pending action was claimed before, by another task.

        That task reserved the node to apply it and never recorded the
        outcome: the worker stopped or died, perhaps during the BMC call.
        The action may have been (partly) applied.
        """
        claim = self.node.power_action_claim
        return (self.node.target_power_state is not None
                and claim is not None and claim != self.claim)

    def call(self, method: str, *args: Any) -> Any:
        """Call the node's driver under the deadline (see call_driver).

        :raises DriverNotEnabled: when the driver is not enabled here.
        :raises WorkerStopping: when the worker is stopping (no new call
            starts then).
        :raises ReservationLost: when the reservation was taken over
            (checked in the database before every call).
        """
        if self.driver is None:
            raise exceptions.DriverNotEnabled(driver=self.node.driver,
                                              enabled=self.holder)
        if self._holdings.closed:
            raise WorkerStopping(holder=self.holder, node=self.node.uuid)
        if self.fenced or not self._db.holds(self.node.uuid, self.holder,
                                             self.epoch):
            raise self._fence()
        return call_driver(self.driver, method, self.node, *args,
                           timeout=self._timeout)

    def record(self, values: Mapping[str, Any]) -> db_api.NodeRecord:
        """Write ``values`` to the node under this reservation.

        :raises ReservationLost: when the reservation was taken over;
            nothing is written.
        """
        if self.fenced:
            raise self._fence()
        try:
            self.node = self._db.update_node(self.node.uuid, values,
                                             holder=self.holder,
                                             epoch=self.epoch)
        except ReservationLost:
            raise self._fence() from None
        return self.node

    def _fence(self) -> ReservationLost:
        """Mark this task fenced (logged once); the error to raise."""
        if not self.fenced:
            self.fenced = True
            LOG.error("Node %(node)s: the reservation of %(holder)s (epoch "
                      "%(epoch)d) was taken over by another worker; "
                      "%(holder)s stops acting on it: no further BMC call, "
                      "its outcome is not recorded",
                      {"node": self.node.uuid, "holder": self.holder,
                       "epoch": self.epoch})
        return ReservationLost(node=self.node.uuid, holder=self.holder,
                               epoch=self.epoch)

    def release(self) -> None:
        """Release the reservation (once; later calls do nothing).

        A release the database refuses is retried by the worker until it
        succeeds (:meth:`Holdings.release`); it is not raised.
        """
        if self._released:
            return
        self._released = True
        try:
            if not self.fenced:
                self._holdings.release(self.node.uuid, self.epoch)
        finally:
            self._holdings.leave(self.node.uuid)
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
            timeout: float, claim: bool = False) -> Iterator[Task]:
    """Reserve node ``uuid`` for the ``with`` block; release it after.

    :param claim: also claim its pending power action (same UPDATE).
    :raises NodeLocked: when another holder has it.
    :raises NodeNotFound: when it is gone.
    :raises WorkerStopping: when this worker is stopping.
    """
    t = _reserve(db, uuid, holder, drivers, timeout,
                 new_claim() if claim else None)
    try:
        yield t
    finally:
        t.release()


def _reserve(db: db_api.Connection, uuid: str, holder: str,
             drivers: Mapping[str, base.BaseDriver], timeout: float,
             claim: str | None) -> Task:
    held = holdings(db, holder)
    held.enter(uuid)
    try:
        node = db.reserve_node(uuid, holder, claim=claim)
    except BaseException:
        held.leave(uuid)
        raise
    return Task(db, node, holder, drivers, timeout, claim=claim)


def request_power(db: db_api.Connection, uuid: str, target: str,
                  holder: str, drivers: Mapping[str, base.BaseDriver],
                  timeout: float) -> Task:
    """Record ``target`` as the node's requested action, reserved by us.

    One conditional UPDATE records the target, reserves the node and
    claims the action: accepted only when the node is neither reserved
    nor already has an action pending. The caller then
    :meth:`Task.spawn` s the action, or calls :func:`withdraw`.

    :param uuid: the node's uuid or name.
    :raises NodeLocked: when it is reserved or has an action pending.
    :raises NodeNotFound: when it is gone.
    :raises WorkerStopping: when this worker is stopping.
    """
    held = holdings(db, holder)
    real_uuid = db.get_node(uuid).uuid
    held.enter(real_uuid)
    claim = new_claim()
    try:
        node = db.request_power_state(uuid, target, holder=holder,
                                      claim=claim)
    except BaseException:
        held.leave(real_uuid)
        raise
    return Task(db, node, holder, drivers, timeout, claim=claim)


def withdraw(t: Task) -> None:
    """Undo :func:`request_power`: clear the request, release the node."""
    try:
        t.record({"target_power_state": None, "power_action_claim": None})
    finally:
        t.release()


def _text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__

# SPDX-License-Identifier: Apache-2.0
"""Applying requested power actions (``target_power_state``).

A power action is requested by writing the node's ``target_power_state``
(the database is the source of truth); the owning worker applies it under
the node's reservation and records the outcome::

    reserve and claim  ->  driver call under the deadline  ->  record
    power_state (or last_error), clear target and claim  ->  release

through :mod:`conductor.task`, the one path that acts on a node.

The claim is written in the UPDATE that reserves the node. A node whose
target is still set under a claim nobody recorded had its action
interrupted (the worker stopped or died, perhaps during the BMC call):
whoever takes it next reads the BMC first and never acts blindly again.
A power on or off already in effect is recorded as done; one not in
effect is applied. A reboot is never repeated: it is recorded as
interrupted in ``last_error`` and the target is cleared, so only a new
request reboots the node again.

Without a broker the ``apply_pending_actions`` periodic finds requests
every ``pending_action_interval`` seconds; with RPC the owner is told at
once and calls :meth:`PowerActions.apply` directly. With power sync on,
the periodic reads the database only when power sync's change feed
(which reads every row written, once a tick) returned a request since
the last check found none, or after ``QUIET_SCANS_FOR`` seconds: a
request is then found within a tick more than before.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any, Callable, Mapping, Tuple

from oslo_utils import timeutils

from conductor.common import exceptions
from conductor.common import log as conductor_log
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import pool as worker_pool
from conductor import nodes
from conductor import notifications
from conductor import ownership
from conductor import states
from conductor import task

LOG = logging.getLogger(__name__)

#: ``(feeds read, requests they returned, partitions)``: see
#: :meth:`conductor.node_cache.NodeCache.requests_token`.
RequestsToken = Tuple[int, int, Tuple[int, ...]]

#: Longest run of scans that read nothing, trusting the change feed
#: (seconds): a request the feed missed (a transaction open longer than
#: its overlap) still waits no longer than this.
QUIET_SCANS_FOR = 10.0


class PowerActions:
    """Applies requested power actions on this worker's nodes.

    :param timeout: the per-call deadline (``power_state_timeout``).
    :param request_timeout: seconds after which a request not applied
        yet is dropped (``power_request_timeout``; 0: never).
    :param requests: power sync's change feed's token (see
        :meth:`conductor.node_cache.NodeCache.requests_token`): while it
        shows no request since a scan that found none, the next scan
        reads nothing (at most ``QUIET_SCANS_FOR`` seconds in a row).
    :param monotonic: clock for ``QUIET_SCANS_FOR``.
    """

    def __init__(self, db: db_api.Connection,
                 drivers: Mapping[str, base.BaseDriver],
                 rings: ownership.Rings, pool: worker_pool.WorkerPool,
                 timeout: float, request_timeout: float = 0,
                 requests: Callable[[], RequestsToken] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._requests = requests
        self._monotonic = monotonic
        #: The feed's token at the last scan that found nothing pending
        #: (None: the last scan found some, or none was made).
        self._quiet_token: RequestsToken | None = None
        self._read_at = -float("inf")
        self._db = db
        self._request_timeout = request_timeout
        self._drivers = dict(drivers)
        self._rings = rings
        self._pool = pool
        self._timeout = timeout
        # NOTE: guards _queued: nodes whose action is submitted to the pool
        # and not finished, so one node is never submitted twice.
        self._lock = threading.Lock()
        self._queued: set[str] = set()

    def scan(self, request_timeout: float | None = None) -> int:
        """Submit every owned node with a pending action; returns how many.

        Requests older than ``request_timeout`` are dropped first (see
        :meth:`expire`). Nodes that do not fit in the pool now are picked
        up by a later scan (``NoFreeWorker`` is never an error here).

        :param request_timeout: overrides the one given at construction
            (the periodic task passes the current option value).
        """
        self._rings.maybe_update()
        # NOTE: held partitions too: a reservation keeps two workers from
        # applying one action; only polls wait for a handover.
        partitions = sorted(self._rings.owned_partitions())
        if not partitions:
            return 0
        token = None if self._requests is None else self._requests()
        if self._quiet(token, partitions):
            self._quiet_token = token
            return 0
        self._read_at = self._monotonic()
        owned = self._db.node_uuids(with_target=True, reserved=False,
                                    drivers=list(self._drivers),
                                    partitions=partitions)
        self._quiet_token = None if owned else token
        expired = self.expire(owned, self._request_timeout
                              if request_timeout is None else request_timeout)
        submitted = 0
        for uuid in owned:
            if uuid in expired:
                continue
            try:
                if self.submit(uuid):
                    submitted += 1
            except exceptions.NoFreeWorker:
                LOG.debug("Pool full; power action of node %s waits for "
                          "the next scan", uuid)
                break
        return submitted

    def _quiet(self, token: RequestsToken | None,
               partitions: list[int]) -> bool:
        """Whether no request can have come since the last empty scan.

        A request is a write: the first feed read after it returns it.
        So a feed read since that scan that returned no request, over
        the same partitions (none held back for a handover: the feed
        does not read those), means there is none to look for.
        """
        last = self._quiet_token
        return (token is not None and last is not None
                and token[0] > last[0] and token[1] == last[1]
                and token[2] == last[2] and list(token[2]) == partitions
                and self._monotonic() - self._read_at < QUIET_SCANS_FOR)

    def expire(self, uuids: list[str], request_timeout: float) -> set[str]:
        """Drop the requests of ``uuids`` older than ``request_timeout`` s.

        A request nobody applied in time (no conductor with the node's
        driver was running) is not applied late: it is cleared, and
        ``last_error`` says why. Each is one conditional write, so a
        request taken by a worker meanwhile is left to it.

        :returns: the uuids whose request was dropped.
        """
        if request_timeout <= 0 or not uuids:
            return set()
        now = timeutils.utcnow()
        cutoff = now - datetime.timedelta(seconds=request_timeout)
        dropped = set()
        stale = self._db.stale_power_requests(uuids, cutoff)
        for _ in range(_EXPIRY_ATTEMPTS):
            retry = []
            for uuid, target, version in stale:
                error = _dropped(target, request_timeout)
                if self._db.clear_power_request(uuid, error, target=target,
                                                version=version):
                    LOG.warning("Node %(node)s: %(err)s",
                                {"node": uuid, "err": error})
                    dropped.add(uuid)
                else:
                    retry.append(uuid)
            if not retry:
                break
            # NOTE: another write (a power-sync record) may have changed
            # the node's version since it was read; what is still stale,
            # pending and untaken is dropped at the next attempt, so a
            # stale request never slips through to be applied late.
            stale = self._db.stale_power_requests(retry, cutoff)
        return dropped

    def submit(self, uuid: str) -> bool:
        """Apply the node's pending action on a pool thread.

        :returns: False when it is already queued here.
        :raises: NoFreeWorker when the pool is full.
        """
        with self._lock:
            if uuid in self._queued:
                return False
            self._queued.add(uuid)
        try:
            self._pool.submit(self._apply_queued, uuid)
        except BaseException:
            with self._lock:
                self._queued.discard(uuid)
            raise
        return True

    def _apply_queued(self, uuid: str) -> None:
        try:
            self.apply(uuid)
        except (exceptions.NodeLocked, exceptions.NodeNotFound,
                task.WorkerStopping, task.ReservationLost) as exc:
            # NOTE: a lost reservation was logged at ERROR by the task.
            LOG.debug("Power action of node %s skipped: %s", uuid, exc)
        except Exception as exc:
            if not conductor_log.database_failed(
                    "power action of node %s" % uuid, exc):
                LOG.exception("Power action of node %s failed "
                              "unexpectedly", uuid)
        finally:
            with self._lock:
                self._queued.discard(uuid)

    def apply(self, uuid: str) -> db_api.NodeRecord | None:
        """Apply the pending action of ``uuid`` now, in this thread.

        :returns: the node after the action (its reservation released),
            or None when it had none.
        :raises: NodeLocked, NodeNotFound.
        """
        with task.acquire(self._db, uuid, self._rings.holder, self._drivers,
                          self._timeout, claim=True) as t:
            applied = self.apply_task(t)
        return None if applied is None else t.node

    def apply_task(self, t: task.Task) -> db_api.NodeRecord | None:
        """Apply the pending action of a node this worker reserved.

        Runs the driver call under the deadline and records the outcome
        (``power_state`` or ``last_error``; ``target_power_state`` and
        the claim cleared). An interrupted action (see
        :attr:`conductor.task.Task.interrupted`) is resolved by reading
        the BMC first. The caller releases the reservation.

        :returns: the node as recorded, or None when it had no action.
        """
        node, holder = t.node, t.holder
        target = node.target_power_state
        if target is None:
            return None
        if target not in states.POWER_TARGETS:
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "last_error": "Unknown requested power state "
                                           "%r" % target})
        if t.driver is None:
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "last_error": "Driver %s is not enabled on %s"
                                           % (node.driver, holder)})
        if t.interrupted:
            return self._resolve(t, target)
        if self._stale(node):
            # NOTE: expire() drops stale requests before they are taken;
            # this catches one whose node changed while expire() tried.
            error = _dropped(target, self._request_timeout)
            LOG.warning("Node %(node)s: %(err)s", {"node": nodes.label(node),
                                                   "err": error})
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "last_error": error})
        return self._act(t, target)

    def _stale(self, node: db_api.NodeRecord) -> bool:
        """True when the node's request is older than the request timeout."""
        requested = node.target_power_state_requested_at or node.updated_at
        if self._request_timeout <= 0 or requested is None:
            return False
        return requested < timeutils.utcnow() - datetime.timedelta(
            seconds=self._request_timeout)

    def _resolve(self, t: task.Task, target: str) -> db_api.NodeRecord:
        """Settle an interrupted action by reading the BMC first."""
        uuid = nodes.label(t.node)  # for the logs
        try:
            actual = t.call("get_power_state")
        except (task.WorkerStopping, task.ReservationLost):
            return t.node           # still interrupted: the next owner
        except Exception as exc:
            error = ("%s was interrupted (the conductor stopped during the "
                     "BMC call) and is not repeated: reading the power "
                     "state failed: %s; request it again"
                     % (_action(target), _text(exc)))
            LOG.warning("Node %(node)s: %(err)s", {"node": uuid,
                                                   "err": error})
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "last_error": error})
        if target == states.REBOOT:
            error = ("reboot was interrupted (the conductor stopped during "
                     "the BMC call) and is not repeated; the node is %s: "
                     "request a reboot again if it is still needed"
                     % actual)
            LOG.warning("Node %(node)s: %(err)s", {"node": uuid,
                                                   "err": error})
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "power_state": actual, "last_error": error})
        if actual == target:
            LOG.info("Node %(node)s: interrupted %(target)s had taken "
                     "effect (the BMC reports %(actual)s); recorded as done "
                     "without acting again",
                     {"node": uuid, "target": target, "actual": actual})
            return t.record({"target_power_state": None,
                             "power_action_claim": None,
                             "power_state": actual, "last_error": None})
        LOG.info("Node %(node)s: interrupted %(target)s had not taken "
                 "effect (the BMC reports %(actual)s); applying it",
                 {"node": uuid, "target": target, "actual": actual})
        return self._act(t, target)

    def _act(self, t: task.Task, target: str) -> db_api.NodeRecord:
        """Apply the claimed action and record its outcome."""
        uuid = nodes.label(t.node)  # for the logs
        values: dict[str, Any] = {"target_power_state": None,
                                  "power_action_claim": None}
        notifications.power_set("start", t.node, target)
        try:
            if target == states.REBOOT:
                t.call("reboot")
            else:
                t.call("set_power_state", target)
        except task.WorkerStopping:
            # NOTE: nothing was sent to the BMC: hand the request over to
            # the next owner untouched (pending, unclaimed).
            LOG.info("Node %(node)s: %(target)s left pending; the worker "
                     "is stopping", {"node": uuid, "target": target})
            return t.record({"power_action_claim": None})
        except task.ReservationLost:
            # NOTE: another worker owns the node now and settles the
            # action (its claim tells it to read the BMC first).
            return t.node
        except Exception as exc:
            values["last_error"] = "%s failed: %s" % (target, _text(exc))
            notifications.power_set("error", t.node, target,
                                    values["last_error"])
            LOG.warning("Node %(node)s: %(err)s",
                        {"node": uuid, "err": values["last_error"]})
        else:
            values["last_error"] = None
            values["power_state"] = (states.POWER_ON
                                     if target == states.REBOOT else target)
            notifications.power_set("end", t.node, target)
            LOG.info("Node %(node)s: %(target)s done",
                     {"node": uuid, "target": target})
        return t.record(values)


def _dropped(target: str, request_timeout: float) -> str:
    """``last_error`` of a request dropped for being too old."""
    return ("Requested '%s' dropped: not applied within [conductor] "
            "power_request_timeout (%ss); request it again"
            % (target, _seconds(request_timeout)))


#: Attempts at dropping one stale request whose node changed meanwhile.
_EXPIRY_ATTEMPTS = 3


def _seconds(value: float) -> str:
    return "%d" % value if float(value).is_integer() else "%g" % value


def _action(target: str) -> str:
    return "reboot" if target == states.REBOOT else target


def _text(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__

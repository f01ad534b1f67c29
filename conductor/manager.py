# SPDX-License-Identifier: Apache-2.0
"""The RPC endpoints: what a conductor worker answers over oslo.messaging.

Every worker of a host runs one RPC server on ``Target(topic="conductor",
server=<host>)`` with one :class:`ConductorManager` endpoint (built in
``ConductorService.start()``, after the fork)::

    endpoint = ConductorManager(host, db, drivers, rings, pool, actions,
                                forwarder=rpcapi.ConductorAPI(transport),
                                heartbeat_timeout=60, action_timeout=30)
    server = rpc.build_server(transport, host, [endpoint])

Reads (``get_node``, ``list_nodes``, ``get_status``) and ``create_node``
are answered from the database by whichever host receives them. Changes to
a node (``update_node``, ``delete_node``, ``set_power_state``) are handled
by the host owning the node (the same rings as the periodic work); another
host forwards them there, once: a forwarded call is never forwarded again.

Errors: the exceptions of :data:`~conductor.common.exceptions.
RPC_EXCEPTIONS` reach the caller by name with their message, and nothing
else of the server's state: no traceback, no chained exception. Any other
error becomes a plain ``ConductorException`` saying "Internal error in
<method>; see the conductor log (request <id>)", and the details are only
logged here.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import logging
from typing import Any, Callable, Mapping, TypeVar

import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from conductor.common import exceptions
from conductor.common import masking
from conductor.common import metrics
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.executor import pool as worker_pool
from conductor import nodes
from conductor import ownership
from conductor import power_actions
from conductor import rpcapi
from conductor import states
from conductor import status as status_report
from conductor import task

LOG = logging.getLogger(__name__)

#: Longest node identifier (uuid or name) accepted over RPC.
MAX_IDENT_LENGTH = 255
#: Filters ``list_nodes`` accepts, with their types.
LIST_FILTERS: dict[str, type] = {"driver": str, "maintenance": bool}
#: Seconds a ``set_power_state(wait=True)`` waits beyond the driver
#: deadline (``power_state_timeout``) for the action to be recorded.
WAIT_GRACE = 5.0
#: Largest ``limit`` ``list_nodes`` accepts: beyond it a number no longer
#: fits the database's integer types (an SQL error, not a refusal).
MAX_LIST_LIMIT = 100000

_F = TypeVar("_F", bound=Callable[..., Any])


def _invalid(text: str) -> exceptions.InvalidParameterValue:
    return exceptions.InvalidParameterValue(err=text)


def _short(value: Any) -> str:
    """``value`` for an error message (a number cut to 40 characters)."""
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__


def _clean_copy(exc: exceptions.ConductorException
                ) -> exceptions.ConductorException:
    """The same named exception and message, with no cause or traceback.

    The database layer raises some of these ``from`` a driver error whose
    text may hold SQL parameters (``driver_info`` secrets); a fresh copy
    carries the message only.
    """
    cls = type(exc)
    if cls.__name__.endswith("_Remote"):
        cls = cls.__mro__[1]
    # NOTE: the message may quote the caller's input, an address with a
    # password in it: never send it back (nor log it) unmasked.
    return cls(masking.mask_url(str(exc)),
               **masking.mask_data(getattr(exc, "kwargs", {})))


def _endpoint(fn: _F) -> _F:
    """Make ``fn`` an RPC method: check its arguments, contain its errors.

    Arguments that do not fit the signature (unknown, missing) raise
    ``InvalidParameterValue``. Named exceptions leave as clean copies;
    anything else is logged with its traceback and replaced by a generic
    internal error. Both leave wrapped in oslo.messaging's
    ``ExpectedException`` with no traceback, so the server logs them at
    debug level and sends only the class and the message.
    """
    signature = inspect.signature(fn)
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self: "ConductorManager", context: Any, **kwargs: Any
                ) -> Any:
        try:
            try:
                signature.bind(self, context, **kwargs)
            except TypeError as exc:
                raise _invalid("%s: %s" % (name, exc)) from None
            found = fn(self, context, **kwargs)
            metrics.rpc_call(name, "success")
            return found
        except Exception as exc:
            metrics.rpc_call(name, type(exc).__name__)
            clean = self._contain(name, context, exc)
        expected = rpc_dispatcher.ExpectedException()
        # NOTE: no traceback: oslo.messaging would send its text (paths,
        # source lines, chained exceptions) to the caller.
        expected.exc_info = (type(clean), clean, None)
        raise expected

    return wrapper  # type: ignore[return-value]


class ConductorManager:
    """The RPC endpoint of one worker (methods take ``(self, context, ...)``).

    :param host: this worker's host.
    :param db: the worker's database connection.
    :param drivers: the enabled drivers, by name.
    :param rings: the worker's ownership rings (routing by owner host).
    :param pool: the worker's bounded pool; power actions run on it.
    :param actions: applies requested power actions.
    :param forwarder: client used to forward a change to the owning host.
    :param heartbeat_timeout: seconds after which a worker counts as dead
        (``get_status``).
    :param action_timeout: the driver call deadline
        (``power_state_timeout``); ``wait=True`` waits that plus
        :data:`WAIT_GRACE`.
    :param sync_interval: ``sync_power_state_interval``, for the nodes
        overdue per host in ``get_status`` (None: not computed).
    """

    #: The RPC API version this endpoint implements.
    RPC_API_VERSION = "1.0"
    target = messaging.Target(version=RPC_API_VERSION)

    def __init__(self, host: str, db: db_api.Connection,
                 drivers: Mapping[str, base.BaseDriver],
                 rings: ownership.Rings, pool: worker_pool.WorkerPool,
                 actions: power_actions.PowerActions,
                 forwarder: rpcapi.ConductorAPI | None, *,
                 heartbeat_timeout: float, action_timeout: float,
                 sync_interval: float | None = None) -> None:
        self._host = host
        self._db = db
        self._drivers = dict(drivers)
        self._rings = rings
        self._pool = pool
        self._actions = actions
        self._forwarder = forwarder
        self._heartbeat_timeout = heartbeat_timeout
        self._action_timeout = action_timeout
        self._sync_interval = sync_interval

    # -- error containment -------------------------------------------------

    def _contain(self, method: str, context: Any, exc: Exception
                 ) -> exceptions.ConductorException:
        """What the caller gets for ``exc`` raised by ``method``."""
        if isinstance(exc, exceptions.RPC_EXCEPTIONS):
            clean = _clean_copy(exc)
            LOG.debug("%(method)s: %(error)s",
                      {"method": method, "error": clean})
            return clean
        if isinstance(exc, _OwnerUnreachable):
            return exceptions.ConductorException(masking.mask_url(str(exc)))
        request_id = getattr(context, "request_id", None) or "-"
        LOG.exception("Internal error in %(method)s (request %(req)s)",
                      {"method": method, "req": request_id})
        return exceptions.ConductorException(
            "Internal error in %s; see the conductor log (request %s)"
            % (method, request_id))

    # -- argument checks ---------------------------------------------------

    @staticmethod
    def _ident(node: Any) -> str:
        if not isinstance(node, str):
            raise _invalid("node must be a UUID or a name (a string), got "
                           "%s" % type(node).__name__)
        if not 1 <= len(node) <= MAX_IDENT_LENGTH:
            raise _invalid("node must be a UUID or a name of 1 to %d "
                           "characters, got %d characters"
                           % (MAX_IDENT_LENGTH, len(node)))
        return node

    @staticmethod
    def _target(target: Any) -> str:
        if isinstance(target, str):
            target = states.POWER_VERBS.get(target, target)
        if not isinstance(target, str) or target not in states.POWER_TARGETS:
            raise _invalid(
                "target must be one of %s (or %s), got %r" % (
                    ", ".join(repr(t) for t in sorted(states.POWER_TARGETS)),
                    ", ".join(sorted(states.POWER_VERBS)),
                    target if not isinstance(target, str)
                    else target[:64]))
        return target

    @staticmethod
    def _flag(field: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _invalid("%s must be true or false, got %s"
                           % (field, type(value).__name__))
        return value

    def _forwarded(self, value: Any) -> str | None:
        """``forwarded_by``: None, or a live host other than this one.

        A call marked as forwarded is handled here whoever owns the node
        (it is never forwarded twice); only a conductor forwarding to the
        owner may say so, so the claim is checked against the hosts with
        a live worker.
        """
        if value is None:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= \
                nodes.MAX_NAME_LENGTH:
            raise _invalid("forwarded_by must be a host name of 1 to %d "
                           "characters or null, got %s"
                           % (nodes.MAX_NAME_LENGTH,
                              "%d characters" % len(value)
                              if isinstance(value, str)
                              else type(value).__name__))
        if value == self._host:
            raise _invalid("forwarded_by names this host (%s): a host "
                           "never forwards to itself" % value)
        self._rings.refresh()
        if value not in self._rings.membership.hosts:
            raise _invalid("forwarded_by %r is not a live conductor host; "
                           "only a conductor forwarding a call to the "
                           "node's owner sets it" % value)
        return value

    # -- routing -------------------------------------------------------------

    def _owner_elsewhere(self, uuid: str, forwarded_by: str | None
                         ) -> str | None:
        """The owning host when it is not this one and we may forward."""
        if forwarded_by is not None or self._forwarder is None:
            return None
        self._rings.refresh()
        owner = self._rings.owner_host(uuid)
        if owner is None or owner == self._host:
            return None
        return owner

    def _forward(self, method: str, owner: str, node: str, *args: Any,
                 **kwargs: Any) -> Any:
        """Call ``method(node, *args, **kwargs)`` on the owner host."""
        LOG.debug("Forwarding %(method)s of node %(node)s to its owner "
                  "%(owner)s", {"method": method, "node": node,
                                "owner": owner})
        assert self._forwarder is not None
        call = getattr(self._forwarder, method)
        try:
            return call(node, *args, host=owner, forwarded_by=self._host,
                        **kwargs)
        except messaging.MessagingTimeout:
            raise _OwnerUnreachable(
                "Host %s, owner of node %s, did not answer %s in time; "
                "retry later" % (owner, node, method)) from None
        except messaging.MessageDeliveryFailure:
            raise _OwnerUnreachable(
                "Host %s, owner of node %s, could not be reached for %s; "
                "retry later" % (owner, node, method)) from None

    # -- reads -------------------------------------------------------------

    @_endpoint
    def get_node(self, context: Any, node: str) -> dict[str, Any]:
        """The node with uuid or name ``node``.

        :raises: NodeNotFound, InvalidParameterValue.
        """
        return nodes.to_primitive(self._db.get_node(self._ident(node)))

    @_endpoint
    def list_nodes(self, context: Any, filters: Any = None,
                   limit: Any = None) -> list[dict[str, Any]]:
        """Nodes ordered by creation (see ``ConductorAPI.list_nodes``).

        :raises: InvalidParameterValue naming a bad filter or limit.
        """
        filters = {} if filters is None else filters
        if not isinstance(filters, Mapping):
            raise _invalid("filters must be a mapping of filter to value, "
                           "got %s" % type(filters).__name__)
        for key, value in filters.items():
            kind = LIST_FILTERS.get(key)
            if kind is None:
                raise _invalid("Unknown filter %r; allowed: %s"
                               % (str(key)[:64],
                                  ", ".join(sorted(LIST_FILTERS))))
            if not isinstance(value, kind) or (
                    isinstance(value, str) and not 1 <= len(value) <= 255):
                raise _invalid("Filter %s must be %s, got %s" % (
                    key, "true or false" if kind is bool
                    else "a string of 1 to 255 characters",
                    type(value).__name__))
        if limit is not None and (isinstance(limit, bool)
                                  or not isinstance(limit, int)
                                  or not 1 <= limit <= MAX_LIST_LIMIT):
            raise _invalid("limit must be an integer >= 1 and <= %d, or "
                           "null, got %s" % (MAX_LIST_LIMIT, _short(limit)))
        found = self._db.list_nodes(driver=filters.get("driver"),
                                    maintenance=filters.get("maintenance"),
                                    limit=limit)
        return [nodes.to_primitive(node) for node in found]

    @_endpoint
    def get_status(self, context: Any) -> dict[str, Any]:
        """Per host and worker: liveness, pool, periodic tasks, sweeps."""
        return status_report.build(self._db, self._heartbeat_timeout,
                                   self._sync_interval)

    # -- changes -------------------------------------------------------------

    @_endpoint
    def create_node(self, context: Any, values: Any) -> dict[str, Any]:
        """Enrol a node (any host may do it).

        :raises: InvalidParameterValue, DriverNotEnabled, DuplicateName.
        """
        clean = nodes.validate_new(values, self._drivers)
        node = self._db.create_node(clean)
        LOG.info("Node %(uuid)s (%(name)s) created over RPC",
                 {"uuid": node.uuid, "name": node.name})
        return nodes.to_primitive(node)

    @_endpoint
    def update_node(self, context: Any, node: str, values: Any,
                    forwarded_by: Any = None) -> dict[str, Any]:
        """Change fields of a node, on its owning host.

        :raises: NodeNotFound, NodeLocked, InvalidParameterValue,
            DriverNotEnabled, DuplicateName.
        """
        ident = self._ident(node)
        forwarded_by = self._forwarded(forwarded_by)
        if not isinstance(values, Mapping):
            raise _invalid("values must be a mapping of field to value, "
                           "got %s" % type(values).__name__)
        if not values:
            raise _invalid("update_node: nothing to change")
        record = self._db.get_node(ident)
        owner = self._owner_elsewhere(record.uuid, forwarded_by)
        if owner is not None:
            return nodes.dict_to_primitive(self._forward(
                "update_node", owner, ident, values, context=context))
        values = _keep_masked_secrets(values, record.driver_info)
        clean = nodes.validate_update(record, values, self._drivers)
        updated = self._db.update_node(record.uuid, clean)
        LOG.info("Node %(uuid)s updated over RPC: %(fields)s",
                 {"uuid": record.uuid, "fields": ", ".join(sorted(clean))})
        return nodes.to_primitive(updated)

    @_endpoint
    def delete_node(self, context: Any, node: str,
                    forwarded_by: Any = None) -> None:
        """Delete an unreserved node, on its owning host.

        :raises: NodeNotFound, NodeLocked, InvalidParameterValue.
        """
        ident = self._ident(node)
        forwarded_by = self._forwarded(forwarded_by)
        record = self._db.get_node(ident)
        owner = self._owner_elsewhere(record.uuid, forwarded_by)
        if owner is not None:
            self._forward("delete_node", owner, ident, context=context)
            return
        self._db.delete_node(record.uuid)
        LOG.info("Node %s deleted over RPC", record.uuid)

    @_endpoint
    def set_power_state(self, context: Any, node: str, target: str,
                        wait: Any = False, forwarded_by: Any = None
                        ) -> dict[str, Any]:
        """Record a power action and apply it at once, on the owning host.

        The owner records ``target_power_state`` and reserves the node in
        one conditional write (``NodeLocked`` when the node is reserved or
        has an action pending), then hands the action to a pool thread
        (``NoFreeWorker`` when none is free: the request is withdrawn and
        nothing is left recorded). See :mod:`conductor.task`.

        :param wait: answer when the action is done (bounded by the driver
            deadline plus :data:`WAIT_GRACE`).
        :returns: the node: just requested, or after the action with
            ``wait`` (``last_error`` tells whether it failed).
        :raises: NodeNotFound, NodeLocked, NoFreeWorker,
            InvalidParameterValue.
        """
        ident = self._ident(node)
        target = self._target(target)
        wait = self._flag("wait", wait)
        forwarded_by = self._forwarded(forwarded_by)
        record = self._db.get_node(ident)
        owner = self._owner_elsewhere(record.uuid, forwarded_by)
        if owner is not None:
            return nodes.dict_to_primitive(self._forward(
                "set_power_state", owner, ident, target, wait=wait,
                context=context))
        # NOTE: refuse a full pool before anything is written; should a
        # thread be taken meanwhile, spawning fails and the request is
        # withdrawn below, so a refused call leaves nothing behind.
        if self._pool.free < 1:
            raise exceptions.NoFreeWorker(size=self._pool.size)
        # NOTE: by the caller's identifier, so that NodeLocked names the
        # node as the caller did (as conductor-manage always has).
        t = task.request_power(self._db, ident, target, self._rings.holder,
                               self._drivers, self._action_timeout)
        requested = dataclasses.replace(t.node, reservation=None)
        try:
            future = t.spawn(self._pool, self._apply)
        except exceptions.NoFreeWorker:
            task.withdraw(t)
            raise
        LOG.info("Node %(uuid)s: %(target)s requested over RPC%(via)s",
                 {"uuid": record.uuid, "target": target,
                  "via": " (via %s)" % forwarded_by if forwarded_by else ""})
        if not wait:
            return nodes.to_primitive(requested)
        return nodes.to_primitive(self._outcome(t, future))

    def _apply(self, t: task.Task) -> db_api.NodeRecord | None:
        """Pool thread: apply the action just requested and reserved."""
        try:
            return self._actions.apply_task(t)
        except task.ReservationLost:
            # NOTE: logged at ERROR by the task; the new owner settles it.
            return None
        except Exception:
            # NOTE: nobody reads this future when the caller did not wait;
            # log here or the error is lost.
            LOG.exception("Power action of node %s failed", t.node.uuid)
            raise

    def _outcome(self, t: task.Task,
                 future: concurrent.futures.Future[Any]
                 ) -> db_api.NodeRecord:
        """The node once its action is done, or as it is at the bound."""
        try:
            future.result(timeout=self._action_timeout + WAIT_GRACE)
        except concurrent.futures.TimeoutError:
            return self._db.get_node(t.node.uuid)
        return t.node


class _OwnerUnreachable(Exception):
    """Forwarding to the owning host failed (timeout, delivery)."""


def _keep_masked_secrets(values: Mapping[str, Any],
                         stored: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with masked secrets in ``driver_info`` put back.

    A caller only ever sees secrets as :data:`conductor.drivers.base.MASK`;
    sending a node's ``driver_info`` back unchanged must not overwrite
    the stored secret with the mask.
    """
    result = dict(values)
    info = result.get("driver_info")
    if not isinstance(info, Mapping):
        return result
    result["driver_info"] = {
        key: (stored[key] if (value == base.MASK and isinstance(key, str)
                              and base.is_secret_key(key) and key in stored)
              else value)
        for key, value in info.items()}
    return result

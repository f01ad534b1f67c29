# SPDX-License-Identifier: Apache-2.0
"""The client side of the conductor RPC API (see doc/source/rpc.rst).

Callers read and change nodes and ask for status over oslo.messaging
instead of touching the database::

    transport = rpc.get_transport(conf)      # after any fork
    api = rpcapi.ConductorAPI.from_conf(conf, transport)
    node = api.get_node("node-1")
    node = api.set_power_state("node-1", "power on", wait=True)
    api.get_status()["hosts"]

Calls go to the ``conductor`` topic, where any live host answers; a
conductor that receives a change to a node it does not own forwards it to
the owning host (one hop). Pass ``host=`` to address one host directly.

Errors arrive as the exceptions of :data:`conductor.common.exceptions.
RPC_EXCEPTIONS` (``NodeNotFound``, ``NodeLocked``,
``InvalidParameterValue``, ``DriverNotEnabled``, ``NoFreeWorker``,
``DuplicateName``) with their server-side message, or as a plain
``ConductorException`` for an internal error (details in the server log,
by request id). Transport problems raise ``oslo_messaging``'s
``MessagingTimeout`` (no answer in time) or ``MessageDeliveryFailure``
(broker unreachable with a bounded ``retry``).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from oslo_config import cfg
import oslo_messaging as messaging

from conductor.common import exceptions
from conductor.common import rpc
from conductor import nodes

LOG = logging.getLogger(__name__)


def _local(exc: exceptions.ConductorException
           ) -> exceptions.ConductorException:
    """A plain copy of an exception rebuilt by oslo.messaging.

    oslo.messaging rebuilds a remote exception as a ``<Name>_Remote``
    subclass whose ``str()`` appends the server's traceback text; callers
    get the named class itself, with the server's message only.
    """
    cls = type(exc)
    if not cls.__name__.endswith("_Remote"):
        return exc
    named = cls.__mro__[1]
    message = exc.args[0] if exc.args else None
    return named(message, **getattr(exc, "kwargs", {}))


class ConductorAPI:
    """Client side of the conductor RPC API.

    API version history:

    * 1.0 - get_node, list_nodes, create_node, update_node, delete_node,
      set_power_state, get_status.

    :param transport: from :func:`conductor.common.rpc.get_transport`.
    :param version_cap: the newest API version to send (None: no cap;
        set during rolling upgrades, see ``[conductor] rpc_version_cap``).
    :param timeout: seconds a call waits for its answer (None:
        ``[DEFAULT] rpc_response_timeout``).
    :param retry: attempts to reach the broker when sending (None:
        forever; command line tools use a small number so that an
        unreachable broker fails fast).
    """

    #: The newest API version this client speaks.
    RPC_API_VERSION = "1.0"

    def __init__(self, transport: messaging.Transport, *,
                 version_cap: str | None = None,
                 timeout: float | None = None,
                 retry: int | None = None) -> None:
        #: The oslo.messaging client (tests may prepare it further).
        self.client = rpc.get_client(
            transport, version=self.RPC_API_VERSION,
            version_cap=version_cap, timeout=timeout, retry=retry)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, transport: messaging.Transport,
                  *, timeout: float | None = None,
                  retry: int | None = None) -> "ConductorAPI":
        """A client with ``[conductor] rpc_version_cap`` applied."""
        return cls(transport, version_cap=conf.conductor.rpc_version_cap,
                   timeout=timeout, retry=retry)

    def _call(self, method: str, *, context: Any = None,
              host: str | None = None, timeout: float | None = None,
              **kwargs: Any) -> Any:
        options: dict[str, Any] = {}
        if host is not None:
            options["server"] = host
        if timeout is not None:
            options["timeout"] = timeout
        cctxt = self.client.prepare(**options) if options else self.client
        if context is None:
            context = rpc.new_context()
        try:
            return cctxt.call(context, method, **kwargs)
        except exceptions.ConductorException as exc:
            raise _local(exc) from None

    # -- reads -----------------------------------------------------------

    def get_node(self, node: str, *, context: Any = None,
                 host: str | None = None) -> dict[str, Any]:
        """The node with uuid or name ``node`` (``driver_info`` masked).

        :raises: NodeNotFound, InvalidParameterValue.
        """
        return nodes.from_primitive(self._call(
            "get_node", context=context, host=host, node=node))

    def list_nodes(self, *, filters: Mapping[str, Any] | None = None,
                   limit: int | None = None, context: Any = None,
                   host: str | None = None) -> list[dict[str, Any]]:
        """Nodes ordered by creation, optionally filtered.

        :param filters: ``driver`` (str) and/or ``maintenance`` (bool).
        :param limit: at most this many nodes (an int >= 1).
        :raises: InvalidParameterValue naming a bad filter or limit.
        """
        return [nodes.from_primitive(item) for item in self._call(
            "list_nodes", context=context, host=host,
            filters=dict(filters) if filters is not None else None,
            limit=limit)]

    def get_status(self, *, context: Any = None,
                   host: str | None = None) -> dict[str, Any]:
        """Hosts, workers (pool, periodic tasks, sweeps) and node counts.

        The same structure as :func:`conductor.status.build`.
        """
        result: dict[str, Any] = self._call("get_status", context=context,
                                            host=host)
        return result

    # -- changes ---------------------------------------------------------

    def create_node(self, values: Mapping[str, Any], *, context: Any = None,
                    host: str | None = None) -> dict[str, Any]:
        """Enrol a node; ``values`` as for ``conductor-manage node create``.

        :raises: InvalidParameterValue, DriverNotEnabled, DuplicateName.
        """
        return nodes.from_primitive(self._call(
            "create_node", context=context, host=host, values=dict(values)))

    def update_node(self, node: str, values: Mapping[str, Any], *,
                    context: Any = None, host: str | None = None,
                    forwarded_by: str | None = None) -> dict[str, Any]:
        """Change fields of a node (routed to its owner).

        A secret ``driver_info`` value sent back as the mask (``******``)
        keeps the stored secret.

        :param forwarded_by: set by a conductor forwarding the call to
            the node's owner; callers leave it None.
        :raises: NodeNotFound, NodeLocked, InvalidParameterValue,
            DriverNotEnabled, DuplicateName.
        """
        return nodes.from_primitive(self._call(
            "update_node", context=context, host=host, node=node,
            values=dict(values), forwarded_by=forwarded_by))

    def delete_node(self, node: str, *, context: Any = None,
                    host: str | None = None,
                    forwarded_by: str | None = None) -> None:
        """Delete an unreserved node (routed to its owner).

        :raises: NodeNotFound, NodeLocked, InvalidParameterValue.
        """
        self._call("delete_node", context=context, host=host, node=node,
                   forwarded_by=forwarded_by)

    def set_power_state(self, node: str, target: str, *, wait: bool = False,
                        timeout: float | None = None, context: Any = None,
                        host: str | None = None,
                        forwarded_by: str | None = None) -> dict[str, Any]:
        """Power a node on, off or reboot it, on its owning host.

        The owner records the request and applies it at once. With
        ``wait`` the answer comes when the action is done: check the
        returned node's ``last_error`` (None on success); if
        ``target_power_state`` is still set, the action was still running
        when the server stopped waiting.

        :param target: ``power on``/``power off``/``rebooting`` or the
            verbs ``on``/``off``/``reboot``.
        :param timeout: seconds this call waits for its answer.
        :raises: NodeNotFound, NodeLocked (busy or an action pending),
            NoFreeWorker (the owner's pool is full; nothing recorded),
            InvalidParameterValue.
        """
        return nodes.from_primitive(self._call(
            "set_power_state", context=context, host=host, timeout=timeout,
            node=node, target=target, wait=wait,
            forwarded_by=forwarded_by))

# SPDX-License-Identifier: Apache-2.0
"""oslo.messaging plumbing: transport, targets, server, client, context.

Everything here is built from plain values or ``conf`` *after the fork*:
a transport created in the master would deliver its children's replies to
the master (oslo.messaging's rabbit driver is fork-safe only when
no connection existed before the fork). Usage, in a worker's ``start()``::

    if rpc.enabled(conf):
        transport = rpc.get_transport(conf)
        server = rpc.build_server(transport, host, [endpoint])
        server.start()
    ...
    rpc.stop_server(server, transport, timeout=10)

and on the client side (``conductor.rpcapi``)::

    client = rpc.get_client(transport, version_cap=None, timeout=60)

Exceptions of :data:`ALLOWED_EXMODS` raised by an endpoint are rebuilt on
the caller's side with their class and message; anything else arrives as
``oslo_messaging.RemoteError``.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from typing import Any, Callable, Sequence

from oslo_config import cfg
from oslo_context import context as oslo_context
import oslo_messaging as messaging
from oslo_messaging import opts as messaging_opts
from oslo_messaging.rpc import dispatcher as rpc_dispatcher

from conductor.common import exceptions

LOG = logging.getLogger(__name__)

#: The RPC topic every conductor host consumes.
TOPIC = "conductor"
#: Modules whose exceptions are re-raised on the caller's side by name.
ALLOWED_EXMODS = [exceptions.__name__]

RequestContext = oslo_context.RequestContext
#: oslo.messaging's default ``transport_url``: not set by the operator.
_DEFAULT_URL = "rabbit://"

#: Entry point group of oslo.messaging's drivers (the URL schemes).
DRIVER_NAMESPACE = "oslo.messaging.drivers"

#: Default ``[oslo_messaging_rabbit] rabbit_qos_prefetch_count``: the
#: default ``executor_thread_pool_size``.
PREFETCH_COUNT = 64

#: Default ``[oslo_messaging_rabbit] kombu_missing_consumer_retry_timeout``
#: (seconds): how long a worker keeps retrying a reply whose reply queue
#: is gone (the caller exited or timed out) before dropping it.
MISSING_CONSUMER_RETRY_TIMEOUT = 5


@functools.cache
def _messaging_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """oslo.messaging's option lists, built once per process.

    ``list_opts`` deep-copies every option on each call (~2 ms), and
    :func:`register_opts` runs before every :func:`enabled`; the copies
    are only registered, never changed.
    """
    return [(group, list(opts))
            for group, opts in messaging_opts.list_opts()]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register oslo.messaging's options on ``conf`` (idempotent).

    oslo.messaging registers most of its options lazily, when a transport
    or client is built; registering them first lets us read
    ``transport_url`` to decide whether RPC is enabled at all. The tracing
    and metrics options are registered by oslo.messaging on the global
    ``cfg.CONF`` only, yet read from the transport's ``conf`` on every
    call: register them on any other ``conf`` too.
    """
    for group, opts in _messaging_opts():
        conf.register_opts(opts, group=group)
    # NOTE: without a prefetch limit RabbitMQ pushes every queued call to
    # a worker, which holds them in its RPC executor's queue without
    # bound; a limit the size of the executor's thread pool keeps the
    # backlog in the broker, where any free worker of the host can take it.
    conf.set_default("rabbit_qos_prefetch_count", PREFETCH_COUNT,
                     group="oslo_messaging_rabbit")
    # NOTE: oslo.messaging retries a reply to a vanished reply queue for
    # 60 s by default, holding one RPC executor thread the whole time; a
    # burst of calls whose callers went away (a client killed, or timed
    # out) then takes every thread and stalls valid calls for a minute.
    # A caller that is still there has its reply queue within seconds.
    conf.set_default("kombu_missing_consumer_retry_timeout",
                     MISSING_CONSUMER_RETRY_TIMEOUT,
                     group="oslo_messaging_rabbit")
    if conf is not cfg.CONF:
        # NOTE: private modules, but the only place these lists live; the
        # options are read from the transport's conf by every call.
        from oslo_messaging._metrics import client as metrics
        from oslo_messaging._tracing import client as tracing
        conf.register_opts(tracing.oslo_messaging_tracing,
                           group="oslo_messaging_tracing")
        conf.register_opts(metrics.oslo_messaging_metrics,
                           group="oslo_messaging_metrics")


def enabled(conf: cfg.ConfigOpts) -> bool:
    """True when ``[DEFAULT] transport_url`` was set by the operator.

    oslo.messaging's own default (``rabbit://``) does not count: without
    an explicit URL the conductor runs with no RPC.
    """
    register_opts(conf)
    url = conf.transport_url
    if not url:
        return False
    if url != _DEFAULT_URL:
        return True
    # NOTE: the default value itself counts only when it was written in a
    # config file, on the command line or in the environment. oslo.config
    # keeps the location of an override even after reset(), so the
    # location alone cannot tell.
    location = conf.get_location("transport_url")
    return location is not None and location.location in (
        cfg.Locations.user, cfg.Locations.command_line,
        cfg.Locations.environment)


def check_transport_url(conf: cfg.ConfigOpts) -> None:
    """Parse ``transport_url`` without connecting (safe in the master).

    :raises: ConfigInvalid naming the option, with the password masked.
    """
    if not enabled(conf):
        return
    try:
        url = messaging.TransportURL.parse(conf, conf.transport_url)
    except (messaging.InvalidTransportURL, ValueError) as exc:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] transport_url: %s" % _masked(exc)) from None
    if not url.transport:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] transport_url names no driver (e.g. "
                    "rabbit://user:password@host:5672/)")
    scheme = url.transport.split("+")[0]
    errors: list[str] = []

    def on_failure(manager: Any, entrypoint: Any,
                   exc: BaseException) -> None:
        errors.append("%s: %s" % (type(exc).__name__, exc))

    # NOTE: import the one driver named, not every installed one: an
    # ExtensionManager over the group imports them all, and logs an ERROR
    # for each that cannot be (kafka without confluent_kafka, the common
    # case) on every start of a host that never uses them.
    from stevedore import named
    manager: named.NamedExtensionManager[Any] = named.NamedExtensionManager(
        DRIVER_NAMESPACE, names=[scheme], on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=None)
    if errors:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] transport_url: messaging driver %r cannot "
                    "be loaded: %s" % (scheme, "; ".join(errors)))
    if scheme not in manager.names():
        installed = sorted(set(manager.entry_points_names()))
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] transport_url: no messaging driver %r; "
                    "installed: %s" % (scheme, ", ".join(installed)))


def _masked(exc: BaseException) -> str:
    text = str(exc)
    # NOTE: InvalidTransportURL repeats the URL, password included.
    url = getattr(exc, "url", None)
    if url:
        text = text.replace(str(url), "<transport_url>")
    return text


def get_transport(conf: cfg.ConfigOpts) -> messaging.Transport:
    """An RPC transport for ``conf.transport_url``; connects lazily.

    Call it after the fork only.

    :raises: ConfigInvalid when the URL is malformed or names an unknown
        driver.
    """
    register_opts(conf)
    check_transport_url(conf)
    try:
        return messaging.get_rpc_transport(
            conf, allowed_remote_exmods=ALLOWED_EXMODS)
    except (messaging.InvalidTransportURL,
            messaging.DriverLoadFailure) as exc:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] transport_url: %s" % _masked(exc)) from None


def check_broker(conf: cfg.ConfigOpts, timeout: float = 5.0) -> None:
    """Fail fast when no broker of ``transport_url`` can be reached.

    oslo.messaging waits for the broker forever before the first call
    (its reply queue), whatever ``retry`` says; a command line tool checks
    first. Each RabbitMQ host of the URL is tried once, with credentials
    and virtual host (a plain TCP connect when ``[oslo_messaging_rabbit]
    ssl`` is set); other drivers are not checked.

    :raises: ConductorException naming the host(s) and the reason, never
        the password.
    """
    import kombu

    url = messaging.TransportURL.parse(conf, conf.transport_url)
    if url.transport.split("+")[0] not in ("rabbit", "amqp", "kombu"):
        return
    problems = []
    for host in url.hosts or [messaging.TransportHost("localhost")]:
        where = "%s:%s" % (host.hostname or "localhost", host.port or 5672)
        try:
            if conf.oslo_messaging_rabbit.ssl:
                socket.create_connection(
                    (host.hostname or "localhost", host.port or 5672),
                    timeout=timeout).close()
                return
            with kombu.Connection(
                    hostname=host.hostname or "localhost",
                    port=host.port or 5672, userid=host.username or "guest",
                    password=host.password or "guest",
                    virtual_host=url.virtual_host or "/",
                    connect_timeout=timeout) as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
            return
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() \
                else type(exc).__name__
            if host.password:
                reason = reason.replace(host.password, "***")
            problems.append("%s (%s)" % (where, reason))
    raise exceptions.ConductorException(
        "Message broker unreachable: %s" % "; ".join(problems))


class RequestContextSerializer(messaging.Serializer):
    """Sends ``RequestContext`` as a dict; entities pass through.

    Payloads are plain JSON types already (the manager builds them), so
    entities are not converted. The server side rebuilds the context,
    which also makes it the thread's current context: log lines written
    while handling a call carry its ``request_id``.
    """

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: Any) -> dict[str, Any]:
        if ctxt is None:
            return {}
        if isinstance(ctxt, dict):
            return ctxt
        return dict(ctxt.to_dict())

    def deserialize_context(self, ctxt: Any) -> RequestContext:
        return RequestContext.from_dict(bounded_context(ctxt))


#: Longest string, and most items of a list, a caller's request context
#: may carry per field; longer fields are dropped (their defaults apply).
#: The request id is printed in every log line of the call.
MAX_CONTEXT_STRING = 255
MAX_CONTEXT_ITEMS = 64


def bounded_context(ctxt: Any) -> dict[str, Any]:
    """The caller's context dict without its oversized fields."""
    if not isinstance(ctxt, dict):
        return {}

    def fits(value: Any) -> bool:
        if isinstance(value, str):
            return len(value) <= MAX_CONTEXT_STRING
        if isinstance(value, (list, tuple)):
            return len(value) <= MAX_CONTEXT_ITEMS and all(
                isinstance(item, str) and len(item) <= MAX_CONTEXT_STRING
                for item in value)
        return value is None or isinstance(value, (bool, int, float))
    return {key: value for key, value in ctxt.items()
            if isinstance(key, str) and len(key) <= MAX_CONTEXT_STRING
            and fits(value)}


def new_context() -> RequestContext:
    """A fresh context with its own ``request_id`` (for one caller request).

    ``overwrite=False``: building it does not replace the calling
    thread's current context.
    """
    return RequestContext(overwrite=False)


def server_target(host: str) -> messaging.Target:
    """The target a worker of ``host`` consumes: the topic and its host."""
    return messaging.Target(topic=TOPIC, server=host)


def build_server(transport: messaging.Transport, host: str,
                 endpoints: Sequence[Any]) -> messaging.MessageHandlingServer:
    """An RPC server for ``host`` (not started).

    Every worker of a host builds one on the same target, so they share
    the host's queue (and the topic's). The executor is oslo.messaging's
    default (threading), sized by ``[DEFAULT] executor_thread_pool_size``
    per process; methods starting with ``_`` are not callable remotely.
    """
    return messaging.get_rpc_server(
        transport, server_target(host), list(endpoints),
        serializer=RequestContextSerializer(),
        access_policy=rpc_dispatcher.DefaultRPCAccessPolicy)


def get_client(transport: messaging.Transport, *,
               version: str, version_cap: str | None = None,
               timeout: float | None = None,
               retry: int | None = None) -> messaging.RPCClient:
    """An RPC client of the conductor topic.

    :param version: the client's base version (``RPC_API_VERSION``).
    :param version_cap: the newest version it may send (None: no cap).
    :param timeout: seconds a ``call`` waits for its answer (None:
        ``[DEFAULT] rpc_response_timeout``).
    :param retry: connection attempts when sending (None: forever).
    """
    target = messaging.Target(topic=TOPIC, version=version)
    return messaging.get_rpc_client(
        transport, target, version_cap=version_cap, timeout=timeout,
        retry=retry, serializer=RequestContextSerializer())


def stop_server(server: messaging.MessageHandlingServer | None,
                transport: messaging.Transport | None,
                timeout: float) -> bool:
    """Stop consuming, finish in-flight calls, then close the transport.

    In that order (``server.stop()``, ``server.wait()``,
    ``transport.cleanup()``), on a helper thread joined for at most
    ``timeout`` seconds: with the broker gone, even ``stop()`` waits for
    the listener's reconnection loop, and a stopping worker must not.

    :returns: False when the bound was reached (the helper thread, a
        daemon, is abandoned).
    """
    def run() -> None:
        steps: list[tuple[str, Callable[[], Any]]] = []
        if server is not None:
            steps += [("stop consuming", server.stop),
                      ("finish calls in flight", server.wait)]
        if transport is not None:
            steps.append(("close the transport", transport.cleanup))
        for what, step in steps:
            try:
                step()
            except Exception:
                LOG.exception("RPC: could not %s cleanly", what)

    thread = threading.Thread(target=run, name="rpc-stop", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        LOG.warning("RPC server not stopped after %.1fs (calls still in "
                    "flight, or the broker is unreachable); abandoning it",
                    timeout)
        return False
    return True

# SPDX-License-Identifier: Apache-2.0
"""The Redfish client side of the ``redfish`` driver (sushy).

Private to :mod:`conductor.drivers.redfish`, which imports it at the first
call that talks to a BMC: sushy and requests cost about 0.1 s to import,
which validating ``driver_info`` (enrolment, start-up, the CLI) never
needs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Mapping, Protocol, TypeVar

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc

from conductor.common import deadline
from conductor.common import exceptions
from conductor import conf
from conductor.drivers import base
from conductor import states

LOG = logging.getLogger("conductor.drivers.redfish")

#: Redfish power states and what they are reported as.
POWER_STATES: Mapping[sushy.PowerState, str] = {
    sushy.PowerState.ON: states.POWER_ON,
    sushy.PowerState.POWERING_ON: states.POWER_ON,
    sushy.PowerState.OFF: states.POWER_OFF,
    sushy.PowerState.POWERING_OFF: states.POWER_OFF,
}
#: Reset types for each action, most preferred first.
_ON_RESETS = (sushy.ResetType.ON, sushy.ResetType.FORCE_ON)
_OFF_RESETS = (sushy.ResetType.FORCE_OFF,)
_RESTART_RESETS = (sushy.ResetType.FORCE_RESTART,
                   sushy.ResetType.POWER_CYCLE)

_AUTH_TYPES: Mapping[str, Callable[..., sushy_auth.AuthBase]] = {
    "auto": sushy_auth.SessionOrBasicAuth,
    "session": sushy_auth.SessionAuth,
    "basic": sushy_auth.BasicAuth,
}

_T = TypeVar("_T")


class BoundedConnector(sushy_connector.Connector):
    """A sushy connector that keeps every request within the deadline.

    sushy retries a failed GET 10 times, 3 s apart, by default, and waits
    60 s for an answer. Here each request's timeout is what is left of the
    calling thread's deadline (``fallback_timeout`` outside one), reads
    are tried ``attempts`` times ``interval`` seconds apart, only while
    the deadline allows, and writes are sent once. Opening a TCP
    connection is bounded apart by ``connect_timeout`` (when smaller than
    what is left), so a dead address fails fast instead of holding the
    thread for the whole deadline; connections are kept alive and reused
    by the client's requests session.
    """

    def __init__(self, url: str, *, verify: bool | str, attempts: int,
                 interval: float, fallback_timeout: float,
                 connect_timeout: float | None = None) -> None:
        # NOTE: server_side_retries=1 makes sushy's own loop over transient
        # errors a single try (it reads 0 as "3 tries"); the 5xx retries
        # are turned off per request below. Both are done here instead.
        super().__init__(url, verify=verify, server_side_retries=1,
                         server_side_retries_delay=interval,
                         default_request_timeout=fallback_timeout)
        self._attempts = attempts
        self._interval = interval
        self._fallback_timeout = fallback_timeout
        self._connect_timeout = connect_timeout

    def _remaining(self) -> float:
        left = deadline.remaining(default=self._fallback_timeout)
        assert left is not None
        return left

    # NOTE: _op is sushy's single funnel for requests (5.x); overriding it
    # is the only way to bound retries and timeouts per call.
    def _op(self, method: str, path: str = "", data: Any = None,
            headers: Any = None, blocking: bool = False,
            timeout: Any = None, server_side_retries_left: Any = None,
            allow_reauth: bool = True,
            **extra_session_req_kwargs: Any) -> Any:
        attempts = self._attempts if method.upper() == "GET" else 1
        attempt = 1
        while True:
            left = self._remaining()
            if left <= 0:
                raise sushy_exc.ConnectionError(
                    url=path, error="the call's deadline passed before the "
                                    "request could be sent")
            bound: Any = left
            if self._connect_timeout is not None:
                # NOTE: requests takes (connect, read) timeouts.
                bound = (min(self._connect_timeout, left), left)
            try:
                return super()._op(
                    method, path, data=data, headers=headers,
                    blocking=blocking, timeout=bound,
                    server_side_retries_left=0, allow_reauth=allow_reauth,
                    **extra_session_req_kwargs)
            except (sushy_exc.ConnectionError,
                    sushy_exc.ServerSideError) as exc:
                if (attempt >= attempts
                        or self._remaining() <= self._interval):
                    raise
                LOG.debug("Redfish %(method)s %(path)s failed (attempt "
                          "%(n)d of %(of)d), retrying in %(s).1f s: %(exc)s",
                          {"method": method, "path": path, "n": attempt,
                           "of": attempts, "s": self._interval, "exc": exc})
            time.sleep(self._interval)
            attempt += 1


class _ClientCache:
    """Sushy clients by :meth:`Target.cache_key`, least recently used out.

    Clients are built outside the lock (building one talks to the BMC);
    two threads may build one for the same key at once, and the last one
    stored wins.
    """

    def __init__(self) -> None:
        # NOTE: guards _clients only; never held during I/O.
        self._lock = threading.Lock()
        self._clients: collections.OrderedDict[
            tuple[str, ...], sushy.Sushy] = collections.OrderedDict()

    def get(self, key: tuple[str, ...], size: int,
            build: Callable[[], sushy.Sushy]) -> sushy.Sushy:
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
        client = build()
        if size > 0:
            with self._lock:
                self._clients[key] = client
                self._clients.move_to_end(key)
                evicted = [self._clients.popitem(last=False)[1]
                           for _ in range(len(self._clients) - size)]
            if evicted:
                # NOTE: dropped outside the lock: sushy closes a client's
                # session when it is garbage collected, which is a request.
                LOG.debug("Closing %d least recently used Redfish "
                          "client(s)", len(evicted))
                evicted.clear()
        return client

    def discard(self, key: tuple[str, ...]) -> None:
        with self._lock:
            client = self._clients.pop(key, None)
        del client

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)


class Target(Protocol):
    """A node's validated Redfish access, as the driver parses it."""

    @property
    def base_url(self) -> str:
        ...

    @property
    def system_path(self) -> str | None:
        ...

    @property
    def username(self) -> str:
        ...

    @property
    def password(self) -> str:
        ...

    @property
    def verify(self) -> bool | str:
        ...

    def cache_key(self, auth_type: str) -> tuple[str, ...]:
        """What identifies a reusable client."""
        ...


class SushyPower:
    """The BMC calls of :class:`conductor.drivers.redfish.RedfishPower`.

    Thread-safe; one per driver, holding the client cache. Options are
    read at every call from ``[redfish]`` and ``[conductor]
    power_state_timeout``.

    :param parse: turns a node's ``driver_info`` into its :class:`Target`
        (the driver's own parser, raising ``InvalidParameterValue``).
    """

    def __init__(self, parse: Callable[[base.DriverNode], Target]) -> None:
        self._clients = _ClientCache()
        self._parse = parse

    def get_power_state(self, node: base.DriverNode) -> str:
        """See :meth:`RedfishPower.get_power_state`."""
        def read(client: sushy.Sushy, target: Target) -> str:
            system = _system(client, target)
            state = POWER_STATES.get(system.power_state, states.ERROR)
            if state == states.ERROR:
                LOG.warning("Node %(node)s: Redfish power state %(state)s "
                            "is reported as %(error)s",
                            {"node": node.uuid, "state": system.power_state,
                             "error": states.ERROR})
            return state

        return self._call(node, "read the power state", read)

    def set_power_state(self, node: base.DriverNode, target: str) -> None:
        """See :meth:`RedfishPower.set_power_state` (``target`` checked)."""
        preferred = _ON_RESETS if target == states.POWER_ON else _OFF_RESETS

        def change(client: sushy.Sushy, bmc: Target) -> None:
            system = _system(client, bmc)
            if POWER_STATES.get(system.power_state) == target:
                LOG.debug("Node %(node)s is already %(state)s (%(raw)s)",
                          {"node": node.uuid, "state": target,
                           "raw": system.power_state})
                return
            system.reset_system(_pick_reset(system, preferred))

        self._call(node, "set the power state to %s" % target, change)

    def reboot(self, node: base.DriverNode) -> None:
        """See :meth:`RedfishPower.reboot`."""
        def restart(client: sushy.Sushy, bmc: Target) -> None:
            system = _system(client, bmc)
            off = POWER_STATES.get(system.power_state) == states.POWER_OFF
            system.reset_system(_pick_reset(
                system, _ON_RESETS if off else _RESTART_RESETS))

        self._call(node, "reboot", restart)

    def _call(self, node: base.DriverNode, what: str,
              action: Callable[[sushy.Sushy, Target], _T]) -> _T:
        """Run ``action`` with a client for ``node`` under its deadline.

        :raises: InvalidParameterValue, PowerStateFailure or
            DeadlineExceeded, with secret-free messages.
        """
        bmc = self._parse(node)
        options = conf.CONF.redfish
        timeout = float(conf.CONF.conductor.power_state_timeout)
        key = bmc.cache_key(options.auth_type)
        started = time.monotonic()
        with deadline.scope(timeout):
            try:
                client = self._clients.get(
                    key, options.connection_cache_size,
                    lambda: _connect(bmc, options, timeout))
                return action(client, bmc)
            except (sushy_exc.SushyError,
                    requests.RequestException) as exc:
                if isinstance(exc, (sushy_exc.AccessError,
                                    sushy_exc.ConnectionError)):
                    # NOTE: a client that failed to connect or to
                    # authenticate is rebuilt at the next call, as a new
                    # session may be what it needs.
                    self._clients.discard(key)
                left = deadline.remaining()
                failure = _failure(node, bmc, what, exc,
                                   time.monotonic() - started,
                                   timed_out=left is not None and left <= 0)
                LOG.debug("Node %(node)s: Redfish call failed: %(exc)s",
                          {"node": node.uuid,
                           "exc": _scrub(str(exc), bmc.password)})
                raise failure from None


def _connect(bmc: Target, options: Any, timeout: float) -> sushy.Sushy:
    """Open a client: reads the service root and authenticates."""
    connector = BoundedConnector(
        bmc.base_url, verify=bmc.verify,
        attempts=options.connection_attempts,
        interval=options.connection_retry_interval,
        fallback_timeout=timeout,
        connect_timeout=options.connect_timeout or None)
    auth = _AUTH_TYPES[options.auth_type](username=bmc.username,
                                          password=bmc.password)
    LOG.debug("Opening a Redfish client for %(url)s as %(user)s "
              "(%(auth)s authentication)",
              {"url": bmc.base_url, "user": bmc.username,
               "auth": options.auth_type})
    return sushy.Sushy(bmc.base_url, auth=auth, connector=connector)


def _system(client: sushy.Sushy, bmc: Target) -> Any:
    """The node's system, freshly read (one GET; objects are not shared)."""
    if bmc.system_path is None:
        return client.get_system()
    return client.get_system(bmc.system_path)


def _pick_reset(system: Any,
                preferred: tuple[sushy.ResetType, ...]) -> sushy.ResetType:
    """The first of ``preferred`` that the system offers.

    :raises: PowerStateFailure naming what the system offers instead.
    """
    allowed = system.get_allowed_reset_system_values()
    for reset in preferred:
        if reset in allowed:
            return reset
    raise exceptions.PowerStateFailure(
        err="System %s offers none of the reset types %s (it offers %s)"
            % (system.identity, ", ".join(r.value for r in preferred),
               ", ".join(sorted(r.value for r in allowed)) or "none"))


def _scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` masked."""
    return text.replace(secret, base.MASK) if secret else text


def _connection_cause(exc: BaseException) -> str:
    """Words for why a connection failed, from the requests exception."""
    cause = exc.__context__ or exc.__cause__
    if isinstance(cause, requests.exceptions.SSLError):
        return ("TLS failed (%s); check the certificate or set "
                "redfish_verify_ca" % cause)
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return "the connection timed out"
    if isinstance(cause, requests.exceptions.ReadTimeout):
        return "the BMC accepted the connection but did not answer"
    if isinstance(cause, requests.exceptions.ConnectionError):
        text = str(cause)
        if "Connection refused" in text:
            return "the connection was refused"
        if ("Name or service not known" in text
                or "nodename nor servname" in text
                or "Temporary failure in name resolution" in text):
            return "the host name does not resolve"
        return "cannot connect (%s)" % text
    if isinstance(exc, sushy_exc.ConnectionError):
        return "cannot connect (%s)" % exc
    return str(exc)


def _failure(node: base.DriverNode, bmc: Target, what: str,
             exc: BaseException, elapsed: float,
             timed_out: bool) -> exceptions.ConductorException:
    """The exception to raise for ``exc``: clear, and free of secrets."""
    prefix = "Redfish BMC %s could not %s for node %s" % (
        bmc.base_url, what, node.uuid)
    if timed_out:
        return deadline.DeadlineExceeded(_scrub(
            "%s: no answer within %.1f s (the call's deadline; [conductor] "
            "power_state_timeout)" % (prefix, elapsed), bmc.password))
    if isinstance(exc, sushy_exc.AccessError):
        reason = ("the BMC refused user %r or its password (HTTP %s; check "
                  "redfish_username and redfish_password)"
                  % (bmc.username, exc.status_code))
    elif isinstance(exc, sushy_exc.ResourceNotFoundError):
        reason = ("%s was not found on the BMC (check redfish_system_id "
                  "and redfish_address)" % (bmc.system_path or "the system"))
    elif isinstance(exc, sushy_exc.UnknownDefaultError):
        reason = ("the BMC does not have exactly one system; set "
                  "redfish_system_id")
    elif isinstance(exc, sushy_exc.ServerSideError):
        reason = "the BMC failed with HTTP %s: %s" % (exc.status_code,
                                                      exc.detail or exc)
    elif isinstance(exc, sushy_exc.HTTPError):
        reason = "the BMC answered HTTP %s: %s" % (exc.status_code,
                                                   exc.detail or exc)
    elif isinstance(exc, (sushy_exc.ConnectionError,
                          requests.RequestException)):
        reason = _connection_cause(exc)
    else:
        reason = str(exc)
    return exceptions.PowerStateFailure(
        err=_scrub("%s: %s" % (prefix, reason), bmc.password))

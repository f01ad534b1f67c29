"""The ``redfish`` driver: power control over Redfish, with sushy.

``driver_info`` fields:

``redfish_address`` (required)
    URL of the BMC: ``https://host[:port]`` or ``http://...``; a bare host
    name means https. No user name, password, path or query in it.
``redfish_system_id``
    The system to control: its id (``1``) or its path
    (``/redfish/v1/Systems/1``). May be left out when the BMC has exactly
    one system, at the cost of one more request per call.
``redfish_username`` (required)
    BMC user.
``redfish_password`` (required, secret)
    Its password.
``redfish_verify_ca``
    ``true`` (the default) checks the BMC's TLS certificate against the
    system's CAs, ``false`` does not check it, and a path names a CA
    bundle file or directory to check it against.

Usage::

    driver = RedfishDriver()
    driver.power.validate(node)                 # checks fields, no I/O
    state = driver.power.get_power_state(node)  # states.POWER_ON/OFF/ERROR
    driver.power.set_power_state(node, states.POWER_ON)
    driver.power.reboot(node)

Power actions map to Redfish reset types: on is ``On`` (``ForceOn`` if the
BMC offers only that), off is ``ForceOff``, reboot is ``ForceRestart``
(``PowerCycle`` if the BMC offers only that) or ``On`` when the system is
off. They return when the BMC accepted the request; the change itself may
take a while, so callers poll :meth:`RedfishPower.get_power_state`.
Transitional states report where the system is heading: ``PoweringOn``
is POWER_ON and ``PoweringOff`` is POWER_OFF; ``Paused`` or no state at
all is ERROR.

One sushy client is kept per BMC address, user, password and CA setting
(``[redfish] connection_cache_size``) and shared by all threads, so a
session is opened once, not at every call. Every request is bounded by
what is left of the call's deadline (:mod:`conductor.common.deadline`, at
most ``[conductor] power_state_timeout``), and reads are retried on
connection errors, timeouts and 5xx answers only as ``[redfish]
connection_attempts`` and ``connection_retry_interval`` say, never past
the deadline.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Mapping, TypeVar
from urllib import parse as urlparse

from oslo_utils import strutils
import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc

from conductor.common import deadline
from conductor.common import exceptions
from conductor.common import states
from conductor import conf
from conductor.drivers import base

LOG = logging.getLogger(__name__)

#: Every field this driver reads; any other one is refused as a typo.
FIELDS = ("redfish_address", "redfish_system_id", "redfish_username",
          "redfish_password", "redfish_verify_ca")
REQUIRED_FIELDS = ("redfish_address", "redfish_username", "redfish_password")
SYSTEMS_PATH = "/redfish/v1/Systems/"

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


@dataclasses.dataclass(frozen=True)
class Target:
    """A node's validated Redfish access; ``repr`` leaves the password out.

    ``verify`` is what requests takes: a bool or a CA bundle path.
    ``system_path`` is None when the BMC's only system is meant.
    """

    base_url: str
    system_path: str | None
    username: str
    password: str = dataclasses.field(repr=False)
    verify: bool | str

    def cache_key(self, auth_type: str) -> tuple[str, ...]:
        """What identifies a reusable client; the password only hashed."""
        digest = hashlib.sha256(self.password.encode()).hexdigest()
        return (self.base_url, self.username, digest, str(self.verify),
                auth_type)


def _as_text(value: Any) -> str | None:
    """A string, or an int given where a string was meant, else None.

    ``conductor-manage --driver-info redfish_password=1234`` reads the
    value as JSON, giving the number 1234; its decimal form was typed.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def _parse_address(value: Any, problems: list[str]) -> str | None:
    """The BMC's base URL (scheme://host[:port]), or None with a problem.

    A value with credentials in it is never quoted back.
    """
    text = value if isinstance(value, str) else None
    if text is None or not text.strip() or any(ch.isspace() for ch in text):
        problems.append("redfish_address must be a URL such as "
                        "https://bmc.example.com, got %r" % (value,))
        return None
    if "://" not in text:
        text = "https://" + text
    try:
        parsed = urlparse.urlsplit(text)
        port = parsed.port
    except ValueError as exc:
        problems.append("redfish_address %r is not a valid URL: %s"
                        % (value, exc))
        return None
    if parsed.username is not None or parsed.password is not None:
        problems.append("redfish_address must not hold credentials; put "
                        "them in redfish_username and redfish_password")
        return None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        problems.append("redfish_address must be an http:// or https:// "
                        "URL with a host, got %r" % (value,))
        return None
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        problems.append("redfish_address must have no path, query or "
                        "fragment (the service root /redfish/v1 is found "
                        "by itself), got %r" % (value,))
        return None
    host = parsed.hostname
    if ":" in host:
        host = "[%s]" % host
    return "%s://%s%s" % (parsed.scheme, host,
                          "" if port is None else ":%d" % port)


def _parse_system(value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    text = _as_text(value)
    if (text is None or any(ch.isspace() for ch in text) or "://" in text
            or ".." in text.split("/")):
        problems.append("redfish_system_id must be a system id such as 1 "
                        "or a path such as /redfish/v1/Systems/1, got %r"
                        % (value,))
        return None
    if text.startswith("/"):
        return text
    if "/" in text:
        problems.append("redfish_system_id %r is neither an id (no '/') "
                        "nor a path (starting with '/')" % (value,))
        return None
    return SYSTEMS_PATH + urlparse.quote(text, safe="")


def _parse_verify(value: Any, problems: list[str]) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        flag = strutils.bool_from_string(value, default=None)
        if flag is not None:
            return bool(flag)
        if os.path.exists(value):
            return value
    problems.append("redfish_verify_ca must be true, false or the path of "
                    "an existing CA bundle file or directory, got %r"
                    % (value,))
    return True


def parse_driver_info(node: base.DriverNode) -> Target:
    """Check ``node.driver_info`` fully and return the target it describes.

    :raises: InvalidParameterValue naming the node and every missing,
        unknown or malformed field; a secret's value is never quoted.
    """
    info: Mapping[str, Any] = node.driver_info
    problems = base.field_problems(info, "redfish", FIELDS,
                                   REQUIRED_FIELDS)
    base_url = None
    if info.get("redfish_address") not in (None, ""):
        base_url = _parse_address(info["redfish_address"], problems)
    system_path = _parse_system(info.get("redfish_system_id"), problems)
    username = _as_text(info.get("redfish_username"))
    if info.get("redfish_username") not in (None, "") and (
            username is None or any(ch in username for ch in "\r\n\0")):
        problems.append("redfish_username must be a string on one line, "
                        "got %r" % (info.get("redfish_username"),))
    password = _as_text(info.get("redfish_password"))
    if info.get("redfish_password") not in (None, "") and (
            password is None or any(ch in password for ch in "\r\n\0")):
        problems.append("redfish_password must be a string on one line "
                        "(the value given is a %s)"
                        % type(info.get("redfish_password")).__name__)
    verify = _parse_verify(info.get("redfish_verify_ca", True), problems)
    if problems:
        raise exceptions.InvalidParameterValue(
            err="Node %s: invalid driver_info for the redfish driver: %s"
                % (node.name or node.uuid, "; ".join(problems)))
    assert base_url is not None
    assert username is not None and password is not None
    return Target(base_url=base_url, system_path=system_path,
                  username=username, password=password, verify=verify)


class BoundedConnector(sushy_connector.Connector):
    """A sushy connector that keeps every request within the deadline.

    sushy retries a failed GET 10 times, 3 s apart, by default, and waits
    60 s for an answer. Here each request's timeout is what is left of the
    calling thread's deadline (``fallback_timeout`` outside one), reads
    are tried ``attempts`` times ``interval`` seconds apart, only while
    the deadline allows, and writes are sent once.
    """

    def __init__(self, url: str, *, verify: bool | str, attempts: int,
                 interval: float, fallback_timeout: float) -> None:
        # NOTE: server_side_retries=1 makes sushy's own loop over transient
        # errors a single try (it reads 0 as "3 tries"); the 5xx retries
        # are turned off per request below. Both are done here instead.
        super().__init__(url, verify=verify, server_side_retries=1,
                         server_side_retries_delay=interval,
                         default_request_timeout=fallback_timeout)
        self._attempts = attempts
        self._interval = interval
        self._fallback_timeout = fallback_timeout

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
            try:
                return super()._op(
                    method, path, data=data, headers=headers,
                    blocking=blocking, timeout=left,
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


class RedfishPower(base.PowerInterface):
    """Power interface of the ``redfish`` driver; safe to share by threads.

    Options are read at every call from ``[redfish]`` and ``[conductor]
    power_state_timeout``.
    """

    def __init__(self) -> None:
        self._clients = _ClientCache()

    def validate(self, node: base.DriverNode) -> None:
        """Check ``driver_info`` without talking to the BMC.

        :raises: InvalidParameterValue naming every bad field.
        """
        parse_driver_info(node)

    def get_power_state(self, node: base.DriverNode) -> str:
        """Return POWER_ON, POWER_OFF or ERROR (see the module docs).

        :raises: InvalidParameterValue for bad ``driver_info``;
            PowerStateFailure when the BMC cannot be read;
            DeadlineExceeded when it does not answer in time.
        """
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
        """Power the node on (``On``) or off (``ForceOff``).

        Nothing is sent when the system already is, or is heading, there.
        Returns when the BMC accepted the request.

        :raises: InvalidParameterValue for a target other than POWER_ON or
            POWER_OFF, or bad ``driver_info``; PowerStateFailure or
            DeadlineExceeded as :meth:`get_power_state`.
        """
        if target not in (states.POWER_ON, states.POWER_OFF):
            raise exceptions.InvalidParameterValue(
                err="The redfish driver cannot set power state %r; valid "
                    "targets: %s, %s" % (target, states.POWER_OFF,
                                         states.POWER_ON))
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
        """Restart the node hard (``ForceRestart``), or power it on if off.

        :raises: as :meth:`set_power_state`.
        """
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
        bmc = parse_driver_info(node)
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
        fallback_timeout=timeout)
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


class RedfishDriver(base.BaseDriver):
    """Power control of Redfish BMCs through sushy."""

    def __init__(self) -> None:
        self.power = RedfishPower()

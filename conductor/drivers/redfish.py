# SPDX-License-Identifier: Apache-2.0
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

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
from typing import Any, Mapping
from urllib import parse as urlparse

from conductor.common import exceptions
from conductor.common import masking
from conductor.drivers import base
from conductor import states

LOG = logging.getLogger(__name__)

#: Every field this driver reads; any other one is refused as a typo.
FIELDS = ("redfish_address", "redfish_system_id", "redfish_username",
          "redfish_password", "redfish_verify_ca")
REQUIRED_FIELDS = ("redfish_address", "redfish_username", "redfish_password")
SYSTEMS_PATH = "/redfish/v1/Systems/"


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


def _parse_address(value: Any, problems: list[str]) -> str | None:
    """The BMC's base URL (scheme://host[:port]), or None with a problem.

    A value with credentials in it is refused, whatever else is wrong
    with it, and never quoted back (other values are quoted masked, see
    :func:`conductor.common.masking.mask_url`).
    """
    text = value if isinstance(value, str) else None
    if text is not None and "@" in text:
        # NOTE: "user:password@" in an address, typo or not: refused
        # before parsing, so that no message about a malformed URL ever
        # quotes the password.
        problems.append("redfish_address must not hold credentials (it "
                        "contains '@'); put them in redfish_username and "
                        "redfish_password")
        return None
    shown = masking.mask_data(value)
    if text is None or not text.strip() or any(ch.isspace() for ch in text):
        problems.append("redfish_address must be a URL such as "
                        "https://bmc.example.com, got %r" % (shown,))
        return None
    if "://" not in text:
        text = "https://" + text
    try:
        parsed = urlparse.urlsplit(text)
        port = parsed.port
    except ValueError as exc:
        problems.append("redfish_address %r is not a valid URL: %s"
                        % (shown, masking.mask_url(str(exc))))
        return None
    if parsed.username is not None or parsed.password is not None:
        problems.append("redfish_address must not hold credentials; put "
                        "them in redfish_username and redfish_password")
        return None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        problems.append("redfish_address must be an http:// or https:// "
                        "URL with a host, got %r" % (shown,))
        return None
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        problems.append("redfish_address must have no path, query or "
                        "fragment (the service root /redfish/v1 is found "
                        "by itself), got %r" % (shown,))
        return None
    host = parsed.hostname
    if ":" in host:
        host = "[%s]" % host
    return "%s://%s%s" % (parsed.scheme, host,
                          "" if port is None else ":%d" % port)


def _parse_system(value: Any, problems: list[str]) -> str | None:
    if value is None or value == "":
        return None
    text = base.text_value(value)
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


#: The spellings of true and false accepted for redfish_verify_ca.
_BOOLS = {"true": True, "yes": True, "on": True, "1": True, "t": True,
          "y": True, "false": False, "no": False, "off": False, "0": False,
          "f": False, "n": False}


def _parse_verify(value: Any, problems: list[str]) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        flag = _BOOLS.get(value.strip().lower())
        if flag is not None:
            return flag
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
    username = base.text_value(info.get("redfish_username"))
    if info.get("redfish_username") not in (None, "") and (
            username is None or any(ch in username for ch in "\r\n\0")):
        problems.append("redfish_username must be a string on one line, "
                        "got %r" % (info.get("redfish_username"),))
    password = base.text_value(info.get("redfish_password"))
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


class RedfishPower(base.PowerInterface):
    """Power interface of the ``redfish`` driver; safe to share by threads.

    Options are read at every call from ``[redfish]`` and ``[conductor]
    power_state_timeout``.
    """

    def __init__(self) -> None:
        # NOTE: guards _backend, built at the first call that needs sushy.
        self._lock = threading.Lock()
        self._backend: Any = None

    def validate(self, node: base.DriverNode) -> None:
        """Check ``driver_info`` without talking to the BMC.

        :raises: InvalidParameterValue naming every bad field.
        """
        parse_driver_info(node)

    def bmc_address(self, node: base.DriverNode) -> str | None:
        """``host:port`` of ``redfish_address`` (calls to one BMC are spaced).

        Systems behind one Redfish service share its address.
        """
        value = node.driver_info.get("redfish_address")
        if not isinstance(value, str) or not value.strip():
            return None
        text = value.strip()
        if "://" not in text:
            text = "https://" + text
        try:
            parsed = urlparse.urlsplit(text)
            port = parsed.port
        except ValueError:
            return None
        if not parsed.hostname:
            return None
        if port is None:
            port = 80 if parsed.scheme == "http" else 443
        return base.host_port(parsed.hostname, port)

    def _sushy(self) -> Any:
        """The sushy side (imported, and built, at the first BMC call)."""
        with self._lock:
            if self._backend is None:
                from conductor.drivers import _redfish_sushy
                self._backend = _redfish_sushy.SushyPower(parse_driver_info)
            return self._backend

    def get_power_state(self, node: base.DriverNode) -> str:
        """Return POWER_ON, POWER_OFF or ERROR (see the module docs).

        :raises: InvalidParameterValue for bad ``driver_info``;
            PowerStateFailure when the BMC cannot be read;
            DeadlineExceeded when it does not answer in time.
        """
        return str(self._sushy().get_power_state(node))

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
        self._sushy().set_power_state(node, target)

    def reboot(self, node: base.DriverNode) -> None:
        """Restart the node hard (``ForceRestart``), or power it on if off.

        :raises: as :meth:`set_power_state`.
        """
        self._sushy().reboot(node)


class RedfishDriver(base.BaseDriver):
    """Power control of Redfish BMCs through sushy."""

    def __init__(self) -> None:
        self.power = RedfishPower()

    def prepare(self) -> None:
        """Check that sushy is installed (without importing it).

        Importing sushy costs about 0.15 s of CPU; the workers do it at
        their first Redfish call, and the master need not pay it too.

        :raises: DriverLoadError when sushy cannot be found.
        """
        if importlib.util.find_spec("sushy") is None:
            raise exceptions.DriverLoadError(
                driver="redfish",
                reason="the sushy library is not installed; install it: "
                       "pip install sushy")
        try:
            version = importlib.metadata.version("sushy")
        except importlib.metadata.PackageNotFoundError:
            version = "(version unknown: no package metadata)"
        LOG.info("redfish driver: sushy %s", version)

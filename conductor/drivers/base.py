# SPDX-License-Identifier: Apache-2.0
"""The driver API: what a hardware driver implements.

A driver is a class registered in the ``conductor.drivers`` entry point
group and instantiated with no arguments. Its ``power`` attribute
implements :class:`PowerInterface`::

    class MyDriver(BaseDriver):
        def __init__(self):
            self.power = MyPower()

Drivers and their interfaces may declare periodic tasks with the
decorators of :mod:`conductor.periodics`; the conductor collects them
from every *enabled* driver, once per class.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class DriverNode:
    """A node as a driver sees it: read-only, secrets included.

    ``driver_info`` holds the BMC address and credentials; a driver must
    never log or raise it whole (see :func:`mask_secrets`).
    """

    uuid: str
    name: str | None
    driver: str
    driver_info: Mapping[str, Any]
    power_state: str | None


class PowerInterface(abc.ABC):
    """Reads and changes a node's power state through its BMC.

    Every call runs under the ``[conductor] power_state_timeout``
    deadline: an implementation may block on I/O, but should bound its own
    waits where it can so that a thread is not held for the whole deadline.
    """

    @abc.abstractmethod
    def validate(self, node: DriverNode) -> None:
        """Check ``node.driver_info`` fully, without talking to the BMC.

        :raises: conductor.common.exceptions.InvalidParameterValue naming
            every missing or malformed field.
        """

    @abc.abstractmethod
    def get_power_state(self, node: DriverNode) -> str:
        """Return ``POWER_ON``, ``POWER_OFF`` or ``ERROR`` (conductor.states).

        :raises: any exception when the BMC cannot be read; the caller
            counts it as a failure.
        """

    # NOTE: optional, so not declared here (power sync looks it up with
    # getattr): a driver that can read many BMCs in one call defines
    #
    #   def get_power_states(self, nodes: Sequence[DriverNode]
    #                        ) -> Mapping[str, str | BaseException]:
    #
    # returning, for every node's uuid, its state (as get_power_state
    # would) or the exception that node's read failed with. It runs under
    # one deadline for the whole batch; a node's failure must never fail
    # the batch. See conductor.power_reads and doc/source/driver-api.rst.

    @abc.abstractmethod
    def set_power_state(self, node: DriverNode, target: str) -> None:
        """Turn the node on or off (``target`` is POWER_ON or POWER_OFF).

        Returns once the BMC accepted the request; raises on failure.
        """

    @abc.abstractmethod
    def reboot(self, node: DriverNode) -> None:
        """Power-cycle the node; returns once the BMC accepted it."""

    def bmc_address(self, node: DriverNode) -> str | None:
        """The address of the node's BMC, e.g. ``"10.0.0.7:623"`` (optional).

        The conductor sends at most one call at a time to one address,
        and spaces calls to it by ``[conductor] bmc_min_interval``: nodes
        whose BMC is shared (a chassis manager, one Redfish service for
        many systems) return the same string. Called before every driver
        call, so keep it cheap and do not talk to the BMC; it may be
        called for a node that fails :meth:`validate`.

        :returns: a string naming the BMC (host and port, lower case), or
            None (the default) when calls to this node need no spacing.
        """
        return None


class BaseDriver:
    """Base class for drivers; a subclass sets ``self.power``."""

    #: The interface that reads and changes power state.
    power: PowerInterface

    def prepare(self) -> None:
        """Check that this host can run the driver, before any node uses it.

        The conductor calls it once per start, in the master before the
        workers are forked; ``conductor-manage`` never does. Check here
        the programs and libraries the driver needs, so that a host
        missing one refuses to start, naming it, rather than failing
        every node at its first poll (which would put the whole fleet in
        maintenance). Modules imported here are shared by the workers.
        The default does nothing.

        :raises: any exception; start-up stops with DriverLoadError
            naming the driver and the exception's message.
        """


def host_port(host: str, port: Any) -> str:
    """``host:port`` for a BMC address (IPv6 literals in brackets)."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        host = "[%s]" % host
    return "%s:%s" % (host, port)


def text_value(value: Any) -> str | None:
    """A string, or an int given where a string was meant, else None.

    ``conductor-manage --driver-info ipmi_password=1234`` reads the value
    as JSON, giving the number 1234; its decimal form is what was typed.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    return None


def field_problems(info: Mapping[str, Any], driver: str,
                   known: Sequence[str], required: Sequence[str] = ()
                   ) -> list[str]:
    """The missing required and the unknown fields of ``driver_info``.

    Unknown fields are refused rather than ignored: a typo in a field name
    would otherwise silently fall back to a default.

    :returns: one message per kind of problem (empty when none).
    """
    problems = []
    missing = [key for key in required if info.get(key) in (None, "")]
    if missing:
        problems.append("missing required field(s) %s" % ", ".join(missing))
    unknown = sorted(str(key) for key in info if key not in known)
    if unknown:
        problems.append("unknown field(s) %s (the %s driver reads %s)"
                        % (", ".join(unknown), driver, ", ".join(known)))
    return problems


#: Substrings that mark a driver_info key as secret.
SECRET_MARKERS = ("password", "secret", "token", "key")
MASK = "******"


def is_secret_key(key: str) -> bool:
    """True when ``key`` names a secret (``*password*`` and friends)."""
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def mask_secrets(info: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``info`` with every secret value replaced by MASK."""
    return {key: (MASK if is_secret_key(str(key)) else value)
            for key, value in info.items()}

# SPDX-License-Identifier: Apache-2.0
"""The exceptions conductor raises across its public boundaries.

Every exception carries a complete, human readable message. The ones a
remote caller may receive over RPC are listed in :data:`RPC_EXCEPTIONS`;
their names are part of the RPC contract (see doc/source/rpc.rst).
"""

from __future__ import annotations

from typing import Any


class ConductorException(Exception):
    """Base class: ``message`` is formatted with the keyword arguments.

    A subclass sets ``message`` to a format string; callers pass the
    values as keyword arguments, or a ready-made message as the single
    positional argument.
    """

    message = "An unknown error occurred."
    #: The exit code ``conductor-manage`` uses when this reaches it.
    exit_code = 1

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message % kwargs
            except (KeyError, TypeError):
                message = self.message
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.message


class ConfigInvalid(ConductorException):
    message = "Invalid configuration: %(problem)s"


class InvalidParameterValue(ConductorException):
    message = "%(err)s"


class NodeNotFound(ConductorException):
    message = "Node %(node)s could not be found."


class NodeLocked(ConductorException):
    message = ("Node %(node)s is locked by %(holder)s, please retry "
               "after the current operation is completed.")


class ReservationLost(ConductorException):
    """A holder's reservation was taken over (its fencing token is stale).

    Not sent over RPC: the worker that gets it stops acting on the node.
    """

    message = ("Node %(node)s: the reservation of %(holder)s (epoch "
               "%(epoch)s) was taken over by another worker; %(holder)s "
               "no longer acts on it")


class HostInUse(ConductorException):
    message = ("[DEFAULT] host %(host)s is already run by a live conductor "
               "(%(holder)s); stop it, give this one a distinct [DEFAULT] "
               "host, or start with --force if that conductor is dead")


class DuplicateName(ConductorException):
    message = "A node with name %(name)s already exists."


class DriverNotEnabled(ConductorException):
    message = ("Driver %(driver)s is not enabled; enabled drivers: "
               "%(enabled)s.")


class DriverLoadError(ConductorException):
    message = "Driver %(driver)s could not be loaded: %(reason)s"


class NoFreeWorker(ConductorException):
    message = ("All %(size)s worker threads are busy; the request was "
               "rejected, retry later.")


class PowerStateFailure(ConductorException):
    message = "%(err)s"


class DatabaseUnavailable(ConductorException):
    message = "Database %(url)s is not usable: %(reason)s"


class SchemaOutOfDate(ConductorException):
    message = ("Database schema is at revision %(current)s but this "
               "release needs %(head)s; run 'conductor-manage db sync'.")


#: Exceptions that travel over RPC with their names and messages intact.
RPC_EXCEPTIONS = (
    NodeNotFound,
    NodeLocked,
    InvalidParameterValue,
    DriverNotEnabled,
    NoFreeWorker,
    DuplicateName,
)

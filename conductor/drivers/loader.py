# SPDX-License-Identifier: Apache-2.0
"""Loading the enabled drivers from the ``conductor.drivers`` entry points."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from stevedore import extension
from stevedore import named

from conductor.common import exceptions
from conductor.drivers import base

LOG = logging.getLogger(__name__)

NAMESPACE = "conductor.drivers"


def available() -> list[str]:
    """Names of every installed driver, sorted."""
    manager: extension.ExtensionManager[Any] = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False)
    return sorted(manager.names())


def load(names: Sequence[str]) -> dict[str, base.BaseDriver]:
    """Instantiate the named drivers, in the given order.

    :raises: ConfigInvalid for an empty list or a duplicate name,
        DriverLoadError for a name with no entry point, a class that fails
        to load or instantiate, or a driver without a usable ``power``.
    """
    if not names:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] enabled_drivers is empty; enable at least "
                    "one driver (e.g. 'fake')")
    duplicates = sorted({n for n in names if list(names).count(n) > 1})
    if duplicates:
        raise exceptions.ConfigInvalid(
            problem="[DEFAULT] enabled_drivers lists %s more than once"
                    % ", ".join(duplicates))
    errors: dict[str, str] = {}

    def on_failure(manager: Any, entrypoint: Any,
                   exc: BaseException) -> None:
        errors[entrypoint.name] = "%s: %s" % (type(exc).__name__, exc)

    # NOTE: a NamedExtensionManager imports and instantiates only the
    # enabled drivers; an ExtensionManager would build every installed one.
    manager: named.NamedExtensionManager[Any] = named.NamedExtensionManager(
        NAMESPACE, names=list(names), invoke_on_load=True,
        on_load_failure_callback=on_failure,
        on_missing_entrypoints_callback=None)
    loaded: dict[str, Any] = {ext.name: ext.obj for ext in manager}
    drivers: dict[str, base.BaseDriver] = {}
    for name in names:
        if name in errors:
            raise exceptions.DriverLoadError(driver=name,
                                             reason=errors[name])
        if name not in loaded:
            raise exceptions.DriverLoadError(
                driver=name,
                reason="no such driver in entry point group %s; installed "
                       "drivers: %s" % (NAMESPACE,
                                        ", ".join(available()) or "none"))
        driver = loaded[name]
        if not isinstance(getattr(driver, "power", None),
                          base.PowerInterface):
            raise exceptions.DriverLoadError(
                driver=name,
                reason="its 'power' attribute does not implement "
                       "conductor.drivers.base.PowerInterface")
        drivers[name] = driver
    LOG.debug("Loaded drivers: %s", ", ".join(drivers))
    return drivers


def interfaces(driver: base.BaseDriver) -> list[object]:
    """The driver and its interfaces: where periodic tasks are declared."""
    return [driver, driver.power]

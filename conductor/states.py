# SPDX-License-Identifier: Apache-2.0
"""Power states: the one home of the power-state vocabulary.

``from conductor import states`` gives drivers and callers ``POWER_ON``,
``POWER_OFF``, ``REBOOT``, ``ERROR`` and ``NOSTATE``, as stored in the
database and returned by drivers. Drivers return :data:`POWER_ON`,
:data:`POWER_OFF` or :data:`ERROR` from ``get_power_state``;
:data:`REBOOT` is only ever a *target*.
"""

from __future__ import annotations

from typing import Final

POWER_ON: Final = "power on"
POWER_OFF: Final = "power off"
REBOOT: Final = "rebooting"
ERROR: Final = "error"
NOSTATE: Final = None

#: What a driver may report from ``get_power_state``.
STABLE_POWER_STATES: Final = frozenset({POWER_ON, POWER_OFF, ERROR})

#: What a caller may ask for with a power action.
POWER_TARGETS: Final = frozenset({POWER_ON, POWER_OFF, REBOOT})

#: CLI verbs for the power targets.
POWER_VERBS: Final = {"on": POWER_ON, "off": POWER_OFF, "reboot": REBOOT}

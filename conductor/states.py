"""Power states (DESIGN.md section 6): the public import for drivers.

``from conductor import states`` gives ``POWER_ON``, ``POWER_OFF``,
``REBOOT``, ``ERROR`` and ``NOSTATE``; they are defined in
:mod:`conductor.common.states`.
"""

from conductor.common.states import ERROR
from conductor.common.states import NOSTATE
from conductor.common.states import POWER_OFF
from conductor.common.states import POWER_ON
from conductor.common.states import POWER_TARGETS
from conductor.common.states import REBOOT
from conductor.common.states import STABLE_POWER_STATES

__all__ = ["ERROR", "NOSTATE", "POWER_OFF", "POWER_ON", "POWER_TARGETS",
           "REBOOT", "STABLE_POWER_STATES"]

# SPDX-License-Identifier: Apache-2.0
"""Project-specific flake8 checks.

C301: eventlet must never be imported; conductor runs on oslo.service's
threading backend (see conductor/cmd/__init__.py).
"""

import re

from hacking import core

_EVENTLET_IMPORT = re.compile(
    r"^\s*(import\s+eventlet(\s|\.|,|$)|from\s+eventlet(\s|\.))")


@core.flake8ext
def no_eventlet_import(logical_line, filename):
    """C301: do not import eventlet."""
    if _EVENTLET_IMPORT.match(logical_line):
        yield (0, "C301: eventlet must not be imported; conductor runs on "
                  "native threads (oslo.service threading backend)")

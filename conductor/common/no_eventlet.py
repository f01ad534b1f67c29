# SPDX-License-Identifier: Apache-2.0
"""Refuse any import of eventlet once the threading backend is chosen.

futurist and oslo.service import eventlet opportunistically when it is
installed (``try: import eventlet except ImportError``); blocking the
import makes them take their threading paths, and makes any code that
really needs eventlet fail at import with a message saying why.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Sequence

BLOCKED = ("eventlet",)


class EventletBlocker(importlib.abc.MetaPathFinder):
    """A meta path finder that raises ImportError for eventlet."""

    def find_spec(self, fullname: str,
                  path: Sequence[str] | None,
                  target: types.ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        root = fullname.partition(".")[0]
        if root in BLOCKED:
            raise ImportError(
                "conductor runs on oslo.service's threading backend; "
                "importing %s is not allowed" % fullname, name=fullname)
        return None


def loaded() -> list[str]:
    """The eventlet modules already imported, sorted (none: [])."""
    return sorted(name for name in sys.modules
                  if name.partition(".")[0] in BLOCKED)


def install() -> None:
    """Install the blocker once; fails if eventlet was already imported."""
    already = loaded()
    if already:
        raise RuntimeError(
            "eventlet was imported before conductor selected the threading "
            "backend (%s)" % ", ".join(already))
    if not any(isinstance(f, EventletBlocker) for f in sys.meta_path):
        sys.meta_path.insert(0, EventletBlocker())

# SPDX-License-Identifier: Apache-2.0
"""The layering rules the package keeps (see doc/source/architecture.rst)."""

from __future__ import annotations

import ast
import os

from tests import base

_PACKAGE = os.path.join(os.path.dirname(__file__), "..", "..", "conductor")


def _conductor_imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as stream:
        tree = ast.parse(stream.read(), path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "conductor":
                found.update("conductor.%s" % a.name for a in node.names)
            elif node.module.startswith("conductor."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names
                         if a.name.startswith("conductor."))
    return found


class TestLayers(base.TestCase):

    def test_common_imports_only_common(self) -> None:
        common = os.path.join(_PACKAGE, "common")
        upward = {}
        for name in sorted(os.listdir(common)):
            if not name.endswith(".py"):
                continue
            bad = sorted(module for module in _conductor_imports(
                os.path.join(common, name))
                if not module.startswith("conductor.common"))
            if bad:
                upward[name] = bad
        self.assertEqual({}, upward)

    def test_declarations_load_no_runtime(self) -> None:
        imports = _conductor_imports(os.path.join(_PACKAGE, "periodics.py"))
        self.assertEqual(set(), {module for module in imports
                                 if module.startswith("conductor.executor")})

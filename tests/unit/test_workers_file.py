# SPDX-License-Identifier: Apache-2.0
"""The split of the suite between tox's two stestr workers."""

from __future__ import annotations

import os
import re

from stestr import selection
import yaml

from tests import base

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_modules() -> list[str]:
    """Every test module's dotted name, found on disk."""
    found = []
    for directory, _dirs, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                path = os.path.relpath(os.path.join(directory, name[:-3]),
                                       ROOT)
                found.append(path.replace(os.sep, "."))
    return sorted(found)


class TestWorkersFile(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        with open(os.path.join(ROOT, "tests", "workers.yaml")) as stream:
            self.workers = [entry["worker"]
                            for entry in yaml.safe_load(stream)]

    def test_every_test_runs_on_exactly_one_worker(self) -> None:
        ids = [module + ".TestCase.test_it" for module in test_modules()]
        # A module whose name starts like one of the first worker's.
        ids.append("tests.functional.test_rpc_bounds.TestCase.test_it")
        self.assertGreater(len(ids), 40)
        taken = [set(selection.filter_tests(worker, ids))
                 for worker in self.workers]
        self.assertEqual(2, len(taken))
        self.assertEqual(set(), taken[0] & taken[1])
        self.assertEqual(set(ids), taken[0] | taken[1])
        self.assertIn("tests.functional.test_rpc_bounds.TestCase.test_it",
                      taken[1])

    def test_named_modules_exist(self) -> None:
        # A renamed module would silently move to the second worker.
        named = set(re.findall(r"test_\w+", self.workers[0][0]))
        functional = {module.rsplit(".", 1)[1]
                      for module in test_modules()
                      if module.startswith("tests.functional.")}
        self.assertEqual(set(), named - functional)
        self.assertEqual(5, len(named))

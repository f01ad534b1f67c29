# SPDX-License-Identifier: Apache-2.0
"""The conductor's section of the Guru Meditation Report."""

from __future__ import annotations

import os

from conductor import reports
from tests import base


class TestReportState(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        # NOTE: per-process module state: leave it as found.
        self.addCleanup(reports.set_process, "master")

    def test_a_worker_shows_its_providers(self) -> None:
        reports.add_state("left over", lambda: "from the master")
        reports.set_process("worker-3")
        reports.add_state("pool", lambda: {"size": 4, "busy": 1})

        def broken() -> dict[str, int]:
            raise RuntimeError("ring not built")

        reports.add_state("ownership", broken)
        self.assertEqual({"process": "worker-3", "pid": os.getpid(),
                          "pool": {"size": 4, "busy": 1},
                          "ownership": "unavailable: ring not built"},
                         reports.state())

    def test_the_section_renders_as_text(self) -> None:
        reports.set_process("worker-0")
        reports.add_state("ownership", lambda: {"draining": True})
        model = reports._section()
        model.set_current_view_type("text")     # as a text report does
        text = str(model)
        self.assertIn("process = worker-0", text)
        self.assertIn("draining = True", text)

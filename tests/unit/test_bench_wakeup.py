# SPDX-License-Identifier: Apache-2.0
"""The wake-up benchmark prints its figures as JSON and checks its options."""

from __future__ import annotations

import contextlib
import io
import json
import os

from tests import base

bench = base.load_tool("bench_wakeup")


class TestBenchWakeup(base.TestCase):

    def test_prints_every_figure(self) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(0, bench.main(["--sleeps", "2",
                                            "--threads", "2"]))
        report = json.loads(out.getvalue())
        for key in ("lone_sleep_us", "concurrent_sleep_us", "loop_call_us",
                    "paced_call_us", "handoff_us", "periodic_run_us"):
            self.assertIsInstance(report[key], float, key)
            self.assertGreaterEqual(report[key], 0.0, key)
        self.assertEqual(os.cpu_count(), report["cpus"])

    def test_rejects_counts_below_one(self) -> None:
        for option in ("--sleeps", "--threads"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertRaises(SystemExit, bench.main, [option, "0"])
            self.assertIn("must be >= 1", err.getvalue())

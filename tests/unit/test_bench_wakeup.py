# SPDX-License-Identifier: Apache-2.0
"""The wake-up benchmark prints its figures as JSON and checks its options."""

from __future__ import annotations

import contextlib
import io
import json
import os

import fixtures

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
                    "paced_call_us", "handoff_us", "periodic_run_us",
                    "paced_statement_us"):
            self.assertIsInstance(report[key], float, key)
            self.assertGreaterEqual(report[key], 0.0, key)
        self.assertEqual(os.cpu_count(), report["cpus"])
        self.assertEqual("sqlite", report["database"])
        self.assertEqual(bench.floor(report, 20000 / 60.0 / 20),
                         report["floor"])

    def test_floor_counts_fixed_runs_and_cheapest_wakeups(self) -> None:
        prices = {"periodic_run_us": 400.0, "paced_statement_us": 700.0,
                  "concurrent_sleep_us": 25.0, "lone_sleep_us": 60.0}
        floor = bench.floor(prices, 10.0)
        # 2 runs and 1 statement a second, and per poll two wake-ups
        # among many (50 us), cheaper than one alone (60 us).
        self.assertEqual(1.5, floor["fixed_ms_per_s"])
        self.assertEqual(50.0, floor["wakeups_us_per_poll"])
        self.assertEqual(2.0, floor["ms_per_s"])
        self.assertEqual(0.2, floor["ms_per_poll"])
        self.assertEqual(0.15, floor["target_ms_per_poll"])
        prices["concurrent_sleep_us"] = 40.0
        self.assertEqual(60.0,
                         bench.floor(prices, 10.0)["wakeups_us_per_poll"])

    def test_statements_on_a_database_url(self) -> None:
        url = "sqlite:///%s/scratch.sqlite" % self.useFixture(
            fixtures.TempDir()).path
        self.assertGreater(bench._statements(url, 2, 0.0), 0.0)

    def test_rejects_polls_per_second_not_above_zero(self) -> None:
        for value in ("0", "-1", "nan", "inf"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertRaises(SystemExit, bench.main,
                                  ["--polls-per-second", value])
            self.assertIn("--polls-per-second must be > 0 and finite",
                          err.getvalue())

    def test_rejects_counts_below_one(self) -> None:
        for option in ("--sleeps", "--threads"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertRaises(SystemExit, bench.main, [option, "0"])
            self.assertIn("must be >= 1", err.getvalue())

# SPDX-License-Identifier: Apache-2.0
"""Smoke run of tools/bench_faults.py: private services, one scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import testtools

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class TestBenchFaultsSmoke(testtools.TestCase):

    def test_quick_sigterm_prints_the_report(self) -> None:
        # NOTE: the script starts (and stops) its own MariaDB and RabbitMQ;
        # the shared ones are never touched.
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tools", "bench_faults.py"),
             "--quick", "--scenarios", "sigterm"],
            capture_output=True, text=True, timeout=240, cwd=ROOT)
        self.assertEqual(0, proc.returncode, proc.stderr[-3000:])
        report = json.loads(proc.stdout)
        self.assertEqual(["sigterm"], list(report["scenarios"]))
        self.assertEqual(20, report["settings"]["nodes"])
        self.assertEqual(3, report["settings"]["actions"])
        self.assertEqual("private MariaDB", report["settings"]["database"])
        scenario = report["scenarios"]["sigterm"]
        self.assertEqual(1, len(scenario["runs"]))
        run = scenario["runs"][0]
        self.assertEqual([], run["errors"])
        for key in ("applied_once", "applied_twice", "lost_without_error",
                    "failed_with_error", "reservations_left",
                    "repoll_seconds", "exit_codes"):
            self.assertIn(key, run)
        # Every requested action is accounted for, one way or another.
        self.assertEqual(3, run["applied_once"] + run["applied_twice"]
                         + run["lost_without_error"]
                         + run["failed_with_error"])
        self.assertIn("master", run["exit_codes"])
        self.assertIn("final_stop", run["exit_codes"])
        summary = scenario["summary"]
        for key in ("applied_twice_total", "lost_without_error_total",
                    "reservations_left_total", "repoll_seconds_median",
                    "exit_codes", "ok"):
            self.assertIn(key, summary)

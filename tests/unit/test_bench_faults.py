# SPDX-License-Identifier: Apache-2.0
"""The fault benchmark's own logic: options, re-poll time, summaries."""

from __future__ import annotations

import datetime
import io
import os
from typing import Any

import fixtures

from tests import base

bench = base.load_tool("bench_faults")
T0 = datetime.datetime(2026, 1, 2, 3, 4, 5)


def _sweep(at: float, who: str, nodes: int, total: float) -> str:
    stamp = (T0 + datetime.timedelta(seconds=at)).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:23]
    return ("%s 123 INFO conductor.power_sync [%s] [-] Power sync sweep: "
            "%d node(s) in %.3fs (calls) / %.3fs (total), 0 failure(s), "
            "0 change(s), 0 to maintenance, 0 recovered, 8 lane(s), peak 1 "
            "concurrent call(s)\n" % (stamp, who, nodes, total, total))


class TestOptions(base.TestCase):

    def _refused(self, *argv: str) -> str:
        stderr = self.useFixture(fixtures.MonkeyPatch(
            "sys.stderr", io.StringIO())).new_value
        exc = self.assertRaises(SystemExit, bench.parse_args, list(argv))
        self.assertEqual(1, exc.code)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(1, len(lines))
        return str(lines[0])

    def test_defaults_are_the_issues_figures(self) -> None:
        args = bench.parse_args([])
        self.assertEqual((5, 1000, 50, 3000, 2),
                         (args.runs, args.nodes, args.actions,
                          args.latency_ms, args.workers))
        self.assertEqual(list(bench.SCENARIOS), args.scenario_list)
        self.assertEqual((8.0, 20.0), (args.db_outage, args.rabbit_outage))

    def test_quick_is_small(self) -> None:
        args = bench.parse_args(["--quick", "--scenarios", "sigterm"])
        self.assertEqual((1, 20, 3), (args.runs, args.nodes, args.actions))
        self.assertEqual(["sigterm"], args.scenario_list)

    def test_unknown_scenario(self) -> None:
        self.assertIn("unknown scenario(s) nap; choose from ctrl-c",
                      self._refused("--scenarios", "sigterm,nap"))

    def test_db_outage_needs_the_private_server(self) -> None:
        for scenario in ("db-outage", "db-outage-two-hosts", "db-flood"):
            self.assertIn("%s needs the private MariaDB" % scenario,
                          self._refused("--database-url",
                                        "mysql+pymysql://x/",
                                        "--scenarios", scenario))

    def test_bad_database_name(self) -> None:
        self.assertIn("--database-name must be letters",
                      self._refused("--database-name", "x; DROP"))

    def test_more_actions_than_nodes(self) -> None:
        self.assertIn("--actions must not exceed --nodes",
                      self._refused("--nodes", "3", "--actions", "4"))


class TestRepolledAt(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.log = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                "conductor.log")
        self.since = T0.timestamp() + 10

    def _write(self, *lines: str) -> None:
        with open(self.log, "w") as stream:
            stream.writelines(lines)

    def test_every_worker_swept_after_the_fault(self) -> None:
        self._write(
            _sweep(11, "h1 worker 0", 6, 3.0),   # started before: ignored
            _sweep(14, "h1 worker 0", 6, 2.0),
            _sweep(15, "h1 worker 1", 4, 1.0),
            _sweep(18, "h1 worker 0", 6, 2.0))
        self.assertEqual(self.since + 5,
                         bench.repolled_at(self.log, self.since, 10))

    def test_not_yet(self) -> None:
        self._write(_sweep(14, "h1 worker 0", 6, 2.0),
                    _sweep(16, "h1 worker 0", 6, 2.0))
        self.assertIsNone(bench.repolled_at(self.log, self.since, 10))

    def test_no_log(self) -> None:
        self.assertIsNone(bench.repolled_at(self.log + ".x", self.since, 1))


class TestSummary(base.TestCase):

    def _run(self, **values: Any) -> dict[str, Any]:
        run = {"errors": [], "applied_twice": 0, "lost_without_error": 0,
               "reservations_left": 0, "failed_with_error": 0,
               "still_pending": 0, "repoll_seconds": 4.0,
               "exit_codes": {"master": 0, "final_stop": 0}}
        run.update(values)
        return run

    def test_clean_runs_are_ok(self) -> None:
        summary = bench.summarise([self._run(), self._run(repoll_seconds=6)])
        self.assertTrue(summary["ok"])
        self.assertEqual(5.0, summary["repoll_seconds_median"])
        self.assertEqual(['{"final_stop": 0, "master": 0}'],
                         summary["exit_codes"])

    def test_each_defect_fails_the_scenario(self) -> None:
        for bad in ({"applied_twice": 1}, {"lost_without_error": 2},
                    {"reservations_left": 1}, {"repoll_seconds": None},
                    {"errors": ["RuntimeError: x"]}):
            summary = bench.summarise([self._run(), self._run(**bad)])
            self.assertFalse(summary["ok"], bad)

    def test_two_hosts_acting_on_a_node_fails_the_scenario(self) -> None:
        runs = [self._run(acted_on_by_two_hosts=0, repoll_seconds=None)]
        self.assertTrue(bench.summarise(runs)["ok"])
        runs.append(self._run(acted_on_by_two_hosts=3, repoll_seconds=None))
        summary = bench.summarise(runs)
        self.assertEqual(3, summary["acted_on_by_two_hosts_total"])
        self.assertFalse(summary["ok"])


def _line(at: float, text: str, level: str = "INFO",
          logger: str = "conductor.x", who: str = "h1 worker 0") -> str:
    stamp = (T0 + datetime.timedelta(seconds=at)).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:23]
    return "%s 123 %s %s [%s] [-] %s\n" % (stamp, level, logger, who, text)


class TestContainFigures(base.TestCase):

    def write(self, lines: list[str]) -> str:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            "conductor.log")
        with open(path, "w") as stream:
            stream.writelines(lines)
        return path

    def test_sweep_delays_time_the_last_healthy_read(self) -> None:
        ok = "1" * 8 + "-0000-0000-0000-" + "0" * 12
        ok2 = "2" * 8 + "-0000-0000-0000-" + "0" * 12
        hung = "3" * 8 + "-0000-0000-0000-" + "0" * 12
        call = "Fake BMC of node %s: power state read: power off"
        path = self.write([
            _line(0, bench.SWEEP_START, "DEBUG"),
            _line(0.1, call % hung, "DEBUG"),
            _line(0.5, call % ok, "DEBUG"),
            _line(2.0, call % ok2, "DEBUG"),
            _line(5, bench.SWEEP_START, "DEBUG"),
            _line(5.2, call % ok, "DEBUG"),
            _line(5.3, call % ok2, "DEBUG"),
            _line(5.4, call % hung, "DEBUG"),
            _line(10, bench.SWEEP_START, "DEBUG")])
        self.assertEqual([2.0, 0.3], [round(d, 3) for d in
                                      bench.sweep_delays(path, {hung})])

    def test_stall_figures(self) -> None:
        sweep = "Power sync sweep: %d node(s) in 0.1s (calls)"
        path = self.write([
            _line(0, sweep % 10), _line(2, sweep % 10),
            _line(3, "Worker pool pool-w0 abandoned 2 driver call(s) still "
                     "running past their deadline: ...", "WARNING"),
            _line(3.5, "Worker pool pool-w0 is degraded: 2 abandoned",
                  "WARNING", "conductor.executor.pool"),
            _line(4.2, "Worker h1:0 is degraded: ...", "ERROR",
                  "conductor.service"),
            _line(40, "Worker h1:0 is healthy again: ..."),
            _line(41, sweep % 10), _line(43, sweep % 10)])
        figures = bench.stall_figures(path, T0.timestamp() + 4.5,
                                      stall_bound=6.0, heartbeat=1,
                                      hung=4, cap=2)
        self.assertEqual((0.0, 0.7, 1.0, True, True, 1), (
            figures["silent_stall_minutes"], figures["degraded_report_s"],
            figures["offline_s"], figures["recovered"],
            figures["within_2_heartbeats"], figures["abandoned_warnings"]))
        # Without the ERROR, the 39 s gap is a silent stall.
        path = self.write([_line(0, sweep % 10), _line(2, sweep % 10),
                           _line(41, sweep % 10)])
        figures = bench.stall_figures(path, None, stall_bound=6.0,
                                      heartbeat=1, hung=4, cap=2)
        self.assertEqual((0.55, False), (figures["silent_stall_minutes"],
                                         figures["within_2_heartbeats"]))

    def test_flood_figures_count_per_worker_and_second(self) -> None:
        down = T0.timestamp() + 10
        lines = [_line(9, "before")]
        lines += [_line(10.1 + i * 0.1, "x", who="h1 worker 0")
                  for i in range(3)]
        lines += [_line(10.5, "y", who="h1 worker 1"),
                  _line(11, "failed", "ERROR"), "Traceback (most recent "
                  "call last):\n", "  File x\n",
                  _line(20, "database available again after 9.0 s; 5 "
                            "operation(s) failed"),
                  _line(40, "after")]
        figures = bench.flood_figures(self.write(lines), down, down + 11, 2)
        # The traceback counts with its worker's second: 1 + 2 lines.
        self.assertEqual((3, 2, 8, 1), (
            figures["max_lines_per_s_per_worker"],
            figures["traceback_lines"], figures["lines"],
            figures["recovery_lines"]))

    def test_contain_summary(self) -> None:
        ok = bench.summarise_contained("db-flood", [
            {"errors": [], "max_lines_per_s_per_worker": 2,
             "traceback_lines": 0, "recovery_lines": 2, "workers": 2}])
        self.assertTrue(ok["ok"])
        bad = bench.summarise_contained("hung-bmc", [
            {"errors": [], "healthy_start_delay_s": {"delay_ratio": 3.1}}])
        self.assertEqual((3.1, False), (bad["delay_ratio_max"], bad["ok"]))

# SPDX-License-Identifier: Apache-2.0
"""The scale benchmark's own logic: options and the figures it computes."""

from __future__ import annotations

import configparser
import io
import json
import os
from typing import Any

import fixtures

from tests import base

bench = base.load_tool("bench_scale")


def _poll(node: str, start: float, pid: int = 1) -> dict[str, Any]:
    return {"node": node, "op": "get_power_state", "start": start,
            "end": start + 0.05, "pid": pid, "ok": True, "bmc": None}


class TestHistograms(base.TestCase):

    def test_histogram_buckets(self) -> None:
        counts = {"a": 1, "b": 2, "c": 3, "d": 7}
        self.assertEqual({"0": 1, "1": 1, "2": 1, "3+": 2},
                         bench.histogram(counts, ["a", "b", "c", "d", "e"]))

    def test_nodes_not_listed_are_ignored(self) -> None:
        self.assertEqual({"0": 0, "1": 1, "2": 0, "3+": 0},
                         bench.histogram({"a": 1, "zz": 4}, ["a"]))

    def test_interval_histograms(self) -> None:
        entries = [_poll("a", 100.5), _poll("b", 101), _poll("a", 110.2),
                   _poll("a", 119.9), _poll("b", 120.0), _poll("a", 99.9)]
        self.assertEqual(
            [{"0": 0, "1": 2, "2": 0, "3+": 0},     # [100, 110)
             {"0": 1, "1": 0, "2": 1, "3+": 0}],    # [110, 120): a twice
            bench.interval_histograms(entries, ["a", "b"], 100.0, 10.0, 2))


class TestPeakRate(base.TestCase):

    def test_even_spread(self) -> None:
        starts = [100 + i * 0.5 for i in range(20)]      # 2 per second
        result = bench.peak_rate(starts, 100.0, 110.0)
        self.assertEqual(2, result["peak_calls_per_second"])
        self.assertEqual(2.0, result["mean_calls_per_second"])
        self.assertEqual(1.0, result["peak_to_mean"])

    def test_burst(self) -> None:
        # 20 calls in 0.2 s, then nothing for the rest of 10 s.
        starts = [100 + i * 0.01 for i in range(20)]
        result = bench.peak_rate(starts, 100.0, 110.0)
        self.assertEqual(20, result["peak_calls_per_second"])
        self.assertEqual(10.0, result["peak_to_mean"])

    def test_window_is_half_open_and_one_second(self) -> None:
        starts = [100.0, 100.999, 101.0, 101.5, 111.0]
        result = bench.peak_rate(starts, 100.0, 111.0)
        # 100.999, 101.0 and 101.5 fit one second; 100.0 and 101.0 don't.
        self.assertEqual(3, result["peak_calls_per_second"])

    def test_no_calls(self) -> None:
        self.assertEqual({"peak_calls_per_second": 0,
                          "mean_calls_per_second": 0.0,
                          "peak_to_mean": None},
                         bench.peak_rate([], 0.0, 10.0))


class TestCpuAndTakeover(base.TestCase):

    def test_cpu_used(self) -> None:
        baseline = {1: 10.0, 2: 5.0, 3: 1.0}
        last = {1: 12.5, 2: 5.0, 4: 0.75}     # 3 gone, 4 new (counts whole)
        self.assertAlmostEqual(3.25, bench.cpu_used(baseline, last))

    def test_cpu_ms_per_second(self) -> None:
        self.assertEqual(25.0, bench.cpu_ms_per_second(
            {1: 1.0, 2: 1.0}, {1: 2.0, 2: 1.5}, 30.0))
        self.assertEqual(0.0, bench.cpu_ms_per_second({}, {}, 30.0))

    def test_split_by_role(self) -> None:
        meter = bench.CpuMeter()
        meter.last = {1: 2.0, 2: 7.0, 3: 9.0, 4: 0.5}
        meter.workers = {2, 3, 4}
        meter.seen = {1: 100.0, 2: 100.0, 3: 100.0, 4: 10.0}
        masters, workers = meter.split()
        self.assertEqual({1: 2.0}, masters)
        self.assertEqual({2: 7.0, 3: 9.0, 4: 0.5}, workers)
        # A worker gone before the window (a failed start) is not one.
        self.assertEqual({2: 7.0, 3: 9.0}, meter.split(since=50.0)[1])

    def test_takeover(self) -> None:
        victim = {7, 8}
        entries = [
            _poll("a", 95, pid=7), _poll("b", 96, pid=8),
            _poll("c", 97, pid=9),                # another host's node
            _poll("z", 80, pid=7),                # before the lookback
            _poll("a", 101, pid=7),               # the victim, stopping
            _poll("a", 112, pid=9), _poll("b", 130, pid=9),
            _poll("a", 140, pid=9)]
        result = bench.takeover(entries, victim, before=100, since=100,
                                lookback=10)
        self.assertEqual({"nodes": 2, "repolled": 2, "never_repolled": 0,
                          "takeover_seconds": 30.0,
                          "median_wait_seconds": 30.0}, result)

    def test_takeover_lateness_against_the_due_time(self) -> None:
        entries = [_poll("a", 95, pid=7), _poll("b", 60, pid=7),
                   _poll("a", 150, pid=9), _poll("b", 125, pid=9)]
        result = bench.takeover(entries, {7}, before=100, since=100,
                                lookback=50, interval=30)
        # a was due at 125, polled at 150; b due at 90, polled at 125.
        self.assertEqual((50.0, 35.0), (result["takeover_seconds"],
                                        result["max_late_seconds"]))

    def test_takeover_never_repolled(self) -> None:
        entries = [_poll("a", 95, pid=7), _poll("b", 96, pid=7),
                   _poll("a", 105, pid=9)]
        result = bench.takeover(entries, {7}, 100, 100, 10)
        self.assertEqual(1, result["never_repolled"])
        self.assertEqual(5.0, result["takeover_seconds"])

    def test_ratio(self) -> None:
        self.assertEqual(2.5, bench.ratio(5.0, 2.0))
        self.assertIsNone(bench.ratio(None, 2.0))
        self.assertIsNone(bench.ratio(1.0, 0))


class TestReadEntries(base.TestCase):

    def test_reads_only_complete_read_lines_incrementally(self) -> None:
        path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                            "timing.jsonl")
        change = dict(_poll("a", 1), op="set_power_state")
        with open(path, "w") as stream:
            stream.write(json.dumps(_poll("a", 1)) + "\n")
            stream.write(json.dumps(change) + "\n")
            stream.write(json.dumps(_poll("b", 2))[:10])
        entries, offset = bench.read_entries(path)
        self.assertEqual(["a"], [e["node"] for e in entries])
        with open(path, "a") as stream:
            stream.write(json.dumps(_poll("b", 2))[10:] + "\n")
        more, offset = bench.read_entries(path, offset)
        self.assertEqual(["b"], [e["node"] for e in more])
        self.assertEqual(os.path.getsize(path), offset)

    def test_missing_file(self) -> None:
        self.assertEqual(([], 0), bench.read_entries("/nonexistent/t.jsonl"))


class TestSummary(base.TestCase):

    def test_ratios_between_host_counts(self) -> None:
        runs = [{"hosts": 1, "cpu_ms_per_node_poll": 0.1,
                 "rows_read_ratio": 2.0, "peak_to_mean": 5.0},
                {"hosts": 10, "cpu_ms_per_node_poll": 0.8,
                 "rows_read_ratio": 30.0, "peak_to_mean": 3.0}]
        self.assertEqual({"cpu_ratio": 8.0, "cpu_ratio_hosts": [10, 1],
                          "max_rows_read_ratio": 30.0,
                          "max_peak_to_mean": 5.0,
                          "max_cpu_ms_per_node_poll": 0.8},
                         bench.summarise(runs))

    def test_rounds_take_the_median_of_their_own_ratios(self) -> None:
        def run(hosts: int, cpu: float, number: int) -> dict[str, Any]:
            return {"hosts": hosts, "cpu_ms_per_node_poll": cpu,
                    "rows_read_ratio": 1.0, "peak_to_mean": 1.5,
                    "round": number}

        # The machine slowed down between rounds: each round's ratio is
        # of its own runs, not of the first 1-host and the last 10-host.
        runs = [run(1, 0.1, 1), run(10, 0.2, 1), run(10, 0.5, 2),
                run(1, 0.2, 2), run(1, 0.1, 3), run(10, 0.3, 3)]
        summary = bench.summarise(runs)
        self.assertEqual([2.0, 2.5, 3.0], summary["cpu_ratio_per_round"])
        self.assertEqual(2.5, summary["cpu_ratio"])
        self.assertEqual({"1": [0.1, 0.2, 0.1], "10": [0.2, 0.5, 0.3]},
                         summary["cpu_ms_per_node_poll_by_hosts"])

    def test_round_orders_alternate(self) -> None:
        self.assertEqual([[1, 5, 10], [10, 5, 1], [1, 5, 10]],
                         bench.round_orders([1, 5, 10], 3))
        self.assertEqual([[1, 10]], bench.round_orders([1, 10], 1))

    def test_nothing_measured(self) -> None:
        self.assertEqual({}, bench.summarise([{"hosts": 1}]))

    def test_idle_shares_by_difference(self) -> None:
        self.assertEqual({"pending_scan_share": 0.5, "sync_tick_share": 1.4,
                          "everything_else": 0.7},
                         bench.idle_shares({"as_configured": 2.6,
                                            "without_pending_scan": 2.1,
                                            "without_sync_or_scan": 0.7}))


class TestOptions(base.TestCase):

    def bad(self, *argv: str) -> str:
        stderr = io.StringIO()
        self.useFixture(fixtures.MonkeyPatch("sys.stderr", stderr))
        exc = self.assertRaises(SystemExit, bench.parse_args, list(argv))
        self.assertEqual(1, exc.code)
        return stderr.getvalue()

    def test_defaults_are_the_issue_sizes(self) -> None:
        args = bench.parse_args([])
        self.assertEqual(20000, args.nodes)
        self.assertEqual([1, 5, 10], args.host_counts)
        self.assertEqual(2, args.workers)
        self.assertEqual(50, args.latency_ms)
        self.assertEqual(list(bench.SCENARIOS), args.scenario_list)
        self.assertEqual(1, args.rounds)

    def test_metrics_port_per_host(self) -> None:
        self.assertFalse(bench.parse_args([]).metrics)
        args = bench.parse_args(["--metrics"])
        self.assertTrue(args.metrics)
        workdir = self.useFixture(fixtures.TempDir()).path
        plain, served = (bench.Host(workdir, name, {
            key: 1 for key in ("workers", "heartbeat_interval",
                               "heartbeat_timeout",
                               "sync_power_state_interval",
                               "sync_power_state_workers",
                               "power_state_timeout", "workers_pool_size",
                               "graceful_shutdown_timeout")},
            "sqlite://", metrics_port=port)
            for name, port in (("h01", None), ("h02", 8123)))
        conf = configparser.ConfigParser()
        conf.read(served.config)
        self.assertEqual("8123", conf["metrics"]["port"])
        conf = configparser.ConfigParser()
        conf.read(plain.config)
        self.assertFalse(conf.has_section("metrics"))

    def test_no_scenarios(self) -> None:
        args = bench.parse_args(["--hosts", "1,2", "--scenarios", "none"])
        self.assertEqual([], args.scenario_list)
        self.assertEqual([1, 2], args.host_counts)

    def test_bad_hosts(self) -> None:
        self.assertIn("--hosts must be comma-separated integers, got '1,x'",
                      self.bad("--hosts", "1,x"))
        self.assertIn("--hosts must list integers >= 1",
                      self.bad("--hosts", "0,2"))

    def test_idle_only(self) -> None:
        args = bench.parse_args(["--hosts", "none", "--scenarios", "none",
                                 "--idle-seconds", "60"])
        self.assertEqual([], args.host_counts)
        self.assertEqual(60.0, args.idle_seconds)
        self.assertIn("--scenarios needs host counts",
                      self.bad("--hosts", "none"))
        self.assertIn("--idle-seconds must be >= 0",
                      self.bad("--idle-seconds", "-1"))

    def test_scenarios_need_three_hosts(self) -> None:
        self.assertIn("need a host count >= 3",
                      self.bad("--hosts", "1,2", "--scenarios", "kill"))

    def test_unknown_scenario(self) -> None:
        self.assertIn("unknown scenario(s) reboot; choose from start",
                      self.bad("--scenarios", "reboot"))

    def test_bad_numbers(self) -> None:
        self.assertIn("--nodes must be >= 1", self.bad("--nodes", "0"))
        self.assertIn("--sync-workers must be >= 1",
                      self.bad("--sync-workers", "0"))
        self.assertIn("--rounds must be >= 1", self.bad("--rounds", "0"))
        self.assertIn("--database-name must be letters",
                      self.bad("--database-name", "x;drop"))

# SPDX-License-Identifier: Apache-2.0
"""Prometheus metrics in multiprocess mode, across real forked processes."""

from __future__ import annotations

import os
from typing import Any

from unittest import mock

import fixtures
from prometheus_client import parser
from prometheus_client import values
import testtools

from conductor.common import metrics
from conductor.drivers import base as driver_base
from conductor import task
from tests import base


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                 float]:
    found = {}
    for family in parser.text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = \
                sample.value
    return found


class MetricsFixture(fixtures.Fixture):
    """Metrics enabled in a temporary directory; everything reset after."""

    def _setUp(self) -> None:
        self.useFixture(fixtures.EnvironmentVariable(metrics.ENV))
        self.directory = self.useFixture(fixtures.TempDir()).path
        value_class = values.ValueClass
        self.addCleanup(setattr, values, "ValueClass", value_class)
        self.addCleanup(metrics.disable)
        self.addCleanup(setattr, metrics, "_worker", "master")
        metrics.setup(self.directory)


class TestDisabled(base.TestCase):

    def test_recording_is_a_no_op(self) -> None:
        metrics.disable()
        self.addCleanup(setattr, metrics, "_paused", metrics._paused)
        metrics._paused = None
        self.assertRaises(RuntimeError, metrics.enable)
        self.assertFalse(metrics.enabled())
        metrics.driver_call("fake", "get_power_state", "success", 0.1)
        metrics.nodes_read(1)
        metrics.refresh_nodes(owned=1)
        metrics.flush()


class TestMultiprocess(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.fx = self.useFixture(MetricsFixture())

    def scrape(self) -> dict[Any, float]:
        metrics.flush()
        body, content_type = metrics.exposition()
        self.assertIn("text/plain", content_type)
        return samples(body)

    def test_a_file_still_being_made_is_not_an_error(self) -> None:
        metrics.heartbeat(True)
        # A process just forked has created its file, not sized it yet.
        open(os.path.join(self.fx.directory, "counter_99999.db"),
             "wb").close()
        self.assertEqual(1.0, self.scrape()[("conductor_heartbeats_total",
                                             (("result", "success"),))])

    def test_setup_empties_the_directory_and_sets_the_environment(
            self) -> None:
        stale = os.path.join(self.fx.directory, "counter_1.db")
        with open(stale, "wb") as stream:
            stream.write(b"\0" * 16)
        metrics.setup(self.fx.directory)
        self.assertFalse(os.path.exists(stale))
        self.assertEqual(self.fx.directory, os.environ[metrics.ENV])

    def _in_child(self, fn: Any) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            code = 1
            try:
                fn()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(0, os.waitstatus_to_exitcode(status))

    def test_counters_add_up_across_processes(self) -> None:
        metrics.driver_call("fake", "get_power_state", "success", 0.002)

        def child() -> None:
            metrics.set_worker(1, interval=60)
            for _ in range(3):
                metrics.driver_call("fake", "get_power_state", "success",
                                    0.02)
            metrics.driver_call("fake", "get_power_state", "error", 3.0)
            metrics.rpc_call("get_node", "NodeNotFound")
            metrics.flush()

        self._in_child(child)
        found = self.scrape()
        key = ("conductor_driver_calls_total",
               (("driver", "fake"), ("operation", "get_power_state"),
                ("result", "success")))
        self.assertEqual(4.0, found[key])
        self.assertEqual(5.0, found[(
            "conductor_driver_call_duration_seconds_count",
            (("driver", "fake"), ("operation", "get_power_state")))])
        self.assertEqual(1.0, found[(
            "conductor_driver_call_duration_seconds_bucket",
            (("driver", "fake"), ("le", "0.005"),
             ("operation", "get_power_state")))])
        self.assertEqual(1.0, found[(
            "conductor_rpc_calls_total",
            (("method", "get_node"), ("result", "NodeNotFound")))])

    def test_dead_worker_gauges_dropped_restart_counted(self) -> None:
        def child() -> None:
            metrics.set_worker(1, interval=60)
            metrics.pool(size=8, busy=3)
            metrics.heartbeat(True)

        self._in_child(child)
        gauge = ("conductor_pool_busy", (("worker", "1"),))
        self.assertEqual(3.0, self.scrape()[gauge])
        pids = [int(name.split("_")[-1][:-3])
                for name in os.listdir(self.fx.directory)
                if name.startswith("gauge_livesum_")]
        self.assertEqual(1, len(pids))
        metrics.worker_died(pids[0], 1)
        found = self.scrape()
        self.assertNotIn(gauge, found)
        self.assertEqual(1.0, found[("conductor_worker_restarts_total",
                                     (("worker", "1"),))])
        # Counters of the dead process still count.
        self.assertEqual(1.0, found[("conductor_heartbeats_total",
                                     (("result", "success"),))])
        metrics.worker_died(None, 1, restart=False)
        self.assertEqual(1.0, self.scrape()[(
            "conductor_worker_restarts_total", (("worker", "1"),))])

    def test_calls_wait_for_a_flush(self) -> None:
        metrics.driver_call("fake", "get_power_state", "success", 0.002)
        body, _ = metrics.exposition()
        self.assertNotIn(b"conductor_driver_calls_total{", body)
        # The end of a run that polled nodes flushes them.
        metrics.nodes_read(1)
        body, _ = metrics.exposition()
        self.assertIn(b"conductor_driver_calls_total{", body)

    def test_batched_observations_equal_observe(self) -> None:
        # Pins the prometheus_client internals _observe_many relies on.
        import prometheus_client as prom
        seconds = [0.0, 0.004, 0.005, 0.0051, 0.7, 59.0, 61.0, 1e6]
        direct = prom.Histogram("direct", "d", ["x"],
                                buckets=metrics.CALL_BUCKETS, registry=None)
        for value in seconds:
            direct.labels("y").observe(value)
        for value in seconds:
            metrics.driver_call("d", "op", "success", value)
        found = self.scrape()
        expected = {dict(labels)["le"]: value for (name, labels), value
                    in found.items() if name == "direct_bucket"}
        got = {dict(labels)["le"]: value for (name, labels), value
               in found.items()
               if name == "conductor_driver_call_duration_seconds_bucket"}
        self.assertEqual(expected, got)
        self.assertEqual(found[("direct_sum", (("x", "y"),))], found[(
            "conductor_driver_call_duration_seconds_sum",
            (("driver", "d"), ("operation", "op")))])

    def test_driver_calls_through_call_driver(self) -> None:
        power = mock.Mock(spec=["set_power_state"])
        driver = mock.Mock(power=power)
        node = driver_base.DriverNode("u", "n", "ipmi", {}, None)
        task.call_driver(driver, "set_power_state", node, "power on",
                         timeout=5)
        power.set_power_state.side_effect = ValueError("BMC said no")
        with testtools.ExpectedException(ValueError):
            task.call_driver(driver, "set_power_state", node, "power on",
                             timeout=5)
        found = self.scrape()
        for result in ("success", "error"):
            self.assertEqual(1.0, found[(
                "conductor_driver_calls_total",
                (("driver", "ipmi"), ("operation", "set_power_state"),
                 ("result", result)))])

    def test_node_gauges(self) -> None:
        metrics.set_worker(0, interval=10)
        metrics.refresh_nodes(owned=4, overdue=3, oldest=12.0,
                              maintenance=2)
        found = self.scrape()

        def gauge(name: str) -> float:
            return found[(name, (("worker", "0"),))]

        self.assertEqual(4.0, gauge("conductor_nodes_owned"))
        self.assertEqual(3.0, gauge("conductor_nodes_overdue"))
        self.assertEqual(12.0,
                         gauge("conductor_oldest_power_reading_age_seconds"))
        self.assertEqual(2.0, gauge("conductor_nodes_maintenance"))
        # None leaves a gauge as it was.
        metrics.refresh_nodes(owned=5)
        found = self.scrape()
        self.assertEqual((5.0, 3.0), (gauge("conductor_nodes_owned"),
                                      gauge("conductor_nodes_overdue")))

    def test_periodic_and_other_counters(self) -> None:
        metrics.periodic_run("T.sync", failed=True, seconds=0.2, lag=-1.0)
        metrics.periodic_run("T.sync", failed=False, seconds=0.3, lag=0.5)
        metrics.power_change("detected", 2)
        metrics.power_change("forced", 0)
        metrics.pool_rejected()
        metrics.db_error("OperationalError")
        metrics.notification("baremetal.node.power_set.start", "sent")
        found = self.scrape()
        task = (("task", "T.sync"),)
        self.assertEqual(2.0, found[("conductor_periodic_runs_total", task)])
        self.assertEqual(1.0, found[("conductor_periodic_failures_total",
                                     task)])
        self.assertAlmostEqual(0.5, found[(
            "conductor_periodic_duration_seconds_sum", task)])
        # A negative lag (started early) counts as none.
        self.assertAlmostEqual(0.5, found[(
            "conductor_periodic_start_lag_seconds_sum", task)])
        self.assertEqual(2.0, found[("conductor_power_state_changes_total",
                                     (("kind", "detected"),))])
        self.assertNotIn(("conductor_power_state_changes_total",
                          (("kind", "forced"),)), found)
        self.assertEqual(1.0, found[("conductor_pool_rejected_total",
                                     (("worker", "master"),))])
        self.assertEqual(1.0, found[("conductor_db_errors_total",
                                     (("error", "OperationalError"),))])
        self.assertEqual(1.0, found[(
            "conductor_notifications_total",
            (("event_type", "baremetal.node.power_set.start"),
             ("result", "sent")))])

    def test_disable_and_enable_again(self) -> None:
        metrics.disable()
        metrics.heartbeat(True)
        metrics.enable()
        metrics.heartbeat(True)
        self.assertEqual(1.0, self.scrape()[("conductor_heartbeats_total",
                                             (("result", "success"),))])

    def test_no_node_label_anywhere(self) -> None:
        metrics.driver_call("fake", "get_power_state", "success", 0.1)
        metrics.nodes_read(1)
        labels = {name for (_, found) in self.scrape() for name, _ in found}
        self.assertEqual(set(), labels & {"node", "uuid", "name"})

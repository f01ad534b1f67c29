# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.power_reads, and batches in a power-sync sweep."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Mapping, Sequence

import fixtures

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base as driver_base
from conductor import power_reads
from conductor import power_sync
from conductor import states
from tests import base
from tests.unit import test_power_sync


@dataclasses.dataclass(frozen=True)
class Row:
    uuid: str
    driver: str
    name: str | None = None
    driver_info: Mapping[str, Any] = dataclasses.field(
        default_factory=dict)
    power_state: str | None = None


class BatchPower(test_power_sync.ScriptedPower):
    """ScriptedPower with batch reads; ``batch_answer`` overrides them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.batch_answer: Any = None
        self.deadlines: list[float | None] = []

    def get_power_states(self, nodes: Sequence[driver_base.DriverNode]
                         ) -> Any:
        with self.lock:
            self.batches.append([str(node.name or node.uuid)
                                 for node in nodes])
            self.deadlines.append(deadline.remaining())
        if self.batch_answer is not None:
            return self._answer(self.batch_answer, nodes[0])
        found: dict[str, Any] = {}
        for node in nodes:
            try:
                found[node.uuid] = self._answer(
                    self.answers.get(str(node.name), self.default), node)
            except Exception as exc:
                found[node.uuid] = exc
        return found


class BatchDriver(driver_base.BaseDriver):
    power: BatchPower

    def __init__(self) -> None:
        self.power = BatchPower()


class PlanTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.drivers: dict[str, driver_base.BaseDriver] = {
            "batch": BatchDriver(), "single": test_power_sync.ScriptedDriver()}

    def test_batches_are_bounded_and_keep_the_order(self) -> None:
        rows = [Row("b%d" % i, "batch") for i in range(5)]
        rows.insert(1, Row("s0", "single"))
        units = power_reads.plan(rows, self.drivers, batch_size=2)
        self.assertEqual(
            [("batch", ("b0", "b1"), True), ("single", ("s0",), False),
             ("batch", ("b2", "b3"), True), ("batch", ("b4",), True)],
            [(u.driver, tuple(r.uuid for r in u.rows), u.batched)
             for u in units])

    def test_drivers_without_batch_reads_are_read_one_by_one(self) -> None:
        rows = [Row("s%d" % i, "single") for i in range(3)]
        units = power_reads.plan(rows, self.drivers, batch_size=64)
        self.assertEqual([False] * 3, [u.batched for u in units])
        self.assertFalse(power_reads.supports_batch(self.drivers["single"]))
        self.assertTrue(power_reads.supports_batch(self.drivers["batch"]))

    def test_batch_size_one_reads_every_node_alone(self) -> None:
        rows = [Row("b%d" % i, "batch") for i in range(2)]
        units = power_reads.plan(rows, self.drivers, batch_size=1)
        self.assertEqual([False, False], [u.batched for u in units])

    def test_bad_batch_size_is_refused(self) -> None:
        for bad in (0, -1, True, 1.5):
            exc = self.assertRaises(ValueError, power_reads.plan, [],
                                    self.drivers, bad)
            self.assertIn("batch_size must be an integer >= 1", str(exc))

    def test_a_unit_names_itself_for_logs(self) -> None:
        unit = power_reads.Unit("batch", (Row("b0", "batch"),
                                          Row("b1", "batch")), True)
        self.assertEqual("a batch of 2 batch node(s) from b0", unit.uuid)
        self.assertEqual("s0", power_reads.Unit(
            "single", (Row("s0", "single"),), False).uuid)


class ReadTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.driver = BatchDriver()
        self.power = self.driver.power
        self.drivers: dict[str, driver_base.BaseDriver] = {
            "batch": self.driver}
        self.rows = tuple(Row("u%d" % i, "batch", name="n%d" % i)
                          for i in range(3))
        self.unit = power_reads.Unit("batch", self.rows, True)
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.INFO))

    def read(self) -> dict[str, tuple[str | None, str | None]]:
        reads = power_reads.read(self.drivers, self.unit, timeout=5.0)
        self.assertEqual([row.uuid for row in self.rows],
                         [r.row.uuid for r in reads])
        return {r.row.uuid: (r.state, r.error) for r in reads}

    def test_states_and_per_node_failures(self) -> None:
        self.power.answers = {
            "n1": exceptions.PowerStateFailure(err="BMC n1 is silent"),
            "n2": states.POWER_OFF}
        self.assertEqual({"u0": (states.POWER_ON, None),
                          "u1": (None, "BMC n1 is silent"),
                          "u2": (states.POWER_OFF, None)}, self.read())
        self.assertEqual([["n0", "n1", "n2"]], self.power.batches)
        self.assertEqual([], self.power.gets)

    def test_the_batch_runs_under_the_deadline(self) -> None:
        self.read()
        left = self.power.deadlines[0]
        assert left is not None
        self.assertTrue(4.0 < left <= 5.0, left)

    def test_missing_unknown_and_invalid_answers(self) -> None:
        self.power.batch_answer = lambda node: {
            "u0": "sideways", "u1": states.ERROR, "stranger": "power on"}
        found = self.read()
        self.assertEqual(
            (None, "driver batch returned an invalid power state "
                   "'sideways'"), found["u0"])
        self.assertEqual((None, "the BMC reports power state 'error'"),
                         found["u1"])
        self.assertEqual(
            (None, "driver batch gave no answer for this node in its "
                   "batch read"), found["u2"])
        self.assertIn("answered for 1 node(s) it was not asked about "
                      "(ignored): stranger", self.logs.output)

    def test_an_answer_that_is_not_a_mapping_fails_every_node(self) -> None:
        self.power.batch_answer = lambda node: ["power on"]
        found = self.read()
        self.assertEqual(
            {(None, "driver batch returned list from get_power_states "
                    "instead of a mapping of node uuid to state")},
            set(found.values()))

    def test_a_batch_that_raises_fails_every_node(self) -> None:
        self.power.batch_answer = RuntimeError("BMC network down")
        found = self.read()
        self.assertEqual(
            {(None, "Batch power state read of 3 node(s) failed: "
                    "RuntimeError: BMC network down")},
            set(found.values()))

    def test_a_single_read(self) -> None:
        unit = power_reads.Unit("batch", (self.rows[0],), False)
        self.power.answers = {"n0": "power of"}
        reads = power_reads.read(self.drivers, unit, timeout=5.0)
        self.assertEqual(["driver batch returned an invalid power state "
                          "'power of'"], [r.error for r in reads])
        self.assertEqual(["n0"], self.power.gets)

    def test_abandoned_texts(self) -> None:
        self.assertEqual(
            ["Batch power state read of 3 node(s) did not return within "
             "2.0 seconds"] * 3,
            [r.error for r in power_reads.abandoned(self.unit, 2.0)])
        single = power_reads.Unit("batch", (self.rows[0],), False)
        self.assertEqual(
            ["Power state read did not return within 2.0 seconds"],
            [r.error for r in power_reads.abandoned(single, 2.0)])


class SweepTest(test_power_sync.SyncTestCase):
    """A power-sync sweep over a batch driver and a per-node driver."""

    def setUp(self) -> None:
        super().setUp()
        self.db.register_conductor("h", 0, ["scripted", "batch"])
        self.batch = BatchDriver()

    def sweep(self, batch_size: int, timeout: float = 5.0
              ) -> power_sync.SweepResult:
        syncer = power_sync.PowerSync(
            self.db, {"scripted": self.driver, "batch": self.batch},
            self.rings(), self.pool,
            power_sync.SyncSettings(workers=4, timeout=timeout,
                                    max_retries=2, force=False,
                                    batch_size=batch_size),
            self.stop, watchdog_interval=0.01, now_func=self.clock,
            since=self.now)
        return syncer.sync()

    def test_batches_and_single_reads_in_one_sweep(self) -> None:
        self.nodes(*["b%d" % i for i in range(5)], driver="batch")
        self.nodes("s0", "s1")
        self.batch.power.answers = {
            "b3": exceptions.PowerStateFailure(err="b3 is silent")}
        result = self.sweep(batch_size=2)
        self.assertEqual(7, result.nodes)
        self.assertEqual(1, result.failures)
        self.assertEqual([2, 2, 1], sorted(
            (len(b) for b in self.batch.power.batches), reverse=True))
        self.assertEqual(sorted("b%d" % i for i in range(5)),
                         sorted(n for b in self.batch.power.batches
                                for n in b))
        self.assertEqual([], self.batch.power.gets)
        self.assertEqual(["s0", "s1"], sorted(self.power.gets))
        for name in ("b0", "b1", "b2", "b4", "s0", "s1"):
            self.assertEqual(states.POWER_ON, self.get(name).power_state)
        self.assertEqual("b3 is silent", self.get("b3").last_error)
        self.assertEqual(1, self.get("b3").power_sync_failures)

    def test_a_hung_batch_fails_only_its_nodes(self) -> None:
        self.nodes("b0", "b1", "b2", driver="batch")
        release = threading.Event()
        self.addCleanup(release.set)

        def answer(first: driver_base.DriverNode) -> Any:
            # NOTE: the batch of b0 hangs whatever place b0 has in it.
            [batch] = [b for b in self.batch.power.batches
                       if first.name in b]
            if "b0" in batch:
                release.wait(10)
            return {self.get(name).uuid: states.POWER_ON for name in batch}

        self.batch.power.batch_answer = answer
        result = self.sweep(batch_size=1 + 1, timeout=0.2)
        # NOTE: the nodes are batched (2 + 1) in the order they are due.
        [together] = [b for b in self.batch.power.batches if "b0" in b]
        self.assertEqual([1, 2], sorted(map(len, self.batch.power.batches)))
        self.assertEqual(len(together), result.failures)
        for name in together:
            self.assertEqual("Batch power state read of %d node(s) did not "
                             "return within 0.2 seconds" % len(together),
                             self.get(name).last_error)
        for name in {"b0", "b1", "b2"} - set(together):
            self.assertEqual(states.POWER_ON, self.get(name).power_state)
            self.assertIsNone(self.get(name).last_error)

# SPDX-License-Identifier: Apache-2.0
"""The code the documentation shows works as shown."""

from __future__ import annotations

import importlib.util
import os
import types

from conductor.drivers import base as driver_base
from conductor.drivers import loader
from conductor import periodics
from conductor import power_reads
from conductor import states
from tests import base
from tests import fakes

_DOC = os.path.join(os.path.dirname(__file__), "..", "..", "doc", "source")
_EXAMPLE = os.path.join(_DOC, "examples", "acme_periodics.py")
_BATCH_EXAMPLE = os.path.join(_DOC, "examples", "acme_batch.py")


def _load_example(path: str = _EXAMPLE) -> types.ModuleType:
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestPeriodicsExample(base.TestCase):
    """doc/source/periodics.rst: its Acme driver, as a worker uses it."""

    def test_the_page_includes_the_tested_module(self) -> None:
        with open(os.path.join(_DOC, "periodics.rst")) as stream:
            page = stream.read()
        self.assertIn(".. literalinclude:: examples/acme_periodics.py\n",
                      page)
        self.assertIn(":pyobject: AcmePower.check_clock", page)
        # Every Python block of the page that reads an option comes from
        # the example module, none is typed into the page.
        self.assertNotIn("CONF.acme", page)

    def test_a_worker_collects_and_runs_its_tasks(self) -> None:
        example = _load_example()
        driver = example.AcmeDriver()
        # What a worker does at start (ConductorService._collect_periodics).
        specs = {spec.name: spec for spec in periodics.collect(
            *loader.interfaces(driver), driver_name="acme")}
        self.assertEqual(["AcmePower.check_clock[acme]",
                          "AcmePower.refresh_sessions"], sorted(specs))
        sessions = specs["AcmePower.refresh_sessions"]
        self.assertEqual((600, True), (sessions.spacing, sessions.enabled))
        clock = specs["AcmePower.check_clock[acme]"]
        self.assertEqual(3600, clock.spacing)
        # The options are read when the tasks are collected.
        self.config(keep_sessions=False, session_refresh_interval=30,
                    group="acme")
        specs = {spec.name: spec for spec in periodics.collect(
            *loader.interfaces(driver), driver_name="acme")}
        self.assertEqual((30, False),
                         (specs["AcmePower.refresh_sessions"].spacing,
                          specs["AcmePower.refresh_sessions"].enabled))
        # And the tasks run.
        driver.power.refresh_sessions()
        node = driver_base.DriverNode(
            uuid="u1", name="n1", driver="acme",
            driver_info={"acme_address": "10.0.0.1"}, power_state=None)
        driver.power.check_clock(periodics.NodeTask(
            node=node, purpose="checking the BMC clock"))
        driver.power.validate(node)


class TestBatchExample(base.TestCase):
    """doc/source/driver-api.rst: its batch driver, as power sync uses it."""

    def test_the_page_includes_the_tested_module(self) -> None:
        with open(os.path.join(_DOC, "driver-api.rst")) as stream:
            page = stream.read()
        self.assertIn(".. literalinclude:: examples/acme_batch.py\n", page)
        self.assertIn(":pyobject: AcmeBatchPower.get_power_states", page)

    def test_power_sync_reads_it_in_batches(self) -> None:
        example = _load_example(_BATCH_EXAMPLE)
        gateway = example.Gateway({"10.0.0.%d" % i: "on" if i % 2 else "off"
                                   for i in range(5)})
        driver = example.AcmeBatchDriver(gateway)
        rows = [fakes.driver_node("acme", "n%d" % i, uuid="u%d" % i,
                                  driver_info={"acme_address": "10.0.0.%d"
                                               % i}) for i in range(6)]
        units = power_reads.plan(rows, {"acme": driver}, batch_size=4)
        self.assertEqual([4, 2], [len(unit.rows) for unit in units])
        reads = [read for unit in units
                 for read in power_reads.read({"acme": driver}, unit, 5.0)]
        self.assertEqual(
            [states.POWER_OFF, states.POWER_ON, states.POWER_OFF,
             states.POWER_ON, states.POWER_OFF, None],
            [read.state for read in reads])
        self.assertEqual("gateway has no answer for BMC 10.0.0.5",
                         reads[5].error)
        self.assertEqual(2, len(gateway.calls))

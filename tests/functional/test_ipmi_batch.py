# SPDX-License-Identifier: Apache-2.0
"""Batch power reads of the ipmi driver: real ipmipower, real ipmi_sim.

Each simulated BMC has its own loopback address on port 623, as a fleet
of real BMCs does.
"""

from __future__ import annotations

from concurrent import futures
import logging
import time

import fixtures
import psutil

from conductor.common import exceptions
from conductor.drivers import base as drivers_base
from conductor.drivers import ipmi
from conductor import states
from tests import base
from tests.functional import base as functional_base
from tests.functional import bmc
from tests.functional import test_power_sync


class BatchReadTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.config(power_state_timeout=10.0, group="conductor")
        self.config(freeipmi_workaround_flags=["opensesspriv"],
                    freeipmi_session_timeout=2.0, group="ipmi")
        bmc.require_binary("ipmipower", "apt-get install freeipmi-tools")
        self.logs = self.useFixture(fixtures.FakeLogger(level=logging.DEBUG))

    def sims(self, count: int) -> bmc.IPMISims:
        sims = self.useFixture(bmc.IPMISims(
            count, own_address=True,
            power=["on", "off"] * (count // 2) + ["on"] * (count % 2)))
        self.addCleanup(lambda: self.assertNotIn(sims.password,
                                                 self.logs.output))
        return sims

    def nodes(self, sims: bmc.IPMISims) -> list[drivers_base.DriverNode]:
        return [bmc.driver_node(sims.driver_info(i), name="node-%d" % i)
                for i in range(sims.count)]

    def test_50_bmcs_with_3_stopped(self) -> None:
        sims = self.sims(50)
        stopped = (4, 17, 41)
        for index in stopped:
            sims.stop(index)
        nodes = self.nodes(sims)
        power = ipmi.IPMIDriver().power
        self.assertIsInstance(power, ipmi.IPMIBatchPower)
        assert isinstance(power, ipmi.IPMIBatchPower)
        started = time.monotonic()
        found = power.get_power_states(nodes)
        # The stopped BMCs cost one session timeout, not one each.
        self.assertLess(time.monotonic() - started, 6)
        self.assertEqual({node.uuid for node in nodes}, set(found))
        read = {i for i, node in enumerate(nodes)
                if isinstance(found[node.uuid], str)}
        self.assertEqual(set(range(50)) - set(stopped), read)
        for index in read:
            expected = (states.POWER_ON if sims.power(index) == "on"
                        else states.POWER_OFF)
            self.assertEqual(expected, found[nodes[index].uuid])
        for index in stopped:
            error = found[nodes[index].uuid]
            self.assertIsInstance(error, exceptions.PowerStateFailure)
            self.assertIn("node %s at BMC %s:623 failed: no answer from the "
                          "BMC" % (nodes[index].uuid, sims.addresses[index]),
                          str(error))

    def test_wrong_password_fails_only_that_node(self) -> None:
        sims = self.sims(5)
        nodes = self.nodes(sims)
        nodes[2] = bmc.driver_node(sims.driver_info(
            2, ipmi_password="wrong-pass"), name="node-2")
        found = ipmi.IPMIBatchPower().get_power_states(nodes)
        self.assertEqual(
            [states.POWER_ON, states.POWER_OFF, states.POWER_OFF,
             states.POWER_ON],
            [found[nodes[i].uuid] for i in (0, 1, 3, 4)])
        error = found[nodes[2].uuid]
        self.assertIsInstance(error, exceptions.PowerStateFailure)
        self.assertIn("refused user 'admin' or its password", str(error))
        self.assertNotIn("wrong-pass", str(error))
        self.assertNotIn("wrong-pass", self.logs.output)

    def test_password_is_never_on_argv_or_in_the_environment(self) -> None:
        sims = self.sims(4)
        sims.stop(3)        # keeps ipmipower running for a while
        me = psutil.Process()
        with futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(ipmi.IPMIBatchPower().get_power_states,
                                 self.nodes(sims))
            child = bmc.wait_for(
                lambda: [p for p in me.children()
                         if p.name() == "ipmipower"], 2.0,
                "ipmipower was not started")[0]
            cmdline = " ".join(child.cmdline())
            environ = repr(child.environ())
            found = future.result(timeout=10)
        self.assertIn("--config-file=/dev/fd/", cmdline)
        self.assertNotIn(sims.password, cmdline)
        self.assertNotIn(sims.password, environ)
        for value in found.values():
            self.assertNotIn(sims.password, str(value))
        self.assertEqual([], [p for p in me.children()
                              if p.name() == "ipmipower"])

    def test_actions_still_work_next_to_batches(self) -> None:
        sims = self.sims(2)
        nodes = self.nodes(sims)
        power = ipmi.IPMIBatchPower()
        power.set_power_state(nodes[1], states.POWER_ON)
        power.reboot(nodes[0])
        bmc.wait_for(lambda: sims.actions(0) == ["power 0", "power 1"], 5,
                     "node 0 was not power-cycled: %s" % sims.actions(0))
        power.set_power_state(nodes[0], states.POWER_OFF)
        found = power.get_power_states(nodes)
        self.assertEqual({nodes[0].uuid: states.POWER_OFF,
                          nodes[1].uuid: states.POWER_ON}, found)


class ConductorBatchTest(test_power_sync.PowerSyncTestCase):
    """ipmi nodes polled in batches by a real conductor with 2 workers."""

    def test_sweep_reads_in_batches_and_hides_the_password(self) -> None:
        bmc.require_binary("ipmipower", "apt-get install freeipmi-tools")
        sims = self.useFixture(bmc.IPMISims(12, own_address=True,
                                            power=["on", "off"] * 6))
        sims.stop(5)
        uuids = [node.uuid for node in self.db.import_nodes([
            {"name": "ipmi%02d" % i, "driver": "ipmi",
             "driver_info": sims.driver_info(i)} for i in range(12)])]
        options = test_power_sync._options(
            self.workdir, ipmi={"freeipmi_workaround_flags": "opensesspriv",
                                "freeipmi_session_timeout": 1.0},
            conductor={"power_state_timeout": 5,
                       "power_state_batch_size": 4,
                       "power_state_sync_max_retries": 100})
        options["DEFAULT"]["enabled_drivers"] = "fake,ipmi"
        conductor = self.start_conductor(options)
        seen: set[str] = set()

        def all_read() -> bool:
            for worker in conductor.children():
                try:
                    for child in worker.children():
                        seen.add(" ".join(child.cmdline()))
                        seen.add(repr(child.environ()))
                except psutil.Error:
                    pass
            nodes = [self.node(u) for u in uuids]
            return (all(n.power_state is not None for i, n in
                        enumerate(nodes) if i != 5)
                    and nodes[5].last_error is not None)
        functional_base.wait_for(all_read, 60, "every node read once")
        for i, uuid in enumerate(uuids):
            node = self.node(uuid)
            if i == 5:
                self.assertIn("no answer from the BMC", node.last_error)
                self.assertIsNone(node.power_state)
            else:
                self.assertEqual(states.POWER_ON if i % 2 == 0
                                 else states.POWER_OFF, node.power_state)
                self.assertIsNone(node.last_error)
        self.assertTrue(any("ipmipower" in text for text in seen), seen)
        config = conductor.config_file
        outputs = [conductor.log()]
        outputs += [self.run_manage(config, "node", "show", uuid,
                                    "--format", "json").stdout
                    for uuid in uuids[4:6]]
        outputs.append(self.run_manage(config, "status", "--format",
                                       "json").stdout)
        outputs += sorted(seen)
        for text in outputs:
            self.assertNotIn(sims.password, text)
        # Read in batches (of at most 4), never with ipmitool.
        self.assertRegex(conductor.log(),
                         r"Running ipmipower for [234] host\(s\)")
        self.assertNotIn("ipmitool status", conductor.log())

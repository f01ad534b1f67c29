# SPDX-License-Identifier: Apache-2.0
"""Versioned notifications: payloads, the sending thread, the call sites."""

from __future__ import annotations

import threading
from typing import Any

import fixtures
from oslo_config import cfg

from conductor.common import exceptions
from conductor.common import metrics
from conductor.common import rpc
from conductor import notifications
from conductor import states
from tests import base
from tests.unit.common import test_metrics
from tests.unit import test_power_actions
from tests.unit import test_power_sync


class Recorder:
    """Stands in for an oslo_messaging.Notifier."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = fail
        self.event = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def _send(self, priority: str, event_type: str,
              payload: dict[str, Any]) -> None:
        self.release.wait(base.WAIT)
        if self.fail:
            raise RuntimeError("broker gone")
        self.sent.append((priority, event_type, payload))
        self.event.set()

    def info(self, ctxt: Any, event_type: str,
             payload: dict[str, Any]) -> None:
        self._send("info", event_type, payload)

    def error(self, ctxt: Any, event_type: str,
              payload: dict[str, Any]) -> None:
        self._send("error", event_type, payload)


class Node:
    uuid = "u-1"
    name = "n1"
    driver = "fake"
    power_state = states.POWER_OFF
    target_power_state = states.POWER_ON
    driver_info = {"ipmi_password": "secret"}


class SenderTestCase(base.TestCase):

    def start(self, recorder: Recorder, size: int = 10
              ) -> notifications.Sender:
        sender = notifications.Sender(recorder, size)
        sender.start()
        notifications.install(sender)
        self.addCleanup(notifications.install, None)
        self.addCleanup(sender.stop, base.WAIT)
        return sender


class TestSender(SenderTestCase):

    def test_events_and_payloads(self) -> None:
        recorder = Recorder()
        sender = self.start(recorder)
        node = Node()
        notifications.power_set("start", node, states.POWER_ON)
        notifications.power_set("error", node, states.POWER_ON, "BMC said no")
        notifications.power_state_corrected(node, states.POWER_ON,
                                            states.POWER_OFF)
        sender.stop(base.WAIT)
        self.assertEqual(
            [("info", "baremetal.node.power_set.start"),
             ("error", "baremetal.node.power_set.error"),
             ("info", "baremetal.node.power_state_corrected.success")],
            [(p, e) for p, e, _ in recorder.sent])
        payload = recorder.sent[1][2]
        self.assertEqual(
            {"conductor_object.name": "NodeSetPowerStatePayload",
             "conductor_object.namespace": "conductor",
             "conductor_object.version": "1.0",
             "conductor_object.data": {
                 "uuid": "u-1", "name": "n1", "driver": "fake",
                 "power_state": states.POWER_OFF,
                 "target_power_state": states.POWER_ON,
                 "last_error": "BMC said no"}}, payload)
        data = recorder.sent[2][2]["conductor_object.data"]
        self.assertEqual((states.POWER_OFF, states.POWER_ON),
                         (data["power_state"], data["from_power_state"]))
        self.assertNotIn("secret", repr(recorder.sent))

    def test_full_queue_drops_and_never_blocks(self) -> None:
        recorder = Recorder()
        recorder.release.clear()
        logger = self.useFixture(fixtures.FakeLogger())
        sender = self.start(recorder, size=1)
        notifications.power_set("start", Node(), states.POWER_ON)
        # The first one is being sent (blocked); one waits; two dropped.
        self.assertTrue(base.wait_until(lambda: sender._queue.empty()))
        for _ in range(3):
            notifications.power_set("end", Node(), states.POWER_ON)
        self.assertIn("Notification queue full; dropping "
                      "baremetal.node.power_set.end", logger.output)
        recorder.release.set()
        sender.stop(base.WAIT)
        self.assertEqual(2, len(recorder.sent))

    def test_a_failed_send_is_logged_and_the_next_one_sent(self) -> None:
        recorder = Recorder(fail=True)
        logger = self.useFixture(fixtures.FakeLogger())
        sender = self.start(recorder)
        notifications.power_set("start", Node(), states.POWER_ON)
        self.assertTrue(base.wait_until(
            lambda: "Could not send notification" in logger.output))
        recorder.fail = False
        notifications.power_set("end", Node(), states.POWER_ON)
        sender.stop(base.WAIT)
        self.assertEqual(["baremetal.node.power_set.end"],
                         [e for _, e, _ in recorder.sent])

    def test_without_a_sender_nothing_happens(self) -> None:
        notifications.install(None)
        notifications.power_set("start", Node(), states.POWER_ON)
        notifications.power_state_corrected(Node(), None, states.POWER_ON)


class TestFromConf(base.TestCase):

    def opts(self, **values: Any) -> cfg.ConfigOpts:
        for name, value in values.items():
            self.config(**{name: value}, group="notifications")
        return self.conf

    def test_disabled(self) -> None:
        self.assertIsNone(notifications.Sender.from_conf(self.opts(), "h"))

    def test_enabled_without_transport_warns(self) -> None:
        logger = self.useFixture(fixtures.FakeLogger())
        self.assertIsNone(notifications.Sender.from_conf(
            self.opts(enabled=True), "h"))
        self.assertIn("[notifications] enabled is set but no transport",
                      logger.output)

    def test_enabled_with_transport(self) -> None:
        rpc.register_opts(self.conf)
        self.config(transport_url="fake:/")
        conf = self.opts(enabled=True, topics=["t1"])
        sender = notifications.Sender.from_conf(conf, "h")
        assert sender is not None
        self.addCleanup(sender.stop, 1)
        notifier = sender._notifier
        self.assertEqual("conductor.h", notifier.publisher_id)
        self.assertEqual(["t1"], notifier._topics)
        self.assertEqual(3, notifier.retry)


class TestPowerActionsNotify(test_power_actions.ActionsTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.recorder = Recorder()
        self.sender = notifications.Sender(self.recorder, 10)
        self.sender.start()
        notifications.install(self.sender)
        self.addCleanup(notifications.install, None)
        self.addCleanup(self.sender.stop, base.WAIT)

    def events(self) -> list[str]:
        self.sender.stop(base.WAIT)
        return [e for _, e, _ in self.recorder.sent]

    def test_start_end(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.actions.apply(uuid)
        self.assertEqual(["baremetal.node.power_set.start",
                          "baremetal.node.power_set.end"], self.events())
        data = self.recorder.sent[0][2]["conductor_object.data"]
        self.assertEqual((uuid, "a", states.POWER_ON),
                         (data["uuid"], data["name"],
                          data["target_power_state"]))

    def test_start_error(self) -> None:
        uuid = self.node("a", states.POWER_ON)
        self.power.set_power_state.side_effect = \
            exceptions.PowerStateFailure(err="BMC refused")
        self.actions.apply(uuid)
        self.assertEqual(["baremetal.node.power_set.start",
                          "baremetal.node.power_set.error"], self.events())
        data = self.recorder.sent[1][2]["conductor_object.data"]
        self.assertEqual("power on failed: BMC refused", data["last_error"])


class TestPowerSyncNotify(test_power_sync.SyncTestCase):
    """A drift notified and counted, with and without force."""

    def setUp(self) -> None:
        super().setUp()
        self.nodes("drifted", power_state=states.POWER_ON)
        self.power.answers["drifted"] = states.POWER_OFF
        self.recorder = Recorder()
        self.sender = notifications.Sender(self.recorder, 10)
        self.sender.start()
        notifications.install(self.sender)
        self.addCleanup(notifications.install, None)
        self.addCleanup(self.sender.stop, base.WAIT)
        self.useFixture(test_metrics.MetricsFixture())

    def sent(self) -> list[tuple[str, dict[str, Any]]]:
        self.sender.stop(base.WAIT)
        return [(e, p["conductor_object.data"])
                for _, e, p in self.recorder.sent]

    def changes(self) -> dict[str, float]:
        found = test_metrics.samples(metrics.exposition()[0])
        return {dict(labels)["kind"]: value
                for (name, labels), value in found.items()
                if name == "conductor_power_state_changes_total"}

    def test_detected_drift(self) -> None:
        self.syncer(force=False).sync()
        [(event, data)] = self.sent()
        self.assertEqual("baremetal.node.power_state_corrected.success",
                         event)
        self.assertEqual(("drifted", states.POWER_ON, states.POWER_OFF),
                         (data["name"], data["from_power_state"],
                          data["power_state"]))
        self.assertEqual({"detected": 1.0}, self.changes())

    def test_forced_drift(self) -> None:
        self.syncer(force=True).sync()
        sent = self.sent()
        self.assertEqual(["baremetal.node.power_set.start",
                          "baremetal.node.power_set.end"],
                         [event for event, _ in sent])
        self.assertEqual(states.POWER_ON, sent[0][1]["target_power_state"])
        self.assertEqual({"forced": 1.0}, self.changes())

# SPDX-License-Identifier: Apache-2.0
"""RPC input bounds, end to end: real conductors, real RabbitMQ.

* ``forwarded_by`` is believed only when it names another live host, so
  a caller cannot make a host act on a node it does not own.
* A call whose reply queue is gone delays a graceful stop by at most
  ``kombu_missing_consumer_retry_timeout`` (5 s), not oslo.messaging's
  60 s.
* A message larger than the broker's ``max_message_size`` never reaches
  the conductor (a PRIVATE RabbitMQ configured with a 1 MiB limit).
"""

from __future__ import annotations

import signal
import time

import oslo_messaging as messaging
import psutil

from conductor.common import exceptions
from conductor import ownership
from conductor import states
from tests.functional import base
from tests.functional import test_rpc


class TestForwardedBy(test_rpc.RpcTestCase):

    def test_only_a_live_peer_may_claim_to_forward(self) -> None:
        db_fixture = self.useFixture(base.Database("mysql"))
        db = db_fixture.connect()
        self.start("ha", db_fixture, workers=1)
        self.start("hb", db_fixture, workers=1)
        view = ownership.Rings(db, "probe", 0,
                               heartbeat_timeout=test_rpc.HEARTBEAT_TIMEOUT,
                               reset_interval=1)
        nodes = [db.create_node({"driver": "fake", "name": "n%02d" % i})
                 for i in range(20)]
        view.refresh(force=True)
        of_b = [n for n in nodes if view.owner_host(n.uuid) == "hb"][0]
        api = self.api()
        # Sent to ha, claiming to come from a host that does not exist,
        # from ha itself, or with an oversized name: refused, nothing
        # recorded, the node still hb's.
        for forwarded_by, text in (("hz", "'hz' is not a live conductor"),
                                   ("ha", "names this host (ha)"),
                                   ("x" * 1000000, "1000000 characters")):
            exc = self.assertRaises(
                exceptions.InvalidParameterValue, api.set_power_state,
                of_b.uuid, "on", host="ha", forwarded_by=forwarded_by)
            self.assertIn(text, str(exc))
            self.assertIsNone(db.get_node(of_b.uuid).target_power_state)
        # A real forward (from hb, live) is still handled where it lands.
        done = api.set_power_state(of_b.uuid, "on", wait=True, host="ha",
                                   forwarded_by="hb")
        self.assertEqual(states.POWER_ON, done["power_state"])


class TestStopWithOrphanedCall(test_rpc.RpcTestCase):

    #: The retry to a vanished reply queue (5 s) plus the stop itself.
    BOUND = 12

    def test_a_gone_reply_queue_does_not_hold_the_stop(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        # NOTE: oslo.messaging's own default, to show the stop is bounded
        # by the reply retry, not by this.
        conductor = self.start("ha", db_fixture, workers=1,
                               DEFAULT={"graceful_shutdown_timeout": 60})
        gone = test_rpc.publish_orphaned_calls(self.vhost.url, "nope", 1)
        base.wait_for(lambda: "get_node: Node nope could not be found"
                      in conductor.log(), 20, "the orphaned call handled")
        started = time.monotonic()
        conductor.signal(signal.SIGTERM)
        self.assertEqual(0, conductor.wait_exit(90))
        took = time.monotonic() - started
        self.assertLess(took, self.BOUND, "stopped after %.1fs" % took)
        self.assertIn("due to a missing queue (%s). Abandoning" % gone,
                      conductor.log())


class PrivateRabbitWithLimit(test_rpc.PrivateRabbitMQ):
    """A private RabbitMQ refusing messages over 1 MiB."""

    CONFIG = "max_message_size = %d\n" % (1024 * 1024)


class TestOversizedMessage(test_rpc.RpcTestCase):

    def broker(self) -> test_rpc.RabbitVhost | test_rpc.PrivateRabbitMQ:
        return PrivateRabbitWithLimit()

    def test_refused_by_the_broker_before_the_conductor(self) -> None:
        db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))
        conductor = self.start("ha", db_fixture, workers=1)
        db = db_fixture.connect(upgrade=False)
        node = db.create_node({"driver": "fake", "name": "n1"})
        api = self.api(timeout=5)
        self.assertEqual(node.uuid, api.get_node("n1")["uuid"])
        [worker] = conductor.children()
        before = worker.memory_info().rss
        self.assertRaises((messaging.MessagingException,
                           exceptions.ConductorException),
                          api.get_node, "y" * (8 * 1024 * 1024))
        # The conductor never saw it (no answer, no log line for it), its
        # memory did not grow, and it answers the next call.
        fresh = self.api(timeout=20)
        self.assertEqual(node.uuid, fresh.get_node("n1")["uuid"])
        self.assertNotIn("y" * 100, conductor.log())
        self.assertLess(psutil.Process(worker.pid).memory_info().rss
                        - before, 4 * 1024 * 1024)

# SPDX-License-Identifier: Apache-2.0
"""Fencing after a database outage: two hosts never act on one node.

Two real conductors (hosts h1 and h2, one worker each) share a PRIVATE
MariaDB this test starts, kills and restarts (never the machine's shared
server). Slow power actions are in flight on both hosts when the
database goes away for longer than ``heartbeat_timeout``; when it comes
back, every heartbeat in it is old. The fake driver's call log
(``fake_call_log``, one line per power change, with the calling pid)
then tells whether any node received changes from both hosts.
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

import fixtures
import sqlalchemy as sa

from conductor.db import api as db_api
from conductor.db import migration
from conductor import states
from tests.functional import base
from tests.functional import services

#: h1 beats often, h2 seldom: when the database is back, h1 reaches it
#: first and finds h2's heartbeat older than the timeout.
HEARTBEAT_INTERVAL = {"h1": 1, "h2": 5}
HEARTBEAT_TIMEOUT = 8
#: Each BMC call takes this long at the fake BMC.
LATENCY_MS = 25000
#: A change is reported by reads this long after it started (a power
#: transition outlasts the call that asked for it).
SETTLE_MS = 120000
#: The outage: well past heartbeat_timeout, shorter than an action.
OUTAGE = HEARTBEAT_TIMEOUT + 4
NODES = 16


class PrivateMariaDB(fixtures.Fixture):
    """A private MariaDB server with one empty database (``url``)."""

    def _setUp(self) -> None:
        workdir = self.useFixture(fixtures.TempDir()).path
        try:
            self.server = services.MariaDB(workdir)
            self.addCleanup(self.server.stop)
            self.server.start()
        except services.ServiceError as exc:
            raise AssertionError("cannot run the private MariaDB this test "
                                 "needs: %s" % exc)
        engine = sa.create_engine(self.server.admin_url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE DATABASE fencing CHARACTER SET "
                                 "utf8mb4"))
        engine.dispose()
        self.url = self.server.admin_url + "fencing"


def calls_by_node(path: str) -> dict[str, list[dict[str, Any]]]:
    """The fake driver's call log, per node, in call order."""
    found: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    if os.path.exists(path):
        with open(path) as stream:
            for line in stream:
                entry = json.loads(line)
                found[entry["node"]].append(entry)
    return found


class TestFencingAfterOutage(base.FunctionalTestCase):

    def options(self, host: str, url: str) -> dict[str, dict[str, Any]]:
        state = os.path.join(self.workdir, host)
        os.makedirs(state)
        return {
            "DEFAULT": {"host": host, "state_path": state,
                        "enabled_drivers": "fake",
                        "graceful_shutdown_timeout": 5},
            "conductor": {"workers": 1,
                          "heartbeat_interval": HEARTBEAT_INTERVAL[host],
                          "heartbeat_timeout": HEARTBEAT_TIMEOUT,
                          "hash_ring_reset_interval": 1,
                          "sync_power_state_interval": 0,
                          "pending_action_interval": 0.5,
                          "power_state_timeout": 60,
                          "power_request_timeout": 0},
            "database": {"connection": url},
        }

    def test_no_node_gets_changes_from_two_hosts(self) -> None:
        mariadb = self.useFixture(PrivateMariaDB())
        db = db_api.Connection.create(mariadb.url)
        self.addCleanup(db.dispose)
        migration.upgrade(db.engine)
        call_log = os.path.join(self.workdir, "calls.jsonl")
        info = {"fake_latency_ms": LATENCY_MS, "fake_settle_ms": SETTLE_MS,
                "fake_call_log": call_log}
        uuids = [db.create_node({"driver": "fake", "name": "n%02d" % i,
                                 "driver_info": info}).uuid
                 for i in range(NODES)]
        h1 = self.start_conductor(self.options("h1", mariadb.url), "h1")
        h2 = self.start_conductor(self.options("h2", mariadb.url), "h2")
        self.wait_workers(db, "h1", 1, timeout=60)
        self.wait_workers(db, "h2", 1, timeout=60)
        # Both hosts see each other before anything is asked.
        for conductor in (h1, h2):
            def see_both(c: base.ConductorProcess = conductor) -> bool:
                return "live workers: h1[0], h2[0]" in c.log()
            base.wait_for(see_both, 30, "h1 and h2 see each other")
        for uuid in uuids:
            db.request_power_state(uuid, states.POWER_ON)
        # Every action reached its BMC (the change is logged as it starts).
        base.wait_for(lambda: len(calls_by_node(call_log)) == NODES, 30,
                      "every action in flight")
        pids = {entry["pid"] for entries in calls_by_node(call_log).values()
                for entry in entries}
        hosts = {child.pid: name for name, conductor in (("h1", h1),
                                                         ("h2", h2))
                 for child in conductor.children()}
        self.assertEqual({"h1", "h2"}, {hosts.get(pid) for pid in pids},
                         "both hosts act before the outage")

        mariadb.server.crash()
        # NOTE: the fault itself lasts this long; nothing is asserted on
        # a timing here.
        time.sleep(OUTAGE)
        mariadb.server.start()

        def settled() -> bool:
            try:
                rows = db.get_nodes_by_uuid(uuids)
            except Exception:   # the database is still coming back
                return False
            return all(row.target_power_state is None
                       and row.reservation is None for row in rows)
        base.wait_for(settled, 120, "every action settled", interval=0.5)

        calls = calls_by_node(call_log)
        both = sorted(uuid for uuid, entries in calls.items()
                      if len({hosts.get(e["pid"]) for e in entries}) > 1)
        self.assertEqual([], both, "nodes acted on by two hosts:\n%s"
                         % "\n".join("%s: %s" % (uuid, calls[uuid])
                                     for uuid in both))
        for uuid in uuids:
            self.assertEqual(states.POWER_ON,
                             db.get_node(uuid).power_state, uuid)
            self.assertEqual(1, len(calls[uuid]), str(calls[uuid]))

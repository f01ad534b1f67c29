# SPDX-License-Identifier: Apache-2.0
"""Draining a host, end to end: two real conductors on one database.

A test driver, ``polllog`` (the fake driver, recording every power-state
read with its time and process id), shows who polled which node when.
"""

from __future__ import annotations

import collections
import os
import signal
import textwrap
import time
from typing import Any

import fixtures

from tests.functional import base

_POLLLOG_DRIVER = '''
import os
import time

from conductor.drivers import fake


class PollLogPower(fake.FakePower):

    def get_power_state(self, node):
        line = "%s %d %.3f\\n" % (node.uuid, os.getpid(), time.time())
        fd = os.open(os.environ["CONDUCTOR_TEST_POLL_LOG"],
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return super().get_power_state(node)


class PollLogDriver(fake.FakeDriver):
    def __init__(self):
        self.power = PollLogPower()
'''

#: Seconds between two polls of a node ([conductor]
#: sync_power_state_interval in these tests).
INTERVAL = 4
NODES = 200
#: What a sweep may add to the interval here (a loaded test machine).
SLACK = 1.5


def _options(workdir: str, host: str, dburl: str) -> dict[str, Any]:
    return {
        "DEFAULT": {"host": host, "enabled_drivers": "polllog",
                    "graceful_shutdown_timeout": 30,
                    "async_log_dir": os.path.join(workdir, host + "-async")},
        "database": {"connection": dburl},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 10,
                      "hash_ring_reset_interval": 2,
                      "sync_power_state_interval": INTERVAL,
                      "pending_action_interval": 0.5,
                      "power_state_timeout": 10},
    }


class TestDrain(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.install_driver()
        self.poll_log = os.path.join(self.workdir, "polls.log")
        self.useFixture(fixtures.EnvironmentVariable(
            "CONDUCTOR_TEST_POLL_LOG", self.poll_log))
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()
        self.uuids = [node.uuid for node in self.db.import_nodes([
            {"name": "n%03d" % i, "driver": "polllog"}
            for i in range(NODES)])]

    def install_driver(self) -> None:
        plugins = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(plugins, "polllog.py"), "w") as stream:
            stream.write(textwrap.dedent(_POLLLOG_DRIVER))
        info = os.path.join(plugins, "polllog-1.0.dist-info")
        os.mkdir(info)
        with open(os.path.join(info, "METADATA"), "w") as stream:
            stream.write("Metadata-Version: 2.1\nName: polllog\n"
                         "Version: 1.0\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as stream:
            stream.write("[conductor.drivers]\n"
                         "polllog = polllog:PollLogDriver\n")
        path = os.environ.get("PYTHONPATH")
        self.useFixture(fixtures.EnvironmentVariable(
            "PYTHONPATH", plugins + (os.pathsep + path if path else "")))

    def polls(self) -> list[tuple[str, int, float]]:
        if not os.path.exists(self.poll_log):
            return []
        with open(self.poll_log, encoding="ascii") as stream:
            return [(uuid, int(pid), float(when)) for uuid, pid, when in
                    (line.split() for line in stream if line.count(" ") == 2)]

    def start_two_hosts(self) -> tuple[base.ConductorProcess,
                                       base.ConductorProcess,
                                       set[int], set[int]]:
        hosts = []
        for name in ("ha", "hb"):
            hosts.append(self.start_conductor(
                _options(self.workdir, name, self.dbf.url), name=name))
        for name in ("ha", "hb"):
            self.wait_workers(self.db, name, 2, timeout=60)
        ha, hb = hosts
        pids_a = {proc.pid for proc in ha.children()}
        pids_b = {proc.pid for proc in hb.children()}

        def both_polled() -> bool:
            pollers = {pid for _, pid, _ in self.polls()}
            return bool(pollers & pids_a) and bool(pollers & pids_b)

        base.wait_for(both_polled, 60, "both hosts polling their nodes")
        return ha, hb, pids_a, pids_b

    def assert_drained(self, ha: base.ConductorProcess, drained_at: float,
                       pids_a: set[int], pids_b: set[int]) -> None:
        self.assertEqual(0, ha.wait_exit(INTERVAL + 40))
        stopped_at = time.time()
        # hb sweeps at least once more with ha gone.
        base.wait_for(lambda: any(when > stopped_at + INTERVAL + SLACK
                                  for _, pid, when in self.polls()
                                  if pid in pids_b),
                      30, "hb sweeping after ha stopped")
        by_node: dict[str, list[tuple[float, int]]] = \
            collections.defaultdict(list)
        for uuid, pid, when in self.polls():
            by_node[uuid].append((when, pid))
        gaps = {}
        for uuid in self.uuids:
            times = sorted(by_node[uuid])
            # Every node moved to hb, and hb polled it after ha stopped.
            self.assertTrue(any(pid in pids_b and when > stopped_at
                                for when, pid in times), uuid)
            since = [when for when, _ in times
                     if when > drained_at - INTERVAL]
            gaps[uuid] = max(b - a for a, b in zip(since, since[1:]))
        worst = max(gaps.values())
        # No node waited longer than one interval (and the jitter of a
        # sweep) for its next poll, across the handover.
        self.assertLessEqual(worst, INTERVAL + SLACK, gaps)
        self.assertEqual(set(), {pid for _, pid, when in self.polls()
                                 if when > stopped_at} & pids_a)
        log = ha.log()
        self.assertIn("Host ha is draining: the other hosts own its nodes "
                      "now", log)
        self.assertIn("Drain of ha done after", log)
        self.assertNotIn("Traceback", log)
        self.assertEqual({"ha": False, "hb": False},
                         {r.host: r.online and r.draining
                          for r in self.db.list_conductors()})

    def test_manage_drain_moves_every_node_and_exits_0(self) -> None:
        ha, hb, pids_a, pids_b = self.start_two_hosts()
        drained_at = time.time()
        out = self.run_manage(hb.config_file, "drain", "ha").stdout
        self.assertIn("Draining ha (2 worker(s))", out)
        status = self.run_manage(hb.config_file, "status").stdout
        self.assertIn("stop once the handover is done): ha", status)
        self.assert_drained(ha, drained_at, pids_a, pids_b)

    def test_sigusr1_drains_and_exits_0(self) -> None:
        ha, hb, pids_a, pids_b = self.start_two_hosts()
        drained_at = time.time()
        ha.signal(signal.SIGUSR1)
        self.assert_drained(ha, drained_at, pids_a, pids_b)
        self.assertIn("Caught SIGUSR1: draining this host", ha.log())

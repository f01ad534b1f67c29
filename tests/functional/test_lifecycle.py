# SPDX-License-Identifier: Apache-2.0
"""Ctrl-C and workers that cannot start, end to end with real processes."""

from __future__ import annotations

import os
import re
import signal
import textwrap
from typing import Any

import fixtures
import psutil

from tests.functional import base

#: A driver whose periodic task reads an option nobody registered: every
#: worker fails to start (the master loads drivers, collects no task).
_BROKEN_DRIVER = '''
from oslo_config import cfg

from conductor import periodics
from conductor.drivers import fake

CONF = cfg.CONF


class AcmePower(fake.FakePower):

    @periodics.periodic(spacing=lambda: CONF.acme.session_refresh_interval)
    def refresh_sessions(self):
        pass


class AcmeDriver(fake.FakeDriver):
    def __init__(self):
        self.power = AcmePower()
'''

WORKER_FAILED_RE = re.compile(
    r" ERROR conductor\.service \[ftest worker (?P<id>\d)\] .*Worker "
    r"(?P=id) of ftest failed to start: (?P<reason>.*)$")


def _options(workdir: str, **extra: dict[str, object]) -> dict:
    options: dict[str, dict[str, object]] = {
        "DEFAULT": {"host": "ftest", "state_path": workdir,
                    "enabled_drivers": "fake",
                    "graceful_shutdown_timeout": 30},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 5,
                      "sync_power_state_interval": 0,
                      "pending_action_interval": 0.2,
                      "power_state_timeout": 60},
    }
    for section, values in extra.items():
        options.setdefault(section, {}).update(values)
    return options


class LifecycleTestCase(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()

    def node(self, ident: str) -> Any:
        return self.db.get_node(ident)

    def enrol(self, count: int, **driver_info: object) -> list[str]:
        nodes = self.db.import_nodes([
            {"name": "n%03d" % i, "driver": "fake",
             "driver_info": dict(driver_info)} for i in range(count)])
        return [node.uuid for node in nodes]

    def ctrl_c(self, conductor: base.ConductorProcess) -> None:
        """What a terminal does: SIGINT to the whole process group."""
        # NOTE: the master is the leader of its own group (cotyledon
        # calls setsid); never signal the group of the test runner.
        self.assertEqual(conductor.pid, os.getpgid(conductor.pid))
        os.killpg(conductor.pid, signal.SIGINT)

    def reserved(self, uuids: list[str]) -> list[str]:
        return [u for u in uuids if self.node(u).reservation is not None]


class TestCtrlC(LifecycleTestCase):

    def test_ctrl_c_stops_gracefully(self) -> None:
        uuids = self.enrol(4, fake_latency_ms=3000)
        conductor = self.start_conductor(_options(self.workdir))
        self.wait_workers(self.db, "ftest", 2)
        for uuid in uuids:
            self.db.request_power_state(uuid, "power on")
        in_flight = base.wait_for(lambda: self.reserved(uuids), 15,
                                  "a power action in flight")
        self.ctrl_c(conductor)
        self.assertEqual(0, conductor.wait_exit(30))
        rows = self.db.list_conductors()
        self.assertEqual([(0, False), (1, False)],
                         [(row.worker_id, row.online) for row in rows])
        self.assertEqual([], self.reserved(uuids))
        # The actions in flight were let finish.
        for uuid in in_flight:
            self.assertEqual(("power on", None),
                             (self.node(uuid).power_state,
                              self.node(uuid).target_power_state))
        log = conductor.log()
        self.assertIn("Worker 0 of ftest stopped", log)
        self.assertIn("Worker 1 of ftest stopped", log)
        self.assertIn("Caught SIGINT: stopping gracefully", log)
        # No worker was forked again while the conductor stopped.
        self.assertEqual(2, len(re.findall(r"Worker \d of ftest started in",
                                           log)))
        self.assertNotIn("instantaneous", log)

    def test_sigint_to_one_worker_stops_it_gracefully(self) -> None:
        conductor = self.start_conductor(_options(self.workdir))
        rows = self.wait_workers(self.db, "ftest", 2)
        victim = rows[1]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGINT)
        # As with SIGTERM: it stops gracefully and is forked again.
        base.wait_for(lambda: "Worker 1 of ftest stopped" in conductor.log(),
                      15, "worker 1 stopped gracefully")
        base.wait_for(
            lambda: any(r.worker_id == 1 and r.online and r.pid != victim.pid
                        for r in self.db.list_conductors()),
            20, "worker 1 forked again")
        self.assertNotIn("instantaneous", conductor.log())
        assert conductor.process is not None
        self.assertIsNone(conductor.process.poll())

    def test_second_ctrl_c_forces_the_exit(self) -> None:
        uuids = self.enrol(4, fake_latency_ms=50000)
        conductor = self.start_conductor(_options(self.workdir))
        self.wait_workers(self.db, "ftest", 2)
        workers = conductor.children()
        for uuid in uuids:
            self.db.request_power_state(uuid, "power on")
        in_flight = base.wait_for(lambda: self.reserved(uuids), 15,
                                  "a power action in flight")
        holders = {self.node(u).reservation for u in in_flight}
        self.ctrl_c(conductor)
        # Both workers stop gracefully, waiting for the slow actions.
        base.wait_for(
            lambda: all("Worker %d of ftest stopping" % i in conductor.log()
                        for i in (0, 1)), 10, "both workers stopping")
        assert conductor.process is not None
        self.assertIsNone(conductor.process.poll())
        self.ctrl_c(conductor)
        self.assertNotEqual(0, conductor.wait_exit(5))
        gone, alive = psutil.wait_procs(workers, timeout=5)
        self.assertEqual([], alive)
        log = conductor.log()
        self.assertIn("Caught a second SIGINT: forced exit (exit code 1)",
                      log)
        # A worker with an action in flight did not wait for it.
        for holder in holders:
            self.assertNotIn("Worker %s of ftest stopped"
                             % holder.split(":")[1], log)


class TestWorkerStartFailures(LifecycleTestCase):

    def install_broken_driver(self) -> None:
        """``acme-broken``: an entry point from a package of this test."""
        plugins = self.useFixture(fixtures.TempDir()).path
        with open(os.path.join(plugins, "acme_broken.py"), "w") as stream:
            stream.write(textwrap.dedent(_BROKEN_DRIVER))
        info = os.path.join(plugins, "acme_broken-1.0.dist-info")
        os.mkdir(info)
        with open(os.path.join(info, "METADATA"), "w") as stream:
            stream.write("Metadata-Version: 2.1\nName: acme-broken\n"
                         "Version: 1.0\n")
        with open(os.path.join(info, "entry_points.txt"), "w") as stream:
            stream.write("[conductor.drivers]\n"
                         "acme-broken = acme_broken:AcmeDriver\n")
        path = os.environ.get("PYTHONPATH")
        self.useFixture(fixtures.EnvironmentVariable(
            "PYTHONPATH", plugins + (os.pathsep + path if path else "")))

    def test_master_gives_up_and_exits_1(self) -> None:
        # A previous, healthy run leaves figures in the workers' rows.
        healthy = self.start_conductor(_options(self.workdir),
                                       name="healthy")
        self.wait_workers(self.db, "ftest", 2)
        healthy.signal(signal.SIGTERM)
        self.assertEqual(0, healthy.wait_exit(30))
        self.install_broken_driver()
        conductor = self.start_conductor(_options(
            self.workdir, DEFAULT={"enabled_drivers": "acme-broken"},
            conductor={"max_worker_start_failures": 2}))
        self.assertEqual(1, conductor.wait_exit(60))
        with open(conductor.log_file) as stream:
            log_lines = stream.read().splitlines()
        failures = [m for m in map(WORKER_FAILED_RE.search, log_lines) if m]
        # Each failed start: one ERROR line naming the cause (with its
        # traceback through the logger); 2 workers x 2 starts at most.
        self.assertGreaterEqual(len(failures), 2)
        self.assertLessEqual(len(failures), 4)
        for match in failures:
            self.assertIn("ValueError: Periodic task AcmePower."
                          "refresh_sessions: resolving spacing failed: no "
                          "such option acme", match.group("reason"))
        gave_up = [line for line in log_lines
                   if " ERROR " in line and "Stopping the conductor" in line]
        self.assertEqual(1, len(gave_up), "\n".join(log_lines))
        self.assertRegex(gave_up[0], r"worker \d failed to start 2 time\(s\) "
                                     r"in a row: ValueError: Periodic task "
                                     r"AcmePower.refresh_sessions")
        with open(conductor.stdout.name) as stream:
            console = stream.read()
        # The exit names the cause; no raw traceback went to stderr.
        self.assertRegex(console, r"conductor: ERROR: worker \d failed to "
                                  r"start 2 time\(s\) in a row: ValueError")
        self.assertNotIn("Traceback", console)
        # No worker row shows the healthy run's figures as alive.
        self.assertEqual([(0, False), (1, False)],
                         [(row.worker_id, row.online)
                          for row in self.db.list_conductors()])
        status = self.run_manage(conductor.config_file, "status",
                                 "--format", "json", check=None)
        self.assertNotIn('"alive": true', status.stdout)

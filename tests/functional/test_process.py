# SPDX-License-Identifier: Apache-2.0
"""The process model, end to end: fork, respawn, stop, reload, bad config."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import cast

from oslo_utils import timeutils
import psutil

from tests.functional import base


def _options(workdir: str, **extra: dict[str, object]) -> dict:
    options: dict[str, dict[str, object]] = {
        "DEFAULT": {"host": "ftest", "state_path": workdir,
                    "enabled_drivers": "fake",
                    "graceful_shutdown_timeout": 10},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 5,
                      "sync_power_state_interval": 0},
    }
    for section, values in extra.items():
        options.setdefault(section, {}).update(values)
    return options


class TestWorkers(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.db_fixture = self.useFixture(
            base.Database("sqlite", state_dir=self.workdir))

    def test_forks_workers_with_stable_ids_and_heartbeats(self) -> None:
        conductor = self.start_conductor(
            _options(self.workdir, conductor={"workers": 3}))
        db = self.db_fixture.connect(upgrade=False)
        rows = self.wait_workers(db, "ftest", 3)
        self.assertEqual([0, 1, 2], [row.worker_id for row in rows])
        child_pids = {proc.pid for proc in conductor.children()}
        self.assertEqual(child_pids, {row.pid for row in rows})
        first = {row.worker_id: row.heartbeat_at for row in rows}
        base.wait_for(
            lambda: all(row.heartbeat_at > first[row.worker_id]
                        for row in db.list_conductors()),
            10, "every worker heartbeats again")
        # Every line a worker logs names its host and worker id.
        for row in rows:
            pid = cast(int, row.pid)
            lines = [line for line in conductor.log_lines()
                     if " %d " % pid in line]
            self.assertTrue(lines, "worker %d logged nothing" % pid)
            for line in lines:
                self.assertIn("[ftest worker %d]" % row.worker_id, line)

    def test_sigkilled_worker_respawns_with_same_id(self) -> None:
        conductor = self.start_conductor(_options(self.workdir))
        db = self.db_fixture.connect(upgrade=False)
        rows = self.wait_workers(db, "ftest", 2)
        victim = rows[1]
        os.kill(cast(int, victim.pid), signal.SIGKILL)
        killed_at = timeutils.utcnow()

        def respawned() -> object:
            for row in db.list_conductors():
                if (row.worker_id == victim.worker_id
                        and row.pid != victim.pid
                        and row.heartbeat_at > killed_at):
                    return row
            return None
        row = base.wait_for(respawned, 20, "worker 1 respawned")
        self.assertTrue(psutil.pid_exists(row.pid))
        self.assertIn(row.pid, {p.pid for p in conductor.children()})
        self.assertEqual(2, len(conductor.children()))

    def test_a_second_conductor_with_the_same_host_is_refused(self) -> None:
        first = self.start_conductor(_options(self.workdir))
        db = self.db_fixture.connect(upgrade=False)
        rows = self.wait_workers(db, "ftest", 2)
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", first.config_file],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, result.returncode, result.stderr)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("conductor: ERROR:")]
        self.assertEqual(1, len(errors), result.stderr)
        self.assertIn("[DEFAULT] host ftest is already run by a live "
                      "conductor (worker 0, pid %d on this machine)"
                      % cast(int, rows[0].pid), errors[0])
        self.assertIn("--force", errors[0])
        # The first one is untouched.
        self.assertEqual(2, len(first.children()))
        self.assertEqual([2], [len(self.wait_workers(db, "ftest", 2))])

    def test_force_starts_over_a_live_looking_host(self) -> None:
        first = self.start_conductor(_options(self.workdir))
        db = self.db_fixture.connect(upgrade=False)
        self.wait_workers(db, "ftest", 2)
        second = subprocess.Popen(
            [base.binary("conductor"), "--config-file", first.config_file,
             "--force"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.addCleanup(second.wait, 30)
        self.addCleanup(second.kill)
        base.wait_for(lambda: "--force: not checking" in first.log(), 30,
                      "the forced start logged")
        base.wait_for(lambda: "Conductor ftest starting 2 worker(s)"
                      in first.log().split("--force: not checking", 1)[1],
                      30, "the forced conductor forked its workers")
        self.assertIsNone(second.poll())

    def test_sigterm_stops_gracefully_and_marks_offline(self) -> None:
        conductor = self.start_conductor(_options(self.workdir))
        db = self.db_fixture.connect(upgrade=False)
        self.wait_workers(db, "ftest", 2)
        conductor.signal(signal.SIGTERM)
        self.assertEqual(0, conductor.wait_exit(15))
        rows = db.list_conductors()
        self.assertEqual(2, len(rows))
        self.assertFalse(any(row.online for row in rows))
        self.assertEqual([], conductor.children())
        self.assertIn("Worker 0 of ftest stopped", conductor.log())
        self.assertIn("Worker 1 of ftest stopped", conductor.log())

    def test_sighup_refuses_a_bad_file_then_reloads_debug(self) -> None:
        conductor = self.start_conductor(
            _options(self.workdir, DEFAULT={"debug": False}))
        db = self.db_fixture.connect(upgrade=False)
        rows = self.wait_workers(db, "ftest", 2)
        self.assertNotIn(" DEBUG ", conductor.log())
        pids = sorted(child.pid for child in conductor.children())
        # A typo in a reloadable option: refused by name, nothing
        # restarted (it used to fail every new worker, then the master).
        conductor.write_config(conductor={"power_state_timeout": "nan"})
        mark = len(conductor.log())
        conductor.signal(signal.SIGHUP)
        refused = base.wait_for(
            lambda: [line for line in conductor.log()[mark:].splitlines()
                     if "reload refused" in line],
            15, "the master refuses the reload")
        self.assertEqual(1, len(refused), refused)
        self.assertIn(" ERROR conductor.master ", refused[0])
        self.assertIn("[conductor] power_state_timeout: must be a finite "
                      "number, got nan", refused[0])
        # Said once: not again as the exception being handled.
        self.assertEqual(1, refused[0].count("must be a finite number"),
                         refused[0])
        self.assertNotIn("stopping", conductor.log()[mark:])
        self.assertEqual(pids, sorted(child.pid
                                      for child in conductor.children()))
        # Mended, the next SIGHUP reloads.
        del conductor.options["conductor"]["power_state_timeout"]
        conductor.write_config(DEFAULT={"debug": True})
        reloaded_at = timeutils.utcnow()
        conductor.signal(signal.SIGHUP)
        new_rows = self.wait_workers(db, "ftest", 2, since=reloaded_at)
        self.assertEqual([0, 1], [row.worker_id for row in new_rows])
        base.wait_for(
            lambda: any(" DEBUG " in line and "[ftest worker" in line
                        for line in conductor.log_lines()),
            15, "a worker logs at DEBUG after SIGHUP")
        self.assertNotEqual({r.pid for r in rows},
                            {r.pid for r in new_rows})


class TestBadConfig(base.FunctionalTestCase):
    """Each bad setting: exit 1 before forking, one line naming it."""

    def _run(self, extra: dict, expected: str
             ) -> subprocess.CompletedProcess[str]:
        options = _options(self.workdir)
        for section, values in extra.items():
            options.setdefault(section, {}).update(values)
        proc = base.ConductorProcess(self.workdir, options)
        proc.options["DEFAULT"]["state_path"] = self.workdir
        proc.write_config()
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", proc.config_file],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, result.returncode, result.stderr)
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("conductor: ERROR:")]
        self.assertEqual(1, len(errors), result.stderr)
        self.assertIn(expected, errors[0])
        self.assertNotIn("Traceback", result.stderr)
        self.assertNotIn("starting", result.stderr + result.stdout)
        return result

    def test_zero_workers(self) -> None:
        self._run({"conductor": {"workers": 0}}, "[conductor] workers")

    def test_negative_workers(self) -> None:
        self._run({"conductor": {"workers": -3}}, "[conductor] workers")

    def test_nan_timeout(self) -> None:
        # oslo.config's min lets nan through; every call would fail.
        self._run({"conductor": {"power_state_timeout": "nan"}},
                  "[conductor] power_state_timeout: must be a finite "
                  "number, got nan")

    def test_log_file_that_cannot_be_opened(self) -> None:
        result = self._run({"DEFAULT": {"log_file": "/proc/nope/x.log"}},
                           "cannot set up logging ([DEFAULT] log_file, "
                           "log_dir or log_config_append): [Errno 2]")
        # Logging is not set up: the error is said once, not logged too.
        self.assertEqual(1, len(result.stderr.splitlines()), result.stderr)

    def test_reference_to_no_option(self) -> None:
        self._run({"DEFAULT": {"host": "$nosuch"}},
                  "[DEFAULT] host: its value refers ($name) to an option "
                  "that does not exist")

    def test_config_file_that_is_not_utf8(self) -> None:
        path = os.path.join(self.workdir, "latin1.conf")
        with open(path, "wb") as stream:
            stream.write(b"[DEFAULT]\nhost = caf\xe9\n")
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", path],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, result.returncode, result.stderr)
        self.assertEqual(1, len(result.stderr.splitlines()), result.stderr)
        self.assertIn("conductor: ERROR: cannot read the configuration: "
                      "'utf-8' codec can't decode byte 0xe9",
                      result.stderr)

    def test_config_file_that_is_a_directory(self) -> None:
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", self.workdir],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(
            (1, "conductor: ERROR: cannot read the configuration: [Errno "
                "21] Is a directory: '%s'\n" % self.workdir),
            (result.returncode, result.stderr))

    def test_pool_too_small(self) -> None:
        self._run({"conductor": {"workers_pool_size": 1}},
                  "[conductor] workers_pool_size")

    def test_unknown_driver(self) -> None:
        self._run({"DEFAULT": {"enabled_drivers": "fake,nosuch"}},
                  "Driver nosuch could not be loaded")

    def test_unreachable_database(self) -> None:
        result = self._run({"database": {
            "connection": "mysql+pymysql://root:s3cret@127.0.0.1:1/x"}},
            "mysql+pymysql://root:***@127.0.0.1:1/x")
        self.assertNotIn("s3cret", result.stderr)

    def test_malformed_database_url(self) -> None:
        self._run({"database": {"connection": "not a url"}},
                  "<malformed URL>")

    def test_unknown_database_dialect(self) -> None:
        self._run({"database": {"connection": "nosuchdb://x/y"}},
                  "nosuchdb://x/y")

    def test_heartbeat_interval_not_below_timeout(self) -> None:
        self._run({"conductor": {"heartbeat_interval": 10,
                                 "heartbeat_timeout": 10}},
                  "heartbeat_interval")

    def test_malformed_transport_url(self) -> None:
        result = self._run({"DEFAULT": {
            "transport_url": "rabbit://guest:s3cret@127.0.0.1:notaport/"}},
            "[DEFAULT] transport_url")
        self.assertNotIn("s3cret", result.stderr)

    def test_unknown_transport_driver(self) -> None:
        self._run({"DEFAULT": {"transport_url": "nosuchmq://u:p@h:1/"}},
                  "[DEFAULT] transport_url: no messaging driver 'nosuchmq'")

    def test_unusable_async_log_dir(self) -> None:
        blocker = os.path.join(self.workdir, "a-file")
        open(blocker, "w").close()
        self._run({"DEFAULT": {"async_log_dir": blocker + "/logs"}},
                  "[DEFAULT] async_log_dir %s/logs cannot be created"
                  % blocker)

    def test_bad_library_option(self) -> None:
        self._run({"DEFAULT": {"graceful_shutdown_timeout": "soon"}},
                  "[DEFAULT] graceful_shutdown_timeout")

    def test_nameless_inventory_entry(self) -> None:
        path = os.path.join(self.workdir, "fleet.yaml")
        with open(path, "w") as stream:
            stream.write("- {name: a, driver: fake}\n- {driver: fake}\n")
        self._run({"DEFAULT": {"inventory_file": path}},
                  "node #2 has neither a name nor a uuid")

    def test_missing_config_file(self) -> None:
        missing = os.path.join(self.workdir, "nope.conf")
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", missing],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(1, result.returncode)
        self.assertIn("config file(s) not found: %s" % missing,
                      result.stderr)
        self.assertNotIn("Traceback", result.stderr)

# SPDX-License-Identifier: Apache-2.0
"""What an operator sees of a running conductor: process titles, Guru
Meditation Reports, config typo warnings, one-line start-up errors."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
from typing import Any

import psutil

from tests.functional import base


def _options(workdir: str, **extra: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, dict[str, Any]] = {
        "DEFAULT": {"host": "op", "enabled_drivers": "fake",
                    "graceful_shutdown_timeout": 20},
        "conductor": {"workers": 2, "heartbeat_interval": 1,
                      "heartbeat_timeout": 10,
                      "sync_power_state_interval": 5},
    }
    for section, values in extra.items():
        options.setdefault(section, {}).update(values)
    return options


def _title(process: psutil.Process) -> str:
    """What ``ps`` shows (setproctitle pads the old space with NULs)."""
    return " ".join(part for part in process.cmdline() if part)


class TestRunningConductor(base.FunctionalTestCase):

    def setUp(self) -> None:
        super().setUp()
        self.dbf = self.useFixture(base.Database("sqlite",
                                                 state_dir=self.workdir))
        self.db = self.dbf.connect()
        self.reports = os.path.join(self.workdir, "reports")
        os.mkdir(self.reports)
        self.conductor = self.start_conductor(_options(
            self.workdir,
            # A typo of each kind: an option in the wrong section, and a
            # misspelled section.
            DEFAULT={"worker": 7},
            conducter={"workers": 3},
            oslo_reports={"log_dir": self.reports}))
        self.wait_workers(self.db, "op", 2, timeout=60)

    def test_titles_typos_and_reports(self) -> None:
        # Process titles.
        master = psutil.Process(self.conductor.pid)
        self.assertEqual("conductor: master (op)", _title(master))
        titles = sorted(_title(child) for child in master.children())
        self.assertEqual(["conductor: worker 0 (op)",
                          "conductor: worker 1 (op)"], titles)
        # One warning per typo, naming the file, the section, the option.
        warnings = [line for line in self.conductor.log_lines()
                    if " WARNING conductor.cmd.conductor " in line]
        config = self.conductor.config_file
        self.assertEqual(2, len(warnings), "\n".join(warnings))
        self.assertIn("%s: [DEFAULT] worker: unknown option, ignored (did "
                      "you mean [conductor] workers?)" % config, warnings[0])
        self.assertIn("%s: [conducter]: unknown section, its option(s) "
                      "workers are ignored (did you mean [conductor]?)"
                      % config, warnings[1])
        # SIGUSR2: a report from the master and from each worker.
        self.conductor.signal(signal.SIGUSR2)

        def reports() -> list[str] | None:
            found = sorted(glob.glob(os.path.join(self.reports, "*")))
            return found if len(found) == 3 else None

        paths = base.wait_for(reports, 30, "three Guru Meditation Reports")
        names = sorted(re.sub(r"_gurumeditation_\d+$", "",
                              os.path.basename(p)) for p in paths)
        self.assertEqual(["conductor-op-master", "conductor-op-worker-0",
                          "conductor-op-worker-1"], names)
        texts = {}
        for path in paths:
            with open(path, encoding="utf-8") as stream:
                texts[os.path.basename(path).split("_")[0]] = stream.read()
        worker = texts["conductor-op-worker-1"]
        for text in ("Threads", "Configuration", "Conductor",
                     "process = worker-1", "live workers = op[0,1]",
                     "draining = False", "size = 100"):
            self.assertIn(text, worker)
        self.assertIn("process = master", texts["conductor-op-master"])
        # The conductor goes on: both workers are still there.
        self.assertEqual(2, len(master.children()))
        self.conductor.signal(signal.SIGTERM)
        self.assertEqual(0, self.conductor.wait_exit(40))


class TestStartupErrors(base.FunctionalTestCase):

    def run_conductor(self, options: dict[str, Any]) -> tuple[int, str]:
        process = base.ConductorProcess(self.workdir, options)
        options["DEFAULT"].setdefault("state_path", self.workdir)
        options["DEFAULT"]["log_file"] = process.log_file
        process.write_config()
        result = subprocess.run(
            [base.binary("conductor"), "--config-file", process.config_file],
            capture_output=True, text=True, timeout=120)
        with open(process.log_file, encoding="utf-8") as stream:
            log = stream.read()
        return result.returncode, result.stderr + log

    def test_unknown_driver_is_one_error_line(self) -> None:
        code, text = self.run_conductor(_options(
            self.workdir, DEFAULT={"enabled_drivers": "fake,nope"}))
        self.assertEqual(1, code)
        reason = ("Driver nope could not be loaded: no such driver in entry "
                  "point group conductor.drivers")
        errors = [line for line in text.splitlines()
                  if " ERROR " in line or line.startswith("conductor:")]
        self.assertEqual(3, len(errors), text)
        # The task's failure, the master's, and the line on stderr: each
        # says it once; no traceback without debug.
        for line in errors:
            self.assertEqual(1, line.count(reason), line)
        self.assertNotIn("Traceback", text)
        self.assertNotIn(" WARNING ", text)

    def test_task_warning_is_replayed_as_a_warning(self) -> None:
        # An unreachable broker is a warning of the 'broker' start-up
        # task (an unknown driver then ends the start-up early).
        code, text = self.run_conductor(_options(
            self.workdir, DEFAULT={
                "enabled_drivers": "fake,nope",
                "transport_url": "rabbit://guest:guest@127.0.0.1:1/"}))
        self.assertEqual(1, code)
        warnings = [line for line in text.splitlines()
                    if " WARNING " in line]
        self.assertEqual(1, len(warnings), text)
        self.assertRegex(warnings[0], r" WARNING conductor\.startup .*"
                                      r"\[async broker\] .* WARNING "
                                      r"conductor\.startup Message broker "
                                      r"unreachable: 127\.0\.0\.1:1")

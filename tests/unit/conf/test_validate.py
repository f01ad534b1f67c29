# SPDX-License-Identifier: Apache-2.0
"""Unknown options and sections in the configuration files."""

from __future__ import annotations

import configparser
import os

from oslo_config import cfg

from conductor.conf import validate
from tests import base


class TestUnknownOptions(base.TestCase):

    def parse(self, text: str) -> str:
        path = os.path.join(self.conf.state_path, "typo.conf")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        self.conf(["--config-file", path], project="conductor")
        return path

    def test_typos_one_problem_each(self) -> None:
        path = self.parse("[DEFAULT]\nworker = 7\ndebug = true\n"
                          "[conducter]\nworkers = 2\nheartbeat_interval = 5\n"
                          "[conductor]\nsync-power-state-interval = 30\n"
                          "sync_power_state_intervall = 5\n"
                          "[database]\nconnection = sqlite://\n")
        self.assertEqual([
            "%s: [DEFAULT] worker: unknown option, ignored (did you mean "
            "[conductor] workers?)" % path,
            "%s: [conducter]: unknown section, its option(s) workers, "
            "heartbeat_interval are ignored (did you mean [conductor]?)"
            % path,
            "%s: [conductor] sync_power_state_intervall: unknown option, "
            "ignored (did you mean [conductor] sync_power_state_interval?)"
            % path,
        ], [str(p) for p in validate.unknown_options(self.conf)])

    def test_library_options_registered_late_are_known(self) -> None:
        # oslo.messaging registers its rabbit options only in a worker.
        self.parse("[oslo_messaging_rabbit]\nrabbit_qos_prefetch_count = 8\n"
                   "[oslo_reports]\nlog_dir = /tmp\n"
                   "[DEFAULT]\nverbose_startup = 1\n")
        problems = validate.unknown_options(self.conf)
        self.assertEqual([("DEFAULT", ("verbose_startup",))],
                         [(p.section, p.options) for p in problems])

    def test_sample_config_is_clean(self) -> None:
        sample = os.path.join(os.path.dirname(__file__), "..", "..", "..",
                              "etc", "conductor", "conductor.conf.sample")
        # Every option of the sample, uncommented.
        parser = configparser.ConfigParser(interpolation=None)
        text = ""
        with open(sample, encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("["):
                    text += line
                elif line.startswith("#") and " = " in line and \
                        not line.startswith("# "):
                    text += line[1:]
        parser.read_string(text)
        self.parse(text)
        self.assertEqual([], [str(p) for p in
                              validate.unknown_options(self.conf)])

    def test_namespaces_match_the_sample_generator(self) -> None:
        generator = os.path.join(os.path.dirname(__file__), "..", "..",
                                 "..", "tools", "config",
                                 "conductor-config-generator.conf")
        with open(generator, encoding="utf-8") as stream:
            listed = [line.split("=", 1)[1].strip() for line in stream
                      if line.startswith("namespace")]
        self.assertEqual(sorted(listed), sorted(validate.NAMESPACES))

    def test_renamed_and_removed_options(self) -> None:
        self.conf.register_opt(cfg.IntOpt("new_knob",
                                          deprecated_name="old_knob",
                                          deprecated_group="DEFAULT"),
                               group="conductor")
        self.conf.register_opt(cfg.BoolOpt(
            "legacy_mode", deprecated_for_removal=True,
            deprecated_reason="always on now"), group="conductor")
        path = self.parse("[DEFAULT]\nold_knob = 3\n"
                          "[conductor]\nlegacy_mode = true\nnew_knob = 4\n")
        self.assertEqual([
            "%s: [DEFAULT] old_knob was renamed to [conductor] new_knob"
            % path,
            "%s: [conductor] legacy_mode is deprecated for removal: always "
            "on now" % path], validate.deprecated_options(self.conf))
        # Known under their names: not reported as unknown.
        self.assertEqual([], validate.unknown_options(self.conf))

    def test_unreadable_file_is_left_to_oslo_config(self) -> None:
        self.assertEqual([], validate.unknown_options(
            self.conf, files=["/nonexistent/conductor.conf"]))

# SPDX-License-Identifier: Apache-2.0
"""The committed sample config must match the options in the code."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import base

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


class TestSampleConfig(base.TestCase):

    def test_sample_is_current(self) -> None:
        generator = os.path.join(os.path.dirname(sys.executable),
                                 "oslo-config-generator")
        output = os.path.join(self.conf.state_path, "sample.conf")
        subprocess.run(
            [generator, "--config-file", os.path.join(
                ROOT, "tools/config/conductor-config-generator.conf"),
             "--output-file", output],
            check=True, capture_output=True, cwd=ROOT, timeout=120)
        with open(output) as stream:
            generated = stream.read()
        with open(os.path.join(ROOT,
                               "etc/conductor/conductor.conf.sample")) as f:
            committed = f.read()
        self.assertEqual(
            generated, committed,
            "etc/conductor/conductor.conf.sample is stale: run "
            "'tox -e genconfig' and commit the result")

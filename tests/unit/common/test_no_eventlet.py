# SPDX-License-Identifier: Apache-2.0
"""Eventlet stays out: the guard, the lint check and every entry point."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import base

_PROBE = """
import sys
import conductor.cmd
import conductor.cmd.conductor, conductor.cmd.manage
import conductor.service, conductor.db.api, conductor.drivers.fake
import futurist, futurist.periodics, oslo_messaging, oslo_service.service
assert "eventlet" not in sys.modules, sorted(
    m for m in sys.modules if m.startswith("eventlet"))
try:
    import eventlet  # noqa
except ImportError as exc:
    print("refused:", exc)
else:
    raise SystemExit("eventlet was importable")
from oslo_service import backend
print("backend:", backend.get_backend_type().value)
"""


class TestNoEventlet(base.TestCase):

    def test_entry_points_never_import_eventlet(self) -> None:
        result = subprocess.run([sys.executable, "-c", _PROBE],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertIn("refused: conductor runs on oslo.service's threading "
                      "backend", result.stdout)
        self.assertIn("backend: threading", result.stdout)

    def test_importing_a_driver_or_the_client_first_keeps_it_out(self) -> None:
        # NOTE: no conductor.cmd here: the package itself guards, so a
        # test or program importing a driver module first is covered.
        probe = ("import sys\n"
                 "import conductor.drivers.fake, conductor.rpcapi\n"
                 "import futurist.periodics, oslo_messaging\n"
                 "print(sorted(m for m in sys.modules\n"
                 "             if m.startswith('eventlet')))\n"
                 "from oslo_service import backend\n"
                 "print(backend.get_backend_type().value)\n")
        result = subprocess.run([sys.executable, "-c", probe],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual(["[]", "threading"], result.stdout.split())

    def test_rpc_client_loads_no_database_code(self) -> None:
        probe = ("import sys, conductor.rpcapi\n"
                 "print(sorted({m.split('.')[0] for m in sys.modules}\n"
                 "             & {'sqlalchemy', 'oslo_db', 'alembic'}))\n")
        result = subprocess.run([sys.executable, "-c", probe],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(0, result.returncode, result.stderr)
        self.assertEqual("[]", result.stdout.strip())

    def test_guard_refuses_when_eventlet_already_loaded(self) -> None:
        probe = ("import eventlet, conductor.common.no_eventlet as g\n"
                 "g.install()\n")
        result = subprocess.run([sys.executable, "-c", probe],
                                capture_output=True, text=True, timeout=60)
        self.assertNotEqual(0, result.returncode)
        self.assertIn("eventlet was imported before conductor selected",
                      result.stderr)

    def test_lint_check_flags_eventlet_imports(self) -> None:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                        "..", "..", "tools", "hacking"))
        self.addCleanup(sys.path.pop, 0)
        import checks
        for line in ("import eventlet", "from eventlet import greenpool",
                     "from eventlet.green import threading"):
            self.assertEqual(1, len(list(checks.no_eventlet_import(
                line, "x.py"))), line)
        for line in ("import eventletlike", "import futurist",
                     "# import eventlet is banned"):
            self.assertEqual([], list(checks.no_eventlet_import(
                line, "x.py")), line)

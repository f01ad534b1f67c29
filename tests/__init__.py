# SPDX-License-Identifier: Apache-2.0
"""The conductor's tests.

``conductor.cmd`` selects oslo.service's threading backend and refuses
eventlet; it must be imported before anything that might pull eventlet
in. Importing it here, where every test module's import starts, keeps
that true whatever a test module imports first.
"""

import conductor.cmd  # noqa: F401

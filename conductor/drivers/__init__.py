# SPDX-License-Identifier: Apache-2.0
"""Hardware drivers: loaded through the ``conductor.drivers`` entry points."""

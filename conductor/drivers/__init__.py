"""Hardware drivers: loaded through the ``conductor.drivers`` entry points."""

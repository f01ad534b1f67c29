# SPDX-License-Identifier: Apache-2.0
"""The installed conductor's version, as pbr computed it at build time.

Every command prints it with ``--version``::

    >>> version.version_string()
    '0.0.1'
"""

from __future__ import annotations

from pbr import version as pbr_version

_INFO = pbr_version.VersionInfo("conductor")


def version_string() -> str:
    """The package version (``X.Y.Z``, or a dev version from git)."""
    return str(_INFO.version_string())

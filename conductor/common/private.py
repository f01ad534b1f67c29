# SPDX-License-Identifier: Apache-2.0
"""Files and directories readable by the conductor's user only.

Local state may hold secrets: the embedded SQLite database stores every
node's ``driver_info`` (BMC passwords), and task logs may quote it. What
the conductor creates for it is private::

    private.makedirs(conf.state_path)        # created ones: 0700
    private.create_file(path)                # 0600, created if missing
    private.tighten(path)                    # an existing file -> 0600

Directories that exist already are left as they are (``state_path`` may
be a directory the operator shares on purpose); files the conductor
writes are tightened whatever their directory.
"""

from __future__ import annotations

import os
import stat

#: Mode of the directories the conductor creates for its state.
DIR_MODE = 0o700
#: Mode of the files that may hold secrets.
FILE_MODE = 0o600


def makedirs(path: str) -> list[str]:
    """Create ``path`` and its missing parents with mode 0700.

    :returns: the directories created (none when it existed).
    :raises: OSError.
    """
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    # NOTE: makedirs applies the mode to the last directory only, and the
    # umask to every one: set it exactly on each directory made here.
    for directory in missing:
        os.chmod(directory, DIR_MODE)
    return missing


def create_file(path: str) -> None:
    """Make sure ``path`` exists with mode 0600, keeping its content.

    :raises: OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    tighten(path)


def tighten(path: str) -> bool:
    """Set an existing regular file of ours to 0600.

    Missing files, files of another user (the operator's choice) and
    anything but a regular file are left alone.

    :returns: whether the mode was changed.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        return False
    if stat.S_IMODE(info.st_mode) == FILE_MODE:
        return False
    os.chmod(path, FILE_MODE)
    return True

# SPDX-License-Identifier: Apache-2.0
"""Running external commands: argv only, output logged as it comes.

::

    result = processutils.run_command(["ipmitool", "-V"], timeout=10)
    result.stdout     # stdout and stderr merged, in order

Commands are executed directly, never through a shell, in a session of
their own so that a timeout kills everything they started.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Mapping, Sequence

LOG = logging.getLogger(__name__)

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This machine's boot id (Linux), or None where there is none."""
    try:
        with open(_BOOT_ID, encoding="ascii") as stream:
            return stream.read().strip() or None
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_command(argv: Sequence[str], *, cwd: str | None = None,
                env: Mapping[str, str] | None = None,
                timeout: float | None = None, check: bool = True,
                logger: logging.Logger | None = None,
                label: str | None = None,
                ) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and log its output line by line as it comes.

    Inside a task the lines therefore land in that task's log; outside
    one they go to the main log. stdout and stderr are merged so their
    order is kept. ``argv`` is executed directly, never through a shell:
    each element reaches the program as one argument, spaces and all.

    :param argv: program and arguments, as a list or tuple of strings.
    :param cwd: working directory; default the current one.
    :param env: the complete environment; default this process's.
    :param timeout: seconds after which the command and everything it
        started in its session are killed with SIGKILL; None waits
        forever.
    :param check: raise if the command exits non-zero.
    :param logger: logger for the output lines (level INFO); default this
        module's.
    :param label: prefix of each logged line; default ``argv[0]``'s base
        name.
    :returns: the completed process; ``stdout`` is the merged output.
    :raises TypeError: ``argv`` is a string or holds a non-string.
    :raises ValueError: ``argv`` is empty.
    :raises OSError: the program cannot be executed.
    :raises subprocess.TimeoutExpired: the timeout killed the command.
    :raises subprocess.CalledProcessError: non-zero exit with ``check``.
    """
    if isinstance(argv, (str, bytes)) or not all(
            isinstance(arg, str) for arg in argv):
        raise TypeError("argv must be a list of strings, never a shell "
                        "command line: %r" % (argv,))
    command = list(argv)
    if not command:
        raise ValueError("argv must name a program to run")
    log = logger if logger is not None else LOG
    prefix = label if label is not None else os.path.basename(command[0])
    # NOTE: a session of its own lets a timeout kill the grandchildren
    # too; otherwise a killed shell's children keep the pipe open and
    # the read below never ends.
    proc = subprocess.Popen(
        command, cwd=cwd, env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        errors="replace", start_new_session=True)
    timed_out = threading.Event()
    killer: threading.Timer | None = None
    if timeout is not None:
        killer = threading.Timer(timeout, _kill_session,
                                 args=(proc, timed_out))
        killer.daemon = True
        killer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            log.info("%s: %s", prefix, line)
        returncode = proc.wait()
    finally:
        if killer is not None:
            killer.cancel()
            killer.join()
        if proc.poll() is None:
            _kill_session(proc, None)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    output = "\n".join(lines) + ("\n" if lines else "")
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(command, timeout or 0.0,
                                        output=output)
    if check and returncode != 0:
        raise subprocess.CalledProcessError(returncode, command,
                                            output=output)
    return subprocess.CompletedProcess(command, returncode, stdout=output)


def _kill_session(proc: subprocess.Popen[str],
                  flag: threading.Event | None) -> None:
    if flag is not None:
        flag.set()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def set_title(title: str) -> None:
    """Name this process in ``ps`` and ``top`` (setproctitle).

    For example ``conductor: worker 1 (host-a)``.
    """
    import setproctitle

    setproctitle.setproctitle(title)

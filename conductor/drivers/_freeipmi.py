# SPDX-License-Identifier: Apache-2.0
"""Batch power-state reads with FreeIPMI's ``ipmipower``.

Private to :mod:`conductor.drivers.ipmi`. One :func:`read_group` runs one
``ipmipower --stat`` over many BMCs that share a user, password, cipher
suite, privilege level and port (a :class:`Group`); ipmipower talks to
them all at once from one process and prints one ``host: answer`` line per
host::

    answers = read_group(group, hosts, options, budget=25.0)
    answers["10.0.0.5"]      # "on", "off" or ipmipower's error text

**One run per batch, not one long-lived interactive process.** Measured
against OpenIPMI ``ipmi_sim`` BMCs on loopback, 64 hosts per command: one
run costs about 0.45-0.5 ms of CPU per host, a kept-open interactive
ipmipower about 0.16-0.31 ms. Both are far below ipmitool's 6-24 ms, but
an interactive process runs one command at a time: a batch with a silent
BMC would hold every other batch of the worker behind it for the whole
session timeout, credentials would have to be switched in it between
batches, and a stuck process could only be killed with every batch in it.
A run per batch lets batches run in parallel, each under its own
deadline, and is killed and reaped alone.

**Secrets.** The password reaches ipmipower as a one-line FreeIPMI
configuration file (``ipmipower-password ...``) read from an anonymous
pipe (``--config-file=/dev/fd/N``): never in its arguments (``ps``), its
environment or a file on disk. FreeIPMI's configuration syntax cannot
carry a password with white space, ``#``, quotes or backslashes:
:func:`config_safe` says so, and the driver reads those nodes with
ipmitool instead.

**Answers.** ipmipower drops the port from its prefix, so hosts of one run
all use the group's port (groups are split by port); the same address
twice is asked once. A host name that does not resolve makes ipmipower
skip the whole run: its answer names it, and the run is made again
without it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from typing import Iterable, Mapping, Sequence

LOG = logging.getLogger("conductor.drivers.ipmi")

#: ipmipower's answers to ``--stat`` that are a power state.
STATES = ("on", "off")
#: Characters FreeIPMI's configuration file parser cannot carry in a value.
_UNSAFE = frozenset(" \t#\"'\\")
#: ipmipower's privilege names for ours.
PRIVILEGES = {"ADMINISTRATOR": "ADMIN", "OPERATOR": "OPERATOR",
              "USER": "USER"}
#: The answer for a host name ipmipower cannot resolve.
INVALID_HOSTNAME = "invalid hostname"
#: Longest piece of ipmipower's stderr quoted in an error.
_MAX_QUOTED = 300


@dataclasses.dataclass(frozen=True)
class Group:
    """What the BMCs of one ipmipower run share; ``repr`` hides secrets."""

    username: str
    password: str = dataclasses.field(repr=False)
    cipher_suite: int
    privilege: str
    port: int


@dataclasses.dataclass(frozen=True)
class Options:
    """The ``[ipmi]`` settings of a run, in plain values."""

    path: str
    workaround_flags: Sequence[str]
    session_timeout: float
    retransmission_timeout: float


class RunFailed(Exception):
    """ipmipower did not run, or ended without an answer for every host."""


def config_safe(password: str) -> bool:
    """True when ``password`` can be written in a FreeIPMI config file."""
    return not any(ch in _UNSAFE for ch in password)


def host_arg(address: str, port: int) -> str:
    """``address`` as ipmipower's ``-h`` takes it, with a port if not 623."""
    host = "[%s]" % address if ":" in address else address
    return host if port == 623 else "%s:%d" % (host, port)


def argv(group: Group, hosts: Sequence[str], options: Options,
         config_fd: int, budget: float) -> list[str]:
    """The ipmipower command line (no secret in it).

    The session timeout is capped by ``budget`` (seconds), so that
    ipmipower reports a silent BMC itself before the call's deadline.
    """
    session_ms = max(100, int(min(options.session_timeout, budget) * 1000))
    retrans_ms = max(50, min(int(options.retransmission_timeout * 1000),
                             session_ms // 2))
    command = [options.path, "--driver-type=LAN_2_0",
               "--hostname=%s" % ",".join(host_arg(h, group.port)
                                          for h in hosts),
               "--username=%s" % group.username,
               "--cipher-suite-id=%d" % group.cipher_suite,
               "--privilege-level=%s" % PRIVILEGES[group.privilege],
               "--config-file=/dev/fd/%d" % config_fd,
               "--session-timeout=%d" % session_ms,
               "--retransmission-timeout=%d" % retrans_ms,
               "--always-prefix", "--stat"]
    if options.workaround_flags:
        command.append("--workaround-flags=%s"
                       % ",".join(options.workaround_flags))
    return command


def parse_output(text: str, hosts: Iterable[str]) -> dict[str, str]:
    """ipmipower's ``host: answer`` lines, for the hosts asked about.

    ``hosts`` are the addresses as given (IPv6 ones without brackets, as
    ipmipower prints them). A line is matched to the longest host that
    prefixes it followed by ``": "`` (an IPv6 address has colons of its
    own); a line for no known host, or with no answer, is ignored, and a
    host answered twice keeps its first answer. The answer is stripped
    and lower-cased (``on``, ``off``, ``connection timeout``, ``password
    invalid``...).

    :returns: host -> answer, for the hosts that have one.
    """
    known = sorted(set(hosts), key=len, reverse=True)
    answers: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        for host in known:
            prefix = host + ": "
            if line.startswith(prefix):
                answer = line[len(prefix):].strip().lower()
                if answer and host not in answers:
                    answers[host] = answer
                break
    return answers


def read_group(group: Group, hosts: Sequence[str], options: Options,
               budget: float, env: Mapping[str, str]) -> dict[str, str]:
    """Ask ipmipower for the power state of ``hosts`` (distinct addresses).

    A host name ipmipower cannot resolve is answered ``invalid
    hostname`` and the others are asked again without it.

    :param budget: seconds the run may take; ipmipower is killed and
        reaped after that.
    :returns: host -> answer, for every host of ``hosts``.
    :raises RunFailed: when ipmipower cannot run, runs out of time or
        leaves hosts unanswered (with what it said).
    :raises subprocess.TimeoutExpired: never; see RunFailed.
    """
    expires = time.monotonic() + budget
    answers: dict[str, str] = {}
    asked = list(dict.fromkeys(hosts))
    while asked:
        found = _run(group, asked, options, expires - time.monotonic(), env)
        answers.update(found)
        bad = [host for host in asked
               if found.get(host) == INVALID_HOSTNAME]
        if not bad:
            break
        asked = [host for host in asked if host not in found]
    missing = [host for host in hosts if host not in answers]
    if missing:
        raise RunFailed("ipmipower gave no answer for %d host(s) (%s)"
                        % (len(missing), ", ".join(missing[:3])))
    return answers


def _run(group: Group, hosts: Sequence[str], options: Options,
         budget: float, env: Mapping[str, str]) -> dict[str, str]:
    if budget <= 0.1:
        raise RunFailed("no time was left in the call's deadline")
    read_fd, write_fd = os.pipe()
    try:
        try:
            # NOTE: one short line into an empty pipe never blocks.
            os.write(write_fd, ("ipmipower-password %s\n"
                                % group.password).encode())
        finally:
            os.close(write_fd)
        command = argv(group, hosts, options, read_fd, budget * 0.8)
        LOG.debug("Running %(path)s for %(n)d host(s) (up to %(t).2f s): "
                  "%(argv)s", {"path": options.path, "n": len(hosts),
                               "t": budget, "argv": " ".join(command)})
        started = time.monotonic()
        try:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, pass_fds=(read_fd,), env=env,
                timeout=budget, check=False)
        except subprocess.TimeoutExpired:
            raise RunFailed("ipmipower did not finish within %.1f s (the "
                            "call's deadline); it was stopped"
                            % budget) from None
        except OSError as exc:
            raise RunFailed("could not run %r: %s; install freeipmi-tools "
                            "or set [ipmi] ipmipower_path"
                            % (options.path, exc.strerror or exc)) from None
    finally:
        os.close(read_fd)
    stdout = result.stdout.decode("utf-8", "replace")
    found = parse_output(stdout, hosts)
    LOG.debug("ipmipower read %(n)d of %(of)d host(s) in %(t).3f s "
              "(status %(rc)d)", {"n": len(found), "of": len(hosts),
                                  "t": time.monotonic() - started,
                                  "rc": result.returncode})
    if not found:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        text = (stderr or stdout.strip() or "no output")[:_MAX_QUOTED]
        raise RunFailed("ipmipower exited with status %d and no answer: %s"
                        % (result.returncode,
                           text.replace(group.password, "******")))
    return found

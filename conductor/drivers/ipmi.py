# SPDX-License-Identifier: Apache-2.0
"""The ``ipmi`` driver: power control with ``ipmitool`` over IPMI 2.0.

``driver_info`` fields:

``ipmi_address`` (required)
    Host name or IP address of the BMC.
``ipmi_port``
    UDP port of the BMC, 1-65535; default 623.
``ipmi_username`` (required)
    BMC user, at most 16 bytes.
``ipmi_password`` (required, secret)
    Its password, 1 to 20 bytes (the IPMI 2.0 limit), no line break.
``ipmi_cipher_suite``
    IPMI 2.0 cipher suite, 0-17; default 3 (HMAC-SHA1, AES-CBC-128).
``ipmi_priv_level``
    Privilege level of the session: ``ADMINISTRATOR`` (the default),
    ``OPERATOR`` or ``USER``.

Power sync reads many nodes at once with
:meth:`IPMIBatchPower.get_power_states`:
one FreeIPMI ``ipmipower --stat`` run per batch and group of nodes sharing
credentials, cipher suite, privilege and port (see
:mod:`conductor.drivers._freeipmi` for why one run per batch and not a
long-lived process), about 0.5 ms of CPU per node. Single reads and power
actions run one ``ipmitool -I lanplus ... chassis power <verb>``
process::

    driver = IPMIDriver()
    driver.power.validate(node)               # checks fields, no I/O
    states_by_uuid = driver.power.get_power_states(nodes)  # batch
    state = driver.power.get_power_state(node)  # states.POWER_ON/OFF
    driver.power.set_power_state(node, states.POWER_OFF)
    driver.power.reboot(node)

ipmitool runs with ``HOME`` set to a private directory holding a one-entry
IANA enterprise-numbers registry (``.local/usr/share/misc/
enterprise-numbers.txt``, which ipmitool reads instead of the system's
4.7 MB one): that cuts its CPU per call from about 24 ms to 6 ms
(``[ipmi] ipmitool_short_registry``). For power actions, ipmitool with it
(6 ms) was kept over ipmipower (3 ms for one host): actions are rare, and
ipmitool's verbose output tells a refused password from a silent BMC.

Passwords reach both programs through anonymous pipes (ipmitool reads
``-f /dev/fd/N``, ipmipower ``--config-file=/dev/fd/N``): never in an
argument list (visible in ``ps``), an environment or a file. A call never
outlives its deadline (:mod:`conductor.common.deadline`, at most
``[conductor] power_state_timeout``): the program is killed and reaped
when it comes, and its own timeouts (``[ipmi] retransmit_*``,
``freeipmi_session_timeout``) usually make it give up sooner on a silent
BMC, as that node's failure only.
"""

from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any, Mapping, Sequence

from conductor.common import deadline
from conductor.common import exceptions
from conductor import conf
from conductor.drivers import _freeipmi
from conductor.drivers import base
from conductor import states

LOG = logging.getLogger(__name__)

# NOTE: why a subprocess and not pyghmi in threads: pyghmi 1.6.19 stalls
# about 1 s per call when several threads of one process use it, and a
# second session to the same BMC in one process hangs. One ipmitool process
# per call costs about 25 ms of CPU, shares nothing between calls and can
# always be killed at the deadline.

DEFAULT_PORT = 623
DEFAULT_CIPHER_SUITE = 3
DEFAULT_PRIV_LEVEL = "ADMINISTRATOR"
#: Privilege levels a session may ask for (CALLBACK cannot control power).
PRIV_LEVELS = ("ADMINISTRATOR", "OPERATOR", "USER")
#: IPMI 2.0 limits, in bytes.
MAX_USERNAME_BYTES = 16
MAX_PASSWORD_BYTES = 20
MAX_CIPHER_SUITE = 17

#: Every field this driver reads; any other one is refused as a typo.
FIELDS = ("ipmi_address", "ipmi_port", "ipmi_username", "ipmi_password",
          "ipmi_cipher_suite", "ipmi_priv_level")
REQUIRED_FIELDS = ("ipmi_address", "ipmi_username", "ipmi_password")

# NOTE: time kept back from the deadline to kill and reap ipmitool and
# raise, so that the error recorded is this driver's own, naming the cause.
_KILL_RESERVE = 0.05

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")
_STATUS_RE = re.compile(r"^Chassis Power is (on|off)\s*$",
                        re.IGNORECASE | re.MULTILINE)
#: ipmitool -v chatter that says nothing about a failure.
_NOISE = ("loading iana pen registry", "running get vso capabilities",
          "invalid completion code received: invalid command",
          "discovered ipmb address")
#: Longest piece of ipmitool's stderr quoted in an error.
_MAX_QUOTED = 300

#: Seconds ``ipmitool -V`` may take at start-up (it talks to no BMC).
_PREPARE_TIMEOUT = 10

_VERBS = {states.POWER_ON: "on", states.POWER_OFF: "off"}

#: Where ipmitool looks for a registry of its own under $HOME.
_REGISTRY = os.path.join(".local", "usr", "share", "misc",
                         "enterprise-numbers.txt")


@dataclasses.dataclass(frozen=True)
class BMC:
    """A node's validated IPMI access; ``repr`` leaves the password out."""

    address: str
    port: int
    username: str
    password: str = dataclasses.field(repr=False)
    cipher_suite: int
    privilege: str = DEFAULT_PRIV_LEVEL

    def __str__(self) -> str:
        host = ("[%s]" % self.address if ":" in self.address
                else self.address)
        return "%s:%d" % (host, self.port)


def _as_int(value: Any) -> int | None:
    """``value`` as an int (ints and decimal strings only), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _is_host(value: str) -> bool:
    if value.startswith("-"):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return bool(_HOSTNAME_RE.match(value))
    return True


def parse_driver_info(node: base.DriverNode) -> BMC:
    """Check ``node.driver_info`` fully and return the BMC it describes.

    :raises: InvalidParameterValue naming the node and every missing,
        unknown or malformed field; a secret's value is never quoted.
    """
    info: Mapping[str, Any] = node.driver_info
    problems = base.field_problems(info, "ipmi", FIELDS, REQUIRED_FIELDS)

    address = info.get("ipmi_address")
    if address not in (None, ""):
        if not isinstance(address, str) or not _is_host(address):
            problems.append("ipmi_address must be a host name or an IP "
                            "address, got %r" % (address,))
    port = _as_int(info.get("ipmi_port", DEFAULT_PORT))
    if port is None or not 1 <= port <= 65535:
        problems.append("ipmi_port must be an integer from 1 to 65535, "
                        "got %r" % (info.get("ipmi_port"),))
    username = base.text_value(info.get("ipmi_username"))
    if info.get("ipmi_username") not in (None, ""):
        if (username is None
                or len(username.encode()) > MAX_USERNAME_BYTES
                or any(ch in username for ch in "\r\n\0")):
            problems.append("ipmi_username must be a string of 1 to %d "
                            "bytes on one line, got %r"
                            % (MAX_USERNAME_BYTES,
                               info.get("ipmi_username")))
    password = base.text_value(info.get("ipmi_password"))
    if info.get("ipmi_password") not in (None, ""):
        if password is None:
            problems.append("ipmi_password must be a string, got a %s"
                            % type(info.get("ipmi_password")).__name__)
        elif (len(password.encode()) > MAX_PASSWORD_BYTES
                or any(ch in password for ch in "\r\n\0")):
            problems.append("ipmi_password must be 1 to %d bytes on one "
                            "line (IPMI 2.0 limit); the value given is "
                            "%d bytes" % (MAX_PASSWORD_BYTES,
                                          len(password.encode())))
    suite = _as_int(info.get("ipmi_cipher_suite", DEFAULT_CIPHER_SUITE))
    if suite is None or not 0 <= suite <= MAX_CIPHER_SUITE:
        problems.append("ipmi_cipher_suite must be an integer from 0 to "
                        "%d, got %r" % (MAX_CIPHER_SUITE,
                                        info.get("ipmi_cipher_suite")))
    privilege = info.get("ipmi_priv_level", DEFAULT_PRIV_LEVEL)
    if privilege not in PRIV_LEVELS:
        problems.append("ipmi_priv_level must be one of %s, got %r"
                        % (", ".join(PRIV_LEVELS), privilege))
    if problems:
        raise exceptions.InvalidParameterValue(
            err="Node %s: invalid driver_info for the ipmi driver: %s"
                % (node.name or node.uuid, "; ".join(problems)))
    assert port is not None and suite is not None
    assert username is not None and password is not None
    return BMC(address=str(address), port=port, username=username,
               password=password, cipher_suite=suite,
               privilege=str(privilege))


def _scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` masked."""
    return text.replace(secret, base.MASK) if secret else text


def explain_failure(stderr: str, bmc: BMC) -> str:
    """Turn ipmitool's stderr into the cause, in words an operator can act on.

    ``-v`` makes ipmitool say *why* a session failed (wrong password,
    unknown user, silent BMC), which it otherwise reports alike.
    """
    text = stderr.lower()
    if "rakp 2 hmac is invalid" in text or "unauthorized name" in text:
        return ("the BMC refused user %r or its password (check "
                "ipmi_username and ipmi_password)" % bmc.username)
    if "insufficient privilege" in text or "privilege level" in text:
        return ("user %r lacks the privilege for chassis power control "
                "(operator or administrator is needed)" % bmc.username)
    if "address lookup for" in text:
        return "host name %r does not resolve" % bmc.address
    if ("invalid authentication algorithm" in text
            or "invalid integrity algorithm" in text
            or "invalid confidentiality algorithm" in text
            or "unsupported cipher suite" in text):
        return ("the BMC does not accept cipher suite %d (set "
                "ipmi_cipher_suite to one it supports, usually 3 or 17)"
                % bmc.cipher_suite)
    if ("get auth capabilities error" in text
            or "no response from remote controller" in text):
        return ("no answer from the BMC (is it reachable, is the port "
                "right and is IPMI over LAN enabled?)")
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip()
             and not any(noise in line.lower() for noise in _NOISE)]
    detail = "; ".join(lines) or "no error message"
    if len(detail) > _MAX_QUOTED:
        detail = detail[:_MAX_QUOTED] + "..."
    return "ipmitool said: %s" % detail


#: ipmipower's per-host answers, in words an operator can act on.
_IPMIPOWER_ANSWERS = (
    (("password invalid", "username invalid",
      "password verification timeout", "k_g invalid"),
     "the BMC refused user %(user)r or its password (check ipmi_username "
     "and ipmi_password)"),
    (("privilege level insufficient", "privilege level cannot be obtained"),
     "user %(user)r cannot get privilege %(priv)s or lacks the privilege "
     "for chassis power control (check ipmi_priv_level)"),
    (("cipher suite id unavailable",),
     "the BMC does not accept cipher suite %(suite)d (set "
     "ipmi_cipher_suite to one it supports, usually 3 or 17)"),
    (("connection timeout", "session timeout"),
     "no answer from the BMC (is it reachable, is the port right and is "
     "IPMI over LAN enabled?)"),
    ((_freeipmi.INVALID_HOSTNAME,),
     "host name %(address)r does not resolve"),
    (("bmc error", "bad rmcpplus status code"),
     "the BMC answered with an error (some BMCs, and OpenIPMI's ipmi_sim, "
     "need [ipmi] freeipmi_workaround_flags = opensesspriv)"),
)


def explain_answer(answer: str, bmc: BMC) -> str:
    """Turn one ipmipower answer (not ``on``/``off``) into the cause."""
    for answers, text in _IPMIPOWER_ANSWERS:
        if any(answer.startswith(known) for known in answers):
            return text % {"user": bmc.username, "priv": bmc.privilege,
                           "suite": bmc.cipher_suite,
                           "address": bmc.address}
    return "ipmipower said: %s" % _scrub(answer, bmc.password)[:_MAX_QUOTED]


class IPMIPower(base.PowerInterface):
    """Power interface of the ``ipmi`` driver.

    Options are read at every call from ``[ipmi]`` and ``[conductor]
    power_state_timeout``; the instance keeps no per-node state and is
    safe to share between threads.
    """

    def __init__(self) -> None:
        # NOTE: guards _home, the private directory made at the first
        # ipmitool run of this process (never before a fork: no thread or
        # socket, only a directory removed at exit).
        self._lock = threading.Lock()
        self._home: str | None = None

    def validate(self, node: base.DriverNode) -> None:
        """Check ``driver_info`` without talking to the BMC.

        :raises: InvalidParameterValue naming every bad field.
        """
        parse_driver_info(node)

    def bmc_address(self, node: base.DriverNode) -> str | None:
        """``ipmi_address:ipmi_port`` (calls to one BMC are spaced)."""
        address = node.driver_info.get("ipmi_address")
        if not isinstance(address, str) or not address.strip():
            return None
        port = node.driver_info.get("ipmi_port", DEFAULT_PORT)
        return base.host_port(address, str(port).strip())

    def get_power_state(self, node: base.DriverNode) -> str:
        """Return POWER_ON or POWER_OFF as the BMC reports it.

        :raises: InvalidParameterValue for bad ``driver_info``;
            PowerStateFailure when the BMC fails or answers nonsense;
            DeadlineExceeded when it does not answer in time.
        """
        bmc = parse_driver_info(node)
        with deadline.scope(_timeout()):
            return self._status(node, bmc)

    def set_power_state(self, node: base.DriverNode, target: str) -> None:
        """Ask the BMC to power the node on or off (a hard power off).

        Returns when the BMC accepted the request.

        :raises: InvalidParameterValue for a target other than POWER_ON or
            POWER_OFF, or bad ``driver_info``; PowerStateFailure or
            DeadlineExceeded as :meth:`get_power_state`.
        """
        if target not in _VERBS:
            raise exceptions.InvalidParameterValue(
                err="The ipmi driver cannot set power state %r; valid "
                    "targets: %s" % (target, ", ".join(sorted(_VERBS))))
        bmc = parse_driver_info(node)
        with deadline.scope(_timeout()):
            self._run(node, bmc, _VERBS[target])

    def reboot(self, node: base.DriverNode) -> None:
        """Power-cycle the node, or power it on if it is off.

        ``chassis power cycle`` is refused by many BMCs when the chassis
        is off, so the state is read first (two ipmitool runs).

        :raises: as :meth:`set_power_state`.
        """
        bmc = parse_driver_info(node)
        with deadline.scope(_timeout()):
            current = self._status(node, bmc)
            self._run(node, bmc,
                      "cycle" if current == states.POWER_ON else "on")

    def _status(self, node: base.DriverNode, bmc: BMC) -> str:
        output = self._run(node, bmc, "status")
        match = _STATUS_RE.search(output)
        if match is None:
            raise exceptions.PowerStateFailure(
                err="IPMI power status of node %s from BMC %s is not "
                    "understood: %r" % (node.uuid, bmc,
                                        _scrub(output.strip(),
                                               bmc.password)[:_MAX_QUOTED]))
        return (states.POWER_ON if match.group(1).lower() == "on"
                else states.POWER_OFF)

    def _run(self, node: base.DriverNode, bmc: BMC, verb: str) -> str:
        """Run ``ipmitool ... chassis power <verb>``; return its stdout.

        :raises: PowerStateFailure when ipmitool cannot run or fails;
            DeadlineExceeded when the deadline comes first (ipmitool is
            then killed and reaped before this returns).
        """
        options = conf.CONF.ipmi
        what = "IPMI 'chassis power %s' for node %s at BMC %s" % (
            verb, node.uuid, bmc)
        left = deadline.remaining(default=_timeout())
        assert left is not None
        budget = left - min(_KILL_RESERVE, left / 10)
        if budget <= 0:
            raise deadline.DeadlineExceeded(
                "%s was not started: its deadline had passed" % what)
        read_fd, write_fd = os.pipe()
        try:
            try:
                # NOTE: at most 20 bytes into an empty pipe never blocks.
                os.write(write_fd, bmc.password.encode())
            finally:
                os.close(write_fd)
            argv = [options.ipmitool_path, "-I", "lanplus",
                    "-H", bmc.address, "-p", str(bmc.port),
                    "-U", bmc.username, "-C", str(bmc.cipher_suite),
                    "-L", bmc.privilege,
                    "-N", str(options.retransmit_timeout),
                    "-R", str(options.retransmit_attempts),
                    "-v", "-f", "/dev/fd/%d" % read_fd,
                    "chassis", "power", verb]
            LOG.debug("Node %(node)s: running %(argv)s (up to %(t).2f s)",
                      {"node": node.uuid, "argv": " ".join(argv),
                       "t": budget})
            started = time.monotonic()
            try:
                result = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, pass_fds=(read_fd,),
                    env=self._ipmitool_env(), timeout=budget, check=False)
            except subprocess.TimeoutExpired:
                raise deadline.DeadlineExceeded(
                    "%s got no answer within %.1f s (the call's deadline; "
                    "[conductor] power_state_timeout); ipmitool was "
                    "stopped" % (what, budget)) from None
            except OSError as exc:
                raise exceptions.PowerStateFailure(
                    err="%s could not run %r: %s; install ipmitool or set "
                        "[ipmi] ipmitool_path"
                        % (what, options.ipmitool_path,
                           exc.strerror or exc)) from None
        finally:
            os.close(read_fd)
        elapsed = time.monotonic() - started
        stdout = result.stdout.decode("utf-8", "replace")
        if result.returncode != 0:
            stderr = _scrub(result.stderr.decode("utf-8", "replace"),
                            bmc.password)
            LOG.debug("Node %(node)s: ipmitool %(verb)s failed with status "
                      "%(rc)d after %(t).3f s: %(err)s",
                      {"node": node.uuid, "verb": verb,
                       "rc": result.returncode, "t": elapsed,
                       "err": stderr.strip()})
            raise exceptions.PowerStateFailure(
                err="%s failed: %s" % (what, explain_failure(stderr, bmc)))
        LOG.debug("Node %(node)s: ipmitool %(verb)s done in %(t).3f s",
                  {"node": node.uuid, "verb": verb, "t": elapsed})
        return stdout

    def _ipmitool_env(self) -> dict[str, str]:
        """ipmitool's environment; HOME holds the short registry if on."""
        env = _child_env()
        if conf.CONF.ipmi.ipmitool_short_registry:
            env["HOME"] = self._registry_home()
        return env

    def _registry_home(self) -> str:
        """A private HOME whose one-entry registry ipmitool reads.

        ipmitool reads ``$HOME/.local/usr/share/misc/enterprise-numbers
        .txt`` instead of the system's registry when it exists (its man
        page); one entry is all a chassis power command needs.
        """
        with self._lock:
            if self._home is None or not os.path.isfile(
                    os.path.join(self._home, _REGISTRY)):
                home = tempfile.mkdtemp(prefix="conductor-ipmitool-")
                path = os.path.join(home, _REGISTRY)
                os.makedirs(os.path.dirname(path), mode=0o700)
                with open(path, "w", encoding="ascii") as registry:
                    registry.write("0\n  Reserved\n")
                atexit.register(shutil.rmtree, home, True)
                self._home = home
            return self._home


class IPMIBatchPower(IPMIPower):
    """The ``ipmi`` power interface with batch reads through ipmipower."""

    def get_power_states(self, nodes: Sequence[base.DriverNode]
                         ) -> dict[str, str | BaseException]:
        """Read many nodes' power states, one ipmipower run per group.

        Nodes are grouped by user, password, cipher suite, privilege and
        port; the groups are read one after the other within the call's
        deadline. A node whose password FreeIPMI's configuration syntax
        cannot carry is read with ipmitool.

        :returns: uuid -> POWER_ON/POWER_OFF, or the exception of that
            node's failure (InvalidParameterValue, PowerStateFailure,
            DeadlineExceeded); nothing is raised for one node.
        """
        answers: dict[str, str | BaseException] = {}
        groups: dict[_freeipmi.Group, list[tuple[base.DriverNode, BMC]]] = {}
        single: list[tuple[base.DriverNode, BMC]] = []
        for node in nodes:
            try:
                bmc = parse_driver_info(node)
            except exceptions.InvalidParameterValue as exc:
                answers[node.uuid] = exc
                continue
            if not _freeipmi.config_safe(bmc.password):
                single.append((node, bmc))
                continue
            key = _freeipmi.Group(bmc.username, bmc.password,
                                  bmc.cipher_suite, bmc.privilege, bmc.port)
            groups.setdefault(key, []).append((node, bmc))
        with deadline.scope(_timeout()):
            for group, members in groups.items():
                answers.update(self._read_group(group, members))
            for node, bmc in single:
                try:
                    answers[node.uuid] = self._status(node, bmc)
                except Exception as exc:
                    answers[node.uuid] = exc
        return answers

    def _read_group(self, group: _freeipmi.Group,
                    members: list[tuple[base.DriverNode, BMC]]
                    ) -> dict[str, str | BaseException]:
        options = conf.CONF.ipmi
        left = deadline.remaining(default=_timeout())
        assert left is not None
        budget = left - min(_KILL_RESERVE, left / 10)
        hosts = list(dict.fromkeys(bmc.address for _, bmc in members))
        what = "IPMI power status (ipmipower) for node %s at BMC %s"
        try:
            found = _freeipmi.read_group(
                group, hosts, _freeipmi.Options(
                    path=options.ipmipower_path,
                    workaround_flags=list(options.freeipmi_workaround_flags),
                    session_timeout=options.freeipmi_session_timeout,
                    retransmission_timeout=(
                        options.freeipmi_retransmission_timeout)),
                budget=budget, env=_child_env())
        except _freeipmi.RunFailed as exc:
            return {node.uuid: exceptions.PowerStateFailure(
                err="%s failed: %s" % (what % (node.uuid, bmc),
                                       _scrub(str(exc), bmc.password)))
                    for node, bmc in members}
        result: dict[str, str | BaseException] = {}
        for node, bmc in members:
            answer = found[bmc.address]
            if answer == "on":
                result[node.uuid] = states.POWER_ON
            elif answer == "off":
                result[node.uuid] = states.POWER_OFF
            else:
                result[node.uuid] = exceptions.PowerStateFailure(
                    err="%s failed: %s" % (what % (node.uuid, bmc),
                                           explain_answer(answer, bmc)))
        return result


def _timeout() -> float:
    """``[conductor] power_state_timeout``, read at call time."""
    return float(conf.CONF.conductor.power_state_timeout)


def _child_env() -> dict[str, str]:
    """ipmitool's environment: ours, in the C locale, with no password."""
    env = {key: value for key, value in os.environ.items()
           if key != "IPMI_PASSWORD"}
    env["LC_ALL"] = "C"
    return env


class IPMIDriver(base.BaseDriver):
    """Power control of IPMI 2.0 BMCs through ipmipower and ipmitool."""

    def __init__(self) -> None:
        # NOTE: read when the driver is built, in each worker after its
        # configuration is loaded (the option is not mutable).
        if conf.CONF.ipmi.power_status_tool == "ipmipower":
            self.power = IPMIBatchPower()
        else:
            self.power = IPMIPower()

    def prepare(self) -> None:
        """Check that the programs the driver runs are there and run.

        ``ipmitool -V`` always (power actions), and ``ipmipower -V`` when
        ``[ipmi] power_status_tool`` is ``ipmipower``.

        :raises: DriverLoadError naming the program, its option and the
            package to install.
        """
        options = conf.CONF.ipmi
        _check_program(options.ipmitool_path, "ipmitool_path", "ipmitool")
        if options.power_status_tool == "ipmipower":
            _check_program(options.ipmipower_path, "ipmipower_path",
                           "freeipmi-tools")


def _check_program(path: str, option: str, package: str) -> None:
    """Run ``path -V``; log its version or raise DriverLoadError."""
    try:
        result = subprocess.run(
            [path, "-V"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=_child_env(), timeout=_PREPARE_TIMEOUT, check=False)
    except OSError as exc:
        raise exceptions.DriverLoadError(
            driver="ipmi",
            reason="cannot run [ipmi] %s %r: %s; install %s or set the "
                   "option" % (option, path, exc.strerror or exc,
                               package)) from None
    except subprocess.TimeoutExpired:
        raise exceptions.DriverLoadError(
            driver="ipmi",
            reason="'%s -V' did not finish within %d s"
                   % (path, _PREPARE_TIMEOUT)) from None
    output = result.stdout.decode("utf-8", "replace").strip()
    if result.returncode != 0:
        raise exceptions.DriverLoadError(
            driver="ipmi",
            reason="'%s -V' exited with status %d: %s (check [ipmi] %s)"
                   % (path, result.returncode,
                      output[:_MAX_QUOTED] or "no output", option))
    LOG.info("ipmi driver: %s", output.splitlines()[0] if output
             else "%s -V printed nothing" % path)

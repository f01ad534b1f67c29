# SPDX-License-Identifier: Apache-2.0
"""Real BMC peers for functional tests and benchmarks.

* :class:`IPMISims`: one OpenIPMI ``ipmi_sim`` per node on 127.0.0.1, each
  with a chassis-control script that keeps the power state in a file.
* :class:`RedfishEmulator`: one sushy-tools emulator with its fake driver
  (no libvirt) serving N systems, with HTTP basic authentication.
* :class:`SilentUDPPort`, :class:`SilentHTTPServer`,
  :class:`ErrorHTTPServer` and :func:`closed_port`: BMCs that never answer,
  answer 5xx, or are not there at all.

Usage::

    sims = self.useFixture(bmc.IPMISims(2, power=["on", "off"]))
    node = bmc.driver_node(sims.driver_info(0))
    sims.power(0)                  # "on", as the simulator holds it

    emu = self.useFixture(bmc.RedfishEmulator(3))
    emu.driver_info(1)             # redfish_* fields of system 1
    emu.power(1)                   # "On", read over HTTP

Every wait polls with a deadline; a missing binary fails the fixture with
what to install (nothing is skipped).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Sequence
import uuid

import fixtures

from conductor.drivers import base
from tests.functional import base as functional_base

USERNAME = "admin"
INSTALL_HINT = ("run tools/ci/install-bmc-emulators.sh (apt-get install "
                "ipmitool openipmi; pip install sushy-tools)")
#: How long an emulator may take to start answering.
START_TIMEOUT = 20.0

# The chassis-control program ipmi_sim runs as "<prog> <mc> get power",
# "<prog> <mc> set power 1", "<prog> <mc> set reset 1" and so on. The
# power state lives in $DIR/power (0 or 1); every change is appended to
# $DIR/actions so that tests can see a power cycle happen.
_CHASSIS_SCRIPT = """#!/bin/sh
dir='%(dir)s'
shift
op=$1
shift
case "$op" in
get)
    for item in "$@"; do
        if [ "$item" = power ]; then
            printf 'power:%%s\\n' "$(cat "$dir/power")"
        fi
    done
    ;;
set)
    while [ $# -ge 2 ]; do
        printf '%%s %%s\\n' "$1" "$2" >> "$dir/actions"
        if [ "$1" = power ]; then
            printf '%%s\\n' "$2" > "$dir/power.new"
            mv "$dir/power.new" "$dir/power"
        fi
        shift 2
    done
    ;;
esac
exit 0
"""

# One BMC on channel 1 of MC 0x20, IPMI 2.0 (lanplus) with user 2.
_LAN_CONF = """name "%(name)s"
set_working_mc 0x20
  startlan 1
    addr %(address)s %(port)d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid %(guid)s
  endlan
  chassis_control "%(script)s 0x20"
  user 2 true "%(user)s" "%(password)s" admin 10 none md2 md5 straight
"""

# mc_setbmc is needed, or ipmi_sim never opens its LAN port ("No bmc_ipmb
# specified or configured").
_SIM_COMMANDS = """mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_setbmc 0x20
mc_enable 0x20
"""

# An RMCP presence ping (ASF, IANA 4542): ipmi_sim answers it with a pong
# as soon as its LAN port is open, without any session.
_RMCP_PING = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE,
                    0x80, 0x01, 0x00, 0x00])


def require_binary(name: str, hint: str = INSTALL_HINT) -> str:
    """The path of ``name`` (next to this Python first), or a clear failure.

    :raises: AssertionError saying what to install.
    """
    local = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found is None:
        raise AssertionError("%s is not installed: %s" % (name, hint))
    return found


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody listens on: an unreachable BMC."""
    return free_port(kind)


def driver_node(info: dict[str, Any], name: str | None = None,
                driver: str = "ipmi") -> base.DriverNode:
    """A node as drivers see it, with a fresh uuid."""
    return base.DriverNode(uuid=str(uuid.uuid4()), name=name, driver=driver,
                           driver_info=dict(info), power_state=None)


#: Bounded polling of what a peer process shows (the shared helper).
wait_for = functional_base.wait_for


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a peer, kill it if it lingers, and reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as log:
            return log.read()[-limit:].decode("utf-8", "replace")
    except OSError:
        return ""


def _one_per(value: str | Sequence[str], count: int, what: str) -> list[str]:
    """``value`` for each of ``count`` BMCs: one for all, or one each."""
    values = [value] * count if isinstance(value, str) else list(value)
    if len(values) != count:
        raise ValueError("power needs one value per %s" % what)
    return values


#: The standard IPMI port, used by simulators on their own address.
IPMI_PORT = 623


def loopback_address(block: int, index: int) -> str:
    """The ``index``-th loopback address of ``block`` (127.<block>.x.y).

    Every address of 127.0.0.0/8 reaches this host on Linux, with no
    set-up: simulators on distinct addresses can all use port 623.
    """
    high, low = divmod(index, 250)
    return "127.%d.%d.%d" % (block, high, low + 1)


class IPMISims(fixtures.Fixture):
    """``count`` ipmi_sim processes, one BMC per node.

    By default each listens on 127.0.0.1 on a free UDP port. With
    ``own_address`` each has its own loopback address 127.B.x.y on the
    standard port 623 (B picked at random from 64-254, another one if an
    address is taken), as a fleet of real BMCs does: tools that report
    per host (FreeIPMI's ``ipmipower``) then name each BMC unambiguously.

    :param power: initial power state of each node, "on" or "off"
        (one value for all, or one per node; default "off").
    """

    def __init__(self, count: int, power: str | Sequence[str] = "off",
                 password: str | None = None,
                 own_address: bool = False) -> None:
        super().__init__()
        self.count = count
        self._initial = _one_per(power, count, "node")
        #: The BMC password (random unless given), shared by all nodes.
        self.password = password or secrets.token_hex(8)
        self.own_address = own_address
        self.ports: list[int] = []
        self.addresses: list[str] = []
        self.dirs: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._block = secrets.choice(range(64, 255))

    def _setUp(self) -> None:
        self._sim = require_binary("ipmi_sim")
        require_binary("ipmitool")
        root = self.useFixture(fixtures.TempDir()).path
        for index in range(self.count):
            node_dir = os.path.join(root, "bmc%d" % index)
            os.makedirs(os.path.join(node_dir, "state"))
            with open(os.path.join(node_dir, "power"), "w") as power:
                power.write("1\n" if self._initial[index] == "on" else "0\n")
            script = os.path.join(node_dir, "chassis")
            with open(script, "w") as out:
                out.write(_CHASSIS_SCRIPT % {"dir": node_dir})
            os.chmod(script, 0o755)
            with open(os.path.join(node_dir, "commands"), "w") as out:
                out.write(_SIM_COMMANDS)
            self.dirs.append(node_dir)
            self.ports.append(0)
            self.addresses.append("127.0.0.1")
            self._procs.append(self._start(index))
        self.addCleanup(self._stop_all)
        # NOTE: a large fleet takes a while to start on a busy host.
        expires = time.monotonic() + START_TIMEOUT + 0.05 * self.count
        index = 0
        while index < self.count:
            moved = self._wait_ready(index, expires)
            index = 0 if moved else index + 1

    def _start(self, index: int, fresh: bool = True
               ) -> subprocess.Popen[bytes]:
        node_dir = self.dirs[index]
        if not fresh:
            port, address = self.ports[index], self.addresses[index]
        elif self.own_address:
            port, address = IPMI_PORT, loopback_address(self._block, index)
        else:
            port, address = free_port(socket.SOCK_DGRAM), "127.0.0.1"
        self.ports[index], self.addresses[index] = port, address
        conf = os.path.join(node_dir, "lan.conf")
        with open(conf, "w") as out:
            out.write(_LAN_CONF % {
                "name": "bmc%d" % index, "port": port, "address": address,
                "guid": uuid.uuid4().hex,
                "script": os.path.join(node_dir, "chassis"),
                "user": USERNAME, "password": self.password})
        log = open(os.path.join(node_dir, "ipmi_sim.log"), "ab")
        try:
            # NOTE: -n and a /dev/null stdin: with a console on a
            # non-terminal stdin ipmi_sim aborts (epoll_ctl EPERM).
            return subprocess.Popen(
                [self._sim, "-n", "-c", conf,
                 "-f", os.path.join(node_dir, "commands"),
                 "-s", os.path.join(node_dir, "state")],
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def _wait_ready(self, index: int, expires: float) -> bool:
        """Ping until the simulator answers.

        A simulator that exited (its port was taken meanwhile) is started
        again on another port; with ``own_address``, every simulator moves
        to another block of addresses.

        :returns: True when every simulator moved (wait for all again).
        """
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            while True:
                proc = self._procs[index]
                if proc.poll() is not None:
                    if time.monotonic() > expires:
                        break
                    if self.own_address:
                        # NOTE: another set of simulators holds this
                        # block: move all of ours to another one.
                        self._block = secrets.choice(range(64, 255))
                        self._restart_all()
                        return True
                    self._procs[index] = self._start(index)
                    continue
                try:
                    sock.sendto(_RMCP_PING, (self.addresses[index],
                                             self.ports[index]))
                    if sock.recv(512):
                        return False
                except (socket.timeout, ConnectionRefusedError):
                    pass
                if time.monotonic() > expires:
                    break
        raise AssertionError(
            "ipmi_sim for node %d did not answer on %s UDP port %d within "
            "%.0f s; its log:\n%s" % (
                index, self.addresses[index], self.ports[index],
                START_TIMEOUT,
                _tail(os.path.join(self.dirs[index], "ipmi_sim.log"))))

    def _restart_all(self) -> None:
        """Start every simulator again, on fresh addresses."""
        for index in range(self.count):
            _stop(self._procs[index])
            self._procs[index] = self._start(index)

    def _stop_all(self) -> None:
        for proc in self._procs:
            _stop(proc)

    def stop(self, index: int) -> None:
        """Stop simulator ``index``: its BMC no longer answers."""
        _stop(self._procs[index])

    def start(self, index: int) -> None:
        """Start simulator ``index`` again, at the same address and port."""
        if self._procs[index].poll() is None:
            return
        self._procs[index] = self._start(index, fresh=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.05)
            wait_for(lambda: self._pong(sock, index), START_TIMEOUT,
                     "ipmi_sim %d did not answer again" % index)

    def _pong(self, sock: socket.socket, index: int) -> bool:
        try:
            sock.sendto(_RMCP_PING, (self.addresses[index],
                                     self.ports[index]))
            return bool(sock.recv(512))
        except (socket.timeout, ConnectionRefusedError):
            return False

    def pids(self) -> list[int]:
        """Process ids of the running simulators (for CPU accounting)."""
        return [proc.pid for proc in self._procs]

    def driver_info(self, index: int, **changes: Any) -> dict[str, Any]:
        """The ``ipmi_*`` fields of node ``index``, with ``changes``."""
        info: dict[str, Any] = {
            "ipmi_address": self.addresses[index],
            "ipmi_port": self.ports[index],
            "ipmi_username": USERNAME, "ipmi_password": self.password,
            "ipmi_cipher_suite": 3}
        info.update(changes)
        return info

    def power(self, index: int) -> str:
        """"on" or "off", as the simulator's chassis holds it."""
        with open(os.path.join(self.dirs[index], "power")) as power:
            return "on" if power.read().strip() == "1" else "off"

    def actions(self, index: int) -> list[str]:
        """Every chassis change of node ``index``: "power 0", "reset 1"..."""
        try:
            with open(os.path.join(self.dirs[index], "actions")) as log:
                return log.read().split("\n")[:-1]
        except FileNotFoundError:
            return []


class RedfishEmulator(fixtures.Fixture):
    """A sushy-tools emulator with ``count`` fake systems on a free port.

    The fake driver applies a power change 1 to 11 s after it is asked.

    :param power: initial "On"/"Off" of each system (one value for all or
        one per system).
    """

    def __init__(self, count: int, power: str | Sequence[str] = "Off",
                 password: str | None = None) -> None:
        super().__init__()
        self.count = count
        self._initial = _one_per(power, count, "system")
        #: The emulator's password for USERNAME (random unless given).
        self.password = password or secrets.token_hex(8)
        self.port = 0
        self.ids = [str(uuid.uuid4()) for _ in range(count)]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def _setUp(self) -> None:
        binary = require_binary("sushy-emulator")
        try:
            import bcrypt
        except ImportError:
            raise AssertionError("bcrypt (a sushy-tools dependency) is "
                                 "missing: " + INSTALL_HINT)
        self.dir = self.useFixture(fixtures.TempDir()).path
        auth_file = os.path.join(self.dir, "htpasswd")
        digest = bcrypt.hashpw(self.password.encode(),
                               bcrypt.gensalt(rounds=4)).decode()
        with open(auth_file, "w") as out:
            out.write("%s:%s\n" % (USERNAME, digest))
        systems = [{"uuid": system_id, "name": "node-%d" % index,
                    "power_state": self._initial[index], "nics": []}
                   for index, system_id in enumerate(self.ids)]
        self._log = os.path.join(self.dir, "emulator.log")
        self.addCleanup(self._stop)
        expires = time.monotonic() + START_TIMEOUT
        while True:
            self.port = free_port()
            config = os.path.join(self.dir, "emulator.conf")
            with open(config, "w") as out:
                out.write("SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
                          "SUSHY_EMULATOR_LISTEN_PORT = %d\n"
                          "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
                          "SUSHY_EMULATOR_STATE_DIR = %r\n"
                          "SUSHY_EMULATOR_AUTH_FILE = %r\n"
                          "SUSHY_EMULATOR_FAKE_SYSTEMS = %r\n"
                          % (self.port, os.path.join(self.dir, "state"),
                             auth_file, systems))
            with open(self._log, "ab") as log:
                self._proc = subprocess.Popen(
                    [binary, "--config", config], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            if self._wait_ready(expires):
                return
            if time.monotonic() > expires:
                raise AssertionError(
                    "sushy-emulator did not answer on port %d within "
                    "%.0f s; its log:\n%s" % (self.port, START_TIMEOUT,
                                              _tail(self._log)))

    def _wait_ready(self, expires: float) -> bool:
        """True once the emulator answers; False if it exited (port taken)."""
        assert self._proc is not None
        while time.monotonic() < expires:
            if self._proc.poll() is not None:
                return False
            try:
                # NOTE: the Systems collection, not the root: the fake
                # driver builds its store at the first request for it.
                status, _ = self.request("GET", "/redfish/v1/Systems",
                                         timeout=5)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = 5) -> tuple[int, Any]:
        """One authenticated request; returns (status, parsed JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout)
        token = base64.b64encode(
            ("%s:%s" % (USERNAME, self.password)).encode()).decode()
        headers = {"Authorization": "Basic " + token}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data.decode("utf-8", "replace")
        return response.status, parsed

    def pids(self) -> list[int]:
        """Process id of the emulator (for CPU accounting)."""
        return [self._proc.pid] if self._proc is not None else []

    def log(self) -> str:
        """The emulator's output so far: one line per request served."""
        with open(self._log, encoding="utf-8", errors="replace") as log:
            return log.read()

    def driver_info(self, index: int, **changes: Any) -> dict[str, Any]:
        """The ``redfish_*`` fields of system ``index``, with ``changes``."""
        info: dict[str, Any] = {
            "redfish_address": self.address,
            "redfish_system_id": self.ids[index],
            "redfish_username": USERNAME,
            "redfish_password": self.password}
        info.update(changes)
        return info

    def power(self, index: int) -> str:
        """The system's PowerState ("On"/"Off"), read over HTTP."""
        status, body = self.request("GET",
                                    "/redfish/v1/Systems/" + self.ids[index])
        if status != 200:
            raise AssertionError("emulator answered %s: %s" % (status, body))
        return str(body["PowerState"])


class SilentUDPPort(fixtures.Fixture):
    """A bound UDP port that reads nothing and answers nothing: a hung BMC."""

    def _setUp(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self._sock.close)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])


class SilentHTTPServer(fixtures.Fixture):
    """A TCP port that accepts connections and never answers: a hung BMC.

    The kernel completes the handshake of connections waiting in the
    listen backlog, so nothing needs to accept them.
    """

    def _setUp(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(self._sock.close)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    @property
    def address(self) -> str:
        return "http://127.0.0.1:%d" % self.port


class DeadTCPAddress(fixtures.Fixture):
    """A TCP address whose connections never open: a dead BMC address.

    A listening socket that never accepts, with its accept queue filled:
    the kernel then drops every new SYN, so a client's connect hangs as
    it does towards a powered-off BMC (not refused, as a closed port is).
    """

    def _setUp(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(self._sock.close)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(0)
        self.port = int(self._sock.getsockname()[1])
        self._fillers: list[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in self._fillers])
        for _ in range(8):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            self._fillers.append(filler)
            filler.connect_ex(("127.0.0.1", self.port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.3)
            try:
                probe.connect(("127.0.0.1", self.port))
            except (socket.timeout, TimeoutError):
                return
        raise AssertionError("could not fill the accept queue of port %d"
                             % self.port)

    @property
    def address(self) -> str:
        return "http://127.0.0.1:%d" % self.port


class ErrorHTTPServer(fixtures.Fixture):
    """An HTTP server answering every request with ``status`` (a 5xx BMC).

    ``requests`` counts what it received.
    """

    def __init__(self, status: int = 500) -> None:
        super().__init__()
        self.status = status
        self.requests = 0

    def _setUp(self) -> None:
        fixture = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                fixture.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = json.dumps({"error": {
                    "code": "Base.1.0.GeneralError",
                    "message": "Simulated BMC failure"}}).encode()
                self.send_response(fixture.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                       Handler)
        self.port = int(self._server.server_address[1])
        thread = threading.Thread(target=self._server.serve_forever,
                                  kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        self.addCleanup(self._server.server_close)
        self.addCleanup(thread.join, 5)
        self.addCleanup(self._server.shutdown)

    @property
    def address(self) -> str:
        return "http://127.0.0.1:%d" % self.port

# SPDX-License-Identifier: Apache-2.0
"""Private services for fault tests and tools/bench_faults.py.

A fault test stops and restarts a service; it must be one it started
itself, never the machine's shared one. Standard library only, so that
tools/bench_faults.py (which puts the repository root on ``sys.path``)
can import it without the test requirements.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
import uuid

#: Start and stop bounds (seconds).
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class ServiceError(RuntimeError):
    """A private service did not start or did not obey a command."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT
        ) -> int:
    """Wait for ``proc``; SIGKILL it past ``timeout``. Its exit code."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def _tail(path: str, size: int = 2000) -> str:
    try:
        with open(path, errors="replace") as stream:
            return stream.read()[-size:]
    except OSError:
        return ""


class RabbitMQ:
    """A private RabbitMQ node: own node name, ports and directories.

    Its own config file too: /etc/rabbitmq/rabbitmq.conf pins the
    listener to 5672, the shared broker's port. The directories belong
    to the rabbitmq user when run as root, since rabbitmq-server drops
    root to it.
    """

    def __init__(self, workdir: str, prefix: str = "private") -> None:
        self.dir = os.path.join(workdir, "rabbitmq")
        self.node = "%s-%d-%s@localhost" % (prefix, os.getpid(),
                                            uuid.uuid4().hex[:8])
        self.port = free_port()
        self.log_file = os.path.join(self.dir, "log",
                                     "%s.log" % self.node)
        os.makedirs(os.path.join(self.dir, "mnesia"))
        os.makedirs(os.path.join(self.dir, "log"))
        open(os.path.join(self.dir, "plugins"), "w").close()
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as stream:
            stream.write("listeners.tcp.local = 127.0.0.1:%d\n"
                         "loopback_users = none\n" % self.port)
        if os.getuid() == 0:
            try:
                entry = pwd.getpwnam("rabbitmq")
            except KeyError:
                pass
            else:
                for root, dirs, files in os.walk(self.dir):
                    for name in [root] + [os.path.join(root, f)
                                          for f in dirs + files]:
                        os.chown(name, entry.pw_uid, entry.pw_gid)
        self.env = dict(
            os.environ, RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(free_port()),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "plugins"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq.conf"),
            RABBITMQ_FEATURE_FLAGS_FILE=os.path.join(self.dir, "ff"),
            RABBITMQ_PID_FILE=os.path.join(self.dir, "pid"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return "rabbit://guest:guest@127.0.0.1:%d/" % self.port

    def ctl(self, *args: str, timeout: float = START_TIMEOUT
            ) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> args``, output captured."""
        try:
            return subprocess.run(
                ["rabbitmqctl", "-n", self.node, *args], env=self.env,
                capture_output=True, text=True, timeout=timeout + 10)
        except FileNotFoundError:
            raise ServiceError("rabbitmqctl is not installed: cannot run "
                               "a private RabbitMQ")

    def _check(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        result = self.ctl(*args, timeout=timeout)
        if result.returncode != 0:
            raise ServiceError(
                "rabbitmqctl -n %s %s failed (%d): %s"
                % (self.node, " ".join(args), result.returncode,
                   (result.stderr or result.stdout).strip()[-1000:]))

    def start(self) -> None:
        """Start the node; :class:`ServiceError` when it does not come up."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.env["RABBITMQ_PID_FILE"])
        try:
            self.proc = subprocess.Popen(
                ["rabbitmq-server"], env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        except FileNotFoundError:
            raise ServiceError("rabbitmq-server is not installed: cannot "
                               "start a private RabbitMQ")
        result = self.ctl("wait", self.env["RABBITMQ_PID_FILE"],
                          "--timeout", str(int(START_TIMEOUT)))
        if result.returncode != 0:
            code = self.proc.poll()
            self.stop()
            raise ServiceError(
                "private RabbitMQ %s did not start within %ds (%s; "
                "rabbitmqctl wait: %s); log tail:\n%s"
                % (self.node, START_TIMEOUT,
                   "rabbitmq-server running" if code is None
                   else "rabbitmq-server exited with %d" % code,
                   (result.stderr or result.stdout).strip()[-500:],
                   _tail(self.log_file)))

    def stop_app(self) -> None:
        """Stop the RabbitMQ application; the Erlang node stays up."""
        self._check("stop_app")

    def start_app(self) -> None:
        self._check("start_app")

    def stop(self) -> None:
        """Stop the whole node; kill it when it does not stop in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ServiceError,
                                     subprocess.TimeoutExpired):
                self.ctl("stop", timeout=STOP_TIMEOUT)
            end(self.proc)
        # NOTE: the node runs in the session (and process group) start()
        # gave rabbitmq-server; whatever of it is left goes.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


class MariaDB:
    """A private mariadbd on a loopback port, in its own datadir.

    Created (``mariadb-install-db``) in the constructor; root has no
    password and connects over TCP at :attr:`admin_url`.
    """

    def __init__(self, workdir: str) -> None:
        self.dir = os.path.join(workdir, "mariadb")
        self.datadir = os.path.join(self.dir, "data")
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        os.makedirs(self.dir)
        try:
            subprocess.run(
                ["mariadb-install-db", "--no-defaults",
                 "--datadir=%s" % self.datadir, "--user=%s" % _user(),
                 "--auth-root-authentication-method=normal",
                 "--skip-test-db"],
                check=True, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=120)
        except FileNotFoundError:
            raise ServiceError("mariadb-install-db is not installed: cannot "
                               "run a private MariaDB")
        except subprocess.CalledProcessError as exc:
            raise ServiceError("mariadb-install-db failed (%d) in %s"
                               % (exc.returncode, self.datadir))

    @property
    def admin_url(self) -> str:
        return "mysql+pymysql://root@127.0.0.1:%d/" % self.port

    def start(self) -> None:
        """Start mariadbd; :class:`ServiceError` when it does not answer."""
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--datadir=%s" % self.datadir,
             "--port=%d" % self.port, "--bind-address=127.0.0.1",
             "--socket=%s" % os.path.join(self.dir, "sock"),
             "--pid-file=%s" % os.path.join(self.dir, "pid"),
             "--log-error=%s" % os.path.join(self.dir, "error.log"),
             "--user=%s" % _user(), "--skip-grant-tables",
             "--skip-name-resolve", "--max-connections=500",
             "--innodb-flush-log-at-trx-commit=2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise ServiceError(
                    "private mariadbd exited (%s); log tail:\n%s"
                    % (self.proc.returncode,
                       _tail(os.path.join(self.dir, "error.log"))))
            try:
                with socket.create_connection(("127.0.0.1", self.port),
                                              timeout=1) as sock:
                    # NOTE: the server greets a client first: a greeting
                    # means it accepts connections.
                    sock.settimeout(2)
                    if sock.recv(1):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError("private mariadbd did not accept "
                                   "connections within %ds" % START_TIMEOUT)
            time.sleep(0.2)

    def crash(self) -> None:
        """SIGKILL: an outage as abrupt as a lost database host."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            end(self.proc)

# SPDX-License-Identifier: Apache-2.0
"""The ``fake`` driver: no hardware, for tests, demos and benchmarks.

``driver_info`` keys (all optional):

``fake_latency_ms``
    Milliseconds every BMC call takes (bounded by the call's deadline, so
    a "hung" BMC is simulated with a latency far beyond it).
``fake_ignore_deadline``
    ``true`` makes every call take its whole ``fake_latency_ms`` whatever
    the call's deadline: a driver that does not honour
    ``deadline.remaining()`` in front of a hung BMC.
``fake_fail``
    ``true`` makes every BMC call fail; ``"get"`` or ``"set"`` fails only
    reads or only changes (reboot counts as a change).
``fake_power_state``
    The hardware's power state until the conductor changes it
    (``"power on"`` or ``"power off"``); by default the hardware reports
    what the database recorded, or ``"power off"`` for a new node.
``fake_call_log``
    Path of a file to which every power change (``set_power_state`` or
    ``reboot``) appends one JSON line as the call starts: ``node``,
    ``op``, ``target``, ``applied`` (false when the fake fails changes),
    ``pid``, ``time`` (seconds since the epoch), in one ``O_APPEND``
    write, so several processes may share the file. The change takes
    effect as the call starts (``fake_latency_ms`` is the time the BMC
    takes to answer: a call cut short still reached the BMC), and the
    fake BMC then keeps its power state in that file, so that it survives
    a restart of the conductor. Tests and benchmarks count the changes
    each node received. Each process reads the file once, incrementally
    (only what was appended since its last read), however often it polls.
``fake_timing_log``
    Path of a file to which every BMC call, reads included, appends one
    JSON line as it ends: ``node``, ``op`` (``get_power_state``,
    ``set_power_state`` or ``reboot``), ``bmc`` (``fake_bmc_address`` or
    null), ``ok`` (false when it failed or ran out of time), ``pid``,
    ``start`` and ``end`` (seconds since the epoch). One ``O_APPEND``
    write per call, so several processes may share the file. Benchmarks
    and tests count polls per node and check the spacing of calls to one
    BMC address from it.
``fake_bmc_address``
    The BMC address this node's calls are serialised and spaced by
    (``[conductor] bmc_min_interval``); nodes with the same value share a
    fake BMC. By default a fake node has no BMC address (no spacing).
``fake_settle_ms``
    With ``fake_call_log``: milliseconds after a change started before
    reads through the log report it (a real BMC accepts a command at once
    and reports the new state only once the power transition is over);
    until then they report the state before it. Default 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Any
import warnings

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base
from conductor import periodics
from conductor import states

LOG = logging.getLogger(__name__)

#: Seconds between runs of the ``fake-periodic`` driver's example tasks.
PERIODIC_SPACING = 1.0
#: The driver_info fields the fake driver reads.
FIELDS = ("fake_latency_ms", "fake_fail", "fake_power_state",
          "fake_call_log", "fake_timing_log", "fake_bmc_address",
          "fake_settle_ms", "fake_ignore_deadline")

_FAIL_VALUES = {"true": "all", "all": "all", "get": "get", "set": "set",
                "false": None, "": None}


def _fail_mode(info: Any) -> str | None:
    value = info.get("fake_fail", False)
    if isinstance(value, bool):
        return "all" if value else None
    return _FAIL_VALUES[str(value).lower()]


class FakePower(base.PowerInterface):
    """Power interface of the fake driver; hardware state lives in memory."""

    def __init__(self) -> None:
        # NOTE: guards _hardware, written by concurrent power actions, and
        # _tails, read by concurrent polls.
        self._lock = threading.Lock()
        self._hardware: dict[str, str] = {}
        self._tails: dict[str, _LogTail] = {}

    def bmc_address(self, node: base.DriverNode) -> str | None:
        address = node.driver_info.get("fake_bmc_address")
        return address.strip() if isinstance(address, str) else None

    def validate(self, node: base.DriverNode) -> None:
        info = node.driver_info
        problems = []
        for field in ("fake_latency_ms", "fake_settle_ms"):
            value = info.get(field, 0)
            if (isinstance(value, bool)
                    or not isinstance(value, (int, float)) or value < 0):
                problems.append("%s must be a number >= 0, got %r"
                                % (field, value))
        fail = info.get("fake_fail", False)
        if not isinstance(fail, bool) and str(fail).lower() not in \
                _FAIL_VALUES:
            problems.append("fake_fail must be true, false, 'get' or 'set', "
                            "got %r" % (fail,))
        power = info.get("fake_power_state")
        if power is not None and power not in (states.POWER_ON,
                                               states.POWER_OFF):
            problems.append("fake_power_state must be '%s' or '%s', got %r"
                            % (states.POWER_ON, states.POWER_OFF, power))
        for key in ("fake_call_log", "fake_timing_log"):
            log = info.get(key)
            if log is not None and (not isinstance(log, str) or not log):
                problems.append("%s must be a file path, got %r"
                                % (key, log))
        address = info.get("fake_bmc_address")
        if address is not None and (not isinstance(address, str)
                                    or not address.strip()):
            problems.append("fake_bmc_address must be a non-empty string, "
                            "got %r" % (address,))
        ignore = info.get("fake_ignore_deadline", False)
        if not isinstance(ignore, bool):
            problems.append("fake_ignore_deadline must be true or false, "
                            "got %r" % (ignore,))
        problems += base.field_problems(info, "fake", FIELDS)
        if problems:
            raise exceptions.InvalidParameterValue(
                err="Node %s: %s" % (node.name or node.uuid,
                                     "; ".join(problems)))

    def _call(self, node: base.DriverNode, kind: str, op: str) -> None:
        info = node.driver_info
        started = time.time()
        ok = False
        LOG.debug("Fake BMC of node %s: %s call starts", node.uuid, kind)
        try:
            latency = float(info.get("fake_latency_ms", 0) or 0) / 1000.0
            if latency > 0 and info.get("fake_ignore_deadline") is True:
                time.sleep(latency)
            elif latency > 0:
                left = deadline.remaining()
                if left is not None and left < latency:
                    time.sleep(left)
                    raise deadline.DeadlineExceeded(
                        what="Fake BMC of node %s" % node.uuid,
                        seconds=left)
                time.sleep(latency)
            mode = _fail_mode(info)
            if mode == "all" or mode == kind:
                raise exceptions.PowerStateFailure(
                    err="Fake BMC of node %s failed (fake_fail=%s)"
                        % (node.uuid, info.get("fake_fail")))
            ok = True
        finally:
            path = info.get("fake_timing_log")
            if path:
                _log_timing(path, node.uuid, op, self.bmc_address(node), ok,
                            started, time.time())

    def _change(self, node: base.DriverNode, op: str,
                target: str) -> None:
        """Log a power change as it starts (with ``fake_call_log``)."""
        path = node.driver_info.get("fake_call_log")
        if not path:
            return
        mode = _fail_mode(node.driver_info)
        _log_call(path, {"node": node.uuid, "op": op, "target": target,
                         "applied": mode not in ("all", "set"),
                         "pid": os.getpid(), "time": time.time()})

    def _logged_state(self, node: base.DriverNode) -> str | None:
        """The power state the call log gives the node, if any."""
        path = node.driver_info.get("fake_call_log")
        if not path:
            return None
        settle = float(node.driver_info.get("fake_settle_ms", 0) or 0)
        with self._lock:
            tail = self._tails.get(path)
            if tail is None:
                tail = self._tails[path] = _LogTail(path)
            return tail.state(node.uuid, time.time() - settle / 1000.0)

    def get_power_state(self, node: base.DriverNode) -> str:
        self._call(node, "get", "get_power_state")
        with self._lock:
            state = self._hardware.get(node.uuid)
        logged = self._logged_state(node)
        if logged is not None or node.driver_info.get("fake_settle_ms"):
            # NOTE: a change still settling is not reported yet, here
            # either.
            state = logged
        if state is None:
            state = (node.driver_info.get("fake_power_state")
                     or node.power_state or states.POWER_OFF)
        LOG.debug("Fake BMC of node %s: power state read: %s", node.uuid,
                  state)
        return state

    def set_power_state(self, node: base.DriverNode, target: str) -> None:
        if target not in (states.POWER_ON, states.POWER_OFF):
            raise exceptions.InvalidParameterValue(
                err="Fake driver cannot set power state %r" % (target,))
        self._change(node, "set_power_state", target)
        self._call(node, "set", "set_power_state")
        with self._lock:
            self._hardware[node.uuid] = target

    def reboot(self, node: base.DriverNode) -> None:
        self._change(node, "reboot", states.POWER_ON)
        self._call(node, "set", "reboot")
        with self._lock:
            self._hardware[node.uuid] = states.POWER_ON


class _LogTail:
    """The power states a ``fake_call_log`` gives, read incrementally.

    Each refresh reads only the complete lines appended since the last
    one (one ``stat`` when nothing was appended); a file replaced or
    truncated is read again from its start. Not thread-safe: the caller
    holds a lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._ident: tuple[int, int] | None = None
        self._offset = 0
        #: node -> its applied changes (time, target), oldest first; only
        #: the last one settled and those after it are kept.
        self._states: dict[str, list[tuple[float, str]]] = {}

    def state(self, uuid: str, settled_before: float) -> str | None:
        """The target of the node's last change applied before a time.

        :param settled_before: changes logged after this (epoch seconds)
            have not settled yet: reads still report the state before.
        """
        self._refresh()
        changes = self._states.get(uuid)
        if not changes:
            return None
        settled = [i for i, (at, _) in enumerate(changes)
                   if at <= settled_before]
        if not settled:
            return None
        del changes[:settled[-1]]
        return changes[0][1]

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
        except OSError:
            self._ident, self._offset, self._states = None, 0, {}
            return
        ident = (info.st_dev, info.st_ino)
        if ident != self._ident or info.st_size < self._offset:
            self._ident, self._offset, self._states = ident, 0, {}
        if info.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except OSError:
            return
        # NOTE: a line being written by another process is read next time.
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        for text in data[:complete].splitlines():
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            if (isinstance(entry, dict) and entry.get("applied")
                    and isinstance(entry.get("node"), str)
                    and isinstance(entry.get("target"), str)):
                at = entry.get("time", 0)
                self._states.setdefault(entry["node"], []).append(
                    (at if isinstance(at, (int, float)) else 0,
                     entry["target"]))


#: Per path, the (pid, fd) timing lines are appended to; see _log_fd.
_LOG_FDS: dict[str, tuple[int, int]] = {}
_LOG_FDS_LOCK = threading.Lock()


def _open_log(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _log_fd(path: str) -> int:
    """The process's append-only descriptor of ``path``, opened once.

    For ``fake_timing_log``, written at every call: opening the file for
    every line made the log cost more CPU than the call it records (each
    system call gives up the GIL to the other call threads). A forked
    child opens its own. The call log is opened per line instead: a test
    may replace it, and the next line must go to the new file.
    """
    pid = os.getpid()
    with _LOG_FDS_LOCK:
        found = _LOG_FDS.get(path)
        if found is not None and found[0] == pid:
            return found[1]
        fd = _open_log(path)
        _LOG_FDS[path] = (pid, fd)
        return fd


def _drop_log_fd(path: str) -> None:
    """Close this process's descriptor of ``path``; the next line reopens."""
    with _LOG_FDS_LOCK:
        found = _LOG_FDS.pop(path, None)
    if found is not None and found[0] == os.getpid():
        with contextlib.suppress(OSError):
            os.close(found[1])


def _json_text(text: str | None) -> str:
    """``text`` as a JSON string (or null), quoted directly when plain.

    Node uuids, operation names and most addresses need no escaping: the
    JSON encoder cost more than the rest of a timing line.
    """
    if text is None:
        return "null"
    if text.isascii() and text.isprintable() and '"' not in text \
            and "\\" not in text:
        return '"' + text + '"'
    return json.dumps(text)


def _log_timing(path: str, uuid: str, op: str, bmc: str | None, ok: bool,
                started: float, ended: float) -> None:
    """Append one ``fake_timing_log`` JSON line with one O_APPEND write.

    Formatted directly, not by a general JSON encoder: it is written at
    every call of a benchmark's fleet, and encoding a dict cost more
    than the write.
    """
    line = ('{"bmc": %s, "end": %r, "node": %s, "ok": %s, "op": %s, '
            '"pid": %d, "start": %r}\n' % (
                _json_text(bmc), ended, _json_text(uuid),
                "true" if ok else "false", _json_text(op), os.getpid(),
                started)).encode()
    try:
        os.write(_log_fd(path), line)
    except OSError as exc:
        LOG.warning("Fake BMC of node %s: cannot write fake_timing_log "
                    "%s: %s", uuid, path, exc)
        _drop_log_fd(path)


def _log_call(path: str, entry: dict[str, Any]) -> None:
    """Append one ``fake_call_log`` JSON line with one O_APPEND write."""
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    try:
        fd = _open_log(path)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        LOG.warning("Fake BMC of node %s: cannot write fake_call_log %s: "
                    "%s", entry["node"], path, exc)


class FakeDriver(base.BaseDriver):
    """A driver with no hardware behind it."""

    def __init__(self) -> None:
        self.power = FakePower()


class FakePeriodicPower(FakePower):
    """The fake power interface, plus a per-node periodic task."""

    @periodics.node_periodic(purpose="fake node check",
                             spacing=PERIODIC_SPACING)
    def check_nodes(self, task: periodics.NodeTask) -> None:
        """Runs once per owned node of this driver, under its lock."""
        LOG.info("fake-periodic: node task for node %s", task.node.uuid)


class FakePeriodicDriver(FakeDriver):
    """``fake-periodic``: the fake driver with one periodic task of each kind.

    An example for driver authors (see doc/source/periodics.rst), and what
    the functional tests use to prove that driver periodic tasks run when
    the driver is enabled and never when it is not.
    """

    def __init__(self) -> None:
        self.power = FakePeriodicPower()

    @periodics.periodic(spacing=PERIODIC_SPACING)
    def tick(self) -> None:
        LOG.info("fake-periodic: periodic task ran")

    with warnings.catch_warnings():
        # NOTE: the old decorator warns at decoration; this example keeps
        # using it on purpose, to show old drivers still work.
        warnings.simplefilter("ignore", DeprecationWarning)

        @periodics.driver_periodic_task(spacing=PERIODIC_SPACING)
        def legacy_tick(self) -> None:
            LOG.info("fake-periodic: legacy driver_periodic_task ran")

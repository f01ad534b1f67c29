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
    each node received.
"""

from __future__ import annotations

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
          "fake_call_log", "fake_ignore_deadline")

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
        # NOTE: guards _hardware, written by concurrent power actions.
        self._lock = threading.Lock()
        self._hardware: dict[str, str] = {}

    def validate(self, node: base.DriverNode) -> None:
        info = node.driver_info
        problems = []
        latency = info.get("fake_latency_ms", 0)
        if (isinstance(latency, bool) or not isinstance(latency, (int, float))
                or latency < 0):
            problems.append("fake_latency_ms must be a number >= 0, got %r"
                            % (latency,))
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
        ignore = info.get("fake_ignore_deadline", False)
        if not isinstance(ignore, bool):
            problems.append("fake_ignore_deadline must be true or false, "
                            "got %r" % (ignore,))
        log = info.get("fake_call_log")
        if log is not None and (not isinstance(log, str) or not log):
            problems.append("fake_call_log must be a file path, got %r"
                            % (log,))
        problems += base.field_problems(info, "fake", FIELDS)
        if problems:
            raise exceptions.InvalidParameterValue(
                err="Node %s: %s" % (node.name or node.uuid,
                                     "; ".join(problems)))

    def _call(self, node: base.DriverNode, kind: str) -> None:
        info = node.driver_info
        latency = float(info.get("fake_latency_ms", 0) or 0) / 1000.0
        LOG.debug("Fake BMC of node %s: %s call starts", node.uuid, kind)
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

    @staticmethod
    def _logged_state(node: base.DriverNode) -> str | None:
        """The power state the call log gives the node, if any."""
        path = node.driver_info.get("fake_call_log")
        if not path or not os.path.exists(path):
            return None
        state = None
        with open(path) as stream:
            for text in stream:
                try:
                    entry = json.loads(text)
                except ValueError:
                    continue
                if entry.get("node") == node.uuid and entry.get("applied"):
                    state = entry.get("target")
        return state

    def get_power_state(self, node: base.DriverNode) -> str:
        self._call(node, "get")
        with self._lock:
            state = self._hardware.get(node.uuid)
        logged = self._logged_state(node)
        if logged is not None:
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
        self._call(node, "set")
        with self._lock:
            self._hardware[node.uuid] = target

    def reboot(self, node: base.DriverNode) -> None:
        self._change(node, "reboot", states.POWER_ON)
        self._call(node, "set")
        with self._lock:
            self._hardware[node.uuid] = states.POWER_ON


def _log_call(path: str, entry: dict[str, Any]) -> None:
    """Append one JSON line to ``path`` with a single O_APPEND write."""
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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

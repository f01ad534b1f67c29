# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.drivers.fake."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import fixtures

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base as driver_base
from conductor.drivers import fake
from conductor import states
from tests import base
from tests import fakes

UUID = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"


def _node(power_state: str | None = None, name: str | None = "n1",
          uuid: str = UUID, **info: Any) -> driver_base.DriverNode:
    return fakes.driver_node("fake", name, uuid, info, power_state)


class TestFakePower(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.driver = fake.FakeDriver()
        self.power = self.driver.power

    def test_is_a_power_interface(self) -> None:
        self.assertIsInstance(self.power, driver_base.PowerInterface)

    def test_initial_state(self) -> None:
        self.assertEqual(states.POWER_OFF, self.power.get_power_state(_node()))
        self.assertEqual(states.POWER_ON, self.power.get_power_state(
            _node(power_state=states.POWER_ON)))
        self.assertEqual(states.POWER_ON, self.power.get_power_state(
            _node(power_state=states.POWER_OFF,
                  fake_power_state=states.POWER_ON)))

    def test_set_and_reboot(self) -> None:
        node = _node(fake_power_state=states.POWER_ON)
        other = _node(uuid="2be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        self.power.set_power_state(node, states.POWER_OFF)
        self.assertEqual(states.POWER_OFF, self.power.get_power_state(node))
        self.assertEqual(states.POWER_OFF, self.power.get_power_state(other))
        self.power.reboot(node)
        self.assertEqual(states.POWER_ON, self.power.get_power_state(node))
        self.power.set_power_state(other, states.POWER_ON)
        self.assertEqual(states.POWER_ON, self.power.get_power_state(other))

    def test_set_refuses_other_targets(self) -> None:
        for target in (states.REBOOT, states.ERROR, "on"):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    self.power.set_power_state, _node(),
                                    target)
            self.assertIn(repr(target), str(exc))

    def test_fail_all(self) -> None:
        for value in (True, "true", "TRUE", "all"):
            node = _node(fake_fail=value)
            exc = self.assertRaises(exceptions.PowerStateFailure,
                                    self.power.get_power_state, node)
            self.assertEqual("Fake BMC of node %s failed (fake_fail=%s)"
                             % (UUID, value), str(exc))
            self.assertRaises(exceptions.PowerStateFailure,
                              self.power.set_power_state, node,
                              states.POWER_ON)
            self.assertRaises(exceptions.PowerStateFailure,
                              self.power.reboot, node)
        self.assertEqual(states.POWER_OFF,
                         self.power.get_power_state(_node()))

    def test_fail_get_only(self) -> None:
        node = _node(fake_fail="get")
        self.assertRaises(exceptions.PowerStateFailure,
                          self.power.get_power_state, node)
        self.power.set_power_state(node, states.POWER_ON)
        self.power.reboot(node)

    def test_fail_set_only(self) -> None:
        node = _node(fake_fail="set", fake_power_state=states.POWER_ON)
        self.assertRaises(exceptions.PowerStateFailure,
                          self.power.set_power_state, node, states.POWER_OFF)
        self.assertRaises(exceptions.PowerStateFailure,
                          self.power.reboot, node)
        self.assertEqual(states.POWER_ON, self.power.get_power_state(node))

    def test_no_fail(self) -> None:
        for value in (False, "false", ""):
            node = _node(fake_fail=value)
            self.power.set_power_state(node, states.POWER_ON)
            self.assertEqual(states.POWER_ON,
                             self.power.get_power_state(node))

    def test_latency_within_deadline(self) -> None:
        node = _node(fake_latency_ms=20)
        start = time.monotonic()
        with deadline.scope(30):
            self.assertEqual(states.POWER_OFF,
                             self.power.get_power_state(node))
        self.assertGreaterEqual(time.monotonic() - start, 0.02)

    def test_latency_bounded_by_deadline(self) -> None:
        # A "hung" BMC: 5 s of latency under a 50 ms deadline.
        node = _node(fake_latency_ms=5000)
        start = time.monotonic()
        with deadline.scope(0.05):
            exc = self.assertRaises(deadline.DeadlineExceeded,
                                    self.power.get_power_state, node)
        elapsed = time.monotonic() - start
        self.assertLess(elapsed, 1.0)
        self.assertGreaterEqual(elapsed, 0.04)
        self.assertIn("Fake BMC of node %s did not finish" % UUID, str(exc))

    def test_ignore_deadline_takes_the_whole_latency(self) -> None:
        # A driver that does not honour the deadline: the call returns
        # only after its latency, long past a 10 ms deadline.
        node = _node(fake_latency_ms=300, fake_ignore_deadline=True)
        start = time.monotonic()
        with deadline.scope(0.01):
            self.assertEqual(states.POWER_OFF,
                             self.power.get_power_state(node))
        self.assertGreaterEqual(time.monotonic() - start, 0.3)

    def test_latency_bounds_set_too(self) -> None:
        node = _node(fake_latency_ms=5000)
        start = time.monotonic()
        with deadline.scope(0.01):
            self.assertRaises(deadline.DeadlineExceeded,
                              self.power.set_power_state, node,
                              states.POWER_ON)
        self.assertLess(time.monotonic() - start, 1.0)
        self.assertEqual(states.POWER_OFF,
                         self.power.get_power_state(_node()))


class TestCallLog(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.conf.state_path, "calls.jsonl")

    def entries(self) -> list[dict[str, Any]]:
        with open(self.path) as stream:
            return [json.loads(line) for line in stream]

    def test_changes_are_logged_and_survive_a_new_driver(self) -> None:
        node = _node(fake_call_log=self.path)
        fake.FakePower().set_power_state(node, states.POWER_ON)
        fake.FakePower().reboot(node)
        fake.FakePower().get_power_state(node)        # reads are not logged
        self.assertEqual(
            [("set_power_state", states.POWER_ON, True, os.getpid()),
             ("reboot", states.POWER_ON, True, os.getpid())],
            [(e["op"], e["target"], e["applied"], e["pid"])
             for e in self.entries()])
        self.assertEqual({UUID}, {e["node"] for e in self.entries()})
        # Another process (a new driver) reads the state from the log.
        self.assertEqual(states.POWER_ON,
                         fake.FakePower().get_power_state(node))

    def test_logged_as_the_call_starts(self) -> None:
        node = _node(fake_call_log=self.path, fake_latency_ms=5000)
        with deadline.scope(0.05):
            self.assertRaises(deadline.DeadlineExceeded,
                              fake.FakePower().set_power_state, node,
                              states.POWER_ON)
        self.assertEqual([states.POWER_ON],
                         [e["target"] for e in self.entries()])
        self.assertEqual(states.POWER_ON, fake.FakePower().get_power_state(
            _node(fake_call_log=self.path)))

    def test_failing_change_is_logged_not_applied(self) -> None:
        node = _node(fake_call_log=self.path, fake_fail="set")
        self.assertRaises(exceptions.PowerStateFailure,
                          fake.FakePower().set_power_state, node,
                          states.POWER_ON)
        self.assertEqual([False], [e["applied"] for e in self.entries()])
        self.assertEqual(states.POWER_OFF, fake.FakePower().get_power_state(
            _node(fake_call_log=self.path)))

    def test_bad_path_is_refused(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                fake.FakePower().validate,
                                _node(fake_call_log=5))
        self.assertIn("fake_call_log must be a file path, got 5", str(exc))


class TestFakeCallLog(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.power = fake.FakePower()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 "calls.jsonl")

    def _entries(self) -> list[dict[str, Any]]:
        with open(self.path) as stream:
            return [json.loads(line) for line in stream]

    def test_every_change_appends_one_line(self) -> None:
        node = _node(fake_call_log=self.path)
        self.power.get_power_state(node)
        self.power.set_power_state(node, states.POWER_ON)
        self.power.reboot(node)
        self.power.set_power_state(node, states.POWER_OFF)
        entries = self._entries()
        self.assertEqual(
            [("set_power_state", states.POWER_ON),
             ("reboot", states.POWER_ON),
             ("set_power_state", states.POWER_OFF)],
            [(e["op"], e["target"]) for e in entries])
        for entry in entries:
            self.assertEqual(UUID, entry["node"])
            self.assertIs(True, entry["applied"])
            self.assertEqual(os.getpid(), entry["pid"])
            self.assertIsInstance(entry["time"], float)

    def test_failed_change_is_logged_not_applied(self) -> None:
        node = _node(fake_call_log=self.path, fake_fail="set")
        self.assertRaises(exceptions.PowerStateFailure, self.power.reboot,
                          node)
        self.assertEqual([False], [e["applied"] for e in self._entries()])
        self.assertEqual(states.POWER_OFF, self.power.get_power_state(
            _node(fake_call_log=self.path)))

    def test_no_log_without_the_field(self) -> None:
        self.power.set_power_state(_node(), states.POWER_ON)
        self.assertFalse(os.path.exists(self.path))

    def test_unwritable_log_does_not_fail_the_call(self) -> None:
        node = _node(fake_call_log=os.path.join(self.path, "no", "dir"))
        with self.assertLogs("conductor.drivers.fake", "WARNING") as logs:
            self.power.set_power_state(node, states.POWER_ON)
        self.assertEqual(states.POWER_ON, self.power.get_power_state(node))
        self.assertIn("cannot write fake_call_log", logs.output[0])


class TestFakeValidate(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.power = fake.FakePower()

    def test_valid(self) -> None:
        for info in ({}, {"fake_latency_ms": 0}, {"fake_latency_ms": 2.5},
                     {"fake_fail": True}, {"fake_fail": "get"},
                     {"fake_fail": "SET"}, {"fake_fail": "false"},
                     {"fake_power_state": states.POWER_ON},
                     {"fake_power_state": None}):
            self.power.validate(_node(**info))

    def assertRefused(self, text: str, node: driver_base.DriverNode) -> str:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.power.validate, node)
        self.assertIn(text, str(exc))
        return str(exc)

    def test_bad_latency(self) -> None:
        for value in (-1, "50", True, None):
            self.assertRefused("Node n1: fake_latency_ms must be a number >= "
                               "0, got %r" % (value,),
                               _node(fake_latency_ms=value))

    def test_bad_fail(self) -> None:
        self.assertRefused("fake_fail must be true, false, 'get' or 'set', "
                           "got 'sometimes'", _node(fake_fail="sometimes"))

    def test_bad_ignore_deadline(self) -> None:
        self.assertRefused("fake_ignore_deadline must be true or false, got "
                           "'yes'", _node(fake_ignore_deadline="yes"))

    def test_bad_call_log(self) -> None:
        for value in ("", 5, True):
            self.assertRefused("fake_call_log must be a file path, got %r"
                               % (value,), _node(fake_call_log=value))

    def test_bad_timing_log(self) -> None:
        for value in ("", 5):
            self.assertRefused("fake_timing_log must be a file path, got %r"
                               % (value,), _node(fake_timing_log=value))

    def test_bad_bmc_address(self) -> None:
        for value in ("", " ", 7):
            self.assertRefused("fake_bmc_address must be a non-empty "
                               "string, got %r" % (value,),
                               _node(fake_bmc_address=value))

    def test_bad_power_state(self) -> None:
        self.assertRefused("fake_power_state must be 'power on' or 'power "
                           "off', got 'on'", _node(fake_power_state="on"))

    def test_unknown_fields(self) -> None:
        self.assertRefused("unknown field(s) a_password, ipmi_address (the "
                           "fake driver reads fake_latency_ms, fake_fail, "
                           "fake_power_state, fake_call_log, "
                           "fake_timing_log, fake_bmc_address, "
                           "fake_settle_ms, fake_ignore_deadline)",
                           _node(ipmi_address="x", a_password="y"))

    def test_every_problem_named_with_uuid(self) -> None:
        message = self.assertRefused(
            "Node %s: " % UUID,
            _node(name=None, fake_latency_ms=-5, fake_fail="x", other=1))
        self.assertEqual(3, message.count("; ") + 1)
        self.assertIn("fake_latency_ms", message)
        self.assertIn("fake_fail", message)
        self.assertIn("other", message)


class TestFakeBmcAddress(base.TestCase):

    def test_address_from_driver_info(self) -> None:
        power = fake.FakePower()
        self.assertIsNone(power.bmc_address(_node()))
        self.assertEqual("rack-1", power.bmc_address(
            _node(fake_bmc_address="rack-1")))
        power.validate(_node(fake_bmc_address="rack-1"))


class TestFakeTimingLog(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.power = fake.FakePower()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 "timing.jsonl")

    def _entries(self) -> list[dict[str, Any]]:
        with open(self.path) as stream:
            return [json.loads(line) for line in stream]

    def test_every_call_appends_one_line_as_it_ends(self) -> None:
        node = _node(fake_timing_log=self.path, fake_latency_ms=20,
                     fake_bmc_address="bmc-a")
        before = time.time()
        self.power.get_power_state(node)
        self.power.set_power_state(node, states.POWER_ON)
        self.power.reboot(node)
        entries = self._entries()
        self.assertEqual(["get_power_state", "set_power_state", "reboot"],
                         [e["op"] for e in entries])
        for entry in entries:
            self.assertEqual(UUID, entry["node"])
            self.assertEqual("bmc-a", entry["bmc"])
            self.assertIs(True, entry["ok"])
            self.assertEqual(os.getpid(), entry["pid"])
            self.assertLessEqual(before, entry["start"])
            self.assertGreaterEqual(entry["end"] - entry["start"], 0.02)
        for first, second in zip(entries, entries[1:]):
            self.assertLessEqual(first["end"], second["start"])

    def test_lines_are_json_whatever_the_address(self) -> None:
        # The line is formatted by hand: text that JSON must escape.
        node = _node(fake_timing_log=self.path,
                     fake_bmc_address='bmc "a"\\\n\u00e9')
        self.power.get_power_state(node)
        [entry] = self._entries()
        self.assertEqual('bmc "a"\\\n\u00e9', entry["bmc"])
        self.assertEqual({"bmc", "end", "node", "ok", "op", "pid", "start"},
                         set(entry))
        self.assertIsInstance(entry["start"], float)

    def test_text_is_quoted_directly_only_when_json_needs_no_escape(
            self) -> None:
        for text in (None, UUID, "get_power_state", "10.0.0.1:623", "",
                     "tab\there", "del\x7f", "quote\"", "back\\slash",
                     "\u00e9", "\u2028"):
            quoted = fake._json_text(text)
            self.assertEqual(text, json.loads(quoted), repr(text))
            self.assertTrue(quoted.isascii(), repr(text))

    def test_failed_and_cut_calls_are_logged_not_ok(self) -> None:
        failing = _node(fake_timing_log=self.path, fake_fail="get")
        self.assertRaises(exceptions.PowerStateFailure,
                          self.power.get_power_state, failing)
        slow = _node(fake_timing_log=self.path, fake_latency_ms=5000)
        with deadline.scope(0.05):
            self.assertRaises(deadline.DeadlineExceeded,
                              self.power.get_power_state, slow)
        self.assertEqual([False, False], [e["ok"] for e in self._entries()])
        self.assertIsNone(self._entries()[0]["bmc"])

    def test_opened_once_per_process(self) -> None:
        opened: list[str] = []
        real_open = os.open

        def tracking_open(path: str, *args: Any) -> int:
            opened.append(path)
            return real_open(path, *args)

        self.useFixture(fixtures.MonkeyPatch("os.open", tracking_open))
        node = _node(fake_timing_log=self.path)
        for _ in range(3):
            self.power.get_power_state(node)
        self.assertEqual([self.path], opened)
        # A forked child (another pid) writes through its own descriptor.
        self.useFixture(fixtures.MonkeyPatch(
            "os.getpid", lambda: -1))
        self.power.get_power_state(node)
        self.assertEqual([self.path] * 2, opened)
        self.assertEqual(4, len(self._entries()))
        for _, fd in fake._LOG_FDS.values():
            os.close(fd)
        fake._LOG_FDS.clear()

    def test_a_failed_write_closes_and_reopens(self) -> None:
        node = _node(fake_timing_log=self.path)
        self.power.get_power_state(node)
        [(_, fd)] = fake._LOG_FDS.values()
        real_write = os.write

        def fails_once(target: int, data: bytes) -> int:
            self.useFixture(fixtures.MonkeyPatch("os.write", real_write))
            raise OSError(28, "No space left on device")

        self.useFixture(fixtures.MonkeyPatch("os.write", fails_once))
        with self.assertLogs(fake.LOG.name, "WARNING"):
            self.power.get_power_state(node)
        self.assertEqual({}, fake._LOG_FDS)
        self.assertRaises(OSError, os.fstat, fd)        # closed
        self.power.get_power_state(node)
        self.assertEqual(2, len(self._entries()))
        fake._drop_log_fd(self.path)

    def test_no_call_log_entries(self) -> None:
        # The timing log is separate: the call log keeps only changes.
        calls = os.path.join(os.path.dirname(self.path), "calls.jsonl")
        node = _node(fake_timing_log=self.path, fake_call_log=calls)
        self.power.get_power_state(node)
        self.assertFalse(os.path.exists(calls))
        self.assertEqual(1, len(self._entries()))


class TestCallLogTail(base.TestCase):
    """The call log is read incrementally, once per process."""

    def setUp(self) -> None:
        super().setUp()
        self.path = os.path.join(self.useFixture(fixtures.TempDir()).path,
                                 "calls.jsonl")

    def test_appended_changes_are_seen(self) -> None:
        reader, writer = fake.FakePower(), fake.FakePower()
        node = _node(fake_call_log=self.path)
        self.assertEqual(states.POWER_OFF, reader.get_power_state(node))
        writer.set_power_state(node, states.POWER_ON)
        self.assertEqual(states.POWER_ON, reader.get_power_state(node))
        writer.set_power_state(node, states.POWER_OFF)
        self.assertEqual(states.POWER_OFF, reader.get_power_state(node))

    def test_only_new_bytes_are_read(self) -> None:
        reader = fake.FakePower()
        node = _node(fake_call_log=self.path)
        fake.FakePower().set_power_state(node, states.POWER_ON)
        reader.get_power_state(node)
        offsets = []
        real_open = open

        def tracking_open(path: str, *args: Any, **kwargs: Any) -> Any:
            stream = real_open(path, *args, **kwargs)
            real_seek = stream.seek

            def seek(offset: int, *more: Any) -> int:
                offsets.append(offset)
                return real_seek(offset, *more)
            stream.seek = seek
            return stream

        self.useFixture(fixtures.MonkeyPatch("builtins.open", tracking_open))
        reader.get_power_state(node)            # nothing new: not opened
        self.assertEqual([], offsets)
        fake.FakePower().set_power_state(node, states.POWER_OFF)
        self.assertEqual(states.POWER_OFF, reader.get_power_state(node))
        self.assertEqual(1, len(offsets))
        self.assertGreater(offsets[0], 0)

    def test_partial_line_waits_for_its_end(self) -> None:
        reader = fake.FakePower()
        node = _node(fake_call_log=self.path)
        line = json.dumps({"node": UUID, "op": "set_power_state",
                           "target": states.POWER_ON, "applied": True})
        with open(self.path, "w") as stream:
            stream.write(line[:20])
        self.assertEqual(states.POWER_OFF, reader.get_power_state(node))
        with open(self.path, "a") as stream:
            stream.write(line[20:] + "\n")
        self.assertEqual(states.POWER_ON, reader.get_power_state(node))

    def test_replaced_file_is_read_again(self) -> None:
        reader = fake.FakePower()
        node = _node(fake_call_log=self.path)
        fake.FakePower().set_power_state(node, states.POWER_ON)
        self.assertEqual(states.POWER_ON, reader.get_power_state(node))
        os.unlink(self.path)
        self.assertEqual(states.POWER_OFF, reader.get_power_state(node))
        fake.FakePower().reboot(node)
        self.assertEqual(states.POWER_ON, reader.get_power_state(node))

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.inventory: parsing and validating node lists."""

from __future__ import annotations

import gc
import json
import os
from typing import Any
from unittest import mock

from conductor.common import exceptions
from conductor.drivers import fake
from conductor import inventory
from tests import base

YAML_TEXT = """\
# two nodes
- name: node-0
  driver: fake
  driver_info: {fake_latency_ms: 50}
- name: node-1
  driver: fake
  maintenance: true
  maintenance_reason: spare
"""


class TestLoadFile(base.TestCase):

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.conf.state_path, name)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return path

    def test_yaml(self) -> None:
        path = self.write("fleet.yaml", YAML_TEXT)
        self.assertEqual(
            [{"name": "node-0", "driver": "fake",
              "driver_info": {"fake_latency_ms": 50}},
             {"name": "node-1", "driver": "fake", "maintenance": True,
              "maintenance_reason": "spare"}],
            inventory.load_file(path))

    def test_json(self) -> None:
        nodes = [{"name": "a", "driver": "fake"}]
        path = self.write("fleet.json", json.dumps(nodes))
        self.assertEqual(nodes, inventory.load_file(path))

    def test_json_content_in_yaml_file(self) -> None:
        nodes = [{"name": "a", "driver": "fake"}]
        path = self.write("fleet.yml", json.dumps(nodes))
        self.assertEqual(nodes, inventory.load_file(path))

    def test_nodes_mapping_form(self) -> None:
        nodes = [{"name": "a", "driver": "fake"}]
        for name, text in (("a.json", json.dumps({"nodes": nodes})),
                           ("a.yaml", "nodes:\n- {name: a, driver: fake}\n")):
            self.assertEqual(nodes,
                             inventory.load_file(self.write(name, text)))

    def test_collector_paused_while_parsing_then_restored(self) -> None:
        path = self.write("fleet.yaml", YAML_TEXT)
        seen = []
        real_load = inventory.yaml.load

        def load(*args: Any, **kwargs: Any) -> Any:
            seen.append(gc.isenabled())
            return real_load(*args, **kwargs)

        self.addCleanup(gc.enable)
        with mock.patch.object(inventory.yaml, "load", side_effect=load):
            for enabled in (True, False):
                (gc.enable if enabled else gc.disable)()
                inventory.load_file(path)
                self.assertEqual(enabled, gc.isenabled())
        self.assertEqual([False, False], seen)

    def test_collector_restored_after_a_parse_error(self) -> None:
        path = self.write("bad.yaml", "- name: a\n  driver: [fake\n")
        self.assertTrue(gc.isenabled())
        self.assertRaises(exceptions.InvalidParameterValue,
                          inventory.load_file, path)
        self.assertTrue(gc.isenabled())

    def test_malformed_yaml_names_line_and_column(self) -> None:
        path = self.write("bad.yaml", "- name: a\n  driver: [fake\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, path)
        self.assertIn("%s: malformed YAML at line 3 column 1:" % path,
                      str(exc))

    def test_malformed_json_names_line_and_column(self) -> None:
        path = self.write("bad.json", '[\n  {"name": "a",}\n]')
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, path)
        self.assertEqual(
            "%s: malformed JSON at line 2 column 16: Expecting property "
            "name enclosed in double quotes" % path, str(exc))

    def test_not_a_list(self) -> None:
        for name, text, kind in (("a.yaml", "name: a\n", "dict"),
                                 ("b.json", '"x"', "str"),
                                 ("c.yaml", "nodes: 3\n", "dict"),
                                 ("empty.yaml", "", "NoneType")):
            exc = self.assertRaises(exceptions.InvalidParameterValue,
                                    inventory.load_file,
                                    self.write(name, text))
            self.assertIn("expected a list of nodes (or a mapping with a "
                          "'nodes' list), got %s" % kind, str(exc))

    def test_unreadable_file(self) -> None:
        path = os.path.join(self.conf.state_path, "missing.yaml")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, path)
        self.assertEqual("%s: cannot read inventory file: No such file or "
                         "directory" % path, str(exc))
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, self.conf.state_path)
        self.assertIn("cannot read inventory file", str(exc))

    def test_not_utf8(self) -> None:
        path = os.path.join(self.conf.state_path, "latin1.yaml")
        with open(path, "wb") as stream:
            stream.write(b"- name: n\xe9\n")
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, path)
        self.assertIn("not UTF-8 text", str(exc))

    def test_too_big(self) -> None:
        path = self.write("big.yaml", "[]")
        self.patch(inventory, "MAX_FILE_BYTES", 1)
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.load_file, path)
        self.assertIn("file is 2 bytes; the limit is 1", str(exc))


def fleet_text(count: int) -> str:
    lines = ["# a comment before the first entry", ""]
    for i in range(count):
        lines.append("- name: n%04d" % i)
        lines.append("  driver: fake")
        lines.append("  driver_info: {fake_latency_ms: %d}" % i)
        if i % 7 == 0:
            lines.append("# a comment at column 0, between entries")
            lines.append("")
    return "\n".join(lines) + "\n"


class TestSplitText(base.TestCase):

    def assertSplitParsesAlike(self, text: str, parts: int,
                               expected_parts: int) -> None:
        chunks = inventory.split_text(text, "f.yaml", parts, min_entries=3)
        self.assertEqual(expected_parts, len(chunks))
        self.assertEqual(text, "".join(chunk.text for chunk in chunks))
        parsed = [inventory.parse_text(chunk.text, "f.yaml")
                  for chunk in chunks]
        self.assertEqual([len(entries) for entries in parsed],
                         [chunk.count for chunk in chunks])
        self.assertEqual([1 + sum(map(len, parsed[:i]))
                          for i in range(len(parsed))],
                         [chunk.first for chunk in chunks])
        joined = [entry for entries in parsed for entry in entries]
        self.assertEqual(inventory.parse_text(text, "f.yaml"), joined)

    def test_cut_at_entries_and_parsed_alike(self) -> None:
        text = fleet_text(40)
        for parts in (2, 3, 4):
            self.assertSplitParsesAlike(text, parts, parts)

    def test_block_scalars_and_nested_lists_stay_whole(self) -> None:
        entry = ("- name: n%d\n  driver: fake\n  driver_info:\n"
                 "    note: |\n      - not an entry\n      text\n"
                 "    tags:\n    - a\n    - b\n")
        text = "".join(entry % i for i in range(12))
        self.assertSplitParsesAlike(text, 2, 2)

    def test_not_cut(self) -> None:
        entries = fleet_text(40)
        for text in (
                "nodes:\n" + entries,              # a mapping
                "---\n" + entries,                  # document marker
                "%YAML 1.1\n---\n" + entries,       # directive
                json.dumps([{"name": "a"}] * 40),   # a flow list
                entries.replace("- name: n0010",     # a column-0 scalar
                                "- name: 'n0010\nx'"),
                "\ufeff" + entries,                  # byte order mark
                # Line breaks YAML knows and "^" does not: each would
                # hide a column-0 key, and the parts would differ.
                "# x\u2028nodes:\n" + entries,
                "# x\x85nodes:\n" + entries,
                "- {name: a}\u2029retired:\n" + entries,
                entries.replace("\n", "\r\n")):
            self.assertEqual([inventory.Part(1, None, text)],
                             inventory.split_text(text, "f.yaml", 4,
                                                  min_entries=3))

    def test_json_file_not_cut(self) -> None:
        text = fleet_text(40)
        self.assertEqual([inventory.Part(1, None, text)],
                         inventory.split_text(text, "f.json", 4,
                                              min_entries=3))

    def test_parts_hold_at_least_min_entries(self) -> None:
        text = fleet_text(10)
        self.assertEqual(3, len(inventory.split_text(text, "f.yaml", 8,
                                                     min_entries=3)))
        whole = [inventory.Part(1, None, text)]
        self.assertEqual(whole, inventory.split_text(text, "f.yaml", 8,
                                                     min_entries=6))
        self.assertEqual(whole, inventory.split_text(text, "f.yaml", 1,
                                                     min_entries=1))

    def test_alias_to_another_part_fails_that_part(self) -> None:
        # The caller must then parse the whole text (startup does).
        text = ("- &base {name: a, driver: fake}\n"
                + "".join("- {name: n%d, driver: fake}\n" % i
                          for i in range(5))
                + "- <<: *base\n  name: b\n")
        chunks = inventory.split_text(text, "f.yaml", 2, min_entries=3)
        self.assertEqual(2, len(chunks))
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                inventory.parse_text, chunks[1].text,
                                "f.yaml")
        self.assertIn("malformed YAML", str(exc))
        self.assertEqual("b", inventory.parse_text(text, "f.yaml")[-1]
                         ["name"])


class TestValidate(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.drivers = {"fake": fake.FakeDriver()}

    def validate(self, entries: list[Any]) -> list[dict[str, Any]]:
        return inventory.validate(entries, self.drivers, source="f.yaml")

    def test_valid(self) -> None:
        self.assertEqual(
            [{"name": "a", "driver": "fake", "driver_info": {},
              "maintenance": False},
             {"driver": "fake", "driver_info": {"fake_fail": "get"},
              "maintenance": True}],
            self.validate([{"name": "a", "driver": "fake"},
                           {"driver": "fake", "maintenance": True,
                            "driver_info": {"fake_fail": "get"}}]))

    def test_error_names_entry_number_and_name(self) -> None:
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.validate,
            [{"name": "a", "driver": "fake"},
             {"name": "b", "driver": "fake",
              "driver_info": {"fake_latency_ms": "slow"}}])
        self.assertEqual("f.yaml: node #2 (b): Node b: fake_latency_ms must "
                         "be a number >= 0, got 'slow'", str(exc))

    def test_error_without_name(self) -> None:
        exc = self.assertRaises(exceptions.InvalidParameterValue,
                                self.validate, [{"driver": "fake"}, "junk"])
        self.assertEqual("f.yaml: node #2: A node must be a mapping of field "
                         "to value, got str", str(exc))

    def test_unknown_driver_keeps_type(self) -> None:
        exc = self.assertRaises(exceptions.DriverNotEnabled, self.validate,
                                [{"name": "a", "driver": "ipmi"}])
        self.assertEqual("f.yaml: node #1 (a): Driver ipmi is not enabled; "
                         "enabled drivers: fake.", str(exc))

    def test_duplicate_names_name_both_entries(self) -> None:
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.validate,
            [{"name": "a", "driver": "fake"}, {"name": "b", "driver": "fake"},
             {"name": "a", "driver": "fake"}])
        self.assertEqual("f.yaml: node #3 (a): name a is also used by node "
                         "#1", str(exc))

    def test_duplicate_uuids(self) -> None:
        uuid = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
        exc = self.assertRaises(
            exceptions.InvalidParameterValue, self.validate,
            [{"uuid": uuid, "driver": "fake"},
             {"uuid": uuid.upper(), "driver": "fake"}])
        self.assertEqual("f.yaml: node #2: uuid %s is also used by node #1"
                         % uuid, str(exc))

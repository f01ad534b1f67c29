# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.output."""

from __future__ import annotations

import datetime
import json

from conductor.common import output
from tests import base


class TestTable(base.TestCase):

    def test_columns_aligned(self) -> None:
        text = output.table(("name", "on"), [("a", True), ("long-name", None)])
        self.assertEqual("name       on\n"
                         "---------  ----\n"
                         "a          true\n"
                         "long-name", text)

    def test_empty_rows_give_header(self) -> None:
        self.assertEqual("uuid  name\n----  ----",
                         output.table(("uuid", "name"), []))

    def test_cell_formats(self) -> None:
        when = datetime.datetime(2030, 1, 2, 3, 4, 5, 678)
        text = output.table(("v",), [({"b": 1, "a": [2]},), (False,),
                                     (when,), (3,)])
        self.assertEqual(['{"a": [2], "b": 1}', "false",
                          "2030-01-02T03:04:05", "3"],
                         text.splitlines()[2:])

    def test_fields(self) -> None:
        self.assertEqual("Field  Value\n-----  -----\nname   n1\nmaint  false",
                         output.fields([("name", "n1"), ("maint", False)]))


class TestToJson(base.TestCase):

    def test_datetimes_and_order(self) -> None:
        when = datetime.datetime(2030, 1, 2, 3, 4, 5)
        text = output.to_json({"b": when, "a": [None, True]})
        self.assertEqual({"a": [None, True], "b": "2030-01-02T03:04:05"},
                         json.loads(text))
        self.assertLess(text.index('"a"'), text.index('"b"'))

    def test_unserialisable(self) -> None:
        exc = self.assertRaises(TypeError, output.to_json, {"a": object()})
        self.assertIn("not JSON serialisable", str(exc))

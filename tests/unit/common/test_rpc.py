# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.rpc: the caller's context is bounded."""

from __future__ import annotations

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from conductor.common import rpc
from tests import base


class TestBoundedContext(base.TestCase):

    def test_oversized_fields_are_dropped(self) -> None:
        context = rpc.new_context().to_dict()
        context.update(request_id="req-" + "x" * 1000000,
                       user="ok-user", roles=["r"] * 100000,
                       project=["y" * 300], extra={"nested": 1})
        context["k" * 300] = "v"
        clean = rpc.bounded_context(context)
        for key in ("request_id", "roles", "project", "extra", "k" * 300):
            self.assertNotIn(key, clean)
        self.assertEqual("ok-user", clean["user"])
        built = rpc.RequestContextSerializer().deserialize_context(context)
        self.assertLessEqual(len(built.request_id), 64)
        self.assertEqual("ok-user", built.user_id)

    def test_not_a_mapping(self) -> None:
        self.assertEqual({}, rpc.bounded_context(["x"]))
        self.assertEqual({}, rpc.bounded_context(None))

# SPDX-License-Identifier: Apache-2.0
"""Tests for conductor.common.masking: credentials in URLs never shown."""

from __future__ import annotations

import io
import logging
from typing import Any

from conductor.common import masking
from tests import base

SECRET = "pa55-w0rd"


class TestMaskUrl(base.TestCase):

    def test_password_hidden_user_kept(self) -> None:
        self.assertEqual(
            "bad 'https://admin:***@bmc:44x3'",
            masking.mask_url("bad 'https://admin:%s@bmc:44x3'" % SECRET))

    def test_forms_and_typos(self) -> None:
        for text, shown in (
                ("https://token@bmc", "https://***@bmc"),
                ("https:/u:%s@bmc" % SECRET, "https:/u:***@bmc"),
                ("u:%s@bmc.example.com" % SECRET, "u:***@bmc.example.com"),
                ("htps//u:%s@bmc" % SECRET, "htps//u:***@bmc"),
                ("https://u:p@%s@h/x" % SECRET, "https://u:***@h/x"),
                ("https://u:a,%s@h" % SECRET, "https://u:***@h"),
                ("mysql+pymysql://root:%s@db/c" % SECRET,
                 "mysql+pymysql://root:***@db/c")):
            self.assertEqual(shown, masking.mask_url(text), text)

    def test_text_without_credentials_unchanged(self) -> None:
        for text in ("https://bmc:443/", "https://[::1]:8000",
                     "mail ops@example.com", "Node n1: x@y", "a: b@c"):
            self.assertEqual(text, masking.mask_url(text))

    def test_several_hosts_hide_every_secret(self) -> None:
        shown = masking.mask_url("rabbit://u:%s@h1:5672,v:%s@h2:5672/"
                                 % (SECRET, SECRET))
        self.assertNotIn(SECRET, shown)

    def test_mask_data(self) -> None:
        data: dict[str, Any] = {
            "a": ["x https://u:%s@h" % SECRET, 3], "b": (None, True),
            "c": {"d": "u:%s@h" % SECRET}}
        shown = masking.mask_data(data)
        self.assertEqual({"a": ["x https://u:***@h", 3], "b": (None, True),
                          "c": {"d": "u:***@h"}}, shown)
        self.assertIn(SECRET, data["c"]["d"])   # the original is untouched


class TestLogs(base.TestCase):

    def test_formatter_masks_message_and_traceback(self) -> None:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        masking.install(handler)
        masking.install(handler)         # once is enough
        self.assertIsInstance(handler.formatter, masking.MaskingFormatter)
        logger = logging.getLogger("conductor.test_masking")
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        logger.propagate = False
        self.addCleanup(setattr, logger, "propagate", True)
        logger.warning("address %s", "https://u:%s@bmc" % SECRET)
        try:
            raise ValueError("cannot reach https://u:%s@bmc" % SECRET)
        except ValueError:
            logger.exception("failed")
        text = stream.getvalue()
        self.assertNotIn(SECRET, text)
        self.assertIn("WARNING address https://u:***@bmc", text)
        self.assertIn("ValueError: cannot reach https://u:***@bmc", text)

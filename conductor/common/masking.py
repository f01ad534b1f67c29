# SPDX-License-Identifier: Apache-2.0
"""Hiding credentials written into URLs before anything is shown.

A BMC or service address typed as ``https://admin:secret@bmc`` must never
be echoed whole: not on a command's stderr, not in an RPC error, not in a
log line or a start-up task's log. Everything the conductor prints goes
through :func:`mask_url` (text), :func:`mask_data` (JSON-like data) or,
for logs, a :class:`MaskingFormatter` around each handler's formatter
(:func:`install`)::

    >>> mask_url("bad address 'https://admin:s3cret@bmc:44x3'")
    "bad address 'https://admin:***@bmc:44x3'"
    >>> mask_url("https://token@bmc")
    'https://***@bmc'

The password (or a lone user part, which may be a token) is replaced by
``***``; the user name stays, so the operator still sees which account
was meant. Typos are covered too: ``https:/admin:s3cret@bmc`` (one slash)
and ``admin:s3cret@bmc`` (no scheme) are masked the same way.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: What replaces a hidden password or token.
MASK = "***"

# NOTE: the userinfo runs up to the *last* "@" of the authority (a
# password may hold "@" or ","): the greedy class backtracks to it. A URL
# listing several hosts then shows only the last one: hiding every secret
# matters more than showing every host.
_WITH_SLASHES = re.compile(r"//(?P<userinfo>[^/\s'\"<>]*)@")
# NOTE: "user:password@host" with no "//" (a typo, or no scheme at all).
_BARE = re.compile(
    r"(?<![\w.+-])(?P<user>[^\s/:'\",<>@]+):(?P<password>[^\s/'\"<>]*)@"
    r"(?=[\w\[])")


def _hide(userinfo: str) -> str:
    user, sep, _password = userinfo.partition(":")
    if not sep:
        return MASK
    return "%s:%s" % (user, MASK)


def mask_url(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden."""
    if "@" not in text:
        return text
    text = _WITH_SLASHES.sub(
        lambda m: "//%s@" % _hide(m.group("userinfo")), text)
    return _BARE.sub(lambda m: "%s:%s@" % (m.group("user"), MASK), text)


def mask_data(value: Any) -> Any:
    """A copy of JSON-like ``value`` with :func:`mask_url` on every string.

    Mappings, lists and tuples are walked; other values are returned as
    they are.
    """
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: mask_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_data(item) for item in value)
    return value


class MaskingFormatter(logging.Formatter):
    """Wraps a handler's formatter; hides URL credentials in its output.

    The whole formatted text is masked (message, traceback, oslo.log's
    error summary), so nothing a record carries escapes.
    """

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(self.inner.format(record))


def install(*handlers: logging.Handler) -> None:
    """Mask the output of ``handlers`` (default: the root logger's).

    Wraps each handler's formatter in a :class:`MaskingFormatter` (once).
    """
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not isinstance(handler.formatter, MaskingFormatter):
            handler.setFormatter(MaskingFormatter(handler.formatter))

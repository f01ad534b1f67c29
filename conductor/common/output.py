# SPDX-License-Identifier: Apache-2.0
"""Table and JSON output for ``conductor-manage``."""

from __future__ import annotations

import datetime
import json
from typing import Any, Sequence


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, datetime.datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header rule; empty rows give the header."""
    cells = [[_text(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(widths[index])
                         for index, value in enumerate(values)).rstrip()

    out = [line(headers), line(["-" * width for width in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """A two-column Field/Value table."""
    return table(("Field", "Value"), [(key, value) for key, value in pairs])


def to_json(data: Any) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime.datetime):
            return value.isoformat()
        raise TypeError("not JSON serialisable: %r" % (value,))
    return json.dumps(data, indent=2, sort_keys=True, default=default)

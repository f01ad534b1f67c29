# SPDX-License-Identifier: Apache-2.0
"""Inventory files: YAML or JSON lists of nodes to enrol.

The same format serves ``conductor-manage node import FILE`` and the
``[DEFAULT] inventory_file`` loaded at start-up::

    - name: node-0
      driver: fake
      driver_info: {fake_latency_ms: 50}
    - name: node-1
      driver: ipmi
      driver_info: {ipmi_address: 10.0.0.5, ipmi_username: admin,
                    ipmi_password: secret}

Validation covers the whole file before anything is stored, and every
error names the entry it is about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import re
from typing import Any, Iterator, Mapping

import yaml

from conductor.common import exceptions
from conductor.drivers import base
from conductor import nodes

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Largest inventory file read, in bytes.
MAX_FILE_BYTES = 64 * 1024 * 1024


def _invalid(text: str) -> exceptions.InvalidParameterValue:
    return exceptions.InvalidParameterValue(err=text)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while parsing.

    A parse allocates tens of thousands of containers and creates no
    garbage, yet each allocation burst triggers a collection; pausing the
    collector cut the parse of a 3,000-node YAML file by a third.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_file(path: str) -> list[Any]:
    """Parse ``path`` and return its list of entries, unvalidated.

    A ``.json`` file is read as JSON, anything else as YAML (which also
    reads JSON).

    :raises: InvalidParameterValue naming the file and the problem.
    """
    return parse_text(read_text(path), path)


def read_text(path: str) -> str:
    """The text of the inventory file ``path``.

    :raises: InvalidParameterValue naming the file and the problem (too
        big, unreadable, not UTF-8).
    """
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise _invalid("%s: file is %d bytes; the limit is %d"
                           % (path, size, MAX_FILE_BYTES))
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except OSError as exc:
        raise _invalid("%s: cannot read inventory file: %s"
                       % (path, exc.strerror or exc)) from exc
    except UnicodeDecodeError as exc:
        raise _invalid("%s: not UTF-8 text: %s" % (path, exc)) from exc


def parse_text(text: str, path: str) -> list[Any]:
    """Parse the text of the inventory file ``path`` (see load_file).

    :raises: InvalidParameterValue naming the file and the problem.
    """
    try:
        with _collector_paused():
            if path.endswith(".json"):
                data = json.loads(text)
            else:
                # NOTE: libyaml's C loader parses large inventories about
                # ten times faster than the pure-Python one; same safe
                # subset.
                data = yaml.load(text, Loader=_SafeLoader)
    except json.JSONDecodeError as exc:
        raise _invalid("%s: malformed JSON at line %d column %d: %s"
                       % (path, exc.lineno, exc.colno, exc.msg)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (" at line %d column %d" % (mark.line + 1, mark.column + 1)
                 if mark is not None else "")
        problem = getattr(exc, "problem", None) or str(exc)
        raise _invalid("%s: malformed YAML%s: %s"
                       % (path, where, problem)) from exc
    if isinstance(data, Mapping) and isinstance(data.get("nodes"), list):
        data = data["nodes"]
    if not isinstance(data, list):
        raise _invalid("%s: expected a list of nodes (or a mapping with a "
                       "'nodes' list), got %s"
                       % (path, type(data).__name__))
    return data


# A line that starts an entry of a top-level block sequence ("- ...").
_ITEM_RE = re.compile(r"^-(?:[ \t]|$)", re.M)
# A line starting at column 0 with anything but an entry, a comment or
# nothing: the file is not a plain top-level block sequence.
_OTHER_RE = re.compile(r"^(?:[^-#\s]|-[^ \t\n])", re.M)
# Line breaks for YAML that "^" above does not see: a line they start
# would escape both patterns (a hidden "nodes:" key or %TAG directive).
_OTHER_BREAK_RE = re.compile("[\r\x85\u2028\u2029]")


@dataclasses.dataclass(frozen=True)
class Part:
    """A piece of an inventory's text holding whole entries."""

    #: Position in the file of the part's first entry (from 1).
    first: int
    #: How many entries it holds; None when the text was not cut.
    count: int | None
    text: str


def split_text(text: str, path: str, parts: int,
               min_entries: int = 500) -> list[Part]:
    """Cut a YAML inventory into up to ``parts`` parts of whole entries.

    Each part is itself a YAML list of some of the entries, in order, so
    the parts can be parsed at the same time and their lists joined. Only
    the common form is cut: a top-level block sequence whose every line
    at column 0 starts an entry (``- ``), is a comment or is blank
    (entries' own lines are indented), with no line break but LF.
    Anything else (JSON, a ``nodes:`` mapping, document markers,
    directives, a flow list, the line breaks YAML also knows: CR, NEL,
    U+2028, U+2029), fewer than ``min_entries`` entries per part, or
    ``parts`` < 2 gives one part.

    A cut is only a guess that the parts parse alone: an alias to an
    anchor in another part does not, for one. Whoever parses the parts
    must parse the whole text when a part fails or does not hold
    ``count`` entries, for the right result or the right error.
    """
    whole = [Part(first=1, count=None, text=text)]
    if (parts < 2 or path.endswith(".json") or _OTHER_RE.search(text)
            or _OTHER_BREAK_RE.search(text)):
        return whole
    starts = [m.start() for m in _ITEM_RE.finditer(text)]
    parts = min(parts, len(starts) // max(1, min_entries))
    if parts < 2:
        return whole
    size = len(starts) / parts
    firsts = [0] + [round(i * size) for i in range(1, parts)]
    cuts = [0] + [starts[i] for i in firsts[1:]] + [len(text)]
    counts = [b - a for a, b in zip(firsts, firsts[1:] + [len(starts)])]
    return [Part(first=firsts[i] + 1, count=counts[i],
                 text=text[cuts[i]:cuts[i + 1]]) for i in range(parts)]


def validate(entries: list[Any], drivers: Mapping[str, base.BaseDriver],
             source: str = "inventory", first: int = 1
             ) -> list[dict[str, Any]]:
    """Validate every entry; returns normalised node fields.

    :param first: the position of ``entries[0]`` in its file, for the
        messages (when ``entries`` is a part of it).
    :raises: InvalidParameterValue / DriverNotEnabled naming the entry
        (its position, and its name when it has one); duplicate names or
        uuids inside the list are refused too.
    """
    clean: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    uuids: dict[str, int] = {}
    for index, entry in enumerate(entries, start=first):
        label = "%s: node #%d" % (source, index)
        if isinstance(entry, Mapping) and entry.get("name"):
            label += " (%s)" % entry["name"]
        try:
            values = nodes.validate_new(entry, drivers)
        except exceptions.ConductorException as exc:
            raise type(exc)("%s: %s" % (label, exc)) from exc
        for key, seen in (("name", names), ("uuid", uuids)):
            value = values.get(key)
            if value is None:
                continue
            if value in seen:
                raise _invalid("%s: %s %s is also used by node #%d"
                               % (label, key, value, seen[value]))
            seen[value] = index
        clean.append(values)
    return clean

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
import gc
import json
import os
from typing import Any, Iterator, Mapping

import yaml

from conductor.common import exceptions
from conductor.common import node_fields
from conductor.drivers import base

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
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise _invalid("%s: file is %d bytes; the limit is %d"
                           % (path, size, MAX_FILE_BYTES))
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except OSError as exc:
        raise _invalid("%s: cannot read inventory file: %s"
                       % (path, exc.strerror or exc)) from exc
    except UnicodeDecodeError as exc:
        raise _invalid("%s: not UTF-8 text: %s" % (path, exc)) from exc
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


def validate(entries: list[Any], drivers: Mapping[str, base.BaseDriver],
             source: str = "inventory") -> list[dict[str, Any]]:
    """Validate every entry; returns normalised node fields.

    :raises: InvalidParameterValue / DriverNotEnabled naming the entry
        (its position, and its name when it has one); duplicate names or
        uuids inside the list are refused too.
    """
    clean: list[dict[str, Any]] = []
    names: dict[str, int] = {}
    uuids: dict[str, int] = {}
    for index, entry in enumerate(entries, start=1):
        label = "%s: node #%d" % (source, index)
        if isinstance(entry, Mapping) and entry.get("name"):
            label += " (%s)" % entry["name"]
        try:
            values = node_fields.validate_new(entry, drivers)
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

# SPDX-License-Identifier: Apache-2.0
"""A node as users see it: its fields, their checks, its shown forms.

The one place that knows which fields a node has, which of them a user may
set, how a user's values are checked, and how a node is shown: with its
secrets masked, as JSON types on the wire, or as a driver's view::

    clean = nodes.validate_new({"name": "n1", "driver": "fake"}, drivers)
    record = db.create_node(clean)
    wire = nodes.to_primitive(record)       # RPC answer: masked, ISO times
    shown = nodes.from_primitive(wire)      # the caller's side
    view = nodes.driver_view(record)        # what a driver is handed

Everything a user can send (CLI, inventory, RPC) is checked here, before
anything is stored, and every problem is named. The driver then checks
its own ``driver_info``. This module imports no database code: the RPC
client uses it too.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any, Mapping, Sequence
import uuid

from oslo_utils import uuidutils

from conductor.common import exceptions
from conductor.common import masking
from conductor.drivers import base

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
#: Longest name, driver, host or reservation string accepted (and stored).
MAX_NAME_LENGTH = 255
#: Most characters a text field (maintenance reason) may hold.
MAX_TEXT_LENGTH = 4096
#: Most bytes driver_info may take once serialised as JSON.
MAX_DRIVER_INFO_BYTES = 16384

#: The fields of a node as users see it, in display order.
FIELDS = ("uuid", "name", "driver", "driver_info", "power_state",
          "target_power_state", "power_state_updated_at", "maintenance",
          "maintenance_reason", "fault", "power_sync_failures", "last_error",
          "reservation", "created_at", "updated_at")
#: The fields that are timestamps (ISO 8601 strings on the wire).
TIME_FIELDS = ("power_state_updated_at", "created_at", "updated_at")
#: The fields a user may set when enrolling a node.
CREATABLE = ("uuid", "name", "driver", "driver_info", "maintenance",
             "maintenance_reason")
#: The fields a user may change on an enrolled node.
UPDATABLE = ("name", "driver", "driver_info", "maintenance",
             "maintenance_reason")


def _invalid(text: str) -> exceptions.InvalidParameterValue:
    return exceptions.InvalidParameterValue(err=text)


def check_name(name: Any) -> str | None:
    if name is None:
        return None
    if not isinstance(name, str):
        raise _invalid("Node name must be a string, got %s"
                       % type(name).__name__)
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise _invalid("Node name must be 1 to %d characters long"
                       % MAX_NAME_LENGTH)
    if uuidutils.is_uuid_like(name):
        raise _invalid("Node name %r looks like a UUID; names and UUIDs "
                       "must stay distinguishable" % name)
    # NOTE: fullmatch, not match: "$" also matches before a trailing
    # newline, which let "node\n" through.
    if not _NAME_RE.fullmatch(name):
        raise _invalid("Node name %r is invalid: use letters, digits and "
                       "'.', '_', '~', '-', starting with a letter or digit"
                       % name)
    return name


def check_uuid(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not uuidutils.is_uuid_like(value):
        raise _invalid("Node uuid %s is not a valid UUID"
                       % _shown(repr(value)))
    # NOTE: canonical form, so that braces, "urn:uuid:" or missing hyphens
    # never reach the 36-character column or break lookups by uuid.
    return str(uuid.UUID(value))


def check_driver_info(info: Any) -> dict[str, Any]:
    if info is None:
        return {}
    if not isinstance(info, Mapping):
        raise _invalid("driver_info must be a mapping of field to value, "
                       "got %s" % type(info).__name__)
    bad = [_shown(repr(key)) for key in info
           if not isinstance(key, str) or not key]
    if bad:
        raise _invalid("driver_info keys must be non-empty strings: %s"
                       % ", ".join(bad[:10]))
    try:
        # NOTE: allow_nan=False: NaN and Infinity are not JSON, and MySQL
        # and PostgreSQL JSON columns refuse them.
        size = len(json.dumps(dict(info), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise _invalid("driver_info must be JSON-serialisable: %s" % exc)
    if size > MAX_DRIVER_INFO_BYTES:
        raise _invalid("driver_info is %d bytes as JSON; the limit is %d"
                       % (size, MAX_DRIVER_INFO_BYTES))
    return dict(info)


def check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid("%s must be true or false, got %s"
                       % (field, _shown(repr(value))))
    return value


def check_text(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid("%s must be a string, got %s"
                       % (field, type(value).__name__))
    if len(value) > MAX_TEXT_LENGTH:
        raise _invalid("%s is %d characters long; the limit is %d"
                       % (field, len(value), MAX_TEXT_LENGTH))
    return value


def check_driver(name: Any, drivers: Mapping[str, base.BaseDriver]
                 ) -> base.BaseDriver:
    if not isinstance(name, str) or not name:
        raise _invalid("Node driver is required and must be a string")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid("Node driver must be at most %d characters, got %d"
                       % (MAX_NAME_LENGTH, len(name)))
    if name not in drivers:
        raise exceptions.DriverNotEnabled(
            driver=name, enabled=", ".join(sorted(drivers)) or "none")
    return drivers[name]


def _check_fields(values: Any, allowed: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(values, Mapping):
        raise _invalid("A node must be a mapping of field to value, got %s"
                       % type(values).__name__)
    unknown = sorted(_shown(key) for key in values if key not in allowed)
    if unknown:
        raise _invalid("Unknown node field(s): %s; allowed: %s"
                       % (", ".join(unknown[:10]) + (
                           ", ..." if len(unknown) > 10 else ""),
                          ", ".join(allowed)))
    return values


#: Most characters of a caller's value quoted back in an error.
SHOWN_LENGTH = 64


def _shown(value: Any) -> str:
    """``value`` as quoted in an error: cut to :data:`SHOWN_LENGTH`."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= SHOWN_LENGTH else \
        text[:SHOWN_LENGTH - 3] + "..."


def validate_new(values: Any, drivers: Mapping[str, base.BaseDriver]
                 ) -> dict[str, Any]:
    """Check a new node and return its normalised fields.

    :raises: InvalidParameterValue or DriverNotEnabled naming the problem.
    """
    values = _check_fields(values, CREATABLE)
    clean: dict[str, Any] = {
        "uuid": check_uuid(values.get("uuid")),
        "name": check_name(values.get("name")),
        "driver_info": check_driver_info(values.get("driver_info")),
        "maintenance": check_bool("maintenance",
                                  values.get("maintenance", False)),
        "maintenance_reason": check_text(
            "maintenance_reason", values.get("maintenance_reason")),
    }
    driver = check_driver(values.get("driver"), drivers)
    clean["driver"] = values["driver"]
    _driver_validate(driver, values["driver"], as_driver_node(clean))
    return {key: value for key, value in clean.items() if value is not None}


def validate_update(node: Any, values: Any,
                    drivers: Mapping[str, base.BaseDriver]
                    ) -> dict[str, Any]:
    """Check changes to ``node`` (a NodeRecord); returns them normalised.

    The driver validates the node as it would be after the change.
    """
    values = _check_fields(values, UPDATABLE)
    clean: dict[str, Any] = {}
    if "name" in values:
        clean["name"] = check_name(values["name"])
    if "driver_info" in values:
        clean["driver_info"] = check_driver_info(values["driver_info"])
    if "maintenance" in values:
        clean["maintenance"] = check_bool("maintenance",
                                          values["maintenance"])
        if not clean["maintenance"]:
            clean.setdefault("maintenance_reason", None)
            clean["fault"] = None
    if "maintenance_reason" in values:
        clean["maintenance_reason"] = check_text(
            "maintenance_reason", values["maintenance_reason"])
    driver_name = values.get("driver", node.driver)
    driver = check_driver(driver_name, drivers)
    if "driver" in values:
        clean["driver"] = driver_name
    after = {"uuid": node.uuid, "name": clean.get("name", node.name),
             "driver": driver_name,
             "driver_info": clean.get("driver_info", node.driver_info),
             "power_state": node.power_state}
    _driver_validate(driver, driver_name, as_driver_node(after))
    return clean


def _driver_validate(driver: base.BaseDriver, name: str,
                     node: base.DriverNode) -> None:
    """Run the driver's validate(); any error becomes a named refusal."""
    try:
        driver.power.validate(node)
    except exceptions.ConductorException:
        raise
    except Exception as exc:
        # NOTE: a third-party driver may raise anything; the caller (CLI,
        # RPC, inventory) must still get one clear line, not a traceback.
        raise _invalid("Driver %s refused node %s: %s: %s" % (
            name, node.name or node.uuid, type(exc).__name__, exc)) from exc


def as_driver_node(values: Mapping[str, Any]) -> base.DriverNode:
    """A DriverNode from a mapping of a node's fields (a node to be)."""
    get = values.get
    return base.DriverNode(uuid=get("uuid") or "<new node>",
                           name=get("name"), driver=get("driver") or "",
                           driver_info=dict(get("driver_info") or {}),
                           power_state=get("power_state"))


def driver_view(node: Any) -> base.DriverNode:
    """What a driver is handed for ``node``, a stored node or sync row.

    ``node`` has the attributes ``uuid``, ``name``, ``driver``,
    ``driver_info`` (secrets included) and ``power_state``.
    """
    return base.DriverNode(node.uuid, node.name, node.driver,
                           node.driver_info, node.power_state)


def as_dict(node: Any) -> dict[str, Any]:
    """A stored node as users see it: :data:`FIELDS`, secrets masked.

    Timestamps stay ``datetime``; see :func:`to_primitive` for the wire.
    """
    data: dict[str, Any] = {field: getattr(node, field) for field in FIELDS}
    data["driver_info"] = masking.mask_data(
        base.mask_secrets(node.driver_info))
    for field in ("last_error", "maintenance_reason"):
        data[field] = masking.mask_data(data[field])
    return data


def to_primitive(node: Any) -> dict[str, Any]:
    """A stored node as JSON types: secrets masked, ISO timestamps."""
    return dict_to_primitive(as_dict(node))


def dict_to_primitive(node: Mapping[str, Any]) -> dict[str, Any]:
    """The reverse of :func:`from_primitive` (forwarded answers)."""
    data = dict(node)
    for field in TIME_FIELDS:
        value = data.get(field)
        if isinstance(value, datetime.datetime):
            data[field] = value.isoformat()
    return data


def from_primitive(data: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's view of a node: timestamps back to ``datetime``.

    The result equals :func:`as_dict` of the stored node, so output built
    from either is the same.
    """
    node = dict(data)
    for field in TIME_FIELDS:
        value = node.get(field)
        if isinstance(value, str):
            node[field] = datetime.datetime.fromisoformat(value)
    return node


def label(node: Any) -> str:
    """How logs name a node: ``NAME (UUID)``, or the uuid alone."""
    name = getattr(node, "name", None)
    return "%s (%s)" % (name, node.uuid) if name else str(node.uuid)


def parse_pairs(pairs: Sequence[str], what: str = "--driver-info"
                ) -> dict[str, Any]:
    """Parse ``K=V`` arguments; V is read as JSON when it parses, else text.

    ``fake_latency_ms=50`` gives the number 50, ``verify=false`` False and
    ``address=10.0.0.1`` the string.
    """
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _invalid("%s expects KEY=VALUE, got %r" % (what, pair))
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        result[key] = value
    return result

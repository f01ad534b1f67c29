# SPDX-License-Identifier: Apache-2.0
"""Power-state reads for a sweep: one node at a time, or in batches.

A driver whose power interface has ``get_power_states(nodes)`` (see
:class:`conductor.drivers.base.PowerInterface`) is handed its nodes in
batches of at most ``batch_size``; the nodes of any other driver are read
one by one with ``get_power_state``, as before. Either way one *unit* is
one item of the sweep's fan-out, under one deadline::

    units = power_reads.plan(rows, drivers, batch_size=64)
    for unit in units:                      # fan-out items, in parallel
        for read in power_reads.read(drivers, unit, timeout=30.0):
            read.row, read.state, read.error   # exactly one per row

**The deadline of a batch** is the per-call deadline (``[conductor]
power_state_timeout``), the same as for a single read: a batch driver
reads its nodes in parallel, and bounds its own waits per BMC well below
it (a BMC that does not answer is that node's failure). A batch that
raises, or overruns its deadline and is abandoned by the fan-out's
watchdog (:func:`abandoned`), fails every node it held, each with the
same clear text; the other batches are not affected.

**Answers are checked** as strictly as a single read's: a node missing
from the answer, a state that is not one of
``conductor.states.STABLE_POWER_STATES`` (or is ``ERROR``) fails that node
with a message saying so; an answer for a uuid that was not asked for is
logged and ignored; an exception given as a node's value is that node's
failure. :func:`read` itself never raises.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterable, Mapping, Sequence

from conductor.common import deadline
from conductor.common import exceptions
from conductor.common import metrics
from conductor.drivers import base
from conductor.executor import pool as pool_mod
from conductor import nodes
from conductor import states
from conductor import task

LOG = logging.getLogger(__name__)

#: The optional batch method of a power interface.
BATCH_METHOD = "get_power_states"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One fan-out item: one node, or a batch of one driver's nodes.

    ``rows`` are sync rows (or stored nodes): anything
    :func:`conductor.nodes.driver_view` accepts.
    """

    driver: str
    rows: tuple[Any, ...]
    batched: bool

    @property
    def uuid(self) -> str:
        """Names the unit in the fan-out's log lines."""
        if not self.batched:
            return str(self.rows[0].uuid)
        return "a batch of %d %s node(s) from %s" % (
            len(self.rows), self.driver, self.rows[0].uuid)


@dataclasses.dataclass(frozen=True)
class Read:
    """The outcome for one node: a state, or an error text (never both)."""

    row: Any
    state: str | None = None
    error: str | None = None


def supports_batch(driver: base.BaseDriver) -> bool:
    """True when ``driver.power`` has a callable ``get_power_states``."""
    return callable(getattr(driver.power, BATCH_METHOD, None))


def plan(rows: Iterable[Any], drivers: Mapping[str, base.BaseDriver],
         batch_size: int) -> list[Unit]:
    """Split ``rows`` into fan-out units, keeping their order.

    Rows of a batch-capable driver go into batches of at most
    ``batch_size`` nodes (the first unit of each batch sits where its
    first row was); the others are one unit each. ``batch_size`` 1 reads
    every node on its own.

    :raises ValueError: when ``batch_size`` is not an integer >= 1.
    """
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int)
            or batch_size < 1):
        raise ValueError("batch_size must be an integer >= 1, got %r"
                         % (batch_size,))
    # NOTE: each entry is (driver, rows, batched); a batch's row list
    # keeps growing until it is full.
    slots: list[tuple[str, list[Any], bool]] = []
    open_batch: dict[str, list[Any]] = {}
    for row in rows:
        driver = drivers[row.driver]
        if batch_size == 1 or not supports_batch(driver):
            slots.append((row.driver, [row], False))
            continue
        batch = open_batch.get(row.driver)
        if batch is None or len(batch) >= batch_size:
            batch = open_batch[row.driver] = []
            slots.append((row.driver, batch, True))
        batch.append(row)
    return [Unit(name, tuple(members), batched)
            for name, members, batched in slots]


def read(drivers: Mapping[str, base.BaseDriver], unit: Unit,
         timeout: float) -> list[Read]:
    """Read the power state of every node of ``unit`` under ``timeout``.

    :returns: one :class:`Read` per row of the unit, in its order.
    """
    driver = drivers[unit.driver]
    if not unit.batched:
        row = unit.rows[0]
        try:
            state = task.call_driver(driver, "get_power_state", row,
                                     timeout=timeout)
            check_state(unit.driver, state)
        except Exception as exc:
            return [Read(row, error=error_text(exc))]
        return [Read(row, state=state)]
    # NOTE: a batch spans many BMCs: it is not spaced per BMC address
    # (each BMC gets one status read per interval from it); it is watched
    # by the pool like a single call (abandoned past its deadline) and
    # counted as one driver call.
    started = time.monotonic()
    result = "error"
    try:
        with pool_mod.guard_call(unit.uuid, BATCH_METHOD, timeout), \
                deadline.scope(timeout):
            answer = getattr(driver.power, BATCH_METHOD)(
                [nodes.driver_view(row) for row in unit.rows])
        result = "success"
    except Exception as exc:
        text = "Batch power state read of %d node(s) failed: %s" % (
            len(unit.rows), error_text(exc))
        return [Read(row, error=text) for row in unit.rows]
    finally:
        metrics.driver_call(unit.driver, BATCH_METHOD, result,
                            time.monotonic() - started)
    return _check_answer(unit, answer)


def abandoned(unit: Unit, timeout: float) -> list[Read]:
    """The outcome of a unit whose call outlived its deadline."""
    if unit.batched:
        text = ("Batch power state read of %d node(s) did not return "
                "within %.1f seconds" % (len(unit.rows), timeout))
    else:
        text = "Power state read did not return within %.1f seconds" % (
            timeout)
    return [Read(row, error=text) for row in unit.rows]


def check_state(driver: str, state: Any) -> None:
    """Refuse a state a read may not report.

    :raises: PowerStateFailure for ``ERROR`` (the BMC answered but cannot
        tell) and for anything not in ``STABLE_POWER_STATES``.
    """
    if state == states.ERROR:
        # NOTE: the BMC answered but cannot tell the state: that is a
        # failed read, retried and counted like any other.
        raise exceptions.PowerStateFailure(
            err="the BMC reports power state 'error'")
    if not isinstance(state, str) or state not in states.STABLE_POWER_STATES:
        raise exceptions.PowerStateFailure(
            err="driver %s returned an invalid power state %r"
                % (driver, state))


def _check_answer(unit: Unit, answer: Any) -> list[Read]:
    rows: Sequence[Any] = unit.rows
    if not isinstance(answer, Mapping):
        text = ("driver %s returned %s from %s instead of a mapping of "
                "node uuid to state" % (unit.driver,
                                        type(answer).__name__, BATCH_METHOD))
        return [Read(row, error=text) for row in rows]
    asked = {row.uuid for row in rows}
    unknown = sorted(str(key) for key in answer if key not in asked)
    if unknown:
        LOG.warning("Driver %(driver)s answered for %(n)d node(s) it was "
                    "not asked about (ignored): %(uuids)s",
                    {"driver": unit.driver, "n": len(unknown),
                     "uuids": ", ".join(unknown[:5])})
    reads = []
    for row in rows:
        if row.uuid not in answer:
            reads.append(Read(row, error="driver %s gave no answer for "
                                         "this node in its batch read"
                                         % unit.driver))
            continue
        value = answer[row.uuid]
        if isinstance(value, BaseException):
            reads.append(Read(row, error=error_text(value)))
            continue
        try:
            check_state(unit.driver, value)
        except exceptions.PowerStateFailure as exc:
            reads.append(Read(row, error=error_text(exc)))
            continue
        reads.append(Read(row, state=value))
    return reads


def error_text(exc: BaseException) -> str:
    """What is recorded as ``last_error`` for a failed read."""
    text = str(exc).strip()
    if isinstance(exc, exceptions.ConductorException) and text:
        return text
    return "%s: %s" % (type(exc).__name__, text) if text else \
        type(exc).__name__

# SPDX-License-Identifier: Apache-2.0
"""The database API: every read and write of conductor's state.

All access goes through :class:`Connection`, built in a worker's
``start()`` (never before the fork) from plain values::

    db = api.Connection.create(url, max_retries=10, retry_interval=10)
    node = db.create_node({"driver": "fake", "name": "n1",
                           "driver_info": {}})
    db.reserve_node(node.uuid, holder="host-a:0")    # NodeLocked if taken
    db.release_node(node.uuid, holder="host-a:0")

Reservations are taken and released for a purpose by
:mod:`conductor.task`, the one path that acts on a node.

Hot paths (power sync, pending actions) use SQLAlchemy Core in batches;
changes to one node are single conditional UPDATEs so that two processes
never both believe they changed it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar
import uuid as uuid_lib

from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from oslo_utils import timeutils
from oslo_utils import uuidutils
import sqlalchemy as sa

from conductor.common import exceptions
from conductor.db import engine as db_engine
from conductor.db import models
from conductor import nodes

LOG = logging.getLogger(__name__)

_nodes = models.nodes
_conductors = models.conductors
_deletions = models.node_deletions
_changes = models.conductor_changes
_Query = TypeVar("_Query", bound=sa.Executable)
_T = TypeVar("_T")

#: How long the record of a deleted node is kept (see changed_sync_rows).
DELETIONS_KEPT = datetime.timedelta(days=1)

#: Columns an insert may set: what a user may set on a new node.
_INSERTABLE = frozenset(nodes.CREATABLE)
#: Columns the conductor may write on an existing node: what a user may
#: change, plus the fields power sync and power actions record.
_WRITABLE = frozenset(nodes.UPDATABLE) | {
    "fault", "last_error", "power_state", "target_power_state",
    "power_sync_failures", "power_action_claim"}


@dataclasses.dataclass(frozen=True, slots=True)
class NodeRecord:
    """A row of ``nodes``. ``driver_info`` includes secrets: mask to show."""

    id: int
    uuid: str
    name: str | None
    driver: str
    driver_info: dict[str, Any]
    power_state: str | None
    target_power_state: str | None
    power_state_updated_at: datetime.datetime | None
    maintenance: bool
    maintenance_reason: str | None
    fault: str | None
    power_sync_failures: int
    last_error: str | None
    reservation: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime | None
    #: Incremented by every change of the node's fields (not of its
    #: reservation): a writer that read version N may write only while
    #: the node is still at N.
    version: int = 0
    #: When ``target_power_state`` was requested (None when none is).
    target_power_state_requested_at: datetime.datetime | None = None
    #: Set when a worker took the pending action (``target_power_state``)
    #: to apply it, cleared when its outcome was recorded: a node with a
    #: target and a claim it did not write had its action interrupted.
    power_action_claim: str | None = None
    #: The fencing token of the reservation: incremented by every reserve
    #: and every takeover. A holder writes and releases only while the
    #: node is still at the epoch its reservation got.
    reservation_epoch: int = 0
    #: The node's partition (:func:`conductor.db.models.partition_of`).
    partition: int = 0
    #: The last power-state poll, successful or not (None: never polled).
    #: Bookkeeping: writing it does not change ``version``.
    power_checked_at: datetime.datetime | None = None
    #: When anything but a poll's stamp last wrote the row (None: not
    #: since migration 0007); see :meth:`Connection.changed_sync_rows`.
    changed_at: datetime.datetime | None = None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> "NodeRecord":
        values = dict(row._mapping)
        values["driver_info"] = _as_dict(values["driver_info"])
        values["maintenance"] = bool(values["maintenance"])
        return cls(**values)


@dataclasses.dataclass(frozen=True, slots=True)
class ConductorRecord:
    """A row of ``conductors``: one worker process of one host."""

    host: str
    worker_id: int
    pid: int | None
    drivers: list[str]
    online: bool
    started_at: datetime.datetime
    heartbeat_at: datetime.datetime
    #: The worker's last status snapshot, or None before its first beat.
    status: dict[str, Any] | None = None
    #: Its host is being drained (``conductor-manage drain``, SIGUSR1).
    draining: bool = False
    #: Registered by a release that moves the membership counter
    #: (:meth:`Connection.membership_version`).
    moves_counter: bool = False

    @property
    def holder(self) -> str:
        return holder_name(self.host, self.worker_id)


@dataclasses.dataclass(frozen=True, slots=True)
class SyncRow:
    """What power sync needs of a node, read in one batch per sweep."""

    uuid: str
    name: str | None
    driver: str
    driver_info: dict[str, Any]
    power_state: str | None
    power_sync_failures: int
    #: The node's version when read (see NodeRecord.version).
    version: int = 0
    #: See NodeRecord.partition and NodeRecord.power_checked_at.
    partition: int = 0
    power_checked_at: datetime.datetime | None = None
    #: In maintenance, and reserved: such a node is not polled. Set only
    #: by :meth:`Connection.changed_sync_rows` and
    #: :meth:`Connection.partition_rows`; :meth:`Connection.sync_rows`
    #: returns only nodes that qualify, without them.
    maintenance: bool = False
    reserved: bool = False
    #: A power action is requested (``target_power_state`` is set); set
    #: only by those two.
    requested: bool = False
    #: When the node was enrolled (the node gauges count a node never
    #: polled as overdue from it); set only by those two.
    created_at: datetime.datetime | None = None


#: SyncRow's fields, in order (see :func:`restamped`).
_SYNC_ROW_FIELDS = tuple(field.name for field in dataclasses.fields(SyncRow))


def restamped(row: SyncRow, checked: datetime.datetime | None,
              failures: int | None = None) -> SyncRow:
    """``row`` polled at ``checked``, with ``failures`` in a row if given.

    What ``dataclasses.replace`` gives, in less than half its time: power
    sync makes two such copies for every poll.
    """
    copy = object.__new__(SyncRow)
    for name in _SYNC_ROW_FIELDS:
        object.__setattr__(copy, name, getattr(row, name))
    object.__setattr__(copy, "power_checked_at", checked)
    if failures is not None:
        object.__setattr__(copy, "power_sync_failures", failures)
    return copy


#: Largest number of values in one ``IN (...)`` list; longer lists are
#: sent in several statements.
IN_BATCH = 500

#: The index of (changed_at, partition): power sync's change feed.
CHANGED_INDEX = "nodes_changed_idx"

#: Partition filters, and built statements, each Connection keeps at most
#: (see Connection._in_partitions and Connection._statement).
CACHED_CLAUSES = 4096

#: Seconds a Connection holds the connection it keeps (see
#: Connection._on_kept) before it goes back to the pool and a fresh one is
#: checked out (the pool's ping and recycling apply again).
KEPT_MAX_AGE = 600.0

#: Connection._in_partitions' filter for no partition at all: no row can
#: match, so no statement is sent.
_NO_ROWS = sa.false()


def holder_name(host: str, worker_id: int) -> str:
    """The reservation string of one worker: ``host:worker_id``."""
    return "%s:%d" % (host, worker_id)


def _json_mapping(value: Any) -> Mapping[str, Any]:
    """A JSON column's mapping ({} for NULL)."""
    # NOTE: some drivers (older PyMySQL with MariaDB) hand JSON columns back
    # as text; decode them here so callers always get a mapping.
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return value or {}


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(_json_mapping(value))


class Connection:
    """All database operations, over one engine (one per process)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._partition_filters: dict[tuple[int, ...], sa.TextClause] = {}
        #: Built statements of the per-second reads, by their shape.
        self._statements: dict[tuple[Any, ...], Any] = {}
        #: The connection the frequent reads and small writes share (see
        #: _on_kept), when it was checked out, and who uses it.
        self._kept: sa.Connection | None = None
        self._kept_since = 0.0
        self._kept_lock = threading.Lock()
        #: Not on SQLite: a file, no round trip to save (a worker's
        #: SQLite connections are pooled: see engine.create_engine); and
        #: its setup sends BEGIN at every begin, which a kept connection
        #: would hold open.
        self._keeps_connection = engine.dialect.name != "sqlite"

    @classmethod
    def create(cls, url: str, **kwargs: Any) -> "Connection":
        """Build the engine (see :func:`engine.create_engine`); wrap it."""
        return cls(db_engine.create_engine(url, **kwargs))

    def dispose(self) -> None:
        # NOTE: a statement stuck on a hung server must not hold the stop
        # up; its connection goes with the process then. Reads and writes
        # made after this go through the pool.
        self._keeps_connection = False
        if self._kept_lock.acquire(timeout=1.0):
            try:
                self._drop_kept()
            finally:
                self._kept_lock.release()
        else:
            LOG.warning("A statement on the kept database connection is "
                        "still running; the connection is left to it")
        self.engine.dispose()

    def _fetch(self, query: sa.Executable,
               params: Mapping[str, Any] | None = None) -> list[sa.Row[Any]]:
        """Every row of one read-only statement (see :meth:`_on_kept`)."""
        return self._on_kept(lambda conn: list(conn.execute(query, params)))

    def _on_kept(self, work: Callable[[sa.Connection], _T],
                 write: bool = False) -> _T:
        """``work(conn)`` on the kept connection, else on one of the pool.

        Workers send a few reads every second (the change feed, the
        pending-action check), the ``conductors`` rows and their
        heartbeat every few seconds, and their polls' stamps. Through the
        pool each cost three round trips or more: the pool's ping at
        checkout, the statement (within BEGIN and COMMIT for a write),
        and the rollback at checkin. On a network database they share
        one kept connection in autocommit mode instead: one round trip a
        statement, and no transaction left open between them. It is
        checked out again after :data:`KEPT_MAX_AGE` seconds, and at
        once after an error (a lost connection is tried again once on a
        fresh one, as the pool's ping would have done). Work arriving
        while another thread holds it goes through the pool (a write in
        a transaction of its own).

        ``work`` must be safe to run twice (a read, or a write whose
        statements each set values that do not depend on what the row
        held), and with ``write``, each of its statements must stand on
        its own: in autocommit mode each is committed as it runs.
        """
        held = self._keeps_connection and \
            self._kept_lock.acquire(blocking=False)
        if held and not self._keeps_connection:
            # NOTE: dispose() came first: keep no connection after it.
            self._kept_lock.release()
            held = False
        if not held:
            if write:
                with self.engine.begin() as conn:
                    return work(conn)
            with self.engine.connect() as conn:
                return work(conn)
        try:
            fresh = self._kept is None or \
                time.monotonic() - self._kept_since >= KEPT_MAX_AGE
            try:
                return self._work_kept(work, fresh)
            except db_exc.DBConnectionError:
                if fresh:
                    raise
            LOG.debug("The kept database connection was lost; sending "
                      "again on a new one")
            return self._work_kept(work, True)
        finally:
            self._kept_lock.release()

    def _work_kept(self, work: Callable[[sa.Connection], _T],
                   fresh: bool) -> _T:
        """Run ``work`` on the kept connection (a new one when ``fresh``)."""
        if fresh:
            self._drop_kept()
            conn = self.engine.connect()
            try:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                conn.close()
                raise
            self._kept, self._kept_since = conn, time.monotonic()
        assert self._kept is not None
        try:
            return work(self._kept)
        except BaseException:
            # NOTE: whatever failed, the next use starts afresh.
            self._drop_kept()
            raise

    def _drop_kept(self) -> None:
        conn, self._kept = self._kept, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                # NOTE: a broken connection is invalidated by the pool;
                # nothing more to do with it.
                LOG.debug("Closing the kept database connection failed",
                          exc_info=True)

    def _in_partitions(self, partitions: Iterable[int] | None
                       ) -> sa.TextClause | sa.ColumnElement[bool] | None:
        """The filter that keeps only the rows of ``partitions``.

        None (no filter) for None, :data:`_NO_ROWS` (nothing to read: the
        caller sends nothing) for no partition, else a clause. A worker
        sends the same partitions
        every second: the integers are written into the SQL text once per
        set and the clause is reused, instead of binding and escaping
        hundreds of parameters per statement (which cost a worker more
        CPU than the rows it read).
        """
        if partitions is None:
            return None
        # NOTE: callers pass the same sorted list every second: look it up
        # as given first; normalise (and check) it only on a miss.
        given = tuple(partitions)
        clause = self._partition_filters.get(given)
        if clause is not None:
            return clause
        key = tuple(sorted({int(p) for p in given}))
        if not key:
            return _NO_ROWS
        clause = self._partition_filters.get(key)
        if clause is None:
            if len(self._partition_filters) >= CACHED_CLAUSES:
                self._partition_filters.clear()
            column = self.engine.dialect.identifier_preparer \
                .quote_identifier("partition")
            clause = sa.text("%s IN (%s)" % (column,
                                             ",".join(map(str, key))))
            self._partition_filters[key] = clause
        self._partition_filters[given] = clause
        return clause

    def _statement(self, key: tuple[Any, ...],
                   build: Callable[[], _Query]) -> _Query:
        """The statement ``build()`` makes for ``key``, built once.

        Workers run the same few reads every second; building a SELECT
        and its cache key anew each time cost them more CPU than sending
        it. ``key`` must hold everything ``build`` depends on.
        """
        statement = self._statements.get(key)
        if statement is None:
            if len(self._statements) >= CACHED_CLAUSES:
                self._statements.clear()
            statement = self._statements[key] = build()
        return statement

    # -- nodes ---------------------------------------------------------

    def create_node(self, values: Mapping[str, Any]) -> NodeRecord:
        """Insert one node; values are already validated.

        :raises: DuplicateName when the name or uuid exists.
        """
        return self.import_nodes([values])[0]

    def import_nodes(self, items: Sequence[Mapping[str, Any]],
                     read_back: bool = True) -> list[NodeRecord]:
        """Insert all nodes in one transaction: all of them or none.

        :param read_back: return the stored nodes (False: return [] and
            save reading thousands of rows back).
        :raises: DuplicateName naming the first clash; nothing is stored.
        """
        now = timeutils.utcnow()
        rows = []
        for values in items:
            unknown = set(values) - _INSERTABLE
            if unknown:
                raise exceptions.InvalidParameterValue(
                    err="Unknown node field(s): %s" % ", ".join(
                        sorted(unknown)))
            row = {"uuid": values.get("uuid") or uuidutils.generate_uuid(),
                   "name": values.get("name"),
                   "driver": values["driver"],
                   "driver_info": dict(values.get("driver_info") or {}),
                   "maintenance": bool(values.get("maintenance", False)),
                   "maintenance_reason": values.get("maintenance_reason"),
                   "power_sync_failures": 0,
                   "created_at": now}
            row["partition"] = models.partition_of(row["uuid"])
            rows.append(row)
        try:
            with self.engine.begin() as conn:
                if rows:
                    conn.execute(_nodes.insert(), rows)
        except (db_exc.DBDuplicateEntry, sa.exc.IntegrityError) as exc:
            raise self._duplicate(rows, exc) from exc
        if not read_back:
            return []
        return self.get_nodes_by_uuid([row["uuid"] for row in rows])

    def node_identities(self) -> tuple[set[str], set[str]]:
        """The names and the uuids of every node (for de-duplication)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(_nodes.c.name, _nodes.c.uuid))
            names: set[str] = set()
            uuids: set[str] = set()
            for name, uuid in rows:
                uuids.add(uuid)
                if name:
                    names.add(name)
        return names, uuids

    def _duplicate(self, rows: list[dict[str, Any]],
                   exc: Exception) -> exceptions.ConductorException:
        names = [row["name"] for row in rows if row["name"]]
        uuids = [row["uuid"] for row in rows]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                return exceptions.DuplicateName(name=name)
            seen.add(name)
        with self.engine.connect() as conn:
            clash = conn.execute(
                sa.select(_nodes.c.name).where(_nodes.c.name.in_(names))
            ).scalars().first() if names else None
            if clash:
                return exceptions.DuplicateName(name=clash)
            taken = conn.execute(
                sa.select(_nodes.c.uuid).where(_nodes.c.uuid.in_(uuids))
            ).scalars().first()
        if taken or len(set(uuids)) != len(uuids):
            return exceptions.InvalidParameterValue(
                err="A node with UUID %s already exists." % (
                    taken or _first_repeat(uuids)))
        return exceptions.InvalidParameterValue(
            err="Node could not be stored: %s" % db_engine.reason(exc))

    def get_nodes_by_uuid(self, uuids: Sequence[str]) -> list[NodeRecord]:
        """The nodes with these uuids, in the order given (missing skipped)."""
        with self.engine.connect() as conn:
            found = {}
            for start in range(0, len(uuids), 500):
                chunk = uuids[start:start + 500]
                for row in conn.execute(
                        sa.select(_nodes).where(_nodes.c.uuid.in_(chunk))):
                    found[row.uuid] = NodeRecord.from_row(row)
        return [found[uuid] for uuid in uuids if uuid in found]

    def get_node(self, ident: str) -> NodeRecord:
        """A node by uuid or name.

        :raises: NodeNotFound.
        """
        if uuidutils.is_uuid_like(ident):
            # NOTE: uuids are stored in canonical form (lower case, with
            # hyphens); is_uuid_like also accepts upper case, braces, a
            # "urn:uuid:" prefix and no hyphens.
            condition = _nodes.c.uuid == str(uuid_lib.UUID(ident))
        else:
            condition = _nodes.c.name == ident
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_nodes).where(condition)).first()
        if row is None:
            raise exceptions.NodeNotFound(node=ident)
        return NodeRecord.from_row(row)

    def list_nodes(self, *, driver: str | None = None,
                   maintenance: bool | None = None,
                   limit: int | None = None,
                   partitions: Iterable[int] | None = None
                   ) -> list[NodeRecord]:
        """Nodes ordered by id, optionally filtered.

        :param partitions: only nodes of these partitions (None: all);
            one statement whatever their number.
        """
        query = sa.select(_nodes).order_by(_nodes.c.id)
        if driver is not None:
            query = query.where(_nodes.c.driver == driver)
        if maintenance is not None:
            query = query.where(_nodes.c.maintenance == maintenance)
        if limit is not None:
            query = query.limit(limit)
        where = self._in_partitions(partitions)
        if where is _NO_ROWS:
            return []
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as conn:
            return [NodeRecord.from_row(row) for row in conn.execute(query)]

    def update_node(self, ident: str, values: Mapping[str, Any], *,
                    holder: str | None = None,
                    epoch: int | None = None) -> NodeRecord:
        """Change fields of a node not reserved by another holder.

        :param holder: the caller's reservation; None means the node must
            not be reserved at all.
        :param epoch: with ``holder``: the fencing token of that
            reservation (``reservation_epoch``); the write happens only
            while the node is still at it.
        :raises: NodeNotFound, NodeLocked, DuplicateName; ReservationLost
            when ``holder`` and ``epoch`` no longer match the node.
        """
        unknown = set(values) - _WRITABLE
        if unknown:
            raise exceptions.InvalidParameterValue(
                err="Unknown or read-only node field(s): %s" % ", ".join(
                    sorted(unknown)))
        node = self.get_node(ident)
        changes = dict(values)
        changes["updated_at"] = timeutils.utcnow()
        changes["version"] = _nodes.c.version + 1
        if "power_state" in changes:
            changes["power_state_updated_at"] = changes["updated_at"]
        if "driver_info" in changes:
            changes["driver_info"] = dict(changes["driver_info"] or {})
        query = _nodes.update().where(_nodes.c.uuid == node.uuid)
        if holder is None:
            query = query.where(_nodes.c.reservation.is_(None))
        else:
            query = query.where(_nodes.c.reservation == holder)
            if epoch is not None:
                query = query.where(_nodes.c.reservation_epoch == epoch)
        try:
            with self.engine.begin() as conn:
                count = conn.execute(query.values(**changes)).rowcount
        except (db_exc.DBDuplicateEntry, sa.exc.IntegrityError) as exc:
            raise exceptions.DuplicateName(name=values.get("name")) from exc
        if count != 1:
            if holder is not None and epoch is not None and \
                    self.holds(node.uuid, holder, epoch) is False:
                raise exceptions.ReservationLost(node=node.uuid,
                                                 holder=holder, epoch=epoch)
            self._raise_not_updated(node.uuid, ident)
        return self.get_node(node.uuid)

    def holds(self, uuid: str, holder: str, epoch: int) -> bool | None:
        """Whether ``holder`` still has the node at ``epoch``.

        :returns: None when the node is gone.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(_nodes.c.reservation, _nodes.c.reservation_epoch)
                .where(_nodes.c.uuid == uuid)).first()
        if row is None:
            return None
        return bool(row.reservation == holder
                    and row.reservation_epoch == epoch)

    def _raise_not_updated(self, uuid: str, ident: str) -> None:
        with self.engine.connect() as conn:
            current = conn.execute(
                sa.select(_nodes.c.reservation).where(_nodes.c.uuid == uuid)
            ).first()
        if current is None:
            raise exceptions.NodeNotFound(node=ident)
        raise exceptions.NodeLocked(node=ident,
                                    holder=current.reservation or "nobody")

    def delete_node(self, ident: str) -> None:
        """Delete an unreserved node.

        :raises: NodeNotFound, NodeLocked.
        """
        node = self.get_node(ident)
        now = timeutils.utcnow()
        with self.engine.begin() as conn:
            count = conn.execute(
                _nodes.delete().where(_nodes.c.uuid == node.uuid)
                .where(_nodes.c.reservation.is_(None))).rowcount
            if count == 1:
                conn.execute(_deletions.delete().where(
                    _deletions.c.deleted_at < now - DELETIONS_KEPT))
                # NOTE: by the database's clock, like nodes.changed_at.
                conn.execute(_deletions.insert().values(
                    uuid=node.uuid, partition=node.partition,
                    deleted_at=models.utc_now()))
        if count != 1:
            self._raise_not_updated(node.uuid, ident)

    def request_power_state(self, ident: str, target: str, *,
                            holder: str | None = None,
                            claim: str | None = None) -> NodeRecord:
        """Record a requested power action for the owner to apply.

        Succeeds only when the node is neither reserved nor already has a
        pending action, so two requests can never both be accepted.

        :param holder: also reserve the node for ``holder``, in the same
            UPDATE (the caller applies the action itself).
        :param claim: with ``holder``: the claim marker written in the
            same UPDATE (see ``NodeRecord.power_action_claim``).
        :raises: NodeNotFound, NodeLocked.
        """
        node = self.get_node(ident)
        now = timeutils.utcnow()
        values: dict[str, Any] = {
            "target_power_state": target, "last_error": None,
            "target_power_state_requested_at": now,
            "power_action_claim": claim if holder is not None else None,
            "version": _nodes.c.version + 1, "updated_at": now}
        if holder is not None:
            values["reservation"] = holder
            values["reservation_epoch"] = _nodes.c.reservation_epoch + 1
        with self.engine.begin() as conn:
            count = conn.execute(
                _nodes.update()
                .where(_nodes.c.uuid == node.uuid)
                .where(_nodes.c.reservation.is_(None))
                .where(_nodes.c.target_power_state.is_(None))
                .values(**values)).rowcount
        if count != 1:
            current = self.get_node(node.uuid)
            holder = current.reservation or (
                "a pending '%s' action" % current.target_power_state)
            raise exceptions.NodeLocked(node=ident, holder=holder)
        return self.get_node(node.uuid)

    def stale_power_requests(self, uuids: Sequence[str],
                             cutoff: datetime.datetime
                             ) -> list[tuple[str, str, int]]:
        """Pending, unreserved, unclaimed requests made before ``cutoff``.

        A request stored before its time was recorded (an older release)
        counts from the node's last change.

        :returns: ``(uuid, target_power_state, version)`` of each.
        """
        c = _nodes.c
        requested = sa.func.coalesce(c.target_power_state_requested_at,
                                     c.updated_at, c.created_at)
        found: list[tuple[str, str, int]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(uuids), 500):
                chunk = list(uuids[start:start + 500])
                found.extend(
                    (row.uuid, row.target_power_state, row.version)
                    for row in conn.execute(
                        sa.select(c.uuid, c.target_power_state, c.version)
                        .where(c.uuid.in_(chunk))
                        .where(c.target_power_state.is_not(None))
                        .where(c.reservation.is_(None))
                        .where(c.power_action_claim.is_(None))
                        .where(requested < cutoff)))
        return found

    def clear_power_request(self, uuid: str, last_error: str, *,
                            target: str | None = None,
                            version: int | None = None) -> bool:
        """Drop the node's pending request unless it is being applied.

        One conditional UPDATE: only while a request is pending, the node
        is not reserved and the request was never claimed (no worker has
        taken it), and, when given,
        while the request is still ``target`` and the node at ``version``.

        :param last_error: recorded on the node, saying why.
        :returns: whether a request was dropped.
        """
        # NOTE: a claimed request may have been partly applied before its
        # worker died: only its next owner, reading the BMC, resolves it.
        query = (_nodes.update().where(_nodes.c.uuid == uuid)
                 .where(_nodes.c.target_power_state.is_not(None))
                 .where(_nodes.c.reservation.is_(None))
                 .where(_nodes.c.power_action_claim.is_(None)))
        if target is not None:
            query = query.where(_nodes.c.target_power_state == target)
        if version is not None:
            query = query.where(_nodes.c.version == version)
        with self.engine.begin() as conn:
            count = conn.execute(query.values(
                target_power_state=None,
                target_power_state_requested_at=None,
                last_error=last_error, version=_nodes.c.version + 1,
                updated_at=timeutils.utcnow())).rowcount
        return count == 1

    # -- reservations --------------------------------------------------

    def reserve_node(self, uuid: str, holder: str,
                     claim: str | None = None) -> NodeRecord:
        """Take the node's reservation for ``holder``.

        :param claim: also claim the node's pending power action, in the
            same UPDATE: when it has a ``target_power_state`` and no claim
            yet, ``power_action_claim`` becomes ``claim``. An older claim
            is kept, so the caller sees that the action was interrupted.
        The reservation gets a new fencing token: the returned node's
        ``reservation_epoch``, to pass to :meth:`update_node` and
        :meth:`release_node`.

        :raises: NodeLocked when someone holds it, NodeNotFound.
        """
        values: dict[str, Any] = {
            "reservation": holder,
            "reservation_epoch": _nodes.c.reservation_epoch + 1}
        if claim is not None:
            c = _nodes.c
            values["power_action_claim"] = sa.case(
                (sa.and_(c.target_power_state.is_not(None),
                         c.power_action_claim.is_(None)), claim),
                else_=c.power_action_claim)
        with self.engine.begin() as conn:
            count = conn.execute(
                _nodes.update().where(_nodes.c.uuid == uuid)
                .where(_nodes.c.reservation.is_(None))
                .values(**values)).rowcount
        if count != 1:
            self._raise_not_updated(uuid, uuid)
        try:
            return self.get_node(uuid)
        except BaseException:
            # NOTE: the caller never sees the reservation it now holds, so
            # it could never release it: give it back before failing.
            self.release_node(uuid, holder)
            raise

    def release_node(self, uuid: str, holder: str,
                     epoch: int | None = None) -> bool:
        """Drop ``holder``'s reservation; False when it did not hold it.

        :param epoch: the fencing token of the reservation: a reservation
            taken over since (a later epoch) is left alone.

        A database error is retried once at once; a second one is raised
        (:class:`conductor.task.Holdings` queues the release and retries
        it until it succeeds).
        """
        query = (_nodes.update().where(_nodes.c.uuid == uuid)
                 .where(_nodes.c.reservation == holder))
        if epoch is not None:
            query = query.where(_nodes.c.reservation_epoch == epoch)
        query = query.values(reservation=None)
        try:
            with self.engine.begin() as conn:
                count = conn.execute(query).rowcount
        except (db_exc.DBError, sa.exc.SQLAlchemyError):
            LOG.warning("Releasing node %s failed once; retrying", uuid)
            with self.engine.begin() as conn:
                count = conn.execute(query).rowcount
        if count != 1:
            LOG.warning("Node %(node)s was not reserved by %(holder)s%(at)s "
                        "when releasing it",
                        {"node": uuid, "holder": holder,
                         "at": "" if epoch is None
                         else " at epoch %d" % epoch})
        return count == 1

    def release_reservations(self, *, holders: Iterable[str] | None = None,
                             keep: Iterable[str] | None = None,
                             uuids: Sequence[str] | None = None,
                             exclude: Iterable[str] | None = None,
                             partitions: Iterable[int] | None = None
                             ) -> int:
        """Clear stale reservations; returns how many were cleared.

        Claims of power actions stay (``power_action_claim``): whoever
        applies such an action next reads the BMC before acting. Each
        cleared reservation's ``reservation_epoch`` is incremented: its
        former holder can no longer write to the node or release it.

        :param holders: clear the reservations of these holders, or
        :param keep: clear every reservation *not* held by these holders,
        :param uuids: only among these nodes (None: all nodes),
        :param exclude: never these nodes (calls still in progress).
        :param partitions: only among nodes of these partitions.
        """
        query = _nodes.update().where(_nodes.c.reservation.is_not(None))
        if holders is not None:
            query = query.where(_nodes.c.reservation.in_(list(holders)))
        if keep is not None:
            query = query.where(_nodes.c.reservation.not_in(list(keep)))
        if exclude is not None and (excluded := list(exclude)):
            query = query.where(_nodes.c.uuid.not_in(excluded))
        total = 0
        query = query.values(
            reservation=None,
            reservation_epoch=_nodes.c.reservation_epoch + 1)
        with self.engine.begin() as conn:
            if uuids is None:
                where = self._in_partitions(partitions)
                if where is not _NO_ROWS:
                    total += conn.execute(
                        query if where is None else query.where(where)
                    ).rowcount
            else:
                for start in range(0, len(uuids), 500):
                    chunk = list(uuids[start:start + 500])
                    total += conn.execute(
                        query.where(_nodes.c.uuid.in_(chunk))).rowcount
        return total

    def reservations(self) -> dict[str, str]:
        """Every reserved node: ``{uuid: holder}``."""
        query = (sa.select(_nodes.c.uuid, _nodes.c.reservation)
                 .where(_nodes.c.reservation.is_not(None)))
        with self.engine.connect() as conn:
            return {uuid: holder for uuid, holder in conn.execute(query)}

    # -- power sync ----------------------------------------------------

    def node_uuids(self, *, maintenance: bool | None = None,
                   reserved: bool | None = None,
                   with_target: bool | None = None,
                   drivers: Sequence[str] | None = None,
                   partitions: Iterable[int] | None = None) -> list[str]:
        """Uuids of the nodes matching every given filter.

        :param partitions: only nodes of these partitions (None: all).
        """
        where = self._in_partitions(partitions)
        if where is _NO_ROWS:
            return []
        driver_key = None if drivers is None else tuple(drivers)

        def build() -> sa.Select[Any]:
            query = sa.select(_nodes.c.uuid)
            if maintenance is not None:
                query = query.where(_nodes.c.maintenance == maintenance)
            if reserved is not None:
                query = query.where(
                    _nodes.c.reservation.is_not(None) if reserved
                    else _nodes.c.reservation.is_(None))
            if with_target is not None:
                query = query.where(
                    _nodes.c.target_power_state.is_not(None) if with_target
                    else _nodes.c.target_power_state.is_(None))
            if driver_key is not None:
                query = query.where(_nodes.c.driver.in_(list(driver_key)))
            return query if where is None else query.where(where)

        query = self._statement(("node_uuids", maintenance, reserved,
                                 with_target, driver_key, where), build)
        return [row[0] for row in self._fetch(query)]

    def sync_rows(self, *, drivers: Sequence[str],
                  maintenance: bool = False,
                  fault: str | None = None,
                  partitions: Iterable[int] | None = None) -> list[SyncRow]:
        """Unreserved nodes for power sync (one query).

        With ``maintenance`` True and a ``fault``, the nodes in maintenance
        for that fault (the recovery sweep).

        :param partitions: only nodes of these partitions (None: all).
        """
        where = self._in_partitions(partitions)
        if where is _NO_ROWS:
            return []
        driver_key = tuple(drivers)

        def build() -> sa.Select[Any]:
            c = _nodes.c
            query = (sa.select(c.uuid, c.name, c.driver, c.driver_info,
                               c.power_state, c.power_sync_failures,
                               c.version, c.partition, c.power_checked_at)
                     .where(c.reservation.is_(None))
                     .where(c.maintenance == maintenance)
                     .where(c.driver.in_(list(driver_key))))
            if fault is not None:
                query = query.where(c.fault == fault)
            return query if where is None else query.where(where)

        query = self._statement(("sync_rows", driver_key, maintenance, fault,
                                 where), build)
        with self.engine.connect() as conn:
            return [SyncRow(row.uuid, row.name, row.driver,
                            _as_dict(row.driver_info), row.power_state,
                            row.power_sync_failures, row.version,
                            row.partition, row.power_checked_at)
                    for row in conn.execute(query)]

    def partition_rows(self, *, partitions: Iterable[int]
                       ) -> list[SyncRow]:
        """Every row of ``partitions``, whatever its state (one query).

        Power sync's in-memory rows read these when a worker gains
        partitions, and every few intervals: the rows it polls, and the
        others (in maintenance, reserved, of a driver not enabled here),
        which its gauges count.
        """
        where = self._in_partitions(partitions)
        if where is _NO_ROWS or where is None:
            return []

        def build() -> sa.Select[Any]:
            return sa.select(*_sync_columns()).where(where)

        query = self._statement(("partition_rows", where), build)
        with self.engine.connect() as conn:
            return [_sync_row(row) for row in conn.execute(query)]

    def clock(self) -> datetime.datetime:
        """The database server's clock (UTC): see ``nodes.changed_at``."""
        return self._fetch(self._statement(
            ("clock",), lambda: sa.select(models.utc_now())))[0][0]

    def changed_sync_rows(self, *, partitions: Iterable[int],
                          since: datetime.datetime
                          ) -> tuple[list[SyncRow], datetime.datetime]:
        """Rows of ``partitions`` written since ``since``, and the time.

        Whatever their maintenance, reservation and driver (power sync's
        in-memory rows learn from these that a node no longer qualifies).
        The stamp of a poll does not count as a write. A node deleted
        since comes as a row with only ``uuid`` and ``partition``, and
        ``maintenance`` set (so that no reader polls it).

        One statement of two columns when nothing changed (the worker's
        read of every second, mostly), a second one for the rows when
        something did: on MariaDB/MySQL a result describes each of its
        columns, and decoding the rows' dozen descriptions every second
        was a fifth of an idle worker's CPU.

        :param since: by the database's clock (:meth:`clock`).
        :returns: the rows, and the database's clock when it read them.
        """
        where = self._in_partitions(partitions)
        if where is _NO_ROWS or where is None:
            return [], self.clock()

        def probe() -> Any:
            changed, gone = _changed_since(where, [_nodes.c.id],
                                           [_deletions.c.id])
            return sa.select(models.utc_now().label("now"),
                             sa.or_(changed.exists(),
                                    gone.exists()).label("changed"))

        [found] = self._fetch(
            self._statement(("changed_sync_probe", where), probe),
            {"since": since})
        if not found.changed:
            return [], found.now

        def build() -> sa.CompoundSelect:
            d = _deletions.c
            changed, gone = _changed_since(where, _sync_columns(),
                                           _marker(d.uuid, d.partition))
            # NOTE: one more row, always: the server's clock at the read,
            # where the next read starts.
            clock = sa.select(*_marker(sa.literal(""), sa.literal(-1),
                                       models.utc_now()))
            return sa.union_all(changed, gone, clock)

        query = self._statement(("changed_sync_rows", where), build)
        rows: list[SyncRow] = []
        read_at: datetime.datetime | None = None
        for row in self._fetch(query, {"since": since}):
            if row.partition < 0:
                read_at = row.power_checked_at
                continue
            rows.append(_sync_row(row))
        assert read_at is not None
        return rows, read_at

    def apply_sync_results(self, changes: Sequence[Mapping[str, Any]],
                           stamps: Sequence[tuple[datetime.datetime,
                                                  Sequence[str]]] = (),
                           missing: set[str] | None = None) -> int:
        """Write per-node sync outcomes (in one transaction with changes).

        Each mapping has ``uuid`` and the fields to set (``power_state``,
        ``power_sync_failures``, ``last_error``, ``maintenance``,
        ``maintenance_reason``, ``fault``), and optionally
        ``expected_version``: the node's version when the sweep read it;
        the row is then written only if nothing changed it since, so a
        power action that finished during the sweep is never overwritten
        with what the sweep saw before it. A node reserved meanwhile is
        left alone too: whoever holds it is changing it. Returns rows
        changed.

        :param stamps: the polls to record, ``(checked_at, uuids)`` each
            (one run's, or several runs' written together): each node's
            ``power_checked_at`` becomes its time (the latest, should it
            be in several), in the same transaction as the changes,
            whatever its version or reservation (it records that the BMC
            was asked, not a change of the node: ``changed_at`` is
            kept). Stamps without changes need no transaction: they are
            written on the connection the frequent reads keep.
        :param missing: when given, the uuids of ``stamps`` whose node no
            longer exists (deleted meanwhile) are added to it.
        """
        if not changes and not any(uuids for _, uuids in stamps):
            return 0
        now = timeutils.utcnow()
        # NOTE: each node once, with its latest time.
        latest: dict[str, datetime.datetime] = {}
        for at, uuids in stamps:
            for uuid in uuids:
                if uuid not in latest or latest[uuid] < at:
                    latest[uuid] = at
        polls = sorted(latest.items(), key=lambda poll: poll[1])
        # NOTE: several times in one statement bind each uuid twice (the
        # WHERE and the CASE): half a batch keeps under SQLite's limit of
        # 999 parameters before its 3.32.
        size = IN_BATCH if len(set(latest.values())) <= 1 else IN_BATCH // 2
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for change in changes:
            values = {key: value for key, value in change.items()
                      if key not in ("uuid", "expected_version")}
            unknown = set(values) - _WRITABLE
            if unknown:
                raise ValueError("not sync fields: %s" % sorted(unknown))
            values["updated_at"] = now
            if "power_state" in values:
                values["power_state_updated_at"] = now
            expect = "expected_version" in change
            shape = tuple(sorted(values)) + (("?expect",) if expect else ())
            params = {"_uuid": change["uuid"]}
            if expect:
                params["_expected"] = change["expected_version"]
            params.update(values)
            by_shape.setdefault(shape, []).append(params)

        def stamp(conn: sa.Connection) -> None:
            for start in range(0, len(polls), size):
                group = polls[start:start + size]
                chunk = [uuid for uuid, _ in group]
                found = conn.execute(
                    _nodes.update().where(_nodes.c.uuid.in_(chunk))
                    .values(power_checked_at=_checked_at(group),
                            changed_at=_nodes.c.changed_at)).rowcount
                if missing is not None and found < len(chunk):
                    missing.update(set(chunk) - set(conn.execute(
                        sa.select(_nodes.c.uuid)
                        .where(_nodes.c.uuid.in_(chunk))).scalars()))

        if not by_shape:
            # NOTE: stamps alone (a worker's write every few seconds): each
            # statement stands on its own and sets fixed times, so they
            # go on the kept connection, one round trip each.
            self._on_kept(stamp, write=True)
            return 0
        total = 0
        with self.engine.begin() as conn:
            stamp(conn)
            for shape, batch in by_shape.items():
                fields = [key for key in shape if key != "?expect"]
                new_values: dict[str, Any] = {
                    key: sa.bindparam(key) for key in fields}
                new_values["version"] = _nodes.c.version + 1
                query = (_nodes.update()
                         .where(_nodes.c.uuid == sa.bindparam("_uuid"))
                         .where(_nodes.c.reservation.is_(None))
                         .values(new_values))
                if "?expect" in shape:
                    query = query.where(
                        _nodes.c.version == sa.bindparam("_expected"))
                result = conn.execute(query, batch)
                total += max(result.rowcount, 0)
        return total

    # -- conductors ----------------------------------------------------

    @oslo_db_api.wrap_db_retry(max_retries=5, retry_interval=0.1,
                               max_retry_interval=1, retry_on_deadlock=True)
    def register_conductor(self, host: str, worker_id: int,
                           drivers: Sequence[str],
                           pid: int | None = None) -> None:
        """Mark this worker online with a fresh heartbeat (upsert).

        Each statement is its own transaction: on MySQL and MariaDB an
        UPDATE that matches no row keeps a gap lock until its transaction
        ends, and an INSERT after it in the same transaction deadlocks
        with another worker doing the same (a fleet of new hosts starting
        at once made workers fail to start). A deadlock victim is tried
        again.
        """
        now = timeutils.utcnow()
        values = {"drivers": list(drivers), "online": True, "pid": pid,
                  "started_at": now, "heartbeat_at": now,
                  "stopped_at": None, "moves_counter": True}
        with self.engine.begin() as conn:
            if _update_conductor(conn, host, worker_id, values):
                _membership_changed(conn)
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(_conductors.insert().values(
                    host=host, worker_id=worker_id, **values))
                _membership_changed(conn)
        except (db_exc.DBDuplicateEntry, sa.exc.IntegrityError):
            # NOTE: another process inserted the same row between our
            # UPDATE and INSERT (a fast respawn); updating is enough.
            with self.engine.begin() as conn:
                _update_conductor(conn, host, worker_id, values)
                _membership_changed(conn)

    def heartbeat(self, host: str, worker_id: int, *,
                  drivers: Sequence[str] = (),
                  pid: int | None = None,
                  status: Mapping[str, Any] | None = None,
                  online: bool = True,
                  at: datetime.datetime | None = None) -> bool:
        """Refresh this worker's heartbeat; re-registers if the row is gone.

        A beat that began before the worker's stop marked it offline
        (:meth:`set_offline`) is not written: a write slow to land must
        not show a stopped worker online again. Nor is a beat of a
        process that is no longer the row's (``pid``: the worker was
        respawned and registered again since the beat was sent).

        :param drivers: the worker's drivers and
        :param pid: its process id, registered again with the row when it
            was deleted meanwhile (``conductor-manage clean`` after a
            stall); see :meth:`register_conductor`.
        :param status: the worker's status snapshot (pool, periodic tasks,
            last sweeps) shown by ``conductor-manage status``; None keeps
            the stored one.
        :param online: False: the worker is alive but degraded and lets
            its nodes go (it is not a live member of the rings).
        :param at: when the beat began, the ``heartbeat_at`` it writes
            (default: now).
        :returns: False when the beat was not written (it began before
            the worker was marked offline, or the row is another
            process's).
        """
        if at is None:
            at = timeutils.utcnow()
        values: dict[str, Any] = {"heartbeat_at": at, "online": online}
        if status is not None:
            values["status"] = dict(status)
        # NOTE: one statement setting fixed values: safe to send again, in
        # autocommit mode on the kept connection (see _on_kept). It finds
        # the row only when ``online`` does not change: a change is
        # written below, with the membership counter.
        count = self._on_kept(
            lambda conn: _update_conductor(conn, host, worker_id, values,
                                           begun=at, online=online,
                                           pid=pid),
            write=True)
        if count == 1:
            return True
        with self.engine.begin() as conn:
            count = _update_conductor(conn, host, worker_id, values,
                                      begun=at, pid=pid)
            if count == 1:
                _membership_changed(conn)
                return True
        for record in self.list_conductors():
            if record.host != host or record.worker_id != worker_id:
                continue
            if pid is not None and record.pid not in (None, pid):
                LOG.warning("Heartbeat of %(host)s worker %(worker)d from "
                            "process %(pid)d not written: the row is "
                            "process %(owner)d's (is a second conductor "
                            "running with host = %(host)s?)",
                            {"host": host, "worker": worker_id, "pid": pid,
                             "owner": record.pid})
            return False
        LOG.warning("Conductor row of %(host)s worker %(worker)d was "
                    "missing; registering it again",
                    {"host": host, "worker": worker_id})
        self.register_conductor(host, worker_id, drivers, pid=pid)
        return True

    def set_draining(self, host: str) -> int:
        """Mark every online worker of ``host`` draining; returns how many.

        The other hosts leave it out of their rings at their next refresh
        (see :func:`conductor.ownership.live_membership`); its own workers
        stop the conductor once the others had the time to take its nodes.
        A worker respawned meanwhile (or after a SIGHUP) keeps the flag;
        the next start of the conductor clears it (:meth:`clear_draining`).
        """
        with self.engine.begin() as conn:
            return _membership_changed(conn, conn.execute(
                _conductors.update().where(_conductors.c.host == host)
                .where(_conductors.c.online == sa.true())
                .values(draining=True)).rowcount)

    def clear_draining(self, host: str) -> int:
        """Forget a drain of ``host`` (a new start); returns rows changed."""
        with self.engine.begin() as conn:
            return _membership_changed(conn, conn.execute(
                _conductors.update().where(_conductors.c.host == host)
                .where(_conductors.c.draining == sa.true())
                .values(draining=False)).rowcount)

    def set_offline(self, host: str, worker_id: int | None = None) -> None:
        """Mark one worker (or every worker of ``host``) offline: stopped.

        ``stopped_at`` is set to the next whole second (MariaDB and MySQL
        keep whole seconds): a heartbeat begun before this mark is not
        written (:meth:`heartbeat`). A worker registering clears it.
        """
        query = (_conductors.update().where(_conductors.c.host == host)
                 .values(online=False,
                         stopped_at=stop_mark(timeutils.utcnow())))
        if worker_id is not None:
            query = query.where(_conductors.c.worker_id == worker_id)
        with self.engine.begin() as conn:
            _membership_changed(conn, conn.execute(query).rowcount)

    def set_expired_offline(self, cutoff: datetime.datetime) -> int:
        """Mark offline the online workers silent since ``cutoff``.

        One conditional UPDATE, so a worker that beats meanwhile stays
        online. Returns how many rows changed.
        """
        c = _conductors.c
        with self.engine.begin() as conn:
            return _membership_changed(conn, conn.execute(
                _conductors.update().where(c.online == sa.true())
                .where(c.heartbeat_at < cutoff)
                .values(online=False)).rowcount)

    def delete_gone_host(self, host: str, cutoff: datetime.datetime) -> int:
        """Delete the rows of ``host`` if none beat since ``cutoff``.

        One statement, conditional on every row of the host being older
        than ``cutoff``: a host that came back meanwhile keeps its rows.
        """
        c = _conductors.c
        recent = (sa.select(c.id).where(c.host == host)
                  .where(sa.or_(c.heartbeat_at >= cutoff,
                                c.online == sa.true())))
        with self.engine.begin() as conn:
            if conn.execute(recent.limit(1)).first() is not None:
                return 0
            return _membership_changed(conn, conn.execute(
                _conductors.delete().where(c.host == host)
                .where(c.heartbeat_at < cutoff)
                .where(c.online == sa.false())).rowcount)

    def list_conductors(self, with_status: bool = False
                        ) -> list[ConductorRecord]:
        """Every worker ever registered, ordered by host and worker id.

        :param with_status: also read each worker's status snapshot.
        """
        c = _conductors.c
        columns = [c.host, c.worker_id, c.pid, c.drivers, c.online,
                   c.started_at, c.heartbeat_at, c.draining,
                   c.moves_counter]
        if with_status:
            columns.append(c.status)
        # NOTE: sorted here, not by the server: every worker reads these
        # rows often (see conductor.ownership), and MariaDB sorts them with
        # a filesort that reads every row twice (its index on (host,
        # worker_id) is not worth using for so few rows).
        query = self._statement(("list_conductors", with_status),
                                lambda: sa.select(*columns))
        records = [ConductorRecord(row.host, row.worker_id, row.pid,
                                   list(_as_list(row.drivers)),
                                   bool(row.online), row.started_at,
                                   row.heartbeat_at,
                                   _as_optional_dict(row.status)
                                   if with_status else None,
                                   bool(row.draining),
                                   bool(row.moves_counter))
                   for row in self._fetch(query)]
        records.sort(key=lambda record: (record.host, record.worker_id))
        return records

    def delete_conductors(self, host: str, worker_ids: Iterable[int]) -> int:
        """Forget workers of ``host`` (e.g. beyond a lowered worker count)."""
        with self.engine.begin() as conn:
            return _membership_changed(conn, conn.execute(
                _conductors.delete().where(_conductors.c.host == host)
                .where(_conductors.c.worker_id.in_(list(worker_ids)))
            ).rowcount)

    def membership_version(self) -> int | None:
        """The counter of membership changes (None: its row is missing).

        Every write that changes who is live in the rings increments it
        in its own transaction; see :meth:`list_conductors`.
        """
        rows = self._fetch(self._statement(
            ("membership_version",),
            lambda: sa.select(_changes.c.version).where(_changes.c.id == 1)))
        return int(rows[0][0]) if rows else None

    def power_state_counts(self) -> dict[str, int]:
        """Number of nodes per power state (``None`` as "none")."""
        query = (sa.select(_nodes.c.power_state, sa.func.count())
                 .group_by(_nodes.c.power_state))
        with self.engine.connect() as conn:
            return {(state or "none"): count
                    for state, count in conn.execute(query)}

    def partition_summary(self, overdue_before: datetime.datetime
                          ) -> dict[int, tuple[int, int,
                                               datetime.datetime | None]]:
        """Per partition: (nodes, overdue nodes, oldest poll).

        Overdue: not in maintenance and not polled since
        ``overdue_before`` (a node never polled counts from its
        enrolment). The oldest poll is over nodes not in maintenance.
        One grouped query (one row per partition).
        """
        c = _nodes.c
        healthy = c.maintenance == sa.false()
        last = sa.func.coalesce(c.power_checked_at, c.created_at)
        overdue = sa.func.sum(sa.case(
            (sa.and_(healthy, last < overdue_before), 1), else_=0))
        oldest = sa.func.min(sa.case((healthy, c.power_checked_at),
                                     else_=None))
        query = sa.select(c.partition, sa.func.count(), overdue,
                          oldest).group_by(c.partition)
        with self.engine.connect() as conn:
            return {int(partition): (int(count), int(overdue or 0), oldest)
                    for partition, count, overdue, oldest
                    in conn.execute(query)}

    def owned_node_counts(self, partitions: Iterable[int], *,
                          overdue_before: datetime.datetime
                          ) -> tuple[int, int, datetime.datetime | None,
                                     int]:
        """Node counts of some partitions, for the worker's gauges.

        One aggregate query on the partition index. Overdue and oldest
        poll as in :meth:`partition_summary`.

        :returns: (nodes, overdue, oldest poll, in maintenance).
        """
        c = _nodes.c
        healthy = c.maintenance == sa.false()
        last = sa.func.coalesce(c.power_checked_at, c.created_at)
        query = sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((sa.and_(healthy, last < overdue_before),
                                 1), else_=0)),
            sa.func.min(sa.case((healthy, c.power_checked_at),
                                else_=None)),
            sa.func.sum(sa.case((healthy, 0), else_=1)))
        where = self._in_partitions(partitions)
        if where is _NO_ROWS:
            return 0, 0, None, 0
        q = query if where is None else query.where(where)
        with self.engine.connect() as conn:
            count, late, oldest, held = conn.execute(q).one()
        return int(count or 0), int(late or 0), oldest, int(held or 0)

    def maintenance_count(self) -> int:
        query = (sa.select(sa.func.count())
                 .where(_nodes.c.maintenance == sa.true()))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _checked_at(polls: Sequence[tuple[str, datetime.datetime]]) -> Any:
    """``power_checked_at`` for the nodes of ``polls`` (each uuid once).

    One time, or each node's own: a CASE over the uuids of each time.
    """
    by_time: dict[datetime.datetime, list[str]] = {}
    for uuid, at in polls:
        by_time.setdefault(at, []).append(uuid)
    if len(by_time) == 1:
        return next(iter(by_time))
    return sa.case(*[(_nodes.c.uuid.in_(uuids), sa.literal(at, sa.DateTime))
                     for at, uuids in by_time.items()])


def stop_mark(now: datetime.datetime) -> datetime.datetime:
    """The ``stopped_at`` of a worker marked offline at ``now``.

    The next whole second: later than any heartbeat begun before
    ``now``, also on backends that keep whole seconds.
    """
    mark = now.replace(microsecond=0)
    return mark if mark == now else mark + datetime.timedelta(seconds=1)


def _update_conductor(conn: sa.Connection, host: str, worker_id: int,
                      values: Mapping[str, Any],
                      begun: datetime.datetime | None = None,
                      online: bool | None = None,
                      pid: int | None = None) -> int:
    """UPDATE one worker's row; returns how many rows matched (0 or 1).

    :param begun: a heartbeat's start: the row is left alone when its
        worker was marked stopped after it (see Connection.set_offline).
    :param online: only a row whose ``online`` is this.
    :param pid: only a row registered by this process (or with no
        process id): a beat of a process that the worker's next process
        replaced since is not written.
    """
    c = _conductors.c
    query = _conductors.update().where(c.host == host) \
        .where(c.worker_id == worker_id)
    if begun is not None:
        query = query.where(sa.or_(c.stopped_at.is_(None),
                                   c.stopped_at <= begun))
    if pid is not None:
        query = query.where(sa.or_(c.pid.is_(None), c.pid == pid))
    if online is not None:
        query = query.where(c.online == sa.true() if online
                            else c.online == sa.false())
    return int(conn.execute(query.values(**values)).rowcount)


def _membership_changed(conn: sa.Connection, rowcount: int = 1) -> int:
    """Increment the membership counter in ``conn``'s transaction.

    Only when ``rowcount`` (the rows a write changed) is not 0; returns
    it.
    """
    if rowcount:
        conn.execute(_changes.update().where(_changes.c.id == 1)
                     .values(version=_changes.c.version + 1))
    return int(rowcount)


def _changed_since(where: Any, node_columns: Sequence[Any],
                   deleted_columns: Sequence[Any]
                   ) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The change feed's two reads over the partitions of ``where``.

    Nodes written and nodes deleted at or after the ``since`` parameter,
    each through its time index, with these columns.
    """
    since = sa.bindparam("since", type_=sa.DateTime)
    changed = (sa.select(*node_columns)
               .where(_nodes.c.changed_at >= since).where(where))
    # NOTE: with more partitions than its index-dive limit (200 by
    # default) MariaDB/MySQL estimates the (partition, ...) index from
    # statistics, and may prefer it and read every row of the worker's
    # partitions. This one reads only the rows changed.
    for dialect in ("mysql", "mariadb"):
        changed = changed.with_hint(
            _nodes, "FORCE INDEX (%s)" % CHANGED_INDEX, dialect)
    gone = (sa.select(*deleted_columns)
            .where(_deletions.c.deleted_at >= since).where(where))
    return changed, gone


def _sync_columns() -> list[Any]:
    """The columns of a :class:`SyncRow` with its state flags."""
    c = _nodes.c
    return [c.uuid, c.name, c.driver, c.driver_info, c.power_state,
            c.power_sync_failures, c.version, c.partition,
            c.power_checked_at, c.maintenance,
            c.reservation.is_not(None).label("reserved"),
            c.target_power_state.is_not(None).label("requested"),
            c.created_at]


def _sync_row(row: sa.Row[Any]) -> SyncRow:
    # NOTE: a worker keeps these rows in memory (tens of thousands of
    # them): the strings that repeat from node to node (the driver, the
    # power state, driver_info's keys) are interned, so that the rows
    # share one copy of each instead of one per row (a third of a row's
    # size as read).
    state = row.power_state
    return SyncRow(row.uuid, row.name, sys.intern(row.driver),
                   _keys_interned(row.driver_info),
                   None if state is None else sys.intern(state),
                   row.power_sync_failures, row.version,
                   row.partition, row.power_checked_at, bool(row.maintenance),
                   bool(row.reserved), bool(row.requested), row.created_at)


def _keys_interned(value: Any) -> dict[str, Any]:
    """:func:`_as_dict` with its (string) keys interned."""
    return {sys.intern(key) if isinstance(key, str) else key: item
            for key, item in _json_mapping(value).items()}


def _marker(uuid: Any, partition: Any, checked_at: Any = None
            ) -> tuple[Any, ...]:
    """The columns of a change-feed row that is not a node's own.

    A deleted node, or the feed's clock: in maintenance (no reader polls
    it), not reserved, nothing requested.
    """
    return (uuid, sa.null(), sa.literal(""), sa.null(), sa.null(),
            sa.literal(0), sa.literal(0), partition,
            sa.null() if checked_at is None else checked_at, sa.true(),
            sa.false(), sa.false(), sa.null())


def _as_optional_dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else _as_dict(value)


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)):
        value = json.loads(value)
    return list(value or [])


def _first_repeat(items: Sequence[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return items[0] if items else ""

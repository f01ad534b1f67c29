# SPDX-License-Identifier: Apache-2.0
"""The rows power sync needs of one worker's nodes, kept in memory.

Reading the rows of the nodes due every second cost a worker a read per
node-poll on top of the poll's own stamp (two rows read per poll), and a
statement per second whatever it found. A worker instead reads the rows
of its partitions once, when it gains them, and then only what changed:

* **gain**: the rows of the partitions it gains are read in full, and
  once more ``settle`` seconds later, when the previous owner has
  written the stamps of the polls it still had running;
* **feed**: at every update, the rows of its partitions written since
  its last read (``nodes.changed_at``, set by every write of a node
  except a poll's stamp, by the database server's clock; read again
  over ``FEED_OVERLAP`` seconds, so that a write committed a little
  after it was made is still seen);
* **deletes**: a poll's stamp that finds no row tells that the node is
  gone (see :meth:`NodeCache.forget`);
* **reload**: every ``reload_every`` seconds, every row is read again,
  so that nothing the feed could miss (a transaction open for longer
  than the overlap, a hand edit of the table) lasts.

The cache also keeps when each node is next due (a heap), so that a run
finds the due nodes without looking at the others, and what its gauges
count of the nodes it does not poll (in maintenance, reserved, of a
driver not enabled here): :meth:`NodeCache.counts` gives the worker's
node gauges without reading the database.
"""

from __future__ import annotations

import calendar
import datetime
import heapq
import logging
import threading
from typing import Callable, Iterable, Sequence

from conductor.db import api as db_api

LOG = logging.getLogger(__name__)

#: Seconds of writes the feed reads again at every update: longer than a
#: write's transaction takes to commit (``changed_at`` is the database's
#: clock when the row was written, not when it was committed).
FEED_OVERLAP = 2.0


class NodeCache:
    """The qualifying rows of one worker's partitions, and their due times.

    A row qualifies when its node is not in maintenance, not reserved and
    has an enabled driver (those are the nodes power sync polls).

    :param db: the worker's database connection.
    :param drivers: the enabled drivers' names.
    :param due: when a row is next due (epoch seconds of the sync clock).
    :param interval: seconds between a node's slots (its due times
        fall on ``phase + k * interval``).
    :param settle: seconds after a gain until its partitions are read
        again (the previous owner's last stamps).
    :param late: when a row of a partition gained at ``gained`` and due
        at ``when`` < ``gained`` is planned instead (``late(partition,
        when, gained)``; see conductor.power_sync.PowerSync.after_gain).
    :param reload_every: seconds between two full reads.
    """

    def __init__(self, db: db_api.Connection, drivers: Iterable[str],
                 due: Callable[[db_api.SyncRow], float], *,
                 interval: float, settle: float, reload_every: float,
                 late: Callable[[int, float, float], float]) -> None:
        self._db = db
        #: The enabled drivers: a node of another driver is held, not
        #: polled.
        self._enabled = frozenset(drivers)
        self._due_fn = due
        self._interval = interval
        self._settle = settle
        self._late = late
        self._reload_every = reload_every
        self._mine: tuple[int, ...] = ()
        self._mine_set: frozenset[int] = frozenset()
        self._rows: dict[str, db_api.SyncRow] = {}
        #: The nodes of ``mine`` it does not poll: uuid -> (partition, in
        #: maintenance, last poll, created); counted by the gauges only.
        self._held: dict[str, tuple[int, bool, datetime.datetime | None,
                                    datetime.datetime | None]] = {}
        #: Held by update() and forget() (which change which nodes it
        #: holds) and by counts(), which another thread calls.
        self._lock = threading.Lock()
        #: update() was called (see loaded).
        self._updated = False
        #: uuid -> its due time, for the nodes scheduled (the heap may
        #: also hold older entries of a node: skipped when popped).
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        #: Partition -> when it was gained, for an interval and the
        #: settle delay after that (see _schedule).
        self._gained: dict[int, float] = {}
        #: Partition -> when its settle read is due.
        self._settling: dict[int, float] = {}
        #: uuid -> the last poll of a node dropped because it no longer
        #: qualified (reserved by a power action, say): its stamp may not
        #: be written yet when it qualifies again (see _store). Emptied
        #: at every full read, which then keeps those of the nodes it
        #: finds no longer qualifying.
        self._dropped: dict[str, datetime.datetime] = {}
        #: The database's clock at the last feed (or first read).
        self._fed_at: datetime.datetime | None = None
        #: Sync-clock time of the last full read.
        self._loaded_at: float | None = None
        #: Feeds read so far, and rows with a requested power action
        #: they returned (see :meth:`requests_token`).
        self._feeds = 0
        self._requests = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._rows

    @property
    def loaded(self) -> bool:
        """True once the rows of the worker's partitions were read."""
        return self._loaded_at is not None or (self._updated
                                               and not self._mine)

    # -- reading -------------------------------------------------------

    def update(self, mine: Sequence[int], t: float,
               gained_at: float | None = None) -> None:
        """Follow ownership to ``mine`` and read what changed, at ``t``.

        A failed read of partitions gained, or of a settle read, makes
        the next update a full read (their rows would otherwise wait for
        the next due one); a failed feed is read again from the same
        time.

        :param gained_at: when partitions gained now count as gained
            (default ``t``).
        """
        with self._lock:
            self._updated = True
            self._update(mine, t, gained_at)

    def _update(self, mine: Sequence[int], t: float,
                gained_at: float | None) -> None:
        if mine is not self._mine and tuple(mine) != self._mine:
            try:
                self._own(tuple(mine),
                          t if gained_at is None else gained_at)
            except BaseException:
                self._loaded_at = None
                raise
        if not self._mine:
            return
        if self._gained:
            keep = self._settle + self._interval
            self._gained = {p: at for p, at in self._gained.items()
                            if at + keep > t}
        if self._loaded_at is None or t - self._loaded_at >= \
                self._reload_every:
            self._dropped.clear()
            self._reload(self._mine, full=True)
            self._loaded_at = t
            self._settling = {p: at for p, at in self._settling.items()
                              if at > t}
            return
        settled = sorted(p for p, at in self._settling.items() if at <= t)
        if settled:
            for partition in settled:
                del self._settling[partition]
            try:
                self._reload(settled)
            except BaseException:
                self._loaded_at = None
                raise
        self._feed()

    def _own(self, mine: tuple[int, ...], gained_at: float) -> None:
        old = self._mine_set
        self._mine = mine
        self._mine_set = frozenset(mine)
        lost = old - self._mine_set
        if lost:
            for uuid in [uuid for uuid, row in self._rows.items()
                         if row.partition in lost]:
                self._drop(uuid)
            for uuid in [uuid for uuid, held in self._held.items()
                         if held[0] in lost]:
                del self._held[uuid]
            for partition in lost:
                self._gained.pop(partition, None)
                self._settling.pop(partition, None)
        gained = sorted(self._mine_set - old)
        for partition in gained:
            self._gained[partition] = gained_at
            if self._settle > 0:
                self._settling[partition] = gained_at + self._settle
        if gained and self._loaded_at is not None:
            # NOTE: a first read (or a due full one) reads these anyway.
            self._reload(gained)

    def _reload(self, partitions: Sequence[int], full: bool = False
                ) -> None:
        """Read every row of ``partitions`` (all of mine when full)."""
        fed_at = self._db.clock() if self._fed_at is None else None
        rows = self._db.partition_rows(partitions=partitions)
        wanted = frozenset(partitions)
        found = {row.uuid for row in rows}
        for uuid in [uuid for uuid, row in self._rows.items()
                     if row.partition in wanted and uuid not in found]:
            self._drop(uuid)
        for uuid in [uuid for uuid, held in self._held.items()
                     if held[0] in wanted and uuid not in found]:
            del self._held[uuid]
        for row in rows:
            self._take(row)
        if fed_at is not None:
            self._fed_at = fed_at

    def _feed(self) -> None:
        """Read the rows of ``mine`` written since the last read."""
        assert self._fed_at is not None
        since = self._fed_at - datetime.timedelta(seconds=FEED_OVERLAP)
        rows, self._fed_at = self._db.changed_sync_rows(
            partitions=self._mine, since=since)
        self._requests += sum(1 for row in rows if row.requested)
        self._feeds += 1
        for row in rows:
            if row.partition in self._mine_set:
                self._take(row)

    def _take(self, row: db_api.SyncRow) -> None:
        """Keep ``row`` as read: planned, held (not polled), or gone."""
        if row.driver == "":
            # NOTE: the feed's record of a deleted node.
            self._drop(row.uuid)
            self._held.pop(row.uuid, None)
        elif row.maintenance or row.reserved or \
                row.driver not in self._enabled:
            self._drop(row.uuid, keep_stamp=True)
            self._held[row.uuid] = (
                row.partition, row.maintenance,
                _later(row.power_checked_at, self._dropped.get(row.uuid)),
                row.created_at)
        else:
            self._held.pop(row.uuid, None)
            self._store(row)

    def requests_token(self) -> tuple[int, int, tuple[int, ...]]:
        """What the feed has told of requested power actions so far.

        ``(feeds read, rows with a request they returned, partitions)``:
        the pending-action check need not read the database again while
        it found nothing pending last time and, since then, a feed was
        read (a request is a write, so the next feed returns it) and
        returned no request, over the same partitions.
        """
        return self._feeds, self._requests, self._mine

    # -- scheduling ----------------------------------------------------

    def _store(self, row: db_api.SyncRow) -> None:
        known = self._rows.get(row.uuid)
        polled = known.power_checked_at if known is not None \
            else self._dropped.pop(row.uuid, None)
        checked = _later(row.power_checked_at, polled)
        if checked != row.power_checked_at:
            row = db_api.restamped(row, checked)
        self._rows[row.uuid] = row
        self._schedule(row)

    def _schedule(self, row: db_api.SyncRow,
                  when: float | None = None) -> None:
        if when is None:
            when = self._due_fn(row)
            gained = self._gained.get(row.partition)
            if gained is not None and when < gained:
                when = self._late(row.partition, when, gained)
        if self._due.get(row.uuid) == when:
            return
        self._due[row.uuid] = when
        heapq.heappush(self._heap, (when, row.uuid))

    def _drop(self, uuid: str, keep_stamp: bool = False) -> None:
        row = self._rows.pop(uuid, None)
        self._due.pop(uuid, None)
        if keep_stamp and row is not None and \
                row.power_checked_at is not None:
            self._dropped[uuid] = row.power_checked_at

    def pop_due(self, t: float) -> list[db_api.SyncRow]:
        """The rows due at ``t``, most overdue first; taken off the plan.

        Each must be handed back: :meth:`polled`, :meth:`retry` or
        :meth:`forget`.
        """
        heap = self._heap
        due = self._due
        out: list[db_api.SyncRow] = []
        while heap and heap[0][0] <= t:
            when, uuid = heapq.heappop(heap)
            if due.get(uuid) != when:
                continue
            del due[uuid]
            out.append(self._rows[uuid])
        if len(heap) > 2 * len(due) + 64:
            # NOTE: rescheduled nodes leave older entries behind.
            self._heap = [(when, uuid) for uuid, when in due.items()]
            heapq.heapify(self._heap)
        return out

    def due_at(self, uuid: str) -> float | None:
        """When the node is next due (None: not planned)."""
        return self._due.get(uuid)

    def polled(self, rows: Iterable[db_api.SyncRow]) -> None:
        """Plan again nodes just polled; ``rows`` as they now are."""
        for row in rows:
            if row.uuid in self._rows:
                self._rows[row.uuid] = row
                self._schedule(row)

    def retry(self, uuids: Iterable[str], when: float) -> None:
        """Plan nodes taken but not polled for ``when``."""
        for uuid in uuids:
            row = self._rows.get(uuid)
            if row is not None and uuid not in self._due:
                self._schedule(row, when)

    def forget(self, uuids: Iterable[str]) -> None:
        """Drop nodes found deleted."""
        with self._lock:
            for uuid in uuids:
                if uuid in self._rows:
                    LOG.debug("Node %s is gone; no longer polled", uuid)
                self._drop(uuid)
                self._held.pop(uuid, None)

    # -- gauges --------------------------------------------------------

    def counts(self, overdue_before: datetime.datetime, wait: float = 1.0
               ) -> tuple[int, int, datetime.datetime | None, int] | None:
        """The worker's node gauges, from memory.

        ``(nodes, overdue, oldest poll, in maintenance)`` of this
        worker's partitions, as the database's aggregate would count
        them: overdue, not in maintenance and last polled (never polled:
        created) before ``overdue_before``; the oldest poll of those not
        in maintenance.

        Called from another thread than the one updating the cache: None
        when an update (which may be reading the database) holds it for
        more than ``wait`` seconds.
        """
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            polls = [(row.power_checked_at, row.created_at)
                     for row in self._rows.values()]
            maintenance = 0
            for _, in_maintenance, checked, created in self._held.values():
                if in_maintenance:
                    maintenance += 1
                else:
                    polls.append((checked, created))
            owned = len(self._rows) + len(self._held)
        finally:
            self._lock.release()
        overdue = 0
        oldest: datetime.datetime | None = None
        for checked, created in polls:
            last = created if checked is None else checked
            if last is not None and last < overdue_before:
                overdue += 1
            if checked is not None and (oldest is None or checked < oldest):
                oldest = checked
        return owned, overdue, oldest, maintenance


def _later(read: datetime.datetime | None,
           polled: datetime.datetime | None) -> datetime.datetime | None:
    """A node's last poll: its row's stamp, or a later poll known here.

    This worker's latest stamps may still wait in memory (power sync
    writes them every few seconds), so a row read back may be older than
    its own poll: the poll it knows of counts, rather than polling the
    node once more.
    """
    if polled is not None and (read is None or read < polled):
        return polled
    return read


def epoch(when: datetime.datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime."""
    return calendar.timegm(when.timetuple()) + when.microsecond / 1e6

# SPDX-License-Identifier: Apache-2.0
"""Node ownership: which live worker of which host works on each node.

Every node has a fixed partition (:func:`conductor.db.models.partition_of`,
stored in ``nodes.partition``). Two consistent hash rings map partitions,
not nodes: partition -> host over the hosts with at least one live
worker, then partition -> worker over that host's worker ids. A worker is
live while its ``heartbeat_at`` is younger than ``heartbeat_timeout``.
Every worker computes the same answer from the same ``conductors`` rows,
so no coordination is needed beyond the heartbeats::

    rings = ownership.Rings(db, host="a", worker_id=0,
                            heartbeat_timeout=60, reset_interval=5,
                            workers=2)
    rings.update()                  # reads conductors rows only
    rings.partitions()              # this worker's partitions, to query
    rings.owns(uuid)                # one node
    rings.owner_host(uuid)          # where RPC for a node is routed

A rebuild costs a lookup per partition (2**10), whatever the number of
nodes, and happens only when membership changed.

Two rules keep a node from being polled twice because its owner changed:

* A worker of this host that has not registered yet keeps its share
  until it registers or ``start_grace`` seconds after this worker
  started: the first worker up never takes its siblings' nodes.
* A partition taken from an owner that is still live (a host joining, a
  worker coming back) is *held* for ``handover_delay`` seconds before
  :meth:`Rings.partitions` returns it: the old owner may still be
  polling it until it notices the change. A partition of a dead or
  stopped owner is never held.

:meth:`Rings.update` is the one refresh every caller uses: when
membership changed, the new owners also release reservations left by
workers that are no longer live (:meth:`Rings.release_dead_reservations`);
live workers also mark offline the rows of workers whose heartbeat
expired, and delete the rows of hosts gone longer than ``cleanup_age``.


A worker judges others dead only while it can trust its own view of the
database (:class:`Liveness`): its own last heartbeat is recent, and its
database access resumed at least ``heartbeat_timeout`` ago. After an
outage every heartbeat in the database is old, the worker's own included;
the first worker back must not take the nodes of workers that simply have
not reached the database again yet. Until then, the workers it last saw
live stay live in its view.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from typing import Callable, Iterable, Sequence

from oslo_utils import timeutils
from tooz import hashring

from conductor.db import api as db_api
from conductor.db import models

LOG = logging.getLogger(__name__)

#: Ring points per member: 2**RING_EXPONENT. 2**10 keeps every member's
#: share within about 10% of even for ten hosts and builds a ring in
#: ~10 ms.
RING_EXPONENT = 10
#: Node partitions (see :func:`conductor.db.models.partition_of`).
PARTITIONS = models.PARTITIONS


@dataclasses.dataclass(frozen=True)
class Membership:
    """The live workers, by host: ``{host: (worker ids, sorted)}``."""

    hosts: dict[str, tuple[int, ...]]
    #: Holders of live workers of draining hosts, left out of the rings:
    #: they still finish what they hold.
    draining: tuple[str, ...] = ()

    @property
    def holders(self) -> list[str]:
        return [db_api.holder_name(host, worker)
                for host, workers in sorted(self.hosts.items())
                for worker in workers]

    def describe(self) -> str:
        return ", ".join("%s[%s]" % (host, ",".join(map(str, workers)))
                         for host, workers in sorted(self.hosts.items())
                         ) or "nobody"

    def without(self, host: str, worker_id: int | None = None
                ) -> "Membership":
        """This membership without one worker (or a whole host)."""
        hosts = dict(self.hosts)
        if worker_id is None:
            hosts.pop(host, None)
        elif host in hosts:
            left = tuple(w for w in hosts[host] if w != worker_id)
            if left:
                hosts[host] = left
            else:
                del hosts[host]
        return Membership(hosts, self.draining)

    def has(self, owner: tuple[str, int]) -> bool:
        return owner[1] in self.hosts.get(owner[0], ())


def live_membership(records: Iterable[db_api.ConductorRecord],
                    now: datetime.datetime,
                    heartbeat_timeout: float,
                    own_host: str | None = None) -> Membership:
    """Workers online with a heartbeat younger than ``heartbeat_timeout``.

    Workers of a draining host are left out, except by that host itself
    (``own_host``): the others take its partitions at once and poll its
    nodes when they are due (``power_checked_at``), while it keeps
    polling them until it stops, so that no node waits on the handover
    (see :mod:`conductor.service`'s drain loop). They stay in
    :attr:`Membership.draining`: still live, their reservations are
    theirs to release.
    """
    cutoff = now - datetime.timedelta(seconds=heartbeat_timeout)
    hosts: dict[str, list[int]] = {}
    draining = []
    for record in records:
        if not (record.online and record.heartbeat_at > cutoff):
            continue
        if record.draining and record.host != own_host:
            draining.append(record.holder)
            continue
        hosts.setdefault(record.host, []).append(record.worker_id)
    return Membership({host: tuple(sorted(workers))
                       for host, workers in hosts.items()},
                      tuple(sorted(draining)))


class Liveness:
    """Whether this worker may judge other workers dead right now.

    The heartbeat loop reports each successful heartbeat
    (:meth:`beat`). The worker's view is trusted when its last heartbeat
    is at most :attr:`gap` seconds old *and* its heartbeats have been
    regular (no gap longer than :attr:`gap`) for at least
    ``heartbeat_timeout`` seconds: a worker that could not reach the
    database (an outage, a stall) first gives every other worker a full
    ``heartbeat_timeout`` to heartbeat again.

    :param heartbeat_interval: seconds between this worker's heartbeats.
    :param heartbeat_timeout: seconds after which a silent worker is dead.
    :param monotonic: the clock.
    """

    def __init__(self, heartbeat_interval: float, heartbeat_timeout: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        #: Longest pause between two heartbeats that is not an outage.
        self.gap = max(2.0 * heartbeat_interval, heartbeat_interval + 2.0)
        self.timeout = heartbeat_timeout
        self._monotonic = monotonic
        # NOTE: guards the two times below.
        self._lock = threading.Lock()
        self._last_beat: float | None = None
        self._resumed_at: float | None = None

    def beat(self) -> None:
        """This worker's heartbeat (or registration) reached the database."""
        now = self._monotonic()
        with self._lock:
            if self._last_beat is None or now - self._last_beat > self.gap:
                resumed = self._last_beat is not None
                self._resumed_at = now
            else:
                resumed = False
            self._last_beat = now
        if resumed:
            LOG.warning("Database access resumed; other workers get "
                        "%(timeout)ss to heartbeat before they are judged "
                        "dead", {"timeout": self.timeout})

    def trusted(self) -> bool:
        """True when heartbeat ages in the database may be believed."""
        now = self._monotonic()
        with self._lock:
            last, resumed = self._last_beat, self._resumed_at
        return (last is not None and resumed is not None
                and now - last <= self.gap
                and now - resumed >= self.timeout)

    def started(self) -> None:
        """The worker just registered: trust its view from now on.

        A starting worker had no outage to recover from; it judges by
        heartbeat ages at once (as a worker always did).
        """
        with self._lock:
            now = self._monotonic()
            self._last_beat = now
            self._resumed_at = now - self.timeout


def gone_hosts(records: Iterable[db_api.ConductorRecord]
               ) -> dict[str, datetime.datetime]:
    """Hosts whose every worker is offline, and their latest heartbeat.

    Their rows are removed once that heartbeat is older than the cleanup
    age (:meth:`Rings._tidy`).
    """
    latest: dict[str, datetime.datetime] = {}
    online = set()
    for record in records:
        if record.online:
            online.add(record.host)
        elif record.host not in latest or \
                record.heartbeat_at > latest[record.host]:
            latest[record.host] = record.heartbeat_at
    return {host: last for host, last in latest.items()
            if host not in online}


def partition_table(membership: Membership
                    ) -> list[tuple[str, int]] | None:
    """Owner ``(host, worker id)`` of every partition; None: nobody."""
    if not membership.hosts:
        return None
    host_ring = hashring.HashRing(sorted(membership.hosts),
                                  partitions=2 ** RING_EXPONENT)
    worker_rings = {host: hashring.HashRing([str(w) for w in workers],
                                            partitions=2 ** RING_EXPONENT)
                    for host, workers in membership.hosts.items()}
    table = []
    for partition in range(PARTITIONS):
        key = str(partition).encode()
        host = str(next(iter(host_ring.get_nodes(key))))
        worker = int(next(iter(worker_rings[host].get_nodes(key))))
        table.append((host, worker))
    return table


class Rings:
    """This worker's view of ownership, rebuilt from ``conductors`` rows.

    Thread-safe: periodic tasks on several pool threads may ask at once.

    :param db: the worker's database connection.
    :param host: this host's name; ``worker_id`` its worker id.
    :param heartbeat_timeout: seconds after which a silent worker is dead.
    :param reset_interval: :meth:`maybe_update` checks membership again
        (see :meth:`refresh`) when the last check is older than this
        (seconds).
    :param now_func: wall clock (UTC, naive) for heartbeat ages.
    :param monotonic: clock for the reset interval, grace and holds.
    :param workers: the number of workers of this host (ids 0..W-1);
        None: only registered siblings count (no start-up grace).
    :param start_grace: seconds after this object's creation during which
        a sibling that is not live keeps its share (default
        ``heartbeat_timeout``).
    :param handover_delay: seconds a partition taken from a live owner is
        held back (see the module docstring).
    :param cleanup_age: rows of hosts whose every worker is offline and
        silent for longer than this (seconds) are deleted; 0 keeps them.
    :param liveness: this worker's own heartbeat record; when given,
        workers are judged dead only while it is :meth:`Liveness.trusted`
        (None: by heartbeat age alone, for views that act on nothing).
    """

    def __init__(self, db: db_api.Connection, host: str, worker_id: int,
                 heartbeat_timeout: float, reset_interval: float,
                 now_func: Callable[[], datetime.datetime] = timeutils.utcnow,
                 monotonic: Callable[[], float] = time.monotonic, *,
                 liveness: Liveness | None = None,
                 workers: int | None = None,
                 start_grace: float | None = None,
                 handover_delay: float = 0.0,
                 cleanup_age: float = 0.0) -> None:
        self._db = db
        self.liveness = liveness
        self.host = host
        self.worker_id = worker_id
        self.holder = db_api.holder_name(host, worker_id)
        self._timeout = heartbeat_timeout
        self._reset_interval = reset_interval
        self._now = now_func
        self._monotonic = monotonic
        self._workers = workers
        self._grace_until = monotonic() + (
            heartbeat_timeout if start_grace is None else start_grace)
        self._handover_delay = handover_delay
        self._cleanup_age = cleanup_age
        # NOTE: guards every attribute below; lookups copy the references
        # they need under it.
        self._lock = threading.Lock()
        self.membership = Membership({})
        self._table: list[tuple[str, int]] | None = None
        self._mine: frozenset[int] = frozenset()
        #: partition -> monotonic time until which it is held back.
        self._held: dict[int, float] = {}
        #: Partitions taken from a worker still polling them (live, or
        #: draining), while this worker owns them (see handed_over).
        self._handed: frozenset[int] = frozenset()
        #: What partitions() returns, and the monotonic time until which
        #: it holds (the next end of a hold); None after a rebuild.
        self._active: tuple[tuple[int, ...], float] | None = None
        self._read_at = -float("inf")
        # NOTE: refreshes read the database outside the lock; each takes
        # a ticket first, and a read older than one already applied is
        # dropped, so that a slow refresh never brings back a membership
        # a newer one replaced (and never releases the reservations of a
        # worker that just joined).
        self._tickets = 0
        self._applied_ticket = 0
        #: Incremented on every rebuild that changed membership.
        self.generation = 0
        #: ``monotonic`` time at which a refresh first found this host
        #: draining; None while it is not.
        self.draining_since: float | None = None
        #: Called (with no argument, the lock not held) when a refresh
        #: first finds this host draining: the worker's drain thread.
        self.on_draining: Callable[[], None] | None = None
        #: Holders kept live by the last untrusted refresh (for logging).
        self._kept: list[str] = []
        #: Monotonic time of the last change of this worker's partitions.
        self.changed_at = -float("inf")
        self._release_pending = False
        #: ``(membership counter, conductors rows, monotonic and wall
        #: times until which they stand)`` of the last read (see
        #: _conductor_rows).
        self._rows: tuple[int, list[db_api.ConductorRecord], float,
                          datetime.datetime] | None = None
        self._rows_ticket = 0

    # -- refresh -------------------------------------------------------

    def refresh(self, force: bool = False) -> bool:
        """Check the ``conductors`` rows; rebuild if membership changed.

        Reads nothing but those rows, and only when they may have changed
        (see :meth:`_conductor_rows`). Rebuilds only when
        membership changed (or with ``force``): the same members always
        give the same table. Also marks offline the rows of workers whose
        heartbeat expired and deletes the rows of long-gone hosts (each a
        conditional write, only when the rows read show one).

        :returns: True when membership changed (the caller should then
            release reservations of workers that left).
        """
        with self._lock:
            self._tickets += 1
            ticket = self._tickets
        began_draining = False
        trusted = self.liveness is None or self.liveness.trusted()
        records, read = self._conductor_rows(trusted, force, ticket)
        now = self._now()
        membership = live_membership(records, now, self._timeout,
                                     own_host=self.host)
        draining = any(record.draining and record.online
                       for record in records if record.host == self.host)
        if not trusted:
            membership = self._keep_previous(membership, records)
        membership = self._effective(membership)
        with self._lock:
            self._read_at = self._monotonic()
            if ticket < self._applied_ticket:
                return False
            self._applied_ticket = ticket
            if not draining:
                self.draining_since = None
            elif self.draining_since is None:
                self.draining_since = self._monotonic()
                began_draining = True
            changed = membership != self.membership
            never_built = self._table is None
            if changed or never_built or force:
                self._build(membership)
            if changed:
                # NOTE: a refresh made for an RPC call may be the one that
                # sees the change: the next update() releases what the
                # workers that left held.
                self._release_pending = True
        if began_draining and self.on_draining is not None:
            try:
                self.on_draining()
            except Exception:
                LOG.exception("Telling %s that its host drains failed",
                              self.holder)
        if trusted and read:
            # NOTE: a worker that cannot trust heartbeat ages marks no one
            # offline either; rows not read again hold nothing new to tidy
            # (see _conductor_rows).
            self._tidy(records, now)
        if changed:
            LOG.info("Node ownership rebuilt for %(holder)s; live workers: "
                     "%(members)s", {"holder": self.holder,
                                     "members": membership.describe()})
            LOG.debug("%(holder)s owns %(n)d partition(s) of %(total)d",
                      {"holder": self.holder, "n": len(self._mine),
                       "total": PARTITIONS})
        return changed

    def _conductor_rows(self, trusted: bool, force: bool, ticket: int
                        ) -> tuple[list[db_api.ConductorRecord], bool]:
        """The ``conductors`` rows, and whether they were read just now.

        The membership counter (one row) is read first. The rows last
        read stand while it did not move and until the first moment a
        heartbeat among them may have expired, or a gone host's rows may
        be due for removal (:meth:`_valid_for`): until then they give the
        same membership, whatever the time. Otherwise, while this
        worker's view is not trusted, and with ``force``, every row is
        read again. So a worker reads its peers' rows about once per
        ``heartbeat_timeout`` instead of every refresh, and still sees a
        join, a stop or a drain at its next refresh.

        :param ticket: the refresh's (see :meth:`refresh`): a slow read
            never replaces the rows of a later one.
        """
        version = self._db.membership_version() if trusted else None
        now, wall = self._monotonic(), self._now()
        with self._lock:
            last = self._rows
        # NOTE: both clocks: the rows are judged by the wall clock, which
        # an NTP step may move ahead of the monotonic one.
        if not force and last is not None and version is not None and \
                version == last[0] and now < last[2] and wall < last[3]:
            return last[1], False
        records = self._db.list_conductors()
        wall = self._now()
        valid = self._valid_for(records, wall)
        with self._lock:
            if ticket >= self._rows_ticket:
                self._rows_ticket = ticket
                self._rows = None if version is None else (
                    version, records, now + valid,
                    wall + datetime.timedelta(seconds=valid))
        return records, True

    def _valid_for(self, records: Sequence[db_api.ConductorRecord],
                   now: datetime.datetime) -> float:
        """Seconds during which ``records`` give the membership they give now.

        Until the first live heartbeat among them expires, or the first
        gone host's rows are due for removal; 0 while a worker whose
        heartbeat expired is still online (it is to be marked offline),
        and while a row was registered by a release that does not move
        the membership counter.
        """
        cutoff = now - datetime.timedelta(seconds=self._timeout)
        valid = float(self._timeout)
        for record in records:
            if not record.moves_counter:
                return 0.0
            if record.online:
                left = (record.heartbeat_at - cutoff).total_seconds()
                if left <= 0:
                    return 0.0
                valid = min(valid, left)
        if self._cleanup_age > 0:
            for last in gone_hosts(records).values():
                left = (last - now).total_seconds() + self._cleanup_age
                valid = min(valid, max(0.0, left))
        return valid

    def _keep_previous(self, membership: Membership,
                       records: Iterable[db_api.ConductorRecord]
                       ) -> Membership:
        """``membership`` plus the workers seen live last time and online.

        Used while this worker's own view of heartbeats is not trusted: a
        worker that went offline itself still leaves at once, a silent
        one stays until this worker may judge it.
        """
        with self._lock:
            previous = set(self.membership.holders)
        hosts = {host: set(workers)
                 for host, workers in membership.hosts.items()}
        kept = []
        for record in records:
            if (record.online and record.holder in previous
                    and not (record.draining and record.host != self.host)
                    and record.worker_id not in hosts.get(record.host, ())):
                hosts.setdefault(record.host, set()).add(record.worker_id)
                kept.append(record.holder)
        kept = [holder for holder in kept if holder != self.holder]
        with self._lock:
            news, self._kept = kept != self._kept, kept
        if kept and news:
            LOG.info("%(holder)s does not judge %(kept)s dead yet: its own "
                     "database access resumed too recently, or its "
                     "heartbeat is late", {"holder": self.holder,
                                           "kept": ", ".join(kept)})
        return Membership({host: tuple(sorted(workers))
                           for host, workers in hosts.items()},
                          membership.draining)

    def update(self, force: bool = False) -> bool:
        """:meth:`refresh`, then release what departed workers held.

        When membership changed (or with ``force``), reservations on
        nodes of this worker's partitions held by workers that are no
        longer live are released: their owner died or left, and this
        worker now owns those nodes.

        :returns: True when membership changed.
        """
        changed = self.refresh(force=force)
        if changed or force or self._release_pending:
            # NOTE: cleared first, so that a change seen meanwhile by
            # another refresh (an RPC call's) keeps its release pending;
            # a release that failed (a database blip) is tried again at
            # the next update, not only at the next change.
            self._release_pending = False
            try:
                self.release_dead_reservations()
            except BaseException:
                self._release_pending = True
                raise
        return changed

    def maybe_update(self, max_age: float | None = None) -> bool:
        """:meth:`update` when the last read is older than ``max_age``.

        The cheap call for frequent periodic work: most calls read
        nothing at all.

        :param max_age: seconds (default: reset_interval).
        """
        if max_age is None:
            max_age = self._reset_interval
        with self._lock:
            fresh = self._monotonic() - self._read_at < max_age
        return False if fresh else self.update()

    def _effective(self, live: Membership) -> Membership:
        """``live`` plus this host's workers still in their start-up grace.

        During the grace every worker id 0..W-1 of this host counts, so
        the first worker up never takes its siblings' shares.
        """
        if self._workers is None or self._monotonic() >= self._grace_until:
            return live
        hosts = dict(live.hosts)
        hosts[self.host] = tuple(sorted(set(hosts.get(self.host, ()))
                                        | set(range(self._workers))))
        return Membership(hosts, live.draining)

    def _build(self, membership: Membership) -> None:
        """Install ``membership`` (called under the lock)."""
        me = (self.host, self.worker_id)
        table = partition_table(membership)
        mine = frozenset(p for p, owner in enumerate(table or ())
                         if owner == me)
        previous = self._table
        now = self._monotonic()
        gained = mine - self._mine
        held = {p: until for p, until in self._held.items()
                if p in mine and until > now}
        handed = {p for p in self._handed if p in mine}
        # NOTE: who polled a gained partition until now? With a previous
        # table, its owner there. At the first build, the owner it would
        # have without this host: other hosts may have taken it while this
        # host was away (e.g. during a SIGHUP). Siblings never took it:
        # they keep this worker's share during their start-up grace.
        before = (previous if previous is not None or not gained else
                  partition_table(membership.without(self.host)))
        for partition in gained:
            owner = None if before is None else before[partition]
            if owner is None or owner == me:
                continue
            if membership.has(owner):
                # A live owner polls it until its next refresh: held back.
                handed.add(partition)
                if self._handover_delay > 0:
                    held[partition] = now + self._handover_delay
            elif db_api.holder_name(*owner) in membership.draining:
                # A draining owner polls it until it stops.
                handed.add(partition)
        if membership != self.membership:
            self.generation += 1
        if mine != self._mine:
            self.changed_at = now
        self.membership = membership
        self._table = table
        self._mine = mine
        self._held = held
        self._handed = frozenset(handed)
        self._active = None

    def _tidy(self, records: Sequence[db_api.ConductorRecord],
              now: datetime.datetime) -> None:
        """Mark expired workers offline; forget long-gone hosts."""
        cutoff = now - datetime.timedelta(seconds=self._timeout)
        try:
            if any(r.online and r.heartbeat_at < cutoff for r in records):
                count = self._db.set_expired_offline(cutoff)
                if count:
                    LOG.warning("%(holder)s marked %(n)d worker(s) offline: "
                                "no heartbeat for %(secs)ss",
                                {"holder": self.holder, "n": count,
                                 "secs": self._timeout})
            if self._cleanup_age > 0:
                gone = now - datetime.timedelta(seconds=self._cleanup_age)
                for host, last in gone_hosts(records).items():
                    if last < gone and self._db.delete_gone_host(host,
                                                                 gone):
                        LOG.info("Removed the rows of host %(host)s, "
                                 "gone for more than %(age)ss",
                                 {"host": host, "age": self._cleanup_age})
        except Exception:
            # NOTE: housekeeping only; ownership was already rebuilt.
            LOG.exception("Could not tidy the conductors rows")

    # -- lookups -------------------------------------------------------

    def partitions(self) -> tuple[int, ...]:
        """This worker's partitions to work on now, sorted.

        Partitions still held back after a handover are left out. Asked
        every second: worked out again only after a rebuild or when a
        hold ends, else the same tuple is returned.
        """
        now = self._monotonic()
        with self._lock:
            active = self._active
            if active is not None and now < active[1]:
                return active[0]
            held = self._held
            found = tuple(sorted(p for p in self._mine
                                 if held.get(p, 0.0) <= now))
            until = min((t for t in held.values() if t > now),
                        default=float("inf"))
            self._active = (found, until)
            return found

    def was_held(self, partition: int) -> bool:
        """Whether ``partition`` was held back when this worker took it.

        True through its hold and after it, until the next rebuild.
        """
        with self._lock:
            return partition in self._held

    def handed_over(self, partition: int) -> bool:
        """Whether ``partition`` was taken from a worker still polling it.

        Its previous owner was live (a hand-over, with its hold) or
        draining (it polls its nodes until it stops) when this worker
        took it; not when that owner had died or stopped.
        """
        with self._lock:
            return partition in self._handed

    def owned_partitions(self) -> frozenset[int]:
        """Every partition of this worker, held ones included."""
        with self._lock:
            return self._mine

    def table(self) -> list[tuple[str, int]] | None:
        """Owner of every partition (None with nobody live)."""
        with self._lock:
            return self._table

    def owner(self, uuid: str) -> tuple[str, int] | None:
        """(host, worker id) owning ``uuid``, or None with nobody live."""
        with self._lock:
            table = self._table
        return None if table is None else table[models.partition_of(uuid)]

    def owner_host(self, uuid: str) -> str | None:
        """The host whose workers own ``uuid`` (for routing RPC)."""
        owner = self.owner(uuid)
        return None if owner is None else owner[0]

    def owns(self, uuid: str) -> bool:
        """True when this worker owns ``uuid`` (held partitions included)."""
        with self._lock:
            mine = self._mine
        return models.partition_of(uuid) in mine

    def owned(self, uuids: Sequence[str]) -> list[str]:
        """The subset of ``uuids`` this worker owns, in the given order."""
        return [uuid for uuid in uuids if self.owns(uuid)]

    def release_dead_reservations(self) -> int:
        """Release reservations in owned partitions held by dead workers.

        One UPDATE per batch of partitions; no node row is read.
        A power action a dead worker had claimed stays claimed: it may
        have reached the BMC, so it is resolved by reading the BMC first
        (see :mod:`conductor.power_actions`), never applied blindly.
        """
        with self._lock:
            # NOTE: a draining host is still live: it finishes the work
            # it holds, and releases it itself.
            live = self.membership.holders + list(self.membership.draining)
            mine = sorted(self._mine)
        if not mine:
            return 0
        released = self._db.release_reservations(
            keep=live + [self.holder], partitions=mine)
        if released:
            LOG.warning("%(holder)s released %(n)d reservation(s) left by "
                        "workers that are no longer live",
                        {"holder": self.holder, "n": released})
        return released

# SPDX-License-Identifier: Apache-2.0
"""Node ownership: which live worker of which host works on each node.

Two consistent hash rings decide it: node -> host over the hosts with at
least one live worker, then node -> worker over that host's live worker
ids. A worker is live while its ``heartbeat_at`` is younger than
``heartbeat_timeout``. Every worker computes the same answer from the same
``conductors`` rows, so no coordination is needed beyond the heartbeats::

    rings = ownership.Rings(db, host="a", worker_id=0,
                            heartbeat_timeout=60, reset_interval=15)
    rings.update()                  # cheap; rebuilds only when needed
    mine = rings.owned(uuids)       # the subset this worker works on
    rings.owner_host(uuid)          # where RPC for a node is routed

:meth:`Rings.update` is the one refresh every caller uses: when
membership changed, the new owners also release reservations left by
workers that are no longer live (:meth:`Rings.release_dead_reservations`).

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

LOG = logging.getLogger(__name__)

#: Hash ring partitions. 2**10 keeps every member's share within about
#: 10% of even for ten hosts and builds a ring in ~10 ms; 2**14 would cost
#: 0.2 s of CPU per ring for a spread no operator would notice.
PARTITION_EXPONENT = 10


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


def live_membership(records: Iterable[db_api.ConductorRecord],
                    now: datetime.datetime,
                    heartbeat_timeout: float,
                    own_host: str | None = None) -> Membership:
    """Workers online with a heartbeat younger than ``heartbeat_timeout``.

    Workers of a draining host are left out, except by that host itself
    (``own_host``): the others take its nodes at once, while it keeps
    working them until it stops, so that no node waits on the handover.
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


class Rings:
    """This worker's view of ownership, rebuilt from ``conductors`` rows.

    Thread-safe: periodic tasks on several pool threads may ask at once.

    :param db: the worker's database connection.
    :param host: this host's name; ``worker_id`` its worker id.
    :param heartbeat_timeout: seconds after which a silent worker is dead.
    :param reset_interval: the rings are rebuilt at least this often
        (seconds) even when membership looks unchanged.
    :param now_func: wall clock (UTC, naive) for heartbeat ages.
    :param monotonic: clock for the reset interval.
    :param liveness: this worker's own heartbeat record; when given,
        workers are judged dead only while it is :meth:`Liveness.trusted`
        (None: by heartbeat age alone, for views that act on nothing).
    """

    def __init__(self, db: db_api.Connection, host: str, worker_id: int,
                 heartbeat_timeout: float, reset_interval: float,
                 now_func: Callable[[], datetime.datetime] = timeutils.utcnow,
                 monotonic: Callable[[], float] = time.monotonic,
                 liveness: Liveness | None = None) -> None:
        self._db = db
        self.liveness = liveness
        self.host = host
        self.worker_id = worker_id
        self.holder = db_api.holder_name(host, worker_id)
        self._timeout = heartbeat_timeout
        self._reset_interval = reset_interval
        self._now = now_func
        self._monotonic = monotonic
        # NOTE: guards every attribute below; lookups copy the references
        # they need under it and hash outside it.
        self._lock = threading.Lock()
        self.membership = Membership({})
        self._host_ring: hashring.HashRing | None = None
        self._worker_rings: dict[str, hashring.HashRing] = {}
        self._built_at = -float("inf")
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
        self._cache: dict[str, bool] = {}
        #: Holders kept live by the last untrusted refresh (for logging).
        self._kept: list[str] = []

    def refresh(self, force: bool = False) -> bool:
        """Re-read the live workers; rebuild the rings if they changed.

        Every call re-reads membership, so the rings are never older than
        the last call; the ``refresh_ownership`` periodic makes that at
        least every ``reset_interval``. Rings are rebuilt only when
        membership changed (or with ``force``): the same members always
        give the same rings, so rebuilding them would only burn CPU.

        :returns: True when membership changed (the caller should then
            release reservations of workers that left).
        """
        with self._lock:
            self._tickets += 1
            ticket = self._tickets
        records = self._db.list_conductors()
        membership = live_membership(records, self._now(), self._timeout,
                                     own_host=self.host)
        draining = any(record.draining and record.online
                       for record in records if record.host == self.host)
        if self.liveness is not None and not self.liveness.trusted():
            membership = self._keep_previous(membership, records)
        with self._lock:
            if ticket < self._applied_ticket:
                return False
            self._applied_ticket = ticket
            if not draining:
                self.draining_since = None
            elif self.draining_since is None:
                self.draining_since = self._monotonic()
            changed = membership != self.membership
            never_built = self._built_at == -float("inf")
            if not (changed or never_built or force):
                return False
            self._build(membership)
        if changed:
            LOG.info("Node ownership rebuilt for %(holder)s; live workers: "
                     "%(members)s", {"holder": self.holder,
                                     "members": membership.describe()})
        return changed

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
        owned nodes held by workers that are no longer live are released:
        their owner died or left, and this worker now owns those nodes.

        :returns: True when membership changed.
        """
        changed = self.refresh(force=force)
        if changed or force:
            self.release_dead_reservations(self._db.node_uuids())
        return changed

    def _build(self, membership: Membership) -> None:
        hosts = sorted(membership.hosts)
        self._host_ring = (hashring.HashRing(
            hosts, partitions=2 ** PARTITION_EXPONENT) if hosts else None)
        self._worker_rings = {
            host: hashring.HashRing([str(w) for w in workers],
                                    partitions=2 ** PARTITION_EXPONENT)
            for host, workers in membership.hosts.items()}
        if membership != self.membership:
            self.generation += 1
        self.membership = membership
        self._built_at = self._monotonic()
        self._cache = {}

    def owner(self, uuid: str) -> tuple[str, int] | None:
        """(host, worker id) owning ``uuid``, or None with nobody live."""
        with self._lock:
            host_ring = self._host_ring
            worker_rings = self._worker_rings
        if host_ring is None:
            return None
        key = uuid.encode()
        host = str(next(iter(host_ring.get_nodes(key))))
        worker = next(iter(worker_rings[host].get_nodes(key)))
        return host, int(worker)

    def owner_host(self, uuid: str) -> str | None:
        """The host whose workers own ``uuid`` (for routing RPC)."""
        with self._lock:
            host_ring = self._host_ring
        if host_ring is None:
            return None
        return str(next(iter(host_ring.get_nodes(uuid.encode()))))

    def owns(self, uuid: str) -> bool:
        """True when this worker owns ``uuid`` (cached per rebuild)."""
        with self._lock:
            cached = self._cache.get(uuid)
            generation = self.generation
        if cached is not None:
            return cached
        owner = self.owner(uuid)
        mine = owner == (self.host, self.worker_id)
        with self._lock:
            if generation == self.generation:
                self._cache[uuid] = mine
        return mine

    def owned(self, uuids: Sequence[str]) -> list[str]:
        """The subset of ``uuids`` this worker owns, in the given order."""
        return [uuid for uuid in uuids if self.owns(uuid)]

    def release_dead_reservations(self, uuids: Sequence[str]) -> int:
        """Release reservations on owned ``uuids`` held by dead workers.

        A power action a dead worker had claimed stays claimed: it may
        have reached the BMC, so it is resolved by reading the BMC first
        (see :mod:`conductor.power_actions`), never applied blindly.
        """
        with self._lock:
            # NOTE: a draining host is still live: it finishes the work
            # it holds, and releases it itself.
            live = self.membership.holders + list(self.membership.draining)
        mine = self.owned(uuids)
        if not mine:
            return 0
        released = self._db.release_reservations(keep=live + [self.holder],
                                                 uuids=mine)
        if released:
            LOG.warning("%(holder)s released %(n)d reservation(s) left by "
                        "workers that are no longer live",
                        {"holder": self.holder, "n": released})
        return released

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
    """

    def __init__(self, db: db_api.Connection, host: str, worker_id: int,
                 heartbeat_timeout: float, reset_interval: float,
                 now_func: Callable[[], datetime.datetime] = timeutils.utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = db
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

# SPDX-License-Identifier: Apache-2.0
"""The status report: workers, their pools, periodic tasks, sweeps, nodes.

One builder for both ways of asking, so that ``conductor-manage status``
prints the same whether the data came over RPC (``get_status``, built by
the answering worker) or straight from the database::

    data = status.build(db, heartbeat_timeout=60)
    data["hosts"]["host-a"]["alive_workers"]    # 2
    data["workers"][0]["status"]["pool"]        # {"size": 100, ...}

Per host, ``nodes_owned``, ``nodes_overdue`` (not in maintenance and not
polled within 1.5 sync intervals) and ``oldest_reading_age`` (seconds
since the least recent poll of a node not in maintenance) come from one
grouped query over partitions, mapped to hosts the way the conductors
map them.

Each worker's ``status`` is the snapshot its heartbeat stored (see
``ConductorService.status``): ``pool`` (size, busy, rejected, ...),
``periodics`` (each task's statistics) and ``sweeps`` (the last power
sync and recovery sweeps: nodes, seconds, failures).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from oslo_utils import timeutils

from conductor.common import masking
from conductor.db import api as db_api
from conductor import ownership

#: A node not polled within this many sync intervals is overdue.
OVERDUE_INTERVALS = 1.5

LOG = logging.getLogger(__name__)


def build(db: db_api.Connection, heartbeat_timeout: float,
          sync_interval: float | None = None) -> dict[str, Any]:
    """Workers, hosts and node counts, as the database knows them.

    JSON-safe. A worker is ``alive`` while it is online and its heartbeat
    is younger than ``heartbeat_timeout`` seconds.

    :param sync_interval: ``sync_power_state_interval``; None or <= 0:
        ``nodes_overdue`` is not computed (None).

    :returns: ``{"workers": [...], "hosts": {host: {...}}, "nodes": {...}}``
    :raises: database errors as the DB API raises them.
    """
    now = timeutils.utcnow()
    workers = []
    hosts: dict[str, dict[str, Any]] = {}
    records = db.list_conductors(with_status=True)
    for record in records:
        age = (now - record.heartbeat_at).total_seconds()
        alive = record.online and age < heartbeat_timeout
        workers.append({"host": record.host, "worker_id": record.worker_id,
                        "pid": record.pid, "online": record.online,
                        "alive": alive,
                        "draining": record.draining,
                        "heartbeat_age": round(age, 1),
                        "drivers": record.drivers,
                        # NOTE: errors in it may quote a URL.
                        "status": masking.mask_data(record.status or {})})
        host = hosts.setdefault(record.host, {"workers": 0,
                                              "alive_workers": 0,
                                              "draining": False,
                                              "drivers": [],
                                              "nodes_owned": 0,
                                              "nodes_overdue": None,
                                              "oldest_reading_age": None})
        host["workers"] += 1
        if alive and record.draining:
            host["draining"] = True
        if alive:
            host["alive_workers"] += 1
            host["drivers"] = sorted(set(host["drivers"])
                                     | set(record.drivers))
    _node_shares(db, records, hosts, now, heartbeat_timeout, sync_interval)
    counts = db.power_state_counts()
    return {"workers": workers,
            "hosts": hosts,
            "nodes": {"total": sum(counts.values()),
                      "by_power_state": counts,
                      "maintenance": db.maintenance_count()}}


def _node_shares(db: db_api.Connection,
                 records: list[db_api.ConductorRecord],
                 hosts: dict[str, dict[str, Any]], now: datetime.datetime,
                 heartbeat_timeout: float,
                 sync_interval: float | None) -> None:
    """Fill each host's nodes owned, overdue and oldest reading age."""
    check = sync_interval is not None and sync_interval > 0
    if check:
        for host in hosts.values():
            host["nodes_overdue"] = 0
    table = ownership.partition_table(
        ownership.live_membership(records, now, heartbeat_timeout))
    if table is None:
        return
    window = OVERDUE_INTERVALS * (sync_interval or 0) if check else 0.0
    summary = db.partition_summary(now - datetime.timedelta(seconds=window))
    for partition, (count, overdue, oldest) in summary.items():
        host = hosts[table[partition % len(table)][0]]
        host["nodes_owned"] += count
        if check:
            host["nodes_overdue"] += overdue
        if oldest is not None:
            age = round((now - oldest).total_seconds(), 1)
            if (host["oldest_reading_age"] is None
                    or age > host["oldest_reading_age"]):
                host["oldest_reading_age"] = age

# SPDX-License-Identifier: Apache-2.0
"""The status report: workers, their pools, periodic tasks, sweeps, nodes.

One builder for both ways of asking, so that ``conductor-manage status``
prints the same whether the data came over RPC (``get_status``, built by
the answering worker) or straight from the database::

    data = status.build(db, heartbeat_timeout=60)
    data["hosts"]["host-a"]["alive_workers"]    # 2
    data["workers"][0]["status"]["pool"]        # {"size": 100, ...}

Each worker's ``status`` is the snapshot its heartbeat stored (see
``ConductorService.status``): ``pool`` (size, busy, rejected, ...),
``periodics`` (each task's statistics) and ``sweeps`` (the last power
sync and recovery sweeps: nodes, seconds, failures).
"""

from __future__ import annotations

import logging
from typing import Any

from oslo_utils import timeutils

from conductor.common import masking
from conductor.db import api as db_api

LOG = logging.getLogger(__name__)


def build(db: db_api.Connection, heartbeat_timeout: float
          ) -> dict[str, Any]:
    """Workers, hosts and node counts, as the database knows them.

    JSON-safe. A worker is ``alive`` while it is online and its heartbeat
    is younger than ``heartbeat_timeout`` seconds.

    :returns: ``{"workers": [...], "hosts": {host: {...}}, "nodes": {...}}``
    :raises: database errors as the DB API raises them.
    """
    now = timeutils.utcnow()
    workers = []
    hosts: dict[str, dict[str, Any]] = {}
    for record in db.list_conductors(with_status=True):
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
                                              "drivers": []})
        host["workers"] += 1
        if alive and record.draining:
            host["draining"] = True
        if alive:
            host["alive_workers"] += 1
            host["drivers"] = sorted(set(host["drivers"])
                                     | set(record.drivers))
    counts = db.power_state_counts()
    return {"workers": workers,
            "hosts": hosts,
            "nodes": {"total": sum(counts.values()),
                      "by_power_state": counts,
                      "maintenance": db.maintenance_count()}}

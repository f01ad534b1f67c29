# SPDX-License-Identifier: Apache-2.0
"""Table definitions (SQLAlchemy Core).

The schema itself is created and changed only by the alembic migrations
in ``conductor/db/migrations``; a unit test keeps these definitions and
the migrations identical.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext import compiler as sa_compiler

from conductor.nodes import MAX_NAME_LENGTH

#: Every node belongs to one of ``2 ** PARTITION_EXPONENT`` partitions, a
#: hash of its uuid stored in ``nodes.partition``; ownership maps
#: partitions, not nodes, to workers. Fixed at the database level: the
#: stored values depend on it, so changing it needs a migration that
#: recomputes every row (never a configuration change).
PARTITION_EXPONENT = 10
#: The number of partitions.
PARTITIONS = 2 ** PARTITION_EXPONENT


def partition_of(uuid: str) -> int:
    """The partition of the node with this (canonical) uuid.

    The first 32 bits of the uuid's MD5, reduced to
    :data:`PARTITION_EXPONENT` bits: stable across processes, releases
    and hosts (never Python's randomised ``hash``).
    """
    digest = hashlib.md5(uuid.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - PARTITION_EXPONENT)


metadata = sa.MetaData()


class utc_now(sa.sql.functions.FunctionElement[datetime.datetime]):
    """The database server's clock, in UTC (a naive timestamp).

    ``nodes.changed_at`` is written and read against this one clock, so
    that the change feed (see conductor.node_cache) does not depend on
    the clocks of the hosts that write nodes.
    """

    type = sa.DateTime()
    inherit_cache = True
    name = "utc_now"


@sa_compiler.compiles(utc_now)
def _utc_now(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@sa_compiler.compiles(utc_now, "mysql")
@sa_compiler.compiles(utc_now, "mariadb")
def _utc_now_mysql(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@sa_compiler.compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: utc_now, compiler: Any, **kw: Any) -> str:
    return "timezone('utc', clock_timestamp())"


@sa_compiler.compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: Any, **kw: Any) -> str:
    # NOTE: the text form SQLAlchemy stores DateTime values in.
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


nodes = sa.Table(
    "nodes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False),
    sa.Column("name", sa.String(MAX_NAME_LENGTH), nullable=True),
    sa.Column("driver", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("driver_info", sa.JSON, nullable=False),
    sa.Column("power_state", sa.String(16), nullable=True),
    sa.Column("target_power_state", sa.String(16), nullable=True),
    sa.Column("power_state_updated_at", sa.DateTime, nullable=True),
    sa.Column("maintenance", sa.Boolean, nullable=False,
              server_default=sa.false()),
    sa.Column("maintenance_reason", sa.Text, nullable=True),
    sa.Column("fault", sa.String(MAX_NAME_LENGTH), nullable=True),
    sa.Column("power_sync_failures", sa.Integer, nullable=False,
              server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=False,
              server_default="0"),
    sa.Column("reservation", sa.String(MAX_NAME_LENGTH), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=True),
    # NOTE: when target_power_state was requested (migration 0002): a
    # request older than [conductor] power_request_timeout is dropped.
    sa.Column("target_power_state_requested_at", sa.DateTime,
              nullable=True),
    # NOTE: set with the reservation when a worker takes a pending power
    # action, cleared with target_power_state when its outcome is recorded;
    # both set means the action was interrupted (see power_actions).
    sa.Column("power_action_claim", sa.String(64), nullable=True),
    # NOTE: partition_of(uuid), set at enrolment (migration 0004 filled
    # older rows); a worker reads only the rows of its partitions.
    sa.Column("partition", sa.Integer, nullable=False,
              server_default="0"),
    # NOTE: the last power-state poll, successful or not (migration 0004):
    # a node is polled again when it is due, whoever owns it.
    sa.Column("power_checked_at", sa.DateTime, nullable=True),
    # NOTE: the fencing token of the reservation (migration 0005): bumped
    # by every reserve and every takeover; a holder writes and releases
    # only at the epoch its reservation got (see conductor.task).
    sa.Column("reservation_epoch", sa.Integer, nullable=False,
              server_default="0"),
    # NOTE: when anything but a power poll's stamp last wrote the row, by
    # the database's clock (migration 0007). Set by every INSERT and
    # UPDATE through this table (the column's default and onupdate)
    # unless the statement sets it; the stamp of a poll keeps it. Power
    # sync keeps its nodes' rows in memory and re-reads only the rows
    # changed since its last read.
    sa.Column("changed_at", sa.DateTime, nullable=True,
              default=utc_now(), onupdate=utc_now()),
    sa.UniqueConstraint("uuid", name="uniq_nodes0uuid"),
    sa.UniqueConstraint("name", name="uniq_nodes0name"),
    sa.Index("nodes_reservation_idx", "reservation"),
    sa.Index("nodes_target_power_state_idx", "target_power_state"),
    sa.Index("nodes_maintenance_idx", "maintenance"),
    sa.Index("nodes_partition_checked_idx", "partition",
             "power_checked_at"),
    sa.Index("nodes_changed_idx", "changed_at", "partition"),
)

conductors = sa.Table(
    "conductors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(MAX_NAME_LENGTH), nullable=False),
    sa.Column("worker_id", sa.Integer, nullable=False),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("drivers", sa.JSON, nullable=False),
    sa.Column("online", sa.Boolean, nullable=False,
              server_default=sa.false()),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Column("status", sa.JSON, nullable=True),
    # NOTE: set for every worker of a host being drained (migration 0006):
    # the other hosts leave it out of their rings.
    sa.Column("draining", sa.Boolean, nullable=False,
              server_default=sa.false()),
    # NOTE: when the worker's stop marked it offline (migration 0008): a
    # heartbeat begun before it is not written.
    sa.Column("stopped_at", sa.DateTime, nullable=True),
    # NOTE: registered by a release that moves conductor_changes' counter
    # (migration 0009); see conductor.ownership.
    sa.Column("moves_counter", sa.Boolean, nullable=False,
              server_default=sa.false()),
    sa.UniqueConstraint("host", "worker_id",
                        name="uniq_conductors0host0worker_id"),
)

# NOTE: one row (id 1, migration 0009): a counter of the writes that
# change the workers' membership, so that workers re-read the conductors
# rows only when it moved (see conductor.ownership).
conductor_changes = sa.Table(
    "conductor_changes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# NOTE: one row per deleted node (migration 0007), kept a day: power sync
# keeps its nodes' rows in memory and learns of deletes from these, as it
# learns of changes from nodes.changed_at.
node_deletions = sa.Table(
    "node_deletions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("deleted_at", sa.DateTime, nullable=False),
    sa.Index("node_deletions_deleted_idx", "deleted_at", "partition"),
)

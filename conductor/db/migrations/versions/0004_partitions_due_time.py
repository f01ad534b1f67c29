# SPDX-License-Identifier: Apache-2.0
"""Partitions and due-time polling: nodes.partition, nodes.power_checked_at.

``nodes.partition`` is a fixed hash of the node's uuid into 2**10 slots;
ownership maps partitions, not nodes, to workers, and a worker reads only
the rows of its partitions. Existing rows are filled here, in batches.
``nodes.power_checked_at`` records the last power-state poll (success or
failure), so that a node is polled when it is due, whoever owns it.

The hash is written out here rather than imported: a migration must keep
computing what it computed when it was written.

Revision ID: 0004_partitions_due_time
Revises: 0003_power_action_claim
Create Date: 2026-12-05
"""

import hashlib

from alembic import op
import sqlalchemy as sa

revision = "0004_partitions_due_time"
down_revision = "0003_power_action_claim"
branch_labels = None
depends_on = None

_EXPONENT = 10
_BATCH = 1000


def _partition(uuid):
    digest = hashlib.md5(uuid.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - _EXPONENT)


def upgrade():
    op.add_column("nodes", sa.Column("partition", sa.Integer,
                                     nullable=False, server_default="0"))
    op.add_column("nodes", sa.Column("power_checked_at", sa.DateTime,
                                     nullable=True))
    nodes = sa.table("nodes", sa.column("id", sa.Integer),
                     sa.column("uuid", sa.String),
                     sa.column("partition", sa.Integer))
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(nodes.c.id, nodes.c.uuid).where(nodes.c.id > last)
            .order_by(nodes.c.id).limit(_BATCH)).all()
        if not rows:
            break
        conn.execute(
            nodes.update().where(nodes.c.id == sa.bindparam("_id"))
            .values(partition=sa.bindparam("_partition")),
            [{"_id": row.id, "_partition": _partition(row.uuid)}
             for row in rows])
        last = rows[-1].id
    op.create_index("nodes_partition_checked_idx", "nodes",
                    ["partition", "power_checked_at"])

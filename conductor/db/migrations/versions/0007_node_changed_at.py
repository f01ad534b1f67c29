# SPDX-License-Identifier: Apache-2.0
"""When a node's row last changed: nodes.changed_at, node_deletions.

Every write of a node sets ``changed_at``, except the stamp of a
power-state poll (``power_checked_at``); every delete leaves a row in
``node_deletions`` (kept a day). Power sync keeps the rows of its
worker's nodes in memory and re-reads only those changed or deleted
since its last read, through these indexes. Existing rows stay NULL: a
worker reads all the rows of a partition when it gains it.

Revision ID: 0007_node_changed_at
Revises: 0006_conductor_draining
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = "0007_node_changed_at"
down_revision = "0006_conductor_draining"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("changed_at", sa.DateTime,
                                     nullable=True))
    op.create_index("nodes_changed_idx", "nodes",
                    ["changed_at", "partition"])
    op.create_table(
        "node_deletions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("deleted_at", sa.DateTime, nullable=False))
    op.create_index("node_deletions_deleted_idx", "node_deletions",
                    ["deleted_at", "partition"])

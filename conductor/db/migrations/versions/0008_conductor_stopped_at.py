# SPDX-License-Identifier: Apache-2.0
"""When a worker marked itself offline: conductors.stopped_at.

Written by a worker's stop with ``online`` false, rounded up to the next
whole second; cleared when the worker registers again. A heartbeat that
began before it is not written, so that a beat slow to land never shows
a stopped worker online again. NULL for existing rows.

Revision ID: 0008_conductor_stopped_at
Revises: 0007_node_changed_at
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa

revision = "0008_conductor_stopped_at"
down_revision = "0007_node_changed_at"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("conductors", sa.Column("stopped_at", sa.DateTime,
                                          nullable=True))

# SPDX-License-Identifier: Apache-2.0
"""When a pending power action was requested: stale requests expire.

``nodes.target_power_state_requested_at`` is set with every
``target_power_state`` request; a request older than ``[conductor]
power_request_timeout`` is dropped instead of applied. ``updated_at``
cannot tell: power sync rewrites it on nodes with a request pending.

Revision ID: 0002_power_request_time
Revises: 0001_initial
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = "0002_power_request_time"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("target_power_state_requested_at",
                                     sa.DateTime, nullable=True))

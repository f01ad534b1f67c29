# SPDX-License-Identifier: Apache-2.0
"""Initial schema: nodes and conductors.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-21
"""

from alembic import op
import sqlalchemy as sa

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("driver", sa.String(255), nullable=False),
        sa.Column("driver_info", sa.JSON, nullable=False),
        sa.Column("power_state", sa.String(16), nullable=True),
        sa.Column("target_power_state", sa.String(16), nullable=True),
        sa.Column("power_state_updated_at", sa.DateTime, nullable=True),
        sa.Column("maintenance", sa.Boolean, nullable=False,
                  server_default=sa.false()),
        sa.Column("maintenance_reason", sa.Text, nullable=True),
        sa.Column("fault", sa.String(255), nullable=True),
        sa.Column("power_sync_failures", sa.Integer, nullable=False,
                  server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False,
                  server_default="0"),
        sa.Column("reservation", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("uuid", name="uniq_nodes0uuid"),
        sa.UniqueConstraint("name", name="uniq_nodes0name"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("nodes_reservation_idx", "nodes", ["reservation"])
    op.create_index("nodes_target_power_state_idx", "nodes",
                    ["target_power_state"])
    op.create_index("nodes_maintenance_idx", "nodes", ["maintenance"])
    op.create_table(
        "conductors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("worker_id", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("drivers", sa.JSON, nullable=False),
        sa.Column("online", sa.Boolean, nullable=False,
                  server_default=sa.false()),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("status", sa.JSON, nullable=True),
        sa.UniqueConstraint("host", "worker_id",
                            name="uniq_conductors0host0worker_id"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )

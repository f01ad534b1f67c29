# SPDX-License-Identifier: Apache-2.0
"""Fencing token of a reservation: nodes.reservation_epoch.

Incremented by the database every time a node is reserved and every time
a reservation is taken away from its holder (a dead worker's, or a
previous life's). A holder writes and releases only while the epoch is
still the one its reservation got, so a worker that was judged dead and
lives on can no longer change the node.

Revision ID: 0005_reservation_epoch
Revises: 0003_power_action_claim
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = "0005_reservation_epoch"
down_revision = "0004_partitions_due_time"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("reservation_epoch", sa.Integer,
                                     nullable=False, server_default="0"))

# SPDX-License-Identifier: Apache-2.0
"""Drain marker of a worker: conductors.draining.

Set on every row of a host by ``conductor-manage drain HOST`` (or by the
host itself on SIGUSR1): the other hosts leave it out of their rings at
once, and the host stops once they have taken its nodes over. Cleared
when a worker registers again.

Revision ID: 0006_conductor_draining
Revises: 0003_power_action_claim
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = "0006_conductor_draining"
down_revision = "0005_reservation_epoch"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("conductors", sa.Column("draining", sa.Boolean,
                                          nullable=False,
                                          server_default=sa.false()))

# SPDX-License-Identifier: Apache-2.0
"""Claim marker of a power action: nodes.power_action_claim.

Set, in the same UPDATE that reserves the node, when a worker takes a
pending power action to apply it; cleared with ``target_power_state``
when the outcome is recorded. A node found with both a target and a
claim had its action interrupted (the conductor stopped or died during
the BMC call): its next owner reads the BMC before acting again.

Revision ID: 0003_power_action_claim
Revises: 0002_power_request_time
Create Date: 2026-12-05
"""

from alembic import op
import sqlalchemy as sa

revision = "0003_power_action_claim"
down_revision = "0002_power_request_time"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("power_action_claim", sa.String(64),
                                     nullable=True))

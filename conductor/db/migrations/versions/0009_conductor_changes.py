# SPDX-License-Identifier: Apache-2.0
"""A counter of changes to the workers' membership: conductor_changes.

One row, ``version``, incremented in the transaction of every write that
changes who is live in the rings (a worker registering, stopping, going
offline or online, draining, a row deleted); a heartbeat that changes
nothing else leaves it alone. Workers read this row at every refresh and
read the ``conductors`` rows only when it moved, or when one of the
heartbeats they last read may have expired since.

``conductors.moves_counter`` tells the rows of workers of a release that
moves the counter: while any row lacks it (a worker of an earlier
release may register or stop without moving it), workers read every row
at every refresh, as before.

Revision ID: 0009_conductor_changes
Revises: 0008_conductor_stopped_at
Create Date: 2026-12-06
"""

from alembic import op
import sqlalchemy as sa

revision = "0009_conductor_changes"
down_revision = "0008_conductor_stopped_at"
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        "conductor_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False))
    op.bulk_insert(table, [{"id": 1, "version": 0}])
    op.add_column("conductors", sa.Column("moves_counter", sa.Boolean,
                                          nullable=False,
                                          server_default=sa.false()))

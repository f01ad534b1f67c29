# SPDX-License-Identifier: Apache-2.0
"""Alembic environment: runs on the connection handed over by migration.py."""

from alembic import context

from conductor.db import models

connection = context.config.attributes["connection"]
context.configure(connection=connection,
                  target_metadata=models.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()

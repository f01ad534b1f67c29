# SPDX-License-Identifier: Apache-2.0
"""Schema migrations: upgrade to head, report and check the revision.

Usage::

    engine = db_engine.create_engine(url)
    migration.upgrade(engine)          # conductor-manage db sync
    migration.current(engine)          # conductor-manage db version
    migration.check(engine)            # raises SchemaOutOfDate when behind
"""

from __future__ import annotations

import logging
import os

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script
import sqlalchemy as sa

from conductor.common import exceptions

LOG = logging.getLogger(__name__)

_SCRIPT_LOCATION = os.path.join(os.path.dirname(__file__), "migrations")


def _config(connection: sa.Connection | None = None) -> alembic_config.Config:
    cfg = alembic_config.Config()
    cfg.set_main_option("script_location", _SCRIPT_LOCATION)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this release knows."""
    script = alembic_script.ScriptDirectory.from_config(_config())
    revision = script.get_current_head()
    assert revision is not None
    return revision


def known_revisions() -> set[str]:
    """Every revision this release has a migration for."""
    script = alembic_script.ScriptDirectory.from_config(_config())
    return {rev.revision for rev in script.walk_revisions()}


def current(engine: sa.Engine) -> str | None:
    """The database's revision, or None when it has no schema yet."""
    with engine.connect() as connection:
        context = alembic_migration.MigrationContext.configure(connection)
        return context.get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str:
    """Upgrade the schema to ``revision``; returns the revision reached.

    Safe to run on an up-to-date database (it does nothing) and from
    several processes at once on MySQL/PostgreSQL (DDL is transactional
    or idempotent per revision); conductor's master runs it before it
    forks any worker.
    """
    before = current(engine)
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)
    after = current(engine)
    if before != after:
        LOG.info("Database schema upgraded from %(before)s to %(after)s",
                 {"before": before or "empty", "after": after})
    assert after is not None
    return after


def check(engine: sa.Engine) -> str:
    """Return the revision when it is head, else raise SchemaOutOfDate."""
    revision = current(engine)
    expected = head()
    if revision != expected:
        raise exceptions.SchemaOutOfDate(current=revision or "<empty>",
                                         head=expected)
    return revision

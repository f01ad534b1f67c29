"""The master's start-up steps, before any worker is forked.

Each step is a function of ``conf`` (plus what earlier steps produced) so
it can run as a named start-up task; all of them leave nothing open: the
database engine is disposed and no thread survives, because the master
forks right after.
"""

from __future__ import annotations

import logging
from typing import Mapping

from oslo_config import cfg

from conductor.common import exceptions
from conductor.db import api as db_api
from conductor.db import migration
from conductor.drivers import base
from conductor.drivers import loader
from conductor import inventory

LOG = logging.getLogger(__name__)


def prepare_database(conf: cfg.ConfigOpts) -> str:
    """Connect once and bring the schema to head where that is safe.

    SQLite (the embedded default) and an empty database are upgraded;
    a shared database with an older schema is left alone and refused:
    upgrading it is the operator's ``conductor-manage db sync``.

    :returns: the schema revision.
    :raises: DatabaseUnavailable, SchemaOutOfDate.
    """
    url = conf.database.connection
    engine = db_api.create_engine(url, max_retries=0)
    try:
        revision = migration.current(engine)
        if engine.dialect.name == "sqlite" or revision is None:
            return migration.upgrade(engine)
        return _check_revision(engine, url)
    except exceptions.ConductorException:
        raise
    except Exception as exc:
        raise exceptions.DatabaseUnavailable(
            url=db_api.mask_url(url), reason=db_api._reason(exc)) from exc
    finally:
        engine.dispose()


def _check_revision(engine: "db_api.sa.Engine", url: str) -> str:
    try:
        return migration.check(engine)
    except exceptions.SchemaOutOfDate:
        raise
    except Exception as exc:
        raise exceptions.DatabaseUnavailable(
            url=db_api.mask_url(url),
            reason="schema revision %s is unknown to this release (%s)"
                   % (migration.current(engine), db_api._reason(exc))
        ) from exc


def load_drivers(conf: cfg.ConfigOpts) -> dict[str, base.BaseDriver]:
    """Load and check every enabled driver (DriverLoadError names it)."""
    return loader.load(conf.enabled_drivers)


def import_inventory(conf: cfg.ConfigOpts,
                     drivers: Mapping[str, base.BaseDriver]) -> int:
    """Enrol the nodes of ``[DEFAULT] inventory_file`` not yet enrolled.

    Entries are matched on name (or uuid); those already present are left
    untouched, so restarting never duplicates or overwrites nodes.

    :returns: the number of nodes added.
    """
    path = conf.inventory_file
    if not path:
        return 0
    entries = inventory.load_file(path)
    nodes = inventory.validate(entries, drivers, source=path)
    db = db_api.Connection.create(conf.database.connection, max_retries=0)
    try:
        existing = db.list_nodes()
        names = {node.name for node in existing if node.name}
        uuids = {node.uuid for node in existing}
        new = [node for node in nodes
               if node.get("name") not in names
               and node.get("uuid") not in uuids]
        db.import_nodes(new)
    finally:
        db.dispose()
    LOG.info("Inventory %(path)s: %(new)d node(s) enrolled, %(old)d "
             "already present", {"path": path, "new": len(new),
                                 "old": len(nodes) - len(new)})
    return len(new)

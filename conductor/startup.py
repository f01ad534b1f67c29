"""The master's start-up, before any worker is forked.

Independent steps run as named start-up tasks (``conductor.common.
async_tasks``), each with its own log replayed whole when it is waited
on; with ``[DEFAULT] parallel_startup = False`` they run inline, one after
the other, with the same logs. The steps and what they wait for::

    pre-start-hooks   'start pre-start' hooks (thread) ------------.
    database          create/upgrade or check the schema (process) -+
    broker            a transport_url host answers? (process) ------+
    drivers           load and check the enabled drivers (thread) --+
    inventory-parse   parse [DEFAULT] inventory_file (process) -----+
                                                                    v
    inventory-import  validate every entry with its driver (needs the
                      drivers), enrol the new nodes (needs the schema)
    then              'start post-config' hooks, the timing summary

Why they are independent: the hooks are operator scripts that must not
rely on the schema or drivers (that is what post-config is for); the
schema needs only the database; the broker check only the network;
loading drivers only their modules; parsing the inventory only the file.
CPU-bound steps run in forked child processes: threads of one interpreter
share one core for Python code, and would take longer together than one
after another. Drivers load in the master, the one CPU-bound thread
there, because validation needs their objects, which do not pickle.

Every step leaves nothing open (engines disposed, threads joined) because
the master forks right after.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, Sequence

from oslo_config import cfg

from conductor.common import async_tasks
from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import rpc
from conductor.db import api as db_api
from conductor.db import migration
from conductor.drivers import base
from conductor.drivers import loader
from conductor import inventory

LOG = logging.getLogger(__name__)

#: Every start-up task name: their logs are <async_log_dir>/<name>.log.
TASK_NAMES = ("pre-start-hooks", "database", "broker", "drivers",
              "inventory-parse", "inventory-import")


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


def check_broker(conf: cfg.ConfigOpts, timeout: float = 5.0) -> str:
    """Check that a host of ``[DEFAULT] transport_url`` accepts AMQP.

    Never fails start-up: RPC reconnects by itself when the broker comes
    back, so an unreachable broker is a warning. Run it in a child process
    (``run_process``): the master must not connect before it forks.

    :returns: what was found, for the task log.
    """
    if not rpc.enabled(conf):
        return "no transport_url: RPC disabled"
    try:
        rpc.check_broker(conf, timeout=timeout)
    except exceptions.ConductorException as exc:
        LOG.warning("%s; RPC starts once a broker answers", exc)
        return "broker unreachable"
    LOG.info("The message broker is reachable")
    return "broker reachable"


def load_drivers(conf: cfg.ConfigOpts) -> dict[str, base.BaseDriver]:
    """Load and check every enabled driver (DriverLoadError names it)."""
    return loader.load(conf.enabled_drivers)


def import_inventory(conf: cfg.ConfigOpts,
                     drivers: Mapping[str, base.BaseDriver],
                     entries: Sequence[Any]) -> int:
    """Validate the parsed inventory, then enrol the nodes not yet enrolled.

    The whole file is validated first: one bad entry enrols nothing.
    Entries are matched on name (or uuid); those already present are left
    untouched, so restarting never duplicates or overwrites nodes.

    :returns: the number of nodes added.
    :raises: InvalidParameterValue naming the file, the entry and the
        problem.
    """
    path = conf.inventory_file
    for index, entry in enumerate(entries, start=1):
        if isinstance(entry, Mapping) and not (entry.get("name")
                                               or entry.get("uuid")):
            # NOTE: matching on name or uuid is what keeps restarts from
            # enrolling the same node again.
            raise exceptions.InvalidParameterValue(
                err="%s: node #%d has neither a name nor a uuid; entries "
                    "of [DEFAULT] inventory_file need one, or every start "
                    "would enrol them again" % (path, index))
    nodes = inventory.validate(list(entries), drivers, source=path)
    db = db_api.Connection.create(conf.database.connection, max_retries=0)
    try:
        names, uuids = db.node_identities()
        new = [node for node in nodes
               if node.get("name") not in names
               and node.get("uuid") not in uuids]
        db.import_nodes(new, read_back=False)
    finally:
        db.dispose()
    LOG.info("Inventory %(path)s: %(new)d node(s) enrolled, %(old)d "
             "already present", {"path": path, "new": len(new),
                                 "old": len(nodes) - len(new)})
    return len(new)


@dataclasses.dataclass
class StartupResult:
    """What start-up produced for the launcher."""

    drivers: dict[str, base.BaseDriver]
    summary: async_tasks.Summary


def run(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook]
        ) -> StartupResult:
    """Run every start-up step; returns once all are done.

    :raises: ConductorException naming the failed step and its problem
        (a failed task's original error when it is a ConductorException).
        Every task is finished, its log replayed, before this returns or
        raises, so the caller may fork right after.
    """
    # NOTE: the module's default group, so hooks and drivers can use the
    # run/wait API of DESIGN.md section 9 during start-up too.
    group = async_tasks.configure(conf.async_log_dir,
                                  parallel=conf.parallel_startup, logger=LOG)
    config_files = list(conf.config_file)
    try:
        # NOTE: children first, forked while no other thread runs (see
        # TaskGroup.run_process); then the tasks that run in threads.
        group.run_process("database", prepare_database, conf)
        if rpc.enabled(conf):
            group.run_process("broker", check_broker, conf)
        if conf.inventory_file:
            group.run_process("inventory-parse", inventory.load_file,
                              conf.inventory_file)
        group.run("pre-start-hooks", hooks.run_hooks, hook_list, "start",
                  "pre-start", conf=conf, config_files=config_files)
        group.run("drivers", load_drivers, conf)
        drivers = _wait(group, "drivers")
        _wait(group, "database")
        if conf.inventory_file:
            entries = _wait(group, "inventory-parse")
            group.run("inventory-import", import_inventory, conf, drivers,
                      entries)
            _wait(group, "inventory-import")
        _wait(group, "pre-start-hooks")
        if rpc.enabled(conf):
            _wait(group, "broker")
    finally:
        group.cleanup()
    hooks.run_hooks(hook_list, "start", "post-config", conf=conf,
                    config_files=config_files)
    summary = group.summary()
    LOG.info("Start-up %s", summary)
    return StartupResult(drivers=drivers, summary=summary)


def _wait(group: async_tasks.TaskGroup, name: str) -> Any:
    try:
        return group.wait(name)[name]
    except async_tasks.TaskFailed as exc:
        if isinstance(exc.original, exceptions.ConductorException):
            # NOTE: the step's own message already names the option or
            # object at fault; keep it as the one line the operator sees.
            raise exc.original from exc
        raise

# SPDX-License-Identifier: Apache-2.0
"""The master's start-up, before any worker is forked.

Independent steps run as named start-up tasks (``conductor.common.
async_tasks``), each with its own log replayed whole when it is waited
on; with ``[DEFAULT] parallel_startup = False`` they run inline, one after
the other, with the same logs. The steps and what they wait for::

    pre-start-hooks   'start pre-start' hooks (thread) --------------.
    broker            a transport_url host answers? (process) -------+
    database          connect, create/upgrade or check the schema,
                      read the stored node names if there is an
                      inventory (thread) ----------------------------+
    drivers           load the enabled drivers, let each check this
                      host (thread) ---------------------------------+
    inventory-parse-N parse and validate part N of [DEFAULT]
                      inventory_file (one process per part, see
                      inventory.split_text) -------------------------+
                                                                     v
    inventory-import  enrol the nodes the database step did not find,
                      over its connection; nothing is written if none.
                      inventory-recheck checks the whole file in order
                      when a part could not be checked alone (process)
    then              'start post-config' hooks, the timing summary

Why they are independent: the hooks are operator scripts that must not
rely on the schema or drivers (that is what post-config is for); the
schema needs only the database; the broker check only the network;
loading drivers only their modules; checking the inventory only the file
and the drivers' code. CPU-bound steps run in forked child processes:
threads of one interpreter share one core for Python code, and would take
longer together than one after another. The database step mostly waits
for the server, so it runs in a thread and its one connection also
serves the import (in a child, its connection could not, and a second
one costs as much again: PyMySQL spends ~40 ms of CPU loading the CA
store for each). The master loads the drivers its workers inherit; each
inventory part loads its own copy to validate with.

Every step leaves nothing open (the connection disposed, threads joined)
because the master forks right after.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import logging
import os
import re
from typing import Any, Collection, Mapping, Sequence

from oslo_config import cfg
from oslo_db import api as oslo_db_api
from oslo_db import exception as db_exc
from oslo_utils import timeutils
import sqlalchemy as sa

from conductor.common import async_tasks
from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import processutils
from conductor.common import rpc
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.drivers import base
from conductor.drivers import loader
from conductor import inventory

LOG = logging.getLogger(__name__)

#: Every start-up task name: their logs are <async_log_dir>/<name>.log.
#: The inventory is parsed in parts, by tasks inventory-parse-1, -2...
TASK_NAMES = ("pre-start-hooks", "database", "broker", "drivers",
              "inventory-recheck", "inventory-import")
_TASK_LOG_RE = re.compile(r"^(?:%s|inventory-parse(?:-[0-9]+)?)\.log$"
                          % "|".join(re.escape(n) for n in TASK_NAMES))

#: Most parts an inventory is cut into to be parsed at the same time.
MAX_PARSE_PARTS = 4


def is_task_log(filename: str) -> bool:
    """Whether ``filename`` (no directory) is a start-up task's log."""
    return _TASK_LOG_RE.match(filename) is not None


def parse_parts() -> int:
    """How many parts to parse the inventory in: the usable CPUs, capped."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_PARSE_PARTS))


@dataclasses.dataclass(frozen=True)
class DatabaseState:
    """What the ``database`` task found: the schema, and the nodes."""

    revision: str
    #: Names and uuids of the stored nodes; read only when an inventory
    #: is to be imported (empty otherwise).
    names: frozenset[str] = frozenset()
    uuids: frozenset[str] = frozenset()


def open_database(conf: cfg.ConfigOpts, read_nodes: bool,
                  opened: list[db_api.Connection],
                  force: bool = False) -> DatabaseState:
    """Connect, :func:`prepare_database` and :func:`check_host_free`.

    The connection is kept for ``inventory-import``: it is appended to
    ``opened`` as soon as it exists, and the caller disposes of it.

    :param force: skip :func:`check_host_free` (``conductor --force``).
    :raises: DatabaseUnavailable, SchemaOutOfDate, HostInUse.
    """
    db = db_api.Connection.create(conf.database.connection, max_retries=0)
    opened.append(db)
    state = prepare_database(conf, db, read_nodes)
    if force:
        LOG.warning("--force: not checking whether another conductor runs "
                    "as %s", conf.host)
    else:
        check_host_free(db, conf.host, conf.conductor.heartbeat_timeout)
    # NOTE: a drain ends with the conductor it stopped; this is a new one.
    if db.clear_draining(conf.host):
        LOG.info("%s was drained when it last stopped; it takes nodes "
                 "again", conf.host)
    return state


def check_host_free(db: db_api.Connection, host: str,
                    heartbeat_timeout: float) -> None:
    """Refuse ``host`` when a live conductor already runs under that name.

    A worker of ``host`` that is online and heartbeating is another
    conductor when it runs on another machine (its boot id differs from
    ours), or on this one in a process that still exists. Rows left by a
    conductor that was killed (its processes gone) do not count, so a
    restart right after a crash is not refused.

    :raises: HostInUse naming that conductor's worker and pid.
    """
    cutoff = timeutils.utcnow() - datetime.timedelta(
        seconds=heartbeat_timeout)
    mine = processutils.boot_id()
    for row in db.list_conductors(with_status=True):
        if row.host != host or not row.online or row.heartbeat_at < cutoff:
            continue
        theirs = (row.status or {}).get("boot_id")
        elsewhere = bool(theirs and mine and theirs != mine)
        if elsewhere:
            where = "on another machine"
        elif row.pid is not None and row.pid != os.getpid() and \
                processutils.pid_alive(row.pid):
            where = "on this machine"
        else:
            continue
        raise exceptions.HostInUse(
            host=host, holder="worker %d, pid %s %s" % (
                row.worker_id, row.pid, where))


def prepare_database(conf: cfg.ConfigOpts, db: db_api.Connection,
                     read_nodes: bool = False) -> DatabaseState:
    """Bring the schema to head where that is safe.

    SQLite (the embedded default) and an empty database are upgraded;
    a shared database with an older schema is left alone and refused:
    upgrading it is the operator's ``conductor-manage db sync``.

    :param read_nodes: also read the names and uuids of the stored nodes
        (for the inventory import).
    :raises: DatabaseUnavailable, SchemaOutOfDate.
    """
    url = conf.database.connection
    engine = db.engine
    try:
        revision = migration.current(engine)
        if engine.dialect.name == "sqlite" or revision is None:
            revision = migration.upgrade(engine)
        else:
            revision = _check_revision(engine, url)
        if not read_nodes:
            return DatabaseState(revision)
        names, uuids = db.node_identities()
        LOG.info("%d node(s) stored", len(uuids))
        return DatabaseState(revision, frozenset(names), frozenset(uuids))
    except exceptions.ConductorException:
        raise
    except Exception as exc:
        raise db_engine.unavailable(url, exc) from exc


def _check_revision(engine: "db_api.sa.Engine", url: str) -> str:
    try:
        return migration.check(engine)
    except exceptions.SchemaOutOfDate:
        raise
    except Exception as exc:
        raise exceptions.DatabaseUnavailable(
            url=db_engine.mask_url(url),
            reason="schema revision %s is unknown to this release (%s)"
                   % (migration.current(engine), db_engine.reason(exc))
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
    """Load every enabled driver and let it check this host (``prepare``).

    :raises: DriverLoadError naming the driver and what is missing.
    """
    drivers = loader.load(conf.enabled_drivers)
    for name, driver in drivers.items():
        try:
            driver.prepare()
        except exceptions.DriverLoadError:
            raise
        except Exception as exc:
            raise exceptions.DriverLoadError(
                driver=name, reason="%s: %s" % (type(exc).__name__, exc)
            ) from exc
    return drivers


def check_inventory_part(conf: cfg.ConfigOpts, part: inventory.Part
                         ) -> list[dict[str, Any]]:
    """Parse one part of ``[DEFAULT] inventory_file`` and validate it.

    Runs in a child process, with its own copy of the drivers (loaded,
    not prepared: ``validate`` needs no more). Duplicates across parts
    are left to :func:`_checked`.

    :returns: the normalised node fields, in file order.
    :raises: InvalidParameterValue or DriverNotEnabled naming the file,
        the entry and the problem; DriverLoadError.
    """
    path = conf.inventory_file
    entries = inventory.parse_text(part.text, path)
    if part.count is not None and len(entries) != part.count:
        raise exceptions.InvalidParameterValue(
            err="%s: the part from entry #%d holds %d entries, not %d"
                % (path, part.first, len(entries), part.count))
    for index, entry in enumerate(entries, start=part.first):
        if isinstance(entry, Mapping) and not (entry.get("name")
                                               or entry.get("uuid")):
            # NOTE: matching on name or uuid is what keeps restarts from
            # enrolling the same node again.
            raise exceptions.InvalidParameterValue(
                err="%s: node #%d has neither a name nor a uuid; entries "
                    "of [DEFAULT] inventory_file need one, or every start "
                    "would enrol them again" % (path, index))
    drivers = loader.load(conf.enabled_drivers)
    return inventory.validate(entries, drivers, source=path,
                              first=part.first)


def import_inventory(conf: cfg.ConfigOpts, nodes: Sequence[dict[str, Any]],
                     stored: DatabaseState, db: db_api.Connection) -> int:
    """Enrol the validated inventory nodes not enrolled yet.

    Nodes are matched on name (or uuid) against ``stored``; those already
    present are left untouched, so restarting never duplicates or
    overwrites nodes. When nothing is new, nothing is written.

    Conductors sharing a database may start together with the same
    inventory: when another one enrolled some of the nodes since
    ``stored`` was read, the stored names are read again and the rest
    enrolled.

    :returns: the number of nodes added.
    :raises: DuplicateName for a clash no other conductor explains;
        DatabaseUnavailable when the server fails meanwhile.
    """
    new = _not_stored(nodes, stored.names, stored.uuids)
    if new:
        try:
            new = _enrol(db, nodes, new)
        except (db_exc.DBError, sa.exc.SQLAlchemyError) as exc:
            # NOTE: the server went away since the database task: say
            # which one, as a failed connection would have.
            raise db_engine.unavailable(conf.database.connection, exc) from exc
    LOG.info("Inventory %(path)s: %(new)d node(s) enrolled, %(old)d "
             "already present", {"path": conf.inventory_file,
                                 "new": len(new),
                                 "old": len(nodes) - len(new)})
    return len(new)


def _not_stored(nodes: Sequence[dict[str, Any]], names: Collection[str],
                uuids: Collection[str]) -> list[dict[str, Any]]:
    return [node for node in nodes
            if node.get("name") not in names
            and node.get("uuid") not in uuids]


def _enrol(db: db_api.Connection, nodes: Sequence[dict[str, Any]],
           new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Store ``new`` in one transaction; returns what was stored.

    On a clash, retried with what is still missing for as long as another
    conductor keeps enrolling some of them; a clash with nothing new
    stored meanwhile is a real one and is raised.
    """
    while True:
        try:
            _insert(db, new)
            return new
        except exceptions.ConductorException:
            missing = _not_stored(nodes, *db.node_identities())
            if len(missing) >= len(new):
                raise
            LOG.info("%d of these nodes were enrolled by another "
                     "conductor meanwhile; enrolling the other %d",
                     len(new) - len(missing), len(missing))
            new = missing


@oslo_db_api.wrap_db_retry(max_retries=5, retry_interval=0.1,
                           max_retry_interval=1, retry_on_deadlock=True)
def _insert(db: db_api.Connection, new: list[dict[str, Any]]) -> None:
    """One enrolment transaction, tried again when it was a deadlock victim.

    Two conductors enrolling overlapping inventories, in different
    orders, can each hold a row the other's insert waits for; the server
    rolls one transaction back, which then simply runs again.
    """
    db.import_nodes(new, read_back=False)


def run(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook],
        force: bool = False) -> None:
    """Run every start-up step; returns once all are done.

    :raises: ConductorException naming the failed step and its problem
        (a failed task's original error when it is a ConductorException).
        Every task is finished, its log replayed, before this returns or
        raises, so the caller may fork right after.
    """
    # NOTE: what the master holds now (modules, config) lives as long as
    # it does; frozen out of the garbage collector until start-up ends,
    # it is not traversed by every full collection the steps trigger.
    gc.freeze()
    try:
        _run(conf, hook_list, force)
    finally:
        gc.unfreeze()


def _run(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook],
         force: bool) -> None:
    """Body of :func:`run`."""
    # NOTE: the module's default group, so hooks and drivers can use the
    # module-level run/wait API of async_tasks during start-up too.
    group = async_tasks.configure(conf.async_log_dir,
                                  parallel=conf.parallel_startup, logger=LOG)
    config_files = list(conf.config_file)
    opened: list[db_api.Connection] = []
    failure: BaseException | None = None
    try:
        # NOTE: children first, forked while no other thread runs (see
        # TaskGroup.run_process); then the tasks that run in threads.
        # The inventory chain (parse, then validate and enrol) is the
        # longest: its first step starts first.
        parts: list[inventory.Part] = []
        if conf.inventory_file:
            text = inventory.read_text(conf.inventory_file)
            parts = inventory.split_text(text, conf.inventory_file,
                                         parse_parts())
            for number, part in enumerate(parts, start=1):
                group.run_process(_parse_task(number), check_inventory_part,
                                  conf, part)
        check_rpc = rpc.enabled(conf)
        if check_rpc:
            group.run_process("broker", check_broker, conf)
        group.run("database", open_database, conf,
                  bool(conf.inventory_file), opened, force)
        group.run("pre-start-hooks", hooks.run_hooks, hook_list, "start",
                  "pre-start", conf=conf, config_files=config_files)
        group.run("drivers", load_drivers, conf)
        _wait(group, "drivers")
        stored = _wait(group, "database")
        if conf.inventory_file:
            nodes = _checked(group, conf, parts, text)
            group.run("inventory-import", import_inventory, conf, nodes,
                      stored, opened[0])
            _wait(group, "inventory-import")
        _wait(group, "pre-start-hooks")
        if check_rpc:
            _wait(group, "broker")
    except BaseException as exc:
        failure = exc
    # NOTE: outside the except block: the tasks' clean-up logs must not
    # carry the failure (oslo.log appends the exception being handled).
    try:
        group.cleanup(after_failure=failure is not None)
    finally:
        for db in opened:
            db.dispose()
    if failure is not None:
        raise failure
    hooks.run_hooks(hook_list, "start", "post-config", conf=conf,
                    config_files=config_files)
    LOG.info("Start-up %s", group.summary())


def _checked(group: async_tasks.TaskGroup, conf: cfg.ConfigOpts,
             parts: Sequence[inventory.Part], text: str
             ) -> list[dict[str, Any]]:
    """The validated inventory, joined from its parts' tasks.

    When the file was cut and a part failed (an alias to an anchor in
    another part, or a real mistake) or two parts share a name or uuid,
    the whole text is checked again, in file order, by the task
    ``inventory-recheck``: that gives the right nodes, or the error an
    uncut file gives, with the file's own line numbers and its first bad
    entry.
    """
    nodes: list[dict[str, Any]] = []
    problems: list[str] = []
    for number in range(1, len(parts) + 1):
        name = _parse_task(number)
        try:
            nodes.extend(_wait_checked(group, name, conf.inventory_file))
        except exceptions.ConductorException as exc:
            if len(parts) == 1:
                raise
            problems.append("%s: %s" % (name, exc))
    if not problems and not _shared_identity(nodes):
        return nodes
    LOG.info("Checking %(path)s in %(count)d parts failed (%(problems)s); "
             "checking it whole", {
                 "path": conf.inventory_file, "count": len(parts),
                 "problems": "; ".join(problems)
                 or "two parts share a name or uuid"})
    # NOTE: in a child too: a pathological file (lists nested tens of
    # thousands deep) crashes libyaml, which must not take the master.
    # The child inherits the database task's open connection and never
    # uses it: it leaves by os._exit, which sends the server nothing.
    group.run_process("inventory-recheck", check_inventory_part, conf,
                      inventory.Part(1, None, text))
    return _wait_checked(group, "inventory-recheck", conf.inventory_file)


def _parse_task(number: int) -> str:
    """The name of the task checking part ``number`` of the inventory."""
    return "inventory-parse-%d" % number


def _wait_checked(group: async_tasks.TaskGroup, name: str,
                  path: str) -> list[dict[str, Any]]:
    """:func:`_wait` for a task checking the inventory ``path``.

    A checking process that died (a parser crash, the OOM killer) is
    reported as a problem of the file, naming it.
    """
    try:
        return list(_wait(group, name))
    except async_tasks.ChildProcessFailed as exc:
        raise exceptions.InvalidParameterValue(
            err="%s: cannot be checked, its checking process died (%s)"
                % (path, exc)) from exc


def _shared_identity(nodes: Sequence[dict[str, Any]]) -> bool:
    """Whether two nodes share a name or a uuid."""
    for key in ("name", "uuid"):
        values = [node[key] for node in nodes if node.get(key)]
        if len(set(values)) != len(values):
            return True
    return False


def _wait(group: async_tasks.TaskGroup, name: str) -> Any:
    try:
        return group.wait(name)[name]
    except async_tasks.TaskFailed as exc:
        if isinstance(exc.original, exceptions.ConductorException):
            # NOTE: the step's own message already names the option or
            # object at fault; keep it as the one line the operator sees.
            raise exc.original from exc
        raise

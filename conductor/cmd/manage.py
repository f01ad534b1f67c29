# SPDX-License-Identifier: Apache-2.0
"""``conductor-manage``: administer the database, nodes and status.

Exit codes: 0 success; 1 a clear one-line error on stderr (bad input, not
found, locked, unreachable); 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any, Callable, Sequence

import conductor.cmd  # noqa: F401  (backend first: see the package doc)

from oslo_config import cfg
from oslo_db import exception as db_exc
import oslo_messaging as messaging
from oslo_utils import timeutils
import sqlalchemy as sa

from conductor import checks
from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import masking
from conductor.common import output
from conductor.common import rpc
from conductor.common import version
from conductor import conf as conductor_conf
from conductor.db import api as db_api
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.drivers import base
from conductor.drivers import loader
from conductor import inventory
from conductor import nodes
from conductor import rpcapi
from conductor import startup
from conductor import states
from conductor import status as status_report

LOG = logging.getLogger(__name__)

#: Attempts to reach the broker when sending (oslo.messaging's ``retry``).
RPC_RETRY = 2
#: The shortest ``status --watch --interval`` (seconds): each report reads
#: the database or asks every conductor.
MIN_INTERVAL = 0.1
#: The longest wait or interval a command takes (seconds).
MAX_SECONDS = 7 * 86400
#: How long ``node power --wait`` and ``drain --wait`` wait by default.
POWER_WAIT = 120.0
DRAIN_WAIT = 600.0

NODE_COLUMNS = ("uuid", "name", "driver", "power_state",
                "target_power_state", "maintenance", "reservation")


class Manage:
    """The commands, over one parsed configuration."""

    def __init__(self, conf: cfg.ConfigOpts, out: Callable[[str], None]
                 ) -> None:
        self.conf = conf
        self.out = out
        self._db: db_api.Connection | None = None
        self._drivers: dict[str, base.BaseDriver] | None = None
        self._transport: messaging.Transport | None = None
        self._rpc_api: rpcapi.ConductorAPI | None = None
        #: What Ctrl-C leaves behind, said instead of a bare "interrupted"
        #: (a command sets it once it has changed something and waits).
        self.on_interrupt = "interrupted"

    @property
    def db(self) -> db_api.Connection:
        if self._db is None:
            self._db = db_api.Connection.create(
                self.conf.database.connection, max_retries=0,
                create_sqlite=False)
            migration.check(self._db.engine)
        return self._db

    @property
    def drivers(self) -> dict[str, base.BaseDriver]:
        if self._drivers is None:
            self._drivers = loader.load(self.conf.enabled_drivers)
        return self._drivers

    @property
    def rpc_api(self) -> rpcapi.ConductorAPI | None:
        """The RPC client with ``[DEFAULT] transport_url`` set, else None.

        :raises: ConductorException when no broker can be reached.
        """
        if self._rpc_api is None and rpc.enabled(self.conf):
            rpc.check_broker(self.conf)
            self._transport = rpc.get_transport(self.conf)
            self._rpc_api = rpcapi.ConductorAPI.from_conf(
                self.conf, self._transport, retry=RPC_RETRY)
        return self._rpc_api

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
        if self._transport is not None:
            self._transport.cleanup()

    # -- db ------------------------------------------------------------

    def db_sync(self, args: argparse.Namespace) -> None:
        engine = db_engine.create_engine(self.conf.database.connection)
        try:
            revision = migration.upgrade(engine)
        finally:
            engine.dispose()
        self.out("Database schema is at revision %s" % revision)

    def db_version(self, args: argparse.Namespace) -> None:
        engine = db_engine.create_engine(self.conf.database.connection,
                                         create_sqlite=False)
        try:
            revision = migration.current(engine)
        finally:
            engine.dispose()
        head = migration.head()
        self.out("%s (head: %s)" % (revision or "<empty>", head))

    # -- nodes ---------------------------------------------------------

    def node_create(self, args: argparse.Namespace) -> None:
        values: dict[str, Any] = {"driver": args.driver,
                                  "driver_info": nodes.parse_pairs(
                                      args.driver_info)}
        for key in ("name", "uuid", "maintenance_reason"):
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        if args.maintenance is not None:
            values["maintenance"] = args.maintenance
        clean = nodes.validate_new(values, self.drivers)
        node = self.db.create_node(clean)
        self._show(node, args.format)

    def node_import(self, args: argparse.Namespace) -> None:
        entries = inventory.load_file(args.file)
        valid = inventory.validate(entries, self.drivers, source=args.file)
        created = self.db.import_nodes(valid)
        self.out("Imported %d node(s) from %s" % (len(created), args.file))

    def node_list(self, args: argparse.Namespace) -> None:
        found = self.db.list_nodes(driver=args.driver,
                                   maintenance=args.maintenance)
        if args.format == "json":
            self.out(output.to_json([nodes.as_dict(node) for node in found]))
            return
        self.out(output.table(NODE_COLUMNS, [
            [getattr(node, column) for column in NODE_COLUMNS]
            for node in found]))

    def node_show(self, args: argparse.Namespace) -> None:
        self._show(self.db.get_node(args.node), args.format)

    def node_set(self, args: argparse.Namespace) -> None:
        node = self.db.get_node(args.node)
        values: dict[str, Any] = {}
        if args.name is not None:
            values["name"] = args.name or None
        if args.driver is not None:
            values["driver"] = args.driver
        if args.driver_info or args.unset_driver_info:
            info = dict(node.driver_info)
            info.update(nodes.parse_pairs(args.driver_info))
            for key in args.unset_driver_info:
                if key not in info:
                    raise exceptions.InvalidParameterValue(
                        err="driver_info has no field %r to unset" % key)
                info.pop(key)
            values["driver_info"] = info
        if args.maintenance is not None:
            values["maintenance"] = args.maintenance
        if args.maintenance_reason is not None:
            values["maintenance_reason"] = args.maintenance_reason
        if not values:
            raise exceptions.InvalidParameterValue(
                err="node set: nothing to change; give at least one option")
        clean = nodes.validate_update(node, values, self.drivers)
        self._show(self.db.update_node(node.uuid, clean), args.format)

    def node_delete(self, args: argparse.Namespace) -> None:
        node = self.db.get_node(args.node)
        self.db.delete_node(node.uuid)
        self.out("Deleted node %s" % (node.name or node.uuid))

    def node_power(self, args: argparse.Namespace) -> None:
        if args.cancel:
            self._node_power_cancel(args)
            return
        target = states.POWER_VERBS[args.action]
        if self.rpc_api is not None:
            self._node_power_rpc(self.rpc_api, args, target)
            return
        node = self.db.get_node(args.node)
        label = node.name or node.uuid
        expiry = self.conf.conductor.power_request_timeout
        if not args.queue and not self._live_driver(node.driver):
            raise exceptions.ConductorException(
                "no live conductor has driver '%s' to apply '%s' to node %s "
                "(see 'conductor-manage status'); nothing was requested: "
                "start one, or give --queue to leave the request for it"
                % (node.driver, target, label))
        node = self.db.request_power_state(args.node, target)
        if not args.wait:
            self.out("Requested %s for node %s" % (target, label))
            return
        self.on_interrupt = _left_requested(args.node, label, target)
        deadline = time.monotonic() + args.timeout
        while node.target_power_state is not None:
            if time.monotonic() > deadline:
                node = self._timed_out(args, node, label, target, expiry)
                if node.target_power_state is not None:
                    continue
                break
            time.sleep(0.1)
            node = self.db.get_node(node.uuid)
        if node.last_error:
            raise _action_failed(label, target, node.last_error)
        self.out("Node %s is %s" % (label, node.power_state))

    def _live_driver(self, driver: str) -> bool:
        """Whether a live worker (fresh heartbeat, online) has ``driver``."""
        timeout = self.conf.conductor.heartbeat_timeout
        now = timeutils.utcnow()
        return any(
            record.online and driver in record.drivers
            and (now - record.heartbeat_at).total_seconds() < timeout
            for record in self.db.list_conductors())

    def _timed_out(self, args: argparse.Namespace,
                   node: db_api.NodeRecord, label: str, target: str,
                   expiry: int) -> db_api.NodeRecord:
        """``--wait`` ran out: cancel the request (unless ``--keep``).

        :returns: the node when its action finished meanwhile.
        :raises: ConductorException saying what became of the request.
        """
        text = ("Timed out after %ss waiting for node %s to apply '%s'; "
                "is a conductor running? (see 'conductor-manage status')"
                % (_seconds(args.timeout), label, target))
        if args.keep:
            raise exceptions.ConductorException(
                "%s; the request stays queued%s (cancel it with "
                "'conductor-manage node power %s --cancel')" % (
                    text, "" if not expiry else " for at most [conductor] "
                    "power_request_timeout = %ss" % expiry, args.node))
        if self.db.clear_power_request(
                node.uuid, "Requested '%s' cancelled: conductor-manage "
                "--wait timed out after %ss" % (target,
                                                _seconds(args.timeout)),
                target=target):
            raise exceptions.ConductorException(
                "%s; the request was cancelled (--keep leaves it queued)"
                % text)
        node = self.db.get_node(node.uuid)
        if node.target_power_state is None:
            return node  # applied just now
        raise exceptions.ConductorException(
            "%s; it is being applied by %s now and was not cancelled"
            % (text, node.reservation))

    def _node_power_cancel(self, args: argparse.Namespace) -> None:
        """``node power NODE --cancel``: drop a request not taken yet."""
        node = self.db.get_node(args.node)
        label = node.name or node.uuid
        target = node.target_power_state
        if target is None:
            raise exceptions.ConductorException(
                "node %s has no pending power request to cancel" % label)
        if node.reservation is None and self.db.clear_power_request(
                node.uuid, "Requested '%s' cancelled by conductor-manage"
                % target, target=target):
            self.out("Cancelled the pending '%s' request of node %s"
                     % (target, label))
            return
        node = self.db.get_node(node.uuid)
        if node.target_power_state is None:
            raise exceptions.ConductorException(
                "node %s: the '%s' request was applied before it could be "
                "cancelled" % (label, target))
        raise exceptions.ConductorException(
            "node %s: the '%s' request is being applied by %s and cannot "
            "be cancelled" % (label, node.target_power_state,
                              node.reservation))

    def _node_power_rpc(self, api: rpcapi.ConductorAPI,
                        args: argparse.Namespace, target: str) -> None:
        """``node power`` over RPC: the owner applies it at once."""
        deadline = time.monotonic() + args.timeout
        label = args.node

        def timed_out() -> exceptions.ConductorException:
            return exceptions.ConductorException(
                "Timed out after %ss waiting for node %s to apply '%s'; is "
                "a conductor running? (see 'conductor-manage status')"
                % (args.timeout, label, target))

        if args.wait:
            # NOTE: Ctrl-C may come before the request is sent.
            self.on_interrupt = (
                "interrupted; the '%s' request of node %s may have been "
                "sent, and its owner applies it at once (see "
                "'conductor-manage node show %s')" % (target, label,
                                                      args.node))
        try:
            node = api.set_power_state(
                args.node, target, wait=args.wait,
                timeout=args.timeout if args.wait else None)
            label = node["name"] or node["uuid"]
            if not args.wait:
                self.out("Requested %s for node %s" % (target, label))
                return
            # NOTE: the owner waits for the action up to the driver
            # deadline; past it, watch the record like the database path.
            while node["target_power_state"] is not None:
                if time.monotonic() > deadline:
                    raise timed_out()
                time.sleep(0.1)
                node = api.get_node(node["uuid"])
        except messaging.MessagingTimeout:
            if args.wait:
                raise timed_out() from None
            raise
        if node["last_error"]:
            raise _action_failed(label, target, node["last_error"])
        self.out("Node %s is %s" % (label, node["power_state"]))

    def _show(self, node: db_api.NodeRecord, fmt: str) -> None:
        data = nodes.as_dict(node)
        if fmt == "json":
            self.out(output.to_json(data))
        else:
            self.out(output.fields(list(data.items())))

    # -- status and clean ----------------------------------------------

    def status(self, args: argparse.Namespace) -> None:
        if not args.watch:
            self._status_once(args)
            return
        self._watch(args)

    def _watch(self, args: argparse.Namespace) -> None:
        """``status --watch``: the report again every ``--interval`` s.

        In a terminal each report replaces the previous one (the screen is
        cleared); otherwise (a pipe, a file) reports follow each other,
        each headed by its time. Ctrl-C ends it (exit 0).
        """
        tty = sys.stdout.isatty()
        try:
            while True:
                lines: list[str] = []
                out, self.out = self.out, lines.append
                try:
                    self._status_once(args)
                finally:
                    self.out = out
                if args.format != "json":
                    lines[:0] = ["Every %ss: conductor-manage status    %s"
                                 % (_seconds(args.interval),
                                    timeutils.utcnow().strftime(
                                        "%Y-%m-%d %H:%M:%S UTC")), ""]
                if tty:
                    # NOTE: cursor home, then clear the screen: the report
                    # is redrawn in place.
                    sys.stdout.write("\x1b[H\x1b[2J")
                self.out("\n".join(lines) + ("" if tty else "\n"))
                sys.stdout.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            if tty:
                sys.stdout.write("\n")

    def _status_once(self, args: argparse.Namespace) -> None:
        api = self.rpc_api
        data = (api.get_status() if api is not None else
                db_status(self.db, self.conf.conductor.heartbeat_timeout,
                          self.conf.conductor.sync_power_state_interval))
        if args.format == "json":
            self.out(output.to_json(data))
            return
        rows = [(w["host"], w["worker_id"], w["pid"], w["alive"],
                 w["online"], _health_text(w["status"]),
                 w["heartbeat_age"], ", ".join(w["drivers"]),
                 _pool_text(w["status"]), _sweep_text(w["status"]))
                for w in data["workers"]]
        self.out(output.table(("host", "worker", "pid", "alive", "online",
                               "health (abandoned calls)",
                               "heartbeat age (s)", "drivers",
                               "pool busy/size (rejected)",
                               "last power sync"), rows))
        shares = [(name, host["alive_workers"], host.get("nodes_owned"),
                   host.get("nodes_overdue"), host.get("oldest_reading_age"))
                  for name, host in sorted(data["hosts"].items())]
        if shares:
            self.out("")
            self.out(output.table(
                ("host", "alive workers", "nodes owned",
                 "nodes overdue", "oldest reading age (s)"), shares))
        draining = sorted(host for host, info in data["hosts"].items()
                          if info.get("draining"))
        if draining:
            self.out("Draining (their nodes moved to the other hosts; they "
                     "stop once the handover is done): %s"
                     % ", ".join(draining))
        tasks = _periodic_rows(data["workers"])
        if tasks:
            self.out("")
            self.out(output.table(
                ("host", "worker", "periodic task", "runs", "failures",
                 "last start", "last duration (s)",
                 "next due (s, at last beat)"), tasks))
        counts = data["nodes"]
        self.out("")
        self.out(output.table(("power state", "nodes"), sorted(
            counts["by_power_state"].items())))
        self.out("")
        self.out("%d node(s), %d in maintenance" % (counts["total"],
                                                    counts["maintenance"]))

    def drain(self, args: argparse.Namespace) -> None:
        """Mark HOST draining; with ``--wait``, wait until it stopped."""
        data = db_status(self.db, self.conf.conductor.heartbeat_timeout)
        live = {w["host"] for w in data["workers"] if w["alive"]}
        if args.host not in live:
            raise exceptions.ConductorException(
                "no live conductor on host %s to drain (see "
                "'conductor-manage status')" % args.host)
        if live == {args.host} and not args.force:
            raise exceptions.ConductorException(
                "%s is the only live host: no other would take its nodes; "
                "give --force to drain it anyway" % args.host)
        count = self.db.set_draining(args.host)
        self.out("Draining %s (%d worker(s)): the other hosts take its nodes "
                 "now; it stops once they had the time to poll them"
                 % (args.host, count))
        if not args.wait:
            return
        self.on_interrupt = ("interrupted; %s stays draining and stops once "
                             "the other hosts have its nodes (see "
                             "'conductor-manage status')" % args.host)
        deadline = time.monotonic() + args.timeout
        while any(record.online for record in self.db.list_conductors()
                  if record.host == args.host):
            if time.monotonic() > deadline:
                raise exceptions.ConductorException(
                    "%s still running after %ss; it stays draining (see "
                    "its log)" % (args.host, _seconds(args.timeout)))
            time.sleep(0.2)
        self.out("Host %s drained and stopped" % args.host)

    def clean(self, args: argparse.Namespace) -> None:
        timeout = self.conf.conductor.heartbeat_timeout
        data = db_status(self.db, timeout)
        dead = [w for w in data["workers"] if not w["alive"]]
        released = self.db.release_reservations(
            keep=[db_api.holder_name(w["host"], w["worker_id"])
                  for w in data["workers"] if w["alive"]])
        for worker in dead:
            self.db.delete_conductors(worker["host"], [worker["worker_id"]])
        removed = 0
        if not any(w["alive"] and w["host"] == self.conf.host
                   for w in data["workers"]):
            removed = _remove_task_logs(self.conf.async_log_dir)
        try:
            hook_list = hooks.discover(self.conf.hooks.hooks_dir)
        except hooks.HookError as exc:
            LOG.error("Clean hooks not run: %s", exc)
            hook_list = []
        failures = hooks.run_hooks(hook_list, "clean", conf=self.conf,
                                   config_files=list(self.conf.config_file))
        self.out("Removed %d dead worker record(s) and %d start-up task "
                 "log(s), released %d stale reservation(s)"
                 % (len(dead), removed, released))
        idle = _idle_reservations(self.db.reservations(), data["workers"])
        if idle:
            self.out("%d reservation(s) held by live workers with no call "
                     "in progress at their last heartbeat (left alone; a "
                     "worker retries its failed releases itself):"
                     % len(idle))
            for uuid, holder, why in idle:
                self.out("  node %s: %s, %s" % (uuid, holder, why))
        if failures:
            raise exceptions.ConductorException(
                "%d clean hook(s) failed: %s" % (
                    len(failures), "; ".join(str(f) for f in failures)))


def _idle_reservations(reserved: dict[str, str],
                       workers: list[dict[str, Any]]
                       ) -> list[tuple[str, str, str]]:
    """Reservations of live workers that no task of theirs is using.

    Compared with the set each worker publishes with its heartbeat
    (``status["reservations"]``); a worker that publishes none is not
    judged. A reservation taken since the last heartbeat shows here too.

    :returns: ``(uuid, holder, why)``, sorted.
    """
    published: dict[str, dict[str, Any]] = {}
    for worker in workers:
        held = (worker.get("status") or {}).get("reservations")
        if worker["alive"] and isinstance(held, dict):
            published[db_api.holder_name(worker["host"],
                                         worker["worker_id"])] = held
    idle = []
    for uuid, holder in sorted(reserved.items()):
        held = published.get(holder)
        if held is None or uuid in (held.get("in_flight") or ()):
            continue
        why = ("its release failed and is being retried"
               if uuid in (held.get("release_pending") or ())
               else "no call in progress")
        idle.append((uuid, holder, why))
    return idle


def _remove_task_logs(log_dir: str | None) -> int:
    """Delete the start-up task logs (and nothing else) from ``log_dir``."""
    if not log_dir or not os.path.isdir(log_dir):
        return 0
    removed = 0
    for name in sorted(os.listdir(log_dir)):
        path = os.path.join(log_dir, name)
        if startup.is_task_log(name) and os.path.isfile(path):
            os.unlink(path)
            removed += 1
    return removed


def _periodic_rows(workers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """One row per periodic task of every live worker."""
    rows = []
    for worker in workers:
        if not worker["alive"]:
            continue
        for task in (worker.get("status") or {}).get("periodics") or []:
            if not task.get("enabled", True):
                continue
            duration = task.get("last_duration")
            due = task.get("next_due")
            rows.append((worker["host"], worker["worker_id"], task["name"],
                         task.get("runs", 0), task.get("failures", 0),
                         task.get("last_started") or "",
                         "" if duration is None else "%.3f" % duration,
                         "" if due is None else "%.1f" % due))
    return rows


def _pool_text(status: dict[str, Any]) -> str:
    pool = status.get("pool")
    if not pool:
        return ""
    return "%d/%d (%d)" % (pool.get("busy", 0), pool.get("size", 0),
                           pool.get("rejected", 0))


def _health_text(status: dict[str, Any]) -> str:
    """``healthy`` or ``degraded``, with abandoned calls running/cap."""
    health = status.get("health")
    if not health:
        return ""
    pool = status.get("pool") or {}
    if not pool.get("abandoned_total"):
        return str(health)
    return "%s (%d running of %d, %d in total)" % (
        health, pool.get("abandoned", 0), pool.get("abandoned_cap", 0),
        pool.get("abandoned_total", 0))


def _sweep_text(status: dict[str, Any]) -> str:
    sweep = (status.get("sweeps") or {}).get("sync")
    if not sweep:
        return ""
    return "%d nodes in %.2fs, %d failed" % (
        sweep.get("nodes", 0), sweep.get("total_seconds", 0.0),
        sweep.get("failures", 0))


def db_status(db: db_api.Connection, heartbeat_timeout: float,
              sync_interval: float | None = None
              ) -> dict[str, Any]:
    """Workers and node counts, as the database knows them.

    The same data a conductor answers ``get_status`` with over RPC; see
    :func:`conductor.status.build`.
    """
    return status_report.build(db, heartbeat_timeout, sync_interval)


def _bool_arg(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, got %r" % text)


#: How ``--driver-info`` reads its values (see nodes.parse_pairs).
DRIVER_INFO_HELP = (
    "a driver_info field (repeatable; several pairs may follow one flag). "
    "VALUE is read as JSON when it is valid JSON (5 is a number, true a "
    "boolean, '\"5\"' in a shell the string 5), else as a string")


def _maintenance_arg(parser: argparse.ArgumentParser,
                     text: str = "put the node in maintenance (true) or "
                     "take it out (false); alone it means true") -> None:
    """One ``--maintenance [true|false]`` for create, list and set."""
    parser.add_argument("--maintenance", type=_bool_arg, nargs="?",
                        const=True, default=None, metavar="true|false",
                        help=text + "; also yes/no, on/off, 1/0")


def _check_set_args(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> None:
    """Give back a NODE a list option swallowed (``--driver-info k=v N``).

    argparse lets ``nargs="+"`` options take every word up to the next
    option, NODE included. A ``--driver-info`` word without ``=`` cannot
    be a pair, so it is NODE; failing that, the last ``--unset-driver-info``
    word is.
    """
    if args.node is not None:
        return
    if args.driver_info and "=" not in args.driver_info[-1]:
        args.node = args.driver_info.pop()
    elif args.unset_driver_info:
        args.node = args.unset_driver_info.pop()
    if args.node is None:
        parser.error("the following arguments are required: NODE")


def _check_status_args(parser: argparse.ArgumentParser,
                       args: argparse.Namespace) -> None:
    if args.interval is not None and not args.watch:
        parser.error("--interval applies to --watch only")
    if args.interval is None:
        args.interval = 2.0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected seconds, got %r" % text)
    # NOTE: "nan > 0" is false like "nan <= 0": a nan wait never ends;
    # past the clock's range, sleep and waits overflow.
    if not (0 < value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(
            "must be a number of seconds > 0 and at most %d (a week), got "
            "%r" % (MAX_SECONDS, text))
    return value


def _interval(text: str) -> float:
    value = _positive(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(
            "must be at least %s, got %r" % (MIN_INTERVAL, text))
    return value


def _action_failed(label: str, target: str,
                   last_error: str) -> exceptions.PowerStateFailure:
    """``--wait``: the action failed; say so once, with its last_error."""
    failed = "%s failed" % target
    if not last_error.startswith(failed):
        last_error = "%s: %s" % (failed, last_error)
    return exceptions.PowerStateFailure(err="Node %s: %s" % (label,
                                                             last_error))


def _left_requested(node: str, label: str, target: str) -> str:
    """What Ctrl-C during ``node power --wait`` leaves behind."""
    return ("interrupted; the '%s' request of node %s stays and a conductor "
            "applies it (see 'conductor-manage node show %s'; "
            "'conductor-manage node power %s --cancel' withdraws it while "
            "it waits)" % (target, label, node, node))


def _check_power_args(parser: argparse.ArgumentParser,
                      args: argparse.Namespace) -> None:
    """Usage errors (exit 2) of ``node power``'s option combinations."""
    if args.cancel:
        extra = [name for name, given in (
            ("ACTION", args.action is not None), ("--wait", args.wait),
            ("--timeout", args.timeout is not None),
            ("--keep", args.keep), ("--queue", args.queue)) if given]
        if extra:
            parser.error("--cancel takes no %s" % ", ".join(extra))
        return
    if args.action is None:
        parser.error("ACTION (%s) is required unless --cancel"
                     % ", ".join(sorted(states.POWER_VERBS)))
    _check_wait_args(parser, args, POWER_WAIT)
    if args.keep and not args.wait:
        parser.error("--keep applies to --wait only")


def _check_wait_args(parser: argparse.ArgumentParser,
                     args: argparse.Namespace, default: float) -> None:
    """``--timeout`` bounds ``--wait`` only; fill in its default."""
    if args.timeout is None:
        args.timeout = default
    elif not args.wait:
        parser.error("--timeout applies to --wait only")


def _seconds(value: float) -> str:
    return "%d" % value if float(value).is_integer() else "%g" % value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conductor-manage",
        description="Administer conductor's database, nodes and status.")
    parser.add_argument("--config-file", action="append", default=[],
                        metavar="PATH", help="configuration file (repeatable)")
    parser.add_argument("--config-dir", action="append", default=[],
                        metavar="DIR", help="directory of *.conf files")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks and library logs")
    parser.add_argument("--version", action="version",
                        version="%(prog)s " + version.version_string())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     required=True)

    def fmt(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--format", choices=("table", "json"),
                         default="table", help="output format")

    db = commands.add_parser("db", help="database schema")
    db_cmds = db.add_subparsers(dest="db_command", required=True,
                                metavar="ACTION")
    db_cmds.add_parser("sync", help="upgrade the schema to this release's"
                       ).set_defaults(func=Manage.db_sync)
    db_cmds.add_parser("version", help="show the schema revision"
                       ).set_defaults(func=Manage.db_version)

    node = commands.add_parser("node", help="enrol and manage nodes")
    node_cmds = node.add_subparsers(dest="node_command", required=True,
                                    metavar="ACTION")
    create = node_cmds.add_parser("create", help="enrol one node")
    create.add_argument("--driver", required=True)
    create.add_argument("--name")
    create.add_argument("--uuid")
    create.add_argument("--driver-info", action="extend", nargs="+",
                        default=[], metavar="KEY=VALUE",
                        help=DRIVER_INFO_HELP)
    _maintenance_arg(create)
    create.add_argument("--maintenance-reason")
    fmt(create)
    create.set_defaults(func=Manage.node_create)

    imp = node_cmds.add_parser(
        "import", help="enrol nodes from a YAML or JSON list (all or none)")
    imp.add_argument("file", metavar="FILE")
    imp.set_defaults(func=Manage.node_import)

    lst = node_cmds.add_parser("list", help="list nodes")
    lst.add_argument("--driver")
    _maintenance_arg(lst, "only nodes in maintenance (true) or not "
                     "(false)")
    fmt(lst)
    lst.set_defaults(func=Manage.node_list)

    show = node_cmds.add_parser("show", help="show one node")
    show.add_argument("node", metavar="NODE", help="uuid or name")
    fmt(show)
    show.set_defaults(func=Manage.node_show)

    nset = node_cmds.add_parser("set", help="change a node's fields")
    # NOTE: NODE is optional for argparse only: a list option given just
    # before it swallows it, and _check_set_args gives it back.
    nset.add_argument("node", metavar="NODE", nargs="?",
                      help="uuid or name")
    nset.add_argument("--name", help="new name ('' removes it)")
    nset.add_argument("--driver")
    nset.add_argument("--driver-info", action="extend", nargs="+",
                      default=[], metavar="KEY=VALUE",
                      help=DRIVER_INFO_HELP)
    nset.add_argument("--unset-driver-info", action="extend", nargs="+",
                      default=[],
                      metavar="KEY")
    _maintenance_arg(nset)
    nset.add_argument("--maintenance-reason")
    fmt(nset)
    nset.set_defaults(func=Manage.node_set,
                      check=lambda args: _check_set_args(nset, args))

    delete = node_cmds.add_parser("delete", help="delete a node")
    delete.add_argument("node", metavar="NODE", help="uuid or name")
    delete.set_defaults(func=Manage.node_delete)

    power = node_cmds.add_parser(
        "power", help="power a node on/off/reboot, or cancel a request")
    power.add_argument("node", metavar="NODE", help="uuid or name")
    power.add_argument("action", choices=sorted(states.POWER_VERBS),
                       nargs="?", help="required unless --cancel")
    power.add_argument("--wait", action="store_true",
                       help="return when the action is done; exit 1 with "
                            "the node's last_error if it failed; Ctrl-C "
                            "stops waiting (exit 130), not the request")
    power.add_argument("--timeout", type=_positive, default=None,
                       help="seconds --wait waits at most (default %s); "
                            "then the request is cancelled unless --keep"
                            % _seconds(POWER_WAIT))
    power.add_argument("--keep", action="store_true",
                       help="with --wait: leave the request queued when "
                            "the wait times out")
    power.add_argument("--queue", action="store_true",
                       help="request it even when no live conductor has "
                            "the node's driver (it is applied when one "
                            "starts, unless [conductor] "
                            "power_request_timeout passes first)")
    power.add_argument("--cancel", action="store_true",
                       help="cancel the node's pending request (one no "
                            "conductor has started applying)")
    power.set_defaults(func=Manage.node_power,
                       check=lambda args: _check_power_args(power, args))

    status = commands.add_parser("status", help="hosts, workers, nodes")
    fmt(status)
    status.add_argument("--watch", action="store_true",
                        help="show it again every --interval seconds, in "
                        "place in a terminal, until Ctrl-C")
    status.add_argument("--interval", type=_interval, default=None,
                        metavar="SECONDS",
                        help="seconds between two reports of --watch "
                        "(default 2, at least %s)" % MIN_INTERVAL)
    status.set_defaults(func=Manage.status,
                        check=lambda args: _check_status_args(status, args))

    drain = commands.add_parser(
        "drain", help="move a host's nodes to the other hosts, then stop "
        "it (as SIGUSR1 to its master)")
    drain.add_argument("host", metavar="HOST", help="its [DEFAULT] host")
    drain.add_argument("--wait", action="store_true",
                       help="return once the host has stopped; Ctrl-C "
                            "stops waiting (exit 130), not the drain")
    drain.add_argument("--timeout", type=_positive, default=None,
                       help="seconds --wait waits at most (default %s)"
                            % _seconds(DRAIN_WAIT))
    drain.add_argument("--force", action="store_true",
                       help="drain even the only live host (its nodes are "
                       "then polled by nobody)")
    drain.set_defaults(func=Manage.drain,
                       check=lambda args: _check_wait_args(drain, args,
                                                           DRAIN_WAIT))

    clean = commands.add_parser(
        "clean", help="forget dead workers, release their reservations, "
        "remove start-up task logs, run the clean hooks")
    clean.set_defaults(func=Manage.clean)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    logging.basicConfig(level=logging.DEBUG if args.debug else
                        logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    masking.install()
    conf = conductor_conf.CONF
    conf_args = []
    for path in args.config_file:
        conf_args += ["--config-file", path]
    for path in args.config_dir:
        conf_args += ["--config-dir", path]
    try:
        conf(conf_args, project="conductor", prog="conductor-manage")
    except checks.CONFIG_ERRORS as exc:
        return _error(checks.config_error(exc))
    manage = Manage(conf, _print_masked)
    try:
        # NOTE: read every option now, so that a bad value is reported as
        # "[group] option: reason" rather than oslo.config's message about
        # a LocationInfo, and before a command has half run.
        checks.check_option_values(conf)
        args.func(manage, args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        # NOTE: exit 128 + SIGINT, as a shell reports a Ctrl-C, with what
        # the command leaves behind instead of a traceback.
        sys.stderr.write("\n")
        return _error(manage.on_interrupt, 130)
    except BrokenPipeError:
        # NOTE: the reader went away (``... | head``): stop quietly. Point
        # stdout at /dev/null so the interpreter's final flush cannot
        # raise again (the recipe of Python's signal documentation).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except exceptions.ConductorException as exc:
        if args.debug:
            LOG.exception("Command failed")
        return _error(str(exc), exc.exit_code)
    except (cfg.ConfigFileValueError, ValueError) as exc:
        return _error("invalid configuration: %s" % exc)
    except messaging.MessagingTimeout:
        return _error("no conductor answered over RPC within [DEFAULT] "
                      "rpc_response_timeout; is one running? (see its log)")
    except messaging.MessagingException as exc:
        if args.debug:
            LOG.exception("Messaging error")
        text = str(exc).strip().splitlines()
        return _error("messaging error: %s"
                      % (text[0] if text else type(exc).__name__))
    except (db_exc.DBError, sa.exc.SQLAlchemyError) as exc:
        if args.debug:
            LOG.exception("Database error")
        return _error("database error: %s" % db_engine.reason(exc))
    finally:
        manage.close()
    return 0


def _print_masked(*values: Any, **kwargs: Any) -> None:
    """``print``, with credentials in URLs hidden (see common.masking)."""
    print(*(masking.mask_url(str(value)) for value in values), **kwargs)


def _error(message: str, code: int = 1) -> int:
    # NOTE: an error may quote what the user typed (an address with a
    # password in it): credentials in URLs never reach the terminal.
    sys.stderr.write("conductor-manage: ERROR: %s\n"
                     % masking.mask_url(message))
    return code


if __name__ == "__main__":
    sys.exit(main())

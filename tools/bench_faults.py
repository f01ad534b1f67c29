#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Fault benchmark: do power actions survive signals, crashes and outages?

Starts a PRIVATE MariaDB (own datadir, port and socket in a temporary
directory) and a PRIVATE RabbitMQ (own node name, ports and directories),
never the machine's shared ones. Per run of a scenario: a fresh schema,
N fake nodes, a real ``conductor`` (W workers, host h1), A slow power
actions (``fake_latency_ms``) requested over RPC, the fault injected while
the actions are in flight, the conductor restarted when the fault stopped
it, then it counts, from the fake driver's call log (``fake_call_log``)
and the database:

``applied_twice``
    action nodes whose hardware got more than one change (must be 0);
``lost_without_error``
    action nodes whose change never reached the hardware and that show no
    ``last_error`` (must be 0);
``reservations_left``
    nodes still reserved 2 x heartbeat_timeout after the fault ended
    (must be 0);
``exit_codes``
    of the master after the fault and at the final stop;
``repoll_seconds``
    from the fault's end until power sync has polled every node again
    (sweeps started after the end, read from the log), or null when it
    did not within the bound;
``acted_on_by_two_hosts``
    (``db-outage-two-hosts`` only) action nodes whose BMC got changes
    from both hosts (must be 0).

Scenarios: ``ctrl-c`` (SIGINT to the process group), ``sigterm`` (to the
master, graceful_shutdown_timeout shorter than the actions),
``kill-worker`` (SIGKILL to one worker), ``kill-master`` (SIGKILL to the
master), ``db-outage`` (private MariaDB killed, restarted after 8 s),
``rabbit-outage`` (private RabbitMQ stopped, restarted after 20 s),
``db-outage-two-hosts`` (hosts h1 and h2, one worker each, h1 beating
every second, h2 just under heartbeat_timeout; long actions in flight
with a BMC that reports a change only once it settled; the private
MariaDB killed for longer than heartbeat_timeout, then restarted).

Containment scenarios (no power actions; see ``run_contained``):

``stall``
    10 % of the BMCs hang behind a driver that ignores the deadline
    (``fake_ignore_deadline``), more of them than ``max_abandoned_calls``
    allows: ``silent_stall_minutes`` is how long the worker stopped
    polling without saying so (must be 0), ``degraded_report_s`` how long
    after its pool reached the cap it logged itself degraded, and
    ``offline_s`` when its row went offline (both <= 2 x
    heartbeat_interval).
``hung-bmc``
    the time from a sweep's start until the last healthy node was read
    (``healthy_start_delay_s``, median over the sweeps after the first;
    each healthy read takes 20 ms), with all BMCs healthy and with 10 %
    hung (cooperative, each failing at the deadline): ``delay_ratio``
    must be <= 1.5.
``db-flood``
    a private MariaDB killed for 20 s under a W=2 conductor: log lines per
    second and per worker during the outage (``max_lines_per_s_per_worker``
    <= 5), traceback lines (0) and the recovery line of each worker.

Prints one JSON document: per scenario every run and a summary.

    python tools/bench_faults.py                  # the issue's figures
    python tools/bench_faults.py --quick --scenarios sigterm
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import conductor.cmd  # noqa: E402,F401  (selects the threading backend)
from oslo_config import cfg  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from conductor.common import log as conductor_log  # noqa: E402
from conductor.common import rpc  # noqa: E402
from conductor.conf import conductor as conductor_opts  # noqa: E402
from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402
from conductor import rpcapi  # noqa: E402
from conductor import states  # noqa: E402
from tests.functional import services  # noqa: E402

#: The containment scenarios (issue 17): no power actions, own nodes.
CONTAIN_SCENARIOS = ("stall", "hung-bmc", "db-flood")
SCENARIOS = ("ctrl-c", "sigterm", "kill-worker", "kill-master",
             "db-outage", "rabbit-outage", "db-outage-two-hosts"
             ) + CONTAIN_SCENARIOS
DB_NAME = "bench_faults"
HOST = "h1"
#: Start, stop and wait bounds (seconds).
START_TIMEOUT = services.START_TIMEOUT
STOP_TIMEOUT = services.STOP_TIMEOUT
#: A line for each power sync run (DEBUG, on its own logger: at INFO a
#: worker sums its runs up once per interval).
RUN_LINES = conductor_log.log_levels("conductor.power_sync.runs=DEBUG")
SWEEP_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ "
    r"(?:INFO conductor\.power_sync|DEBUG conductor\.power_sync\.runs) "
    r"\[(?P<who>[^\]]+)\] \[-\] Power sync sweep: "
    r"(?P<nodes>\d+) node\(s\) in [\d.]+s \(calls\) / (?P<total>[\d.]+)s "
    r"\(total\)")


def log(text: str) -> None:
    print("[bench_faults %s] %s" % (time.strftime("%H:%M:%S"), text),
          file=sys.stderr, flush=True)


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _wait(predicate: Any, timeout: float, what: str,
          interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0fs: %s" % (timeout, what))
        time.sleep(interval)


MariaDB = services.MariaDB


def admin(url: str, statement: str) -> Any:
    """Run one statement on the server at ``url``; its rows, if any."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return result.fetchall() if result.returns_rows else None
    finally:
        engine.dispose()


class Conductor:
    """The real ``conductor`` binary in its own session (process group)."""

    def __init__(self, config: str, log_file: str, host: str = HOST) -> None:
        self.config = config
        self.log_file = log_file
        self.host = host
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [_bin("conductor"), "--config-file", self.config],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def workers(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def wait_up(self, workers: int, since: float) -> None:
        wanted = ["All %d worker(s) of %s are up" % (workers, self.host)]

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError("conductor exited (%s) while starting; "
                                   "see %s" % (self.proc.returncode,
                                               self.log_file))
            return all(text in _log_since(self.log_file, since)
                       for text in wanted)
        _wait(up, START_TIMEOUT, "conductor workers to start")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.terminate()
        code = services.end(self.proc)
        _kill_group(pgid)
        self.proc = None
        return code


def _kill_group(pgid: int) -> int:
    """SIGKILL what is left of a process group; how many were left."""
    left = [p for p in psutil.process_iter(["pid"])
            if _pgid(p.pid) == pgid]
    for proc in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return len(left)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _log_since(path: str, since: float) -> str:
    """The log's lines written at or after ``since`` (epoch seconds)."""
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as stream:
        lines = stream.readlines()
    keep = []
    for line in lines:
        stamp = _stamp(line)
        if stamp is None or stamp >= since - 0.5:
            keep.append(line)
    return "".join(keep)


def _stamp(line: str) -> float | None:
    try:
        return datetime.datetime.strptime(
            line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    except ValueError:
        return None


def repolled_at(log_file: str, since: float, nodes: int) -> float | None:
    """When sweeps that started after ``since`` had covered every node.

    Keeps, per worker, its latest sweep started after ``since``; the
    answer is the first log time at which those add up to ``nodes``.
    """
    latest: dict[str, int] = {}
    if not os.path.exists(log_file):
        return None
    with open(log_file, errors="replace") as stream:
        for line in stream:
            match = SWEEP_RE.match(line)
            if not match:
                continue
            end = _stamp(line)
            if end is None or end - float(match["total"]) < since:
                continue
            latest[match["who"]] = int(match["nodes"])
            if sum(latest.values()) >= nodes:
                return end
    return None


def make_rpc(url: str) -> tuple[rpcapi.ConductorAPI, Any]:
    """An RPC client of the private broker, and its transport."""
    conf = cfg.ConfigOpts()
    conductor_opts.register_opts(conf)
    rpc.register_opts(conf)
    conf([], project="bench-faults")
    conf.set_override("transport_url", url)
    transport = rpc.get_transport(conf)
    return (rpcapi.ConductorAPI.from_conf(conf, transport, timeout=30),
            transport)


class Bench:

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.mariadb: services.MariaDB | None = None
        self.rabbit: services.RabbitMQ | None = None
        self._api: rpcapi.ConductorAPI | None = None
        self._transport: Any = None
        self.settings = {
            "workers": args.workers, "heartbeat_interval": args.heartbeat,
            "heartbeat_timeout": args.heartbeat_timeout,
            "graceful_shutdown_timeout": 1,
            "sync_power_state_interval": args.sync_interval,
            "power_state_timeout": args.power_state_timeout,
            "pending_action_interval": 1, "hash_ring_reset_interval": 5,
            "force_power_state_during_sync": False}

    # -- services ----------------------------------------------------------

    def start_services(self) -> None:
        if self.args.database_url:
            self.admin_url = self.args.database_url.rstrip("/") + "/"
        else:
            log("starting a private MariaDB")
            self.mariadb = services.MariaDB(self.workdir)
            self.mariadb.start()
            self.admin_url = self.mariadb.admin_url
        self.url = self.admin_url + self.args.database_name
        log("starting a private RabbitMQ")
        self.rabbit = services.RabbitMQ(self.workdir, prefix="bench")
        self.rabbit.start()
        self._api, self._transport = make_rpc(self.rabbit.url)

    def stop_services(self) -> None:
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.cleanup()
        if self.rabbit is not None:
            self.rabbit.stop()
        if self.args.database_url:
            with contextlib.suppress(Exception):
                self._admin("DROP DATABASE IF EXISTS %s"
                            % self.args.database_name)
        if self.mariadb is not None:
            self.mariadb.stop()

    def _admin(self, statement: str) -> Any:
        return admin(self.admin_url, statement)

    # -- one run -----------------------------------------------------------

    def prepare(self, rundir: str, latency_ms: int | None = None,
                settle_ms: int = 0) -> tuple[db_api.Connection, list[str],
                                             str]:
        name = self.args.database_name
        self._admin("DROP DATABASE IF EXISTS %s" % name)
        self._admin("CREATE DATABASE %s CHARACTER SET utf8mb4" % name)
        db = db_api.Connection.create(self.url)
        migration.upgrade(db.engine)
        call_log = os.path.join(rundir, "calls.jsonl")
        items = []
        for i in range(self.args.nodes):
            info: dict[str, Any] = {}
            if i < self.args.actions:
                info = {"fake_latency_ms": latency_ms or self.args.latency_ms,
                        "fake_call_log": call_log}
                if settle_ms:
                    info["fake_settle_ms"] = settle_ms
            items.append({"name": "n%05d" % i, "driver": "fake",
                          "driver_info": info})
        for start in range(0, len(items), 1000):
            db.import_nodes(items[start:start + 1000])
        action_nodes = [db.get_node("n%05d" % i).uuid
                        for i in range(self.args.actions)]
        return db, action_nodes, call_log

    def config(self, rundir: str, host: str = HOST,
               **changes: Any) -> tuple[str, str]:
        path = os.path.join(rundir, "conductor.conf")
        log_file = os.path.join(rundir, "conductor.log")
        s = dict(self.settings, **changes)
        assert self.rabbit is not None
        with open(path, "w") as stream:
            stream.write(
                "[DEFAULT]\nhost = %s\nstate_path = %s\nlog_file = %s\n"
                "enabled_drivers = fake\ntransport_url = %s\n"
                "default_log_levels = %s\n"
                "graceful_shutdown_timeout = %d\n"
                "[database]\nconnection = %s\n"
                "[conductor]\nworkers = %d\nheartbeat_interval = %d\n"
                "heartbeat_timeout = %d\nsync_power_state_interval = %d\n"
                "power_state_timeout = %s\npending_action_interval = %s\n"
                "hash_ring_reset_interval = %d\n"
                "force_power_state_during_sync = false\n"
                % (host, rundir, log_file, self.rabbit.url, RUN_LINES,
                   s["graceful_shutdown_timeout"], self.url, s["workers"],
                   s["heartbeat_interval"], s["heartbeat_timeout"],
                   s["sync_power_state_interval"], s["power_state_timeout"],
                   s["pending_action_interval"],
                   s["hash_ring_reset_interval"]))
        return path, log_file

    def request(self, db: db_api.Connection, uuids: list[str]
                ) -> tuple[dict[str, str], int]:
        """Ask for one action per node over RPC (the database if refused)."""
        targets = (states.POWER_ON, states.REBOOT, states.POWER_OFF)
        wanted = {uuid: targets[i % 3] for i, uuid in enumerate(uuids)}
        refused = 0
        assert self._api is not None
        for uuid, target in wanted.items():
            try:
                self._api.set_power_state(uuid, target, timeout=30)
            except Exception as exc:
                refused += 1
                log("RPC request for %s refused (%s); via the database"
                    % (uuid, type(exc).__name__))
                with contextlib.suppress(Exception):
                    db.request_power_state(uuid, target)
        return wanted, refused

    def run_once(self, scenario: str, index: int) -> dict[str, Any]:
        if scenario == "db-outage-two-hosts":
            return self.run_two_hosts(scenario, index)
        rundir = os.path.join(self.workdir, "%s-%d" % (scenario, index))
        os.makedirs(rundir)
        if scenario in CONTAIN_SCENARIOS:
            return self.run_contained(scenario, index, rundir)
        db, action_nodes, call_log = self.prepare(rundir)
        config, log_file = self.config(rundir)
        cond = Conductor(config, log_file)
        workers = self.settings["workers"]
        result: dict[str, Any] = {"run": index, "errors": []}
        try:
            cond.start()
            cond.wait_up(workers, cond.started_at)
            requested_at = time.time()
            wanted, refused = self.request(db, action_nodes)
            result["requests_refused"] = refused

            def in_flight() -> bool:
                with contextlib.suppress(Exception):
                    if os.path.exists(call_log):
                        return True  # some already done: inject now
                    rows = db.get_nodes_by_uuid(action_nodes)
                    return sum(1 for r in rows if r.reservation) >= max(
                        1, len(action_nodes) // 2)
                return False
            with contextlib.suppress(RuntimeError):
                _wait(in_flight, 10, "actions in flight", 0.05)
            fault_start = time.time()
            result["fault_after_request_s"] = round(
                fault_start - requested_at, 2)
            fault_end = self.inject(scenario, cond, result, workers)
            result["fault_s"] = round(fault_end - fault_start, 2)
            db.dispose()
            db = db_api.Connection.create(self.url)
            result.update(self.measure(db, cond, wanted, call_log,
                                       fault_end, log_file))
        except Exception as exc:
            result["errors"].append("%s: %s" % (type(exc).__name__, exc))
        finally:
            code = cond.stop()
            result.setdefault("exit_codes", {})["final_stop"] = code
            db.dispose()
        return result

    def run_two_hosts(self, scenario: str, index: int) -> dict[str, Any]:
        """Two hosts, long actions in flight, a DB outage past the timeout.

        Counts the action nodes whose BMC got changes from both hosts.
        """
        if self.mariadb is None:
            raise RuntimeError("db-outage-two-hosts needs the private "
                               "MariaDB (not --database-url)")
        rundir = os.path.join(self.workdir, "%s-%d" % (scenario, index))
        os.makedirs(rundir)
        latency = self.args.two_host_latency_ms
        db, action_nodes, call_log = self.prepare(
            rundir, latency_ms=latency, settle_ms=2 * latency)
        beat = self.settings["heartbeat_interval"]
        timeout = self.settings["heartbeat_timeout"]
        conds = {}
        # NOTE: h1 beats every second, h2 just under the timeout: when the
        # database is back, h1 reaches it first and finds h2's heartbeat
        # older than heartbeat_timeout.
        for host, interval in (("h1", 1), ("h2", max(beat, timeout - 1))):
            hostdir = os.path.join(rundir, host)
            os.makedirs(hostdir)
            # NOTE: every call (reads too) takes the latency: the deadline
            # must not cut the actions short.
            config, log_file = self.config(
                hostdir, host=host, workers=1, heartbeat_interval=interval,
                power_state_timeout=3 * latency / 1000.0)
            conds[host] = Conductor(config, log_file, host)
        result: dict[str, Any] = {"run": index, "errors": []}
        hosts_of: dict[int, str] = {}

        def note_pids() -> None:
            for host, cond in conds.items():
                for proc in cond.workers():
                    hosts_of[proc.pid] = host
        try:
            for cond in conds.values():
                cond.start()
            for cond in conds.values():
                cond.wait_up(1, cond.started_at)
            note_pids()
            wanted, refused = self.request(db, action_nodes)
            result["requests_refused"] = refused
            with contextlib.suppress(RuntimeError):
                _wait(lambda: len(_calls(call_log)) >= len(action_nodes),
                      30, "actions in flight", 0.2)
            note_pids()
            started = time.monotonic()
            self.mariadb.crash()
            time.sleep(max(0.0, self.args.two_host_outage -
                           (time.monotonic() - started)))
            self.mariadb.start()
            fault_end = time.time()
            result["fault_s"] = round(time.monotonic() - started, 2)
            db.dispose()
            db = db_api.Connection.create(self.url)

            def settled() -> bool:
                with contextlib.suppress(Exception):
                    note_pids()
                    rows = db.get_nodes_by_uuid(action_nodes)
                    return all(r.target_power_state is None
                               and r.reservation is None for r in rows)
                return False
            with contextlib.suppress(RuntimeError):
                _wait(settled,
                      self.args.settle_timeout + 3 * latency / 1000.0,
                      "actions to settle", 0.5)
            calls = _calls(call_log)
            both = [uuid for uuid, entries in calls.items()
                    if len({hosts_of.get(e["pid"], "pid %d" % e["pid"])
                            for e in entries}) > 1]
            rows = {r.uuid: r for r in db.get_nodes_by_uuid(action_nodes)}
            twice = [uuid for uuid in action_nodes
                     if sum(1 for c in calls.get(uuid, ())
                            if c["applied"]) > 1]
            lost = [uuid for uuid in action_nodes
                    if not calls.get(uuid) and not rows[uuid].last_error]
            result.update({
                "acted_on_by_two_hosts": len(both),
                "applied_twice": len(twice),
                "lost_without_error": len(lost),
                "still_pending": sum(1 for r in rows.values()
                                     if r.target_power_state is not None),
                "reservations_left": len(db.node_uuids(reserved=True)),
                "settle_seconds": round(time.time() - fault_end, 1),
                "examples": {"acted_on_by_two_hosts": both[:3],
                             "applied_twice": twice[:3], "lost": lost[:3]},
            })
        except Exception as exc:
            result["errors"].append("%s: %s" % (type(exc).__name__, exc))
        finally:
            codes = result.setdefault("exit_codes", {})
            for host, cond in conds.items():
                codes["final_stop_" + host] = cond.stop()
            db.dispose()
        return result

    def inject(self, scenario: str, cond: Conductor, result: dict[str, Any],
               workers: int) -> float:
        """Inject the fault; returns when it ended (epoch seconds)."""
        assert cond.proc is not None
        codes = result.setdefault("exit_codes", {})
        pgid = cond.proc.pid
        if scenario in ("ctrl-c", "sigterm", "kill-master"):
            if scenario == "ctrl-c":
                os.killpg(pgid, signal.SIGINT)
            elif scenario == "sigterm":
                cond.proc.send_signal(signal.SIGTERM)
            else:
                cond.proc.kill()
            started = time.monotonic()
            codes["master"] = services.end(cond.proc)
            result["master_exit_s"] = round(time.monotonic() - started, 2)
            # NOTE: workers left behind by the master (bounded wait, then
            # killed so the restarted conductor runs alone).
            try:
                _wait(lambda: not [p for p in psutil.process_iter()
                                   if _pgid(p.pid) == pgid],
                      float(self.settings["heartbeat_timeout"]),
                      "workers to exit")
                result["workers_left_killed"] = 0
            except RuntimeError:
                result["workers_left_killed"] = _kill_group(pgid)
            result["workers_exit_s"] = round(time.monotonic() - started, 2)
            cond.proc = None
            cond.start()
            fault_end = cond.started_at
            cond.wait_up(workers, fault_end)
            return fault_end
        if scenario == "kill-worker":
            victims = cond.workers()
            if not victims:
                raise RuntimeError("no worker to kill")
            victims[0].kill()
            codes["worker"] = -signal.SIGKILL
            fault_end = time.time()
            # NOTE: the master must fork a replacement (bounded); it says
            # so in the log (its children may include helper processes).
            started = re.compile(r"^\S+ \S+ (\d+) INFO conductor\.service "
                                 r".* Worker \d+ of %s started" % HOST,
                                 re.M)

            def respawned() -> bool:
                text = _log_since(cond.log_file, fault_end)
                return any(int(pid) != victims[0].pid
                           for pid in started.findall(text))
            try:
                _wait(respawned, 30, "worker respawn")
                result["worker_respawn_s"] = round(time.time() - fault_end,
                                                   2)
            except RuntimeError:
                result["worker_respawn_s"] = None
            return fault_end
        if scenario == "db-outage":
            if self.mariadb is None:
                raise RuntimeError("db-outage needs the private MariaDB "
                                   "(not --database-url)")
            started = time.monotonic()
            self.mariadb.crash()
            time.sleep(max(0.0, self.args.db_outage -
                           (time.monotonic() - started)))
            self.mariadb.start()
            return time.time()
        if scenario == "rabbit-outage":
            assert self.rabbit is not None
            started = time.monotonic()
            self.rabbit.stop()
            time.sleep(max(0.0, self.args.rabbit_outage -
                           (time.monotonic() - started)))
            self.rabbit.start()
            return time.time()
        raise ValueError(scenario)

    def measure(self, db: db_api.Connection, cond: Conductor,
                wanted: dict[str, str], call_log: str, fault_end: float,
                log_file: str) -> dict[str, Any]:
        hb_timeout = self.settings["heartbeat_timeout"]
        uuids = list(wanted)

        def settled() -> bool:
            with contextlib.suppress(Exception):
                rows = db.get_nodes_by_uuid(uuids)
                return all(r.target_power_state is None
                           and r.reservation is None for r in rows)
            return False
        try:
            _wait(settled, self.args.settle_timeout, "actions to settle",
                  0.5)
        except RuntimeError:
            pass
        left = fault_end + 2 * hb_timeout - time.time()
        if left > 0:
            time.sleep(left)
        reserved = db.node_uuids(reserved=True)
        deadline = fault_end + self.args.repoll_timeout
        repolled = None
        while time.time() < deadline:
            repolled = repolled_at(log_file, fault_end, self.args.nodes)
            if repolled is not None:
                break
            time.sleep(0.5)
        calls = _calls(call_log)
        rows = {r.uuid: r for r in db.get_nodes_by_uuid(uuids)}
        twice, lost, failed, pending, ok = [], [], [], [], 0
        for uuid in uuids:
            applied = [c for c in calls[uuid] if c["applied"]]
            row = rows[uuid]
            if len(applied) > 1:
                twice.append(uuid)
            if not applied:
                if row.last_error:
                    failed.append(uuid)
                else:
                    lost.append(uuid)
            elif len(applied) == 1:
                ok += 1
            if row.target_power_state is not None:
                pending.append(uuid)
        alive = cond.proc is not None and cond.proc.poll() is None
        return {
            "applied_once": ok, "applied_twice": len(twice),
            "lost_without_error": len(lost),
            "failed_with_error": len(failed),
            "still_pending": len(pending),
            "reservations_left": len(reserved),
            "repoll_seconds": (None if repolled is None
                               else round(repolled - fault_end, 1)),
            "conductor_running": alive,
            "examples": {"applied_twice": twice[:3], "lost": lost[:3],
                         "reserved": reserved[:3]},
        }

    # -- containment scenarios (issue 17) ---------------------------------

    def _contain_setup(self, rundir: str, nodes: list[dict[str, Any]],
                       settings: dict[str, Any], debug: bool = False
                       ) -> tuple[db_api.Connection, Conductor]:
        """A fresh schema with ``nodes``, and an unstarted conductor."""
        name = self.args.database_name
        self._admin("DROP DATABASE IF EXISTS %s" % name)
        self._admin("CREATE DATABASE %s CHARACTER SET utf8mb4" % name)
        db = db_api.Connection.create(self.url)
        migration.upgrade(db.engine)
        for start in range(0, len(nodes), 1000):
            db.import_nodes(nodes[start:start + 1000])
        path = os.path.join(rundir, "conductor.conf")
        log_file = os.path.join(rundir, "conductor.log")
        options = {"heartbeat_interval": 1, "heartbeat_timeout": 30,
                   "hash_ring_reset_interval": 5,
                   "pending_action_interval": 1,
                   "power_state_sync_max_retries": 1000,
                   "force_power_state_during_sync": "false"}
        options.update(settings)
        with open(path, "w") as stream:
            stream.write(
                "[DEFAULT]\nhost = %s\nstate_path = %s\nlog_file = %s\n"
                "enabled_drivers = fake\ngraceful_shutdown_timeout = 2\n"
                "default_log_levels = %s\n"
                "debug = %s\n[database]\nconnection = %s\n[conductor]\n"
                % (HOST, rundir, log_file, RUN_LINES,
                   "true" if debug else "false",
                   self.url))
            for key, value in sorted(options.items()):
                stream.write("%s = %s\n" % (key, value))
        return db, Conductor(path, log_file)

    def _contain_nodes(self, hung: int, **hung_info: Any
                       ) -> tuple[list[dict[str, Any]], set[str]]:
        count = self.args.contain_nodes
        items = []
        names = set()
        for i in range(count):
            info: dict[str, Any] = {"fake_latency_ms": 20}
            if i < hung:
                info = dict(hung_info)
                names.add("n%05d" % i)
            items.append({"name": "n%05d" % i, "driver": "fake",
                          "driver_info": info})
        return items, names

    def run_contained(self, scenario: str, index: int,
                      rundir: str) -> dict[str, Any]:
        result: dict[str, Any] = {"run": index, "errors": []}
        try:
            if scenario == "stall":
                result.update(self._stall(rundir))
            elif scenario == "hung-bmc":
                result.update(self._hung_bmc(rundir))
            else:
                result.update(self._db_flood(rundir))
        except Exception as exc:
            result["errors"].append("%s: %s" % (type(exc).__name__, exc))
        return result

    def _stall(self, rundir: str) -> dict[str, Any]:
        hung = max(1, int(self.args.contain_nodes
                          * self.args.hung_percent / 100))
        cap = max(1, hung // 2)
        heartbeat, interval, timeout = 1, 2, 2.0
        items, _ = self._contain_nodes(
            hung, fake_latency_ms=30000, fake_ignore_deadline=True)
        db, cond = self._contain_setup(rundir, items, {
            "workers": 1, "workers_pool_size": 20,
            "max_abandoned_calls": cap, "sync_power_state_workers": 8,
            "sync_power_state_interval": interval,
            "power_state_timeout": timeout,
            "heartbeat_interval": heartbeat})
        offline_at = None
        try:
            cond.start()
            cond.wait_up(1, cond.started_at)
            # NOTE: watch the worker's row; the hung calls return after
            # 30 s and the worker must come back.
            deadline = time.time() + 60
            while time.time() < deadline:
                rows = [r for r in db.list_conductors() if r.host == HOST]
                if offline_at is None and rows and not rows[0].online:
                    offline_at = time.time()
                if "is healthy again" in _log_since(cond.log_file, 0):
                    break
                time.sleep(0.2)
        finally:
            cond.stop()
            db.dispose()
        return stall_figures(cond.log_file, offline_at,
                             stall_bound=interval + timeout + 2.0,
                             heartbeat=heartbeat, hung=hung, cap=cap)

    def _hung_bmc(self, rundir: str) -> dict[str, Any]:
        hung = max(1, int(self.args.contain_nodes
                          * self.args.hung_percent / 100))
        figures: dict[str, Any] = {}
        for label, count in (("all_healthy", 0), ("hung", hung)):
            sub = os.path.join(rundir, label)
            os.makedirs(sub)
            items, hung_names = self._contain_nodes(
                count, fake_latency_ms=600000)
            db, cond = self._contain_setup(sub, items, {
                "workers": 1, "workers_pool_size": 20,
                "sync_power_state_workers": 8,
                "sync_power_state_interval": 5,
                "power_state_timeout": 2.0}, debug=True)
            uuids = {n.name: n.uuid for n in db.list_nodes()}
            hung_uuids = {uuids[name] for name in hung_names}
            try:
                cond.start()
                cond.wait_up(1, cond.started_at)
                _wait(lambda: len(sweep_delays(
                    cond.log_file, hung_uuids)) >= 4, 120, "four sweeps")
            finally:
                cond.stop()
                db.dispose()
            delays = sweep_delays(cond.log_file, hung_uuids)
            figures[label] = {
                "first_sweep_s": round(delays[0], 3),
                "later_sweeps_s": [round(d, 3) for d in delays[1:]],
                "median_s": round(statistics.median(delays[1:]), 3)}
        base_s = figures["all_healthy"]["median_s"]
        figures["hung_nodes"] = hung
        figures["delay_ratio"] = (round(figures["hung"]["median_s"]
                                        / base_s, 2) if base_s else None)
        return {"healthy_start_delay_s": figures}

    def _db_flood(self, rundir: str) -> dict[str, Any]:
        if self.mariadb is None:
            raise RuntimeError("db-flood needs the private MariaDB")
        items = [{"name": "n%05d" % i, "driver": "fake", "driver_info": {}}
                 for i in range(40)]
        workers = 2
        db, cond = self._contain_setup(rundir, items, {
            "workers": workers, "sync_power_state_interval": 1,
            "pending_action_interval": 0.2, "heartbeat_interval": 1,
            "power_state_timeout": 2.0})
        db.dispose()
        try:
            cond.start()
            cond.wait_up(workers, cond.started_at)
            time.sleep(2)       # NOTE: steady state before the fault
            down = time.time()
            self.mariadb.crash()
            time.sleep(self.args.flood_outage)
            self.mariadb.start()
            up = time.time()
            try:
                _wait(lambda: _log_since(cond.log_file, up).count(
                    "database available again after") >= workers,
                    60, "the recovery line of every worker")
            except RuntimeError:
                pass
            recovered = time.time()
        finally:
            cond.stop()
        return flood_figures(cond.log_file, down, recovered, workers)


LINE_RE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \d+ (?P<level>[A-Z]+) "
    r"(?P<logger>\S+) \[(?P<who>[^\]]+)\] ")
CALL_RE = re.compile(r"Fake BMC of node (?P<uuid>[0-9a-f-]{36}): power "
                     r"state read")
SWEEP_START = "Periodic task ConductorPeriodics.sync_power_states starting"
POLLED_RE = re.compile(r"Power sync sweep: (?P<nodes>\d+) node\(s\)")


def _lines(log_file: str) -> Iterator[tuple[float, re.Match[str], str]]:
    """(epoch, header match, line) of every stamped line of the log."""
    if not os.path.exists(log_file):
        return
    with open(log_file, errors="replace") as stream:
        for line in stream:
            match = LINE_RE.match(line)
            if match:
                stamp = _stamp(line)
                if stamp is not None:
                    yield stamp, match, line


def sweep_delays(log_file: str, hung: set[str]) -> list[float]:
    """Per finished sweep: seconds from its start to its last healthy read.

    A sweep is the span between two "sync_power_states starting" lines;
    only sweeps in which every healthy node got a call count.
    """
    sweeps: list[tuple[float, float, int]] = []
    start: float | None = None
    last = 0.0
    calls = 0
    for when, _, line in _lines(log_file):
        if SWEEP_START in line:
            if start is not None and calls:
                sweeps.append((start, last, calls))
            start, last, calls = when, when, 0
            continue
        match = CALL_RE.search(line)
        if match and start is not None and match["uuid"] not in hung:
            last, calls = when, calls + 1
    full = max((c for _, _, c in sweeps), default=0)
    return [end - begin for begin, end, c in sweeps if c == full]


def stall_figures(log_file: str, offline_at: float | None,
                  stall_bound: float, heartbeat: float, hung: int,
                  cap: int) -> dict[str, Any]:
    """What the stall scenario measures, from the worker's log."""
    cap_at = error_at = healthy_at = None
    sweeps: list[float] = []
    abandoned_lines = 0
    for when, _, line in _lines(log_file):
        if "abandoned" in line and "driver call(s) still running past" \
                in line:
            abandoned_lines += 1
        if cap_at is None and "is degraded: " in line and \
                "conductor.executor.pool" in line:
            cap_at = when
        if error_at is None and " ERROR conductor.service " in line and \
                "is degraded" in line:
            error_at = when
        if healthy_at is None and "is healthy again" in line:
            healthy_at = when
        polled = POLLED_RE.search(line)
        if polled and int(polled["nodes"]) > 0:
            sweeps.append(when)
    # NOTE: a gap between two sweeps that polled nodes, while the worker
    # did not say it was degraded, is a silent stall beyond the bound.
    silent = 0.0
    for before, after in zip(sweeps, sweeps[1:]):
        if error_at is not None and after >= error_at and (
                healthy_at is None or before <= healthy_at):
            continue
        silent = max(silent, after - before - stall_bound)
    return {"hung_nodes": hung, "max_abandoned_calls": cap,
            "abandoned_warnings": abandoned_lines,
            "silent_stall_minutes": round(silent / 60.0, 2),
            "degraded_report_s": (None if cap_at is None or error_at is None
                                  else round(error_at - cap_at, 2)),
            "offline_s": (None if cap_at is None or offline_at is None
                          else round(offline_at - cap_at, 2)),
            "recovered": healthy_at is not None,
            "within_2_heartbeats": (
                cap_at is not None and error_at is not None
                and offline_at is not None
                and max(error_at, offline_at) - cap_at <= 2 * heartbeat)}


def flood_figures(log_file: str, down: float, recovered: float,
                  workers: int) -> dict[str, Any]:
    """Log lines per second and worker from ``down`` to ``recovered``."""
    per: dict[str, collections.Counter[int]] = collections.defaultdict(
        collections.Counter)
    tracebacks = 0
    total = 0
    recovery_lines = 0
    last_when = 0.0
    last_who = "?"
    if os.path.exists(log_file):
        with open(log_file, errors="replace") as stream:
            for line in stream:
                match = LINE_RE.match(line)
                when = _stamp(line) if match else None
                if match is not None and when is not None:
                    last_when, last_who = when, match["who"]
                if not down <= last_when <= recovered:
                    continue
                # NOTE: a traceback line belongs to the record above it
                # and counts as a line of its worker.
                total += 1
                per[last_who][int(last_when - down)] += 1
                if match is None or "Traceback" in line:
                    tracebacks += 1
                elif "database available again after" in line:
                    recovery_lines += 1
    peak = max((max(c.values()) for who, c in per.items()
                if "worker" in who), default=0)
    seconds = max(1.0, recovered - down)
    return {"outage_window_s": round(seconds, 1),
            "lines": total, "lines_per_s": round(total / seconds, 2),
            "max_lines_per_s_per_worker": peak,
            "traceback_lines": tracebacks,
            "recovery_lines": recovery_lines, "workers": workers}


def summarise_contained(scenario: str, runs: list[dict[str, Any]]
                        ) -> dict[str, Any]:
    """The issue's figures of a containment scenario, over its runs."""
    good = [r for r in runs if not r["errors"]]
    summary: dict[str, Any] = {"runs": len(runs),
                               "errors": len(runs) - len(good)}
    if scenario == "stall":
        summary["silent_stall_minutes_max"] = max(
            (r["silent_stall_minutes"] for r in good), default=None)
        summary["degraded_within_2_heartbeats"] = all(
            r["within_2_heartbeats"] for r in good) and bool(good)
        summary["ok"] = (summary["silent_stall_minutes_max"] == 0
                         and summary["degraded_within_2_heartbeats"])
    elif scenario == "hung-bmc":
        ratios = [r["healthy_start_delay_s"]["delay_ratio"] for r in good]
        summary["delay_ratio_max"] = max(
            (x for x in ratios if x is not None), default=None)
        summary["ok"] = (summary["delay_ratio_max"] is not None
                         and summary["delay_ratio_max"] <= 1.5)
    else:
        summary["max_lines_per_s_per_worker"] = max(
            (r["max_lines_per_s_per_worker"] for r in good), default=None)
        summary["traceback_lines"] = sum(r["traceback_lines"] for r in good)
        summary["ok"] = (bool(good)
                         and summary["max_lines_per_s_per_worker"] <= 5
                         and summary["traceback_lines"] == 0
                         and all(r["recovery_lines"] >= r["workers"]
                                 for r in good))
    summary["ok"] = bool(summary["ok"]) and not summary["errors"]
    return summary


def _calls(path: str) -> dict[str, list[dict[str, Any]]]:
    """The fake driver's call log (``fake_call_log``), per node."""
    calls: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    if os.path.exists(path):
        with open(path) as stream:
            for line in stream:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    calls[entry["node"]].append(entry)
    return calls


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def values(key: str) -> list[Any]:
        return [r[key] for r in runs if r.get(key) is not None]
    summary: dict[str, Any] = {"runs": len(runs)}
    for key in ("applied_twice", "lost_without_error", "reservations_left",
                "failed_with_error", "still_pending",
                "acted_on_by_two_hosts"):
        summary[key + "_total"] = sum(values(key))
    repoll = values("repoll_seconds")
    summary["repoll_seconds_median"] = (statistics.median(repoll)
                                        if repoll else None)
    summary["repoll_seconds_max"] = max(repoll) if repoll else None
    summary["repoll_missing"] = sum(
        1 for r in runs if "acted_on_by_two_hosts" not in r
        and r.get("repoll_seconds") is None)
    summary["exit_codes"] = sorted(
        {json.dumps(r.get("exit_codes", {}), sort_keys=True)
         for r in runs})
    summary["errors"] = sum(len(r["errors"]) for r in runs)
    summary["ok"] = (summary["applied_twice_total"] == 0
                     and summary["acted_on_by_two_hosts_total"] == 0
                     and summary["lost_without_error_total"] == 0
                     and summary["reservations_left_total"] == 0
                     and summary["repoll_missing"] == 0
                     and summary["errors"] == 0)
    return summary


def _bad(message: str) -> None:
    """Refuse bad input: one line on stderr, exit 1."""
    print("bench_faults: error: %s" % message, file=sys.stderr)
    raise SystemExit(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=50)
    parser.add_argument("--latency-ms", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--heartbeat", type=int, default=2)
    parser.add_argument("--heartbeat-timeout", type=int, default=10)
    parser.add_argument("--sync-interval", type=int, default=5)
    parser.add_argument("--power-state-timeout", type=float, default=10.0)
    parser.add_argument("--db-outage", type=float, default=8.0)
    parser.add_argument("--rabbit-outage", type=float, default=20.0)
    parser.add_argument("--two-host-outage", type=float, default=15.0,
                        help="db-outage-two-hosts: seconds the database is "
                             "away (longer than --heartbeat-timeout)")
    parser.add_argument("--two-host-latency-ms", type=int, default=30000,
                        help="db-outage-two-hosts: each BMC call (longer "
                             "than the outage, so actions are still in "
                             "flight when the database is back)")
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--repoll-timeout", type=float, default=90.0)
    parser.add_argument("--contain-nodes", type=int, default=200,
                        help="nodes of the stall and hung-bmc scenarios")
    parser.add_argument("--hung-percent", type=float, default=10.0)
    parser.add_argument("--flood-outage", type=float, default=20.0,
                        help="seconds of the db-flood outage")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, of: %s" % ", ".join(SCENARIOS))
    parser.add_argument("--database-url",
                        help="an existing MySQL/MariaDB server (e.g. "
                             "mysql+pymysql://root@127.0.0.1:3306/) instead "
                             "of a private one; the benchmark creates and "
                             "drops --database-name there. No db-outage.")
    parser.add_argument("--database-name", default=DB_NAME)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, call logs)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 run, 20 nodes, 3 actions of "
                             "2000 ms, short outages")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.nodes, args.actions = 1, 20, 3
        args.latency_ms, args.sync_interval = 2000, 2
        args.db_outage, args.rabbit_outage = 2.0, 3.0
        args.two_host_outage = args.heartbeat_timeout + 3.0
        args.two_host_latency_ms = int(args.two_host_outage * 1000) + 8000
        args.settle_timeout, args.repoll_timeout = 30.0, 30.0
        args.contain_nodes, args.flood_outage = 40, 5.0
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown or not names:
        _bad("unknown scenario(s) %s; choose from %s"
             % (", ".join(unknown) or "(none)", ", ".join(SCENARIOS)))
    for name in ("db-outage", "db-outage-two-hosts", "db-flood"):
        if args.database_url and name in names:
            _bad("%s needs the private MariaDB; drop --database-url"
                 % name)
    if not 0 < args.hung_percent < 100:
        _bad("--hung-percent must be between 0 and 100 (exclusive)")
    if args.contain_nodes < 10:
        _bad("--contain-nodes must be >= 10")
    if not re.fullmatch(r"[A-Za-z0-9_]+", args.database_name):
        _bad("--database-name must be letters, digits and _")
    for key in ("runs", "nodes", "actions", "workers"):
        if getattr(args, key) < 1:
            _bad("--%s must be >= 1" % key)
    if args.actions > args.nodes:
        _bad("--actions must not exceed --nodes")
    args.scenario_list = names
    return args


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM ends the benchmark like Ctrl-C: through the finally."""
    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt()
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench-faults-")
    os.chmod(workdir, 0o755)
    bench = Bench(args, workdir)
    report: dict[str, Any] = {
        "settings": dict(bench.settings, nodes=args.nodes,
                         actions=args.actions, latency_ms=args.latency_ms,
                         runs=args.runs, db_outage_s=args.db_outage,
                         rabbit_outage_s=args.rabbit_outage,
                         two_host_outage_s=args.two_host_outage,
                         two_host_latency_ms=args.two_host_latency_ms,
                         database="given server" if args.database_url
                         else "private MariaDB"),
        "scenarios": {}}
    code = 0
    with _stop_on_signals():
        try:
            bench.start_services()
            for scenario in args.scenario_list:
                runs = []
                for index in range(args.runs):
                    log("%s run %d/%d" % (scenario, index + 1, args.runs))
                    runs.append(bench.run_once(scenario, index))
                    log("  %s" % json.dumps(
                        {k: v for k, v in runs[-1].items()
                         if k != "examples"}))
                report["scenarios"][scenario] = {
                    "summary": (summarise_contained(scenario, runs)
                                if scenario in CONTAIN_SCENARIOS
                                else summarise(runs)),
                    "runs": runs}
        except KeyboardInterrupt:
            report["interrupted"] = True
            code = 130
        except Exception as exc:
            report["error"] = "%s: %s" % (type(exc).__name__, exc)
            code = 1
        finally:
            bench.stop_services()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                report["workdir"] = workdir
    print(json.dumps(report, indent=2, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())

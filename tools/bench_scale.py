#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Scale-out benchmark: power sync over many hosts, measured from outside.

Starts a PRIVATE MariaDB (own datadir and port, so its global
``Innodb_rows_read`` counts only the benchmark's reads), enrols N fake
nodes (``fake_latency_ms`` = L, every call logged with its start and end
in one ``fake_timing_log``; their power state recorded as the fake BMCs
answer, so that polls find no change), and runs H real ``conductor``
masters on this machine, each a simulated host (its own ``[DEFAULT]
host``, state directory and log, W workers), for every host count asked
for. It reads
nothing inside the conductor: every figure comes from the timing log,
psutil and the database server, so it measures any version of the code.

Per host count, after a warm-up interval, over ``--intervals`` sync
intervals:

``cpu_ms_per_node_poll``
    CPU (user + system) of every conductor process, masters and workers,
    over the window, divided by the node-polls (``get_power_state`` calls)
    started in it; the report gives its ratio largest / smallest host
    count (``cpu_ratio``);
``rows_read_per_second``
    the server's ``Innodb_rows_read`` delta per second, and its ratio to
    the ideal ``nodes / interval`` (``rows_read_ratio``);
``polls_per_node``
    per interval of the window, how many nodes were polled 0, 1, 2 and 3+
    times (``"1"`` = N is the goal);
``peak_calls_per_second`` / ``mean_calls_per_second``
    the most calls started in any 1 s window against the mean
    (``peak_to_mean``; a sweep that fires all at once shows as interval /
    sweep time).

Scenario phases (``--scenarios``, on the largest host count, which must
be >= 3; each phase is one interval long and gives the same histogram):
``start`` (the first interval after all hosts started at once),
``sighup`` (SIGHUP to one host), ``join`` (one more host starts),
``sigterm`` (one host stops gracefully; seconds until its nodes are
polled by the others) and ``kill`` (SIGKILL to another host's master and
workers; ``takeover_seconds`` until its nodes are polled again, next to
``heartbeat_timeout``).

``--rounds R`` measures the host counts R times in turn (the order
reversed every other round) and takes the CPU ratio within each round;
``cpu_ratio`` is then their median, ``cpu_ratio_per_round`` and
``cpu_ms_per_node_poll_by_hosts`` the spread. This machine's figures
move by about a fifth between runs of the same code.

``--metrics`` has every host serve ``[metrics]``, so that its workers
count their node gauges (their cost shows in the same figures).

``--single-host-nodes M`` adds one more run: one host, W workers, M nodes:
RSS per worker and CPU per node-poll.

``--idle-seconds S`` adds the fixed cost of a worker: one host, W
workers, no node, CPU ms per second and worker over S seconds, three
times: as configured, without the pending-action scan, and without it
and power sync; the differences are each task's share (``--hosts none``
runs only this and ``--single-host-nodes``).

    python tools/bench_scale.py                       # the issue's sizes
    python tools/bench_scale.py --nodes 2000 --hosts 1,2 --interval 10 \\
        --intervals 2 --scenarios none
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
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
import traceback
from types import ModuleType
from typing import Any, Iterable, Mapping, Sequence

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402
from conductor import states  # noqa: E402
from tests.functional import services  # noqa: E402


def _sibling(name: str) -> ModuleType:
    """A module of tools/, loaded without putting tools/ on sys.path.

    (tools/hacking would then shadow the hacking library.)
    """
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           name + ".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: Its private MariaDB starter and process helpers.
bench_faults = _sibling("bench_faults")

SCENARIOS = ("start", "sighup", "join", "sigterm", "kill")
#: The idle runs: name, and the [conductor] options that turn tasks off.
IDLE_SPLITS: tuple[tuple[str, dict[str, int]], ...] = (
    ("as_configured", {}),
    ("without_pending_scan", {"pending_action_interval": 10 ** 6}),
    ("without_sync_or_scan", {"pending_action_interval": 10 ** 6,
                              "sync_power_state_interval": 0}))
#: Seconds an idle host runs before its window opens.
IDLE_WARMUP = 15.0
DB_NAME = "bench_scale"
#: Start and stop bounds (seconds).
START_TIMEOUT = 120.0
STOP_TIMEOUT = services.STOP_TIMEOUT
#: The histogram's buckets: polls of one node in one interval.
BUCKETS = ("0", "1", "2", "3+")


def log(text: str) -> None:
    print("[bench_scale %s] %s" % (time.strftime("%H:%M:%S"), text),
          file=sys.stderr, flush=True)


# -- the figures (pure functions, unit tested) -------------------------------

def histogram(counts: Mapping[str, int], nodes: Iterable[str]
              ) -> dict[str, int]:
    """How many of ``nodes`` were polled 0, 1, 2 and 3+ times."""
    result = dict.fromkeys(BUCKETS, 0)
    for uuid in nodes:
        count = counts.get(uuid, 0)
        result[BUCKETS[min(count, 3)]] += 1
    return result


def polls_in(entries: Sequence[Mapping[str, Any]], start: float,
             end: float) -> collections.Counter[str]:
    """Polls per node started in ``[start, end)``."""
    return collections.Counter(
        e["node"] for e in entries if start <= e["start"] < end)


def interval_histograms(entries: Sequence[Mapping[str, Any]],
                        nodes: Sequence[str], start: float, interval: float,
                        count: int) -> list[dict[str, int]]:
    """One :func:`histogram` per interval, ``count`` of them from start."""
    return [histogram(polls_in(entries, start + i * interval,
                               start + (i + 1) * interval), nodes)
            for i in range(count)]


def peak_rate(starts: Sequence[float], start: float, end: float
              ) -> dict[str, float | None]:
    """Most calls started in any 1 s window of ``[start, end)``, vs mean."""
    times = sorted(t for t in starts if start <= t < end)
    seconds = end - start
    if not times or seconds <= 0:
        return {"peak_calls_per_second": 0, "mean_calls_per_second": 0.0,
                "peak_to_mean": None}
    peak = 0
    first = 0
    for last, stamp in enumerate(times):
        while stamp - times[first] >= 1.0:
            first += 1
        peak = max(peak, last - first + 1)
    mean = len(times) / seconds
    return {"peak_calls_per_second": peak,
            "mean_calls_per_second": round(mean, 2),
            "peak_to_mean": round(peak / mean, 2)}


def cpu_used(baseline: Mapping[int, float], last: Mapping[int, float]
             ) -> float:
    """CPU seconds used since ``baseline`` by the processes in ``last``.

    ``last`` holds every process's latest CPU reading (processes that
    ended keep their last one); one absent from ``baseline`` started in
    the window and counts whole.
    """
    return sum(max(0.0, value - baseline.get(pid, 0.0))
               for pid, value in last.items())


def cpu_ms_per_second(baseline: Mapping[int, float],
                      last: Mapping[int, float], seconds: float) -> float:
    """CPU ms per second and process of ``last`` (see :func:`cpu_used`)."""
    return round(1000 * cpu_used(baseline, last) / seconds
                 / max(1, len(last)), 2)


def first_poll_after(entries: Sequence[Mapping[str, Any]], nodes: set[str],
                     since: float, exclude_pids: set[int]
                     ) -> dict[str, float]:
    """Per node of ``nodes``, its first poll at or after ``since``.

    Polls made by the processes in ``exclude_pids`` do not count.
    """
    found: dict[str, float] = {}
    for entry in entries:
        uuid = entry["node"]
        if (uuid in nodes and entry["start"] >= since
                and entry["pid"] not in exclude_pids):
            if uuid not in found or entry["start"] < found[uuid]:
                found[uuid] = entry["start"]
    return found


def takeover(entries: Sequence[Mapping[str, Any]], victim_pids: set[int],
             before: float, since: float, lookback: float,
             interval: float | None = None) -> dict[str, Any]:
    """How long the nodes a host polled went unpolled after it went away.

    ``takeover_seconds`` is when the last of them was polled again. With
    due-time polling a node is polled again when it is due, up to an
    interval after its last poll, so with ``interval`` the figure that
    tells how long the others took to take over is ``max_late_seconds``:
    how much later than due (last poll + interval) a node was polled
    again, at worst.

    :param victim_pids: the processes of the host that went away.
    :param before: nodes it polled in ``[before - lookback, before)``
        are its nodes.
    :param since: when it went away.
    """
    victims = {e["node"] for e in entries
               if e["pid"] in victim_pids
               and before - lookback <= e["start"] < before}
    last: dict[str, float] = {}
    for e in entries:
        if e["node"] in victims and e["pid"] in victim_pids \
                and e["start"] < since:
            last[e["node"]] = max(last.get(e["node"], 0.0), e["start"])
    polled = first_poll_after(entries, victims, since, victim_pids)
    waits = sorted(polled[uuid] - since for uuid in polled)
    result: dict[str, Any] = {
        "nodes": len(victims), "repolled": len(polled),
        "never_repolled": len(victims) - len(polled),
        "takeover_seconds": round(waits[-1], 1) if waits else None,
        "median_wait_seconds": (round(waits[len(waits) // 2], 1)
                                if waits else None)}
    if interval is not None:
        late = [polled[uuid] - (last[uuid] + interval)
                for uuid in polled if uuid in last]
        result["max_late_seconds"] = (round(max(0.0, max(late)), 1)
                                      if late else None)
    return result


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return round(value / reference, 2)


def read_entries(path: str, offset: int = 0
                 ) -> tuple[list[dict[str, Any]], int]:
    """The reads of a ``fake_timing_log`` from byte ``offset``; new offset.

    Only complete lines are read; only ``get_power_state`` calls are kept.
    """
    if not os.path.exists(path):
        return [], offset
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read()
    complete = data.rfind(b"\n") + 1
    entries = []
    for line in data[:complete].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("op") == "get_power_state":
            entries.append(entry)
    return entries, offset + complete


# -- the processes -----------------------------------------------------------

class Host:
    """One simulated host: a real ``conductor`` master in its own session."""

    def __init__(self, workdir: str, name: str, settings: Mapping[str, Any],
                 database_url: str,
                 extra: Mapping[str, Any] | None = None,
                 metrics_port: int | None = None) -> None:
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.config = os.path.join(self.dir, "conductor.conf")
        self.log_file = os.path.join(self.dir, "conductor.log")
        self.workers = int(settings["workers"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        #: Every pid this host ever ran (master, workers, respawns).
        self.pids: set[int] = set()
        with open(self.config, "w") as stream:
            stream.write(
                "[DEFAULT]\nhost = %s\nstate_path = %s\nlog_file = %s\n"
                "enabled_drivers = fake\ngraceful_shutdown_timeout = %d\n"
                "[database]\nconnection = %s\n[conductor]\n"
                % (name, self.dir, self.log_file,
                   settings["graceful_shutdown_timeout"], database_url))
            for key in ("workers", "heartbeat_interval", "heartbeat_timeout",
                        "sync_power_state_interval",
                        "sync_power_state_workers", "power_state_timeout",
                        "workers_pool_size"):
                stream.write("%s = %s\n" % (key, settings[key]))
            stream.write("force_power_state_during_sync = false\n")
            for key, value in (extra or {}).items():
                stream.write("%s = %s\n" % (key, value))
            if metrics_port is not None:
                stream.write("[metrics]\nport = %d\n" % metrics_port)

    def start(self) -> None:
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [bench_faults._bin("conductor"), "--config-file", self.config],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.pids.add(self.proc.pid)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The master and all its descendants, now."""
        if not self.alive:
            return []
        assert self.proc is not None
        try:
            master = psutil.Process(self.proc.pid)
            found = [master] + master.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.pids.update(p.pid for p in found)
        return found

    def worker_processes(self) -> list[psutil.Process]:
        assert self.proc is not None
        return [p for p in self.processes() if p.pid != self.proc.pid]

    def up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("conductor %s exited (%s) while starting; "
                               "see %s" % (self.name, self.proc.returncode,
                                           self.log_file))
        return ("All %d worker(s) of %s are up" % (self.workers, self.name)
                in bench_faults._log_since(self.log_file, self.started_at))

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once (a host lost)."""
        assert self.proc is not None
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        bench_faults._kill_group(self.proc.pid)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        pgid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.terminate()
        code = services.end(self.proc)
        bench_faults._kill_group(pgid)
        return code


def _is_worker(proc: psutil.Process) -> bool:
    """A worker process (its title names it, see setproctitle)."""
    with contextlib.suppress(psutil.Error):
        return "conductor: worker " in " ".join(proc.cmdline())
    return False


class CpuMeter:
    """Latest CPU reading of every process of the hosts, sampled on demand.

    Reading often (every second) keeps the CPU of a process that ends
    close to complete.
    """

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.workers: set[int] = set()
        #: When each process was last read (time.time()).
        self.seen: dict[int, float] = {}

    def sample(self, hosts: Iterable[Host]) -> None:
        for host in hosts:
            for proc in host.processes():
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    self.last[proc.pid] = times.user + times.system
                    self.seen[proc.pid] = time.time()
                    if _is_worker(proc):
                        self.workers.add(proc.pid)
                        self.rss[proc.pid] = max(
                            self.rss.get(proc.pid, 0),
                            proc.memory_info().rss)

    def snapshot(self) -> dict[int, float]:
        return dict(self.last)

    def split(self, since: float = 0.0
              ) -> tuple[dict[int, float], dict[int, float]]:
        """The latest readings of the masters and of the workers.

        :param since: only processes still running at that time (a
            worker that failed its start before a window is not one of
            its workers).
        """
        alive = {pid: value for pid, value in self.last.items()
                 if self.seen.get(pid, 0.0) >= since}
        masters = {pid: value for pid, value in alive.items()
                   if pid not in self.workers}
        workers = {pid: value for pid, value in alive.items()
                   if pid in self.workers}
        return masters, workers


class Bench:

    def __init__(self, args: argparse.Namespace, workdir: str) -> None:
        self.args = args
        self.workdir = workdir
        self.mariadb: bench_faults.MariaDB | None = None
        self.admin_url = ""
        self.url = ""
        self.timing_log = ""
        self.offset = 0
        self.entries: list[dict[str, Any]] = []
        self.nodes: list[str] = []
        self.rows_counter = ""
        self.settings = {
            "workers": args.workers,
            "heartbeat_interval": args.heartbeat_interval,
            "heartbeat_timeout": args.heartbeat_timeout,
            "sync_power_state_interval": args.interval,
            "sync_power_state_workers": args.sync_workers,
            "power_state_timeout": args.power_state_timeout,
            "workers_pool_size": args.pool_size,
            "graceful_shutdown_timeout": args.graceful_shutdown_timeout}

    # -- services ------------------------------------------------------------

    def start_services(self) -> None:
        if self.args.database_url:
            self.admin_url = self.args.database_url.rstrip("/") + "/"
        else:
            log("starting a private MariaDB")
            self.mariadb = bench_faults.MariaDB(self.workdir)
            self.mariadb.start()
            self.admin_url = self.mariadb.admin_url
        self.url = self.admin_url + self.args.database_name

    def stop_services(self) -> None:
        if self.args.database_url:
            with contextlib.suppress(Exception):
                self._admin("DROP DATABASE IF EXISTS %s"
                            % self.args.database_name)
        if self.mariadb is not None:
            self.mariadb.stop()

    def _admin(self, statement: str) -> Any:
        return bench_faults.admin(self.admin_url, statement)

    def rows_read(self) -> int:
        """The server's rows read so far (all tables, all clients).

        ``Innodb_rows_read`` where the server has it; MariaDB 10.6+
        dropped it for ``Rows_read`` (rows read by any engine).
        """
        rows = self._admin("SHOW GLOBAL STATUS WHERE Variable_name IN "
                           "('Innodb_rows_read', 'Rows_read')")
        values = {name: int(value) for name, value in rows}
        if not values:
            raise RuntimeError("the database server reports neither "
                               "Innodb_rows_read nor Rows_read")
        self.rows_counter = ("Innodb_rows_read" if "Innodb_rows_read"
                             in values else "Rows_read")
        return values[self.rows_counter]

    # -- one run -------------------------------------------------------------

    def enrol(self, rundir: str, count: int) -> None:
        name = self.args.database_name
        self._admin("DROP DATABASE IF EXISTS %s" % name)
        self._admin("CREATE DATABASE %s CHARACTER SET utf8mb4" % name)
        db = db_api.Connection.create(self.url)
        try:
            migration.upgrade(db.engine)
            self.timing_log = os.path.join(rundir, "timing.jsonl")
            self.offset, self.entries = 0, []
            info = {"fake_latency_ms": self.args.latency_ms,
                    "fake_timing_log": self.timing_log}
            items = [{"name": "n%06d" % i, "driver": "fake",
                      "driver_info": info} for i in range(count)]
            for start in range(0, len(items), 2000):
                db.import_nodes(items[start:start + 2000], read_back=False)
            self.nodes = db.node_uuids()
        finally:
            db.dispose()
        # NOTE: as the fake BMCs will answer, as if the first polls had
        # recorded it: a node's first poll otherwise records a change,
        # and the nodes whose first slot passed while the hosts started
        # (thousands at 10 hosts) are first polled in the measured
        # window, whose rows read then count their changes.
        self._admin("UPDATE %s.nodes SET power_state = '%s'"
                    % (name, states.POWER_OFF))
        with contextlib.suppress(Exception):
            self._admin("ANALYZE TABLE %s.nodes" % name)
        log("enrolled %d nodes" % len(self.nodes))

    def read_log(self) -> None:
        new, self.offset = read_entries(self.timing_log, self.offset)
        self.entries.extend(new)

    def hosts(self, rundir: str, count: int, first: int = 1) -> list[Host]:
        return [Host(rundir, "h%02d" % i, self.settings, self.url,
                     metrics_port=(services.free_port() if self.args.metrics
                                   else None))
                for i in range(first, first + count)]

    def start_hosts(self, hosts: list[Host], meter: CpuMeter) -> float:
        started = time.time()
        for host in hosts:
            host.start()
        self.wait(lambda: all(h.up() for h in hosts), START_TIMEOUT,
                  "%d host(s) to start" % len(hosts), meter, hosts)
        return started

    def wait(self, predicate: Any, timeout: float, what: str,
             meter: CpuMeter, hosts: list[Host]) -> None:
        limit = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > limit:
                raise RuntimeError("timed out after %.0fs: %s"
                                   % (timeout, what))
            meter.sample(hosts)
            time.sleep(1.0)

    def idle(self, seconds: float, meter: CpuMeter,
             hosts: list[Host]) -> None:
        """Let ``seconds`` pass, sampling CPU every second."""
        limit = time.time() + seconds
        while True:
            meter.sample(hosts)
            left = limit - time.time()
            if left <= 0:
                return
            time.sleep(min(1.0, left))

    def measure(self, hosts: list[Host], meter: CpuMeter,
                intervals: int) -> dict[str, Any]:
        """The steady-state figures over ``intervals`` intervals from now."""
        interval = float(self.args.interval)
        meter.rss = {}
        opened = time.time()
        meter.sample(hosts)
        baseline = meter.snapshot()
        rows_before = self.rows_read()
        start = time.time()
        self.idle(intervals * interval, meter, hosts)
        end = time.time()
        rows_after = self.rows_read()
        cpu = cpu_used(baseline, meter.snapshot())
        masters, workers = meter.split(since=opened)
        seconds = end - start
        # NOTE: calls started in the window may end (and be logged) a
        # little after it.
        time.sleep(min(5.0, self.args.power_state_timeout))
        self.read_log()
        starts = [e["start"] for e in self.entries]
        polls = sum(1 for t in starts if start <= t < end)
        rows_per_s = (rows_after - rows_before) / (end - start)
        ideal_rows = len(self.nodes) / interval
        result: dict[str, Any] = {
            "window_seconds": round(end - start, 1), "node_polls": polls,
            "cpu_seconds": round(cpu, 2),
            "cpu_ms_per_node_poll": (round(1000 * cpu / polls, 4)
                                     if polls else None),
            # Where the CPU goes: per process and second, by role.
            "cpu_ms_per_second_per_master": cpu_ms_per_second(
                baseline, masters, seconds),
            "cpu_ms_per_second_per_worker": cpu_ms_per_second(
                baseline, workers, seconds),
            "processes": {"masters": len(masters), "workers": len(workers)},
            "rows_read_per_second": round(rows_per_s, 1),
            "rows_read_counter": self.rows_counter,
            "rows_read_ratio": ratio(rows_per_s, ideal_rows),
            "rss_mb_per_worker": _rss_mb(meter),
            "polls_per_node": interval_histograms(
                self.entries, self.nodes, start, interval, intervals)}
        result.update(peak_rate(starts, start, end))
        return result

    def phase(self, name: str, hosts: list[Host], meter: CpuMeter,
              at: float) -> dict[str, Any]:
        """The histogram of the interval that starts at ``at``."""
        interval = float(self.args.interval)
        self.idle(at + interval - time.time(), meter, hosts)
        time.sleep(min(5.0, self.args.power_state_timeout))
        self.read_log()
        counts = polls_in(self.entries, at, at + interval)
        result = {"polls_per_node": histogram(counts, self.nodes)}
        log("phase %s: %s" % (name, result["polls_per_node"]))
        return result

    def run_hosts(self, count: int, scenarios: Sequence[str],
                  round_number: int = 1) -> dict[str, Any]:
        rundir = os.path.join(self.workdir, "hosts-%d" % count
                              + ("" if round_number == 1
                                 else "-round-%d" % round_number))
        os.makedirs(rundir)
        self.enrol(rundir, self.args.nodes)
        hosts = self.hosts(rundir, count)
        meter = CpuMeter()
        result: dict[str, Any] = {"hosts": count}
        try:
            log("%d host(s): starting" % count)
            started = self.start_hosts(hosts, meter)
            result["start_seconds"] = round(time.time() - started, 1)
            if "start" in scenarios:
                result.setdefault("phases", {})["start"] = self.phase(
                    "start", hosts, meter, started)
            else:
                self.idle(self.args.interval, meter, hosts)
            log("%d host(s): measuring %d interval(s)"
                % (count, self.args.intervals))
            result.update(self.measure(hosts, meter, self.args.intervals))
            log("%d host(s): %s" % (count, json.dumps(
                {k: v for k, v in result.items() if k != "phases"})))
            phases = [s for s in scenarios if s != "start"]
            if phases:
                result.setdefault("phases", {}).update(
                    self.scenarios(rundir, hosts, meter, phases))
        finally:
            for host in hosts:
                host.stop()
        return result

    def scenarios(self, rundir: str, hosts: list[Host], meter: CpuMeter,
                  names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # NOTE: picked before the join: the hosts that leave are two of
        # those started together, never the one that joined.
        stopping, killed = hosts[1], hosts[2]
        if "sighup" in names:
            at = time.time()
            log("phase sighup: SIGHUP to %s" % hosts[0].name)
            hosts[0].signal(signal.SIGHUP)
            out["sighup"] = self.phase("sighup", hosts, meter, at)
        if "join" in names:
            joining = self.hosts(rundir, 1, first=len(hosts) + 1)[0]
            at = time.time()
            log("phase join: %s starts" % joining.name)
            joining.start()
            hosts.append(joining)
            out["join"] = self.phase("join", hosts, meter, at)
        if "sigterm" in names:
            out["sigterm"] = self.leave(hosts, stopping, meter, "sigterm")
        if "kill" in names:
            out["kill"] = self.leave(hosts, killed, meter, "kill")
            out["kill"]["heartbeat_timeout"] = self.args.heartbeat_timeout
            seconds = out["kill"]["takeover_seconds"]
            out["kill"]["takeover_minus_heartbeat_timeout"] = (
                None if seconds is None
                else round(seconds - self.args.heartbeat_timeout, 1))
        return out

    def leave(self, hosts: list[Host], victim: Host, meter: CpuMeter,
              how: str) -> dict[str, Any]:
        interval = float(self.args.interval)
        meter.sample(hosts)
        at = time.time()
        log("phase %s: %s goes away" % (how, victim.name))
        if how == "kill":
            victim.kill()
        else:
            victim.signal(signal.SIGTERM)
            if victim.proc is not None:
                services.end(victim.proc)
        living = [h for h in hosts if h is not victim]
        # Its nodes must be polled by the others within the bound.
        bound = self.args.heartbeat_timeout + 2 * interval + 10
        result = self.phase(how, living, meter, at)
        self.idle(max(0.0, at + bound - time.time()), meter, living)
        time.sleep(min(5.0, self.args.power_state_timeout))
        self.read_log()
        result.update(takeover(self.entries, victim.pids, at, at,
                               lookback=interval, interval=interval))
        hosts.remove(victim)
        return result

    def run_single(self, count: int) -> dict[str, Any]:
        rundir = os.path.join(self.workdir, "single-%d" % count)
        os.makedirs(rundir)
        self.enrol(rundir, count)
        hosts = self.hosts(rundir, 1)
        meter = CpuMeter()
        try:
            log("single host, %d nodes: starting" % count)
            self.start_hosts(hosts, meter)
            self.idle(self.args.interval, meter, hosts)
            result = {"nodes": count}
            result.update(self.measure(hosts, meter, self.args.intervals))
        finally:
            for host in hosts:
                host.stop()
        return result

    def run_idle(self, seconds: float) -> dict[str, Any]:
        """A worker's CPU per second with no node, by what runs."""
        rundir = os.path.join(self.workdir, "idle")
        os.makedirs(rundir)
        self.enrol(rundir, 0)
        result: dict[str, Any] = {"seconds": seconds}
        for name, extra in IDLE_SPLITS:
            hosts = [Host(os.path.join(rundir, name), "h01", self.settings,
                          self.url, extra)]
            meter = CpuMeter()
            try:
                log("idle host, %s: starting" % name)
                self.start_hosts(hosts, meter)
                self.idle(IDLE_WARMUP, meter, hosts)
                _, baseline = meter.split()
                opened = time.time()
                self.idle(seconds, meter, hosts)
                _, last = meter.split(since=opened)
                result[name] = cpu_ms_per_second(
                    baseline, last, time.time() - opened)
            finally:
                for host in hosts:
                    host.stop()
        result.update(idle_shares(result))
        return result


def idle_shares(idle: Mapping[str, float]) -> dict[str, float]:
    """Each task's share of an idle worker's CPU (ms/s), by difference."""
    full = idle["as_configured"]
    no_scan = idle["without_pending_scan"]
    rest = idle["without_sync_or_scan"]
    return {"pending_scan_share": round(full - no_scan, 2),
            "sync_tick_share": round(no_scan - rest, 2),
            "everything_else": rest}


def _rss_mb(meter: CpuMeter) -> list[float]:
    return sorted(round(rss / 2 ** 20, 1) for rss in meter.rss.values())


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ratios between host counts (the smallest is the reference).

    With several rounds (``--rounds``: each run has its ``round``), the
    CPU ratio is taken within each round, and ``cpu_ratio`` is their
    median: this machine moves by a fifth between runs of the same code,
    so that a ratio of two runs far apart in time says little.
    """
    measured = [r for r in runs if r.get("cpu_ms_per_node_poll")]
    if not measured:
        return {}
    small = min(measured, key=lambda r: r["hosts"])
    large = max(measured, key=lambda r: r["hosts"])
    summary = {
        "cpu_ratio": ratio(large["cpu_ms_per_node_poll"],
                           small["cpu_ms_per_node_poll"]),
        "cpu_ratio_hosts": [large["hosts"], small["hosts"]],
        "max_rows_read_ratio": max(r["rows_read_ratio"] or 0
                                   for r in measured),
        "max_peak_to_mean": max(r["peak_to_mean"] or 0 for r in measured),
        "max_cpu_ms_per_node_poll": max(r["cpu_ms_per_node_poll"]
                                        for r in measured)}
    rounds = sorted({r["round"] for r in measured if "round" in r})
    if len(rounds) > 1:
        per_round: list[float] = []
        for number in rounds:
            mine = [r for r in measured if r.get("round") == number]
            low = [r for r in mine if r["hosts"] == small["hosts"]]
            high = [r for r in mine if r["hosts"] == large["hosts"]]
            value = ratio(high[0]["cpu_ms_per_node_poll"],
                          low[0]["cpu_ms_per_node_poll"]) \
                if low and high else None
            if value is not None:
                per_round.append(value)
        summary["cpu_ratio_per_round"] = per_round
        if per_round:
            summary["cpu_ratio"] = statistics.median(per_round)
        summary["cpu_ms_per_node_poll_by_hosts"] = {
            str(hosts): [r["cpu_ms_per_node_poll"] for r in measured
                         if r["hosts"] == hosts]
            for hosts in sorted({r["hosts"] for r in measured})}
    return summary


def round_orders(counts: Sequence[int], rounds: int) -> list[list[int]]:
    """The host counts of each round: as given, then reversed, in turn.

    A slow drift of the machine then weighs on every count alike.
    """
    return [list(counts) if number % 2 == 0 else list(reversed(counts))
            for number in range(rounds)]


# -- command line ------------------------------------------------------------

def _bad(message: str) -> None:
    """Refuse bad input: one line on stderr, exit 1."""
    print("bench_scale: error: %s" % message, file=sys.stderr)
    raise SystemExit(1)


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        _bad("%s must be comma-separated integers, got %r" % (option, text))
    if not values or any(v < 1 for v in values):
        _bad("%s must list integers >= 1, got %r" % (option, text))
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--hosts", default="1,5,10",
                        help="comma-separated host counts (default 1,5,10),"
                             " or none")
    parser.add_argument("--workers", type=int, default=2,
                        help="workers per host")
    parser.add_argument("--interval", type=int, default=60,
                        help="sync_power_state_interval (seconds)")
    parser.add_argument("--intervals", type=int, default=2,
                        help="intervals measured per host count")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure the host counts this many times, "
                             "in turn, the order reversed every other "
                             "round; the CPU ratio is the median of the "
                             "rounds' (scenarios run in the first round)")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--sync-workers", type=int, default=32,
                        help="sync_power_state_workers")
    parser.add_argument("--pool-size", type=int, default=100,
                        help="workers_pool_size")
    parser.add_argument("--heartbeat-interval", type=int, default=5)
    parser.add_argument("--heartbeat-timeout", type=int, default=30)
    parser.add_argument("--power-state-timeout", type=float, default=10.0)
    parser.add_argument("--graceful-shutdown-timeout", type=int, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, of: %s; or none. Run on the "
                             "largest host count" % ", ".join(SCENARIOS))
    parser.add_argument("--single-host-nodes", type=int, default=0,
                        help="also run one host with this many nodes "
                             "(RSS per worker, CPU per node-poll)")
    parser.add_argument("--idle-seconds", type=float, default=0.0,
                        help="also measure an idle worker's CPU for this "
                             "many seconds, by task (see the description)")
    parser.add_argument("--database-url",
                        help="an existing MySQL/MariaDB server instead of a "
                             "private one (its Innodb_rows_read then counts "
                             "every client's reads)")
    parser.add_argument("--database-name", default=DB_NAME)
    parser.add_argument("--metrics", action="store_true",
                        help="every host serves [metrics] (its workers "
                             "count their node gauges)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs, timing log)")
    args = parser.parse_args(argv)
    args.host_counts = ([] if args.hosts.strip() == "none"
                        else _int_list(args.hosts, "--hosts"))
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if names == ["none"]:
        names = []
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        _bad("unknown scenario(s) %s; choose from %s, or none"
             % (", ".join(unknown), ", ".join(SCENARIOS)))
    if names and not args.host_counts:
        _bad("--scenarios needs host counts in --hosts")
    if set(names) - {"start"} and max(args.host_counts) < 3:
        _bad("the sighup, join, sigterm and kill scenarios need a host "
             "count >= 3 in --hosts (or --scenarios start or none)")
    args.scenario_list = names
    for key in ("nodes", "workers", "interval", "intervals", "rounds",
                "sync_workers",
                "pool_size", "heartbeat_interval", "heartbeat_timeout"):
        if getattr(args, key) < 1:
            _bad("--%s must be >= 1" % key.replace("_", "-"))
    if args.idle_seconds < 0:
        _bad("--idle-seconds must be >= 0")
    if args.latency_ms < 0 or args.single_host_nodes < 0:
        _bad("--latency-ms and --single-host-nodes must be >= 0")
    if args.power_state_timeout <= 0:
        _bad("--power-state-timeout must be > 0")
    if not re.fullmatch(r"[A-Za-z0-9_]+", args.database_name):
        _bad("--database-name must be letters, digits and _")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench-scale-")
    os.chmod(workdir, 0o755)
    bench = Bench(args, workdir)
    report: dict[str, Any] = {
        "settings": dict(bench.settings, nodes=args.nodes,
                         hosts=args.host_counts, latency_ms=args.latency_ms,
                         intervals=args.intervals, rounds=args.rounds,
                         scenarios=args.scenario_list,
                         metrics=args.metrics,
                         database="given server" if args.database_url
                         else "private MariaDB"),
        "machine": {"cpus": os.cpu_count(),
                    "load_average_at_start": [round(v, 2) for v in
                                              os.getloadavg()]},
        "runs": []}
    code = 0
    largest = max(args.host_counts, default=0)
    with bench_faults._stop_on_signals():
        try:
            bench.start_services()
            for number, counts in enumerate(
                    round_orders(args.host_counts, args.rounds), 1):
                for count in counts:
                    scenarios = args.scenario_list if count == largest \
                        else []
                    if count == largest:
                        largest = -1    # scenarios once: first round
                    run = bench.run_hosts(count, scenarios, number)
                    if args.rounds > 1:
                        run["round"] = number
                    report["runs"].append(run)
            report["summary"] = summarise(report["runs"])
            if args.single_host_nodes:
                report["single_host"] = bench.run_single(
                    args.single_host_nodes)
            if args.idle_seconds:
                report["idle_worker"] = bench.run_idle(args.idle_seconds)
        except KeyboardInterrupt:
            report["interrupted"] = True
            code = 130
        except Exception as exc:
            log("failed:\n%s" % traceback.format_exc())
            report["error"] = "%s: %s" % (type(exc).__name__, exc)
            code = 1
        finally:
            bench.stop_services()
            report["machine"]["load_average_at_end"] = [
                round(v, 2) for v in os.getloadavg()]
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                report["workdir"] = workdir
    print(json.dumps(report, indent=2, sort_keys=True))
    return code


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: power sync of a real conductor over fake nodes.

Starts a real ``conductor`` (W workers, SQLite) with N fake nodes whose
BMC takes L ms per call, and reads each worker's power-sync run lines
from its log (a run polls the nodes due at that moment; each node is
polled once per interval): the run time is measured by the worker from
its first driver call's start to its last call's end. Measurement starts
once every node was polled (and its state recorded) once, and covers
``--sweeps`` times N more polls. Prints JSON: per run the nodes, latency,
threads (P), workers, median run seconds, the ideal for the largest run
(ceil(nodes / P) x L), their ratio, CPU seconds per node-poll (all
conductor processes, over the measured polls), peak concurrent driver
calls, RSS.

A second run with P = 1 (on fewer nodes, so it ends in reasonable time)
shows the serial-versus-parallel speedup as node-polls per second.

    python tools/bench_power_sync.py                  # the issue's figures
    python tools/bench_power_sync.py --nodes 2000 --serial-nodes 100
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from conductor.common import log as conductor_log  # noqa: E402
from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402

#: A line for each power sync run (DEBUG, on its own logger: at INFO a
#: worker sums its runs up once per interval).
RUN_LINES = conductor_log.log_levels("conductor.power_sync.runs=DEBUG")
SWEEP_RE = re.compile(
    r" (?P<pid>\d+) (?:INFO conductor\.power_sync|"
    r"DEBUG conductor\.power_sync\.runs) \[(?P<who>[^\]]+)\] \[-\] "
    r"Power sync sweep: (?P<nodes>\d+) node\(s\) in (?P<calls>[\d.]+)s "
    r"\(calls\) / (?P<total>[\d.]+)s \(total\), (?P<failures>\d+) "
    r"failure\(s\).* peak (?P<peak>\d+) concurrent")


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def run(nodes: int, latency_ms: int, threads: int, workers: int,
        sweeps: int, interval: float) -> dict:
    workdir = tempfile.mkdtemp(prefix="bench-sync-")
    url = "sqlite:///%s/conductor.sqlite" % workdir
    db = db_api.Connection.create(url)
    migration.upgrade(db.engine)
    batch = [{"name": "bench-%05d" % i, "driver": "fake",
              "driver_info": {"fake_latency_ms": latency_ms}}
             for i in range(nodes)]
    for start in range(0, nodes, 2000):
        db.import_nodes(batch[start:start + 2000])
    db.dispose()
    config = os.path.join(workdir, "conductor.conf")
    log_file = os.path.join(workdir, "conductor.log")
    with open(config, "w") as stream:
        stream.write(
            "[DEFAULT]\nhost = bench\nstate_path = %(dir)s\n"
            "log_file = %(log)s\nenabled_drivers = fake\n"
            "default_log_levels = %(levels)s\n"
            "[database]\nconnection = %(url)s\n"
            "[conductor]\nworkers = %(w)d\nworkers_pool_size = %(pool)d\n"
            "sync_power_state_workers = %(p)d\n"
            "sync_power_state_interval = %(interval)d\n"
            "power_state_timeout = 30\nheartbeat_interval = 5\n"
            "heartbeat_timeout = 60\n"
            % {"dir": workdir, "log": log_file, "url": url, "w": workers,
               "levels": RUN_LINES,
               "pool": threads + 8, "p": threads,
               "interval": math.ceil(interval)})
    proc = subprocess.Popen([_bin("conductor"), "--config-file", config],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        return _measure(proc, log_file, nodes, latency_ms, threads, workers,
                        sweeps)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _sweeps(log_file: str) -> list[dict]:
    if not os.path.exists(log_file):
        return []
    with open(log_file) as stream:
        return [m.groupdict() for m in SWEEP_RE.finditer(stream.read())]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _measure(proc: subprocess.Popen, log_file: str, nodes: int,
             latency_ms: int, threads: int, workers: int,
             sweeps: int) -> dict:
    master = psutil.Process(proc.pid)
    deadline = time.monotonic() + 600

    def wait_polls(count: int) -> list[dict]:
        while time.monotonic() < deadline:
            found = [s for s in _sweeps(log_file) if int(s["nodes"])]
            if sum(int(s["nodes"]) for s in found) >= count:
                return found
            if proc.poll() is not None:
                raise SystemExit("conductor exited with %s; see %s"
                                 % (proc.returncode, log_file))
            time.sleep(0.05)
        raise SystemExit("timed out waiting for %d polls; see %s"
                         % (count, log_file))

    # The first poll of each node records its state (a write per node);
    # measurement starts once every node was polled once.
    warm = len(wait_polls(nodes))
    procs = [master] + master.children()
    cpu_start = _cpu(procs)
    found = wait_polls(nodes * (sweeps + 1))
    cpu = _cpu(procs) - cpu_start
    rss = sum(p.memory_info().rss for p in procs if p.is_running())
    measured = found[warm:]
    per_worker = [int(s["nodes"]) for s in measured]
    polls = sum(per_worker)
    ideal = max(math.ceil(n / threads) for n in per_worker) * latency_ms \
        / 1000.0
    median = statistics.median(float(s["calls"]) for s in measured)
    # Each sweep against its own worker's ideal: ceil(its nodes / P) x L.
    ratios = [float(s["calls"]) / (math.ceil(int(s["nodes"]) / threads)
                                   * latency_ms / 1000.0) for s in measured]
    return {
        "nodes": nodes, "latency_ms": latency_ms, "threads": threads,
        "workers": workers, "sweeps_measured": len(measured),
        "nodes_per_worker": sorted(set(per_worker)),
        "median_sweep_seconds": round(median, 3),
        "median_sweep_total_seconds": round(statistics.median(
            float(s["total"]) for s in measured), 3),
        "ideal_seconds": round(ideal, 3),
        "sweep_over_ideal": round(median / ideal, 3),
        "sweep_over_ideal_median": round(statistics.median(ratios), 3),
        "sweep_over_ideal_max": round(max(ratios), 3),
        "cpu_ms_per_node_poll": round(cpu / polls * 1000.0, 4),
        "peak_concurrent_calls": max(int(s["peak"]) for s in measured),
        "failures": sum(int(s["failures"]) for s in measured),
        "node_polls_per_second": round(
            statistics.median(int(s["nodes"]) / float(s["calls"])
                              for s in measured) * workers, 1),
        "rss_mb": round(rss / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--serial-nodes", type=int, default=200,
                        help="nodes for the P = 1 comparison run (0: skip)")
    args = parser.parse_args()
    per_worker = math.ceil(args.nodes / args.workers)
    ideal = math.ceil(per_worker / args.threads) * args.latency_ms / 1000.0
    parallel = run(args.nodes, args.latency_ms, args.threads, args.workers,
                   args.sweeps, interval=max(2.0, ideal * 2 + 1))
    result = {"parallel": parallel}
    if args.serial_nodes:
        serial_ideal = math.ceil(args.serial_nodes / args.workers) \
            * args.latency_ms / 1000.0
        serial = run(args.serial_nodes, args.latency_ms, 1, args.workers,
                     2, interval=serial_ideal * 1.5 + 1)
        result["serial"] = serial
        result["speedup_node_polls_per_second"] = round(
            parallel["node_polls_per_second"]
            / serial["node_polls_per_second"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

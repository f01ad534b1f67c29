#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: the CPU cost of Prometheus metrics on power-sync sweeps.

One process, one SQLite database of N fake nodes (no BMC latency, so the
sweep is all conductor CPU: the query, the fan-out over the pool, the
driver calls, the writes). The worker's real PowerSync sweeps them
repeatedly, metrics off and on in turn (off, on, on, off...; multiprocess
mode, files in a temporary directory, as in a worker), so both see the
same machine load; each sweep starts after a garbage collection, outside
the measured time. Prints JSON: the process CPU seconds of a sweep
without and with metrics (median, and minimum: on a shared machine the
minimum is the figure least disturbed by other processes), the cost in
percent of each, the CPU one recorded driver call adds (measured alone,
in one thread) as a share of a sweep, and a check that the driver-call
counter counted every call of the sweeps run with metrics.

    python tools/bench_metrics.py                    # 10,000 nodes
    python tools/bench_metrics.py --nodes 2000 --sweeps 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from prometheus_client import parser  # noqa: E402

from conductor.common import metrics  # noqa: E402
from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402
from conductor.drivers import fake  # noqa: E402
from conductor.executor import pool as worker_pool  # noqa: E402
from conductor import ownership  # noqa: E402
from conductor import power_sync  # noqa: E402
from conductor import task  # noqa: E402


def _calls_counted() -> float:
    body, _ = metrics.exposition()
    total = 0.0
    for family in parser.text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (sample.name == "conductor_driver_calls_total"
                    and sample.labels.get("operation") == "get_power_state"):
                total += sample.value
    return total


class _Power:
    def get_power_state(self, node: object) -> str:
        return "power on"


class _Driver:
    power = _Power()


def _recording_us(calls: int = 200000) -> float:
    """CPU microseconds metrics add to one driver call (one thread)."""
    row = db_api.SyncRow("u", "n", "fake", {}, "power on", 0)
    driver = _Driver()

    def loop() -> float:
        started = time.process_time()
        for _ in range(calls):
            task.call_driver(driver, "get_power_state", row,  # type: ignore
                             timeout=10.0)
        return time.process_time() - started

    metrics.disable()
    off = min(loop() for _ in range(3))
    metrics.enable()
    on = min(loop() for _ in range(3))
    metrics.flush()
    return round(1e6 * (on - off) / calls, 3)


def run(nodes: int, sweeps: int, threads: int) -> dict:
    workdir = tempfile.mkdtemp(prefix="bench-metrics-")
    db = db_api.Connection.create("sqlite:///%s/conductor.sqlite" % workdir)
    migration.upgrade(db.engine)
    db.import_nodes([{"name": "bench-%05d" % i, "driver": "fake",
                      "driver_info": {}} for i in range(nodes)],
                    read_back=False)
    db.register_conductor("bench", 0, ["fake"])
    metrics.setup(os.path.join(workdir, "metrics"))
    metrics.set_worker(0, interval=60)
    pool = worker_pool.WorkerPool(threads + 2, name="bench")
    pool.start()
    rings = ownership.Rings(db, "bench", 0, heartbeat_timeout=60,
                            reset_interval=60)
    sync = power_sync.PowerSync(
        db, {"fake": fake.FakeDriver()}, rings, pool,
        power_sync.SyncSettings(workers=threads, timeout=10.0,
                                max_retries=3, force=False),
        threading.Event())
    # NOTE: the first sweep records every node's state (writes); later
    # sweeps only read. Warm up with metrics off, then measure.
    metrics.disable()
    sync.sync()
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    wall: dict[str, list[float]] = {"off": [], "on": []}
    polled_on = 0
    for i in range(2 * sweeps):
        # NOTE: off, on, on, off, ...: Python's full garbage collections
        # come back every few sweeps; a plain alternation can put them
        # all in the sweeps of one mode. Each sweep also starts after a
        # collection, outside the measured time.
        mode = "on" if i % 4 in (1, 2) else "off"
        gc.collect()
        if mode == "on":
            metrics.enable()
        else:
            metrics.disable()
        started_cpu, started = time.process_time(), time.monotonic()
        result = sync.sync()
        cpu[mode].append(time.process_time() - started_cpu)
        wall[mode].append(time.monotonic() - started)
        if mode == "on":
            polled_on += result.nodes
    metrics.enable()
    counted = _calls_counted()
    recording = _recording_us()
    pool.shutdown(wait=True, timeout=10)
    db.dispose()
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    return {"nodes": nodes, "sweeps_each": sweeps, "threads": threads,
            "cpu_s_per_sweep_without_metrics": round(off, 4),
            "cpu_s_per_sweep_with_metrics": round(on, 4),
            "metrics_cpu_cost_percent": round(100.0 * (on - off) / off, 2),
            "cpu_s_per_sweep_min_without": round(min(cpu["off"]), 4),
            "cpu_s_per_sweep_min_with": round(min(cpu["on"]), 4),
            "metrics_cpu_cost_percent_of_min": round(
                100.0 * (min(cpu["on"]) - min(cpu["off"])) / min(cpu["off"]),
                2),
            "cpu_us_per_node_poll_without": round(1e6 * off / nodes, 1),
            "cpu_us_per_node_poll_with": round(1e6 * on / nodes, 1),
            "wall_s_per_sweep_without": round(
                statistics.median(wall["off"]), 3),
            "wall_s_per_sweep_with": round(statistics.median(wall["on"]), 3),
            "recording_us_per_call": recording,
            "recording_percent_of_min_sweep": round(
                100.0 * recording * 1e-6 * nodes / min(cpu["off"]), 2),
            "calls_counted": counted, "calls_made_with_metrics": polled_on,
            "counter_exact": counted == polled_on,
            "target_percent": 5.0}


def main() -> None:
    parser_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_.add_argument("--nodes", type=int, default=10000)
    parser_.add_argument("--sweeps", type=int, default=15,
                         help="sweeps measured in each mode")
    parser_.add_argument("--threads", type=int, default=8,
                         help="sync_power_state_workers")
    args = parser_.parse_args()
    print(json.dumps(run(args.nodes, args.sweeps, args.threads), indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: a blocked periodic task must not delay the others.

Runs conductor's real periodic machinery (``conductor.periodics`` on a
``WorkerPool``) in-process: one task blocks for ``--block`` seconds on
every run, ``--tasks`` others run every ``--spacing`` seconds and record
when they start. A task's start lag is how late it started against its
schedule (previous start + spacing). Prints JSON with the lags measured
while the blocked task was running; the target is a max lag <= 50 ms
while pool threads are free.

    python tools/bench_periodic_isolation.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import conductor.cmd  # noqa: E402,F401  (threading backend, no eventlet)
from conductor.executor import pool as worker_pool  # noqa: E402
from conductor.executor import runner as runner_mod  # noqa: E402
from conductor import periodics  # noqa: E402


def build(tasks: int, spacing: float, block: float,
          blocked_started: threading.Event, stop: threading.Event
          ) -> tuple[object, dict[str, list[float]]]:
    starts: dict[str, list[float]] = {}
    namespace: dict[str, object] = {}

    @periodics.periodic(spacing=spacing, run_immediately=True)
    def blocked(self: object) -> None:
        blocked_started.set()
        stop.wait(block)
    namespace["blocked"] = blocked

    for index in range(tasks):
        name = "task_%02d" % index
        starts[name] = []

        def body(self: object, _name: str = name) -> None:
            starts[_name].append(time.monotonic())
        namespace[name] = periodics.periodic(
            spacing=spacing, run_immediately=True)(body)
    holder = type("IsolationBench", (), namespace)()
    return holder, starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.2)
    parser.add_argument("--block", type=float, default=10.0)
    parser.add_argument("--pool", type=int, default=100,
                        help="pool threads (workers_pool_size)")
    args = parser.parse_args()
    blocked_started = threading.Event()
    stop = threading.Event()
    holder, starts = build(args.tasks, args.spacing, args.block,
                           blocked_started, stop)
    pool = worker_pool.WorkerPool(args.pool, name="bench")
    pool.start()
    runner = runner_mod.PeriodicRunner(pool)
    runner.start(periodics.collect(holder))
    if not blocked_started.wait(5):
        raise SystemExit("the blocked task never started")
    window_start = time.monotonic()
    stop.wait(args.block - 0.5)  # measure while it is still blocked
    window_end = time.monotonic()
    stop.set()
    runner.stop(10)
    pool.shutdown(wait=True, timeout=10)
    lags = []
    for times in starts.values():
        for previous, current in zip(times, times[1:]):
            if window_start <= current <= window_end:
                lags.append(max(0.0, current - previous - args.spacing))
    lags.sort()
    print(json.dumps({
        "tasks": args.tasks, "spacing_s": args.spacing,
        "blocked_task_s": args.block, "pool_threads": args.pool,
        "window_s": round(window_end - window_start, 2),
        "runs_measured": len(lags),
        "start_lag_ms": {
            "p50": round(statistics.median(lags) * 1000, 2),
            "p99": round(lags[int(len(lags) * 0.99) - 1] * 1000, 2),
            "max": round(lags[-1] * 1000, 2)},
        "target_max_ms": 50,
        "ok": lags[-1] <= 0.050,
    }, indent=2))


if __name__ == "__main__":
    main()

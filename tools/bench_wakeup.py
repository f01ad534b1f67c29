#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What a thread's wake-up and a once-a-second call cost on this machine.

A worker at a 10-host share spends most of its time asleep: it wakes for
its periodic tasks, its database round trips and its driver calls, a few
dozen times a second. Its CPU per node-poll then depends on what this
machine charges a thread to wake up, and on how much slower Python runs
code that runs once in a while (its caches cold) than the same code in a
loop. This prints both, as JSON, so that figures measured on different
machines can be compared::

    python tools/bench_wakeup.py [--sleeps 40]

``lone_sleep_us``
    CPU (thread time) per ``time.sleep(0.05)`` of a single thread, the
    other threads idle: the fake driver's simulated BMC latency, or any
    wait that ends while the CPU is idle.
``concurrent_sleep_us``
    The same with ``--threads`` threads sleeping together (a run's lanes).
``loop_call_us`` / ``paced_call_us``
    CPU per call of a small pure-Python function (a JSON line, as the
    fake driver's timing log writes) called in a tight loop, and called
    once every 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time


def _sleeps(count: int, seconds: float) -> float:
    """CPU microseconds per sleep of ``seconds``, over ``count`` sleeps."""
    started = time.thread_time()
    for _ in range(count):
        time.sleep(seconds)
    return (time.thread_time() - started) / count * 1e6


def _concurrent(threads: int, count: int, seconds: float) -> float:
    costs: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        cost = _sleeps(count, seconds)
        with lock:
            costs.append(cost)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(costs) / len(costs)


def _line(i: int) -> bytes:
    return ('{"node": %s, "op": "get_power_state", "start": %r, '
            '"end": %r}\n' % (json.dumps("node-%06d" % i), time.time(),
                              time.time())).encode()


def _call_cost(count: int, pause: float) -> float:
    """CPU microseconds per ``_line`` call, ``pause`` seconds apart."""
    spent = 0.0
    for i in range(count):
        started = time.thread_time()
        _line(i)
        spent += time.thread_time() - started
        if pause:
            time.sleep(pause)
    return spent / count * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sleeps", type=int, default=40,
                        help="sleeps (and paced calls) measured")
    parser.add_argument("--threads", type=int, default=17,
                        help="threads sleeping together")
    args = parser.parse_args(argv)
    if args.sleeps < 1 or args.threads < 1:
        parser.error("--sleeps and --threads must be >= 1")
    report = {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "lone_sleep_us": round(_sleeps(args.sleeps, 0.05), 1),
        "concurrent_sleep_us": round(
            _concurrent(args.threads, args.sleeps, 0.05), 1),
        "loop_call_us": round(_call_cost(20000, 0.0), 2),
        "paced_call_us": round(_call_cost(args.sleeps, 0.05), 2),
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

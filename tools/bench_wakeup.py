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
``handoff_us``
    Process CPU per round trip to another thread and back (a queue, then
    an Event), one every 50 ms: what handing a task to a pool thread and
    hearing it finished costs, with the 50 ms sleep between them.
``periodic_run_us``
    Process CPU per run of a periodic task that does nothing, every
    50 ms, on the worker's own :class:`conductor.executor.runner.
    PeriodicRunner` and pool: the fixed cost of one run of any periodic
    task (futurist's loop waking, the pool thread, the completion).
``paced_statement_us``
    Process CPU per statement of the one a worker sends every second
    whatever happens (the change feed's probe, nothing changed, on a
    twentieth of the partitions), one every 50 ms, on the worker's own
    database layer: on ``--database-url`` (a scratch database: its
    schema is upgraded), else on a SQLite file.
``floor``
    What a worker making ``--polls-per-second`` polls costs at the very
    least, from the prices above: two periodic runs a second (power
    sync's tick and the pending-action check), one statement, and for
    each poll the cheaper of two wake-ups among many (the call's thread
    starting, its BMC wait ending) and one alone (calls made one after
    another on one thread). Nothing else of a poll is counted: planning
    it, its outcome, its stamp, the benchmark's probe. ``ms_per_poll``
    set against the scale-out benchmark's target of 0.15 ms shows how
    much room this machine leaves for all of that. The default is a
    worker's share in ``tools/bench_scale.py``'s 10-host run: 20,000
    nodes over 60 s and 20 workers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import queue
import sys
import tempfile
import threading
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import conductor.cmd  # noqa: E402,F401  (the threading backend first)
from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402
from conductor.db import models  # noqa: E402
from conductor.executor import pool as worker_pool  # noqa: E402
from conductor.executor import runner  # noqa: E402
from conductor import periodics  # noqa: E402


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


def _paced(work: Callable[[], object], count: int, pause: float) -> float:
    """Process CPU microseconds per ``work()``, each after ``pause`` s."""
    spent = 0.0
    for _ in range(count):
        time.sleep(pause)
        started = time.process_time()
        work()
        spent += time.process_time() - started
    return spent / count * 1e6


def _handoff(count: int, pause: float) -> float:
    """Process CPU microseconds per round trip through another thread."""
    inbox: queue.SimpleQueue[threading.Event | None] = queue.SimpleQueue()

    def serve() -> None:
        while (done := inbox.get()) is not None:
            done.set()

    def round_trip() -> None:
        done = threading.Event()
        inbox.put(done)
        done.wait()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        return _paced(round_trip, count, pause)
    finally:
        inbox.put(None)
        server.join()


class _Idle:
    """One periodic task that does nothing; counts its runs."""

    def __init__(self, spacing: float) -> None:
        self.spacing = spacing
        self.runs = 0
        self.counted = threading.Event()
        self.wanted = 0

    @periodics.periodic(spacing=lambda own: own.spacing)
    def nothing(self) -> None:
        self.runs += 1
        if self.runs >= self.wanted:
            self.counted.set()


def _periodic_run(count: int, spacing: float) -> float:
    """Process CPU microseconds per run of a no-op periodic task."""
    pool = worker_pool.WorkerPool(4, name="bench-wakeup")
    pool.start()
    tasks = runner.PeriodicRunner(pool)
    idle = _Idle(spacing)
    idle.wanted = 2
    tasks.start(periodics.collect(idle))
    try:
        idle.counted.wait(10 + 4 * spacing)
        first, started = idle.runs, time.process_time()
        # NOTE: the new target first: a run between the two would
        # otherwise find the old one reached and set the Event again.
        idle.wanted = first + count
        idle.counted.clear()
        if idle.runs < idle.wanted and \
                not idle.counted.wait(10 + 2 * count * spacing):
            raise RuntimeError("the periodic task stopped running")
        spent = time.process_time() - started
        return spent / (idle.runs - first) * 1e6
    finally:
        tasks.stop()
        pool.shutdown(wait=True, timeout=5)


#: A worker's share of the partitions in the 10-host run (20 workers).
SHARE = 20
#: The scale-out benchmark's target, CPU ms per node-poll.
TARGET_MS_PER_POLL = 0.15
#: Periodic runs and statements a worker makes every second whatever it
#: polls: power sync's tick (one second for intervals up to 60 s) and the
#: pending-action check (``pending_action_interval``, 1 s); the tick's
#: change feed probe (the check reads nothing while the feed shows no
#: request; it, the heartbeats, membership reads and stamps, a statement
#: every 5 to 10 s each, are left out).
FIXED_RUNS_PER_SECOND = 2.0
FIXED_STATEMENTS_PER_SECOND = 1.0


def _statements(url: str | None, count: int, pause: float) -> float:
    """Process CPU microseconds per paced change feed probe.

    Nothing changed, on a twentieth of the partitions.
    """
    with tempfile.TemporaryDirectory(prefix="bench-wakeup-") as workdir:
        # NOTE: set up as a worker's (its SQLite connections kept).
        db = db_api.Connection.create(
            url or "sqlite:///%s/conductor.sqlite" % workdir,
            sqlite_pool=True)
        try:
            migration.upgrade(db.engine)
            mine = list(range(0, models.PARTITIONS, SHARE))
            since = db.clock() + datetime.timedelta(days=1)

            def probe() -> None:
                rows, _ = db.changed_sync_rows(partitions=mine, since=since)
                if rows:
                    raise RuntimeError("the scratch database has nodes")

            # NOTE: once first: the statement is compiled and cached, and
            # the connection opened.
            probe()
            return _paced(probe, count, pause)
        finally:
            db.dispose()


def floor(report: dict[str, float], polls_per_second: float
          ) -> dict[str, float]:
    """The least a worker making ``polls_per_second`` costs (see above)."""
    per_poll = min(2.0 * report["concurrent_sleep_us"],
                   report["lone_sleep_us"])
    fixed = (FIXED_RUNS_PER_SECOND * report["periodic_run_us"]
             + FIXED_STATEMENTS_PER_SECOND * report["paced_statement_us"])
    us_per_second = fixed + polls_per_second * per_poll
    return {
        "polls_per_second": round(polls_per_second, 2),
        "fixed_ms_per_s": round(fixed / 1000.0, 3),
        "wakeups_us_per_poll": round(per_poll, 1),
        "ms_per_s": round(us_per_second / 1000.0, 3),
        "ms_per_poll": round(us_per_second / polls_per_second / 1000.0, 3),
        "target_ms_per_poll": TARGET_MS_PER_POLL,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sleeps", type=int, default=40,
                        help="sleeps (and paced calls) measured")
    parser.add_argument("--threads", type=int, default=17,
                        help="threads sleeping together")
    parser.add_argument("--polls-per-second", type=float,
                        default=20000 / 60.0 / 20,
                        help="a worker's polls a second, for the floor "
                             "(default: a 10-host share, 16.67)")
    parser.add_argument("--database-url",
                        help="a scratch database for paced_statement_us "
                             "(its schema is upgraded); default: SQLite "
                             "in a temporary directory")
    args = parser.parse_args(argv)
    if args.sleeps < 1 or args.threads < 1:
        parser.error("--sleeps and --threads must be >= 1")
    if not (args.polls_per_second > 0
            and math.isfinite(args.polls_per_second)):
        parser.error("--polls-per-second must be > 0 and finite")
    report = {
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "lone_sleep_us": round(_sleeps(args.sleeps, 0.05), 1),
        "concurrent_sleep_us": round(
            _concurrent(args.threads, args.sleeps, 0.05), 1),
        "loop_call_us": round(_call_cost(20000, 0.0), 2),
        "paced_call_us": round(_call_cost(args.sleeps, 0.05), 2),
        "handoff_us": round(_handoff(args.sleeps, 0.05), 1),
        "periodic_run_us": round(_periodic_run(args.sleeps, 0.05), 1),
        "paced_statement_us": round(
            _statements(args.database_url, args.sleeps, 0.05), 1),
        "database": (args.database_url or "sqlite").split(":", 1)[0],
    }
    report["floor"] = floor(report, args.polls_per_second)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

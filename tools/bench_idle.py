#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Idle footprint: RSS and CPU of the master and its workers at rest.

Starts a real ``conductor`` on the shipped quick-start configuration
(SQLite, fake driver, the 20-node sample fleet; default intervals, so a
power-sync sweep every 60 s), lets it settle, then samples every
process's RSS and CPU time over ``--seconds``. Prints JSON.

    python tools/bench_idle.py --workers 2 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=10.0)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-idle-")
    config = os.path.join(workdir, "conductor.conf")
    with open(config, "w") as stream:
        stream.write(
            "[DEFAULT]\nstate_path = %s\nlog_file = %s/conductor.log\n"
            "inventory_file = %s/etc/conductor/sample-fleet.yaml\n"
            "[conductor]\nworkers = %d\n"
            % (workdir, workdir, ROOT, args.workers))
    binary = os.path.join(os.path.dirname(sys.executable), "conductor")
    proc = subprocess.Popen([binary, "--config-file", config],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        master = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while len(master.children()) < args.workers:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("workers did not start; see %s" % workdir)
            time.sleep(0.1)
        time.sleep(args.settle)
        procs = [master] + master.children()
        before = [p.cpu_times() for p in procs]
        time.sleep(args.seconds)
        after = [p.cpu_times() for p in procs]
        cpu = [(a.user + a.system) - (b.user + b.system)
               for a, b in zip(after, before)]
        rss = [p.memory_info().rss for p in procs]
        # NOTE: workers share the master's pages after the fork; PSS
        # charges each shared page to its sharers, so it adds up honestly.
        pss = [p.memory_full_info().pss for p in procs]
        threads = [p.num_threads() for p in procs]
        print(json.dumps({
            "workers": args.workers, "window_s": args.seconds,
            "rss_mb": {"master": round(rss[0] / 1e6, 1),
                       "workers": [round(r / 1e6, 1) for r in rss[1:]],
                       "total": round(sum(rss) / 1e6, 1)},
            "pss_mb": {"master": round(pss[0] / 1e6, 1),
                       "workers": [round(r / 1e6, 1) for r in pss[1:]],
                       "total": round(sum(pss) / 1e6, 1)},
            "threads": {"master": threads[0], "workers": threads[1:]},
            "cpu_percent_of_one_core": {
                "master": round(cpu[0] / args.seconds * 100, 2),
                "workers": [round(c / args.seconds * 100, 2)
                            for c in cpu[1:]],
                "total": round(sum(cpu) / args.seconds * 100, 2)},
        }, indent=2))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    main()

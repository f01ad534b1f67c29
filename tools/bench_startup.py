#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Benchmark: master start-up with parallel_startup True versus False.

A realistic start-up: MariaDB, RabbitMQ configured, the fake, ipmi and
redfish drivers, an inventory file of ``--nodes`` nodes across the three
drivers, and an operator pre-start hook that checks the BMC tools. Each
run measures two cases: the first start on an empty database (schema
created, every node enrolled) and a restart on that database (schema
checked, nothing new to enrol), the common case in production.

Two times per start: the start-up phase that parallel_startup governs, as
the master's own summary line reports it, and the wall time from launching
``conductor`` to the master's "starting N worker(s)" line (interpreter
start and imports included). Runs alternate between the two modes; prints
JSON with each time, the medians and the speedups. The conductor package
is byte-compiled first, as an installed one is.

On Linux it also prints the CPU time the whole machine spent during each
start-up phase (every process: the conductor's, the database server's,
the broker's), from /proc/stat, and the mean number of cores that kept
busy. A serial start-up that keeps one core busy for its whole phase and
a parallel one that keeps every core busy show where the speedup is
bounded by the machine, not by the order of the steps.

    python tools/bench_startup.py                 # MariaDB on 127.0.0.1
    python tools/bench_startup.py --db postgresql
"""

from __future__ import annotations

import argparse
import bisect
import compileall
import datetime
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import sqlalchemy as sa
import yaml

ADMIN = {"mysql": "mysql+pymysql://root@127.0.0.1:3306/",
         "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/"
                       "postgres"}
HOOK = """#!/bin/sh
# Pre-start check an operator would run: are the BMC tools usable?
set -e
[ "$1 $2" = "start pre-start" ] || exit 0
command -v ipmitool >/dev/null && ipmitool -V
openssl version
"""


#: Pause after dropping a run's database, before the next run.
SETTLE_SECONDS = 1.0

PHASE_RE = re.compile(r"^(\S+ \S+) .*Start-up async tasks: .*?, "
                      r"([\d.]+)s elapsed", re.M)


TRANSPORT_URL = os.environ.get("CONDUCTOR_BENCH_TRANSPORT_URL",
                               "rabbit://guest:guest@127.0.0.1:5672/")


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def ensure_bytecode() -> str:
    """Compile the conductor package the runs will import, as pip does.

    An installed package has its bytecode (pip and distribution packages
    compile it; Python writes it on first import otherwise). A checkout
    run with PYTHONDONTWRITEBYTECODE set has none, and every process,
    each start-up child included, would compile the modules it imports
    from source, which no operator's start-up does.

    :returns: the package's directory.
    """
    spec = importlib.util.find_spec("conductor")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the conductor package cannot be found")
    path = spec.submodule_search_locations[0]
    if not compileall.compile_dir(path, quiet=1):
        raise SystemExit("cannot compile %s" % path)
    return path


class CpuSampler:
    """Samples the machine's busy CPU time (``/proc/stat``) every 2 ms."""

    def __init__(self) -> None:
        self.available = os.path.exists("/proc/stat")
        self._tick = 1.0 / os.sysconf("SC_CLK_TCK") if self.available \
            else 0.0
        self._times: list[float] = []
        self._busy: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        if self.available:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _sample(self) -> None:
        while not self._stop.is_set():
            with open("/proc/stat") as stream:
                ticks = [int(v) for v in stream.readline().split()[1:]]
            # Everything but idle and iowait.
            self._times.append(time.time())
            self._busy.append(sum(ticks) - ticks[3] - ticks[4])
            time.sleep(0.002)

    def busy_seconds(self, start: float, end: float) -> float | None:
        """CPU seconds the machine spent between two ``time.time()``s."""
        if not self.available:
            return None
        first = bisect.bisect_left(self._times, start)
        last = bisect.bisect_right(self._times, end) - 1
        if first >= last:
            return None
        return (self._busy[last] - self._busy[first]) * self._tick


def inventory(path: str, nodes: int) -> None:
    entries = []
    for i in range(nodes):
        kind = i % 3
        if kind == 0:
            entries.append({"name": "fake-%05d" % i, "driver": "fake",
                            "driver_info": {"fake_latency_ms": 5}})
        elif kind == 1:
            entries.append({"name": "ipmi-%05d" % i, "driver": "ipmi",
                            "driver_info": {
                                "ipmi_address": "10.0.%d.%d" % divmod(i, 250),
                                "ipmi_username": "admin",
                                "ipmi_password": "secret"}})
        else:
            entries.append({"name": "rf-%05d" % i, "driver": "redfish",
                            "driver_info": {
                                "redfish_address": "https://10.1.%d.%d"
                                                   % divmod(i, 250),
                                "redfish_system_id":
                                    "/redfish/v1/Systems/1",
                                "redfish_username": "admin",
                                "redfish_password": "secret"}})
    with open(path, "w") as stream:
        yaml.safe_dump(entries, stream)


def start_once(config: str, log: str, cpu: CpuSampler
               ) -> tuple[float, float, float | None]:
    """Launch conductor; time it to 'starting 1 worker(s)', then stop it.

    :returns: (start-up phase seconds from the master's summary line,
        seconds from launch to the end of start-up, CPU seconds the
        machine spent during the phase or None).
    """
    if os.path.exists(log):
        os.unlink(log)
    started = time.monotonic()
    proc = subprocess.Popen([_bin("conductor"), "--config-file", config],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while True:
            if os.path.exists(log):
                with open(log) as stream:
                    text = stream.read()
                if "starting 1 worker(s)" in text:
                    elapsed = time.monotonic() - started
                    break
            if proc.poll() is not None:
                raise SystemExit("conductor exited %s; see %s"
                                 % (proc.returncode, log))
            if time.monotonic() - started > 120:
                raise SystemExit("start-up took over 120 s; see %s" % log)
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    match = PHASE_RE.search(text)
    if match is None:
        raise SystemExit("no start-up summary in %s" % log)
    phase = float(match.group(2))
    # NOTE: the summary line is logged when the phase ends, in local time
    # with milliseconds, as the samples are taken (time.time()).
    end = datetime.datetime.strptime(
        match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return phase, elapsed, cpu.busy_seconds(end - phase, end)


def one_run(workdir: str, backend: str, parallel: bool, run: int,
            cpu: CpuSampler) -> dict[str, tuple[float, float, float | None]]:
    """A first start on an empty database, then a restart on it."""
    name = "bench_startup_%d_%d" % (os.getpid(), run)
    admin = sa.create_engine(ADMIN[backend], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("CREATE DATABASE %s" % name))
    url = sa.engine.make_url(ADMIN[backend]).set(database=name)
    state = os.path.join(workdir, "state-%d" % run)
    config = os.path.join(workdir, "run-%d.conf" % run)
    log = os.path.join(workdir, "run-%d.log" % run)
    with open(config, "w") as stream:
        stream.write(
            "[DEFAULT]\nhost = bench\nstate_path = %s\nlog_file = %s\n"
            "enabled_drivers = fake,ipmi,redfish\ninventory_file = %s\n"
            "parallel_startup = %s\ntransport_url = %s\n"
            "[database]\nconnection = %s\n"
            "[hooks]\nhooks_dir = %s\n[conductor]\nworkers = 1\n"
            "sync_power_state_interval = 0\n"
            % (state, log, os.path.join(workdir, "fleet.yaml"),
               parallel, TRANSPORT_URL,
               url.render_as_string(hide_password=False),
               os.path.join(workdir, "hooks")))
    try:
        first = start_once(config, log, cpu)
        restart = start_once(config, log, cpu)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE %s" % name))
        admin.dispose()
        # NOTE: the server keeps working on the dropped database (purge,
        # flushing) for a moment; let it settle so that it does not run
        # into the next start, whichever mode that is.
        time.sleep(SETTLE_SECONDS)
    return {"first_start": first, "restart": restart}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=sorted(ADMIN), default="mysql")
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    package = ensure_bytecode()
    workdir = tempfile.mkdtemp(prefix="bench-startup-")
    inventory(os.path.join(workdir, "fleet.yaml"), args.nodes)
    os.makedirs(os.path.join(workdir, "hooks"))
    hook = os.path.join(workdir, "hooks", "20-check-bmc-tools")
    with open(hook, "w") as stream:
        stream.write(HOOK)
    os.chmod(hook, 0o755)
    results: dict[str, dict[str, dict[str, list[float]]]] = {
        case: {kind: {"parallel": [], "serial": []}
               for kind in ("phase", "total", "cpu", "cores")}
        for case in ("first_start", "restart")}
    cpu = CpuSampler()
    cpu.start()
    run = 0
    for _ in range(args.runs):
        for mode in ("parallel", "serial"):
            run += 1
            for case, (phase, total, busy) in one_run(
                    workdir, args.db, mode == "parallel", run, cpu).items():
                results[case]["phase"][mode].append(round(phase, 3))
                results[case]["total"][mode].append(round(total, 3))
                if busy is not None and phase > 0:
                    results[case]["cpu"][mode].append(round(busy, 3))
                    results[case]["cores"][mode].append(
                        round(busy / phase, 2))
    cpu.stop()
    report: dict[str, object] = {
        "database": args.db, "inventory_nodes": args.nodes,
        "drivers": ["fake", "ipmi", "redfish"], "package": package,
        "transport_url": TRANSPORT_URL.split("@")[-1],
        "cpus": len(os.sched_getaffinity(0)),
        "target": ">= 1.5 on the start-up phase"}
    for case, values in results.items():
        med = {kind: {mode: (round(statistics.median(values[kind][mode]), 3)
                             if values[kind][mode] else None)
                      for mode in ("parallel", "serial")}
               for kind in values}
        report[case] = {
            "startup_phase_s": values["phase"], "total_s": values["total"],
            "median_startup_phase_s": med["phase"],
            "median_total_s": med["total"],
            "speedup_startup_phase": round(
                med["phase"]["serial"] / med["phase"]["parallel"], 2),
            "speedup_total": round(
                med["total"]["serial"] / med["total"]["parallel"], 2),
            # The machine's CPU seconds during the phase (all processes)
            # and the mean number of cores busy: None without /proc/stat.
            "median_phase_cpu_s": med["cpu"],
            "median_cores_busy": med["cores"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

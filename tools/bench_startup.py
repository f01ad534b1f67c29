#!/usr/bin/env python3
"""Benchmark: master start-up with parallel_startup True versus False.

A realistic start-up: a fresh MariaDB database (schema created by the
master), the fake, ipmi and redfish drivers, an inventory file of
``--nodes`` nodes across the three drivers, and an operator pre-start hook
that checks the BMC tools. The time measured is from launching
``conductor`` to the master's "starting N worker(s)" line (start-up done,
about to fork). Runs alternate between the two modes; prints JSON with
each run's time, the medians and the speedup.

    python tools/bench_startup.py                 # MariaDB on 127.0.0.1
    python tools/bench_startup.py --db postgresql
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
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
python3 -c 'import ssl; print(ssl.OPENSSL_VERSION)'
"""


PHASE_RE = re.compile(r"Start-up async tasks: .*?, ([\d.]+)s elapsed")


TRANSPORT_URL = os.environ.get("CONDUCTOR_BENCH_TRANSPORT_URL",
                               "rabbit://guest:guest@127.0.0.1:5672/")


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


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


def one_run(workdir: str, backend: str, parallel: bool, run: int) -> float:
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
    started = time.monotonic()
    phase = None
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
                    match = PHASE_RE.search(text)
                    phase = float(match.group(1)) if match else None
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
        with admin.connect() as conn:
            conn.execute(sa.text("DROP DATABASE %s" % name))
        admin.dispose()
    if phase is None:
        raise SystemExit("no start-up summary in %s" % log)
    return phase, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=sorted(ADMIN), default="mysql")
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-startup-")
    inventory(os.path.join(workdir, "fleet.yaml"), args.nodes)
    os.makedirs(os.path.join(workdir, "hooks"))
    hook = os.path.join(workdir, "hooks", "20-check-bmc-tools")
    with open(hook, "w") as stream:
        stream.write(HOOK)
    os.chmod(hook, 0o755)
    phases: dict[str, list[float]] = {"parallel": [], "serial": []}
    totals: dict[str, list[float]] = {"parallel": [], "serial": []}
    run = 0
    for _ in range(args.runs):
        for mode in ("parallel", "serial"):
            run += 1
            phase, total = one_run(workdir, args.db, mode == "parallel", run)
            phases[mode].append(round(phase, 3))
            totals[mode].append(round(total, 3))
    med = {kind: {mode: statistics.median(values[mode])
                  for mode in values}
           for kind, values in (("phase", phases), ("total", totals))}
    print(json.dumps({
        "database": args.db, "inventory_nodes": args.nodes,
        "drivers": ["fake", "ipmi", "redfish"],
        "transport_url": TRANSPORT_URL.split("@")[-1],
        "startup_phase_s": phases, "total_s": totals,
        "median_startup_phase_s": med["phase"],
        "median_total_s": med["total"],
        "speedup_startup_phase": round(
            med["phase"]["serial"] / med["phase"]["parallel"], 2),
        "speedup_total": round(
            med["total"]["serial"] / med["total"]["parallel"], 2),
        "target": ">= 1.5 on the start-up phase",
    }, indent=2))


if __name__ == "__main__":
    main()

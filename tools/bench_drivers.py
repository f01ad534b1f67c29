# SPDX-License-Identifier: Apache-2.0
"""Power-sync cost of the real ipmi and redfish drivers.

**IPMI fleet** (``ipmi_fleet``): ``--ipmi-fleet`` ipmi_sim BMCs, each on
its own loopback address 127.B.x.y:623, enrolled as ipmi nodes and polled
by a real conductor (``--workers`` processes, SQLite), once per read path
in the same run, one after the other on the same BMCs:

* ``ipmipower``: batch reads through FreeIPMI (the default path);
* ``ipmitool_short_registry``: one ipmitool per node, with the driver's
  one-entry enterprise-numbers registry;
* ``ipmitool_stock``: one ipmitool per node, reading the system registry.

``--stop-percent`` of the simulators are stopped on purpose. Each node is
polled once per interval, when it is due; the interval after the first
one is measured. For each path it reports the CPU per node-poll of all
conductor processes and of the programs they ran (their reaped
children): ``cpu_ms_per_node_poll`` counts each worker's CPU during its
own power-sync runs (sampled every 50 ms, from a run's start to its end
as logged), ``..._interval`` all the conductor's CPU over the whole
interval (idle work such as heartbeats and the checks for pending
actions included); the longest run's call time over the BMC-bound ideal
(the time a stopped BMC takes to be declared silent:
``--dead-bmc-seconds``, the configured session timeout of either
program); the nodes read in the interval (every node once: their sum is
the fleet) and the failures (the stopped BMCs).

**Redfish** (``redfish``): ``--redfish-nodes`` sushy-tools fake systems
read the way power sync does: one ``get_power_state`` per node under the
``power_state_timeout`` deadline, through a pool of ``--threads``
threads, and once more with one thread (the serial baseline); its
``cpu_ms_per_node_self`` is the client CPU per read. ``dead_address``
times how long a read of an address that drops connections holds a
thread, with and without ``[redfish] connect_timeout``.

``--ipmi-nodes`` (default 0: skipped) runs the same per-driver measure on
ipmi_sim BMCs. Prints one JSON document::

    python tools/bench_drivers.py > bench.json
    python tools/bench_drivers.py --ipmi-fleet 300   # a smaller fleet

Times are wall-clock seconds of a whole sweep (best of ``--repeat``; the
first, cold sweep is reported apart: it opens the Redfish client). CPU is
this process's user+system time, ipmitool's (``RUSAGE_CHILDREN``, as each
one is reaped) and the emulators' (psutil), over the measured sweeps. A
serial sweep longer than ``--serial-budget`` seconds stops early and is
extrapolated from the nodes it did read, which the JSON says.
"""

from __future__ import annotations

import argparse
from concurrent import futures
import datetime
import json
import logging
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import conductor.cmd  # noqa: E402,F401  (threading backend first)
from conductor.common import deadline  # noqa: E402
from conductor.common import log as conductor_log  # noqa: E402
from conductor import conf  # noqa: E402
from conductor.db import api as db_api  # noqa: E402
from conductor.db import migration  # noqa: E402
from conductor.drivers import base  # noqa: E402
from conductor.drivers import ipmi  # noqa: E402
from conductor.drivers import redfish  # noqa: E402
from conductor import states  # noqa: E402
from tests.functional import bmc  # noqa: E402

import psutil  # noqa: E402


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime,
            children.ru_utime + children.ru_stime)


def _peer_cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _read(power: base.PowerInterface, node: base.DriverNode,
          timeout: float) -> str:
    try:
        with deadline.scope(timeout):
            return power.get_power_state(node)
    except Exception as exc:
        return "failed: %s" % exc


def _sweep(pool: futures.ThreadPoolExecutor, power: base.PowerInterface,
           nodes: Sequence[base.DriverNode], timeout: float
           ) -> tuple[float, list[str]]:
    started = time.monotonic()
    found = list(pool.map(lambda node: _read(power, node, timeout), nodes))
    return time.monotonic() - started, found


def measure(power: base.PowerInterface, nodes: Sequence[base.DriverNode],
            threads: int, repeat: int, serial_budget: float,
            peer_pids: Callable[[], Sequence[int]]) -> dict[str, Any]:
    """Sweep ``nodes`` with ``threads`` threads, then serially."""
    timeout = float(conf.CONF.conductor.power_state_timeout)
    result: dict[str, Any] = {"nodes": len(nodes)}
    with futures.ThreadPoolExecutor(threads) as pool:
        cold, found = _sweep(pool, power, nodes, timeout)
        result["cold_sweep_seconds"] = round(cold, 3)
        own0, children0 = _cpu()
        peer0 = _peer_cpu(peer_pids())
        times = []
        for _ in range(repeat):
            elapsed, found = _sweep(pool, power, nodes, timeout)
            times.append(elapsed)
        own1, children1 = _cpu()
        peer1 = _peer_cpu(peer_pids())
    polls = len(nodes) * repeat
    failures = [state for state in found
                if state not in states.STABLE_POWER_STATES]
    result["parallel"] = {
        "threads": threads,
        "sweeps": repeat,
        "seconds": round(min(times), 3),
        "all_seconds": [round(t, 3) for t in times],
        "nodes_per_second": round(len(nodes) / min(times), 1),
        "cpu_seconds_self": round(own1 - own0, 3),
        "cpu_seconds_ipmitool_children": round(children1 - children0, 3),
        "cpu_seconds_emulators": round(peer1 - peer0, 3),
        "cpu_ms_per_node_self": round((own1 - own0) * 1000 / polls, 2),
        "cpu_ms_per_node_self_and_children": round(
            (own1 - own0 + children1 - children0) * 1000 / polls, 2),
        "failed_reads": len(failures),
        "first_failure": failures[0] if failures else None,
    }
    own0, children0 = _cpu()
    started = time.monotonic()
    done = 0
    for node in nodes:
        _read(power, node, timeout)
        done += 1
        if time.monotonic() - started > serial_budget:
            break
    elapsed = time.monotonic() - started
    own1, children1 = _cpu()
    serial = elapsed * len(nodes) / done
    result["serial"] = {
        "threads": 1,
        "seconds": round(serial, 3),
        "measured_nodes": done,
        "measured_seconds": round(elapsed, 3),
        "extrapolated": done < len(nodes),
        "cpu_ms_per_node_self_and_children": round(
            (own1 - own0 + children1 - children0) * 1000 / done, 2),
    }
    result["speedup"] = round(serial / min(times), 1)
    return result


def bench_ipmi(count: int, threads: int, repeat: int,
               serial_budget: float) -> dict[str, Any]:
    with bmc.IPMISims(count, power=["on", "off"] * (count // 2)
                      + ["on"] * (count % 2)) as sims:
        nodes = [bmc.driver_node(sims.driver_info(i), driver="ipmi")
                 for i in range(count)]
        return measure(ipmi.IPMIDriver().power, nodes, threads, repeat,
                       serial_budget, sims.pids)


def bench_redfish(count: int, threads: int, repeat: int,
                  serial_budget: float) -> dict[str, Any]:
    with bmc.RedfishEmulator(count) as emulator:
        nodes = [bmc.driver_node(emulator.driver_info(i), driver="redfish")
                 for i in range(count)]
        result = measure(redfish.RedfishDriver().power, nodes, threads,
                         repeat, serial_budget, emulator.pids)
    result["peer"] = ("sushy-tools emulator, fake driver, Flask development "
                      "server (one process, threaded)")
    return result


#: A line for each power sync run (DEBUG, on its own logger: at INFO a
#: worker sums its runs up once per interval).
RUN_LINES = conductor_log.log_levels("conductor.power_sync.runs=DEBUG")
SWEEP_RE = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) "
    r"(?P<pid>\d+) (?:INFO conductor\.power_sync|"
    r"DEBUG conductor\.power_sync\.runs) \[(?P<who>[^\]]+)\] \[-\] "
    r"Power sync sweep: (?P<nodes>\d+) node\(s\) in (?P<calls>[\d.]+)s "
    r"\(calls\) / (?P<total>[\d.]+)s \(total\), (?P<failures>\d+) "
    r"failure\(s\)")

#: The read paths of the IPMI fleet run: [ipmi] options of each.
IPMI_PATHS = {
    "ipmipower": {"power_status_tool": "ipmipower"},
    "ipmitool_short_registry": {"power_status_tool": "ipmitool",
                                "ipmitool_short_registry": "true"},
    "ipmitool_stock": {"power_status_tool": "ipmitool",
                       "ipmitool_short_registry": "false"},
}


def _tree_cpu(procs: Sequence[psutil.Process]) -> float:
    """CPU seconds of ``procs`` and of their reaped children."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += (times.user + times.system + times.children_user
                  + times.children_system)
    return total


class _CPUSampler(threading.Thread):
    """Samples the CPU (own + reaped children) of processes every 50 ms.

    ``cpu_between(pid, start, end)`` interpolates nothing: it takes the
    last sample at or before ``start`` and the first at or after ``end``,
    so a window is never under-counted.
    """

    def __init__(self, procs: Sequence[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self._procs = list(procs)
        self.samples: dict[int, list[tuple[float, float]]] = {
            proc.pid: [] for proc in self._procs}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for proc in self._procs:
                self.samples[proc.pid].append((time.time(),
                                               _tree_cpu([proc])))
            self.stop.wait(0.05)

    def cpu_between(self, pid: int, start: float, end: float) -> float:
        samples = self.samples.get(pid, [])
        before = [cpu for stamp, cpu in samples if stamp <= start]
        after = [cpu for stamp, cpu in samples if stamp >= end]
        if not before or not after:
            raise SystemExit("no CPU sample around a sweep of pid %d" % pid)
        return after[0] - before[-1]


def _sweep_window(sweep: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of a logged sweep, as time.time() values."""
    end = datetime.datetime.strptime(
        sweep["stamp"], "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return end - float(sweep["total"]), end


def _fleet_sweeps(log_file: str) -> list[dict[str, Any]]:
    try:
        with open(log_file) as stream:
            return [m.groupdict() for m in SWEEP_RE.finditer(stream.read())]
    except FileNotFoundError:
        return []


def _fleet_path(name: str, sims: bmc.IPMISims, workers: int, threads: int,
                batch_size: int, interval: int, dead_seconds: float,
                stopped: set[int]) -> dict[str, Any]:
    """One conductor over the whole fleet with one read path."""
    workdir = tempfile.mkdtemp(prefix="bench-ipmi-")
    try:
        url = "sqlite:///%s/conductor.sqlite" % workdir
        db = db_api.Connection.create(url)
        migration.upgrade(db.engine)
        created = db.import_nodes([
            {"name": "ipmi-%05d" % i, "driver": "ipmi",
             "driver_info": sims.driver_info(i)}
            for i in range(sims.count)])
        uuids = [node.uuid for node in created]
        config = os.path.join(workdir, "conductor.conf")
        log_file = os.path.join(workdir, "conductor.log")
        ipmi_options = "".join("%s = %s\n" % item
                               for item in IPMI_PATHS[name].items())
        with open(config, "w") as stream:
            stream.write(
                "[DEFAULT]\nhost = bench\nstate_path = %(dir)s\n"
                "log_file = %(log)s\nenabled_drivers = ipmi\n"
                "default_log_levels = %(levels)s\n"
                "[database]\nconnection = %(url)s\n"
                "[conductor]\nworkers = %(w)d\n"
                "workers_pool_size = %(pool)d\n"
                "sync_power_state_workers = %(p)d\n"
                "sync_power_state_interval = %(interval)d\n"
                "power_state_batch_size = %(batch)d\n"
                "power_state_sync_max_retries = 1000\n"
                "power_state_timeout = 30\nheartbeat_interval = 5\n"
                "heartbeat_timeout = 120\n"
                "[ipmi]\nfreeipmi_workaround_flags = opensesspriv\n"
                "freeipmi_session_timeout = %(dead)s\n%(ipmi)s"
                % {"dir": workdir, "log": log_file, "url": url,
                   "levels": RUN_LINES,
                   "w": workers, "pool": threads + 8, "p": threads,
                   "interval": interval, "batch": batch_size,
                   "dead": dead_seconds, "ipmi": ipmi_options})
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "conductor"),
             "--config-file", config], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            master = psutil.Process(proc.pid)
            expires = time.monotonic() + 900

            def by_worker() -> dict[str, list[dict[str, Any]]]:
                found: dict[str, list[dict[str, Any]]] = {}
                for sweep in _fleet_sweeps(log_file):
                    if int(sweep["nodes"]):
                        found.setdefault(sweep["who"], []).append(sweep)
                return found

            def wait_sweeps(counts: dict[str, int]
                            ) -> dict[str, list[dict[str, Any]]]:
                """Until each worker made more sweeps than ``counts``."""
                while time.monotonic() < expires:
                    found = by_worker()
                    if len(found) >= workers and all(
                            len(sweeps) > counts.get(who, 0)
                            for who, sweeps in found.items()):
                        return found
                    if proc.poll() is not None:
                        raise SystemExit("conductor exited with %s; see %s"
                                         % (proc.returncode, log_file))
                    time.sleep(0.05)
                raise SystemExit("timed out waiting for sweeps; see %s"
                                 % log_file)

            # NOTE: each node is polled once per interval, when it is due
            # (spread over the interval by its partition). The first
            # interval after the start records every node's state (a
            # write per node): the next whole interval is measured.
            wait_sweeps({})
            procs = [master] + master.children()
            sampler = _CPUSampler(procs)
            sampler.start()
            time.sleep(interval + 2.0)
            start = time.time()
            cpu0 = _tree_cpu(procs)
            time.sleep(interval)
            cpu = _tree_cpu(procs) - cpu0
            end = time.time()
            time.sleep(0.2)
            sampler.stop.set()
            sampler.join()
            measured = [s for sweeps in by_worker().values() for s in sweeps
                        if start <= _sweep_window(s)[1] < end]
            if proc.poll() is not None:
                raise SystemExit("conductor exited with %s; see %s"
                                 % (proc.returncode, log_file))
            in_sweeps = sum(sampler.cpu_between(int(s["pid"]),
                                                *_sweep_window(s))
                            for s in measured)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        nodes = db.list_nodes()
        by_uuid = {node.uuid: node for node in nodes}
        read = sum(1 for i, u in enumerate(uuids) if i not in stopped
                   and by_uuid[u].power_state is not None
                   and by_uuid[u].last_error is None)
        failing = sorted(i for i, u in enumerate(uuids)
                         if by_uuid[u].last_error is not None)
        db.dispose()
        polls = sum(int(s["nodes"]) for s in measured)
        return {
            "runs_measured": len(measured),
            "nodes_read_in_the_interval": polls,
            "every_node_read_once": polls == sims.count,
            "failures_in_the_interval": sum(int(s["failures"])
                                            for s in measured),
            "failing_nodes_are_the_stopped_bmcs": failing == sorted(stopped),
            "nodes_with_a_state": read,
            # NOTE: the longest run's calls against the BMC-bound ideal
            # (a silent BMC costs the session timeout).
            "longest_run_seconds": max((float(s["calls"])
                                        for s in measured), default=0.0),
            "sweep_over_ideal": round(max((float(s["calls"])
                                           for s in measured), default=0.0)
                                      / dead_seconds, 3),
            "cpu_seconds_interval": round(cpu, 3),
            "cpu_ms_per_node_poll_interval": round(
                cpu * 1000 / max(polls, 1), 3),
            "cpu_seconds_in_runs": round(in_sweeps, 3),
            "cpu_ms_per_node_poll": round(in_sweeps * 1000 / max(polls, 1),
                                          3),
            "last_error_of_a_stopped_bmc": (
                by_uuid[uuids[failing[0]]].last_error if failing else None),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_ipmi_fleet(count: int, workers: int, threads: int,
                     batch_size: int, stop_percent: float,
                     dead_seconds: float, paths: Sequence[str],
                     interval: int) -> dict[str, Any]:
    started = time.monotonic()
    with bmc.IPMISims(count, own_address=True,
                      power=["on", "off"] * (count // 2)
                      + ["on"] * (count % 2)) as sims:
        start_seconds = time.monotonic() - started
        step = max(1, round(100 / stop_percent)) if stop_percent else 0
        stopped = set(range(step - 1, count, step)) if step else set()
        for index in stopped:
            sims.stop(index)
        result: dict[str, Any] = {
            "bmcs": count, "stopped_bmcs": len(stopped),
            "addresses": "%s .. %s port 623" % (sims.addresses[0],
                                                sims.addresses[-1]),
            "workers": workers, "sync_threads_per_worker": threads,
            "batch_size": batch_size, "interval_seconds": interval,
            "ideal_seconds": dead_seconds,
            "ideal": "a stopped BMC is declared silent after the session "
                     "timeout of either program (freeipmi_session_timeout;"
                     " ipmitool's default -N 1 -R 2, about 6 s): no sweep "
                     "over BMCs that include a stopped one can be shorter",
            "simulators_start_seconds": round(start_seconds, 1),
        }
        for name in paths:
            result[name] = _fleet_path(name, sims, workers, threads,
                                       batch_size, interval, dead_seconds,
                                       stopped)
    return result


def bench_dead_redfish(timeout: float) -> dict[str, Any]:
    """Seconds a read of a dead address holds its thread."""
    with bmc.DeadTCPAddress() as dead:
        node = bmc.driver_node({"redfish_address": dead.address,
                                "redfish_username": "admin",
                                "redfish_password": "secret",
                                "redfish_system_id": "1"},
                               driver="redfish")
        found = {}
        for label, connect in (("connect_timeout_5s", 5.0),
                               ("no_connect_timeout", 0.0)):
            conf.CONF.set_override("connect_timeout", connect,
                                   group="redfish")
            conf.CONF.set_override("connection_attempts", 1,
                                   group="redfish")
            started = time.monotonic()
            outcome = _read(redfish.RedfishDriver().power, node, timeout)
            found[label] = {"seconds": round(time.monotonic() - started, 2),
                            "outcome": outcome}
        conf.CONF.clear_override("connect_timeout", group="redfish")
        conf.CONF.clear_override("connection_attempts", group="redfish")
    found["power_state_timeout"] = timeout
    return found


def _ipmitool_version() -> str:
    try:
        out = subprocess.run(["ipmitool", "-V"], capture_output=True,
                             text=True, timeout=5).stdout
    except OSError:
        return "missing"
    return out.strip()


def _ipmipower_version() -> str:
    try:
        out = subprocess.run(["ipmipower", "-V"], capture_output=True,
                             text=True, timeout=5).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0].strip() if out else "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ipmi-fleet", type=int, default=1000,
                        help="ipmi_sim BMCs of the fleet run (0: skip)")
    parser.add_argument("--workers", type=int, default=2,
                        help="conductor workers of the fleet run")
    parser.add_argument("--sync-threads", type=int, default=8,
                        help="sync_power_state_workers of the fleet run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--interval", type=int, default=60,
                        help="sync_power_state_interval of the fleet run; "
                             "must hold the slowest path's sweep")
    parser.add_argument("--stop-percent", type=float, default=5.0)
    parser.add_argument("--dead-bmc-seconds", type=float, default=6.0,
                        help="[ipmi] freeipmi_session_timeout; keep it at "
                             "ipmitool's (6 s with its default options)")
    parser.add_argument("--paths", default=",".join(IPMI_PATHS),
                        help="read paths of the fleet run, comma-separated")
    parser.add_argument("--ipmi-nodes", type=int, default=0,
                        help="ipmi_sim BMCs of the per-driver run (0: skip)")
    parser.add_argument("--redfish-nodes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=50,
                        help="sync threads (P); default 50")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measured sweeps after the cold one")
    parser.add_argument("--serial-budget", type=float, default=30.0,
                        help="seconds after which the serial sweep stops "
                             "and is extrapolated")
    parser.add_argument("--power-state-timeout", type=float, default=30.0)
    parser.add_argument("--only", choices=["ipmi", "redfish"])
    args = parser.parse_args(argv)

    # NOTE: a SIGTERM (a CI timeout) must still run the fixtures' clean-ups,
    # or the emulators outlive the benchmark.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    conf.CONF([], project="conductor", default_config_files=[])
    conf.CONF.set_override("power_state_timeout", args.power_state_timeout,
                           group="conductor")
    # NOTE: each emulator serves both drivers' clients from one process;
    # basic auth avoids sushy's session attempt (and its ERROR log) there.
    conf.CONF.set_override("auth_type", "basic", group="redfish")
    logging.basicConfig(level=logging.CRITICAL)

    report: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable)]
                            + sys.argv),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "ipmitool": _ipmitool_version()},
        "power_state_timeout": args.power_state_timeout,
    }
    report["host"]["ipmipower"] = _ipmipower_version()
    if args.only in (None, "ipmi") and args.ipmi_fleet:
        report["ipmi_fleet"] = bench_ipmi_fleet(
            args.ipmi_fleet, args.workers, args.sync_threads,
            args.batch_size, args.stop_percent, args.dead_bmc_seconds,
            [p for p in args.paths.split(",") if p], args.interval)
    if args.only in (None, "ipmi") and args.ipmi_nodes:
        report["ipmi"] = bench_ipmi(args.ipmi_nodes, args.threads,
                                    args.repeat, args.serial_budget)
    if args.only in (None, "redfish"):
        report["redfish"] = bench_redfish(args.redfish_nodes, args.threads,
                                          args.repeat, args.serial_budget)
        report["redfish"]["dead_address"] = bench_dead_redfish(
            args.power_state_timeout)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

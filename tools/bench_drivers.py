# SPDX-License-Identifier: Apache-2.0
"""Power-sync sweep time of the real ipmi and redfish drivers.

Starts ``--ipmi-nodes`` ipmi_sim BMCs and one sushy-tools emulator with
``--redfish-nodes`` fake systems (see tests/functional/bmc.py), then reads
every node's power state the way the conductor's sync does: one
``get_power_state`` per node under the ``power_state_timeout`` deadline,
through a pool of ``--threads`` threads, and once more with one thread
(the serial baseline). Prints one JSON document::

    python tools/bench_drivers.py --threads 50 > bench.json

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
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import conductor.cmd  # noqa: E402,F401  (threading backend first)
from conductor.common import deadline  # noqa: E402
from conductor import conf  # noqa: E402
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


def _ipmitool_version() -> str:
    try:
        out = subprocess.run(["ipmitool", "-V"], capture_output=True,
                             text=True, timeout=5).stdout
    except OSError:
        return "missing"
    return out.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ipmi-nodes", type=int, default=50)
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
    if args.only in (None, "ipmi"):
        report["ipmi"] = bench_ipmi(args.ipmi_nodes, args.threads,
                                    args.repeat, args.serial_budget)
    if args.only in (None, "redfish"):
        report["redfish"] = bench_redfish(args.redfish_nodes, args.threads,
                                          args.repeat, args.serial_budget)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

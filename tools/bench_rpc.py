#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""RPC figures: parallel power actions and get_node throughput. Prints JSON.

Starts real ``conductor`` processes (SQLite in a temporary directory, the
fake driver, power sync disabled so that only RPC work is measured) on the
local RabbitMQ, in a virtual host of their own (created and deleted with
``rabbitmqctl``), and calls them from this process through
``conductor.rpcapi.ConductorAPI``.

Figure 1: ``--callers`` callers at once each power on a different node
whose fake BMC takes ``--latency-ms`` per call, waiting for completion
(``set_power_state(wait=True)``). Measured with the defaults (W = 2
workers, 64 RPC threads and 100 pool threads per worker) and with a
serialized baseline (W = 1, ``executor_thread_pool_size = 1``, the
smallest pool), against one call alone.

Figure 2: ``--readers`` concurrent callers call ``get_node`` in a loop for
``--seconds``, with W = 1 and W = 2: calls per second, p50/p99 latency,
failures (there must be none), and the CPU used meanwhile by the conductor
(master and workers), the broker (``beam.smp``) and this caller process.

Figure "flood": ``--flood`` ``get_node`` calls whose reply queue does not
exist (the caller is gone: killed, or timed out) are published to the
conductor topic of a W = 2 conductor, then ``--flood-valid`` valid
``get_node`` calls are made at once by ``--flood-callers`` callers: how
long until the first is answered, and their p50/max latency. Once with
the conductor's ``[oslo_messaging_rabbit]
kombu_missing_consumer_retry_timeout`` and once with oslo.messaging's own
default (60 s), each in a virtual host of its own.

    python tools/bench_rpc.py
    python tools/bench_rpc.py --callers 20 --latency-ms 200 --readers 64 \\
        --seconds 10
    python tools/bench_rpc.py --figures flood --flood 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Iterator
import uuid

import kombu
import psutil

import conductor.cmd  # noqa: F401  (selects the threading backend first)
from oslo_config import cfg
from oslo_messaging._drivers import amqp as rpc_amqp
from oslo_messaging._drivers import common as rpc_common

from conductor.common import rpc
from conductor.conf import conductor as conductor_opts
from conductor.db import api as db_api
from conductor.db import migration
from conductor import rpcapi

RABBIT_URL = os.environ.get("CONDUCTOR_TEST_TRANSPORT_URL",
                            "rabbit://guest:guest@127.0.0.1:5672/")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True,
                   capture_output=True, timeout=60)


class Conductor:
    """One ``conductor`` master with its workers, in ``workdir/name``."""

    def __init__(self, workdir: str, name: str, url: str, db_url: str,
                 workers: int, rpc_threads: int | None,
                 pool_size: int | None,
                 rabbit: dict[str, Any] | None = None) -> None:
        self.name = name
        self.workers = workers
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.log = os.path.join(self.dir, "conductor.log")
        config = os.path.join(self.dir, "conductor.conf")
        lines = ["[DEFAULT]", "host = %s" % name,
                 "state_path = %s" % self.dir, "log_file = %s" % self.log,
                 "enabled_drivers = fake", "transport_url = %s" % url,
                 "graceful_shutdown_timeout = 10"]
        if rpc_threads is not None:
            lines.append("executor_thread_pool_size = %d" % rpc_threads)
        lines += ["[conductor]", "workers = %d" % workers,
                  "sync_power_state_interval = 0"]
        if pool_size is not None:
            lines.append("workers_pool_size = %d" % pool_size)
        lines += ["[database]", "connection = %s" % db_url]
        if rabbit:
            lines.append("[oslo_messaging_rabbit]")
            lines += ["%s = %s" % item for item in rabbit.items()]
        with open(config, "w") as stream:
            stream.write("\n".join(lines) + "\n")
        binary = os.path.join(os.path.dirname(sys.executable), "conductor")
        self.proc = subprocess.Popen([binary, "--config-file", config],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.master = psutil.Process(self.proc.pid)

    def wait_rpc(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        wanted = ["RPC server of %s:%d consuming" % (self.name, worker)
                  for worker in range(self.workers)]
        while True:
            text = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as stream:
                    text = stream.read()
            if all(line in text for line in wanted):
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("%s: RPC did not start; see %s"
                                 % (self.name, self.log))
            time.sleep(0.1)

    def processes(self) -> list[psutil.Process]:
        return [self.master] + self.master.children()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for proc in self.processes():
                    proc.kill()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def broker_processes() -> list[psutil.Process]:
    return [proc for proc in psutil.process_iter(["name"])
            if proc.info["name"] == "beam.smp"]


def make_api(url: str, connections: int, timeout: float = 60,
             transports: list[Any] | None = None) -> rpcapi.ConductorAPI:
    conf = cfg.ConfigOpts()
    conductor_opts.register_opts(conf)
    rpc.register_opts(conf)
    conf([], project="bench-rpc")
    conf.set_override("transport_url", url)
    # NOTE: one sending connection per caller thread, so that the callers
    # measure the conductor, not a wait for this process's pool.
    conf.set_override("rpc_conn_pool_size", connections,
                      group="oslo_messaging_rabbit")
    transport = rpc.get_transport(conf)
    if transports is not None:
        transports.append(transport)
    return rpcapi.ConductorAPI.from_conf(conf, transport, timeout=timeout)


def at_once(count: int, call: Callable[[int], Any]) -> list[float]:
    """Run ``call(i)`` in ``count`` threads released together; seconds."""
    barrier = threading.Barrier(count + 1)
    results: list[float] = [0.0] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            call(index)
        except BaseException as exc:
            errors.append(exc)
        results[index] = time.monotonic() - started

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit("a caller failed: %r" % errors[0])
    return results


def figure1(api: rpcapi.ConductorAPI, db: db_api.Connection, label: str,
            callers: int, latency_ms: int) -> dict[str, Any]:
    info = {"fake_latency_ms": latency_ms}
    alone = []
    for index in range(3):
        node = db.create_node({"driver": "fake", "name": "%s-alone-%d"
                               % (label, index), "driver_info": info})
        started = time.monotonic()
        done = api.set_power_state(node.uuid, "on", wait=True)
        alone.append(time.monotonic() - started)
        assert done["power_state"] == "power on", done
    nodes = [db.create_node({"driver": "fake", "name": "%s-%d"
                             % (label, index), "driver_info": info})
             for index in range(callers)]

    def power_on(index: int) -> None:
        done = api.set_power_state(nodes[index].uuid, "on", wait=True)
        if done["power_state"] != "power on" or done["last_error"]:
            raise RuntimeError("power on failed: %r" % done)

    times = at_once(callers, power_on)
    single = statistics.median(alone)
    return {"one_call_alone_s": round(single, 3),
            "max_s": round(max(times), 3),
            "median_s": round(statistics.median(times), 3),
            "max_over_one_call": round(max(times) / single, 2)}


def figure2(api: rpcapi.ConductorAPI, server: Conductor, node: str,
            readers: int, seconds: float) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(readers)]
    failures: list[str] = []
    stop = threading.Event()
    barrier = threading.Barrier(readers + 1)

    def read(index: int) -> None:
        own = latencies[index]
        barrier.wait()
        while not stop.is_set():
            started = time.monotonic()
            try:
                api.get_node(node)
            except Exception as exc:
                failures.append(repr(exc))
                continue
            own.append(time.monotonic() - started)

    for index in range(5):
        api.get_node(node)
    threads = [threading.Thread(target=read, args=(i,))
               for i in range(readers)]
    for thread in threads:
        thread.start()
    conductor_procs = server.processes()
    broker = broker_processes()
    me = [psutil.Process()]
    before = [cpu_seconds(conductor_procs), cpu_seconds(broker),
              cpu_seconds(me)]
    barrier.wait()
    started = time.monotonic()
    stop.wait(seconds)
    stop.set()
    elapsed = time.monotonic() - started
    after = [cpu_seconds(conductor_procs), cpu_seconds(broker),
             cpu_seconds(me)]
    for thread in threads:
        thread.join()
    flat = sorted(value for own in latencies for value in own)
    used = [a - b for a, b in zip(after, before)]
    return {
        "workers": server.workers,
        "calls": len(flat),
        "calls_per_s": round(len(flat) / elapsed, 1),
        "p50_ms": round(1000 * flat[len(flat) // 2], 2) if flat else None,
        "p99_ms": round(1000 * flat[int(len(flat) * 0.99)], 2)
        if flat else None,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "cpu_cores": {"conductor": round(used[0] / elapsed, 2),
                      "broker": round(used[1] / elapsed, 2),
                      "callers": round(used[2] / elapsed, 2),
                      "machine_cores": psutil.cpu_count()},
        "cpu_ms_per_call": {
            "conductor": round(1000 * used[0] / max(1, len(flat)), 3),
            "broker": round(1000 * used[1] / max(1, len(flat)), 3),
            "callers": round(1000 * used[2] / max(1, len(flat)), 3)},
    }


def publish_orphaned_calls(url: str, node: str, count: int,
                           reply_queues: int = 1) -> None:
    """Publish ``count`` ``get_node`` calls whose reply queue is missing.

    Built as oslo.messaging's RPC client builds a call (its own envelope
    helpers), but naming ``reply_queues`` reply queues that do not exist,
    as when the caller was killed after sending: the conductor answers
    each and finds no queue to deliver the answer to.
    """
    gone = ["reply_gone_%s" % uuid.uuid4().hex for _ in range(reply_queues)]
    context = rpc.new_context().to_dict()
    with kombu.Connection(url.replace("rabbit://", "amqp://", 1)) as conn:
        producer = conn.Producer()
        for index in range(count):
            msg: dict[str, Any] = {
                "method": "get_node", "args": {"node": node},
                "version": rpcapi.ConductorAPI.RPC_API_VERSION,
                "_msg_id": uuid.uuid4().hex,
                "_reply_q": gone[index % reply_queues], "_timeout": None}
            rpc_amqp._add_unique_id(msg)
            rpc_amqp.pack_context(msg, context)
            # NOTE: "openstack" is oslo.messaging's default control
            # exchange, which the conductor's RPC server consumes from.
            producer.publish(rpc_common.serialize_msg(msg),
                             exchange="openstack", routing_key=rpc.TOPIC)


@contextlib.contextmanager
def private_vhost(label: str) -> Iterator[str]:
    """A virtual host of its own on the local RabbitMQ; yields its URL."""
    vhost = "conductor_bench_%d_%s" % (os.getpid(), label)
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*")
        yield "%s/%s" % (RABBIT_URL.rstrip("/"), vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def figure_flood(workdir: str, db_url: str, node: str, label: str,
                 retry_timeout: int | None, flood: int, reply_queues: int,
                 valid: int, callers: int) -> dict[str, Any]:
    """Valid calls right after ``flood`` orphaned ones; seconds."""
    rabbit = (None if retry_timeout is None else
              {"kombu_missing_consumer_retry_timeout": retry_timeout})
    with private_vhost(label) as url:
        server = Conductor(workdir, label, url, db_url, 2, None, None,
                           rabbit)
        try:
            server.wait_rpc()
            # NOTE: a patient caller (the 60 s case must be seen through).
            transports: list[Any] = []
            api = make_api(url, callers, timeout=300, transports=transports)
            for _ in range(3):
                api.get_node(node)  # its reply queue exists
            published = time.monotonic()
            publish_orphaned_calls(url, node, flood, reply_queues)
            publish_s = time.monotonic() - published
            answered: list[float] = []
            lock = threading.Lock()

            def call(index: int) -> None:
                for _ in range(index, valid, callers):
                    started = time.monotonic()
                    api.get_node(node)
                    done = time.monotonic()
                    with lock:
                        answered.append(done - published)
                        latencies.append(done - started)

            latencies: list[float] = []
            try:
                at_once(callers, call)
            finally:
                transports[0].cleanup()
        finally:
            server.stop()
        with open(server.log, errors="replace") as stream:
            log = stream.read()
    latencies.sort()
    return {
        "kombu_missing_consumer_retry_timeout":
            retry_timeout if retry_timeout is not None
            else "default (%d)" % rpc.MISSING_CONSUMER_RETRY_TIMEOUT,
        "orphaned_calls": flood, "missing_reply_queues": reply_queues,
        "publish_s": round(publish_s, 3),
        "valid_calls": len(latencies),
        "first_valid_answer_s": round(min(answered), 3),
        "last_valid_answer_s": round(max(answered), 3),
        "valid_p50_s": round(latencies[len(latencies) // 2], 3),
        "valid_max_s": round(latencies[-1], 3),
        "replies_abandoned_logged": log.count("due to a missing queue"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=20)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--readers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--figures", default="rpc,flood",
                        help="comma-separated: rpc (figures 1 and 2), "
                        "flood")
    parser.add_argument("--flood", type=int, default=200,
                        help="orphaned calls published")
    parser.add_argument("--flood-reply-queues", type=int, default=1,
                        help="missing reply queues they name (1: one "
                        "vanished caller)")
    parser.add_argument("--flood-valid", type=int, default=20,
                        help="valid calls made right after")
    parser.add_argument("--flood-callers", type=int, default=4)
    parser.add_argument("--flood-timeouts", default="default,60",
                        help="kombu_missing_consumer_retry_timeout values "
                        "(default: the conductor's)")
    args = parser.parse_args()
    figures = set(args.figures.split(","))
    if not figures or figures - {"rpc", "flood"}:
        parser.error("--figures: expected rpc and/or flood, got %r"
                     % args.figures)
    try:
        timeouts = [None if value == "default" else int(value)
                    for value in args.flood_timeouts.split(",")]
    except ValueError:
        parser.error("--flood-timeouts: expected 'default' or seconds, "
                     "got %r" % args.flood_timeouts)
    for name in ("flood", "flood_reply_queues", "flood_valid",
                 "flood_callers"):
        if getattr(args, name) < 1:
            parser.error("--%s must be >= 1" % name.replace("_", "-"))
    workdir = tempfile.mkdtemp(prefix="bench-rpc-")
    db_url = "sqlite:///%s/conductor.sqlite" % workdir
    db = db_api.Connection.create(db_url)
    migration.upgrade(db.engine)
    result: dict[str, Any] = {
        "machine": {"cpus": psutil.cpu_count(),
                    "python": sys.version.split()[0]},
        "settings": vars(args)}
    if "rpc" in figures:
        result.update(figures_rpc(args, workdir, db_url, db))
    if "flood" in figures:
        node = db.create_node({"driver": "fake", "name": "flood"})
        cases = [figure_flood(workdir, db_url, node.uuid, "flood-%d" % index,
                              timeout, args.flood, args.flood_reply_queues,
                              args.flood_valid, args.flood_callers)
                 for index, timeout in enumerate(timeouts)]
        flood: dict[str, Any] = {"cases": cases}
        if len(cases) > 1:
            flood["first_answer_ratio_last_over_first"] = round(
                cases[-1]["first_valid_answer_s"]
                / max(0.001, cases[0]["first_valid_answer_s"]), 1)
        result["figure_flood_orphaned_calls"] = flood
    print(json.dumps(result, indent=2))


def figures_rpc(args: argparse.Namespace, workdir: str, db_url: str,
                db: db_api.Connection) -> dict[str, Any]:
    result: dict[str, Any] = {}
    vhost = "conductor_bench_%d" % os.getpid()
    rabbitmqctl("add_vhost", vhost)
    conductors: list[Conductor] = []
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*")
        url = "%s/%s" % (RABBIT_URL.rstrip("/"), vhost)
        api = make_api(url, max(args.callers, args.readers))

        def run(name: str, workers: int, rpc_threads: int | None,
                pool_size: int | None) -> Conductor:
            started = Conductor(workdir, name, url, db_url, workers,
                                rpc_threads, pool_size)
            conductors.append(started)
            started.wait_rpc()
            return started

        # Figure 1, defaults (W = 2); the same conductor serves figure 2.
        defaults = run("defaults", 2, None, None)
        fig1_default = figure1(api, db, "defaults", args.callers,
                               args.latency_ms)
        reader_node = db.create_node({"driver": "fake", "name": "reader"})
        fig2_w2 = figure2(api, defaults, reader_node.uuid, args.readers,
                          args.seconds)
        defaults.stop()
        # Figure 1, serialized baseline: one worker, one RPC thread, the
        # smallest pool.
        serial = run("serialized", 1, 1, 3)
        fig1_serial = figure1(api, db, "serialized", args.callers,
                              args.latency_ms)
        serial.stop()
        one = run("one-worker", 1, None, None)
        fig2_w1 = figure2(api, one, reader_node.uuid, args.readers,
                          args.seconds)
        one.stop()
        result["figure1_parallel_power_on"] = {
            "defaults_w2": fig1_default,
            "serialized_w1_one_rpc_thread": fig1_serial,
            "serialized_max_over_defaults_max": round(
                fig1_serial["max_s"] / fig1_default["max_s"], 2),
            "target_max_le_3x_one_call": fig1_default["max_over_one_call"]
            <= 3.0}
        result["figure2_get_node"] = {"w1": fig2_w1, "w2": fig2_w2}
        return result
    finally:
        for started in conductors:
            started.stop()
        rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()

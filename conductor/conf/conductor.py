# SPDX-License-Identifier: Apache-2.0
"""Options of the [conductor] group: workers, pools and periodic work."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "conductor"

# NOTE: options marked mutable are re-read after SIGHUP: the master
# mutates the configuration and re-forks every worker, which reads them
# in start(). The others need a restart.
opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "workers",
        min=1,
        help="Number of worker processes forked by the conductor. Each "
             "worker owns a share of this host's nodes and has its own "
             "thread pool. Unset (the default) means one per CPU."),
    cfg.IntOpt(
        "max_worker_start_failures",
        default=5,
        min=0,
        help="How many times in a row one worker may fail to start before "
             "the conductor gives up: it then stops its other workers and "
             "exits 1, naming the worker and the error. Between failed "
             "starts the master waits before forking the worker again, "
             "1 s after the first failure, doubling up to 30 s. A worker "
             "that starts resets its count. 0 never gives up (re-fork "
             "forever, with the same waits). Minimum 0."),
    cfg.IntOpt(
        "workers_pool_size",
        default=100,
        min=3,
        help="Size of each worker's bounded thread pool, shared by "
             "periodic tasks, per-node periodic work and power actions. "
             "Work beyond it is rejected (NoFreeWorker), never queued "
             "without bound. Minimum 3."),
    cfg.IntOpt(
        "max_abandoned_calls",
        default=100,
        min=1,
        mutable=True,
        help="Hard cap on the driver calls one worker has abandoned (a "
             "driver that ignored power_state_timeout) and that are still "
             "running. An abandoned call no longer holds a slot of the "
             "pool; its thread runs on outside it until the call returns, "
             "and its node is not called again until then. At the cap the "
             "worker reports itself degraded (log ERROR, 'conductor-manage "
             "status') and stops heartbeating as live, so that other "
             "workers take its nodes over, until enough of those calls "
             "returned. Minimum 1."),
    cfg.IntOpt(
        "heartbeat_interval",
        default=10,
        min=1,
        # NOTE: mutable because a worker re-reads it before every beat.
        mutable=True,
        help="Seconds between a worker's heartbeats in the 'conductors' "
             "table. Must be well below heartbeat_timeout."),
    cfg.IntOpt(
        "heartbeat_timeout",
        default=60,
        min=2,
        mutable=True,
        help="Seconds after its last heartbeat at which a worker is "
             "considered dead and its nodes are taken over by the others."),
    cfg.IntOpt(
        "hash_ring_reset_interval",
        default=5,
        min=1,
        mutable=True,
        help="Seconds between two checks by each worker of who is live: "
             "it reads one row, a counter of membership changes (a worker "
             "joining, stopping, draining, degraded or healthy again), and "
             "the workers' rows "
             "('conductors' table) only when that counter moved or one of "
             "their heartbeats may have expired since its last read; the "
             "ownership rings are rebuilt only when the live workers "
             "changed. A dead host's nodes are taken over within "
             "heartbeat_timeout plus this; a stopped host's within this. "
             "Reads nothing else. Minimum 1."),
    cfg.IntOpt(
        "conductor_cleanup_age",
        default=7 * 24 * 3600,
        min=0,
        mutable=True,
        help="Seconds after which the rows of a host whose every worker is "
             "offline and silent are deleted from the 'conductors' table "
             "by the live workers (they no longer show in 'conductor-manage "
             "status'). A host that starts again registers anew. 0 keeps "
             "them forever. Minimum 0."),
    cfg.IntOpt(
        "sync_power_state_interval",
        default=60,
        mutable=True,
        help="Seconds between two polls of each node's power state. "
             "Polls are spread evenly over the interval (each node has a "
             "stable phase of its own) and a node is polled when it is due, "
             "whichever worker owns it; the sync task runs every 1/60 of "
             "this, between 1 and 10 seconds. A node whose polls fail "
             "backs off: its interval doubles with every failure in a row, "
             "up to power_failure_recovery_interval. 0 or a negative value "
             "disables power sync."),
    cfg.IntOpt(
        "sync_power_state_workers",
        default=8,
        min=1,
        mutable=True,
        help="Nodes polled at the same time by one worker during a sweep. "
             "Capped by workers_pool_size minus one."),
    cfg.IntOpt(
        "power_state_batch_size",
        default=64,
        min=1,
        max=1000,
        mutable=True,
        help="Most nodes handed to one batch read of a driver that can "
             "read many power states in one call (the ipmi driver reads "
             "a batch with one FreeIPMI ipmipower run). A batch is one "
             "of the sync_power_state_workers parallel calls and runs "
             "under one power_state_timeout deadline; a batch that does "
             "not finish in time fails its nodes only. Drivers without "
             "batch reads are read one node per call. 1 reads every "
             "node on its own. Minimum 1, maximum 1000."),
    cfg.IntOpt(
        "power_state_sync_max_retries",
        default=3,
        min=0,
        mutable=True,
        help="Consecutive failed reads of a node's power state before the "
             "node is put into maintenance with fault 'power failure'. "
             "0 puts it into maintenance at the first failure."),
    cfg.IntOpt(
        "power_failure_recovery_interval",
        default=300,
        mutable=True,
        help="Seconds between attempts to read the BMC of nodes in "
             "maintenance for 'power failure'; the fault is cleared when "
             "it answers. 0 or a negative value disables recovery. Also "
             "the longest back-off between two polls of a node whose polls "
             "keep failing (not counting in maintenance yet)."),
    cfg.BoolOpt(
        "force_power_state_during_sync",
        default=True,
        mutable=True,
        help="When the hardware's power state differs from the recorded "
             "one: True puts the hardware back to the recorded state; "
             "False records the hardware's state."),
    cfg.FloatOpt(
        "power_state_timeout",
        default=30.0,
        min=0.1,
        mutable=True,
        help="Deadline in seconds for every single driver call. A call "
             "still running at the deadline counts as a failure and its "
             "slot is freed."),
    cfg.FloatOpt(
        "bmc_min_interval",
        default=0.0,
        min=0.0,
        max=60.0,
        mutable=True,
        help="Seconds between the end of one driver call to a BMC address "
             "and the start of the next one to that address, within a "
             "worker (power sync, power actions and driver periodic "
             "tasks alike). Calls to one address are always made one at "
             "a time, in arrival order; the time a call waits for its "
             "turn counts against power_state_timeout, and a call whose "
             "turn does not come in time fails naming the BMC. The "
             "driver names the address (ipmi: ipmi_address:ipmi_port; "
             "redfish: host:port of redfish_address; fake: "
             "fake_bmc_address). 0 (the default) means back to back, "
             "which suits the fake driver and robust BMCs; many IPMI "
             "BMCs want about 1 to 5 seconds (what Ironic calls "
             "min_command_interval). Minimum 0, maximum 60."),
    cfg.FloatOpt(
        "max_driver_calls_per_second",
        default=0.0,
        min=0.0,
        mutable=True,
        help="Cap on the driver calls one worker starts per second, over "
             "all BMCs, so that a sweep or a burst of power actions "
             "reaches the BMC network evenly spread. Calls beyond it "
             "wait (within power_state_timeout) instead of starting at "
             "once. 0 (the default) means no cap. Minimum 0."),
    cfg.FloatOpt(
        "pending_action_interval",
        default=1.0,
        min=0.1,
        mutable=True,
        help="Seconds between checks for requested power actions "
             "(target_power_state) on owned nodes. With RPC an action is "
             "applied at once; this bounds the delay without a broker."),
    cfg.IntOpt(
        "power_request_timeout",
        default=300,
        min=0,
        mutable=True,
        help="Seconds a requested power action (target_power_state) may "
             "wait to be applied. A request still pending after that, "
             "e.g. made while no conductor with the node's driver was "
             "running, is dropped with last_error saying so rather than "
             "applied long after it was asked for. Minimum 0; 0 keeps "
             "requests until they are applied."),
    cfg.StrOpt(
        "rpc_version_cap",
        help="Newest conductor RPC API version this host sends, for "
             "rolling upgrades: while older conductors still run, set it "
             "to the version they speak (e.g. '1.0'), then unset it once "
             "every host runs this release. Unset (the default) means no "
             "cap: send the newest version this release knows (1.0)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts

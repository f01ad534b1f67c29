# SPDX-License-Identifier: Apache-2.0
"""The worker: one ConductorService per forked process.

The master builds one instance per worker id and hands each to
oslo.service's ProcessLauncher (threading backend), which forks a child
per instance and respawns it with the same id if it dies::

    launcher = service.ProcessLauncher(CONF, restart_method="mutate")
    for worker_id in range(workers):
        launcher.launch_service(ConductorService(host, worker_id, CONF))
    launcher.wait()

Construction only stores values: the service may be pickled and is
always copied into a forked child. Everything that owns threads, sockets
or connections is created in :meth:`ConductorService.start`, in the child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Iterator, Mapping, Sequence

from oslo_config import cfg
from oslo_service import service
from oslo_utils import timeutils

from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import log as conductor_log
from conductor.common import metrics
from conductor.common import processutils
from conductor.common import rpc
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.drivers import loader
from conductor.executor import bmc
from conductor.executor import pool as worker_pool
from conductor.executor import runner as periodic_runner
from conductor import health
from conductor import lifecycle
from conductor import manager
from conductor import nodes
from conductor import notifications
from conductor import ownership
from conductor import periodics
from conductor import power_actions
from conductor import power_sync
from conductor import reports
from conductor import rpcapi
from conductor import status as status_mod
from conductor import task

LOG = logging.getLogger(__name__)
#: One DEBUG line per heartbeat; enable with
#: ``default_log_levels = conductor.heartbeat=DEBUG`` (the quick start does).
HEARTBEAT_LOG = logging.getLogger("conductor.heartbeat")
#: Seconds a draining host works on past one sweep and one action scan of
#: the others: time for their last sweep to reach its nodes.
DRAIN_MARGIN = 2.0
#: Longest sleep of a worker's drain thread. A drain request (SIGUSR1), a
#: ring refresh that finds the host draining and a stop wake it at once;
#: worker 0 wakes when the handover ends.
DRAIN_POLL = 5.0


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker reads from config, read once in ``start()``."""

    host: str
    database_url: str
    db_max_retries: int
    db_retry_interval: int
    enabled_drivers: tuple[str, ...]
    pool_size: int
    max_abandoned_calls: int
    heartbeat_interval: float
    heartbeat_timeout: float
    hash_ring_reset_interval: float
    graceful_shutdown_timeout: float
    sync: power_sync.SyncSettings
    #: Seconds a draining host keeps polling its nodes after it saw itself
    #: draining: one power sync interval (the others notice at their next
    #: ring refresh and poll each node when due) and one pending-action
    #: scan, plus :data:`DRAIN_MARGIN`.
    drain_handover: float = 0.0
    conductor_cleanup_age: float = 0.0

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> "WorkerSettings":
        return cls(
            host=conf.host,
            database_url=conf.database.connection,
            db_max_retries=conf.database.max_retries,
            db_retry_interval=conf.database.retry_interval,
            enabled_drivers=tuple(conf.enabled_drivers),
            pool_size=conf.conductor.workers_pool_size,
            max_abandoned_calls=conf.conductor.max_abandoned_calls,
            heartbeat_interval=conf.conductor.heartbeat_interval,
            heartbeat_timeout=conf.conductor.heartbeat_timeout,
            hash_ring_reset_interval=conf.conductor.hash_ring_reset_interval,
            graceful_shutdown_timeout=conf.graceful_shutdown_timeout or 60,
            sync=power_sync.SyncSettings(
                workers=conf.conductor.sync_power_state_workers,
                timeout=conf.conductor.power_state_timeout,
                max_retries=conf.conductor.power_state_sync_max_retries,
                force=conf.conductor.force_power_state_during_sync,
                interval=conf.conductor.sync_power_state_interval,
                recovery_interval=(
                    conf.conductor.power_failure_recovery_interval),
                batch_size=conf.conductor.power_state_batch_size),
            drain_handover=(conf.conductor.sync_power_state_interval
                            + conf.conductor.pending_action_interval
                            + DRAIN_MARGIN),
            conductor_cleanup_age=conf.conductor.conductor_cleanup_age,
        )

    @property
    def refresh_interval(self) -> float:
        """Seconds between two checks of membership (``conductors``).

        ``hash_ring_reset_interval``, or a quarter of ``heartbeat_timeout``
        when that is shorter: a dead worker's nodes are taken over soon
        after its heartbeat expired.
        """
        return min(float(self.hash_ring_reset_interval),
                   self.heartbeat_timeout / 4.0)

    @property
    def handover_delay(self) -> float:
        """Seconds a partition taken from a live owner is held back.

        The old owner notices the change within :attr:`refresh_interval`;
        until then, and during the run it is in, it may still poll the
        partition's nodes. Three ticks cover a run of fast BMCs; a run
        whose calls are slower than that when ownership moves may have a
        node polled once more by its new owner. The cost of a longer hold
        is lateness: the old owner stops polling the partition at its
        next refresh.
        """
        return (self.refresh_interval
                + 3 * power_sync.tick(self.sync.interval))


def _option(group: str, name: str) -> Any:
    """A spacing read from the collected object's ``conf`` at collect time."""
    return lambda own: getattr(getattr(own.conf, group), name)


class ConductorPeriodics:
    """The conductor's own periodic tasks (collected at worker start).

    :param conf: the worker's configuration; the tasks' spacings are read
        from it when they are collected.
    """

    def __init__(self, sync: power_sync.PowerSync,
                 actions: power_actions.PowerActions,
                 rings: ownership.Rings, conf: cfg.ConfigOpts) -> None:
        self._sync = sync
        self._actions = actions
        self._rings = rings
        self.conf = conf

    @periodics.periodic(
        spacing=lambda own: power_sync.tick(
            own.conf.conductor.sync_power_state_interval),
        run_immediately=True)
    def sync_power_states(self) -> None:
        """Poll the owned nodes that are due; record what changed."""
        self._sync.sync()

    @periodics.periodic(
        spacing=_option("conductor", "power_failure_recovery_interval"))
    def recover_power_failures(self) -> None:
        """Clear the power-failure fault of nodes whose BMC answers."""
        self._sync.recover()

    @periodics.periodic(
        spacing=_option("conductor", "pending_action_interval"),
        run_immediately=True)
    def apply_pending_actions(self) -> None:
        """Apply requested power actions on owned nodes; drop stale ones."""
        self._actions.scan()

    @periodics.periodic(
        spacing=_option("conductor", "hash_ring_reset_interval"))
    def refresh_ownership(self) -> None:
        """Re-read the workers; rebuild the rings if they changed.

        On a change, reservations of dead workers are released too.
        Power sync and the pending-action check refresh the rings too,
        when their last read is older than this task's spacing: a read
        made by them in the last 90 % of it is not made again (every
        worker would otherwise read the ``conductors`` rows up to twice
        as often as configured).
        """
        self._rings.maybe_update(
            max_age=self.conf.conductor.hash_ring_reset_interval * 0.9)


class _NodeProvider:
    """Owned nodes and reservations for driver ``node_periodic`` tasks."""

    def __init__(self, db: db_api.Connection, rings: ownership.Rings,
                 drivers: Mapping[str, base.BaseDriver],
                 timeout: float) -> None:
        self._db = db
        self._rings = rings
        self._drivers = drivers
        self._timeout = timeout

    def iter_owned_nodes(self, filters: Mapping[str, Any] | None,
                         limit: int | None) -> Iterator[base.DriverNode]:
        filters = dict(filters or {})
        partitions = sorted(self._rings.owned_partitions())
        if not partitions:
            return
        found = self._db.list_nodes(driver=filters.pop("driver", None),
                                    maintenance=filters.pop("maintenance",
                                                            None),
                                    partitions=partitions)
        count = 0
        for node in found:
            if limit is not None and count >= limit:
                return
            if any(getattr(node, key, None) != value
                   for key, value in filters.items()):
                continue
            if node.reservation is None and self._rings.owns(node.uuid):
                count += 1
                yield nodes.driver_view(node)

    @contextlib.contextmanager
    def reserved(self, node_uuid: str, purpose: str
                 ) -> Iterator[base.DriverNode]:
        with task.acquire(self._db, node_uuid, self._rings.holder,
                          self._drivers, self._timeout) as t:
            yield nodes.driver_view(t.node)


@dataclasses.dataclass
class _Runtime:
    """Everything a started worker holds; built in ``start()``."""

    settings: WorkerSettings
    db: db_api.Connection
    drivers: dict[str, base.BaseDriver]
    pool: worker_pool.WorkerPool
    rings: ownership.Rings
    power_sync: power_sync.PowerSync
    actions: power_actions.PowerActions
    runner: periodic_runner.PeriodicRunner
    #: The RPC transport, server and the thread starting it; None
    #: without ``transport_url``.
    transport: Any = None
    rpc_server: Any = None
    rpc_starter: threading.Thread | None = None
    #: Versioned notifications; None when disabled.
    notifier: notifications.Sender | None = None


class ConductorService(service.ServiceBase):
    """One conductor worker process.

    :param host: this host's name (``[DEFAULT] host``).
    :param worker_id: stable id 0..W-1; a respawned worker keeps it.
    :param conf: the ConfigOpts read at ``start()`` (after a SIGHUP the
        master re-forks workers with the mutated configuration).
    :param start_extra: worker 0 runs the ``start extra`` hooks through it
        (see :class:`StartExtra`); None for the others.
    :param workers: the number of workers of this host: a sibling that
        has not registered yet keeps its share of the nodes during its
        start-up grace (None: only registered siblings count).
    """

    def __init__(self, host: str, worker_id: int,
                 conf: cfg.ConfigOpts,
                 start_extra: StartExtra | None = None,
                 workers: int | None = None) -> None:
        super().__init__()
        self.start_extra = start_extra
        #: The number of workers of this host (None: unknown).
        self.workers = workers
        #: This host's name.
        self.host = host
        #: The stable worker id, 0..W-1.
        self.worker_id = worker_id
        #: The reservation string of this worker (``host:worker_id``).
        self.holder = db_api.holder_name(host, worker_id)
        self._conf = conf
        self._stopped: threading.Event | None = None
        self._threads: list[threading.Thread] = []
        self._rt: _Runtime | None = None
        #: The master's pid (the service is built in the master): the only
        #: process a finished drain stops.
        self._master_pid = os.getpid()
        # NOTE: set by the SIGUSR1 handler (a flag only), acted upon by
        # the drain thread.
        self._drain_asked = False
        #: Wakes the drain thread: a request, a ring refresh that finds
        #: the host draining, a stop. Not pickled (see __getstate__):
        #: made again with the service.
        self._drain_wake = threading.Event()
        #: Held while a heartbeat is written, and by :meth:`stop` while it
        #: marks the worker offline: a beat under way when the stop began
        #: cannot land after it and show the worker online again.
        self._beat_lock = threading.Lock()
        #: ``time.monotonic()`` when the node gauges are next counted.
        self._node_gauges_due = 0.0

    # NOTE: oslo.service's threading backend may pickle the service to
    # decide between fork and spawn; keep only plain values in the state.
    def __getstate__(self) -> dict[str, Any]:
        return {"host": self.host, "worker_id": self.worker_id,
                "_conf": self._conf, "start_extra": self.start_extra,
                "_master_pid": self._master_pid,
                "workers": self.workers}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["host"], state["worker_id"],  # type: ignore
                      state["_conf"], state.get("start_extra"),
                      state.get("workers"))
        self._master_pid = state.get("_master_pid", self._master_pid)

    def request_drain(self) -> None:
        """Drain this host (SIGUSR1): only sets a flag, for any thread.

        The drain thread then marks every worker of the host draining in
        the database, as ``conductor-manage drain HOST`` does.
        """
        self._drain_asked = True
        self._drain_wake.set()

    @property
    def db(self) -> db_api.Connection | None:
        """The worker's database connection; None until started."""
        return self._rt.db if self._rt is not None else None

    @property
    def pool(self) -> worker_pool.WorkerPool | None:
        """The worker's bounded pool; None until started."""
        return self._rt.pool if self._rt is not None else None

    # -- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Build everything in the child, register, then start the loops.

        When anything fails (the DB engine, the drivers, collecting the
        periodic tasks...), the error is logged once at ERROR with its
        traceback, whatever was built is stopped (a registered worker is
        marked offline) and the master is told why.

        :raises: lifecycle.StartFailed (a SystemExit: the process exits 1
            and the master respawns it, or gives up, see
            :mod:`conductor.master`).
        """
        conductor_log.set_identity(
            conductor_log.worker_identity(self.host, self.worker_id))
        processutils.set_title("conductor: worker %d (%s)"
                               % (self.worker_id, self.host))
        reports.set_process("worker-%d" % self.worker_id)
        # NOTE: an outage the master was counting is not this worker's.
        conductor_log.reset_outage_logs()
        try:
            self._start()
        except Exception as exc:
            values = {"id": self.worker_id, "host": self.host,
                      "error": lifecycle.one_line(exc)}
            if isinstance(exc, exceptions.ConductorException):
                # NOTE: a predictable error (configuration, database,
                # driver) says all in one line; the traceback is DEBUG.
                LOG.error("Worker %(id)d of %(host)s failed to start: "
                          "%(error)s", values)
                LOG.debug("Failed start of worker %d", self.worker_id,
                          exc_info=True)
            else:
                LOG.exception("Worker %(id)d of %(host)s failed to start: "
                              "%(error)s", values)
            try:
                # NOTE: offline first: a SIGTERM arriving now may end the
                # process as soon as stop() returns, in another thread.
                if self._rt is not None:
                    self._rt.db.set_offline(self.host, self.worker_id)
                self.stop()
            except Exception:
                LOG.exception("Could not stop worker %s after its failed "
                              "start", self.holder)
            raise lifecycle.start_failed(self.worker_id, exc) from exc

    def _start(self) -> None:
        started = time.monotonic()
        settings = WorkerSettings.from_conf(self._conf)
        stopped = self._stopped = threading.Event()
        metrics.set_worker(self.worker_id,
                           self._conf.conductor.sync_power_state_interval)
        db = db_api.Connection.create(
            settings.database_url, max_retries=settings.db_max_retries,
            retry_interval=settings.db_retry_interval,
            max_pool_size=max(5, min(settings.pool_size, 20)),
            max_overflow=settings.pool_size, sqlite_pool=True)
        try:
            drivers = loader.load(settings.enabled_drivers)
            # NOTE: a worker that starts has no work in flight, so any
            # reservation in its name was left by its previous life.
            # Claimed power actions stay claimed: they are resolved by
            # reading the BMC first, never applied again blindly.
            released = db.release_reservations(holders=[self.holder])
        except BaseException:
            db.dispose()
            raise
        if released:
            LOG.warning("Released %d reservation(s) left by a previous "
                        "run of %s", released, self.holder)
        if stopped.is_set():
            db.dispose()
            return  # SIGTERM while starting: register nothing
        pool = worker_pool.WorkerPool(
            settings.pool_size, name="pool-w%d" % self.worker_id,
            max_abandoned=settings.max_abandoned_calls)
        # NOTE: one gate per worker process, shared by every driver call
        # it makes (see conductor.executor.bmc).
        bmc.configure(self._conf.conductor.bmc_min_interval,
                      self._conf.conductor.max_driver_calls_per_second)
        rings = ownership.Rings(
            db, self.host, self.worker_id,
            heartbeat_timeout=settings.heartbeat_timeout,
            reset_interval=settings.refresh_interval,
            liveness=ownership.Liveness(settings.heartbeat_interval,
                                        settings.heartbeat_timeout),
            workers=self.workers,
            handover_delay=settings.handover_delay,
            cleanup_age=settings.conductor_cleanup_age)
        timeout = settings.sync.timeout
        sync = power_sync.PowerSync(db, drivers, rings, pool, settings.sync,
                                    stopped)
        rt = self._rt = _Runtime(
            settings=settings, db=db, drivers=drivers, pool=pool,
            rings=rings, power_sync=sync,
            actions=power_actions.PowerActions(
                db, drivers, rings, pool, timeout=timeout,
                request_timeout=self._conf.conductor.power_request_timeout,
                # NOTE: with power sync on, its change feed tells when
                # there is no request to look for.
                requests=(sync.rows.requests_token
                          if settings.sync.interval > 0 else None)),
            runner=periodic_runner.PeriodicRunner(
                pool, _NodeProvider(db, rings, drivers, timeout)))
        db.register_conductor(self.host, self.worker_id, list(drivers),
                              pid=os.getpid())
        self._start_notifications(rt)
        assert rings.liveness is not None
        rings.liveness.started()
        self._spawn("heartbeat", self._heartbeat_loop, rt, stopped)
        rings.on_draining = self._drain_wake.set
        self._spawn("drain", self._drain_loop, rt, stopped)
        reports.add_state("pool", pool.stats)
        reports.add_state("ownership", lambda: {
            "live workers": rings.membership.describe(),
            "ring generation": rings.generation,
            "draining": rings.draining_since is not None})
        pool.start()
        rt.runner.start(self._collect_periodics(rt))
        self._start_rpc(rt)
        health.beat(self.worker_id)
        if self.start_extra is not None:
            self._spawn("start-extra", self.start_extra.run, db, stopped)
        LOG.info("Worker %(id)d of %(host)s started in %(secs).2fs with "
                 "drivers %(drivers)s",
                 {"id": self.worker_id, "host": self.host,
                  "secs": time.monotonic() - started,
                  "drivers": ", ".join(drivers)})
        # NOTE: what the worker holds now (modules, configuration, drivers,
        # engine, threads) lives as long as the process (a SIGHUP forks
        # new workers). Frozen out of the garbage collector, it is not
        # traversed again by every full collection the periodic work
        # triggers: a tenth of an idle worker's CPU went there.
        gc.freeze()

    def _collect_periodics(self, rt: _Runtime
                           ) -> list[periodics.PeriodicSpec]:
        own = ConductorPeriodics(rt.power_sync, rt.actions, rt.rings,
                                 self._conf)
        specs = periodics.collect(own)
        for name, driver in rt.drivers.items():
            specs += periodics.collect(*loader.interfaces(driver),
                                       driver_name=name)
        return specs

    def status(self) -> dict[str, Any]:
        """This worker's pool, periodic tasks and last sweeps (JSON-safe)."""
        rt = self._rt
        if rt is None:
            return {}
        return {"boot_id": processutils.boot_id(),
                "health": "degraded" if rt.pool.degraded else "healthy",
                "pool": rt.pool.stats(),
                "periodics": rt.runner.stats(),
                "reservations": task.holdings(rt.db, self.holder).status(),
                "bmc": bmc.current().stats(),
                "sweeps": {kind: result.as_dict() for kind, result in
                           rt.power_sync.last.items()}}

    def wait(self) -> None:
        """Block until :meth:`stop` ran."""
        if self._stopped is None:
            return
        self._stopped.wait()

    def stop(self, graceful: bool = True) -> None:
        """Stop within ``graceful_shutdown_timeout``.

        Order: stop taking new work (loops see the stop Event), wait for
        in-flight work with a bounded join, release this worker's
        reservations except those of tasks still running (their BMC call
        may still be under way; the next owner reads the BMC before it
        acts on them), mark it offline, then close the database. A stop
        that arrives while :meth:`start` runs tears down whatever exists
        (``start`` checks the Event before registering the worker).
        """
        if self._stopped is None or self._stopped.is_set():
            return
        LOG.info("Worker %d of %s stopping", self.worker_id, self.host)
        self._stopped.set()
        self._drain_wake.set()
        rt = self._rt
        timeout = (rt.settings.graceful_shutdown_timeout if rt is not None
                   else WorkerSettings.from_conf(
                       self._conf).graceful_shutdown_timeout)
        deadline = time.monotonic() + max(1.0, timeout - 2.0)
        if rt is not None:
            busy = rt.pool.stats()["busy"]
            if busy:
                # NOTE: the wait below may be long and is otherwise silent.
                LOG.info("Worker %(id)d of %(host)s stops within %(left).0f "
                         "s; %(busy)d pool thread(s) are busy (driver calls "
                         "or periodic tasks): a driver call in flight ends "
                         "by its deadline ([conductor] power_state_timeout)",
                         {"id": self.worker_id, "host": self.host,
                          "left": self._left(deadline), "busy": busy})
            # 0. Stop consuming RPC; finish the calls in flight (bounded).
            self._stop_rpc(rt, deadline)
            # 1. Stop scheduling; running tasks see the stop Event, finish.
            if not rt.runner.stop(self._left(deadline)):
                LOG.warning("Periodic tasks did not all finish in time")
            # 1b. No poll starts here any more: write the stamps of the
            # last polls (their next owners plan from them), then go
            # offline now, so that the other workers take this worker's
            # partitions at their next refresh instead of after
            # heartbeat_timeout. Nodes still reserved below stay out of
            # their reach.
            rt.power_sync.log_summary()
            try:
                rt.power_sync.flush()
            except Exception:
                LOG.warning("Could not write the last polls' times of %s; "
                            "their next owner polls those nodes again",
                            self.holder, exc_info=True)
            self._go_offline(rt, deadline)
            # 2. Drain the pool (power actions in flight) within the bound.
            rt.pool.wake_waiters()
            if not rt.pool.shutdown(wait=True,
                                    timeout=self._left(deadline)):
                LOG.warning("Pool threads still busy at shutdown; their "
                            "nodes stay reserved")
        for thread in self._threads:
            thread.join(self._left(deadline))
            if thread.is_alive():
                LOG.warning("Thread %s did not stop in time", thread.name)
        if rt is not None and rt.notifier is not None:
            # NOTE: after the pool drained: the outcome of the actions in
            # flight is queued and sent within the bound.
            notifications.install(None)
            rt.notifier.stop(self._left(deadline))
            rt.notifier = None
        if rt is not None:
            held = task.holdings(rt.db, self.holder)
            # NOTE: from here no task starts and no driver call begins;
            # a task not released yet may be inside its call.
            in_use = held.close()
            try:
                rt.db.release_reservations(holders=[self.holder],
                                           exclude=in_use)
                held.forget_releases()
                if in_use:
                    LOG.warning("%(n)d node(s) stay reserved by %(holder)s: "
                                "their task did not finish in time; their "
                                "next owner reads the BMC before acting: "
                                "%(nodes)s", {"n": len(in_use),
                                              "holder": self.holder,
                                              "nodes": ", ".join(in_use)})
                rt.db.set_offline(self.host, self.worker_id)
            except Exception:
                LOG.exception("Could not mark worker %s offline",
                              self.holder)
            rt.db.dispose()
        metrics.flush()
        LOG.info("Worker %d of %s stopped", self.worker_id, self.host)

    def _go_offline(self, rt: _Runtime, deadline: float) -> None:
        """Mark this worker offline once no heartbeat is being written.

        A beat that began before the stop would otherwise land after this
        write and show the worker online until the stop's last write
        (after the pool drained) or ``heartbeat_timeout``, and its
        partitions would wait that long for their next owners. The wait
        is short (at most a heartbeat interval, and half of what is left
        of the stop's time, which the pool's drain needs): a beat slower
        than that is not waited for; this write is made anyway, and again
        at the end of the stop once the heartbeat thread ended. Such a
        beat, landing after either, is refused by the database: it began
        before the mark (see Connection.heartbeat).
        """
        wait = min(self._left(deadline) / 2.0,
                   rt.settings.heartbeat_interval)
        waited = self._beat_lock.acquire(timeout=wait)
        if not waited:
            LOG.warning("A heartbeat of %(holder)s is still being written "
                        "after %(wait).1fs; marking it offline without "
                        "waiting for it", {"holder": self.holder,
                                           "wait": wait})
        try:
            rt.db.set_offline(self.host, self.worker_id)
        except Exception:
            LOG.exception("Could not mark worker %s offline", self.holder)
        finally:
            if waited:
                self._beat_lock.release()

    def _start_notifications(self, rt: _Runtime) -> None:
        sender = notifications.Sender.from_conf(self._conf, self.host)
        if sender is None:
            return
        rt.notifier = sender
        sender.start()
        notifications.install(sender)

    # -- RPC -----------------------------------------------------------

    def _start_rpc(self, rt: _Runtime) -> None:
        """Serve RPC when ``[DEFAULT] transport_url`` is set; else say so.

        The server starts on a thread of its own: connecting waits for the
        broker (oslo.messaging retries forever) and the periodic work must
        not wait with it.

        :raises: ConfigInvalid when ``transport_url`` is malformed.
        """
        if not rpc.enabled(self._conf):
            LOG.info("RPC disabled: [DEFAULT] transport_url is not set")
            return
        rt.transport = rpc.get_transport(self._conf)
        endpoint = manager.ConductorManager(
            self.host, rt.db, rt.drivers, rt.rings, rt.pool, rt.actions,
            # NOTE: a bounded retry: a forward must not hold an RPC
            # thread for the whole of a broker outage.
            rpcapi.ConductorAPI.from_conf(self._conf, rt.transport,
                                          retry=3),
            heartbeat_timeout=rt.settings.heartbeat_timeout,
            action_timeout=rt.settings.sync.timeout,
            sync_interval=rt.settings.sync.interval)
        rt.rpc_server = rpc.build_server(rt.transport, self.host,
                                         [endpoint])
        rt.rpc_starter = threading.Thread(
            target=self._run_rpc_server, args=(rt.rpc_server,),
            name="rpc-start-w%d" % self.worker_id, daemon=True)
        rt.rpc_starter.start()

    def _run_rpc_server(self, server: Any) -> None:
        try:
            server.start()
        except Exception:
            LOG.exception("RPC server of %s could not start", self.holder)
            return
        LOG.info("RPC server of %(holder)s consuming topic %(topic)s as "
                 "%(host)s", {"holder": self.holder, "topic": rpc.TOPIC,
                              "host": self.host})

    def _stop_rpc(self, rt: _Runtime, deadline: float) -> None:
        if rt.transport is None:
            return
        server = rt.rpc_server
        if rt.rpc_starter is not None and rt.rpc_starter.is_alive():
            # NOTE: stop() would wait for start(), which waits for the
            # broker; nothing was consumed yet, so only close the transport.
            LOG.warning("RPC server of %s never connected to the broker",
                        self.holder)
            server = None
        rpc.stop_server(server, rt.transport, self._left(deadline))
        rt.rpc_server = rt.transport = None

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def reset(self) -> None:
        """Nothing to reset: after SIGHUP the master re-forks workers."""

    # -- loops ---------------------------------------------------------

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name="%s-w%d" % (name, self.worker_id),
            daemon=True)
        thread.start()
        self._threads.append(thread)

    def _health_changed(self, rt: _Runtime, degraded: bool) -> None:
        """Say that the worker became degraded, or healthy again."""
        _, running = rt.pool.abandoned_calls()
        if degraded:
            LOG.error("Worker %(holder)s is degraded: %(n)d abandoned "
                      "driver call(s) still running reached [conductor] "
                      "max_abandoned_calls (%(cap)d). It heartbeats as "
                      "offline so that other workers take its nodes over "
                      "until those calls return",
                      {"holder": self.holder, "n": running,
                       "cap": rt.pool.max_abandoned})
        else:
            LOG.info("Worker %(holder)s is healthy again: %(n)d abandoned "
                     "driver call(s) still running (cap %(cap)d); it takes "
                     "its share of the nodes back",
                     {"holder": self.holder, "n": running,
                      "cap": rt.pool.max_abandoned})

    def _heartbeat_loop(self, rt: _Runtime, stopped: threading.Event
                        ) -> None:
        interval = rt.settings.heartbeat_interval
        held = task.holdings(rt.db, self.holder)
        degraded = False
        while not stopped.wait(interval):
            beat = False
            if rt.pool.degraded != degraded:
                degraded = not degraded
                self._health_changed(rt, degraded)
            try:
                begun = timeutils.utcnow()
                status = self.status()
                with self._beat_lock:
                    if stopped.is_set():
                        # NOTE: the stop marks the worker offline; a beat
                        # written now would show it online again.
                        break
                    # NOTE: a beat slower than the stop's wait for it is
                    # refused by the database once the stop marked the
                    # worker offline (see Connection.heartbeat).
                    beat = rt.db.heartbeat(self.host, self.worker_id,
                                           drivers=list(rt.drivers),
                                           pid=os.getpid(), status=status,
                                           online=not degraded, at=begun)
                if beat:
                    health.beat(self.worker_id)
                    if rt.rings.liveness is not None:
                        rt.rings.liveness.beat()
                    HEARTBEAT_LOG.debug("Heartbeat of %s (every %ss)",
                                        self.holder, interval)
                else:
                    LOG.info("The heartbeat of %(holder)s begun at "
                             "%(at)s was not written: the worker was "
                             "marked offline, or registered by another "
                             "process, after it began",
                             {"holder": self.holder,
                              "at": begun.isoformat(" ", "seconds")})
            except Exception as exc:
                # NOTE: a database blip must not end the heartbeat loop;
                # peers take our nodes over only if it lasts past
                # heartbeat_timeout.
                if not conductor_log.database_failed(
                        "heartbeat of %s" % self.holder, exc):
                    LOG.exception("Heartbeat of %s failed", self.holder)
            else:
                conductor_log.database_ok()
            metrics.heartbeat(beat)
            if beat and metrics.enabled():
                # NOTE: only with the database answering: the gauges read
                # it, and an outage is already logged once above.
                self._refresh_metrics(rt)
            # NOTE: failed releases are retried here at the latest (all of
            # them once the database answered): a worker never keeps a
            # reservation for a call it is not making.
            held.retry_releases(now=beat)

    def _drain_loop(self, rt: _Runtime, stopped: threading.Event) -> None:
        """Act on a drain request; worker 0 stops the conductor after it.

        A request comes as SIGUSR1 (:meth:`request_drain`), written to the
        database here, or straight from the database (``conductor-manage
        drain``), which the rings' refreshes read. From the moment the
        host is seen draining, the other hosts own its nodes; it keeps
        polling them (and finishes its in-flight actions) for
        ``drain_handover`` seconds, so that no node waits on the others'
        next ring refresh, then worker 0 sends SIGTERM to the master: the
        graceful stop follows and the conductor exits 0.
        """
        written = False
        announced = False
        wake = self._drain_wake
        while True:
            # NOTE: a sleep until something can change; a fixed short poll
            # woke every worker twice a second for the rare drain.
            wait = DRAIN_POLL
            since = rt.rings.draining_since
            if announced and since is not None and self.worker_id == 0:
                wait = min(wait, max(0.0, since + rt.settings.drain_handover
                                     - time.monotonic()))
            wake.wait(wait)
            wake.clear()
            if stopped.is_set():
                return
            if self._drain_asked and not written:
                try:
                    rt.db.set_draining(self.host)
                    rt.rings.update()
                    written = True
                except Exception:
                    LOG.exception("Could not mark %s draining; retrying in "
                                  "%ss", self.host,
                                  rt.settings.heartbeat_interval)
                    stopped.wait(rt.settings.heartbeat_interval)
                    wake.set()
                    continue
            since = rt.rings.draining_since
            if since is None:
                continue
            handover = rt.settings.drain_handover
            if not announced:
                announced = True
                LOG.warning("Host %(host)s is draining: the other hosts "
                            "own its nodes now; worker %(id)d works on for "
                            "%(secs)gs while they take over, then the "
                            "conductor stops",
                            {"host": self.host, "id": self.worker_id,
                             "secs": handover})
            if self.worker_id != 0 or \
                    time.monotonic() - since < handover:
                continue
            if os.getppid() != self._master_pid:
                LOG.error("Drain of %s done but the master (pid %d) is "
                          "gone; stopping this worker", self.host,
                          self._master_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            LOG.warning("Drain of %(host)s done after %(secs).1fs; "
                        "stopping the conductor",
                        {"host": self.host,
                         "secs": time.monotonic() - since})
            os.kill(self._master_pid, signal.SIGTERM)
            return

    def _refresh_metrics(self, rt: _Runtime) -> None:
        """The gauges that change without an event (heartbeat loop).

        The node gauges are counted at most once per sync interval, from
        power sync's rows in memory (see conductor.node_cache), which
        hold every node of this worker's partitions: they cost the
        database nothing. With power sync off, from one aggregate query
        over the worker's own partitions instead.
        """
        stats = rt.pool.stats()
        metrics.pool(stats["size"], stats["busy"])
        interval = rt.settings.sync.interval
        now = time.monotonic()
        cache = rt.power_sync.rows
        if now < self._node_gauges_due or (interval > 0
                                           and not cache.loaded):
            metrics.flush()
            return
        self._node_gauges_due = now + max(interval,
                                          rt.settings.heartbeat_interval)
        try:
            wall = timeutils.utcnow()
            before = wall - datetime.timedelta(
                seconds=status_mod.OVERDUE_INTERVALS * interval)
            if interval > 0:
                counts = cache.counts(before)
                if counts is None:
                    # NOTE: power sync is reading the database: at the
                    # next heartbeat.
                    self._node_gauges_due = now
                    metrics.flush()
                    return
                owned, overdue, oldest, maintenance = counts
            else:
                owned, overdue, oldest, maintenance = \
                    rt.db.owned_node_counts(rt.rings.owned_partitions(),
                                            overdue_before=before)
        except Exception as exc:
            LOG.warning("Could not count the nodes of %s for the metrics: "
                        "%s", self.holder, exc)
            metrics.flush()
            return
        metrics.refresh_nodes(
            owned=owned, overdue=overdue, maintenance=maintenance,
            oldest=(wall - oldest).total_seconds() if oldest else 0.0)


class StartExtra:
    """The ``start extra`` hooks: run once, when every worker is up.

    Created in the master before the fork (shared-memory flags, no
    threads: a thread running in the master while it forks can leave a
    lock held in the child). Worker 0 calls :meth:`run` from a thread of
    its own once it has started: it waits until ``workers`` workers of its
    host registered after the launch, runs the hooks, and records the
    outcome. A failing hook stops the conductor (SIGTERM to the master),
    which then exits 1. A respawned worker 0 does not run them again.

    :param timeout: seconds to wait for the workers before warning.
    """

    PENDING, DONE, FAILED = 0, 1, 2

    def __init__(self, conf: cfg.ConfigOpts, workers: int,
                 hook_list: Sequence[hooks.Hook],
                 timeout: float = 120.0) -> None:
        self._conf = conf
        self._workers = workers
        self._hooks = list(hook_list)
        self._timeout = timeout
        # NOTE: MySQL/MariaDB store DATETIME to the second; a worker that
        # registers within the launch's second must still count.
        self._since = timeutils.utcnow().replace(microsecond=0) - \
            datetime.timedelta(seconds=1)
        self._state = multiprocessing.get_context("fork").Value("b", 0)

    @property
    def failed(self) -> bool:
        return bool(self._state.value == self.FAILED)

    def run(self, db: db_api.Connection, stop: threading.Event) -> None:
        """Wait for the workers, then run the hooks (in worker 0)."""
        with self._state.get_lock():
            if self._state.value != self.PENDING:
                return
            # NOTE: claimed now, so a respawned worker 0 never runs them
            # twice even if this one dies half-way.
            self._state.value = self.DONE
        started = time.monotonic()
        if not self._wait_for_workers(db, stop):
            return
        LOG.info("All %(n)d worker(s) of %(host)s are up after %(secs).2fs",
                 {"n": self._workers, "host": self._conf.host,
                  "secs": time.monotonic() - started})
        try:
            hooks.run_hooks(self._hooks, "start", "extra", conf=self._conf,
                            config_files=list(self._conf.config_file))
        except hooks.HookError as exc:
            LOG.error("Stopping the conductor: %s", exc)
            self._state.value = self.FAILED
            os.kill(os.getppid(), signal.SIGTERM)

    def _wait_for_workers(self, db: db_api.Connection,
                          stop: threading.Event) -> bool:
        deadline = time.monotonic() + self._timeout
        while not stop.wait(0.2):
            try:
                records = db.list_conductors()
            except Exception as exc:
                # NOTE: a database blip must not cancel the hooks for good.
                if not conductor_log.database_failed(
                        "reading the workers for the start extra hooks",
                        exc):
                    LOG.exception("Could not read the workers; retrying")
                continue
            rows = [row for row in records
                    if row.host == self._conf.host and row.online
                    and row.started_at >= self._since]
            if len(rows) >= self._workers:
                return True
            if deadline and time.monotonic() > deadline:
                LOG.warning("Only %(up)d of %(n)d workers registered within "
                            "%(secs)ds; 'start extra' hooks wait on",
                            {"up": len(rows), "n": self._workers,
                             "secs": self._timeout})
                deadline = 0.0
        return False

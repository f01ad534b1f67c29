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
import logging
import os
import threading
import time
from typing import Any, Iterator, Mapping

from oslo_config import cfg
from oslo_service import service

from conductor.common import log as conductor_log
from conductor.common import pool as worker_pool
from conductor.common import rpc
from conductor import conf as conductor_conf
from conductor.db import api as db_api
from conductor.drivers import base
from conductor.drivers import loader
from conductor import manager
from conductor import ownership
from conductor import periodics
from conductor import power_actions
from conductor import power_sync
from conductor import rpcapi

LOG = logging.getLogger(__name__)
#: One DEBUG line per heartbeat; enable with
#: ``default_log_levels = conductor.heartbeat=DEBUG`` (the quick start does).
HEARTBEAT_LOG = logging.getLogger("conductor.heartbeat")


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker reads from config, read once in ``start()``."""

    host: str
    database_url: str
    db_max_retries: int
    db_retry_interval: int
    enabled_drivers: tuple[str, ...]
    pool_size: int
    heartbeat_interval: float
    heartbeat_timeout: float
    hash_ring_reset_interval: float
    graceful_shutdown_timeout: float
    sync: power_sync.SyncSettings

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> "WorkerSettings":
        return cls(
            host=conf.host,
            database_url=conf.database.connection,
            db_max_retries=conf.database.max_retries,
            db_retry_interval=conf.database.retry_interval,
            enabled_drivers=tuple(conf.enabled_drivers),
            pool_size=conf.conductor.workers_pool_size,
            heartbeat_interval=conf.conductor.heartbeat_interval,
            heartbeat_timeout=conf.conductor.heartbeat_timeout,
            hash_ring_reset_interval=conf.conductor.hash_ring_reset_interval,
            graceful_shutdown_timeout=conf.graceful_shutdown_timeout or 60,
            sync=power_sync.SyncSettings(
                workers=conf.conductor.sync_power_state_workers,
                timeout=conf.conductor.power_state_timeout,
                max_retries=conf.conductor.power_state_sync_max_retries,
                force=conf.conductor.force_power_state_during_sync),
        )


def _option(group: str, name: str) -> Any:
    """A resolver read by periodics.collect() at worker start, not import."""
    return lambda: getattr(getattr(conductor_conf.CONF, group), name)


class ConductorPeriodics:
    """The conductor's own periodic tasks (collected at worker start)."""

    def __init__(self, sync: power_sync.PowerSync,
                 actions: power_actions.PowerActions,
                 rings: ownership.Rings, db: db_api.Connection) -> None:
        self._sync = sync
        self._actions = actions
        self._rings = rings
        self._db = db

    @periodics.periodic(
        spacing=_option("conductor", "sync_power_state_interval"),
        run_immediately=True)
    def sync_power_states(self) -> None:
        """Read every owned node's power state; record what changed."""
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
        """Apply requested power actions on owned nodes."""
        self._actions.scan()

    @periodics.periodic(
        spacing=_option("conductor", "hash_ring_reset_interval"))
    def refresh_ownership(self) -> None:
        """Rebuild the rings; release reservations of dead workers."""
        self._rings.refresh(force=True)
        self._rings.release_dead_reservations(self._db.node_uuids())


class _NodeProvider:
    """Owned nodes and reservations for driver ``node_periodic`` tasks."""

    def __init__(self, db: db_api.Connection,
                 rings: ownership.Rings) -> None:
        self._db = db
        self._rings = rings

    def iter_owned_nodes(self, filters: Mapping[str, Any] | None,
                         limit: int | None) -> Iterator[base.DriverNode]:
        filters = dict(filters or {})
        nodes = self._db.list_nodes(driver=filters.pop("driver", None),
                                    maintenance=filters.pop("maintenance",
                                                            None))
        count = 0
        for node in nodes:
            if limit is not None and count >= limit:
                return
            if any(getattr(node, key, None) != value
                   for key, value in filters.items()):
                continue
            if node.reservation is None and self._rings.owns(node.uuid):
                count += 1
                yield _driver_node(node)

    @contextlib.contextmanager
    def reserved(self, node_uuid: str, purpose: str
                 ) -> Iterator[base.DriverNode]:
        with self._db.reserved(node_uuid, self._rings.holder) as node:
            yield _driver_node(node)


def _driver_node(node: db_api.NodeRecord) -> base.DriverNode:
    return base.DriverNode(node.uuid, node.name, node.driver,
                           node.driver_info, node.power_state)


class ConductorService(service.ServiceBase):
    """One conductor worker process.

    :param host: this host's name (``[DEFAULT] host``).
    :param worker_id: stable id 0..W-1; a respawned worker keeps it.
    :param conf: the ConfigOpts read at ``start()`` (after a SIGHUP the
        master re-forks workers with the mutated configuration).
    """

    def __init__(self, host: str, worker_id: int,
                 conf: cfg.ConfigOpts, start_extra: Any = None) -> None:
        super().__init__()
        #: Worker 0 runs the ``start extra`` hooks through it (see
        #: ``conductor.master.StartExtra``); None for the others.
        self.start_extra = start_extra
        #: This host's name.
        self.host = host
        #: The stable worker id, 0..W-1.
        self.worker_id = worker_id
        #: The reservation string of this worker (``host:worker_id``).
        self.holder = db_api.holder_name(host, worker_id)
        self._conf = conf
        self._started = False
        self._stopped: threading.Event | None = None
        self._threads: list[threading.Thread] = []
        self.settings: WorkerSettings | None = None
        self.db: db_api.Connection | None = None
        self.drivers: dict[str, base.BaseDriver] = {}
        self.pool: worker_pool.WorkerPool | None = None
        self.rings: ownership.Rings | None = None
        self.power_sync: power_sync.PowerSync | None = None
        self.actions: power_actions.PowerActions | None = None
        self.runner: periodics.PeriodicRunner | None = None
        #: The RPC transport and server; None without ``transport_url``.
        self.transport: Any = None
        self.rpc_server: Any = None
        self._rpc_starter: threading.Thread | None = None

    # NOTE: oslo.service's threading backend may pickle the service to
    # decide between fork and spawn; keep only plain values in the state.
    def __getstate__(self) -> dict[str, Any]:
        return {"host": self.host, "worker_id": self.worker_id,
                "_conf": self._conf, "start_extra": self.start_extra}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["host"], state["worker_id"],  # type: ignore
                      state["_conf"], state.get("start_extra"))

    # -- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Build everything in the child, register, then start the loops.

        :raises: any error building the DB engine or the drivers; the
            process then exits 1 and the launcher respawns it.
        """
        conductor_log.set_identity(
            conductor_log.worker_identity(self.host, self.worker_id))
        started = time.monotonic()
        self.settings = settings = WorkerSettings.from_conf(self._conf)
        self._stopped = threading.Event()
        self.db = db_api.Connection.create(
            settings.database_url, max_retries=settings.db_max_retries,
            retry_interval=settings.db_retry_interval,
            max_pool_size=max(5, min(settings.pool_size, 20)),
            max_overflow=settings.pool_size)
        self.drivers = loader.load(settings.enabled_drivers)
        # NOTE: a worker that starts has no work in flight, so any
        # reservation in its name was left by its previous life (SIGKILL).
        released = self.db.release_reservations(holders=[self.holder])
        if released:
            LOG.warning("Released %d reservation(s) left by a previous "
                        "run of %s", released, self.holder)
        if self._stopped.is_set():
            return  # SIGTERM while starting: register nothing
        self.db.register_conductor(self.host, self.worker_id,
                                   list(self.drivers), pid=os.getpid())
        self._spawn("heartbeat", self._heartbeat_loop)
        self.pool = worker_pool.WorkerPool(settings.pool_size,
                                           name="pool-w%d" % self.worker_id)
        self.pool.start()
        self.rings = ownership.Rings(
            self.db, self.host, self.worker_id,
            heartbeat_timeout=settings.heartbeat_timeout,
            reset_interval=settings.hash_ring_reset_interval)
        self.power_sync = power_sync.PowerSync(
            self.db, self.drivers, self.rings, self.pool, settings.sync,
            self._stopped)
        self.actions = power_actions.PowerActions(
            self.db, self.drivers, self.rings, self.pool,
            timeout=settings.sync.timeout)
        self.runner = periodics.PeriodicRunner(
            self.pool, _NodeProvider(self.db, self.rings))
        self.runner.start(self._collect_periodics())
        self._start_rpc()
        if self.start_extra is not None:
            self._spawn("start-extra", self.start_extra.run, self.db,
                        self._stopped)
        self._started = True
        LOG.info("Worker %(id)d of %(host)s started in %(secs).2fs with "
                 "drivers %(drivers)s",
                 {"id": self.worker_id, "host": self.host,
                  "secs": time.monotonic() - started,
                  "drivers": ", ".join(self.drivers)})

    def _collect_periodics(self) -> list[periodics.PeriodicSpec]:
        assert self.power_sync and self.actions and self.rings and self.db
        own = ConductorPeriodics(self.power_sync, self.actions, self.rings,
                                 self.db)
        specs = periodics.collect(own)
        for name, driver in self.drivers.items():
            specs += periodics.collect(*loader.interfaces(driver),
                                       driver_name=name)
        return specs

    def status(self) -> dict[str, Any]:
        """This worker's pool, periodic tasks and last sweeps (JSON-safe)."""
        if not (self.pool and self.runner and self.power_sync):
            return {}
        return {"pool": self.pool.stats(),
                "periodics": self.runner.stats(),
                "sweeps": {kind: result.as_dict() for kind, result in
                           self.power_sync.last.items()}}

    def wait(self) -> None:
        """Block until :meth:`stop` ran."""
        if self._stopped is None:
            return
        self._stopped.wait()

    def stop(self, graceful: bool = True) -> None:
        """Stop within ``graceful_shutdown_timeout``.

        Order: stop taking new work (loops see the stop Event), wait for
        in-flight work with a bounded join, release this worker's
        reservations, mark it offline, then close the database. A stop
        that arrives while :meth:`start` runs tears down whatever exists
        (``start`` checks the Event before registering the worker).
        """
        if self._stopped is None or self._stopped.is_set():
            return
        LOG.info("Worker %d of %s stopping", self.worker_id, self.host)
        self._stopped.set()
        assert self.settings is not None
        deadline = time.monotonic() + max(
            1.0, self.settings.graceful_shutdown_timeout - 2.0)
        # 0. Stop consuming RPC; finish the calls in flight (bounded).
        self._stop_rpc(deadline)
        # 1. Stop scheduling; running tasks see the stop Event and finish.
        if self.runner is not None:
            if not self.runner.stop(self._left(deadline)):
                LOG.warning("Periodic tasks did not all finish in time")
        # 2. Drain the pool (power actions in flight) within the bound.
        if self.pool is not None:
            self.pool.wake_waiters()
            if not self.pool.shutdown(wait=True,
                                      timeout=self._left(deadline)):
                LOG.warning("Pool threads still busy at shutdown; their "
                            "reservations are released below")
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                LOG.warning("Thread %s did not stop in time", thread.name)
        if self.db is not None:
            try:
                self.db.release_reservations(holders=[self.holder])
                self.db.set_offline(self.host, self.worker_id)
            except Exception:
                LOG.exception("Could not mark worker %s offline",
                              self.holder)
            self.db.dispose()
        self._started = False
        LOG.info("Worker %d of %s stopped", self.worker_id, self.host)

    # -- RPC -----------------------------------------------------------

    def _start_rpc(self) -> None:
        """Serve RPC when ``[DEFAULT] transport_url`` is set; else say so.

        The server starts on a thread of its own: connecting waits for the
        broker (oslo.messaging retries forever) and the periodic work must
        not wait with it.

        :raises: ConfigInvalid when ``transport_url`` is malformed.
        """
        if not rpc.enabled(self._conf):
            LOG.info("RPC disabled: [DEFAULT] transport_url is not set")
            return
        assert self.db and self.rings and self.pool and self.actions
        assert self.settings is not None and self._stopped is not None
        self.transport = rpc.get_transport(self._conf)
        endpoint = manager.ConductorManager(
            self.host, self.db, self.drivers, self.rings, self.pool,
            self.actions,
            # NOTE: a bounded retry: a forward must not hold an RPC
            # thread for the whole of a broker outage.
            rpcapi.ConductorAPI.from_conf(self._conf, self.transport,
                                          retry=3),
            heartbeat_timeout=self.settings.heartbeat_timeout,
            action_timeout=self.settings.sync.timeout,
            stop=self._stopped)
        self.rpc_server = rpc.build_server(self.transport, self.host,
                                           [endpoint])
        self._rpc_starter = threading.Thread(
            target=self._run_rpc_server, name="rpc-start-w%d"
            % self.worker_id, daemon=True)
        self._rpc_starter.start()

    def _run_rpc_server(self) -> None:
        try:
            self.rpc_server.start()
        except Exception:
            LOG.exception("RPC server of %s could not start", self.holder)
            return
        LOG.info("RPC server of %(holder)s consuming topic %(topic)s as "
                 "%(host)s", {"holder": self.holder, "topic": rpc.TOPIC,
                              "host": self.host})

    def _stop_rpc(self, deadline: float) -> None:
        if self.transport is None:
            return
        starter = self._rpc_starter
        server = self.rpc_server
        if starter is not None and starter.is_alive():
            # NOTE: stop() would wait for start(), which waits for the
            # broker; nothing was consumed yet, so only close the transport.
            LOG.warning("RPC server of %s never connected to the broker",
                        self.holder)
            server = None
        rpc.stop_server(server, self.transport, self._left(deadline))
        self.rpc_server = self.transport = None

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

    def _heartbeat_loop(self) -> None:
        assert self._stopped is not None and self.db is not None
        assert self.settings is not None
        interval = self.settings.heartbeat_interval
        while not self._stopped.wait(interval):
            try:
                self.db.heartbeat(self.host, self.worker_id,
                                  drivers=list(self.drivers),
                                  pid=os.getpid(), status=self.status())
                HEARTBEAT_LOG.debug("Heartbeat of %s (every %ss)",
                                    self.holder, interval)
            except Exception:
                # NOTE: a database blip must not end the heartbeat loop;
                # peers take our nodes over only if it lasts past
                # heartbeat_timeout.
                LOG.exception("Heartbeat of %s failed", self.holder)

# SPDX-License-Identifier: Apache-2.0
"""The master process after start-up: fork workers, watch, stop.

Usage (what ``conductor.cmd.conductor`` does)::

    launcher, start_extra, policy = master.launch(conf, workers, hook_list)
    try:
        launcher.wait()          # ends the process with sys.exit
    finally:
        master.on_stop(conf, hook_list)
        if start_extra.failed or policy.gave_up: ...   # exit 1

oslo.service's threading backend supervises the workers with cotyledon.
Two small subclasses of cotyledon's own classes, installed by
:func:`launch`, change what the conductor needs changed:

- **SIGINT (Ctrl-C) is SIGTERM**, in the master and in every worker: the
  workers stop gracefully (in-flight work finishes, reservations are
  released, the worker is marked offline) and the master exits 0. Only a
  second SIGINT forces an immediate exit (exit code 1), and says so in
  the log. Cotyledon itself makes the first SIGINT an instantaneous exit.
- **A worker that fails to start is not re-forked forever**: see
  :class:`RestartPolicy`.
- **systemd hears READY=1 once every worker is up**, not when the master
  starts forking, and watchdog pings after that: the master's
  :class:`conductor.health.Monitor` sends them, and serves ``/metrics``
  and ``/healthz`` when ``[metrics] port`` is set.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import types
from typing import Any, Callable, Sequence

import cotyledon
from cotyledon import _service_worker
from cotyledon import _utils
from oslo_config import cfg
from oslo_service import service

from conductor import checks
from conductor.common import exceptions
from conductor.common import hooks
from conductor.common import metrics
from conductor.common import processutils
from conductor.common import systemd
from conductor import health
from conductor import lifecycle
from conductor import service as conductor_service

LOG = logging.getLogger(__name__)


class RestartPolicy:
    """When to fork again a worker that failed to start; when to give up.

    The master calls :meth:`worker_died` for each worker process that
    ended. A worker that failed to start (it left a reason, see
    :mod:`conductor.lifecycle`) is forked again after a wait of
    :attr:`FIRST_DELAY` seconds, doubling at each failure in a row up to
    :attr:`MAX_DELAY`; after ``max_failures`` failures in a row of the
    same worker (0: never) the policy gives up. A worker that ended after
    it had started resets its count.

    :param max_failures: ``[conductor] max_worker_start_failures``.
    :param wait: waits the given seconds, returning early when the
        conductor is stopping (an ``Event.wait``; tests pass a fake clock).
    """

    FIRST_DELAY = 1.0
    MAX_DELAY = 30.0

    def __init__(self, max_failures: int,
                 wait: Callable[[float], Any]) -> None:
        self.max_failures = max_failures
        self._wait = wait
        self._in_a_row: dict[int, int] = {}
        #: Why the policy gave up (names the worker and its error), or
        #: None while it has not.
        self.gave_up: str | None = None

    def failures_in_a_row(self, worker_id: int) -> int:
        return self._in_a_row.get(worker_id, 0)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row."""
        return min(self.MAX_DELAY,
                   self.FIRST_DELAY * 2 ** max(0, failures - 1))

    def worker_died(self, worker_id: int, reason: str | None) -> bool:
        """Account for a dead worker; wait before it is forked again.

        :param reason: why its start failed; None when it had started.
        :returns: False when the conductor must give up (see
            :attr:`gave_up`), True when the worker may be forked again.
        """
        if reason is None:
            self._in_a_row.pop(worker_id, None)
            return True
        count = self._in_a_row[worker_id] = \
            self.failures_in_a_row(worker_id) + 1
        if self.max_failures and count >= self.max_failures:
            self.gave_up = ("worker %d failed to start %d time(s) in a "
                            "row: %s" % (worker_id, count, reason))
            return False
        delay = self.delay(count)
        LOG.warning("Worker %(id)d failed to start (%(count)d time(s) in a "
                    "row, limit %(limit)s); forking it again in %(delay)g s",
                    {"id": worker_id, "count": count,
                     "limit": self.max_failures or "none", "delay": delay})
        self._wait(delay)
        return True


class _ServiceManager(cotyledon.ServiceManager):
    """Cotyledon's master, with SIGINT as SIGTERM and a restart policy."""

    def __init__(self, *args: Any, policy: RestartPolicy,
                 failures: lifecycle.StartFailures,
                 stopping: threading.Event,
                 monitor: Callable[["_ServiceManager"], health.Monitor],
                 check_reload: Callable[[], None] = lambda: None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = monitor(self)
        self._check_reload = check_reload
        self._forked = 0
        self._policy = policy
        self._failures = failures
        self._stopping = stopping
        self._sigints = 0
        self._worker_ids: dict[Any, int] = {}
        self.register_hooks(on_dead_worker=self._on_dead_worker)
        # NOTE: SIGUSR1 (drain) reaches _on_signal_received through
        # cotyledon's wakeup pipe, like its own signals; the forked
        # workers inherit the handler.
        signal.signal(signal.SIGUSR1, self._signal_catcher)

    def add(self, service: Any, workers: int = 1, args: Any = None,
            kwargs: Any = None) -> Any:
        service_id = super().add(service, workers, args, kwargs)
        # NOTE: oslo.service adds one ServiceWrapper per conductor worker,
        # with the ConductorService as its only argument.
        worker_id = getattr((args or (None,))[0], "worker_id", None)
        if isinstance(worker_id, int):
            self._worker_ids[service_id] = worker_id
        return service_id

    @staticmethod
    def _systemd_notify_once() -> None:
        # NOTE: cotyledon sends READY=1 before any worker is forked and
        # unsets NOTIFY_SOCKET; the health monitor sends it once every
        # worker is up, and keeps the socket for watchdog pings.
        return None

    def supervising(self) -> bool:
        thread = self._child_supervisor
        return (thread is not None and thread.is_alive()
                and not self._stopping.is_set())

    # -- signals (cotyledon calls this from its main-thread loop) -------

    def _on_signal_received(self, sig: int) -> None:
        if sig == signal.SIGUSR1:
            self._drain()
            return
        if sig == signal.SIGHUP and not self._reload_allowed():
            return
        if sig == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:
                self._force_exit()
            LOG.info("Caught SIGINT: stopping gracefully, as on SIGTERM; "
                     "a second SIGINT (Ctrl-C) forces the exit")
            sig = signal.SIGTERM
        if sig == signal.SIGTERM:
            self._stopping.set()
            # NOTE: the graceful stop blocks this (the main) thread until
            # the workers exit, so cotyledon reads no further signal: a
            # real handler counts the next SIGINTs meanwhile.
            signal.signal(signal.SIGINT, self._on_sigint_while_stopping)
        super()._on_signal_received(sig)

    def _reload_allowed(self) -> bool:
        """SIGHUP: check the files first; a bad one leaves all as it is."""
        problem = None
        try:
            self._check_reload()
        except exceptions.ConductorException as exc:
            problem = str(exc)
        except Exception:
            # NOTE: this runs in the master's signal loop: whatever the
            # check meets must not end the master.
            LOG.exception("Caught SIGHUP: reload refused, the workers go "
                          "on with the configuration they have; checking "
                          "the files failed")
            return False
        if problem is not None:
            # NOTE: logged after the except block: oslo.log would append
            # the exception being handled, saying the reason twice.
            LOG.error("Caught SIGHUP: reload refused, the workers go on "
                      "with the configuration they have. %s", problem)
            return False
        return True

    def _drain(self) -> None:
        """SIGUSR1: pass the drain request on to every worker."""
        if self._stopping.is_set():
            LOG.info("Caught SIGUSR1 while stopping: nothing to drain")
            return
        LOG.warning("Caught SIGUSR1: draining this host; the other hosts "
                    "take its nodes, then it stops (exit code 0)")
        for process in self._child_processes:
            if process.pid is not None:
                try:
                    os.kill(process.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass  # died meanwhile: its successor reads the DB

    def _on_sigint_while_stopping(self, signo: int,
                                  frame: types.FrameType | None) -> None:
        self._sigints += 1
        if self._sigints > 1:
            self._force_exit()
        LOG.info("Caught SIGINT while stopping gracefully; a second SIGINT "
                 "(Ctrl-C) forces the exit")

    def _force_exit(self) -> None:
        LOG.warning("Caught a second SIGINT: forced exit (exit code 1) "
                    "without waiting for the workers' graceful stop")
        # Cotyledon's instantaneous exit: SIGINT to the process group
        # (a worker's second SIGINT forces its exit too), then exit 1.
        self._fast_exit(reason="Forced exit of the master process")

    # -- workers ---------------------------------------------------------

    def _on_dead_worker(self, service_id: Any, index: int,
                        exit_code: int) -> None:
        """In cotyledon's supervisor thread, before it forks again."""
        worker_id = self._worker_ids.get(service_id)
        if worker_id is None:
            return
        metrics.worker_died(health.worker_pid(worker_id), worker_id,
                            restart=not self._stopping.is_set())
        if self._stopping.is_set():
            return
        reason = self._failures.take(worker_id)
        if self._policy.worker_died(worker_id, reason):
            return
        LOG.error("Stopping the conductor: %s", self._policy.gave_up)
        self._stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)

    def _start_worker(self, service_id: Any, worker_id: Any) -> None:
        if self._stopping.is_set():
            return  # stopping, or given up: no new worker
        super()._start_worker(service_id, worker_id)
        self._forked += 1
        if self._forked == len(self._worker_ids):
            # NOTE: the monitor's threads start once the first worker of
            # each id was forked, so that those forks happen without them.
            self.monitor.start()


class _ServiceWorker(_service_worker.ServiceWorker):
    """Cotyledon's worker side, with SIGINT as SIGTERM.

    A stop (SIGTERM, SIGINT) that arrives while the worker starts waits
    for ``start()`` to end, up to :data:`START_WAIT` seconds: the process
    ends when ``stop()`` returns, and a ``start()`` cut short at that
    moment could leave its worker registered online, or not yet offline
    after a failed start.
    """

    _sigints = 0
    #: Seconds a stop waits for a ``start()`` in progress.
    START_WAIT = 5.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._start_ended = threading.Event()
        super().__init__(*args, **kwargs)

    def _service_run(self) -> None:
        # NOTE: oslo.service's ServiceWrapper.run() without its raw
        # traceback on stderr: ConductorService.start() logs its errors.
        instance = self.service.service_instance  # type: ignore[attr-defined]
        with _utils.exit_on_exception():
            try:
                instance.start()
            finally:
                self._start_ended.set()
            instance.wait()

    def _service_terminate(self) -> None:
        if not self._start_ended.wait(self.START_WAIT):
            LOG.warning("%s still starting after %g s; stopping it anyway",
                        self.title, self.START_WAIT)
        super()._service_terminate()

    def _on_signal_received(self, sig: int) -> None:
        if sig == signal.SIGUSR1:
            instance = self.service.service_instance  # type: ignore
            instance.request_drain()
            return
        if sig == signal.SIGINT:
            self._sigints += 1
            if self._sigints == 1:
                LOG.info("Caught SIGINT: stopping %s gracefully, as on "
                         "SIGTERM; a second SIGINT forces the exit",
                         self.title)
                sig = signal.SIGTERM
            else:
                LOG.warning("Caught a second SIGINT: forced exit of %s "
                            "(exit code 1); work in flight is abandoned",
                            self.title)
        super()._on_signal_received(sig)


def launch(conf: cfg.ConfigOpts, workers: int,
           hook_list: Sequence[hooks.Hook] = ()
           ) -> tuple[service.ProcessLauncher, conductor_service.StartExtra,
                      RestartPolicy]:
    """One service per worker id, so a respawned worker keeps its id.

    Worker 0 runs the ``start extra`` hooks once every worker is up (see
    :class:`conductor.service.StartExtra`, returned so the caller can
    tell whether they failed). The :class:`RestartPolicy` returned tells
    whether the conductor gave up on a worker that cannot start.

    With ``[metrics] port`` set, metrics are set up (multiprocess mode)
    before the fork and the HTTP port is bound at once.

    :raises OSError: the metrics directory cannot be emptied, or the
        metrics port cannot be bound (the message names it).
    """
    start_extra = conductor_service.StartExtra(conf, workers, hook_list)
    failures = lifecycle.StartFailures(workers)
    lifecycle.install(failures)
    beats = health.WorkerBeats(workers)
    health.install(beats)
    stopping = threading.Event()
    policy = RestartPolicy(conf.conductor.max_worker_start_failures,
                           wait=stopping.wait)
    settings = health.Settings(
        host=conf.host,
        heartbeat_timeout=conf.conductor.heartbeat_timeout,
        database_url=conf.database.connection,
        bind_host=conf.metrics.bind_host, port=conf.metrics.port)
    if settings.port is not None:
        metrics.setup(metrics.directory_for(conf.state_path, conf.host))
    else:
        metrics.disable()

    def monitor(manager: _ServiceManager) -> health.Monitor:
        found = health.Monitor(beats, settings, manager.supervising,
                               notifier=systemd.Notifier.from_environ(),
                               watchdog=systemd.watchdog_interval(),
                               stopping=stopping.is_set)
        found.bind()
        return found

    def manager(*args: Any, **kwargs: Any) -> _ServiceManager:
        return _ServiceManager(*args, policy=policy, failures=failures,
                               stopping=stopping, monitor=monitor,
                               check_reload=functools.partial(
                                   checks.check_reload, conf),
                               **kwargs)

    # NOTE: oslo.service builds cotyledon.ServiceManager when the first
    # service is launched, and cotyledon forks _service_worker.
    # ServiceWorker: both are looked up when used.
    _service_worker.ServiceWorker = _ServiceWorker  # type: ignore[misc]
    original = cotyledon.ServiceManager
    cotyledon.ServiceManager = manager  # type: ignore[misc,assignment]
    try:
        launcher = service.ProcessLauncher(conf, restart_method="mutate")
        for worker_id in range(workers):
            launcher.launch_service(
                conductor_service.ConductorService(
                    conf.host, worker_id, conf,
                    start_extra=start_extra if worker_id == 0 else None,
                    workers=workers),
                workers=1)
    finally:
        cotyledon.ServiceManager = original  # type: ignore[misc]
    # NOTE: after cotyledon's manager named the process its own way.
    processutils.set_title("conductor: master (%s)" % conf.host)
    LOG.info("Conductor %(host)s starting %(workers)d worker(s)",
             {"host": conf.host, "workers": workers})
    return launcher, start_extra, policy


def on_stop(conf: cfg.ConfigOpts, hook_list: Sequence[hooks.Hook]) -> None:
    """Run the ``stop`` hooks; failures are logged and the rest still run."""
    hooks.run_hooks(hook_list, "stop", conf=conf,
                    config_files=list(conf.config_file))

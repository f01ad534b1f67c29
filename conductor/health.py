# SPDX-License-Identifier: Apache-2.0
"""Health of one conductor host: /healthz, /metrics, systemd notifications.

The master creates the shared :class:`WorkerBeats` before it forks (shared
memory, like :class:`conductor.lifecycle.StartFailures`) and
:func:`install`\\ s it; each worker calls :func:`beat` when it has started
and after each heartbeat it wrote to the database::

    beats = health.WorkerBeats(workers=2)
    health.install(beats)                       # master, before forking
    monitor = health.Monitor(beats, settings, supervisor_alive)
    monitor.bind()                              # fails fast: port in use
    ...                                         # fork the workers
    monitor.start()                             # master, after the fork
    ...
    health.beat(worker_id)                      # in worker ``worker_id``

The :class:`Monitor` runs in the master, on two threads started once the
first workers are forked: a loop that sends systemd ``READY=1`` when every
worker is up and ``WATCHDOG=1`` pings, and an HTTP server (stdlib
``wsgiref``) answering ``/metrics`` and ``/healthz``. Workers forked later
(respawns, SIGHUP) close the inherited listening socket at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import socket
import socketserver
import threading
import time
from typing import Any, Callable, Iterable
from wsgiref import simple_server

import sqlalchemy as sa

from conductor.common import metrics
from conductor.common import systemd

LOG = logging.getLogger(__name__)

_StartResponse = Callable[..., Any]


class WorkerBeats:
    """One slot per worker id: its pid and last heartbeat (monotonic)."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("fork")
        self.workers = workers
        self._beats = context.Array("d", workers)
        self._pids = context.Array("i", workers)

    def beat(self, worker_id: int, pid: int,
             now: float | None = None) -> None:
        if 0 <= worker_id < self.workers:
            self._pids[worker_id] = pid
            self._beats[worker_id] = time.monotonic() if now is None \
                else now

    def pid(self, worker_id: int) -> int | None:
        return self._pids[worker_id] or None

    def last(self, worker_id: int) -> float | None:
        """When the worker last beat (``time.monotonic``); None: never."""
        return self._beats[worker_id] or None


_installed: WorkerBeats | None = None


def install(beats: WorkerBeats | None) -> None:
    """Make ``beats`` the slots forked workers write to."""
    global _installed
    _installed = beats


def beat(worker_id: int) -> None:
    """In a worker: it is alive and wrote its heartbeat."""
    if _installed is not None:
        _installed.beat(worker_id, os.getpid())


def worker_pid(worker_id: int) -> int | None:
    """In the master: the last pid worker ``worker_id`` reported."""
    return _installed.pid(worker_id) if _installed is not None else None


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the monitor reads from config, read once in the master."""

    host: str
    heartbeat_timeout: float
    database_url: str
    #: None: no HTTP server (``[metrics] port`` unset).
    bind_host: str | None = None
    port: int | None = None
    #: Seconds between loop iterations (readiness, watchdog).
    tick: float = 0.5
    #: Seconds a database check result is reused.
    db_check_cache: float = 1.0


class _Handler(simple_server.WSGIRequestHandler):
    # NOTE: a client that connects and sends nothing must not hold its
    # thread forever.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("HTTP %s: " + format, self.client_address[0], *args)


class _Server(socketserver.ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class Monitor:
    """The master's health loop and HTTP server.

    :param beats: the workers' shared slots.
    :param settings: see :class:`Settings`.
    :param supervisor_alive: True while the master supervises its workers
        (cotyledon's supervisor thread runs).
    :param stopping: True once the master stops its workers.
    :param notifier: systemd's notification socket, or None.
    :param watchdog: seconds between watchdog pings, or None.
    """

    def __init__(self, beats: WorkerBeats, settings: Settings,
                 supervisor_alive: Callable[[], bool],
                 notifier: systemd.Notifier | None = None,
                 watchdog: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.beats = beats
        self.settings = settings
        self._supervisor_alive = supervisor_alive
        self._stopping = stopping
        self.stopping_sent = False
        self.notifier = notifier
        self.watchdog = watchdog
        self._clock = clock
        self._stop = threading.Event()
        self._server: simple_server.WSGIServer | None = None
        self._threads: list[threading.Thread] = []
        # NOTE: protects the cached database check below.
        self._db_lock = threading.Lock()
        self._db_checked = -1e18
        self._db_problem: str | None = None
        self._engine: sa.Engine | None = None
        self._tick_at: float | None = None
        self.ready_sent = False
        self._last_ping = -1e18

    # -- lifecycle (master) --------------------------------------------

    def bind(self) -> None:
        """Open the HTTP socket now (before the fork), if one is wanted.

        :raises OSError: the address is in use or cannot be bound; the
            message names it.
        """
        s = self.settings
        if s.port is None or s.bind_host is None:
            return
        server_class = _Server6 if ":" in s.bind_host else _Server
        try:
            self._server = simple_server.make_server(
                s.bind_host, s.port, self.app, server_class=server_class,
                handler_class=_Handler)
        except OSError as exc:
            raise OSError(exc.errno, "cannot serve [metrics] on %s port "
                          "%d: %s" % (s.bind_host, s.port,
                                      exc.strerror or exc)) from exc
        os.register_at_fork(after_in_child=self._close_in_child)
        LOG.info("Serving /metrics and /healthz on %(host)s port %(port)d",
                 {"host": s.bind_host,
                  "port": self._server.server_address[1]})

    def _close_in_child(self) -> None:
        # NOTE: a forked worker must not keep the master's listening
        # socket open: connections would queue on it after the master is
        # gone, and the port would stay taken.
        server = self._server
        if server is not None:
            server.socket.close()
        self._server = None

    def start(self) -> None:
        """Start the loop and the HTTP server (after the first fork).

        Nothing starts when there is nothing to serve or notify.
        """
        if self._threads or (self._server is None and self.notifier is None):
            return
        self._tick_at = self._clock()
        self._spawn("health-monitor", self._loop)
        if self._server is not None:
            self._spawn("health-http", self._server.serve_forever)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None and len(self._threads) > 1:
            self._server.shutdown()
        if self._server is not None:
            self._server.server_close()
        if self._engine is not None:
            self._engine.dispose()

    def _spawn(self, name: str, target: Callable[[], Any]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- loop ----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.tick):
            try:
                self.tick()
            except Exception:
                LOG.exception("Health monitor iteration failed")

    def tick(self) -> None:
        """One iteration: master beat, readiness, watchdog ping."""
        now = self._tick_at = self._clock()
        if not self.ready_sent and self.all_started():
            self.ready_sent = True
            LOG.info("All %d worker(s) of %s are up", self.beats.workers,
                     self.settings.host)
            if self.notifier is not None:
                self.notifier.notify("READY=1\nSTATUS=%d worker(s) up"
                                     % self.beats.workers)
        stopping = self._stopping()
        if stopping and not self.stopping_sent:
            self.stopping_sent = True
            if self.notifier is not None:
                self.notifier.notify("STOPPING=1")
        if (self.watchdog and self.notifier is not None
                and now - self._last_ping >= self.watchdog
                and (stopping or self._supervisor_alive())):
            # NOTE: the watchdog watches the master, which keeps the
            # workers alive (a worker's health is /healthz's business);
            # it keeps pinging during a graceful stop, which may last
            # longer than WatchdogSec.
            self.notifier.notify("WATCHDOG=1")
            self._last_ping = now

    def all_started(self) -> bool:
        return all(self.beats.last(i) is not None
                   for i in range(self.beats.workers))

    # -- health --------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON-safe report naming every problem)."""
        now = self._clock()
        timeout = self.settings.heartbeat_timeout
        problems: list[str] = []
        tick = self._tick_at
        master_age = None if tick is None else now - tick
        if not self._supervisor_alive():
            problems.append("master: not supervising its workers")
        elif master_age is None or master_age > timeout:
            problems.append("master: no heartbeat for more than %gs"
                            % timeout)
        workers: dict[str, Any] = {}
        for worker_id in range(self.beats.workers):
            last = self.beats.last(worker_id)
            age = None if last is None else round(now - last, 3)
            workers[str(worker_id)] = {"pid": self.beats.pid(worker_id),
                                       "heartbeat_age": age}
            if age is None:
                problems.append("worker %d: not started" % worker_id)
            elif age > timeout:
                problems.append("worker %d: no heartbeat for %.1fs (more "
                                "than heartbeat_timeout %gs)"
                                % (worker_id, age, timeout))
        database = self.check_database()
        if database is not None:
            problems.append("database: %s" % database)
        report = {"status": "unhealthy" if problems else "ok",
                  "host": self.settings.host, "problems": problems,
                  "master": {"pid": os.getpid(),
                             "heartbeat_age": None if master_age is None
                             else round(master_age, 3)},
                  "workers": workers,
                  "database": "ok" if database is None else database}
        return not problems, report

    def check_database(self) -> str | None:
        """None when the database answers; else why it does not."""
        with self._db_lock:
            now = self._clock()
            if now - self._db_checked < self.settings.db_check_cache:
                return self._db_problem
            self._db_problem = self._query()
            self._db_checked = self._clock()
            return self._db_problem

    def _query(self) -> str | None:
        try:
            if self._engine is None:
                self._engine = _engine(self.settings.database_url)
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return None
        except Exception as exc:
            metrics.db_error(type(exc).__name__)
            text = str(exc).strip().splitlines()
            return "%s: %s" % (type(exc).__name__, text[0]) if text else \
                type(exc).__name__

    # -- HTTP ----------------------------------------------------------

    def app(self, environ: dict[str, Any],
            start_response: _StartResponse) -> Iterable[bytes]:
        """The WSGI application: /metrics and /healthz."""
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed",
                          b"GET only\n", "text/plain")
        if path == "/metrics":
            if not metrics.enabled():
                return _reply(start_response, "404 Not Found",
                              b"metrics are disabled\n", "text/plain")
            body, content_type = metrics.exposition()
            return _reply(start_response, "200 OK", body, content_type)
        if path == "/healthz":
            healthy, report = self.health()
            body = (json.dumps(report, sort_keys=True) + "\n").encode()
            return _reply(start_response, "200 OK" if healthy else
                          "503 Service Unavailable", body,
                          "application/json")
        return _reply(start_response, "404 Not Found",
                      b"/metrics and /healthz only\n", "text/plain")


def _reply(start_response: _StartResponse, status: str, body: bytes,
           content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body)))])
    return [body]


def _engine(url: str) -> sa.Engine:
    """An engine that keeps no connection between checks.

    NOTE: the master forks workers while this engine exists: a pooled
    connection would be inherited, and a child closing it would end the
    master's session too. NullPool opens and closes one per check.
    """
    backend = sa.engine.make_url(url).get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend in ("mysql", "mariadb", "postgresql"):
        connect_args["connect_timeout"] = 5
    elif backend == "sqlite":
        connect_args["timeout"] = 5
    return sa.create_engine(url, poolclass=sa.pool.NullPool,
                            hide_parameters=True, connect_args=connect_args)

# SPDX-License-Identifier: Apache-2.0
"""Logging set-up: oslo.log, with every line naming its host and worker.

A record factory adds ``conductor_id`` (``"<host> master"`` or
``"<host> worker <id>"``) to every record, and the default format strings
print it, so lines from the master and from each forked worker can be told
apart in one shared log file.

**Outages.** When the database goes away every periodic task, heartbeat,
power action and sync write fails at once, each with a long traceback.
Call sites hand such failures to :func:`database_failed` instead of
logging them; one :class:`OutageLog` per failure kind and process turns
them into one line per interval and a recovery line::

    try:
        db.heartbeat(...)
    except Exception as exc:
        if not log.database_failed("heartbeat", exc):
            LOG.exception("Heartbeat failed")      # not a database error
    else:
        log.database_ok()

which logs, in a 20 s outage::

    WARNING database unavailable since 05:51:02: 1 operation(s) failed
        (heartbeat: OperationalError: (2003, "Can't connect ..."))
    WARNING database unavailable since 05:51:02: 415 operation(s) failed
    WARNING database available again after 20.4 s; 837 operation(s) failed

with the first failure's traceback at DEBUG.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from oslo_config import cfg
from oslo_log import log as oslo_log

from conductor.common import masking

_identity = "-"
_factory_installed = False

CONTEXT_FORMAT = ("%(asctime)s.%(msecs)03d %(process)d %(levelname)s "
                  "%(name)s [%(conductor_id)s] [%(global_request_id)s "
                  "%(request_id)s] %(message)s")
DEFAULT_FORMAT = ("%(asctime)s.%(msecs)03d %(process)d %(levelname)s "
                  "%(name)s [%(conductor_id)s] [-] %(message)s")
DEFAULT_LOG_LEVELS = [
    "amqp=WARN", "amqplib=WARN", "kombu=WARN", "oslo.messaging=INFO",
    "oslo_messaging=INFO", "sqlalchemy=WARN", "alembic=WARN",
    "stevedore=INFO", "cotyledon=INFO", "urllib3=WARN", "sushy=WARN",
    "oslo_service=INFO", "futurist=INFO", "tooz=WARN", "iso8601=WARN",
    # NOTE: sushy logs every connection failure at ERROR and then raises;
    # the driver reports it once, with the node, as last_error.
    "sushy.connector=CRITICAL",
    "oslo_db=WARN",
]


def log_levels(*extra: str) -> str:
    """A ``default_log_levels`` value: the defaults, then ``extra``.

    For example ``log_levels("conductor.power_sync.runs=DEBUG")`` logs
    every power sync run without ``debug``.
    """
    return ",".join([*DEFAULT_LOG_LEVELS, *extra])


def set_defaults() -> None:
    """Conductor's defaults for oslo.log options (before config parsing)."""
    oslo_log.set_defaults(logging_context_format_string=CONTEXT_FORMAT,
                          default_log_levels=DEFAULT_LOG_LEVELS)
    _install_factory()


def register_options(conf: cfg.ConfigOpts) -> None:
    oslo_log.register_options(conf)
    # NOTE: oslo.log has no set_defaults argument for the default format
    # string, so set it on the option directly.
    conf.set_default("logging_default_format_string", DEFAULT_FORMAT)


def setup(conf: cfg.ConfigOpts, identity: str) -> None:
    """Configure oslo.log and name this process in every line."""
    set_identity(identity)
    oslo_log.setup(conf, "conductor")
    # NOTE: a line may quote an address typed with a password in it.
    masking.install()


def set_identity(identity: str) -> None:
    """Set what ``%(conductor_id)s`` prints for this process."""
    global _identity
    _install_factory()
    _identity = identity


def master_identity(host: str) -> str:
    return "%s master" % host


def worker_identity(host: str, worker_id: int) -> str:
    return "%s worker %d" % (host, worker_id)


def _install_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.conductor_id = _identity
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True


#: Seconds between two "still unavailable" lines of one failure kind.
OUTAGE_INTERVAL = 10.0
#: Modules whose exceptions mean "the database failed".
_DATABASE_MODULES = ("sqlalchemy", "oslo_db", "pymysql", "psycopg2",
                     "psycopg", "MySQLdb", "sqlite3")

OUTAGE_LOG = logging.getLogger("conductor.outage")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return "%s: %s" % (type(exc).__name__, text) if text else \
        type(exc).__name__


class OutageLog:
    """Turns a flood of failures of one kind into a few log lines.

    The first failure logs one WARNING ("<kind> unavailable since
    HH:MM:SS: 1 operation(s) failed (<what>: <error>)") and its traceback
    at DEBUG; further failures are counted, and logged at most once per
    ``interval`` seconds with the running count; the first success after
    them logs "<kind> available again after N s; M operation(s) failed".
    Thread-safe.

    :param kind: what failed, as the lines name it ("database").
    :param interval: seconds between two "still unavailable" lines.
    :param logger: where the lines go.
    :param clock: monotonic clock; :param wall: wall clock (the "since").
    """

    def __init__(self, kind: str, interval: float = OUTAGE_INTERVAL, *,
                 logger: logging.Logger = OUTAGE_LOG,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.interval = interval
        self._log = logger
        self._clock = clock
        self._wall = wall
        # NOTE: guards the outage state below; lines are logged outside.
        self._lock = threading.Lock()
        self._since: float | None = None
        self._since_wall = 0.0
        self._failed = 0
        self._logged_at = 0.0
        #: Outages seen so far (ended or not).
        self.outages = 0

    @property
    def active(self) -> bool:
        """True between a failure and the next success."""
        with self._lock:
            return self._since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        """Count one failed operation (``what``, e.g. "heartbeat")."""
        now = self._clock()
        with self._lock:
            first = self._since is None
            if first:
                self._since, self._since_wall = now, self._wall()
                self._failed = 0
                self.outages += 1
            self._failed += 1
            due = first or now - self._logged_at >= self.interval
            if due:
                self._logged_at = now
            count, since = self._failed, self._since_wall
        if not due:
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(since))
        if first:
            self._log.warning("%(kind)s unavailable since %(since)s: "
                              "%(n)d operation(s) failed (%(what)s: "
                              "%(err)s)",
                              {"kind": self.kind, "since": stamp, "n": count,
                               "what": what, "err": _one_line(exc)})
            self._log.debug("%(kind)s unavailable: first failure (%(what)s)",
                            {"kind": self.kind, "what": what},
                            exc_info=(type(exc), exc, exc.__traceback__))
        else:
            self._log.warning("%(kind)s unavailable since %(since)s: "
                              "%(n)d operation(s) failed",
                              {"kind": self.kind, "since": stamp,
                               "n": count})

    def succeeded(self) -> None:
        """An operation of this kind worked: end the outage, if any."""
        if self._since is None:     # NOTE: the common case, lock-free
            return
        with self._lock:
            if self._since is None:
                return
            seconds = self._clock() - self._since
            count = self._failed
            self._since = None
            self._failed = 0
        self._log.warning("%(kind)s available again after %(secs).1f s; "
                          "%(n)d operation(s) failed",
                          {"kind": self.kind, "secs": seconds, "n": count})


_outages: dict[str, OutageLog] = {}
_outages_lock = threading.Lock()


def outage_log(kind: str) -> OutageLog:
    """This process's :class:`OutageLog` of ``kind`` (made on first use)."""
    with _outages_lock:
        found = _outages.get(kind)
        if found is None:
            found = _outages[kind] = OutageLog(kind)
        return found


def reset_outage_logs() -> None:
    """Forget every outage log (a new process, or a test)."""
    with _outages_lock:
        _outages.clear()


def is_database_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) came from the database layer.

    Judged by the exception's module (SQLAlchemy, oslo.db, the DB-API
    drivers), so this leaf module needs none of them; the chain is
    followed through ``__cause__`` only.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__ or ""
        if module.split(".")[0] in _DATABASE_MODULES:
            return True
        # NOTE: only an explicit "raise ... from": an error raised while
        # handling a database error (NodeNotFound...) is not one.
        current = current.__cause__
    return False


def database_failed(what: str, exc: BaseException) -> bool:
    """Count ``exc`` in the database outage log when it is a database error.

    :returns: False when it is not one: the caller logs it as usual.
    """
    if not is_database_error(exc):
        return False
    outage_log("database").failed(what, exc)
    return True


def database_ok() -> None:
    """A database operation worked: log the recovery after an outage."""
    found = _outages.get("database")
    if found is not None:
        found.succeeded()

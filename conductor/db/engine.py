# SPDX-License-Identifier: Apache-2.0
"""Database engines: creation, URL masking, "database unavailable".

Every process builds its engine here, after the fork, from plain values::

    engine = create_engine(url, max_retries=10, retry_interval=10)

A database that cannot be reached, or a malformed URL, is reported as
:class:`~conductor.common.exceptions.DatabaseUnavailable` naming the URL
with its password masked, and the reason in the driver's own words.
"""

from __future__ import annotations

import os
from typing import Any

from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import engines
import sqlalchemy as sa

from conductor.common import exceptions
from conductor.common import metrics
from conductor.common import private


def create_engine(url: str, *, max_retries: int = 0,
                  retry_interval: int = 1,
                  max_pool_size: int | None = None,
                  max_overflow: int | None = None,
                  pool_timeout: int | None = None,
                  sqlite_pool: bool = False,
                  create_sqlite: bool = True) -> sa.Engine:
    """Create an engine and prove it connects.

    :param max_retries: further attempts after the first failed one
        (-1: forever), ``retry_interval`` seconds apart.
    :param sqlite_pool: on an SQLite file, keep connections in a pool
        (see :func:`_reusing_pool`) rather than open one per use. For a
        process that never forks afterwards: a worker. The pool options
        above do not apply to it.
    :param create_sqlite: create an SQLite file (and its directory) that
        does not exist. False for commands that only use a database: a
        mistyped path is then an error, not a new empty database.
    :raises: DatabaseUnavailable naming the (password-masked) URL.
    """
    try:
        _prepare_sqlite_dir(url, create_sqlite)
        engine = engines.create_engine(
            url, max_retries=max_retries, retry_interval=retry_interval,
            max_pool_size=max_pool_size, max_overflow=max_overflow,
            pool_timeout=pool_timeout, sqlite_synchronous=True,
            mysql_sql_mode="TRADITIONAL",
            thread_checkin=False)
    except ImportError as exc:
        raise exceptions.DatabaseUnavailable(
            url=mask_url(url), reason=missing_driver(url, exc)) from exc
    except (db_exc.DBError, sa.exc.SQLAlchemyError, ValueError) as exc:
        raise unavailable(url, exc) from exc
    # NOTE: SQLAlchemy puts a failed statement's parameters in the error
    # text, driver_info passwords included; errors reach logs, task logs
    # and stderr, so they never carry parameters.
    engine.hide_parameters = True
    sa.event.listen(engine, "handle_error", _count_error)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        # NOTE: the test connection above was made before the listener
        # existed; drop it so every pooled connection gets the pragmas.
        engine.dispose()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (db_exc.DBError, sa.exc.SQLAlchemyError) as exc:
        engine.dispose()
        raise unavailable(url, exc) from exc
    if engine.dialect.name == "sqlite":
        path = sqlite_file(url)
        if path is not None:
            _tighten_sqlite_companions(path)
            if sqlite_pool:
                # NOTE: after the first connection: SQLAlchemy initialises
                # the dialect (server version, isolation level) from the
                # first connection of the pool it built.
                engine.pool = _reusing_pool(engine)
    return engine


def _count_error(context: Any) -> None:
    metrics.db_error(type(context.original_exception).__name__)


#: How to install each database driver SQLAlchemy may load, by its name
#: in URLs (``mysql+pymysql://``): the package extra (setup.cfg
#: ``[extras]``) for the two conductor is tested with, else the package.
DRIVER_PACKAGES = {
    "pymysql": "pip install 'conductor[mysql]' (PyMySQL)",
    "psycopg2": "pip install 'conductor[postgresql]' (psycopg2)",
    "mysqldb": "pip install mysqlclient",
    "psycopg": "pip install 'psycopg[binary]'",
}

#: The URL of each backend whose driver a package extra installs.
EXTRA_URLS = {
    "mysql": ("mysql+pymysql://", "conductor[mysql]"),
    "mariadb": ("mariadb+pymysql://", "conductor[mysql]"),
    "postgresql": ("postgresql+psycopg2://", "conductor[postgresql]"),
}


def missing_driver(url: str, exc: ImportError) -> str:
    """The reason for a database driver module that is not installed.

    Names the module and how to install it. A URL that names no driver
    (``postgresql://``) gets the driver SQLAlchemy picks for it, which
    depends on its version (psycopg2 up to 2.0, psycopg from 2.1): the
    reason says so, and which URL the package extra's driver serves
    (the drivers conductor is tested with).
    """
    if str(exc).strip():
        text = str(exc).strip().splitlines()[0]
    elif exc.name:
        text = "No module named %r" % exc.name
    else:
        text = type(exc).__name__
    try:
        parsed = sa.engine.make_url(url)
        backend = parsed.get_backend_name()
        driver = parsed.get_driver_name()
    except Exception:
        return text
    extra = EXTRA_URLS.get(backend)
    if extra is None:
        return "%s: the database driver for %s:// is not installed" % (
            text, backend)
    if "+" not in parsed.drivername:
        # NOTE: the driver the extra installs, not the one SQLAlchemy
        # picked: conductor is tested with that one.
        return ("%s: a %s:// URL names no driver, and SQLAlchemy %s "
                "loads %s for it, which could not be imported; write %s "
                "and pip install '%s'"
                % (text, backend, sa.__version__, driver, extra[0],
                   extra[1]))
    install = DRIVER_PACKAGES.get(driver)
    if install is None:
        return ("%s: the database driver %s is not installed (the "
                "package extra %s installs the driver of %s URLs)"
                % (text, driver, extra[1], extra[0]))
    return ("%s: the database driver is not installed; install it with %s"
            % (text, install))


def sqlite_file(url: str) -> str | None:
    """The file of an SQLite file database URL, else None."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or \
            parsed.database == ":memory:" or \
            parsed.database.startswith("file:"):
        return None
    return os.path.abspath(parsed.database)


def _prepare_sqlite_dir(url: str, create: bool = True) -> None:
    """Create an SQLite file database (the default) and its directory.

    The file holds every node's BMC password: it is created (or
    tightened) 0600, its ``-wal`` and ``-shm`` companions too, and the
    directories created for it 0700.

    :param create: False: a missing file is an error instead.
    """
    path = sqlite_file(url)
    if path is None:
        return
    if not create and not os.path.exists(path):
        raise exceptions.DatabaseUnavailable(
            url=mask_url(url),
            reason="there is no database file %s: check [database] "
                   "connection, or run 'conductor-manage db sync' to "
                   "create it (the conductor creates it at its first "
                   "start)" % path)
    directory = os.path.dirname(path)
    try:
        private.makedirs(directory)
    except OSError as exc:
        raise exceptions.DatabaseUnavailable(
            url=mask_url(url),
            reason="cannot create directory %s: %s"
                   % (directory, exc.strerror or exc)) from exc
    try:
        private.create_file(path)
    except OSError as exc:
        raise exceptions.DatabaseUnavailable(
            url=mask_url(url),
            reason="cannot create %s: %s" % (path, exc.strerror or exc)
        ) from exc
    _tighten_sqlite_companions(path)


def _tighten_sqlite_companions(path: str) -> None:
    """Set the SQLite file's ``-wal`` and ``-shm`` files to 0600.

    SQLite creates them with the database file's mode; files left by an
    older release (0644) are tightened here.
    """
    for suffix in ("-wal", "-shm"):
        try:
            private.tighten(path + suffix)
        except OSError:
            pass


#: Connections an SQLite pool keeps between uses (see _reusing_pool).
SQLITE_KEPT = 5


def _reusing_pool(engine: sa.Engine) -> sa.pool.QueuePool:
    """A pool that keeps an SQLite file's connections for reuse.

    oslo.db gives SQLite files a pool that opens a connection for every
    use and closes it after. Each opening costs a worker more than the
    statement it sends: SQLite parses the whole schema again on a new
    connection's first statement, and the pragmas run again. A worker
    sends a statement every second or so, and paid about 1.3 ms of CPU
    more for each (a paced change-feed probe, ``tools/bench_wakeup.py``).

    It keeps :data:`SQLITE_KEPT` connections, the most recently used
    first (an idle worker uses one or two); beyond them it opens more
    without limit, as before, and closes them when returned: a writer
    waiting for SQLite's write lock holds its connection meanwhile, and
    no other thread must wait for one on that account (the pool size
    options of the other databases do not apply).

    Its connections are set up as oslo.db's were: no transaction begun
    by the driver (the engine's listeners send BEGIN), SQLAlchemy's SQL
    functions, WAL and the busy timeout. A connection returned to it is
    rolled back (``reset_on_return``): between two uses it holds no
    transaction, so it neither keeps an old snapshot nor holds the WAL
    back. Each is used by one thread at a time, whichever checked it
    out. Left out of oslo.db's set-up: its guard against a connection
    crossing a fork (this pool is for processes that do not fork), its
    REGEXP function (SQLAlchemy's is there; conductor uses neither) and
    the hourly recycling (an SQLite connection does not go stale).
    """
    dialect = engine.dialect
    args, kwargs = dialect.create_connect_args(engine.url)
    # NOTE: pysqlite's default for a file database; stated, since a
    # connection may be used by several threads in turn.
    kwargs = dict(kwargs, check_same_thread=False)

    def connect() -> Any:
        return dialect.connect(*args, **kwargs)

    pool = sa.pool.QueuePool(connect, pool_size=SQLITE_KEPT,
                             max_overflow=-1, use_lifo=True,
                             reset_on_return="rollback", dialect=dialect)
    functions = dialect.on_connect_url(engine.url)

    def setup(dbapi_connection: Any, record: Any) -> None:
        if functions is not None:
            functions(dbapi_connection)
        # NOTE: as oslo.db does: the engine's "begin" listener sends
        # BEGIN itself, reads included.
        dbapi_connection.isolation_level = None
        _sqlite_on_connect(dbapi_connection, record)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        # NOTE: oslo.db's listeners mark a connection whose BEGIN was
        # sent, in its record, which a pooled connection keeps; the mark
        # must not outlive the transaction the pool rolled back. A use in
        # AUTOCOMMIT mode leaves the driver's own transactions back on
        # at the reset: off again.
        record.info.pop("in_transaction", None)
        if dbapi_connection is not None:
            dbapi_connection.isolation_level = None

    sa.event.listen(pool, "connect", setup)
    sa.event.listen(pool, "checkin", checkin)
    return pool


def _sqlite_on_connect(dbapi_connection: Any, record: Any) -> None:
    # NOTE: several worker processes share one SQLite file: WAL lets
    # readers run beside the single writer, and a busy timeout makes a
    # writer wait for the lock instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return "<malformed URL>"
    return parsed.render_as_string(hide_password=True)


def reason(exc: BaseException) -> str:
    """The first line of the driver's own message for a database error."""
    inner = getattr(exc, "inner_exception", None) or exc
    inner = getattr(inner, "orig", None) or inner
    text = str(inner)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def unavailable(url: str, exc: BaseException
                ) -> exceptions.DatabaseUnavailable:
    """The error for database ``url`` failing with ``exc``.

    The URL is password-masked, the reason in the driver's own words.
    """
    return exceptions.DatabaseUnavailable(url=mask_url(url),
                                          reason=reason(exc))

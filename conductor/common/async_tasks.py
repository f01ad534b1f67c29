# SPDX-License-Identifier: Apache-2.0
"""Named start-up tasks that run in the background, each with its own log.

This is devstack's ``inc/async`` done in Python. Slow, independent
start-up steps run under a name; everything a step logs (and the output
of the commands it runs through :func:`run_command`) goes to
``<log_dir>/<name>.log`` instead of the main log, and the whole file is
replayed into the main log when the step is waited on. Logs from steps
that run at the same time therefore never interleave, and the per-task
file is kept for reading in isolation::

    group = TaskGroup(conf.async_log_dir, parallel=conf.parallel_startup)
    try:
        group.run("schema-check", check_schema, engine_url)
        group.run("load-drivers", load_drivers, conf.enabled_drivers)
        do_other_work()
        group.wait("schema-check")      # replays schema-check.log
        group.wait()                    # every task not yet waited for
    finally:
        group.cleanup()                 # joins anything left, warns
    LOG.info("%s", group.summary())

With ``parallel=False`` every task runs inline inside :meth:`TaskGroup.run`,
with the same log file, the same replay at :meth:`TaskGroup.wait`, the same
per-task timings and the same :class:`TaskFailed` at ``wait``: only the
concurrency changes, which is what you want when debugging start-up.

The module-level :func:`run`, :func:`wait`, :func:`cleanup` and
:func:`summary` act on a default group set up by :func:`configure`;
all state lives in :class:`TaskGroup`.

Fork safety: task threads are plain ``threading.Thread`` objects created
in :meth:`TaskGroup.run`. :meth:`TaskGroup.cleanup` joins every one of
them and removes the log capture, so call it before the master forks.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import pickle
import re
import subprocess
import threading
import time
from typing import Any, Callable, Sequence

from conductor.common import exceptions
from conductor.common import masking
from conductor.common import private
from conductor.common import processutils

LOG = logging.getLogger(__name__)

#: Format of the lines in each ``<name>.log``.
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# NOTE: names become file names under log_dir, so no separators, no
# leading dot and nothing a shell would treat specially.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

Clock = Callable[[], float]


class TaskFailed(exceptions.ConductorException):
    """A task raised; re-raised by :meth:`TaskGroup.wait` for that task.

    The original exception is :attr:`original` (and ``__cause__``).
    """

    message = "Async task %(name)s failed: %(error)s"

    def __init__(self, name: str, original: BaseException) -> None:
        #: The name the task was started under.
        self.name = name
        #: The exception the task function raised.
        self.original = original
        super().__init__(name=name, error=_describe(original))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.original))


class UnknownTask(exceptions.ConductorException, ValueError):
    """:meth:`TaskGroup.wait` was given a name it cannot wait for."""

    message = "%(problem)s"


class DuplicateTask(exceptions.ConductorException, ValueError):
    """:meth:`TaskGroup.run` was given a name already used in the group."""

    message = ("Async task %(name)s was already started in this group; "
               "task names must be unique.")


def _describe(exc: BaseException) -> str:
    """``Type: message``, or just ``Type`` when the message is empty."""
    text = str(exc)
    if not text:
        return type(exc).__name__
    return "%s: %s" % (type(exc).__name__, text)


@dataclasses.dataclass
class Summary:
    """Timings of a :class:`TaskGroup`, in seconds of its clock.

    ``serial_estimate`` is what start-up would have taken with no
    parallelism: every second a task spent in the background would have
    been spent in the foreground, except the seconds the caller spent
    blocked waiting anyway. ``speedup`` is ``serial_estimate / elapsed``
    (1.0 when nothing has elapsed). Inline (``parallel=False``) tasks
    count as waiting for their whole duration, so the speedup is 1.0.
    """

    #: Sum of the durations of all finished tasks.
    background: float
    #: Time the caller spent blocked in ``wait`` (or running inline tasks).
    waiting: float
    #: Time since the group was created.
    elapsed: float
    #: ``elapsed + background - waiting``.
    serial_estimate: float
    #: ``serial_estimate / elapsed``.
    speedup: float
    #: Duration of each finished task, in start order.
    durations: dict[str, float] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return ("async tasks: %d finished, %.2fs in background, %.2fs "
                "waiting, %.2fs elapsed, %.2fs if run serially, "
                "speedup %.2fx" % (len(self.durations), self.background,
                                   self.waiting, self.elapsed,
                                   self.serial_estimate, self.speedup))


class _RejectTaskRecords(logging.Filter):
    """Filter for the main handlers: drops records emitted by tasks."""

    def __init__(self, capture: _LogCapture) -> None:
        super().__init__()
        self._capture = capture

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._capture.capturing()


class _LogCapture(logging.Handler):
    """Root handler sending each task thread's records to its task log.

    A thread is routed while it runs a task (:meth:`route`). Records it
    emits reach this handler through the root logger and are written to
    the task's file handler only: a filter added to the other handlers
    (those of the root logger and of the group's logger chain, as they
    were at :meth:`install`) drops them there. Routing is keyed by the
    emitting thread, looked up when the record is handled, which is in
    the emitting thread for ordinary handlers.
    """

    def __init__(self) -> None:
        super().__init__()
        # Protects _routes. Lookups are single dict reads and take no lock.
        self._routes_lock = threading.Lock()
        self._routes: dict[int, logging.Handler] = {}
        self._reject = _RejectTaskRecords(self)
        self._filtered: list[logging.Handler] = []

    def install(self, logger: logging.Logger) -> None:
        root = logging.getLogger()
        handlers: list[logging.Handler] = list(root.handlers)
        current: logging.Logger | None = logger
        while current is not None:
            handlers.extend(current.handlers)
            if not current.propagate:
                break
            current = current.parent
        for handler in handlers:
            if (isinstance(handler, _LogCapture)
                    or handler in self._filtered):
                continue
            handler.addFilter(self._reject)
            self._filtered.append(handler)
        root.addHandler(self)

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self)
        for handler in self._filtered:
            handler.removeFilter(self._reject)
        self._filtered = []

    def route(self, target: logging.Handler) -> logging.Handler | None:
        """Send this thread's records to ``target``; returns the old one."""
        ident = threading.get_ident()
        with self._routes_lock:
            previous = self._routes.get(ident)
            self._routes[ident] = target
        return previous

    def unroute(self, previous: logging.Handler | None) -> None:
        """Undo :meth:`route` in the same thread."""
        ident = threading.get_ident()
        with self._routes_lock:
            if previous is None:
                self._routes.pop(ident, None)
            else:
                self._routes[ident] = previous

    def capturing(self) -> bool:
        return threading.get_ident() in self._routes

    def emit(self, record: logging.LogRecord) -> None:
        target = self._routes.get(threading.get_ident())
        if target is not None and record.levelno >= target.level:
            target.handle(record)


class _LevelReader:
    """The level of each line of a task log written with ``log_format``.

    A line that starts a record has the level it names; the lines that
    follow it (a multi-line message) keep that level, except a traceback,
    which is DEBUG up to the next record. The record saying the task
    itself failed (``failed_message``) is DEBUG too.
    """

    _LEVELS = "|".join(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))

    def __init__(self, log_format: str, failed_message: str) -> None:
        pattern = ""
        for part in re.split(r"(%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdfr])",
                             log_format):
            if part.startswith("%(levelname)"):
                pattern += "(?P<level>%s)" % self._LEVELS
            elif part.startswith("%(message)"):
                pattern += "(?P<message>.*)"
            elif part.startswith("%("):
                pattern += ".*?"
            else:
                pattern += re.escape(part)
        self._record = re.compile(pattern + "$")
        self._failed = failed_message
        self._current = logging.INFO
        self._in_traceback = False

    def level(self, line: str) -> int:
        match = self._record.match(line)
        if match is not None and match.groupdict().get("level"):
            self._in_traceback = False
            self._current = int(logging.getLevelName(match.group("level")))
            if match.groupdict().get("message") == self._failed:
                self._current = logging.DEBUG
            return self._current
        if line.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
        return logging.DEBUG if self._in_traceback else self._current


@dataclasses.dataclass(eq=False)
class _Task:
    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    log_path: str
    handler: logging.Handler
    start: float
    end: float | None = None
    result: Any = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    # Set once a wait (or cleanup) has claimed the task.
    collected: bool = False


class TaskGroup:
    """A set of named tasks started, waited for and timed together.

    :param log_dir: directory for the per-task ``<name>.log`` files;
        created on the first :meth:`run`. Existing files of the same
        name are overwritten, others are left alone.
    :param parallel: run each task in its own thread (True) or inline in
        :meth:`run` (False) with the same logs, timings and errors.
    :param logger: where the task logs are replayed and the framing lines
        (``[async NAME] started`` ...) go; defaults to this module's
        logger.
    :param clock: monotonic time source in seconds, injectable for tests.
    :param log_format: ``logging.Formatter`` format of the task log lines.

    Log capture: while a task runs, the records its thread emits that
    reach the root logger are written to its file and dropped by the
    handlers that were on the root logger (and on ``logger`` and its
    ancestors) when the capture was installed. Records of threads the
    task starts, and of loggers that do not propagate to the root, are
    not captured. The capture is installed at the first :meth:`run` and
    removed once every task has been waited for, or by :meth:`cleanup`.
    Set up logging before the first :meth:`run`: handlers added later
    would receive task records too.

    Meant to be driven from one thread (the start-up thread); a task may
    call :func:`run_command` and may log freely.
    """

    def __init__(self, log_dir: str, parallel: bool = True,
                 logger: logging.Logger | None = None,
                 clock: Clock = time.monotonic,
                 log_format: str = DEFAULT_LOG_FORMAT) -> None:
        self.log_dir = log_dir
        self.parallel = parallel
        self._logger = logger if logger is not None else LOG
        self._clock = clock
        self._log_format = log_format
        self._created = clock()
        # Protects _tasks and _waiting; task threads only set fields of
        # their own _Task, which the owner reads after joining them.
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._starting: set[str] = set()
        self._waiting = 0.0
        self._capture: _LogCapture | None = None
        # Process tasks whose waiter thread is not started yet.
        self._unstarted: list[_Task] = []

    # -- starting ---------------------------------------------------------

    def run(self, name: str, fn: Callable[..., Any], *args: Any,
            **kwargs: Any) -> None:
        """Start ``fn(*args, **kwargs)`` as the task ``name``.

        Arguments are passed to ``fn`` as Python values, untouched. In
        parallel mode this returns at once; inline it returns when ``fn``
        has finished. Either way an exception from ``fn`` is kept and
        raised by :meth:`wait` as :class:`TaskFailed` (except a
        non-``Exception`` such as ``KeyboardInterrupt`` raised inline,
        which is recorded and re-raised here at once).

        :raises ValueError: ``name`` is not usable as a file name.
        :raises DuplicateTask: ``name`` was already used in this group.
        :raises OSError: the log directory or file cannot be created.
        """
        self._start(name, fn, args, kwargs)

    def _start(self, name: str, fn: Callable[..., Any],
               args: tuple[Any, ...], kwargs: dict[str, Any],
               prestart: Callable[[], None] | None = None) -> None:
        """Body of :meth:`run`.

        ``prestart`` runs in the caller's thread, routed to the task's
        log, just before the task starts; if it raises, the task is
        forgotten and the error propagates.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                "Invalid async task name %r: use letters, digits, '.', "
                "'_' and '-', not starting with '.' or '-'." % (name,))
        with self._lock:
            if name in self._tasks or name in self._starting:
                raise DuplicateTask(name=name)
            # Reserve the name: the I/O below is done outside the lock.
            self._starting.add(name)
        try:
            private.makedirs(self.log_dir)
            log_path = os.path.join(self.log_dir, name + ".log")
            # NOTE: a task's log may quote what it read (BMC passwords
            # in an inventory): readable by our user only, also when an
            # older release left it 0644.
            private.create_file(log_path)
            handler = logging.FileHandler(log_path, mode="w",
                                          encoding="utf-8")
        except BaseException:
            with self._lock:
                self._starting.discard(name)
            raise
        handler.setFormatter(masking.MaskingFormatter(
            logging.Formatter(self._log_format)))
        task = _Task(name=name, fn=fn, args=args, kwargs=dict(kwargs),
                     log_path=log_path, handler=handler, start=0.0)
        with self._lock:
            self._starting.discard(name)
            self._tasks[name] = task
        if self._capture is None:
            self._capture = _LogCapture()
            self._capture.install(self._logger)
        capture = self._capture
        self._logger.info("[async %s] started %s, logging to %s", name,
                          _callable_name(fn), log_path)
        task.start = self._clock()
        if prestart is not None:
            previous = capture.route(handler)
            try:
                prestart()
            except BaseException:
                self._forget(task)
                raise
            finally:
                capture.unroute(previous)
        if self.parallel:
            thread = threading.Thread(target=self._execute,
                                      args=(task, capture),
                                      name="async-%s" % name)
            task.thread = thread
            if prestart is not None:
                # NOTE: a process task's waiter thread starts only when
                # the caller starts a thread task or waits, so that the
                # children of consecutive run_process calls are all
                # forked while no other thread runs.
                with self._lock:
                    self._unstarted.append(task)
                return
            self._start_waiters()
            try:
                thread.start()
            except BaseException:
                self._forget(task)
                raise
            return
        self._execute(task, capture)
        # NOTE: the caller was blocked for the whole inline run, which
        # is waiting time; this keeps the serial estimate honest.
        with self._lock:
            self._waiting += _duration(task)
        if (task.error is not None
                and not isinstance(task.error, Exception)):
            raise task.error

    def _start_waiters(self) -> None:
        """Start the waiter threads of the process tasks forked so far."""
        with self._lock:
            unstarted, self._unstarted = self._unstarted, []
        for task in unstarted:
            assert task.thread is not None
            try:
                task.thread.start()
            except BaseException as exc:
                # NOTE: the child runs on; without a waiter its outcome
                # is unknown, which its wait reports.
                task.thread = None
                task.error = exc
                task.end = self._clock()
                task.handler.close()

    def run_process(self, name: str, fn: Callable[..., Any], *args: Any,
                    **kwargs: Any) -> None:
        """Like :meth:`run`, but ``fn`` runs in a forked child process.

        For CPU-bound steps: threads of one interpreter take turns on the
        GIL, so two CPU-bound tasks in threads take as long as one after
        the other (or longer); in child processes they use separate cores.
        The child is forked here, in the caller's thread: a child forked
        from a thread while other threads run may inherit a lock one of
        them held (a module's import lock, say) and hang on it, so start
        process tasks before thread tasks. The task's own waiter thread
        starts only at the next :meth:`run` of a thread task, :meth:`wait`
        or :meth:`cleanup`, so consecutive process tasks never fork beside
        one another's waiters. A task thread (or, inline, the
        caller) then waits for the child. The child's records go to the
        task's ``<name>.log``. ``args`` reach ``fn`` by the fork (any
        object works); its return value or exception comes back pickled,
        so it must be picklable (an unpicklable one fails the task with a
        message saying so). With ``parallel=False`` the fork happens the
        same way, so logs, timings and errors stay identical. The child
        starts with the objects it inherited frozen out of the garbage
        collector (``gc.freeze``): its collections only look at what
        ``fn`` allocates.
        """
        call = _ForkedCall(name, fn, args, kwargs)
        self._start(name, call, (), {}, prestart=call.fork)

    def _forget(self, task: _Task) -> None:
        """Undo the registration of a task that could not start."""
        task.handler.close()
        with self._lock:
            del self._tasks[task.name]
        self._maybe_uninstall()

    def _execute(self, task: _Task, capture: _LogCapture) -> None:
        """Body of a task, in its own thread or inline."""
        previous = capture.route(task.handler)
        try:
            try:
                task.result = task.fn(*task.args, **task.kwargs)
            except BaseException as exc:
                # NOTE: thread boundary: anything the task raises is kept
                # for wait(); the traceback goes to the task's log.
                task.error = exc
                LOG.error("[async %s] failed", task.name, exc_info=True)
        finally:
            task.end = self._clock()
            capture.unroute(previous)
            task.handler.close()

    # -- collecting -------------------------------------------------------

    def wait(self, *names: str) -> dict[str, Any]:
        """Wait for the named tasks, in the order given, and replay logs.

        With no names, waits for every task not yet waited for, in start
        order. Each task's log file is replayed whole into the main log
        (each line as ``[async NAME] line``), followed by
        ``[async NAME] finished in 1.23s`` or
        ``[async NAME] FAILED after 1.23s: ...``. ``wait("a", "b")``
        behaves as ``wait("a"); wait("b")``: if ``a`` failed, ``b`` is
        left for a later wait or :meth:`cleanup`.

        :returns: the return values of the waited tasks, by name.
        :raises UnknownTask: a name was never started, was already waited
            for, or is repeated; checked before waiting for anything.
        :raises TaskFailed: a task raised; names the task and the error.
        """
        self._start_waiters()
        with self._lock:
            if names:
                seen: set[str] = set()
                for name in names:
                    task = self._tasks.get(name)
                    if task is None:
                        raise UnknownTask(problem=(
                            "Cannot wait for async task %s: it was never "
                            "started (started: %s)." % (
                                name, ", ".join(self._tasks) or "none")))
                    if task.collected:
                        raise UnknownTask(problem=(
                            "Cannot wait for async task %s: it was "
                            "already waited for." % name))
                    if name in seen:
                        raise UnknownTask(problem=(
                            "Async task %s is named twice in one wait."
                            % name))
                    seen.add(name)
                tasks = [self._tasks[name] for name in names]
            else:
                tasks = [t for t in self._tasks.values()
                         if not t.collected]
            for task in tasks:
                task.collected = True
        results: dict[str, Any] = {}
        try:
            for index, task in enumerate(tasks):
                try:
                    results[task.name] = self._collect(task)
                except BaseException:
                    # Tasks not reached stay available to a later wait.
                    with self._lock:
                        for rest in tasks[index + 1:]:
                            rest.collected = False
                    raise
        finally:
            self._maybe_uninstall()
        return results

    def _collect(self, task: _Task) -> Any:
        """Join one claimed task, replay its log and report its outcome."""
        if task.thread is not None:
            before = self._clock()
            task.thread.join()
            blocked = self._clock() - before
            with self._lock:
                self._waiting += blocked
        self._replay(task)
        duration = _duration(task)
        if task.error is None:
            self._logger.info("[async %s] finished in %.2fs", task.name,
                              duration)
            return task.result
        self._logger.error("[async %s] FAILED after %.2fs: %s", task.name,
                           duration, _describe(task.error))
        raise TaskFailed(task.name, task.error) from task.error

    def _replay(self, task: _Task) -> None:
        """Replay the task's log, each record at its own level.

        A WARNING of the task is a WARNING in the main log. Traceback
        lines, and the task's own "failed" record (the failure is logged
        once more, with its reason, when it is collected), are replayed at
        DEBUG: the reason is told once, the details are there with
        ``debug = true`` and in the task's file.
        """
        levels = _LevelReader(self._log_format,
                              "[async %s] failed" % task.name)
        try:
            with open(task.log_path, encoding="utf-8",
                      errors="replace") as log_file:
                for line in log_file:
                    line = line.rstrip("\n")
                    self._logger.log(levels.level(line), "[async %s] %s",
                                     task.name, line)
        except OSError as exc:
            self._logger.warning("[async %s] cannot replay %s: %s",
                                 task.name, task.log_path, exc)

    def cleanup(self, after_failure: bool = False) -> list[TaskFailed]:
        """Wait for every task never waited for; call before forking.

        Each such task is named in a warning (at INFO with
        ``after_failure``: the caller stopped waiting because another
        task failed, which it reports), then waited for as by
        :meth:`wait` (log replayed). Failures are logged, not raised, so
        that every task is joined; they are returned for the caller to
        act on. Afterwards no task thread is alive and the log capture
        is removed. Safe to call more than once.
        """
        failures: list[TaskFailed] = []
        self._start_waiters()
        with self._lock:
            pending = [t for t in self._tasks.values()
                       if not t.collected]
        try:
            for task in pending:
                self._logger.log(
                    logging.INFO if after_failure else logging.WARNING,
                    "[async %s] was never waited for; waiting for it now",
                    task.name)
                try:
                    self.wait(task.name)
                except TaskFailed as exc:
                    failures.append(exc)
                except UnknownTask:
                    # Collected by another thread meanwhile.
                    pass
        finally:
            self._maybe_uninstall(force=True)
        return failures

    def _maybe_uninstall(self, force: bool = False) -> None:
        with self._lock:
            outstanding = bool(self._starting) or any(
                not t.collected for t in self._tasks.values())
            capture = self._capture
            if capture is None or (outstanding and not force):
                return
            self._capture = None
        capture.uninstall()

    # -- reporting --------------------------------------------------------

    def names(self) -> list[str]:
        """Names of all tasks started, in start order."""
        with self._lock:
            return list(self._tasks)

    def pending(self) -> list[str]:
        """Names of the tasks not yet waited for, in start order."""
        with self._lock:
            return [n for n, t in self._tasks.items() if not t.collected]

    def summary(self) -> Summary:
        """Timings so far; see :class:`Summary`.

        Only finished tasks count as background time; call it after
        :meth:`cleanup` for the final numbers.
        """
        now = self._clock()
        with self._lock:
            durations = {t.name: t.end - t.start
                         for t in self._tasks.values()
                         if t.end is not None}
            waiting = self._waiting
        background = sum(durations.values())
        elapsed = now - self._created
        serial = elapsed + background - waiting
        speedup = serial / elapsed if elapsed > 0 else 1.0
        return Summary(background=background, waiting=waiting,
                       elapsed=elapsed, serial_estimate=serial,
                       speedup=speedup, durations=durations)

    @staticmethod
    def run_command(argv: Sequence[str], **kwargs: Any,
                    ) -> subprocess.CompletedProcess[str]:
        """Same as the module-level :func:`run_command`."""
        return run_command(argv, **kwargs)


class ChildProcessFailed(exceptions.ConductorException):
    message = "%(what)s"


class _ForkedCall:
    """``fn(*args, **kwargs)`` in a forked child.

    :meth:`fork` starts the child; calling the object waits for it and
    returns or raises what ``fn`` did.
    """

    def __init__(self, name: str, fn: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.name = name
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.__qualname__ = _callable_name(fn)
        self._pid = 0
        self._read_fd = -1

    def fork(self) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (runs in the child)
            os.close(read_fd)
            self._child(write_fd, self.args, self.kwargs)
        os.close(write_fd)
        self._pid, self._read_fd = pid, read_fd

    def __call__(self) -> Any:
        pid, read_fd = self._pid, self._read_fd
        chunks = []
        with os.fdopen(read_fd, "rb") as stream:
            while True:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        data = b"".join(chunks)
        if not data:
            raise ChildProcessFailed(
                what="the process of task %s ended without a result (%s)"
                     % (self.name, _wait_status(status)))
        kind, value = pickle.loads(data)
        if kind == "error":
            raise value
        return value

    def _child(self, write_fd: int, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> None:  # pragma: no cover
        # NOTE: the parent's objects are all still referenced by the
        # parent; moved out of the collector's view, they are never
        # traversed here, which saves the time and the copy-on-write
        # faults a full collection over the parent's heap costs (it
        # halved the inventory parse, docs/source/startup.rst).
        gc.freeze()
        code = 0
        try:
            try:
                payload: tuple[str, Any] = ("ok", self.fn(*args, **kwargs))
            except BaseException as exc:
                LOG.error("[async %s] failed in process %d", self.name,
                          os.getpid(), exc_info=True)
                payload, code = ("error", exc), 1
            try:
                data = pickle.dumps(payload)
            except Exception as exc:
                data = pickle.dumps(("error", ChildProcessFailed(
                    what="task %s: its %s cannot be sent back from its "
                         "process: %s" % (self.name, payload[0] == "ok"
                                          and "result" or "error", exc))))
                code = 1
            view = memoryview(data)
            while view:
                written = os.write(write_fd, view)
                view = view[written:]
        finally:
            # NOTE: _exit, not exit: the child must not run the parent's
            # atexit handlers or flush buffers it inherited from it.
            os._exit(code)


def _wait_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.waitstatus_to_exitcode(status)


def _duration(task: _Task) -> float:
    end = task.end if task.end is not None else task.start
    return end - task.start


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def run_command(argv: Sequence[str], **kwargs: Any,
                ) -> subprocess.CompletedProcess[str]:
    """:func:`conductor.common.processutils.run_command`, logged here.

    The command's output lines are logged under this module's logger
    unless ``logger`` is given, so inside a task they land in the task's
    log, and are replayed with it. Takes the same arguments.
    """
    kwargs.setdefault("logger", LOG)
    return processutils.run_command(argv, **kwargs)


# -- the default group --------------------------------

_default: TaskGroup | None = None


def configure(log_dir: str, parallel: bool = True, *,
              logger: logging.Logger | None = None,
              clock: Clock = time.monotonic,
              log_format: str = DEFAULT_LOG_FORMAT) -> TaskGroup:
    """Create the default group used by the module-level functions.

    The arguments are those of :class:`TaskGroup`.

    :raises RuntimeError: the current default group still has tasks that
        were never waited for (call :func:`cleanup` first).
    """
    global _default
    if _default is not None:
        pending = _default.pending()
        if pending:
            raise RuntimeError(
                "async tasks %s were never waited for; call cleanup() "
                "before configure()" % ", ".join(pending))
    _default = TaskGroup(log_dir, parallel=parallel, logger=logger,
                         clock=clock, log_format=log_format)
    return _default


def default_group() -> TaskGroup:
    """The group made by :func:`configure`.

    :raises RuntimeError: :func:`configure` was not called.
    """
    if _default is None:
        raise RuntimeError("conductor.common.async_tasks.configure() must "
                           "be called before run/wait/cleanup/summary")
    return _default


def reset() -> None:
    """Drop the default group after cleaning it up (for tests)."""
    global _default
    group, _default = _default, None
    if group is not None:
        group.cleanup()


def run(name: str, fn: Callable[..., Any], *args: Any,
        **kwargs: Any) -> None:
    """:meth:`TaskGroup.run` on the default group."""
    default_group().run(name, fn, *args, **kwargs)


def wait(*names: str) -> dict[str, Any]:
    """:meth:`TaskGroup.wait` on the default group."""
    return default_group().wait(*names)


def cleanup() -> list[TaskFailed]:
    """:meth:`TaskGroup.cleanup` on the default group."""
    return default_group().cleanup()


def summary() -> Summary:
    """:meth:`TaskGroup.summary` on the default group."""
    return default_group().summary()

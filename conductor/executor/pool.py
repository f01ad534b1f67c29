# SPDX-License-Identifier: Apache-2.0
"""The bounded thread pool of one worker process.

Every worker has exactly one :class:`WorkerPool` of ``[conductor]
workers_pool_size`` threads, shared by periodic tasks, per-node periodic
work and power actions. A submission while every thread is busy is
rejected with :class:`~conductor.common.exceptions.NoFreeWorker`; nothing
is ever queued without bound::

    pool = WorkerPool(size=conf.conductor.workers_pool_size, name="w0")
    # ... the master forks here: no thread exists yet ...
    pool.start()
    try:
        future = pool.submit(do_power_action, node_uuid)
    except exceptions.NoFreeWorker:
        ...  # tell the caller to retry later
    ...
    pool.shutdown(wait=True, timeout=10)

A caller that fans work out over many items (a sweep over nodes) does it
through :class:`conductor.executor.fanout.FanOut`, which borrows a bounded
number of this pool's threads.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Callable, TypeVar

from conductor.common import exceptions
from conductor.common import metrics

LOG = logging.getLogger(__name__)

_R = TypeVar("_R")


@dataclasses.dataclass
class _Item:
    """One accepted submission, waiting in the queue or running."""

    future: futures.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class _Runtime:
    """Everything a started pool holds; built in :meth:`WorkerPool.start`.

    Kept apart from :class:`WorkerPool` so that an unstarted pool holds
    plain values only (it can be pickled and forked).
    """

    def __init__(self) -> None:
        # NOTE: this lock (and the condition built on it) protects
        # ``busy``, ``spawned``, ``threads``, ``running``, ``stopping`` and
        # the counters below. The condition is notified whenever a thread
        # frees up, and by WorkerPool.wake_waiters().
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        # NOTE: never holds more than ``size`` items: an item is counted
        # in ``busy`` from submit until its callable returned, and submit
        # rejects when ``busy`` reached ``size``.
        self.queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        #: Names of the threads running a submission right now (an idle
        #: thread, even one not yet ended at shutdown, is not in it).
        self.running: set[str] = set()
        self.spawned = 0
        self.busy = 0
        self.stopping = False
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.rejected = 0


class WorkerPool:
    """A pool of at most ``size`` threads that rejects work when all are busy.

    The constructor stores plain values and creates no thread, lock or
    queue (the master process builds the service before it forks, and a
    thread that exists before a fork is lost in the child). Call
    :meth:`start` in the worker, after the fork. Threads are created on
    demand, up to ``size``, named ``<name>-<n>``, and are reused.

    The pool rejects on *busy threads*, not on backlog: a submission is
    accepted only when fewer than ``size`` submissions are unfinished, so
    the internal queue never holds more than ``size`` items.

    :param size: the number of threads, at least 1.
    :param name: a short name used in thread names and logs.
    :raises ValueError: when ``size`` is not an integer >= 1.
    """

    def __init__(self, size: int, name: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                "WorkerPool size must be an integer >= 1, got %r" % (size,))
        #: The maximum number of threads and of unfinished submissions.
        self.size = size
        #: The name used in thread names and log lines.
        self.name = name
        self._rt: _Runtime | None = None

    def __repr__(self) -> str:
        return "<WorkerPool %s size=%d started=%s>" % (
            self.name, self.size, self._rt is not None)

    @property
    def started(self) -> bool:
        """True once :meth:`start` has run."""
        return self._rt is not None

    def start(self) -> None:
        """Make the pool ready to accept work; creates no thread yet.

        :raises RuntimeError: when the pool was already started.
        """
        if self._rt is not None:
            raise RuntimeError("WorkerPool %s is already started" % self.name)
        self._rt = _Runtime()
        LOG.debug("Worker pool %(pool)s started with up to %(size)d threads",
                  {"pool": self.name, "size": self.size})

    def _runtime(self) -> _Runtime:
        if self._rt is None:
            raise RuntimeError(
                "WorkerPool %s is not started; call start() first"
                % self.name)
        return self._rt

    def submit(self, fn: Callable[..., _R], /, *args: Any,
               **kwargs: Any) -> futures.Future[_R]:
        """Run ``fn(*args, **kwargs)`` on a pool thread.

        The returned future carries the result or the exception ``fn``
        raised, including ``SystemExit`` and other ``BaseException``
        (which never kill the pool thread). Nothing else looks at that
        exception: the caller must. The thread is counted free again
        *before* the future completes, so a caller woken by the future
        may submit again at once. Exceptions raised by the future's done
        callbacks are logged and swallowed.

        :raises conductor.common.exceptions.NoFreeWorker: when all
            ``size`` threads are busy.
        :raises RuntimeError: when the pool is not started or is shut down.
        """
        rt = self._runtime()
        with rt.lock:
            if rt.stopping:
                raise RuntimeError(
                    "WorkerPool %s is shut down; it accepts no new work"
                    % self.name)
            if rt.busy >= self.size:
                rt.rejected += 1
                metrics.pool_rejected()
                raise exceptions.NoFreeWorker(size=self.size)
            rt.busy += 1
            rt.submitted += 1
            # NOTE: every unfinished item needs a thread; spawn one when
            # the threads we have are all taken. Threads are never
            # retired, so ``spawned`` only grows, up to ``size``.
            spawn = rt.spawned < rt.busy
            if spawn:
                rt.spawned += 1
                index = rt.spawned
        if spawn:
            try:
                self._spawn(rt, index)
            except BaseException:
                with rt.lock:
                    rt.spawned -= 1
                    rt.busy -= 1
                    rt.submitted -= 1
                    rt.rejected += 1
                    rt.cond.notify_all()
                LOG.exception("Worker pool %(pool)s could not start a "
                              "thread", {"pool": self.name})
                raise exceptions.NoFreeWorker(size=self.size)
        future: futures.Future[_R] = futures.Future()
        rt.queue.put(_Item(future, fn, args, kwargs))
        return future

    def _spawn(self, rt: _Runtime, index: int) -> None:
        # NOTE: daemon threads, unlike concurrent.futures' (joined at
        # interpreter exit with no timeout): a call hung on a BMC must not
        # keep a stopping process alive. shutdown() joins with a bound.
        thread = threading.Thread(target=self._thread_main, args=(rt,),
                                  name="%s-%d" % (self.name, index),
                                  daemon=True)
        with rt.lock:
            rt.threads.append(thread)
        try:
            thread.start()
        except BaseException:
            with rt.lock:
                rt.threads.remove(thread)
            raise

    def _thread_main(self, rt: _Runtime) -> None:
        while True:
            item = rt.queue.get()
            if item is None:
                return
            try:
                self._run_item(rt, item)
            except BaseException:
                # NOTE: only reachable if a done callback raised a
                # BaseException (Future swallows Exception). The thread
                # stays alive: the pool counts on exactly ``spawned``
                # live threads.
                LOG.exception("Worker pool %(pool)s: a done callback "
                              "raised; the thread keeps serving",
                              {"pool": self.name})
            del item

    def _run_item(self, rt: _Runtime, item: _Item) -> None:
        future = item.future
        if not future.set_running_or_notify_cancel():
            self._release(rt, failed=False)
            return
        error: BaseException | None = None
        result: Any = None
        name = threading.current_thread().name
        with rt.lock:
            rt.running.add(name)
        try:
            result = item.fn(*item.args, **item.kwargs)
        except BaseException as exc:  # the future carries it to the caller
            error = exc
            if not isinstance(exc, Exception):
                LOG.error("Worker pool %(pool)s: %(fn)r raised %(exc)r; "
                          "the thread keeps serving",
                          {"pool": self.name, "fn": item.fn, "exc": exc})
        finally:
            with rt.lock:
                rt.running.discard(name)
            self._release(rt, failed=error is not None)
        if error is not None:
            future.set_exception(error)
            del error
        else:
            future.set_result(result)

    def _release(self, rt: _Runtime, failed: bool) -> None:
        with rt.lock:
            rt.busy -= 1
            rt.completed += 1
            if failed:
                rt.failed += 1
            rt.cond.notify_all()

    @property
    def busy(self) -> int:
        """Unfinished submissions (running or about to run); 0 if unstarted."""
        rt = self._rt
        if rt is None:
            return 0
        with rt.lock:
            return rt.busy

    @property
    def free(self) -> int:
        """How many more submissions would be accepted right now."""
        return self.size - self.busy

    def stats(self) -> dict[str, int]:
        """Counters for ``status``: a consistent snapshot.

        Keys: ``size``, ``busy``, ``free``, ``threads`` (created so far),
        ``submitted`` and ``rejected`` (totals), ``completed`` and
        ``failed`` (submissions whose callable returned or raised).
        """
        rt = self._rt
        if rt is None:
            return {"size": self.size, "busy": 0, "free": self.size,
                    "threads": 0, "submitted": 0, "rejected": 0,
                    "completed": 0, "failed": 0}
        with rt.lock:
            return {"size": self.size, "busy": rt.busy,
                    "free": self.size - rt.busy, "threads": rt.spawned,
                    "submitted": rt.submitted, "rejected": rt.rejected,
                    "completed": rt.completed, "failed": rt.failed}

    def wait_for_free(self, timeout: float,
                      stop: threading.Event | None = None) -> bool:
        """Wait until a thread is free, ``timeout`` passed, or ``stop`` is set.

        Whoever sets ``stop`` must call :meth:`wake_waiters` afterwards
        for the wait to end at once.

        :returns: True when a thread was free on return. A free thread
            may still be taken by another caller before this one submits.
        """
        rt = self._runtime()
        deadline = time.monotonic() + timeout
        with rt.lock:
            while rt.busy >= self.size and not rt.stopping:
                if stop is not None and stop.is_set():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                rt.cond.wait(remaining)
            return rt.busy < self.size and not rt.stopping

    def wake_waiters(self) -> None:
        """Wake every :meth:`wait_for_free` waiter.

        Call it after setting a stop event those waiters watch.
        """
        rt = self._rt
        if rt is None:
            return
        with rt.lock:
            rt.cond.notify_all()

    def shutdown(self, wait: bool = True,
                 timeout: float | None = None) -> bool:
        """Stop accepting work and let the threads end.

        Work already accepted still runs; new submissions raise
        ``RuntimeError``. With ``wait``, joins the threads for at most
        ``timeout`` seconds in total (``None``: no bound). A thread still
        busy at the bound is left behind (it is a daemon thread); the
        warning then names only the threads running a submission, not
        idle ones that have not ended yet.

        :returns: True when no submission is left unfinished (always
            True for an unstarted pool), False while one still runs or
            waits for a thread.
        """
        rt = self._rt
        if rt is None:
            return True
        with rt.lock:
            first = not rt.stopping
            rt.stopping = True
            count = rt.spawned
            threads = list(rt.threads)
            rt.cond.notify_all()
        if first:
            # NOTE: one sentinel per thread, queued behind accepted work.
            for _ in range(count):
                rt.queue.put(None)
        if wait:
            deadline = (None if timeout is None
                        else time.monotonic() + timeout)
            for thread in threads:
                remaining = (None if deadline is None
                             else max(0.0, deadline - time.monotonic()))
                thread.join(remaining)
        # NOTE: an idle thread may not have ended yet (its sentinel is
        # queued, or the join had no time left): that is not work left
        # behind. Count the submissions not finished, name the threads
        # running one.
        with rt.lock:
            unfinished = rt.busy
            running = sorted(rt.running)
        if unfinished and wait:
            LOG.warning("Worker pool %(pool)s: %(count)d thread(s) still "
                        "busy after %(timeout)s s: %(names)s",
                        {"pool": self.name, "count": unfinished,
                         "timeout": timeout,
                         "names": ", ".join(running) or "(starting)"})
        return not unfinished

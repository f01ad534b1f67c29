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

**Abandoned calls.** A driver call made on a pool thread through
:func:`guard_call` (``conductor.task.call_driver`` does) is watched: a call
still running ``grace`` seconds past its deadline (a driver that ignores
``deadline.remaining()``) is *abandoned*. Its thread leaves the pool's
count, so the slot is free for other work at once, and keeps running
outside it until the call returns, then ends. Abandoned threads have
their own hard cap (``max_abandoned``); a node whose call was abandoned
is not called again until that call returns (:class:`CallStillRunning`),
and stays *suspect* (:meth:`WorkerPool.suspect`) until a call on it
returns in time. At the cap the pool is *degraded*
(:attr:`WorkerPool.degraded`): the next hung call would hold its slot,
so the worker must say so and let its nodes go::

    with pool_mod.guard_call(node.uuid, "get_power_state", timeout):
        state = driver.power.get_power_state(node)
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

#: Seconds a guarded call may run past its deadline before it is
#: abandoned.
GRACE = 1.0
#: The least seconds between two of the reaper's looks at the guarded
#: calls. It sleeps until the earliest watched call can be past its
#: deadline and grace: a worker whose calls end in time wakes it about
#: once per deadline, not every half second.
REAP_INTERVAL = 0.5
#: The most seconds the reaper sleeps (a deadline may be very long).
REAP_MAX_WAIT = 60.0
#: Nodes named in one abandonment WARNING (the rest are counted).
_NAMED = 5

# NOTE: which pool (and runtime) the current thread serves; set by the
# pool's own threads only, read by guard_call().
_local = threading.local()


class CallStillRunning(exceptions.ConductorException):
    message = ("Node %(node)s: the previous %(method)s call to its BMC was "
               "abandoned after %(seconds).1f s and has not returned; it is "
               "not called again until it does.")


@dataclasses.dataclass(eq=False)
class GuardedCall:
    """One driver call watched by the pool (see :func:`guard_call`)."""

    node: str
    method: str
    started: float
    #: Monotonic time after which (plus the pool's grace) it is abandoned.
    expires: float
    thread: int
    #: Set by the pool when the call was abandoned; the caller may read it
    #: once the call returned.
    abandoned: bool = False


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
        #: Threads started so far (names only; ``spawned`` also drops the
        #: threads that left the count).
        self.named = 0
        # -- abandoned calls (see guard_call) --
        #: thread ident -> its guarded call in progress.
        self.calls: dict[int, GuardedCall] = {}
        #: Pool threads that left the count: they end after their item.
        self.detached: set[int] = set()
        #: node -> its abandoned call, until that call returns.
        self.blocked: dict[str, GuardedCall] = {}
        #: node -> guarded calls on it in progress, abandoned or not.
        self.on_node: dict[str, int] = {}
        #: Nodes whose last call was abandoned (until one returns in time).
        self.suspect: set[str] = set()
        self.abandoned_total = 0
        self.degraded = False
        self.reaper: threading.Thread | None = None
        #: Set when the pool shuts down: the reaper ends.
        self.reaper_stop = threading.Event()
        #: Set to wake the reaper: a call with a shorter deadline than any
        #: before began (its sleep was planned without it), or shutdown.
        self.reaper_wake = threading.Event()
        #: The shortest deadline (seconds) of the guarded calls so far.
        self.shortest = float("inf")


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
    :param max_abandoned: the hard cap on abandoned calls still running
        (see the module documentation), at least 1; None: ``size``.
    :param grace: seconds past its deadline before a guarded call is
        abandoned.
    :param reap_interval: the least seconds between two looks for such
        calls (the reaper sleeps until the earliest could be one).
    :param clock: monotonic clock of the deadlines.
    :raises ValueError: when ``size`` or ``max_abandoned`` is not an
        integer >= 1.
    """

    def __init__(self, size: int, name: str,
                 max_abandoned: int | None = None, *,
                 grace: float = GRACE,
                 reap_interval: float = REAP_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                "WorkerPool size must be an integer >= 1, got %r" % (size,))
        if max_abandoned is None:
            max_abandoned = size
        if (isinstance(max_abandoned, bool)
                or not isinstance(max_abandoned, int) or max_abandoned < 1):
            raise ValueError("WorkerPool max_abandoned must be an integer "
                             ">= 1, got %r" % (max_abandoned,))
        #: The maximum number of threads and of unfinished submissions.
        self.size = size
        #: The name used in thread names and log lines.
        self.name = name
        #: The hard cap on abandoned calls still running.
        self.max_abandoned = max_abandoned
        self._grace = grace
        self._reap_interval = reap_interval
        self._clock = clock
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
                rt.named += 1
                index = rt.named
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
        _local.pool, _local.rt = self, rt
        ident = threading.get_ident()
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
            with rt.lock:
                if ident in rt.detached:
                    # NOTE: its call was abandoned; the pool already
                    # counts a new thread in its place.
                    rt.detached.discard(ident)
                    return

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
            if threading.get_ident() not in rt.detached:
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

        Keys: ``size``, ``busy``, ``free``, ``threads`` (in the pool's
        count now), ``submitted`` and ``rejected`` (totals), ``completed``
        and ``failed`` (submissions whose callable returned or raised),
        ``abandoned`` (abandoned calls still running), ``abandoned_total``
        (calls abandoned so far), ``abandoned_cap`` and ``degraded``.
        """
        rt = self._rt
        if rt is None:
            return {"size": self.size, "busy": 0, "free": self.size,
                    "threads": 0, "submitted": 0, "rejected": 0,
                    "completed": 0, "failed": 0, "abandoned": 0,
                    "abandoned_total": 0,
                    "abandoned_cap": self.max_abandoned,
                    "degraded": False}
        with rt.lock:
            return {"size": self.size, "busy": rt.busy,
                    "free": self.size - rt.busy, "threads": rt.spawned,
                    "submitted": rt.submitted, "rejected": rt.rejected,
                    "completed": rt.completed, "failed": rt.failed,
                    "abandoned": len(rt.blocked),
                    "abandoned_total": rt.abandoned_total,
                    "abandoned_cap": self.max_abandoned,
                    "degraded": rt.degraded}

    # -- abandoned calls -------------------------------------------------

    def abandoned_calls(self) -> tuple[int, int]:
        """``(total, running)``: calls abandoned so far, and still running.

        The counter a metrics exporter reads (``total`` only grows).
        """
        rt = self._rt
        if rt is None:
            return 0, 0
        with rt.lock:
            return rt.abandoned_total, len(rt.blocked)

    @property
    def degraded(self) -> bool:
        """True while ``max_abandoned`` abandoned calls are still running.

        No further call can be abandoned then: the next hung one holds
        its slot for good. The worker reports itself degraded and lets
        its nodes go until enough of those calls return.
        """
        rt = self._rt
        if rt is None:
            return False
        with rt.lock:
            return rt.degraded

    def call_blocked(self, node: str) -> bool:
        """True while an abandoned call on ``node`` is still running."""
        rt = self._rt
        if rt is None:
            return False
        with rt.lock:
            return node in rt.blocked

    def in_call(self, node: str) -> bool:
        """True while any guarded call on ``node`` runs (abandoned or not).

        A sweep skips such a node: it would only queue behind that call.
        """
        rt = self._rt
        if rt is None:
            return False
        with rt.lock:
            return node in rt.on_node

    def suspect(self, node: str) -> bool:
        """True when the last call on ``node`` was abandoned."""
        rt = self._rt
        if rt is None:
            return False
        with rt.lock:
            return node in rt.suspect

    def _begin_call(self, rt: _Runtime, node: str, method: str,
                    seconds: float) -> GuardedCall:
        ident = threading.get_ident()
        with rt.lock:
            # NOTE: read under the lock the reaper plans its sleep under.
            now = self._clock()
            previous = rt.blocked.get(node)
            if previous is not None:
                raise CallStillRunning(node=node, method=previous.method,
                                       seconds=now - previous.started)
            call = GuardedCall(node, method, now, now + seconds, ident)
            rt.calls[ident] = call
            rt.on_node[node] = rt.on_node.get(node, 0) + 1
            shorter = seconds < rt.shortest
            if shorter:
                rt.shortest = seconds
            reaper = None
            if rt.reaper is None and not rt.stopping:
                # NOTE: made on the first guarded call, in the worker (a
                # pool creates no thread before it is used).
                reaper = rt.reaper = threading.Thread(
                    target=self._reap_loop, args=(rt,),
                    name="%s-reaper" % self.name, daemon=True)
        if reaper is not None:
            reaper.start()
        elif shorter:
            rt.reaper_wake.set()
        return call

    def _end_call(self, rt: _Runtime, call: GuardedCall) -> None:
        with rt.lock:
            if rt.calls.get(call.thread) is call:
                del rt.calls[call.thread]
            left = rt.on_node.get(call.node, 1) - 1
            if left > 0:
                rt.on_node[call.node] = left
            else:
                rt.on_node.pop(call.node, None)
            if not call.abandoned:
                rt.suspect.discard(call.node)
                return
            rt.blocked.pop(call.node, None)
            recovered = rt.degraded and len(rt.blocked) < self.max_abandoned
            if recovered:
                rt.degraded = False
            running = len(rt.blocked)
        LOG.info("Worker pool %(pool)s: the abandoned %(method)s call on "
                 "node %(node)s returned after %(secs).1f s; %(n)d "
                 "abandoned call(s) still running",
                 {"pool": self.name, "method": call.method,
                  "node": call.node, "secs": self._clock() - call.started,
                  "n": running})
        if recovered:
            LOG.info("Worker pool %(pool)s is no longer degraded: "
                     "%(n)d abandoned call(s) still running, cap %(cap)d",
                     {"pool": self.name, "n": running,
                      "cap": self.max_abandoned})

    def _reap_loop(self, rt: _Runtime) -> None:
        while True:
            try:
                rt.reaper_wake.wait(self._reap_wait(rt))
                # NOTE: cleared before the stop is looked at, so that a
                # shutdown's wake is never lost.
                rt.reaper_wake.clear()
                if rt.reaper_stop.is_set():
                    return
                self.reap()
            except Exception:
                LOG.exception("Worker pool %(pool)s: looking for calls "
                              "past their deadline failed",
                              {"pool": self.name})

    def _reap_wait(self, rt: _Runtime) -> float:
        """Seconds the reaper sleeps before its next look.

        Until the earliest watched call can be past its deadline and the
        grace; a call that begins later has a later deadline unless it is
        shorter than any before, which wakes the reaper (see
        :meth:`_begin_call`). Never less than ``reap_interval``, nor more
        than :data:`REAP_MAX_WAIT`.
        """
        with rt.lock:
            now = self._clock()
            wait = rt.shortest
            for call in rt.calls.values():
                if not call.abandoned:
                    wait = min(wait, call.expires - now)
        return min(REAP_MAX_WAIT,
                   max(self._reap_interval, wait + self._grace))

    def reap(self) -> int:
        """Abandon the guarded calls past deadline + grace; how many.

        The pool's own reaper thread calls it when the earliest watched
        call can be past its deadline (at most every ``reap_interval``
        seconds); tests call it directly. Logs one WARNING per pass that
        abandoned calls, and one when the pool becomes degraded (the worker
        logs that at ERROR).
        """
        rt = self._rt
        if rt is None:
            return 0
        limit = self._clock() - self._grace
        newly: list[GuardedCall] = []
        became_degraded = False
        with rt.lock:
            for call in sorted(rt.calls.values(), key=lambda c: c.started):
                if call.abandoned or call.expires > limit:
                    continue
                if len(rt.blocked) >= self.max_abandoned:
                    became_degraded = not rt.degraded
                    rt.degraded = True
                    break
                call.abandoned = True
                del rt.calls[call.thread]
                rt.blocked[call.node] = call
                rt.suspect.add(call.node)
                rt.abandoned_total += 1
                if call.thread not in rt.detached:
                    # NOTE: the thread leaves the count: its slot is free
                    # for other work now; it ends once its item is done.
                    rt.detached.add(call.thread)
                    rt.busy -= 1
                    rt.spawned -= 1
                newly.append(call)
            if len(rt.blocked) >= self.max_abandoned and not rt.degraded:
                became_degraded = rt.degraded = True
            running = len(rt.blocked)
            total = rt.abandoned_total
            if newly:
                rt.cond.notify_all()
        if newly:
            now = self._clock()
            named = ", ".join("%s (%s, %.1f s)" % (
                c.node, c.method, now - c.started) for c in newly[:_NAMED])
            if len(newly) > _NAMED:
                named += " and %d more" % (len(newly) - _NAMED)
            LOG.warning("Worker pool %(pool)s abandoned %(n)d driver "
                        "call(s) still running past their deadline: "
                        "%(calls)s; their nodes are not called again "
                        "until they return. Abandoned calls running: "
                        "%(running)d (cap %(cap)d), %(total)d in total",
                        {"pool": self.name, "n": len(newly),
                         "calls": named, "running": running,
                         "cap": self.max_abandoned, "total": total})
        if became_degraded:
            LOG.warning("Worker pool %(pool)s is degraded: %(n)d abandoned "
                        "driver call(s) still running reached the cap "
                        "(max_abandoned_calls = %(cap)d); a further hung "
                        "call would hold its thread for good",
                        {"pool": self.name, "n": running,
                         "cap": self.max_abandoned})
        return len(newly)

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
            rt.reaper_stop.set()
            rt.reaper_wake.set()
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
        # Abandoned calls left the pool's count but still run.
        with rt.lock:
            unfinished = rt.busy + len(rt.detached)
            running = sorted(rt.running)
        if unfinished and wait:
            LOG.warning("Worker pool %(pool)s: %(count)d thread(s) still "
                        "busy after %(timeout)s s: %(names)s",
                        {"pool": self.name, "count": unfinished,
                         "timeout": timeout,
                         "names": ", ".join(running) or "(starting)"})
        return not unfinished


def current() -> WorkerPool | None:
    """The pool whose thread runs the caller, or None."""
    return getattr(_local, "pool", None)


def detached() -> bool:
    """True when the calling thread left its pool's count.

    Its call was abandoned: it should finish its item and take no more
    work (a fan-out lane stops taking items).
    """
    rt = getattr(_local, "rt", None)
    if rt is None:
        return False
    with rt.lock:
        return threading.get_ident() in rt.detached


class guard_call:
    """Watch a driver call on ``node`` expected to end within ``seconds``.

    ``with guard_call(node, method, seconds) as call:``. On a pool thread
    the pool abandons the call when it runs past ``seconds`` plus the
    pool's grace (see the module documentation); elsewhere this does
    nothing and ``call`` is None. Whatever the call returns is returned
    to its caller even when it was abandoned. A class rather than a
    generator: every driver call enters one.

    :raises CallStillRunning: when an abandoned call on ``node`` has not
        returned yet (nothing is called then).
    """

    __slots__ = ("_node", "_method", "_seconds", "_watched")

    def __init__(self, node: str, method: str, seconds: float) -> None:
        self._node = node
        self._method = method
        self._seconds = seconds
        self._watched: tuple[WorkerPool, _Runtime, GuardedCall] | None = None

    def __enter__(self) -> GuardedCall | None:
        pool = getattr(_local, "pool", None)
        rt = getattr(_local, "rt", None)
        if pool is None or rt is None:
            return None
        call = pool._begin_call(rt, self._node, self._method, self._seconds)
        self._watched = (pool, rt, call)
        return call

    def __exit__(self, *exc_info: object) -> None:
        watched, self._watched = self._watched, None
        if watched is not None:
            pool, rt, call = watched
            pool._end_call(rt, call)

# SPDX-License-Identifier: Apache-2.0
"""Pins the futurist internals conductor.executor.runner relies on.

futurist is pinned below its next major release; these tests fail first
when a release changes what the runner depends on.
"""

from __future__ import annotations

from concurrent import futures
import threading
import time
from typing import Any, Callable

from futurist import periodics as futurist_periodics

from conductor.executor import runner as runner_mod
from conductor import periodics
from tests import base


class _Owner:

    @periodics.periodic(spacing=0.01, run_immediately=True)
    def tick(self) -> None:
        pass


class _Recording(futures.Executor):
    """Records what futurist submits, and runs it in the caller."""

    def __init__(self) -> None:
        self.args: list[tuple[Any, ...]] = []
        self.submitted = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> futures.Future[Any]:
        self.args.append(args)
        self.submitted.set()
        future: futures.Future[Any] = futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


class TestFuturistInternals(base.TestCase):

    def task(self) -> runner_mod._Task:
        [spec] = periodics.collect(_Owner())
        return runner_mod._Task(spec, lambda task: None, time.monotonic,
                                time.time)

    def test_a_task_is_a_futurist_periodic_callback(self) -> None:
        task = self.task()
        self.assertTrue(futurist_periodics.is_periodic(task))
        self.assertEqual(0.01, getattr(task, "_periodic_spacing"))
        self.assertFalse(getattr(task, "_periodic_run_immediately"))

    def test_our_schedule_is_a_built_in_strategy(self) -> None:
        strategies = runner_mod._Worker.BUILT_IN_STRATEGIES
        self.assertIn("last_started",
                      futurist_periodics.PeriodicWorker.BUILT_IN_STRATEGIES)
        next_run, first_run = strategies[runner_mod._STRATEGY]
        task = self.task()
        self.assertEqual(100.0, first_run(task, 100.0))
        self.assertEqual(50.01, next_run(task, 50.0, 60.0, {}))

    def test_the_executor_is_handed_the_task_as_a_work_callback(self
                                                                ) -> None:
        task = self.task()
        executor = _Recording()
        worker = runner_mod._Worker(
            [(task, None, None)],
            executor_factory=futurist_periodics.ExistingExecutor(executor),
            schedule_strategy=runner_mod._STRATEGY)
        thread = threading.Thread(target=worker.start, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 10.0)
        self.addCleanup(worker.stop)
        self.assertTrue(executor.submitted.wait(10.0))
        self.assertIs(task, runner_mod._find_task(executor.args[0]))

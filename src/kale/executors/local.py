"""The local executor: tasks run on this machine, through one warm runner per kind."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from kale.executors.base import Executor, Interrupted
from kale.model.workflow import Task
from kale.tasks.base import Outcome, Requeue, TaskContext, TaskRunner
from kale.tasks.registry import runner_class, runner_kind


class LocalExecutor(Executor):
    """Tasks run on this machine, in this process's task runners: one runner per task kind,
    made on first use with ``min(slots, tasks of that kind)`` slots and kept until
    :meth:`close`, so warm worker processes and kernels serve the whole run.

    Threads: the engine's event loop only, as every :class:`Executor`."""

    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        self.slots = max(1, jobs or os.cpu_count() or 1)
        self.runners: dict[str, TaskRunner] = {}
        self._makes: dict[str, bool] = {}  # by kind: its runner makes a task's directory

    def _runner(self, kind: str, tasks: int | None = None) -> TaskRunner:
        runner = self.runners.get(kind)
        if runner is None:
            # No more warm workers or kernels than there are tasks of this kind.
            slots = min(self.slots, tasks) if tasks else self.slots
            runner = self.runners[kind] = runner_class(kind)(slots=slots)
            runner.ahead = True  # (see ahead())
        return runner

    async def start(self, kinds: Mapping[str, int]) -> None:
        await asyncio.gather(*(self._runner(k, n).start() for k, n in sorted(kinds.items())))

    def makes_workdir(self, task: Task) -> bool:
        """A kind whose runner makes the task's directory itself (Python's warm workers:
        the engine's thread then never spends a system call on it)."""
        kind = runner_kind(task)
        made = self._makes.get(kind)
        if made is None:
            made = self._makes[kind] = runner_class(kind).makes_workdir
        return made

    def ahead(self) -> int:
        """Python tasks its warm workers could take now beyond its slots, each queued in
        a worker behind a task that has just started (:class:`~kale.tasks.python.
        PythonRunner`): the worker starts it the moment the one before ends."""
        runner = self.runners.get("python")
        return runner.room() if runner is not None else 0

    def queues_ahead(self, task: Task) -> bool:
        return runner_kind(task) == "python"

    async def execute(self, ctx: TaskContext) -> Outcome:
        try:
            return await self._runner(runner_kind(ctx.task)).run(ctx)
        except Requeue as e:
            raise Interrupted(str(e)) from None

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.runners.values()),
                             return_exceptions=True)
        self.runners.clear()

"""One run, several executors: each task goes to the executor its spec names (its own
``executor:``, else the run's). Tasks on a workflow engine (Dask, Parsl: the
``kale.engines`` registry) go to one engine executor per distinct spec; the rest go to the
run's own executor (this process's runners, or the manager's workers, which themselves
place local, batch-job and pilot tasks). References and files flow between them as they
do within one: results come back to the engine, files live on a shared file system."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kale import plugins
from kale.executors.base import Executor, Interrupted
from kale.model.executor import ExecutorSpec
from kale.model.workflow import Task, Workflow
from kale.tasks.base import Outcome, TaskContext
from kale.tasks.registry import runner_kind


def engine_spec(wf: Workflow, name: str, default: ExecutorSpec | None) -> ExecutorSpec | None:
    """The engine spec task ``name`` runs on, or None (it runs on the run's executor)."""
    return task_engine_spec(wf.tasks[name], default)


def task_engine_spec(task: Task, default: ExecutorSpec | None) -> ExecutorSpec | None:
    spec = task.executor or default
    return spec if spec is not None and spec.engine else None


def uses_engines(wf: Workflow, default: ExecutorSpec | None) -> bool:
    return any(engine_spec(wf, n, default) is not None for n in wf.tasks)


def make_engine_executor(spec: ExecutorSpec, base_dir: Path, run_dir: Path,
                         jobs: int | None = None) -> Executor:
    """The executor of an engine spec, from the ``kale.engines`` registry."""
    cls = plugins.load(plugins.entries(plugins.ENGINES)[spec.kind])
    executor: Executor = cls(spec, base_dir, run_dir, jobs)
    return executor


class Router(Executor):
    """Sends each attempt to its task's executor (see the module). Tasks wait in a queue
    (the engine records them SUBMITTED) until their executor starts them: a queued
    executor says so itself; for the others the router says it when the attempt gets one
    of that executor's slots.

    Promises: at most ``slots`` attempts of each executor at once; ``remote`` and
    :meth:`adopt` are the run's own executor's (an engine's attempt cannot be adopted by a
    new engine: it is interrupted and runs again)."""

    name = "router"
    queued = True

    def __init__(self, default: Executor, wf: Workflow, default_spec: ExecutorSpec | None,
                 run_dir: Path, jobs: int | None = None) -> None:
        self.default = default
        self.remote = default.remote
        self.targets: dict[str, Executor] = {}
        self.engines: dict[str, Executor] = {}
        self._spec, self._base_dir, self._run_dir, self._jobs = (
            default_spec, wf.base_dir, run_dir, jobs)
        for task in wf.tasks.values():
            self.targets[task.name] = self._place(task)
        self._kinds = {name: runner_kind(t) for name, t in wf.tasks.items()}
        self._gates: dict[int, asyncio.Semaphore] = {}
        self._starting: dict[int, asyncio.Future[None]] = {}
        self.slots = sum(e.slots for e in {id(e): e for e in self.targets.values()}.values())

    def _place(self, task: Task) -> Executor:
        """The executor a task's spec names: an engine's (one per distinct spec), else the
        run's own."""
        spec = task_engine_spec(task, self._spec)
        if spec is None:
            return self.default
        key = json.dumps(spec.to_value(), sort_keys=True, default=str)
        if key not in self.engines:
            self.engines[key] = make_engine_executor(spec, self._base_dir, self._run_dir,
                                                     self._jobs)
        return self.engines[key]

    def add_tasks(self, tasks: Sequence[Task]) -> None:
        """Tasks the run added: each to the executor its spec names. An engine no task
        named before is made now, checked, and started when its first task is due."""
        for task in tasks:
            known = set(map(id, self.engines.values()))
            target = self.targets[task.name] = self._place(task)
            if id(target) not in known and target is not self.default:
                target.check()
                target.on_start, target.on_wait, target.on_samples = (
                    self.on_start, self.on_wait, self.on_samples)
                self._counts[id(target)] = {}
                self.slots += target.slots
            mine = self._counts[id(target)]
            kind = self._kinds[task.name] = runner_kind(task)
            mine[kind] = mine.get(kind, 0) + 1

    def _executors(self) -> list[Executor]:
        return [self.default, *self.engines.values()]

    async def start(self, kinds: Mapping[str, int]) -> None:
        for e in self._executors():
            e.on_start, e.on_wait, e.on_samples = self.on_start, self.on_wait, self.on_samples
            if not e.queued:
                self._gates[id(e)] = asyncio.Semaphore(e.slots)
        self._counts: dict[int, dict[str, int]] = {id(e): {} for e in self._executors()}
        for name, target in self.targets.items():
            mine = self._counts[id(target)]
            mine[self._kinds[name]] = mine.get(self._kinds[name], 0) + 1
        for engine in self.engines.values():
            engine.check()
        await self.default.start(self._counts[id(self.default)])

    async def _started(self, target: Executor) -> None:
        """An engine starts (its cluster, its DataFlowKernel) when its first task is due:
        a run whose engine tasks are all reused never starts it."""
        starting = self._starting.get(id(target))
        if starting is None:
            starting = self._starting[id(target)] = asyncio.ensure_future(
                target.start(self._counts[id(target)]))
        await asyncio.shield(starting)

    async def execute(self, ctx: TaskContext) -> Outcome:
        target = self.targets[ctx.task.name]
        if target is not self.default:
            await self._started(target)
        gate = self._gates.get(id(target))
        if gate is None:
            return await target.execute(ctx)
        async with gate:
            if self.on_start is not None:
                self.on_start(ctx.task.name, ctx.attempt, target.name)
            return await target.execute(ctx)

    def makes_workdir(self, task: Task) -> bool:
        target = self.targets[task.name]
        return target is not self.default or target.makes_workdir(task)

    async def adopt(self, ctx: TaskContext, started: bool) -> Outcome:
        target = self.targets[ctx.task.name]
        if target is not self.default:
            raise Interrupted(f"its {target.name} attempt belonged to the engine before a "
                              "restart; it runs again")
        return await target.adopt(ctx, started)

    def control(self, ctx: TaskContext, action: str, reason: str = "") -> bool:
        return self.targets[ctx.task.name].control(ctx, action, reason)

    async def close(self) -> None:
        for starting in self._starting.values():  # an engine still starting is waited for
            with contextlib.suppress(BaseException):
                await starting
        await asyncio.gather(*(e.close() for e in self._executors()), return_exceptions=True)
        for e in self._executors():  # the run's callbacks: no cycle back to its engine
            e.on_start = e.on_wait = e.on_samples = None

    def dashboards(self) -> dict[str, Any]:
        """The engines' own dashboards (name -> URL), where they have one."""
        return {e.name: getattr(e, "dashboard", None) for e in self.engines.values()
                if getattr(e, "dashboard", None)}

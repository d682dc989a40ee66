"""Executors decide how tasks reach compute. The engine hands an executor a prepared task
context and awaits its outcome: the local executor runs it in this process's runners; the
worker executor (in the manager) queues it for workers, which may be local processes or
pilots inside batch allocations."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kale.errors import UsageError
from kale.model.workflow import Task
from kale.tasks.base import Outcome, TaskContext

#: ``(task name, attempt, worker id)``: an attempt the executor had queued has started;
#: called in the engine's event loop
StartedCallback = Callable[[str, int, str], None]
#: ``(task name, attempt, info)``: an interactive step now waits for a person
WaitingCallback = Callable[[str, int, dict[str, Any]], None]
#: rows of the store's resource samples (``run_id``, ``task``, ``attempt``, ``ts``, ``cpu``...)
#: of tasks the executor itself sampled where they ran
SamplesCallback = Callable[[list[dict[str, Any]]], None]


class Executor(abc.ABC):
    """How a run's attempts reach compute: one executor per run, owned by its engine.

    Threads: every method is called on the engine's event loop, and :attr:`on_start` and
    :attr:`on_wait` are called back on that loop too (an executor whose news arrives on other
    threads posts it there first, as :class:`~kale.executors.mailbox.Mailbox` does).

    Promises: at most :attr:`slots` attempts are running or queued at once (the engine
    holds to it); :meth:`execute` returns the attempt's :class:`Outcome`, or raises
    :class:`Interrupted` to have it requeued without counting a retry; cancelling
    :meth:`execute` stops the attempt (a local one's whole process group, before the
    cancellation leaves it; a remote one's by telling its worker); :meth:`close` releases
    everything :meth:`start` and :meth:`execute` started."""

    name: str
    #: how many tasks may run (or wait in its queue) at once
    slots: int
    #: tasks wait in a queue before they start: the engine records them SUBMITTED, and
    #: RUNNING when the executor calls :attr:`on_start` (in the engine's loop)
    queued: bool = False
    #: tasks run in processes that outlive the engine (workers): after a restart the engine
    #: adopts running attempts (:meth:`adopt`) instead of killing and requeueing them
    remote: bool = False
    on_start: StartedCallback | None = None
    on_wait: WaitingCallback | None = None
    on_samples: SamplesCallback | None = None

    #: why this run may not use a workflow engine at all (None: it may, if it names one
    #: from the start): what a task added on one is told
    engines_refused: str | None = None

    def ahead(self) -> int:
        """How many attempts it could take now beyond :attr:`slots`, of tasks it
        :meth:`queues_ahead` and only while every active attempt is of such a task:
        queued where they will run, to start the moment a slot frees there. 0: none."""
        return 0

    def queues_ahead(self, task: Task) -> bool:
        """Whether an attempt of ``task`` may be taken beyond the slots (:meth:`ahead`)."""
        return False

    def makes_workdir(self, task: Task) -> bool:
        """Whether the task's directory is made where it runs (by a worker, an engine's
        host, the process that runs it) rather than by the engine before :meth:`execute`."""
        return self.remote

    def add_tasks(self, tasks: Sequence[Task]) -> None:
        """Tasks the run added as it ran (a map's members, tasks a task added): an
        executor that places tasks by name learns where they go. Raises
        :class:`~kale.errors.UsageError` for a task it cannot place: here, one that names
        a workflow engine (only a run with engine tasks has the router that places them)."""
        named = sorted({f"{t.executor.kind} ({t.name})" for t in tasks
                        if t.executor is not None and t.executor.engine})
        if named and self.engines_refused:
            raise UsageError(f"a task added to this run names the engine {', '.join(named)}: "
                             f"{self.engines_refused}")
        if named:
            raise UsageError(f"a task added to this run names the engine {', '.join(named)}, "
                             "but the run uses no engine; give the workflow a task on it")

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~kale.errors.UsageError` if its settings cannot work (what they
        name cannot be imported...), before anything runs; cheap, and starts nothing."""

    async def start(self, kinds: Mapping[str, int]) -> None:  # noqa: B027 - optional hook
        """Prepare to run tasks of these kinds (``kind -> number of tasks``): warm pools."""

    @abc.abstractmethod
    async def execute(self, ctx: TaskContext) -> Outcome:
        """Run one attempt; cancellation must stop it."""

    async def adopt(self, ctx: TaskContext, started: bool) -> Outcome:
        """Await an attempt a previous engine started (``remote`` executors only). Raises
        :class:`Interrupted` if no worker has it any more."""
        raise Interrupted("this executor cannot adopt running tasks")

    def control(self, ctx: TaskContext, action: str, reason: str = "") -> bool:
        """``suspend`` or ``resume`` a running attempt, ``continue`` or ``reject`` a
        waiting step; False if this executor cannot."""
        return False

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything started."""


class Interrupted(Exception):
    """The attempt stopped for reasons of its own executor (a worker shut down, or no
    worker claimed it after a restart): requeue it without counting a retry."""

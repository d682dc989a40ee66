"""The worker executor (in the manager): attempts go to the broker, which hands them to
connected workers; outcomes come back as their reports."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kale.executors.base import Executor
from kale.executors.mailbox import Mailbox
from kale.model.executor import ExecutorSpec
from kale.tasks.base import Outcome, TaskContext
from kale.worker.protocol import encode_context

if TYPE_CHECKING:
    from kale.manager.broker import Broker, Pending

#: attempts of one run queued or running at once, unless the run says otherwise (``jobs``)
#: more when its user's connected workers have many slots (:attr:`WorkerExecutor.slots`)
WINDOW = 1024


class WorkerExecutor(Executor):
    """The manager's executor for one run: each attempt becomes a :class:`Pending` handed to the
    broker, in the pool its executor spec names (none: general workers; a batch spec: a job
    of its own, or that spec's pilots), and ends with the report of the worker that took it.

    Threads: the run's engine loop, as every executor (:meth:`start` must run there: it
    makes the mailbox). The broker resolves attempts, and says they started or wait for a
    person, from its own threads; all of that reaches the engine through one
    :class:`Mailbox` posted to its loop.

    Promises: an attempt the engine stops awaiting (cancel, timeout) is withdrawn, which
    tells its worker to stop it; but once :meth:`close` ran (the manager stops), attempts are
    left running on their workers for the next manager to adopt (``remote``)."""

    name = "workers"
    queued = True
    remote = True

    def __init__(self, broker: Broker, user: str, run_id: str, jobs: int | None = None,
                 default: ExecutorSpec | None = None) -> None:
        self.broker, self.user, self.run_id = broker, user, run_id
        self.jobs = jobs
        self._inflight = 0  # attempts handed to the broker and not yet over
        #: where tasks without an executor of their own go (None: general workers)
        self.default = default
        self._closed = False

    @property
    def slots(self) -> int:  # type: ignore[override]
        """Attempts of this run queued or running at once (read by the engine at each
        dispatch): ``jobs``, else the slots of the user's connected workers plus
        :data:`WINDOW` waiting at the broker (1,000 pilots of 64 slots are all fed), grown
        by at most :data:`WINDOW` per dispatch (64,000 attempts prepared in one go would
        hold the run's loop for seconds before the first reached a worker)."""
        if self.jobs:
            return self.jobs
        limit = WINDOW + max(0, self.broker.capacity.get(self.user, 0))
        return min(limit, self._inflight + WINDOW)

    async def start(self, kinds: Mapping[str, int]) -> None:
        self.mailbox = Mailbox(asyncio.get_running_loop())
        self.broker.live_runs.add(self.run_id)

    async def execute(self, ctx: TaskContext) -> Outcome:
        return await self._await(ctx, False, True)

    async def adopt(self, ctx: TaskContext, started: bool) -> Outcome:
        return await self._await(ctx, True, started)

    async def _await(self, ctx: TaskContext, adopted: bool, running: bool) -> Outcome:
        from kale.manager.broker import Pending

        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        post = self.mailbox.post  # from the broker's thread into this loop

        def resolve(value: Outcome | BaseException) -> None:
            post(_settle, fut, value)

        name, attempt = ctx.task.name, ctx.attempt
        on_start = self.on_start

        def started(worker: str) -> None:
            if on_start is not None:
                post(on_start, name, attempt, worker)

        on_wait = self.on_wait

        def waiting(info: dict[str, Any]) -> None:
            if on_wait is not None:
                post(on_wait, name, attempt, info)

        key = (ctx.run_id, name, attempt)
        spec = ctx.task.executor or self.default
        pool, placement = None, None
        if spec is not None and spec.batch:
            pool = batch_pool(key, spec)
            placement = {"spec": spec, "resources": ctx.task.resources,
                         "walltime": ctx.task.resources.walltime}
        p: Pending = Pending(key, self.user, resolve, encode_context(ctx), started,
                             adopted=adopted, was_running=running, pool=pool,
                             placement=placement, waiting=waiting)
        if adopted:
            self.broker.adopt(p)
        else:
            self.broker.submit(p)
        self._inflight += 1
        try:
            return await fut
        except asyncio.CancelledError:
            if not self._closed:  # closed: the manager stops; the task runs on
                self.broker.withdraw(key)
            raise
        finally:
            self._inflight -= 1

    def control(self, ctx: TaskContext, action: str, reason: str = "") -> bool:
        return self.broker.control((ctx.run_id, ctx.task.name, ctx.attempt), action, reason)

    async def close(self) -> None:
        self._closed = True
        self.broker.live_runs.discard(self.run_id)


def batch_pool(key: tuple[str, str, int], spec: ExecutorSpec) -> str:
    """The pool of workers that may take an attempt: a job of its own (``task:...``), or
    the pilots of one executor spec (``pilot:slurm:<hash of the spec>``)."""
    import hashlib
    import json

    if not spec.pilot:
        return f"task:{key[0]}/{key[1]}/{key[2]}"
    digest = hashlib.sha256(json.dumps(spec.options, sort_keys=True).encode()).hexdigest()
    return f"pilot:{spec.kind}:{digest[:12]}"


def _settle(fut: asyncio.Future[Outcome], value: Outcome | BaseException) -> None:
    if fut.done():
        return
    if isinstance(value, asyncio.CancelledError):
        fut.cancel()
    elif isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)

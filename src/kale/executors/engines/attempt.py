"""What runs on another engine's worker (a Dask worker, a Parsl worker): one attempt of a
Kale task, run by Kale's own task runners, so it behaves exactly as under
:class:`~kale.executors.local.LocalExecutor` (its directory, its logs written as it runs,
its records, warm Python processes replaced when their code changed, a fresh kernel per
notebook, the user code it ran reported for reuse).

The engine's worker calls :func:`run_attempt` in one of its threads; a process-wide
:class:`Host` runs the runners on an event loop of its own (one daemon thread), shared
by every task that worker process runs. The task's directory is on a file system both
sides see (as a batch job's is), which also carries what goes back while the attempt runs:

- **cancel**: the executor writes :func:`cancel_marker` (``.kale-cancel-ATTEMPT`` in the
  task's directory); the host looks for the markers of its running attempts every
  :data:`CANCEL_POLL` seconds and cancels them (the runner kills the task's process
  group before the attempt returns);
- **start**: an engine that does not say when a task starts (Parsl) has the host write
  :func:`start_marker` (``.kale-started/ATTEMPT-TASK`` in the run's directory, holding the
  worker's host name) as the attempt starts; its executor lists that one folder;
- **kernel**: while a notebook task's kernel runs, its connection info is in
  :data:`KERNEL_FILE` (0600) in the task's directory, where the manager finds it for the
  task's owner (:func:`read_kernel`).

Invariants: at most one host per process; an attempt whose cancel marker exists when it
would start does not start; the kernel file never outlives its attempt's end in a live
host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.record import read_records
from kale.tasks.registry import runner_class, runner_kind

#: how often (seconds) a host looks for the cancel markers of the attempts it runs
CANCEL_POLL = 0.25
#: the connection info of a running notebook task's kernel, in its directory
KERNEL_FILE = ".kale-kernel.json"
#: the folder of start markers, in the run's directory
STARTED = ".kale-started"


def cancel_marker(ctx: TaskContext) -> Path:
    """The file whose existence cancels attempt ``ctx`` wherever it runs."""
    return ctx.workdir / f".kale-cancel-{ctx.attempt}"


def start_marker(ctx: TaskContext) -> Path:
    """The file that says attempt ``ctx`` started (:data:`STARTED` in the run's directory)."""
    return ctx.workdir.parent / STARTED / f"{ctx.attempt}-{ctx.task.name}"


def read_kernel(workdir: Path) -> dict[str, Any] | None:
    """The kernel connection info a task running on an engine's worker left in its
    directory, or None."""
    try:
        info = json.loads((workdir / KERNEL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class Host:
    """Kale's task runners in a worker process of another engine: one event loop thread,
    one runner per task kind (made on first use), the attempts running now by key.

    Threads: :meth:`run` is called from any of the engine's threads and blocks it until
    the attempt ends; everything else happens on the host's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: dict[str, TaskRunner] = {}
        self._starting: dict[str, asyncio.Future[TaskRunner]] = {}
        self.running: dict[tuple[str, str, int], tuple[TaskContext, asyncio.Task[Any]]] = {}
        thread = threading.Thread(target=self._serve, name="kale-attempts", daemon=True)
        thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._watch_cancels())
        self.loop.run_forever()

    def run(self, ctx: TaskContext, mark_start: bool = False) -> Outcome:
        """Run one attempt to its end (blocking the calling thread); with ``mark_start``,
        write its start marker first."""
        return asyncio.run_coroutine_threadsafe(self._run(ctx, mark_start),
                                                self.loop).result()

    async def _runner(self, kind: str) -> TaskRunner:
        runner = self.runners.get(kind)
        if runner is not None:
            return runner
        starting = self._starting.get(kind)
        if starting is None:  # the first task of a kind starts its runner; others wait
            starting = self._starting[kind] = self.loop.create_future()
            made = runner_class(kind)(slots=1)
            try:
                await made.start()
            except BaseException as e:
                del self._starting[kind]
                starting.set_exception(e)
                raise
            self.runners[kind] = made
            starting.set_result(made)
        return await asyncio.shield(starting)

    async def _run(self, ctx: TaskContext, mark_start: bool) -> Outcome:
        key = (ctx.run_id, ctx.task.name, ctx.attempt)
        ctx.make_workdir()  # what an earlier attempt left running here is stopped first
        if cancel_marker(ctx).exists():
            return Outcome(ok=False, error="cancelled before it started")
        if mark_start:
            marker = start_marker(ctx)
            marker.parent.mkdir(exist_ok=True)
            marker.write_text(socket.gethostname(), encoding="utf-8")
        ctx.on_kernel = lambda info: _write_kernel(ctx.workdir, info)
        task = asyncio.current_task()
        assert task is not None
        self.running[key] = (ctx, task)
        try:
            runner = await self._runner(runner_kind(ctx.task))
            out = await runner.run(ctx)
            if out.ok:  # what kale.record kept goes back with the outcome
                out.records = read_records(ctx.records_path, ctx.base_dir) \
                    if os.path.exists(ctx.records_path) else {}
            return out
        except asyncio.CancelledError:
            return Outcome(ok=False, error="cancelled")
        finally:
            self.running.pop(key, None)
            _write_kernel(ctx.workdir, None)
            with contextlib.suppress(OSError):
                cancel_marker(ctx).unlink()

    async def _watch_cancels(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL)
            for ctx, task in list(self.running.values()):
                if cancel_marker(ctx).exists():
                    task.cancel()


def _write_kernel(workdir: Path, info: dict[str, Any] | None) -> None:
    path = workdir / KERNEL_FILE
    if info is None:
        with contextlib.suppress(OSError):
            path.unlink()
        return
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, path)


_HOST: Host | None = None
_HOST_LOCK = threading.Lock()


def host() -> Host:
    """This process's host of task runners (made on first use)."""
    global _HOST
    with _HOST_LOCK:
        if _HOST is None:
            _HOST = Host()
        return _HOST


def run_attempt(ctx: TaskContext, mark_start: bool = False) -> Outcome:
    """Run one attempt of a Kale task here, in this process's :class:`Host`: the function
    an engine's worker calls (a Parsl app, a Dask task)."""
    return host().run(ctx, mark_start)


def run_on_dask(ctx: TaskContext) -> Outcome:
    """:func:`run_attempt` as a Dask task: first tells the client that the attempt started
    on this worker (the ``kale-started`` event topic)."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event("kale-started", {"run": ctx.run_id, "task": ctx.task.name,
                                      "attempt": ctx.attempt, "worker": worker.address})
    return run_attempt(ctx)

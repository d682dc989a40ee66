"""What runs on another engine's worker (a Dask worker, a Parsl worker): one attempt of a
Kale task, run by Kale's own task runners, so it behaves exactly as under
:class:`~kale.executors.local.LocalExecutor` (its directory, its logs written as it runs,
its records, warm Python processes replaced when their code changed, a fresh kernel per
notebook, the user code it ran reported for reuse).

A Parsl worker calls :func:`run_attempt` in one of its threads, which runs the attempt
in a :class:`Host` whose event loop it drives itself while the attempt runs (one host per
such thread, with its warm processes: no hop to another thread and back); a Dask worker
awaits :func:`run_on_dask` on its event loop, and the attempt runs in the process-wide
:class:`Host`, on an event loop of its own (one daemon thread), so the worker's loop stays
free for Dask's messages while it runs. The task's directory is on a file system both
sides see (as a batch job's is), which also carries what goes back while the attempt runs:

- **cancel**: the executor writes :func:`cancel_marker` (``.kale-cancel-ATTEMPT`` in the
  task's directory); the host looks for the markers of its running attempts every
  :data:`CANCEL_POLL` seconds and cancels them (the runner kills the task's process
  group before the attempt returns);
- **start**: an engine that does not say when a task starts (Parsl) has the host write
  :func:`start_marker` (``.kale-started/ATTEMPT-TASK`` in the run's directory, holding the
  worker's host name) once the attempt ran :data:`START_DELAY` seconds (a shorter one's
  outcome says where it ran: one file less to make, read and remove per short task); its
  executor lists that one folder (on Dask, the starts go back as worker events instead,
  see :func:`run_on_dask`);
- **samples**: every :data:`SAMPLE_INTERVAL` seconds the host samples the process trees
  of its running attempts (:class:`~kale.tasks.monitor.TreeMonitor`, as Kale's workers do)
  and appends them, one JSON line each, to ``.kale-samples/ATTEMPT-TASK`` in the run's
  directory; the executor reads what is new (:class:`Inbox`) into the run's store;
- **kernel**: while a notebook task's kernel runs, its connection info is in
  :data:`KERNEL_FILE` (0600) in the task's directory, where the manager finds it for the
  task's owner (:func:`read_kernel`).

Invariants: at most one threaded host per process, and one driven host per thread; an
attempt whose cancel marker exists when it would start does not start; the kernel file
never outlives its attempt's end in a live host."""

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
#: the folder of resource samples, in the run's directory
SAMPLES = ".kale-samples"
#: how often (seconds) a host samples the process trees of the attempts it runs
SAMPLE_INTERVAL = 2.0
#: how long (seconds) an attempt runs before its start marker is written: a shorter one
#: writes none, its outcome says where it ran (:func:`run_on_parsl`)
START_DELAY = 0.05
HOSTNAME = socket.gethostname()


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

    Made with no ``loop``, it runs one of its own in a daemon thread; given one that is
    ``driven``, it works while its caller runs that loop (:func:`run_attempt`). Threads:
    :meth:`run` (threaded hosts only) is called from any of the engine's threads and
    blocks it until the attempt ends; everything else happens on the host's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None,
                 driven: bool = False) -> None:
        self.loop = loop or asyncio.new_event_loop()
        self.runners: dict[str, TaskRunner] = {}
        self._starting: dict[str, asyncio.Future[TaskRunner]] = {}
        self.running: dict[tuple[str, str, int], tuple[TaskContext, asyncio.Task[Any]]] = {}
        self._background: list[asyncio.Future[None]] = []
        if loop is None:
            thread = threading.Thread(target=self._serve, name="kale-attempts", daemon=True)
            thread.start()
        elif driven:  # a loop its caller runs while an attempt runs
            self._watch()
        else:
            raise ValueError("a Host given a loop is driven by its caller")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._watch()
        self.loop.run_forever()

    def _watch(self) -> None:
        self._background = [self.loop.create_task(self._watch_cancels()),
                            self.loop.create_task(self._sample())]

    async def _sample(self) -> None:
        from kale.tasks.monitor import TreeMonitor

        monitor: TreeMonitor[tuple[str, str, int]] = TreeMonitor()
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            current = {k: list(ctx.pids) for k, (ctx, _) in self.running.items() if ctx.pids}
            monitor.follow(current)
            if not current:
                continue
            try:
                taken = await asyncio.to_thread(monitor.sample)
            except Exception:  # a sample lost is not worth a task
                continue
            for key, sample in taken.items():
                entry = self.running.get(key)
                if sample.procs and entry is not None:
                    _append_sample(entry[0], sample.to_json())

    def run(self, ctx: TaskContext, mark_start: bool = False) -> Outcome:
        """Run one attempt to its end (blocking the calling thread); with ``mark_start``,
        write its start marker once it ran :data:`START_DELAY` seconds."""
        return asyncio.run_coroutine_threadsafe(self._run(ctx, mark_start),
                                                self.loop).result()

    async def attempt(self, ctx: TaskContext) -> Outcome:
        """Run one attempt to its end, on the host's loop (cancelling the awaiting task
        cancels the attempt)."""
        return await self._run(ctx, False)

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
        marking = self.loop.call_later(START_DELAY, _mark_start, ctx) if mark_start else None
        kernel: list[bool] = []  # whether a kernel file was written

        def on_kernel(info: dict[str, Any] | None) -> None:
            kernel.append(True)
            _write_kernel(ctx.workdir, info)

        ctx.on_kernel = on_kernel
        task = asyncio.current_task()
        assert task is not None
        self.running[key] = (ctx, task)
        try:
            runner = await self._runner(runner_kind(ctx.task))
            out = await runner.run(ctx)
            if out.ok and out.records is None:  # what kale.record kept goes back with it
                out.records = read_records(ctx.records_path, ctx.base_dir) \
                    if os.path.exists(ctx.records_path) else {}
            return out
        except asyncio.CancelledError:
            return Outcome(ok=False, error="cancelled")
        finally:
            if marking is not None:
                marking.cancel()
            entry = self.running.pop(key, None)
            if kernel:
                _write_kernel(ctx.workdir, None)
            if entry is not None and entry[1].cancelling():  # (its marker was written)
                with contextlib.suppress(OSError):
                    cancel_marker(ctx).unlink()

    async def _watch_cancels(self) -> None:
        while True:
            await asyncio.sleep(CANCEL_POLL)
            for ctx, task in list(self.running.values()):
                if cancel_marker(ctx).exists():
                    task.cancel()


def _mark_start(ctx: TaskContext) -> None:
    marker = start_marker(ctx)
    with contextlib.suppress(OSError):  # the outcome says where it ran, at the latest
        marker.parent.mkdir(exist_ok=True)
        marker.write_text(HOSTNAME, encoding="utf-8")


def _append_sample(ctx: TaskContext, sample: dict[str, Any]) -> None:
    path = ctx.workdir.parent / SAMPLES / f"{ctx.attempt}-{ctx.task.name}"
    with contextlib.suppress(OSError):
        path.parent.mkdir(exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(sample) + "\n")


class Inbox:
    """The executor's side of the files the hosts write in a run's directory: which
    attempts started (:data:`STARTED`) and their new resource samples (:data:`SAMPLES`).
    One listing of each folder per :meth:`poll`, whatever the number of tasks."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._read: dict[str, int] = {}  # sample file -> bytes read

    def started(self) -> dict[str, str]:
        """Attempts whose start marker is there (``ATTEMPT-TASK`` -> the host it runs on);
        their markers are taken away."""
        out: dict[str, str] = {}
        for name in _listing(self.run_dir / STARTED):
            path = self.run_dir / STARTED / name
            try:
                out[name] = path.read_text(encoding="utf-8")
                path.unlink()
            except OSError:
                continue
        return out

    def samples(self, run_id: str) -> list[dict[str, Any]]:
        """The samples written since the last call, as rows of the store's samples."""
        rows: list[dict[str, Any]] = []
        for name in _listing(self.run_dir / SAMPLES):
            attempt, _, task = name.partition("-")
            try:
                with open(self.run_dir / SAMPLES / name, "rb") as f:
                    f.seek(self._read.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            whole = data[:data.rfind(b"\n") + 1]  # a line being written waits
            self._read[name] = self._read.get(name, 0) + len(whole)
            for line in whole.splitlines():
                with contextlib.suppress(ValueError):
                    rows.append({"run_id": run_id, "task": task, "attempt": int(attempt),
                                 **json.loads(line)})
        return rows


def _listing(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder)]
    except OSError:
        return []


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


_THREAD_HOSTS = threading.local()


def run_on_parsl(job: bytes, base_dir: str | None = None) -> bytes:
    """One attempt as a Parsl app: :func:`run_attempt` of the pickled context ``job``
    (:func:`kale.serial.dumps`) with its start marker; returns the host it ran on (which
    says where an attempt too short to write its marker ran) and the outcome, pickled.
    The context's upstream results may be of classes in modules of the workflow's folder
    ``base_dir``, which this worker may not have imported yet.

    Both go as bytes because Parsl serializes an app's arguments and result with dill,
    a pure-Python pickler that took 0.23 ms per context (the standard pickle: 0.01 ms),
    in the thread of Kale's process that sends Parsl's tasks; bytes it passes as they
    are. Nothing new is trusted: what Parsl's workers run comes from its interchange."""
    from kale.serial import dumps, loads

    ctx: TaskContext = loads(job, base_dir)
    return dumps((HOSTNAME, run_attempt(ctx, True)))


def run_attempt(ctx: TaskContext, mark_start: bool = False) -> Outcome:
    """Run one attempt of a Kale task here: the function an engine's worker calls (a
    Parsl app). A thread that runs no event loop (a Parsl worker's) drives the loop of a
    :class:`Host` of its own while the attempt runs (its watches run then, which is when
    they have something to watch): no hop to another thread and back. A thread that runs
    a loop already hands the attempt to this process's :func:`host`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return host().run(ctx, mark_start)
    here: Host | None = getattr(_THREAD_HOSTS, "host", None)
    if here is None:
        here = _THREAD_HOSTS.host = Host(asyncio.new_event_loop(), driven=True)
    return here.loop.run_until_complete(here._run(ctx, mark_start))


#: how long (seconds) a Dask worker gathers the starts of its attempts before it tells
#: the client about them, in one event
START_BATCH = 0.05
#: the starts a Dask worker has not told yet: worker address -> (worker, starts)
_STARTS: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
_STARTS_LOCK = threading.Lock()


async def run_on_dask(ctx: TaskContext) -> tuple[str, Outcome]:
    """One attempt as a Dask task; returns the worker's address with the outcome. A
    coroutine, which Dask runs on the worker's event loop (not in its thread pool): it
    waits there for the attempt, which runs in this process's :class:`Host`, as one of the
    worker's threads would. Its start goes to the client with the other starts of this
    worker within :data:`START_BATCH` seconds (one ``kale-started`` event holding a
    ``started`` list), so a task that runs longer is seen RUNNING while it runs; the
    address returned says where a shorter one ran even if its start is not told yet."""
    from distributed import get_worker

    worker = get_worker()
    _tell_started(worker, {"run": ctx.run_id, "task": ctx.task.name, "attempt": ctx.attempt})
    running = asyncio.run_coroutine_threadsafe(host().attempt(ctx), host().loop)
    return str(worker.address), await asyncio.wrap_future(running)



def _tell_started(worker: Any, start: dict[str, Any]) -> None:
    with _STARTS_LOCK:
        entry = _STARTS.setdefault(worker.address, (worker, []))
        entry[1].append(start)
        first = len(entry[1]) == 1
    if first:  # the worker's own loop sends them, a little later
        worker.loop.add_callback(_send_starts, worker)


async def _send_starts(worker: Any) -> None:
    await asyncio.sleep(START_BATCH)
    with _STARTS_LOCK:
        _, starts = _STARTS.pop(worker.address, (worker, []))
    if starts:
        with contextlib.suppress(Exception):  # a worker closing: the outcomes say it
            worker.log_event("kale-started", {"started": starts, "worker": worker.address})

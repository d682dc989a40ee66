"""Python tasks: ``module:function`` or a function (cloudpickled) run in a pool of warm
worker processes, one task per process at a time. A timeout or cancel kills the worker
running it (and its process group); a fresh one takes its place. A worker whose loaded user
code changed on disk is replaced before it runs another task (see ``_pyworker``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from kale.serial import dumps, loads
from kale.tasks import procs, warm
from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.record import task_path


class _Worker:
    """One warm ``_pyworker`` process and its socket: one job at a time. Used on one event
    loop at a time, which watches its socket while the worker serves its run."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self.origin = warm.origin()
        #: the workflow folder its first job put on sys.path (None: it ran nothing yet)
        self.base_dir: str | None = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = warm.spawn(lambda: procs.spawn(
                [sys.executable, "-P", "-m", "kale.tasks._pyworker", str(child.fileno())],
                cwd=self.origin[1], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=[child.fileno()]))
        except BaseException:
            parent.close()  # (no process: its end of the socket too)
            raise
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self._reading = False
        self._reply: asyncio.Future[bytes] | None = None

    async def call(self, job: bytes) -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        if not self._reading:
            # One reader for the worker's whole life: no epoll (un)registration per task.
            loop.add_reader(self.conn.fileno(), self._readable)
            self._reading = True
        self._reply = loop.create_future()
        self.conn.send_bytes(job)
        try:
            data = await self._reply
        except (EOFError, OSError):
            self._stop_reading()
            code = await procs.wait(self.proc)
            return ("died", code)
        reply: tuple[Any, ...] = pickle.loads(data)
        return reply

    def _readable(self) -> None:
        # The reply is read here, where the socket is seen readable: were it left to the
        # awaiting task, the loop would see the socket readable once more before that task
        # ran (and stop watching it, to start again for the next job).
        reply = self._reply
        if reply is not None and not reply.done():
            try:
                reply.set_result(self.conn.recv_bytes())
            except (EOFError, OSError) as e:
                reply.set_exception(e)
        else:
            # EOF while idle (the worker died between tasks): stop watching it.
            self._stop_reading()

    def release(self) -> None:
        """Leave this event loop (the worker waits for another run's)."""
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self._reading = False

    def kill(self) -> None:
        self._stop_reading()
        procs.kill_group(self.proc)
        self.conn.close()


def _env(ctx: TaskContext) -> dict[str, str]:
    """The task's environment, with Kale's ``kale`` first on its PATH (as for shell tasks:
    ``subprocess.run(["kale", "record", ...])`` works)."""
    path = task_path(os.path.dirname(str(ctx.workdir)),  # a str: no Path made per task
                     ctx.env.get("PATH") or os.environ.get("PATH"))
    return ctx.env if path is None else {**ctx.env, "PATH": path}


class PythonRunner(TaskRunner):
    """Runs Python tasks in warm worker processes (see the module's text).

    Promises: a worker runs one task at a time and goes back to the idle ones only after it
    answered; a worker whose task is cancelled or times out is killed with its process group
    (and awaited) before the cancellation leaves :meth:`run`; a worker that died, or whose
    loaded user code changed on disk, never runs another task; :meth:`close` kills them all.

    Threads: one event loop calls every method; up to ``slots`` tasks run at once."""

    kind = "python"
    makes_workdir = True  # the worker process makes it, before it enters it

    def __init__(self, slots: int = 1) -> None:
        super().__init__(slots)
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        #: pickled functions by id of the function, with the function itself: an id is
        #: only unique while its object lives, and a worker's tasks each bring their own
        #: copy of their function, which dies with the task (another may take its id)
        self._blobs: dict[int, tuple[Any, bytes]] = {}

    async def start(self) -> None:
        kept = warm.POOL.count(warm.origin())  # taken as tasks need them
        for _ in range(self.slots - len(self._all) - kept):
            w = _Worker()
            self._all.add(w)
            self._idle.append(w)

    def _acquire(self, base_dir: str) -> _Worker:
        """An idle worker for a task of the workflow folder ``base_dir``: this runner's
        newest that serves that folder (or none yet), else one kept from an earlier run,
        else a new one (stopping an idle one of another folder if all slots have one)."""
        for i in range(len(self._idle) - 1, -1, -1):
            w = self._idle[i]
            if w.base_dir not in (None, base_dir):
                continue
            del self._idle[i]
            if w.proc.poll() is None:
                return w
            self._all.discard(w)  # died while idle
            w.kill()
        kept = warm.POOL.take(warm.origin(), base_dir)
        if kept is None:
            return self._fresh()
        self._all.add(kept)  # type: ignore[arg-type]
        return kept  # type: ignore[return-value]

    def _fresh(self) -> _Worker:
        """A new worker (stopping an idle one of another folder if all slots have one)."""
        if self._idle and len(self._all) >= self.slots:
            other = self._idle.pop(0)  # the longest idle, of another folder
            self._all.discard(other)
            other.kill()
        w = _Worker()
        self._all.add(w)
        return w

    def _func(self, target: Any) -> Any:
        if isinstance(target, str):
            return target
        known = self._blobs.get(id(target))
        if known is not None and known[0] is target:
            return known[1]
        from kale.tasks import pickled

        blob = pickled.dumps(target)
        if len(self._blobs) >= 256:  # a workflow's functions, not every task's copy
            self._blobs.pop(next(iter(self._blobs)))
        self._blobs[id(target)] = (target, blob)
        return blob

    async def run(self, ctx: TaskContext) -> Outcome:
        job = {
            "func": self._func(ctx.task.target), "inputs": ctx.inputs,
            "upstream": ctx.upstream, "params": ctx.params, "workdir": str(ctx.workdir),
            "stdout": str(ctx.stdout_path), "stderr": str(ctx.stderr_path),
            "env": _env(ctx), "base_dir": str(ctx.base_dir),
        }
        base_dir = job["base_dir"]
        # the folder first, on the worker's sys.path before the job is unpickled: its
        # upstream results may be of classes in modules there, not yet imported
        data = base_dir.encode() + b"\0" + dumps(job)
        for tried in range(3):
            # after a worker found its code changed, a new one: the others of the folder,
            # kept or idle, imported the same code, and may be as stale
            w = self._fresh() if tried else self._acquire(base_dir)
            w.base_dir = base_dir  # the job puts it on the process's sys.path
            ctx.pids.append(w.proc.pid)
            try:
                reply = await w.call(data)
            except BaseException:
                self._all.discard(w)
                w.kill()
                await procs.wait(w.proc)
                raise
            if reply[0] != "stale":
                break
            # The process had loaded user code that has since changed on disk: it ran
            # nothing and exits; a fresh process imports the code as it is now.
            ctx.pids.remove(w.proc.pid)
            self._all.discard(w)
            w.kill()
            await procs.wait(w.proc)
        if reply[0] == "ok":
            self._idle.append(w)
            # Nothing recorded: no records to read (an empty dict, not None: "read them").
            return Outcome(ok=True, exit_code=0, result=loads(reply[1], ctx.base_dir),
                           code=reply[2], records={} if reply[3] is False else None)
        if reply[0] == "err":
            self._idle.append(w)
            _, ename, evalue, tb = reply
            return Outcome(ok=False, exit_code=1, error=f"{ename}: {evalue}", traceback=tb,
                           details={"ename": ename, "evalue": evalue})
        if reply[0] == "stale":
            return Outcome(ok=False, error="the task's code kept changing on disk while it "
                           f"started: {', '.join(reply[1])}")
        self._all.discard(w)
        w.kill()
        code = reply[1]
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Outcome(ok=False, exit_code=code, error=f"the Python process died ({how})")

    async def close(self) -> None:
        """Idle workers wait for this process's next run (:data:`kale.tasks.warm.POOL`);
        the others (still running a task) are killed."""
        busy = [w for w in self._all if w not in self._idle]
        for w in busy:
            w.kill()
        for w in self._idle:
            w.release()
            warm.POOL.give(w)
        for w in busy:
            await procs.wait(w.proc)
        self._idle.clear()
        self._all.clear()
        self._idle.clear()

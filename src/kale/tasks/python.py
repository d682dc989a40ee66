"""Python tasks: ``module:function`` or a function (cloudpickled) run in a pool of warm
worker processes, one task per process at a time. A timeout or cancel kills the worker
running it (and its process group); a fresh one takes its place. A worker whose loaded user
code changed on disk is replaced before it runs another task (see ``_pyworker``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from kale.serial import dumps, loads
from kale.tasks import procs, warm, wire
from kale.tasks.base import Outcome, Requeue, TaskContext, TaskRunner
from kale.tasks.record import task_path


class _NotStarted(Exception):
    """A job that never started: its worker went away (or took it back) before."""


class _Worker:
    """One warm ``_pyworker`` process, its job socket (jobs out; answers, and answers to
    revokes, back, in order) and its control socket (revokes out). Used on one event loop
    at a time, which watches its job socket while the worker serves its run.

    :attr:`jobs` are the jobs sent and not yet answered, in order: the first one runs
    (since :attr:`since`), the others wait in the process's socket until it has ended."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        cparent, cchild = socket.socketpair()
        self.origin = warm.origin()
        #: the workflow folder its first job put on sys.path (None: it ran nothing yet)
        self.base_dir: str | None = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = warm.spawn(lambda: procs.spawn(
                [sys.executable, "-P", "-m", "kale.tasks._pyworker", str(child.fileno()),
                 str(cchild.fileno())],
                cwd=self.origin[1], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=[child.fileno(), cchild.fileno()]))
        except BaseException:
            parent.close()  # (no process: its end of the sockets too)
            cparent.close()
            raise
        finally:
            child.close()
            cchild.close()
        self.conn = Connection(parent.detach())
        self.ctl = Connection(cparent.detach())
        self._reader = wire.Reader(self.conn.fileno())
        self._reading = False
        self._seq = 0
        self.jobs: collections.deque[tuple[int, asyncio.Future[bytes]]] = collections.deque()
        self.since = 0.0  # when the first of :attr:`jobs` started, as far as the runner knows
        self.stale = False  # it answered "stale": it runs nothing more
        self.gone = False  # its process died or was killed
        self._revokes: dict[int, asyncio.Future[bool]] = {}

    def send(self, job: bytes) -> tuple[int, asyncio.Future[bytes]]:
        """Send ``job``: its number and the future of its answer."""
        loop = asyncio.get_running_loop()
        if not self._reading:
            # One reader for the worker's whole life: no epoll (un)registration per task.
            loop.add_reader(self.conn.fileno(), self._readable)
            self._reading = True
        self._seq += 1
        reply: asyncio.Future[bytes] = loop.create_future()
        if not self.jobs:
            self.since = time.monotonic()
        self.jobs.append((self._seq, reply))
        self.conn.send_bytes(self._seq.to_bytes(8, "big") + job)
        return self._seq, reply

    def _readable(self) -> None:
        # The answers are read here, where the socket is seen readable: were it left to the
        # awaiting task, the loop would see the socket readable once more before that task
        # ran (and stop watching it, to start again for the next job). One read takes
        # whatever the socket holds: often two answers (see kale.tasks.wire).
        try:
            messages = self._reader.read()
        except (EOFError, OSError) as e:
            self._stop_reading()
            self._gone(e)
            return
        for data in messages:
            self._answer(data)

    def _answer(self, data: bytes) -> None:
        seq, body = int.from_bytes(data[:8], "big"), data[8:]
        jobs = self.jobs
        if len(body) == 1:  # the answer to a revoke (a pickle is longer)
            taken = body == b"\1"
            if taken:
                for i, (number, reply) in enumerate(jobs):
                    if number == seq:
                        del jobs[i]
                        if not reply.done():
                            reply.set_exception(_NotStarted())
                        break
            revoke = self._revokes.pop(seq, None)
            if revoke is not None and not revoke.done():
                revoke.set_result(taken)
            return
        while jobs and jobs[0][0] != seq:  # (never: the stream says what was taken back)
            skipped = jobs.popleft()[1]
            if not skipped.done():
                skipped.set_exception(_NotStarted())
        if jobs:
            reply = jobs.popleft()[1]
            if not reply.done():
                reply.set_result(body)
            if jobs:
                self.since = time.monotonic()  # the next one starts now

    def queued(self, seq: int) -> bool:
        """Whether job ``seq`` waits behind another (sent, not started as far as known)."""
        return bool(self.jobs) and self.jobs[0][0] != seq and self.holds(seq)

    def holds(self, seq: int) -> bool:
        """Whether job ``seq`` is sent and not answered (running, or queued)."""
        return any(n == seq for n, _ in self.jobs)

    def revoke(self, seq: int) -> asyncio.Future[bool]:
        """Take job ``seq`` back if it has not started: the future is True once it is
        certain not to run here (its answer then raises :class:`_NotStarted`)."""
        known = self._revokes.get(seq)
        if known is None:
            known = self._revokes[seq] = asyncio.get_running_loop().create_future()
            try:
                self.ctl.send_bytes(seq.to_bytes(8, "big"))
            except OSError:
                known.set_result(False)
        return known

    def release(self) -> None:
        """Leave this event loop (the worker waits for another run's)."""
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self._reading = False

    def kill(self) -> None:
        """Kill the process: its running job's answer raises EOFError, the queued ones'
        :class:`_NotStarted`."""
        self._stop_reading()
        procs.kill_group(self.proc)
        self.conn.close()
        self.ctl.close()
        self._gone(EOFError("the worker was stopped"))

    def _gone(self, error: BaseException) -> None:
        """The process is gone: the job it ran ends with ``error``, the others never
        started; nothing is taken back any more."""
        self.gone = True
        jobs, self.jobs = self.jobs, collections.deque()
        for i, (_, reply) in enumerate(jobs):
            if not reply.done():
                reply.set_exception(error if i == 0 else _NotStarted())
        revokes, self._revokes = self._revokes, {}
        for revoke in revokes.values():
            if not revoke.done():
                revoke.set_result(False)


def _env(ctx: TaskContext) -> dict[str, str]:
    """The task's environment, with Kale's ``kale`` first on its PATH (as for shell tasks:
    ``subprocess.run(["kale", "record", ...])`` works)."""
    path = task_path(os.path.dirname(ctx.text("workdir")),  # a str: no Path made per task
                     ctx.env.get("PATH") or os.environ.get("PATH"))
    return ctx.env if path is None else {**ctx.env, "PATH": path}


class PythonRunner(TaskRunner):
    """Runs Python tasks in warm worker processes (see the module's text).

    With :attr:`ahead` (the local executor sets it), a task may be sent to a worker that
    is still running another, started less than :attr:`YOUNG` ago, and that has fewer
    than :attr:`DEPTH` queued: the worker starts it the moment the one before ends,
    without waiting for this process to hear of that end and send the next (the round
    trip was most of a short task's cost). A task still queued :attr:`RESCUE` after it
    was sent (a task before it is a long one) is taken back: it runs on an idle worker,
    or, if there is none, :meth:`run` raises :class:`Requeue` and the engine requeues it
    (no retry is counted). Cancelling a queued task takes it back; the task before it runs on.

    Promises: a worker runs one task at a time and goes back to the idle ones only after
    it answered; a task runs at most once per :meth:`run` (a task taken back never runs
    where it was queued); a worker whose running task is cancelled or times out is killed
    with its process group (and awaited) before the cancellation leaves :meth:`run`; a
    worker that died, or whose loaded user code changed on disk, never runs another
    task (the tasks queued behind it run elsewhere); :meth:`close` kills them all.

    Threads: one event loop calls every method; up to ``slots`` tasks run at once."""

    kind = "python"
    makes_workdir = True  # the worker process makes it, before it enters it

    #: a task is queued behind one that started less than this ago (seconds),...
    YOUNG = 0.005
    #: ...and taken back if that one still runs this long after it was queued
    RESCUE = 0.02
    #: at most this many tasks queued in one worker (2,000 no-op tasks in one process,
    #: alternated: 1: 2,759-2,887/s, 2: 2,952-3,058/s, 3: 3,019-3,252/s)
    DEPTH = 2
    #: a job bigger than this (its inputs) is never queued in a busy worker
    QUEUED_BYTES = 32 * 1024

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

    def room(self) -> int:
        """How many tasks it could take now beyond its free slots (0 without
        :attr:`ahead`): one for each task queued now (it holds no slot of its own: it
        runs in the slot of the task before it), and one more behind each worker whose
        task started less than :attr:`YOUNG` ago and that has fewer than :attr:`DEPTH`
        queued."""
        if not self.ahead:
            return 0
        young = time.monotonic() - self.YOUNG
        n = 0
        depth = self.DEPTH
        for w in self._all:
            if not (w.stale or w.gone):
                queued = len(w.jobs) - 1
                if queued >= 0:
                    n += queued + (queued < depth and w.since > young)
        return n

    def _acquire(self, base_dir: str, queue: bool = True) -> _Worker:
        """A worker for a task of the workflow folder ``base_dir``: this runner's newest
        idle one that serves that folder (or none yet); else, with :attr:`ahead`, all
        slots taken and ``queue``, the busy one of the folder with the fewest tasks
        queued (of those, the one whose task started last); else one kept from an
        earlier run, else a new one (stopping an idle one of another folder if all slots
        have one)."""
        for i in range(len(self._idle) - 1, -1, -1):
            w = self._idle[i]
            if w.base_dir not in (None, base_dir):
                continue
            del self._idle[i]
            if w.proc.poll() is None:
                return w
            self._all.discard(w)  # died while idle
            w.kill()
        if queue and self.ahead and len(self._all) >= self.slots:
            busy: _Worker | None = None
            for w in self._all:  # (one with none answered its last; it is idle soon)
                if w.base_dir == base_dir and not (w.stale or w.gone) and (
                        busy is None or (len(w.jobs), -w.since) < (len(busy.jobs), -busy.since)):
                    busy = w
            if busy is not None:
                return busy
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

    def _rescue(self, w: _Worker, seq: int) -> None:
        """The task before job ``seq`` still runs: take ``seq`` back if it waits yet (its
        answer then raises :class:`_NotStarted`, and :meth:`run` places it again)."""
        if w.queued(seq):
            w.revoke(seq)

    async def _done_with(self, w: _Worker) -> None:
        """``w`` answered its last job: idle again, or (stale, or gone) stopped and
        awaited."""
        if w.jobs:
            return
        if w.stale or w.gone or w not in self._all:
            self._all.discard(w)
            with contextlib.suppress(ValueError):
                self._idle.remove(w)
            w.kill()
            await procs.wait(w.proc)
        elif w not in self._idle:
            self._idle.append(w)

    async def run(self, ctx: TaskContext) -> Outcome:
        job = {
            "func": self._func(ctx.task.target), "inputs": ctx.inputs,
            "upstream": ctx.upstream, "params": ctx.params, "workdir": ctx.text("workdir"),
            "stdout": ctx.text("stdout_path"), "stderr": ctx.text("stderr_path"),
            "env": _env(ctx), "base_dir": str(ctx.base_dir),
        }
        base_dir = job["base_dir"]
        # the folder first, on the worker's sys.path before the job is unpickled: its
        # upstream results may be of classes in modules there, not yet imported
        data = base_dir.encode() + b"\0" + dumps(job)
        # (a job queued in a busy worker waits in its socket: one too big for the
        # socket's buffer would block this loop until the worker reads it)
        small = len(data) <= self.QUEUED_BYTES
        new_process, queue = False, small
        stale = 0
        while True:
            if self.ahead and not (queue or new_process or self._idle) \
                    and len(self._all) >= self.slots:  # it was taken beyond the slots
                raise Requeue("it waited behind a long task in a busy worker" if small else
                              "no worker was free (its inputs are too big to wait in a "
                              "busy one)")
            # after a worker found its code changed, a new one: the others of the folder,
            # kept or idle, imported the same code, and may be as stale
            w = self._fresh() if new_process else self._acquire(base_dir, queue)
            w.base_dir = base_dir  # the job puts it on the process's sys.path
            ctx.pids.append(w.proc.pid)
            seq, answer = w.send(data)
            timer = asyncio.get_running_loop().call_later(
                self.RESCUE, self._rescue, w, seq) if len(w.jobs) > 1 else None
            try:
                raw = await answer
            except _NotStarted:  # taken back, or its worker went away first: elsewhere
                ctx.pids.remove(w.proc.pid)
                await self._done_with(w)
                queue = False
                continue
            except (EOFError, OSError):
                self._all.discard(w)
                code = await procs.wait(w.proc)
                await self._done_with(w)
                how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
                return Outcome(ok=False, exit_code=code,
                               error=f"the Python process died ({how})")
            except BaseException:  # cancelled, or timed out
                if (w.queued(seq) and await w.revoke(seq)) or not w.holds(seq):
                    # it never started (the task before runs on), or it has just ended
                    await self._done_with(w)
                    raise
                self._all.discard(w)  # it runs: stopped with its worker
                w.kill()
                await procs.wait(w.proc)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            reply = pickle.loads(raw)
            if reply[0] != "stale":
                break
            # The process had loaded user code that has since changed on disk: it ran
            # nothing (and runs nothing more); a fresh process imports the code as it is.
            ctx.pids.remove(w.proc.pid)
            w.stale = True
            await self._done_with(w)
            stale += 1
            if stale == 3:
                return Outcome(ok=False, error="the task's code kept changing on disk while "
                               f"it started: {', '.join(reply[1])}")
            new_process = True
        await self._done_with(w)
        if reply[0] == "ok":
            # Nothing recorded: no records to read (an empty dict, not None: "read them").
            return Outcome(ok=True, exit_code=0, result=loads(reply[1], ctx.base_dir),
                           code=reply[2], records={} if reply[3] is False else None)
        _, ename, evalue, tb = reply
        return Outcome(ok=False, exit_code=1, error=f"{ename}: {evalue}", traceback=tb,
                       details={"ename": ename, "evalue": evalue})

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

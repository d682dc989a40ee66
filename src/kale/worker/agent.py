"""The worker: connects to a manager, takes tasks, runs them with the task runners, and
reports. What ``kale worker`` runs, locally or (later) inside a batch allocation.

It keeps every report until the manager acknowledges it, and reconnects with backoff when
the link breaks, so a manager that is killed, restarted or unreachable for a while loses
nothing: tasks go on running meanwhile, and their reports arrive when it is back. It gives
up (exit 3) after ``give_up`` seconds (5 minutes by default) without a manager.

It reaches the manager at ``unix:PATH`` (its Unix socket: a local worker) or at
``https://HOST:PORT`` with TLS, trusting only the manager's certificate (``cert``): a
server that fails that check never gets the token; the worker says so and goes on
looking. With ``home`` (``$KALE_HOME``) it re-reads the home's ``manager.json`` while it
looks, so it finds a restarted manager that listens elsewhere. It
samples each task's process tree (CPU, memory, I/O, GPU) every few seconds, and suspends,
resumes or cancels a task when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from pathlib import Path
from typing import Any

from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.record import read_records
from kale.worker.protocol import LINK_PATH, Key, decode_context, key_of, report

log = logging.getLogger("kale.worker")


#: seconds without a manager after which a worker gives up (exit 3)
GIVE_UP = 300.0
#: tasks shorter than this (seconds, a moving average) are short: the worker then takes
#: some ahead of its free slots (:meth:`WorkerAgent.window`)
SHORT_TASK = 0.05


class WorkerAgent:
    """A worker: one link to a manager, the task runners it runs attempts with, and the reports
    not yet acknowledged (see the module's text).

    Promises: at most ``slots`` attempts run at once; it grants one credit per free slot,
    and, given ``prefetch`` (off by default: tasks taken ahead wait behind that worker's
    running ones while another worker may be idle), ``prefetch`` more while its tasks are
    short (under :data:`SHORT_TASK` on average), so that the next tasks are already here
    when a slot frees (they wait here, in order, and stay QUEUED for the manager until
    they start; a queue of short tasks is short); an attempt
    sent again after a reconnect is not started twice; every finished attempt gives one
    report, kept and sent again after each reconnect until the manager acknowledges it,
    except an attempt the manager forgot (it sends nothing) and, in a batch job the
    scheduler ends, what that ending killed (the scheduler's verdict tells it); on stop,
    running attempts (and those waiting for a slot) are interrupted and handed back.

    Threads: one asyncio event loop, the one that awaits :meth:`run`, owns all of it, and
    :meth:`stop` too (from another thread: ``loop.call_soon_threadsafe(agent.stop)``). Only
    the process-tree sampling runs in a thread of its own, on data the loop hands it."""

    def __init__(self, url: str, token: str, *, slots: int | None = None,
                 worker_id: str | None = None, provider: str | None = None,
                 give_up: float = GIVE_UP, idle_exit: float | None = None,
                 pool: str | None = None, job: str | None = None, once: bool = False,
                 walltime: float | None = None, batch: bool = False,
                 cert: str | None = None, home: Path | None = None,
                 prefetch: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        #: the manager's certificate (PEM), the only one trusted on https:// and wss://
        self.cert = cert
        self.home = home
        self._ssl: Any = None
        self.slots = max(1, slots or os.cpu_count() or 1)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.provider = provider
        self.give_up = give_up
        self.idle_exit = idle_exit
        #: batch: the pool of tasks it takes, the job it runs in, one task only (a job
        #: per task), the job's walltime (a pilot stops taking tasks before it ends and
        #: hands back what it cannot finish)
        self.pool, self.job, self.once = pool, job, once
        self.deadline = time.monotonic() + walltime if walltime else None
        #: in a batch job, SIGTERM means the scheduler ends the job (walltime, scancel):
        #: the manager hears why from the scheduler, so running tasks are not handed back
        self.batch = batch
        self.abandon = False
        self.draining = False
        self.taken = 0
        self.tasks: dict[Key, asyncio.Task[None]] = {}
        self.contexts: dict[Key, TaskContext] = {}
        self.forgotten: set[Key] = set()
        self.unacked: dict[int, dict[str, Any]] = {}   # seq -> report
        self.unsent: list[int] = []                    # seqs not sent on this connection
        self.samples: list[dict[str, Any]] = []
        #: kernels of running tasks (connection info), and the changes not yet sent
        self.kernels: dict[Key, dict[str, Any]] = {}
        self.kernel_news: dict[Key, dict[str, Any] | None] = {}
        #: interactive steps waiting for a person, and those not yet told to the manager
        self.waiting: dict[Key, dict[str, Any]] = {}
        self.waiting_news: list[Key] = []
        self.credit = 0     # credits not yet sent
        self.offered = 0    # credits the manager holds (or is about to): tasks it may send
        #: tasks taken beyond the free slots while tasks are short (default 0: none)
        self.prefetch = max(0, prefetch or 0)
        self.pace: float | None = None  # moving average of how long tasks take (s)
        self._free = asyncio.Semaphore(self.slots)
        #: tasks the manager sent while it counted no free slot here: it hears when each
        #: starts (True once started); ``started_news`` not yet told
        self.queued: dict[Key, bool] = {}
        self.started_news: list[Key] = []
        self.seq = 0
        self.runners: dict[str, TaskRunner] = {}
        self._starting: dict[str, asyncio.Task[TaskRunner]] = {}
        self.stopping = False
        self.heartbeat = 2.0
        self.sample_interval = 2.0
        self.manager: str | None = None
        self._dirty = asyncio.Event()
        self._stopped = asyncio.Event()
        self._idle_since = time.monotonic()

    # -- main loop -----------------------------------------------------------------------
    async def run(self) -> int:
        """Serve until stopped (SIGTERM/SIGINT), idle for ``idle_exit`` seconds, or the
        manager unreachable for ``give_up`` seconds. Returns an exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._signalled)
        sampler = asyncio.create_task(self._sample_loop())
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            for before, action in _walltime_plan(left, self._drain, self.stop):
                loop.call_later(max(0.0, left - before), action)
        code = 0
        backoff, away_since = 0.05, None
        try:
            while not self.stopping:
                try:
                    await self._connect()
                    backoff, away_since = 0.05, None
                except (OSError, TimeoutError, _LinkClosed) as e:
                    self._failed(e)
                except Exception as e:
                    if not _is_ws_error(e):
                        raise
                    self._failed(e)
                if self.stopping:
                    break
                self._rediscover()
                now = time.monotonic()
                away_since = away_since or now
                if now - away_since > self.give_up:
                    log.error("the manager at %s has been unreachable for %.0f s; giving up",
                              self.url, now - away_since)
                    code = 3
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            sampler.cancel()
            await self._shutdown()
        return code

    @property
    def _once_done(self) -> bool:
        """A ``--once`` worker ran its task and the manager has its report."""
        return self.once and bool(self.taken) and not self.tasks and not self.unacked

    def _signalled(self) -> None:
        if self.batch:
            self.abandon = True
        self.stop()

    def _drain(self) -> None:
        """Near the walltime: take no more tasks (those running may still finish)."""
        log.info("walltime near: taking no more tasks")
        self.draining = True
        self._dirty.set()

    def stop(self) -> None:
        """Stop taking tasks; running ones are interrupted and handed back."""
        if self.stopping:
            return
        self.stopping = True
        self._stopped.set()
        for t in self.tasks.values():
            t.cancel()
        self._dirty.set()

    def _failed(self, e: BaseException) -> None:
        from kale.tls import tls_failure

        why = tls_failure(e)
        if why is not None:
            log.warning("the server at %s is not this home's manager: it failed the TLS "
                        "check against the pinned certificate (%s); no token was sent",
                        self.url, why)
        else:
            log.info("manager link: %s", e)

    def _rediscover(self) -> None:
        """Where the home says its manager now listens (a restarted manager may have
        another port, or host): for a worker that reaches it over TCP."""
        if self.home is None or self.url.startswith("unix:"):
            return
        try:
            url = str(json.loads((self.home / "manager.json").read_text())["url"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if url.startswith("https://") and url.rstrip("/") != self.url:
            log.info("the home's manager.json now names %s (was %s)", url, self.url)
            self.url = url.rstrip("/")

    def _open(self) -> Any:
        """The websocket connection to open: through the Unix socket, or TLS with only the
        pinned certificate trusted (checked in the handshake, before the token is sent)."""
        from websockets.asyncio.client import connect, unix_connect

        options: dict[str, Any] = dict(
            additional_headers={"Authorization": f"Bearer {self.token}"}, open_timeout=5,
            ping_interval=5, ping_timeout=10, max_size=1 << 27, compression=None)
        if self.url.startswith("unix:"):
            from kale.tls import unix_path

            return unix_connect(unix_path(Path(self.url[5:])), "ws://kale" + LINK_PATH,
                                **options)
        ws_url = "wss" + self.url[5:] + LINK_PATH if self.url.startswith("https:") \
            else self.url
        if not ws_url.startswith("wss://"):
            raise ValueError(f"{self.url}: a manager is reached at https://, wss:// or unix:")
        if self._ssl is None:
            from kale.tls import client_context

            if not self.cert:
                raise ValueError("no certificate to check the manager's against")
            self._ssl = client_context(self.cert)
        return connect(ws_url, ssl=self._ssl, **options)

    async def _connect(self) -> None:
        async with self._open() as ws:
            hello = {"op": "hello", "worker": self.id, "slots": self.slots,
                     "host": socket.gethostname(), "pid": os.getpid(),
                     "provider": self.provider, "info": _info(),
                     "pool": self.pool, "job": self.job,
                     "kernels": [{"key": list(k), "info": v} for k, v in self.kernels.items()],
                     "waiting": [{"key": list(k), "info": v} for k, v in self.waiting.items()],
                     "running": [list(k) for k in self.tasks],
                     "reports": [self.unacked[s] for s in sorted(self.unacked)]}
            self.unsent = []
            # The manager counts free slots from `running`; more are granted in the first
            # sync when tasks are short.
            self.credit, self.offered = 0, max(0, self.slots - len(self.tasks))
            self.started_news = [k for k, begun in self.queued.items() if begun]
            await ws.send(json.dumps(hello))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if welcome.get("op") != "welcome":
                raise _LinkClosed(f"unexpected answer {welcome.get('op')!r}")
            self._welcome(welcome)
            self._top_up()
            reader = asyncio.create_task(self._reader(ws))
            try:
                await self._writer(ws, reader)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    def _welcome(self, msg: dict[str, Any]) -> None:
        if self.manager is not None and self.manager != msg.get("manager"):
            log.info("the manager restarted; resent %d reports", len(self.unacked))
        self.manager = msg.get("manager")
        self.heartbeat = max(0.05, min(2.0, float(msg.get("heartbeat", 15)) / 5))
        self.sample_interval = float(msg.get("sample_interval", 2.0))
        for k in msg.get("forget", []):
            self._forget(key_of(k))

    async def _reader(self, ws: Any) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("op") != "batch":
                continue
            for s in msg.get("acks", ()):
                self.unacked.pop(int(s), None)
            if self._once_done:
                self._dirty.set()  # the one task is reported: time to go
            for item in msg.get("tasks", ()):
                self._start(key_of(item["key"]), item["payload"], bool(item.get("queued")))
            for c in msg.get("controls", ()):
                self._control(c.get("action", ""), key_of(c["key"]), c.get("reason") or "")
        raise _LinkClosed("the manager closed the link")

    async def _writer(self, ws: Any, reader: asyncio.Task[None]) -> None:
        last = 0.0
        while True:
            if reader.done():
                reader.result()  # raises why it ended
            now = time.monotonic()
            due = self.heartbeat - (now - last)
            if due > 0 and not self._dirty.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), min(due, 0.5))
                if not self._dirty.is_set() and time.monotonic() - last < self.heartbeat:
                    if self._idle_too_long():
                        self.stop()
                    continue
            await asyncio.sleep(0)  # reports of the same loop turn go in one message
            self._dirty.clear()
            seqs, self.unsent = self.unsent, []
            msg: dict[str, Any] = {"op": "sync",
                                   "reports": [self.unacked[s] for s in seqs if s in self.unacked],
                                   "credit": 0 if self.stopping or self.draining
                                   else self.credit}
            if self.draining:
                msg["drain"] = True
            self.credit = 0
            if self.samples:
                msg["samples"], self.samples = self.samples, []
            if self.waiting_news:
                msg["waiting"] = [{"key": list(k), "info": self.waiting[k]}
                                  for k in self.waiting_news if k in self.waiting]
                self.waiting_news = []
            if self.started_news:
                msg["started"] = [list(k) for k in self.started_news]
                self.started_news = []
            if self.kernel_news:
                msg["kernels"] = [{"key": list(k), "info": v}
                                  for k, v in self.kernel_news.items()]
                self.kernel_news = {}
            if self.stopping:
                msg["bye"] = "signalled" if self.abandon else True
            try:
                await ws.send(json.dumps(msg))
            except BaseException:
                self.unsent = seqs + self.unsent
                raise
            last = time.monotonic()
            if self._once_done:
                self.stopping = True
                return
            if self.stopping and not self.tasks:
                # Wait (briefly) for the acks of the last reports, then go.
                deadline = time.monotonic() + 5
                while self.unacked and time.monotonic() < deadline and not reader.done():
                    await asyncio.sleep(0.02)
                return

    def _idle_too_long(self) -> bool:
        if self.idle_exit is None or self.tasks:
            self._idle_since = time.monotonic()
            return False
        return time.monotonic() - self._idle_since > self.idle_exit

    # -- tasks ---------------------------------------------------------------------------
    def window(self) -> int:
        """How many tasks this worker holds at most (running, or here waiting for a slot):
        its slots, plus :attr:`prefetch` while its tasks are short."""
        short = self.pace is not None and self.pace < SHORT_TASK
        return self.slots + (self.prefetch if short else 0)

    def _top_up(self) -> None:
        """Grant the credits that bring what this worker holds and may be sent up to its
        window (a ``--once`` worker takes one task, granted at connection)."""
        if self.once:
            return
        want = self.window() - len(self.tasks) - self.offered
        if want > 0:
            self.credit += want
            self.offered += want
            self._dirty.set()

    def _start(self, key: Key, payload: str, queued: bool = False) -> None:
        if key in self.tasks:
            return  # sent again after a reconnect; it is running already
        self.offered = max(0, self.offered - 1)
        if queued:
            self.queued[key] = False
        try:
            ctx = decode_context(payload)
        except Exception as e:
            self._report(key, "done", Outcome(ok=False, error=f"cannot read the task: {e!r}"))
            self._top_up()
            return
        self.contexts[key] = ctx
        ctx.on_kernel = lambda info: self._kernel(key, info)
        ctx.on_waiting = lambda info: self._waiting(key, info)
        self.taken += 1
        self.tasks[key] = asyncio.create_task(self._run(key, ctx))

    async def _run(self, key: Key, ctx: TaskContext) -> None:
        how, out = "done", None
        try:
            async with self._free:  # a slot: tasks taken ahead wait here, in order
                if key in self.queued:  # the manager waits to hear it started
                    self.queued[key] = True
                    self.started_news.append(key)
                    self._dirty.set()
                t0 = time.monotonic()
                out = await self._execute(ctx)
                took = time.monotonic() - t0
                self.pace = took if self.pace is None else 0.8 * self.pace + 0.2 * took
        except asyncio.CancelledError:
            how = "interrupted" if self.stopping else "cancelled"
            out = Outcome(ok=False, error=f"worker {self.id} stopped" if self.stopping
                          else "cancelled")
        except Exception as e:
            out = Outcome(ok=False, error=f"Kale could not run the task: {e!r}")
        finally:
            self.tasks.pop(key, None)
            self.contexts.pop(key, None)
            self.waiting.pop(key, None)
            self.queued.pop(key, None)
            self._top_up()
            self._idle_since = time.monotonic()
        if self.abandon and (how == "interrupted" or (out is not None and not out.ok
                                                      and out.exit_code in _KILLED)):
            self._dirty.set()  # the scheduler ended the job; the manager hears it there
            return
        if key in self.forgotten:
            self.forgotten.discard(key)
            self._dirty.set()
            return
        self._report(key, how, out)

    async def _execute(self, ctx: TaskContext) -> Outcome:
        """Run one attempt in its slot: its directory, its runner, what it recorded."""
        from kale.tasks.registry import runner_kind

        runner = await self._runner(runner_kind(ctx.task))
        if not runner.makes_workdir:
            ctx.make_workdir()
        out = await runner.run(ctx)
        if self.batch and not out.ok and out.exit_code in _KILLED:
            # The scheduler signals every process of a job it ends, the task's too:
            # wait for our own signal, so the scheduler's reason is the one told.
            await asyncio.sleep(1.0)
        if out.ok:  # what kale.record kept goes with the report
            out.records = read_records(ctx.records_path, ctx.base_dir) \
                if os.path.exists(ctx.records_path) else {}
        return out

    def _waiting(self, key: Key, info: dict[str, Any]) -> None:
        self.waiting[key] = info
        self.waiting_news.append(key)
        self._dirty.set()

    def _kernel(self, key: Key, info: dict[str, Any] | None) -> None:
        """A task's kernel started (or its task ended): tell the manager."""
        if info is None:
            if self.kernels.pop(key, None) is None:
                return
        else:
            self.kernels[key] = info
        self.kernel_news[key] = info
        self._dirty.set()

    def _report(self, key: Key, how: str, out: Outcome | None) -> None:
        self.seq += 1
        self.unacked[self.seq] = report(self.seq, key, how, out)
        self.unsent.append(self.seq)
        self._dirty.set()

    async def _runner(self, kind: str) -> TaskRunner:
        runner = self.runners.get(kind)
        if runner is not None:
            return runner
        starting = self._starting.get(kind)
        if starting is None:
            starting = self._starting[kind] = asyncio.create_task(self._make_runner(kind))
        return await asyncio.shield(starting)

    async def _make_runner(self, kind: str) -> TaskRunner:
        from kale.tasks.registry import runner_class

        runner = runner_class(kind)(slots=self.slots)
        await runner.start()
        self.runners[kind] = runner
        return runner

    def _control(self, action: str, key: Key, reason: str = "") -> None:
        import signal as sig

        from kale.tasks.monitor import signal_tree

        task, ctx = self.tasks.get(key), self.contexts.get(key)
        if task is None or ctx is None:
            return
        if action == "cancel":
            task.cancel()
        elif action == "suspend":
            signal_tree(ctx.pids, sig.SIGSTOP)
        elif action == "resume":
            signal_tree(ctx.pids, sig.SIGCONT)
        elif action in ("continue", "reject") and ctx.decide is not None:
            ctx.decide(action, reason)

    def _forget(self, key: Key) -> None:
        """The manager no longer wants this attempt: stop it and send nothing."""
        task = self.tasks.get(key)
        if task is not None:
            self.forgotten.add(key)
            task.cancel()
        for s, rep in list(self.unacked.items()):
            if key_of(rep["key"]) == key:
                del self.unacked[s]

    # -- resources -----------------------------------------------------------------------
    async def _sample_loop(self) -> None:
        from kale.tasks.monitor import TreeMonitor

        monitor: TreeMonitor[Key] = TreeMonitor()
        while True:
            await asyncio.sleep(self.sample_interval)
            current = {k: list(c.pids) for k, c in self.contexts.items() if c.pids}
            monitor.follow(current)
            if not current:
                continue
            try:
                taken = await asyncio.to_thread(monitor.sample)
            except Exception:
                log.exception("sampling failed")
                continue
            for k, s in taken.items():
                if s.procs:
                    self.samples.append({"key": list(k), **s.to_json()})
            del self.samples[:-1000]
            self._dirty.set()

    async def _shutdown(self) -> None:
        self.stopping = True
        for t in list(self.tasks.values()):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self.runners.values()),
                             return_exceptions=True)


#: exit codes of a task killed by SIGTERM or SIGKILL (a signal, or a shell that reports it)
_KILLED = (-15, -9, 143, 137)


class _LinkClosed(Exception):
    """The manager closed the link (or never answered ``hello``): reconnect with backoff."""


def _walltime_plan(left: float, drain: Any, stop: Any) -> list[tuple[float, Any]]:
    """When, before the walltime, a pilot stops taking tasks and when it hands back what
    still runs: 10% of the walltime (5 s to 2 min) and 5% (2 s to 30 s)."""
    return [(max(5.0, min(120.0, left * 0.1)), drain), (max(2.0, min(30.0, left * 0.05)), stop)]


def _is_ws_error(e: Exception) -> bool:
    from websockets.exceptions import WebSocketException

    return isinstance(e, WebSocketException)


def _info() -> dict[str, Any]:
    import sys

    from kale.config import version

    return {"python": sys.version.split()[0], "kale": version()}

"""The broker: the manager's side of the worker link (see :mod:`kale.worker.protocol`).

Engines (one thread each) hand it attempts through :class:`~kale.manager.executor.
WorkerExecutor`; connected workers take them one per credit. The broker keeps who runs
what, applies each report once, acknowledges a report only after the engine's record of
it is committed, declares a worker lost after ``heartbeat_timeout`` seconds of silence
(its attempts then fail with ``lost_worker`` and are retried per the task's policy), and
after a manager restart lets reconnecting workers claim the attempts the resumed runs
adopt.

Threads: the WebSocket side runs on the server's event loop; engines call in from their
own threads. One lock guards the shared state; everything done under it is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kale.executors.base import Interrupted
from kale.executors.mailbox import Mailbox
from kale.store import workers as wstore
from kale.store.store import Store
from kale.tasks.base import Outcome
from kale.worker.protocol import HEARTBEAT_TIMEOUT, Key, key_of, outcome_of

log = logging.getLogger("kale.broker")

Resolve = Callable[[Outcome | BaseException], None]
#: seconds an acknowledgement may wait for tasks to go to its worker with it (acks are not
#: urgent: they only let the worker forget reports; tasks are, and go at once)
ACK_DELAY = 0.02


@dataclass
class Pending:
    """An attempt an engine awaits."""

    key: Key
    user: str
    resolve: Resolve
    payload: str
    started: Callable[[str], None] | None = None
    #: an interactive step now waits for a person (info: its step notebook)
    waiting: Callable[[dict[str, Any]], None] | None = None
    worker: str | None = None
    adopted: bool = False        # after a restart: wait for its worker to claim it
    was_running: bool = True     # adopted: it had reached a worker before
    #: which workers may take it: None for general ones (local workers, ``kale worker``);
    #: a batch pool (``task:RUN/TASK/N`` for a job of its own, ``pilot:...``) otherwise
    pool: str | None = None
    #: what a batch provider needs to place it (executor spec, resources)
    placement: dict[str, Any] | None = None
    #: its worker started it (``started`` was called); one sent to a worker whose slots
    #: were all taken waits there for one, and the worker says when it starts
    begun: bool = False


@dataclass
class Worker:
    """A worker the broker knows: connected (``link`` set), or active before a restart and not
    yet back. ``attempts`` are the keys it runs. Changed only under :attr:`Broker.lock`."""

    id: str
    user: str
    host: str = ""
    pid: int | None = None
    provider: str | None = None
    slots: int = 1
    pool: str | None = None      # the tasks it takes (see Pending.pool)
    job: str | None = None       # the batch job it runs in (Kale's id)
    state: str = "ACTIVE"
    started_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    attempts: set[Key] = field(default_factory=set)
    link: Link | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "host": self.host, "pid": self.pid,
                "provider": self.provider, "slots": self.slots, "state": self.state,
                "pool": self.pool, "job": self.job,
                "connected": self.link is not None, "running": len(self.attempts),
                "started_at": self.started_at,
                "silent_for": round(time.monotonic() - self.last_seen, 3)}


class Link:
    """One worker's open connection. ``credits``: tasks it may still be sent."""

    def __init__(self, worker: Worker, send: Callable[[dict[str, Any]], Any]) -> None:
        self.worker = worker
        self.send = send
        self.offers = (worker.user, worker.pool)  # the queue of offers it takes from
        self.credits = 0
        self.wake = asyncio.Event()
        self.acks: list[int] = []
        self.ack_due = float("inf")  # when the oldest unsent ack must go (monotonic)
        self.capacity = 0  # its worker's slots, counted in its user's capacity while open
        self.controls: list[dict[str, Any]] = []
        self.closed = False


class Broker:
    """The manager's one broker: attempts engines await, offered to the workers that may take
    them, and the reports that come back (see the module's text for the protocol).

    Promises: an attempt (key: run, task, attempt) is pending at most once, and on at most
    one worker; a worker is offered only its own user's attempts of its own pool; a report
    resolves the engine's future only while that exact attempt is awaited, and is
    acknowledged to its worker only once the engine's record of it is committed (the
    outcome's ``receipt``), so every report is applied exactly once, across reconnects and
    manager restarts; a worker silent for ``heartbeat_timeout`` is LOST and its attempts end
    as lost (unless this manager itself was frozen); after a restart, adopted attempts wait
    for their workers' claims until every worker active before is back or the heartbeat
    timeout passes, and are then judged.

    Threads: :meth:`start`, :meth:`open`, :meth:`stop`, :meth:`serve` and the reaper run on
    the server's event loop; engines call :meth:`submit`, :meth:`adopt`, :meth:`withdraw` and
    :meth:`control` from their own threads, and the API and providers the read methods from
    theirs. All shared state is under :attr:`lock`, held only briefly and never across I/O.
    Engines' ``resolve`` callbacks are called under it (they only post to their loop); the
    ``on_offer`` and ``on_withdraw`` hooks are called outside it, in the engine's thread;
    ``on_lost`` and ``on_samples`` on the server loop."""

    def __init__(self, store: Store, *, heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 sample_interval: float = 2.0) -> None:
        self.store = store
        self.heartbeat_timeout = heartbeat_timeout
        self.sample_interval = sample_interval
        self.instance = secrets.token_hex(8)  # a new one per manager start
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: dict[Key, Pending] = {}
        self.offers: dict[tuple[str, str | None], deque[Key]] = {}  # (user, pool) -> keys
        #: the open links with credits, per queue of offers, in the order they got them:
        #: a new offer wakes only as many of them as the queue needs, not every worker
        self.hungry: dict[tuple[str, str | None], dict[Link, None]] = {}
        self.workers: dict[str, Worker] = {}
        #: slots of the open links, per user: how many attempts their workers hold at once
        self.capacity: dict[str, int] = {}
        self.claims: dict[Key, str] = {}            # declared by workers, not yet adopted
        self.unclaimed: dict[Key, tuple[str, dict[str, Any]]] = {}  # reports nobody awaits
        self.inflight: set[tuple[str, int]] = set()  # applied, not yet committed
        self.live_runs: set[str] = set()
        #: kernels of running tasks, as their workers announce them (connection info)
        self.kernels: dict[Key, tuple[str, dict[str, Any]]] = {}
        self.on_samples: list[Callable[[list[dict[str, Any]]], None]] = []
        self.on_lost: list[Callable[[Worker], None]] = []
        #: batch providers hear of attempts for a pool (new, adopted after a restart, or
        #: withdrawn); called outside the lock, from an engine's thread
        self.on_offer: list[Callable[[Pending], None]] = []
        self.on_withdraw: list[Callable[[Pending], None]] = []
        self._wake_scheduled: set[tuple[str, str | None]] = set()
        self._grace_until = time.monotonic() + heartbeat_timeout
        self._expected: set[str] = set()            # workers active before a restart
        self._judged = False
        self._resumed = threading.Event()           # resumed runs have adopted
        self._tick = time.monotonic()
        self._reaper: asyncio.Task[None] | None = None
        self._loop_thread: int | None = None
        self._mailbox: Mailbox | None = None

    # -- lifecycle (server loop) -----------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._mailbox = Mailbox(self.loop)
        self._loop_thread = threading.get_ident()
        now = time.monotonic()
        for row in wstore.workers(self.store, states=("ACTIVE",)):
            # Workers alive when the previous manager died: once the server accepts
            # connections (open), they have the heartbeat timeout to claim their attempts.
            w = Worker(row["id"], row["user"], row["host"], row["pid"], row["provider"],
                       row["slots"], started_at=row["started_at"], last_seen=now,
                       info=row["info"])
            self.workers[w.id] = w
            self._expected.add(w.id)

    def open(self) -> None:
        """The server now accepts connections: from here on, silence counts. Until then
        (batch providers starting, runs resumed from a slow store) no worker could have
        reached this manager, so none is judged lost for it."""
        now = time.monotonic()
        with self.lock:
            for w in self.workers.values():
                w.last_seen = now
            self._grace_until = now + self.heartbeat_timeout
            self._tick = now
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper

    def resumed(self) -> None:
        """The runs resumed at start have adopted their attempts (thread-safe)."""
        self._resumed.set()

    # -- engine side (any thread) ----------------------------------------------------------
    def submit(self, p: Pending) -> None:
        with self.lock:
            self.pending[p.key] = p
            self.offers.setdefault((p.user, p.pool), deque()).append(p.key)
        if p.pool is not None:
            for hook in self.on_offer:
                hook(p)
        self._wake_queue((p.user, p.pool))

    def adopt(self, p: Pending) -> None:
        """Await an attempt started before a restart."""
        with self.lock:
            held = self.unclaimed.pop(p.key, None)
            if held is not None and self._user_of(held[0]) == p.user:
                self.pending[p.key] = p
                self._apply(held[0], held[1])
                return
            self.pending[p.key] = p
            owner = self.claims.pop(p.key, None)
            if owner is not None and self._user_of(owner) == p.user:
                p.worker = owner
                self.workers[owner].attempts.add(p.key)
            elif self._judged:
                self._unclaimed_adoption(p)
        if p.pool is not None:
            for hook in self.on_offer:
                hook(p)

    def _user_of(self, wid: str) -> str | None:
        w = self.workers.get(wid)
        return None if w is None else w.user

    def withdraw(self, key: Key) -> None:
        """The engine no longer awaits this attempt (cancel, timeout): stop it."""
        with self.lock:
            p = self.pending.pop(key, None)
        if p is not None and p.pool is not None:
            for hook in self.on_withdraw:
                hook(p)
        with self.lock:
            if p is None or p.worker is None:
                return
            w = self.workers.get(p.worker)
            if w is None:
                return
            w.attempts.discard(key)
            if w.link is not None:
                w.link.controls.append({"action": "cancel", "key": list(key)})
                self._wake_link(w.link)

    def control(self, key: Key, action: str, reason: str = "") -> bool:
        with self.lock:
            p = self.pending.get(key)
            w = self.workers.get(p.worker) if p is not None and p.worker else None
            if w is None or w.link is None:
                return False
            w.link.controls.append({"action": action, "key": list(key), "reason": reason})
            self._wake_link(w.link)
            return True

    def snapshot(self, user: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [w.to_json() for w in self.workers.values()
                    if user is None or w.user == user]

    def live_workers(self, provider: str | None = None) -> list[Worker]:
        with self.lock:
            return [w for w in self.workers.values() if w.state == "ACTIVE"
                    and (provider is None or w.provider == provider)]

    def live_workers_of(self, user: str) -> list[Worker]:
        """The user's connected workers (any provider)."""
        with self.lock:
            return [w for w in self.workers.values() if w.state == "ACTIVE" and w.user == user]

    def waiting(self, user: str, pool: str) -> list[Key]:
        """Attempts for ``pool`` that no worker has taken yet (its backlog)."""
        with self.lock:
            return [k for k in self.offers.get((user, pool), ())
                    if (p := self.pending.get(k)) is not None and p.worker is None]

    def end_job(self, job: str, outcome: Callable[[Pending], Outcome | BaseException],
                keys: tuple[Key, ...] = ()) -> int:
        """A batch job ended: the attempts its workers held, and ``keys`` (attempts meant
        for it that no worker took), get ``outcome(p)``; its workers are stopped. Returns
        how many attempts it resolved."""
        ended: list[tuple[Pending, Outcome | BaseException]] = []
        with self.lock:
            held = set(keys)
            for w in self.workers.values():
                if w.job == job:
                    held |= w.attempts
                    w.attempts.clear()
                    if w.state == "ACTIVE":
                        w.state = "STOPPED"
            for key in held:
                p = self.pending.get(key)
                if p is None or (key in keys and p.worker is not None
                                 and self.workers.get(p.worker, Worker("", "")).job != job):
                    continue
                del self.pending[key]
                ended.append((p, outcome(p)))
        for p, out in ended:
            p.resolve(out)
        return len(ended)

    def queued(self, user: str | None = None) -> int:
        with self.lock:
            return sum(1 for p in self.pending.values()
                       if p.worker is None and (user is None or p.user == user))

    # -- worker side (server loop) ---------------------------------------------------------
    async def serve(self, user: str, receive: Callable[[], Any],
                    send: Callable[[dict[str, Any]], Any]) -> None:
        """Handle one worker connection until it closes."""
        hello = await receive()
        if not isinstance(hello, dict) or hello.get("op") != "hello":
            raise ValueError("the first message must be hello")
        wid = str(hello["worker"])
        with self.lock:
            w = self.workers.get(wid)
            if w is not None and w.user != user:
                raise PermissionError(f"worker {wid} belongs to another user")
            if w is None:
                w = self.workers[wid] = Worker(wid, user)
            w.host, w.pid = str(hello.get("host", "")), hello.get("pid")
            w.provider, w.slots = hello.get("provider"), int(hello.get("slots", 1))
            w.pool, w.job = hello.get("pool"), hello.get("job")
            w.info = dict(hello.get("info") or {})
            w.state, w.last_seen = "ACTIVE", time.monotonic()
            old = w.link
            if old is not None:
                self._close(old)
            link = w.link = Link(w, send)
            link.capacity = w.slots
            self.capacity[user] = self.capacity.get(user, 0) + w.slots
            running = {key_of(k) for k in hello.get("running", [])}
            reported = {key_of(r["key"]) for r in hello.get("reports", [])}
            forget: list[Key] = []
            # Offers sent on a connection that broke before they arrived: requeue them.
            for key in list(w.attempts):
                if key not in running and key not in reported:
                    w.attempts.discard(key)
                    p = self.pending.get(key)
                    if p is not None and not p.adopted:
                        p.worker = None
                        self.offers.setdefault((p.user, p.pool), deque()).appendleft(key)
            for key in running:
                p = self.pending.get(key)
                if p is not None and p.user != w.user:
                    continue  # another user's attempt: never this worker's to claim
                if p is not None and p.worker in (None, wid):
                    p.worker = wid
                    w.attempts.add(key)
                elif self._abandoned(key):
                    forget.append(key)
                else:
                    self.claims[key] = wid
            for rep in hello.get("reports", []):
                self._report(w, rep)
            self._forget_kernels(wid)  # the worker says again which it has
            self._kernels(w, hello.get("kernels") or ())
            self._waiting(w, hello.get("waiting") or ())
            self._credit(link, max(0, w.slots - len(running)))
            self._expected.discard(wid)
        await asyncio.to_thread(wstore.save_worker, self.store, self._row(w))
        await send({"op": "welcome", "manager": self.instance,
                    "heartbeat": self.heartbeat_timeout, "sample_interval": self.sample_interval,
                    "forget": [list(k) for k in forget]})
        sender = asyncio.create_task(self._sender(link))
        try:
            while True:
                msg = await receive()
                if msg is None:
                    break
                self._message(w, link, msg)
        finally:
            with self.lock:
                self._close(link)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            with self.lock:
                if w.link is link:
                    w.link = None
            if w.state == "STOPPED":
                await asyncio.to_thread(wstore.set_worker_state, self.store, [w.id],
                                        "STOPPED")

    def _message(self, w: Worker, link: Link, msg: dict[str, Any]) -> None:
        samples = msg.get("samples") or []
        begun: list[Pending] = []
        with self.lock:
            w.last_seen = time.monotonic()
            for k in msg.get("started", ()):
                p = self._mine(w, key_of(k))
                if p is not None and p.worker == w.id and not p.begun:
                    p.begun = True
                    begun.append(p)
            for rep in msg.get("reports", ()):
                self._report(w, rep)
            self._kernels(w, msg.get("kernels") or ())
            self._waiting(w, msg.get("waiting") or ())
            if msg.get("drain"):  # a pilot near its walltime takes nothing more
                self._credit(link, -link.credits)
            else:
                self._credit(link, int(msg.get("credit", 0)))
            if link.credits > 0 and self.offers.get(link.offers):
                self._wake_link(link)
        for p in begun:
            if p.started is not None:
                p.started(w.id)
        if msg.get("bye"):
            w.state = "STOPPED"
        if samples:
            rows = []
            for s in samples:
                key = key_of(s.pop("key"))
                if key not in w.attempts:
                    continue  # samples only of what this worker runs
                run, task, attempt = key
                rows.append({"run_id": run, "task": task, "attempt": attempt, **s})
            for listener in self.on_samples:
                listener(rows)
            assert self.loop is not None
            self.loop.run_in_executor(None, wstore.add_samples, self.store, rows)

    def _credit(self, link: Link, n: int) -> None:
        """A link's credits change by ``n`` (under the lock): it is among the hungry links
        of its queue exactly while it has credits and is open."""
        link.credits = max(0, link.credits + n)
        hungry = self.hungry.setdefault(link.offers, {})
        if link.credits > 0 and not link.closed:
            hungry[link] = None
        else:
            hungry.pop(link, None)

    def _close(self, link: Link) -> None:
        """A link is over (under the lock): its sender stops, it takes no more offers."""
        link.closed = True
        link.wake.set()
        self.hungry.get(link.offers, {}).pop(link, None)
        user = link.worker.user
        self.capacity[user] = self.capacity.get(user, 0) - link.capacity
        link.capacity = 0

    async def _sender(self, link: Link) -> None:
        """Sends a worker what is for it: new tasks, acknowledgements and controls, in one
        message per wake-up (one write to the socket, however much there is). Tasks and
        controls go at once; acknowledgements alone wait up to :data:`ACK_DELAY` for
        tasks to go with (they are not urgent), so a busy link carries about one message
        per batch of tasks, not one more per commit."""
        while not link.closed:
            await link.wake.wait()
            await asyncio.sleep(0)  # let wake-ups queued in the same loop turn join in
            link.wake.clear()
            if link.closed:
                return
            with self.lock:
                items, started = self._take(link)
                left = link.ack_due - time.monotonic()
                if items or link.controls or left < 0.001:
                    acks, link.acks = link.acks, []
                    link.ack_due = float("inf")
                else:  # acks alone, not yet due: a timer wakes this sender again
                    acks = []
                    if link.acks:
                        self._wake_link(link, left)
                controls, link.controls = link.controls, []
            for p, wid in started:
                if p.started is not None:
                    p.started(wid)
            msg: dict[str, Any] = {"op": "batch"}
            if items:
                msg["tasks"] = items
            if acks:
                msg["acks"] = acks
            if controls:
                msg["controls"] = controls
            if len(msg) > 1:
                await link.send(msg)

    def _take(self, link: Link) -> tuple[list[dict[str, Any]], list[tuple[Pending, str]]]:
        """The offers a link's credits take now (under the lock)."""
        w = link.worker
        items: list[dict[str, Any]] = []
        started: list[tuple[Pending, str]] = []
        queue = self.offers.get(link.offers)
        while queue and link.credits > 0:
            key = queue.popleft()
            p = self.pending.get(key)
            if p is None or p.worker is not None or p.adopted:
                continue
            p.worker = w.id
            w.attempts.add(key)
            link.credits -= 1
            item: dict[str, Any] = {"key": list(key), "payload": p.payload}
            if len(w.attempts) > w.slots:
                item["queued"] = True  # it waits there for a slot: the worker says when
            else:
                p.begun = True
                started.append((p, w.id))
            items.append(item)
        if link.credits == 0:
            self.hungry.get(link.offers, {}).pop(link, None)
        return items, started

    def _mine(self, w: Worker, key: Key) -> Pending | None:
        """The pending attempt ``key`` if worker ``w`` runs it: of its own user, sent to it
        (or awaiting its claim after a restart). A worker speaks only for those."""
        p = self.pending.get(key)
        if p is None or p.user != w.user or p.worker not in (None, w.id):
            return None
        return p

    def _waiting(self, w: Worker, news: Any) -> None:
        for item in news:
            p = self._mine(w, key_of(item["key"]))
            if p is not None and p.worker == w.id and p.waiting is not None:
                p.waiting(dict(item.get("info") or {}))

    def _kernels(self, w: Worker, news: Any) -> None:
        for item in news:
            key = key_of(item["key"])
            if item.get("info"):
                if key in w.attempts:  # only for a task this worker runs
                    self.kernels[key] = (w.id, dict(item["info"]))
            elif self.kernels.get(key, (None,))[0] == w.id:
                self.kernels.pop(key, None)

    def _forget_kernels(self, wid: str) -> None:
        for k in [k for k, (owner, _) in self.kernels.items() if owner == wid]:
            del self.kernels[k]

    def kernel(self, run_id: str, task: str) -> dict[str, Any] | None:
        """The connection info of the kernel a task runs in now (its latest attempt)."""
        with self.lock:
            found = [(k[2], info) for k, (_w, info) in self.kernels.items()
                     if k[0] == run_id and k[1] == task]
        return max(found, key=lambda f: f[0])[1] if found else None

    # -- reports (under the lock) ----------------------------------------------------------
    def _report(self, w: Worker, rep: dict[str, Any]) -> None:
        wid, seq = w.id, int(rep["seq"])
        if (wid, seq) in self.inflight:
            return  # a resend of a report still being committed
        key = key_of(rep["key"])
        p = self.pending.get(key)
        if p is not None and p.user != w.user:
            log.warning("worker %s (user %s) reported %s, an attempt of another user; "
                        "ignored", wid, w.user, key)
            self._ack(wid, seq)  # never applied; the worker need not send it again
            return
        if p is not None and p.worker in (None, wid):
            self._apply(wid, rep)
        elif p is None and self._abandoned(key):
            self._ack(wid, seq)  # nobody awaits it any more (a duplicate, or cancelled)
        else:
            self.unclaimed[key] = (wid, rep)  # a run still loading after a restart

    def _apply(self, wid: str, rep: dict[str, Any]) -> None:
        key, seq = key_of(rep["key"]), int(rep["seq"])
        p = self.pending.pop(key)
        w = self.workers.get(wid)
        if w is not None:
            w.attempts.discard(key)
        how = rep.get("how")
        if how == "interrupted":
            self._ack(wid, seq)
            p.resolve(Interrupted(rep.get("error") or f"worker {wid} stopped"))
            return
        if how == "cancelled":
            self._ack(wid, seq)
            p.resolve(asyncio.CancelledError())
            return
        try:
            out = outcome_of(rep)
        except Exception as e:
            out = Outcome(ok=False, error=f"cannot read the worker's report: {e!r}")
        self.inflight.add((wid, seq))
        out.receipt = lambda: self._ack_threadsafe(wid, seq)
        p.resolve(out)

    def _ack_threadsafe(self, wid: str, seq: int) -> None:
        if self._mailbox is not None:
            self._mailbox.post(self._ack_locked, wid, seq)

    def _ack_locked(self, wid: str, seq: int) -> None:
        with self.lock:
            self._ack(wid, seq)

    def _ack(self, wid: str, seq: int) -> None:
        self.inflight.discard((wid, seq))
        w = self.workers.get(wid)
        if w is not None and w.link is not None:
            link = w.link
            link.acks.append(seq)
            if link.ack_due == float("inf"):  # the first waiting ack: the link's timer
                link.ack_due = time.monotonic() + ACK_DELAY
                self._wake_link(link, ACK_DELAY)

    def _abandoned(self, key: Key) -> bool:
        """Nobody awaits this attempt and nobody will: its run is driven here and has
        adopted what it had (so it would be pending), or the store shows it over."""
        if key[0] in self.live_runs and self._resumed.is_set():
            return True
        return self._stale(key)

    def _stale(self, key: Key) -> bool:
        """Whether the store shows this attempt as over (so nobody will await it)."""
        run, task, attempt = key
        try:
            rec = self.store.task(run, task)
        except Exception:
            return True  # no such run or task
        return rec.state.terminal or rec.attempts > attempt

    # -- lost workers ----------------------------------------------------------------------
    async def _reap(self) -> None:
        period = max(0.1, min(1.0, self.heartbeat_timeout / 10))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if now - self._tick > max(2.0, self.heartbeat_timeout / 2):
                # This process itself was stopped (SIGSTOP, a frozen VM): the silence was
                # ours, not the workers'. Start counting again.
                with self.lock:
                    for w in self.workers.values():
                        w.last_seen = now
            self._tick = now
            lost: list[Worker] = []
            with self.lock:
                for w in self.workers.values():
                    if w.state == "ACTIVE" and now - w.last_seen > self.heartbeat_timeout:
                        lost.append(w)
                        self._lose(w)
                if not self._judged and self._resumed.is_set() and (
                        not self._expected or now > self._grace_until):
                    self._judge()
            if lost:
                await asyncio.to_thread(wstore.set_worker_state, self.store,
                                        [w.id for w in lost], "LOST")
                for w in lost:
                    log.warning("worker %s lost: no word for %.0f s", w.id,
                                self.heartbeat_timeout)
                    for listener in self.on_lost:
                        listener(w)

    def _lose(self, w: Worker) -> None:
        w.state = "LOST"
        self._forget_kernels(w.id)
        for key in list(w.attempts):
            p = self.pending.pop(key, None)
            if p is not None:
                p.resolve(self._lost_outcome(w.id, p))
        w.attempts.clear()
        if w.link is not None:
            self._close(w.link)

    def _lost_outcome(self, wid: str, p: Pending) -> Outcome | BaseException:
        if not p.was_running or (not p.adopted and not p.begun):
            # Never started there (sent ahead of a free slot, or before a restart): it is
            # offered again without counting a retry.
            return Interrupted(f"worker {wid} was lost before it started the task")
        return Outcome(ok=False, error=f"worker {wid} was lost: no word from it for "
                       f"{self.heartbeat_timeout:g} s", details={"lost_worker": wid})

    def _judge(self) -> None:
        """After a restart's grace: attempts no worker claimed are lost; claims no run
        adopted are forgotten."""
        self._judged = True
        for p in list(self.pending.values()):
            if p.adopted and p.worker is None:
                self._unclaimed_adoption(p)
        for key, wid in list(self.claims.items()):
            w = self.workers.get(wid)
            if w is not None and w.link is not None:
                w.link.controls.append({"action": "cancel", "key": list(key)})
                self._wake_link(w.link)
        self.claims.clear()

    def _unclaimed_adoption(self, p: Pending) -> None:
        """No worker claimed an adopted attempt: one that had started was cut short with
        the manager that ran it (its worker stopped or died too, or that manager's run
        stopped on a store failure), so it is requeued without counting a retry, as a
        run resumed without a manager requeues what its dead driver left; one that was
        still queued is simply offered again (same attempt)."""
        if p.was_running:
            del self.pending[p.key]
            p.resolve(Interrupted("no worker claimed it after the manager restarted"))
        else:
            p.adopted = False
            self.offers.setdefault((p.user, p.pool), deque()).append(p.key)
            self._wake_queue((p.user, p.pool))

    # -- helpers ---------------------------------------------------------------------------
    def _wake_queue(self, queue: tuple[str, str | None]) -> None:
        """New offers in a queue (any thread): wake the links that can take them, once per
        loop turn however many offers came."""
        loop = self.loop
        if loop is None or queue in self._wake_scheduled:
            return
        self._wake_scheduled.add(queue)
        loop.call_soon_threadsafe(self._wake_queue_now, queue)

    def _wake_queue_now(self, queue: tuple[str, str | None]) -> None:
        """Wake hungry links of ``queue``, first come first, until their credits cover the
        offers waiting: the cost is in the links woken, not in the workers connected."""
        self._wake_scheduled.discard(queue)
        with self.lock:
            waiting = len(self.offers.get(queue, ()))
            for link in self.hungry.get(queue, {}):
                if waiting <= 0:
                    break
                link.wake.set()
                waiting -= link.credits

    def _wake_link(self, link: Link, delay: float = 0.0) -> None:
        """Wake a link's sender, now or in ``delay`` seconds (under the lock; from any
        thread)."""
        loop = self.loop
        if loop is None:
            return
        if delay:
            if threading.get_ident() == self._loop_thread:
                loop.call_later(delay, link.wake.set)
            else:
                loop.call_soon_threadsafe(loop.call_later, delay, link.wake.set)
        elif threading.get_ident() == self._loop_thread:
            link.wake.set()
        else:
            loop.call_soon_threadsafe(link.wake.set)

    def _row(self, w: Worker) -> dict[str, Any]:
        return {"id": w.id, "user": w.user, "host": w.host, "pid": w.pid,
                "provider": w.provider, "slots": w.slots, "state": w.state,
                "started_at": w.started_at, "last_seen": time.time(), "info": w.info}

"""The engine drives one run: the async driver around :class:`kale.engine.planner.Planner`.
The planner decides (what is ready, what a finished attempt leads to, retries, the SKIPPED
tasks below a failure, cancels, resuming); the engine feeds it events and does what it
returns: resolves inputs and looks up earlier results, dispatches tasks to an executor,
runs timers and timeouts, and records every transition in the store.

Each step of the loop (1) takes every finished attempt, (2) works out the consequences
(success, retry, failure and the SKIPPED tasks below it, newly ready tasks), (3) checks all
of those changes against the state machine and hands them to the group committer, which
commits them (with whatever else gathered in the last few ms) in one transaction, and
(4) starts the newly dispatched tasks. A process killed at any instant leaves a consistent
store that :meth:`Engine.run` can resume from: a task recorded SUCCEEDED never runs again;
a task started moments before its RUNNING change was committed is found on resume by its
environment and killed (see ``procs.kill_leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from kale.engine import dynamic
from kale.engine.keys import cache_key, seen_params, upstream_id
from kale.engine.planner import (
    Adopt,
    AttemptEnd,
    Control,
    Ending,
    Gather,
    Kill,
    Member,
    Move,
    Planner,
    Policy,
    Resolve,
    Start,
    StartTimer,
    Step,
    StopTimer,
)
from kale.errors import KaleError, Problem, StoreWriteError
from kale.executors.base import Executor, Interrupted
from kale.model import dag
from kale.model.adding import added_task, added_tasks
from kale.model.dynamic import ADDED, evaluate, group_of
from kale.model.refs import MissingResult, resolve
from kale.model.states import RunState, TaskState
from kale.model.workflow import Task, Workflow
from kale.store import results
from kale.store.commit import GroupCommitter
from kale.store.store import Change, RunRecord, Store, TaskRecord
from kale.tasks import procs, usercode
from kale.tasks.base import RECORDS_FILE, Outcome, TaskContext
from kale.tasks.record import ENV as RECORD_ENV
from kale.tasks.record import read_records

log = logging.getLogger("kale.engine")
S = TaskState


@dataclass(slots=True)
class _Done:
    """An attempt's end as its executor gave it: ``cut`` says how it was cut short (timed
    out, cancelled, interrupted), None when it ran to its end and ``outcome`` says how."""

    name: str
    attempt: int
    outcome: Outcome
    cut: Ending | None = None
    #: the task's directory (the attempt's context has it made already)
    workdir: str | None = None


Listener = Callable[[list[Change]], None]


class _Workdirs:
    """Task directories made ahead, by a thread of their own: the tasks about to start
    (the next ready ones, and those that wait only for a task just started) find theirs
    made. Creating a directory costs a few hundred microseconds of system time on a
    disk (more on a shared filesystem): done in the task's start it was a good part of a
    short task's latency; here it overlaps the tasks before it.

    Promises: :meth:`take` is true only for a directory this thread created itself (so
    it is new and empty: no earlier attempt left anything there), once; a directory
    that existed is left to the engine (:meth:`TaskContext.make_workdir` stops what an
    earlier attempt left running there). A directory made for a task that then does not
    run (skipped, reused) stays, empty.

    Threads: :meth:`ask` and :meth:`take` from the engine's loop; the maker its own."""

    def __init__(self, run_dir: Path, made_elsewhere: Callable[[str], bool]) -> None:
        self._run_dir = str(run_dir)
        #: whether a task's directory is made where it runs (its executor's say)
        self._elsewhere = made_elsewhere
        self._asked: set[str] = set()  # asked for once: later asks cost a set lookup
        self._made: set[str] = set()  # made by the maker, not yet taken
        self._taken: set[str] = set()  # asked for by the engine: too late to make ahead
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def ask(self, name: str) -> None:
        """Have ``name``'s directory made (unless its executor makes it where it runs)."""
        if name in self._asked:
            return
        self._asked.add(name)
        if self._elsewhere(name):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._make, name="kale-workdirs",
                                            daemon=True)
            self._thread.start()
        self._queue.put((name, f"{self._run_dir}/{name}"))

    def take(self, name: str) -> bool:
        """Whether ``name``'s directory was made ahead (and new): for its first attempt
        only (a directory made after this was asked is not counted: it may be the one
        the engine made, and a later attempt finds what this one left there)."""
        with self._lock:
            self._taken.add(name)
            if name in self._made:
                self._made.discard(name)
                return True
        return False

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _make(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, path = item
            with self._lock:
                if name in self._taken:  # it started meanwhile
                    continue
            try:
                os.mkdir(path)
            except OSError:  # it exists (the engine made it), or the run dir is gone
                continue
            with self._lock:
                if name not in self._taken:
                    self._made.add(name)


def _with_members(name: str, members: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """A task, then its members (and theirs). (Not a closure of the engine's: a function
    that calls itself through its closure is a reference cycle, which would keep the whole
    run in memory until the garbage collector's next full pass.)"""
    yield name
    for m in members.get(name, ()):
        yield from _with_members(m, members)


class Engine:
    """Drives one run: feeds events to its :class:`Planner` and does the steps it returns.

    Runs on one asyncio event loop (the thread that awaits :meth:`run`); everything but
    :meth:`cancel`, :meth:`cancel_task`, :meth:`control` and :meth:`detach` (thread-safe:
    they post to that loop) and :attr:`counts` and :attr:`loaded` (read by other threads)
    belongs to it. The group committer's thread calls back only through ``_notify`` and
    ``_store_failed_threadsafe``. ``counts``, given, is the dict the planner counts the
    tasks per state in (the manager's writes each change through to its status board).

    Invariants: the planner's picture is what the store will hold once ``changes`` is
    committed (every change is the planner's :class:`Move`, in its order); ``running`` holds
    an asyncio task exactly for each task the planner has active, ``timers`` a timer for
    each it has retrying; an attempt's ``contexts`` entry lives as long as it runs. Each
    :class:`Resolve` is answered in its place, before anything else happens.
    """

    def __init__(self, store: Store, run: RunRecord, wf: Workflow, executor: Executor, *,
                 force: bool = False, listeners: list[Listener] | None = None,
                 reuse_users: Sequence[str | None] | None = None,
                 counts: dict[TaskState, int] | None = None) -> None:
        self.store, self.run_rec, self.wf, self.executor = store, run, wf, executor
        self.run_id = run.id
        self.force = force
        self.listeners = list(listeners or [])
        self.run_dir = Path(run.run_dir)
        self.params = dict(run.params)
        self.selected: set[str] = set(run.options.get("selected") or wf.tasks)
        #: whose earlier results this run may reuse (None stands for runs that recorded
        #: no user): its own user's only
        self.reuse_users: list[str | None] = list(
            reuse_users if reuse_users is not None
            else [run.submitted_by] if run.options.get("manager") and run.submitted_by
            else store.own_users())  # a run made here: this OS user's
        #: the run's tasks: the workflow's, and the members its maps add as they run
        self.tasks: dict[str, Task] = dict(wf.tasks)
        # Tuples, and one shared empty one: a run may hold 100,000 of each.
        none: tuple[str, ...] = ()
        self.upstream: dict[str, tuple[str, ...]] = {
            n: tuple(t.upstream) or none for n, t in wf.tasks.items()}
        self.downstream: dict[str, tuple[str, ...]] = {
            n: tuple(ds) or none for n, ds in dag.downstream_map(self.upstream).items()}
        #: tasks outside the selection whose results selected tasks need
        self.needed: set[str] = (dag.ancestors(self.upstream, self.selected) - self.selected
                                 if len(self.selected) < len(wf.tasks) else set())
        self.planner = Planner(
            self.upstream, self.downstream, selected=self.selected, needed=self.needed,
            policies={n: Policy(t.retries, t.retry_delay) for n, t in wf.tasks.items()
                      if t.retries},
            rerun=bool(run.options.get("rerun_of")), run_id=run.id, counts=counts)
        #: tasks per state, kept as states change (every state is a key, so other threads
        #: may copy it while the engine runs)
        self.counts: dict[TaskState, int] = self.planner.counts
        self.def_hash: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self.hashes: dict[str, str] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        #: queued attempts with a timeout, until their executor says they started
        self._start_events: dict[str, asyncio.Event] = {}
        self.contexts: dict[str, TaskContext] = {}  # running attempts
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.changes: list[Change] = []
        self.cached: dict[str, list[TaskRecord]] = {}
        self._inputs: dict[str, tuple[dict[str, Any], str]] = {}
        #: files shell commands name (their code), as they started: hash and size
        self._named: dict[str, dict[str, tuple[str, int]]] = {}
        self._cancel_early = False  # cancel() before the loop ran
        self._quiet = asyncio.Event()  # set when nothing runs, waits or is ready
        self._failure: BaseException | None = None
        self._dispatch_soon = False
        self._finished = False
        self._started_at: dict[str, float] = {}  # attempts adopted after a restart
        self._poller: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committer: GroupCommitter | None = None
        self._logs = self.run_dir / "logs"
        self.loaded = threading.Event()  # set once the store's picture is loaded
        self._detached = False
        self._files = dynamic.Files(self.run_dir)
        self._init_groups()
        self._run_dirs: dict[str, Path] = {}  # earlier runs' directories, by id
        tasks = self.tasks  # not ``self``: the engine would hold itself (see _let_go)
        self._workdirs = _Workdirs(self.run_dir, lambda n: executor.makes_workdir(tasks[n]))
        self._position = 0  # the next row's place in the run (a member's)

    def _init_groups(self) -> None:
        """What the engine keeps of the tasks a run adds (a map's members, the tasks a
        task added) and of their groups."""
        self._member_keys: dict[str, str] = {}  # a map's members' cache keys
        self._members: set[str] = set()  # every task the run added
        #: per map: what its members see of its upstream tasks, and the parameters they
        #: do not see (with the parameters they do, when some are hidden)
        self._member_view: dict[str, tuple[tuple[str, ...], set[str]]] = {}
        self._member_params: dict[str, dict[str, Any]] = {}
        #: what a task hands Kale to add (kale.add_tasks), until its success is judged
        self._adds: dict[str, Any] = {}
        #: tasks that added tasks, until those end: their cache key and own result hash
        self._parents: dict[str, tuple[str, str]] = {}
        #: per group (a map, a task that added tasks) until it is gathered: the code its
        #: members ran (and its own, for a task that added tasks): the group's code, so a
        #: group is not reused whole once code its members ran changed
        self._group_code: dict[str, dict[str, str]] = {}
        #: per map until it is gathered: its members' output files as each was made
        #: (:func:`kale.store.results.fingerprints`), the map's own when it is reused whole
        self._group_outputs: dict[str, dict[str, list[int]]] = {}

    _seen = ""  # the parameters' text in a Python task's key, once known (see _key)

    @functools.cached_property
    def _texts(self) -> tuple[str, str]:
        """The run's directory and its logs folder, as text (see :meth:`_context`)."""
        return str(self.run_dir), str(self._logs)

    @property
    def cancelled(self) -> bool:
        return self.planner.cancelled or self._cancel_early

    # -- public --------------------------------------------------------------------------
    async def run(self) -> RunState:
        """Drive the run to its end and return its final state."""
        self._loop = asyncio.get_running_loop()
        self._quiet = asyncio.Event()
        self.executor.on_start = self._started
        self.executor.on_wait = self._waiting
        self.executor.on_samples = self._samples
        self._logs.mkdir(parents=True, exist_ok=True)
        new = self.store.claim_run(self.run_id)
        self._committer = GroupCommitter(self.store, on_commit=self._notify,
                                         on_error=self._store_failed_threadsafe)
        # --force runs the selected tasks again; tasks outside the selection still reuse
        self.cached = self.store.cached(self.wf.name, self.reuse_users,
                                        self.run_rec.base_dir)
        from kale.tasks.registry import runner_kind

        kinds = Counter[str](runner_kind(self.wf.tasks[n]) for n in self.selected)
        try:
            await self.executor.start(kinds)
            self._load(new)
            self.loaded.set()
            if self._cancel_early:
                self._cancel_early = False
                self._cancel(self.planner.cancel_reason)
            self._dispatch()
            self._poll_cancel()
            await self._quiet.wait()
            self._finished = True
            if self._failure is not None:
                raise self._failure
            if self._detached:
                self._flush()
                return RunState.RUNNING
        except BaseException as e:
            self._finished = True
            self.loaded.set()
            self._abandon(e)
            raise
        finally:
            if self._poller is not None:
                self._poller.cancel()
            self._workdirs.close()
            await self.executor.close()
            try:
                self._committer.close()
            except StoreWriteError:
                if self._failure is None:
                    raise
            finally:
                self._let_go()
        final = self.planner.final_state()
        self.store.finish_run(self.run_id, final, self.planner.summary())
        return final

    def _let_go(self) -> None:
        """Drop the references back to this engine that its executor and committer hold
        (its bound methods), so that once nobody refers to it the engine and its run (a
        big workflow: hundreds of thousands of objects) are freed as their last reference
        goes, not in a pause of the cyclic garbage collector (43-69 ms for a run of 20,000
        tasks in the manager, with every thread of it waiting)."""
        self.executor.on_start = self.executor.on_wait = self.executor.on_samples = None
        if self._committer is not None:
            self._committer.on_commit = self._committer.on_error = None

    POLL = 0.5  # seconds between looks at the store for a cancel request

    def _poll_cancel(self) -> None:
        """`kale cancel` (or a Run handle elsewhere) asks through the store."""
        if self._finished:
            return
        try:
            if self.store.cancel_requested(self.run_id):
                self._cancel("cancelled (kale cancel)")
        except Exception:  # the store is busy or away: look again next time
            log.debug("cannot read cancel request", exc_info=True)
        assert self._loop is not None
        self._poller = self._loop.call_later(self.POLL, self._poll_cancel)

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel the run (thread-safe): running tasks are killed, the rest not started."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._cancel_early = True
            return
        loop.call_soon_threadsafe(self._cancel, reason)

    def detach(self) -> None:
        """Stop driving the run but leave it as it is (thread-safe): what a manager does
        when it stops. Its tasks go on in their workers; the next driver adopts them."""
        def now() -> None:
            self._detached = True
            self._quiet.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(now)

    def cancel_task(self, name: str, reason: str = "cancelled") -> None:
        """Cancel one task (thread-safe); the tasks below it are skipped."""
        self._threadsafe(self._cancel_task, name, reason)

    def control(self, name: str, action: str, reason: str = "") -> None:
        """``suspend`` or ``resume`` a running task, ``continue`` or ``reject`` a waiting
        step (thread-safe)."""
        self._threadsafe(self._control, name, action, reason)

    def _threadsafe(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._finished:
            raise RuntimeError("the run is not active")
        loop.call_soon_threadsafe(self._guarded, fn, *args)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
            self._dispatch()
        except BaseException as e:  # a bug in the engine: stop the run loudly
            self._failure = e
            self._quiet.set()

    def _cancel_task(self, name: str, reason: str) -> None:
        self._apply(self.planner.cancel_task(name, reason, time.time()))

    def _control(self, name: str, action: str, reason: str = "") -> None:
        ctx = self.contexts.get(name)
        st = self.planner.state.get(name)
        if action in ("continue", "reject"):
            # The step's runner ends the attempt; its outcome moves the task on.
            if ctx is None or st is not S.WAITING or not self.executor.control(
                    ctx, action, reason):
                log.info("cannot %s %s: it is %s", action, name, st)
            return
        if action not in ("suspend", "resume"):
            raise ValueError(f"unknown action {action!r}")
        control = Control.SUSPEND if action == "suspend" else Control.RESUME
        if ctx is None or st is not control.before:
            log.info("cannot %s %s: it is %s", action, name, st)
            return
        if self.executor.control(ctx, action):
            self._apply(self.planner.controlled(name, control))

    def _started(self, name: str, attempt: int, worker: str) -> None:
        """A queued attempt reached a worker."""
        event = self._start_events.get(name)
        if event is not None:
            event.set()
        steps = self.planner.started(name, attempt, worker, time.time())
        if steps:
            self._apply(steps)
            self._schedule_dispatch()

    def _samples(self, rows: list[dict[str, Any]]) -> None:
        """Resource samples an executor took where its tasks run (another engine's
        workers): into the store, off the loop, as the manager's broker does for workers."""
        from kale.store import workers as wstore

        assert self._loop is not None
        self._loop.run_in_executor(None, wstore.add_samples, self.store, rows)

    def _waiting(self, name: str, attempt: int, info: dict[str, Any]) -> None:
        """An interactive step waits for a person."""
        steps = self.planner.waiting(name, attempt, str(info.get("notebook", "")),
                                     str(info.get("worker", "")), time.time())
        if steps:
            self._apply(steps)
            self._schedule_dispatch()  # which also commits the change

    # -- setup ---------------------------------------------------------------------------
    def _load(self, new: list[tuple[str, str | None]] | None) -> None:
        """Bring the in-memory picture in line with the store (new or resumed run);
        ``new``: the tasks of a run none of whose tasks was touched yet
        (:meth:`Store.claim_run`)."""
        if self.run_rec.state is RunState.CANCELLED:
            self._reopen_cancelled()
        plan = self.planner
        if new is not None:  # a run just created: every task PENDING, nothing to recall
            self._position = len(new)
            for name, def_hash in new:
                plan.restore(name, S.PENDING, 0, 0, condition=False)
                self.def_hash[name] = def_hash or ""
            self._resume_all()
            return
        records = self.store.tasks(self.run_id)
        self._position = len(records)
        members: dict[str, list[tuple[int, str]]] = {}
        for rec in records:
            if rec.spec is not None:  # a task the run added as it ran
                self._restore_member(rec.name, rec.spec)
                members.setdefault(rec.spec["group"], []).append((rec.spec["index"], rec.name))
            interrupted = 0
            if rec.attempts and not rec.state.terminal:
                interrupted = sum(1 for a in self.store.attempts(self.run_id, rec.name)
                                  if a["state"] == "INTERRUPTED")
            plan.restore(rec.name, rec.state, rec.attempts, interrupted,
                         condition=bool(rec.details.get("condition")))
            if not rec.state.terminal:
                self.def_hash[rec.name] = rec.def_hash or ""
            if rec.started_at is not None and not rec.state.terminal:
                self._started_at[rec.name] = rec.started_at
            if rec.reused_from is not None:
                self._reused_dir(rec.name, rec.reused_from)
            if rec.state is S.SUCCEEDED and self._keeps(rec.name):
                self._remember(rec)
        self.executor.add_tasks([self.tasks[n] for ms in members.values() for _, n in ms])
        by_name = {rec.name: rec for rec in records}
        for rec in records:  # an unfinished added task may read a task nothing else does
            if rec.spec is not None and not rec.state.terminal:
                self._recall(self.upstream.get(rec.name, ()), by_name)
        for group, listed in members.items():
            names = [name for _, name in sorted(listed)]
            self._link(names)
            for name in names:
                plan.restore_member(group, name)
                if by_name[name].state is S.SUCCEEDED:  # its code, for the group's row
                    self._member_code(name, by_name[name].code, by_name[name].outputs)
            parent = by_name[group]
            if self.tasks[group].map is None and not parent.state.terminal:
                self._restore_parent(parent)
        if any(plan.attempts.values()) and not self.executor.remote:
            # A resumed run: its previous driver died. Stop whatever it left running (it
            # may have started a task moments before it could record that).
            procs.kill_leftovers(self.run_id)
        self._resume_all()

    def _resume_all(self) -> None:
        """Have the planner take up every task, in the graph's order (a task before its
        members)."""
        plan, members = self.planner, self.planner.members
        up = self.upstream  # the workflow's tasks as ordered by the graph already made
        order = [m for n in dag.topological({n: up[n] for n in self.wf.tasks})
                 for m in _with_members(n, members)]
        self._apply(plan.resume(order, time.time(), adopt=self.executor.remote))

    def _restore_member(self, name: str, spec: dict[str, Any]) -> None:
        """A task the run added, from its stored row: a map's member (its element), or a
        task another added (its definition); its place in the run."""
        group = spec["group"]
        if "task" in spec:
            task = added_task(name, spec["task"])
            self.upstream[name] = tuple(task.upstream)
            self._policy(name, task)
        else:
            task = dynamic.member(self.tasks[group], int(spec["index"]),
                                  dynamic.decode_binding(spec["bind"], self.wf.base_dir))
            self.upstream[name] = self._hidden(group)[0]
            self._member_keys[name] = spec["key"]
            self._policy(name, self.tasks[group])
        self.tasks[name] = task
        self.downstream[name] = ()
        self._members.add(name)

    def _restore_parent(self, rec: TaskRecord) -> None:
        """A task that added tasks, which are not all done: its own result, kept."""
        self._parents[rec.name] = (rec.cache_key or "", rec.result_hash or "")
        _merge_code(self._group_code.setdefault(rec.name, {}), rec.code or {})
        if self.downstream[rec.name]:
            self._remember(rec)

    def _link(self, names: list[str]) -> None:
        """The members of one group that wait for each other (tasks another added)."""
        below: dict[str, list[str]] = {n: [] for n in names}
        for n in names:
            for d in self.upstream[n]:
                if d in below:
                    below[d].append(n)
        for n, ds in below.items():
            if ds:
                self.downstream[n] = tuple(ds)

    def _policy(self, name: str, task: Task) -> None:
        if task.retries and isinstance(self.planner.policies, dict):
            self.planner.policies[name] = Policy(task.retries, task.retry_delay)

    def _reused_dir(self, name: str, run_id: str) -> None:
        """Where the files of a reused result are (their run's directory), for what maps
        over them; only looked up for tasks that something below may map over."""
        if not self.downstream[name]:
            return
        run_dir = self._run_dirs.get(run_id)
        if run_dir is None:
            try:
                run_dir = self._run_dirs[run_id] = Path(self.store.get_run(run_id).run_dir)
            except Exception:  # that run is gone: its files with it
                return
        self._files.reused[name] = run_dir

    def _keeps(self, name: str) -> bool:
        """Whether a task's result is kept in memory: tasks below need it, or it is a
        map's member (the map's result is the list of its members')."""
        return bool(self.downstream[name]) or name in self._members

    def _remember(self, rec: TaskRecord, name: str | None = None) -> None:
        """Hold a succeeded task's stored result (and what it gives a key below), as
        ``name``'s (a reused record may be another map member's)."""
        name = name or rec.name
        self.results[name] = results.decode(rec, self.wf.base_dir,
                                             sealed=self.executor.remote)
        self.hashes[name] = upstream_id(rec.cache_key, rec.result_hash, rec.code)

    def _recall(self, names: Iterable[str], records: dict[str, TaskRecord] | None = None
                ) -> None:
        """Hold the results of the succeeded ``names`` not held (tasks added as the run
        goes may read a task whose result nothing in the workflow needed), read from
        ``records`` or else from the store, once what is committed is all there is."""
        missing = [n for n in names if n not in self.hashes
                   and self.planner.state.get(n) is S.SUCCEEDED]
        if not missing:
            return
        if records is None:
            self._flush()
            assert self._committer is not None
            self._committer.sync()
        for name in missing:
            rec = records[name] if records is not None else self.store.task(self.run_id, name)
            self._remember(rec)

    def _reopen_cancelled(self) -> None:
        """Resuming a cancelled run (Ctrl-C, `kale cancel`): what it cancelled, and what
        was skipped below that, runs after all; what succeeded stays."""
        def root(name: str) -> str:  # a member's outermost map (or adding task)
            group = group_of(name)
            return name if group is None else root(group)

        reopen = [Change(self.run_id, rec.name, S.PENDING, "resumed after the run was "
                         "cancelled", {"ended_at": None, "error": None})
                  for rec in self.store.tasks(self.run_id)
                  if root(rec.name) in self.selected
                  and rec.state in (S.CANCELLED, S.SKIPPED)
                  and not rec.details.get("condition")]
        if reopen:
            self.store.apply(reopen)

    def _adopt(self, step: Adopt) -> None:
        """Wait for the worker that runs this attempt to report it (after a restart)."""
        name = step.name
        task = self.tasks[name]
        try:
            inputs = resolve(task.parameters, self.results, self.params, self._files)
        except MissingResult:
            inputs = {}
        self._inputs[name] = (inputs, self._key(name))
        ctx = self._context(name, step.attempt)
        assert self._loop is not None
        self.contexts[name] = ctx
        self.running[name] = self._loop.create_task(
            self._execute(name, step.attempt, ctx, adopt=step.started, adopting=True))

    def _resolve(self, step: Resolve) -> list[Step]:
        """The planner asks: can this task reuse an earlier result, and (if it is selected)
        are its inputs there? A task outside the selection is looked up only when every
        task above it has a result."""
        name = step.name
        task = self.tasks[name]
        if not step.selected:
            prev = None
            if all(d in self.hashes for d in self.upstream[name]):
                prev = self._earlier(self._key(name), task)
            return self._reuse(name, prev) if prev is not None \
                else self.planner.no_earlier(name)
        decided = self._dynamic(name, task)
        if decided is not None:
            return decided
        try:
            inputs = resolve(task.parameters, self.results, self.params, self._files)
        except MissingResult as e:
            return self.planner.missing(name, str(e), time.time())
        key = self._key(name)
        # --force runs the selected tasks again; tasks a selected one needs still reuse
        prev = None if self.force and name not in self.needed else self._earlier(key, task)
        if prev is not None:
            return self._reuse(name, prev)
        self._inputs[name] = (inputs, key)
        return self.planner.no_earlier(name)

    def _key(self, name: str) -> str:
        member = self._member_keys.get(name)
        if member is not None:
            return member
        task = self.tasks[name]
        seen = None
        if task.kind == "python":  # every one sees all the parameters: their text once
            seen = self._seen or seen_params(task, self.params)
            self._seen = seen
        return cache_key(task, self.def_hash[name], self.upstream[name], self.hashes,
                         self.params, seen=seen)

    # -- maps and conditions -------------------------------------------------------------
    def _dynamic(self, name: str, task: Task) -> list[Step] | None:
        """A due task that is decided here: skipped (its condition is false, or what it
        needs was skipped), failed (the condition or the map cannot be read), or a map
        that adds its members. None: an ordinary task."""
        skipped = [d for d in self.upstream[name] if d in self.planner.skipped_ok]
        if skipped:
            used = {r.task for r in task.refs() if not r.is_param}
            needed = [d for d in skipped if d in used]
            if needed or len(skipped) == len(self.upstream[name]):
                d = (needed or skipped)[0]
                return self.planner.skip_condition(
                    name, f"{'needs the result of' if needed else 'upstream'} {d!r}, "
                    "skipped by a condition")
        value = dynamic.resolver(self.results, self.params, self._files)
        if task.when is not None:
            try:
                ok, shown = evaluate(task.when, value)
            except (MissingResult, ValueError) as e:
                return self.planner.missing(name, f"condition {task.when!r}: {e}",
                                            time.time())
            if not ok:
                return self.planner.skip_condition(name, f"condition false: {shown}")
        if task.map is None:
            return None
        try:
            bound = dynamic.bindings(task, value)
        except (MissingResult, ValueError) as e:
            return self.planner.missing(name, f"map: {e}", time.time())
        return self._expand(name, task, bound)

    def _expand(self, name: str, task: Task, bound: list[dict[str, Any]]) -> list[Step]:
        """A map's members join the run, one per element. A member sees (and its key
        covers) its element, not the whole of what the map goes over."""
        upstream, hidden = self._hidden(name)
        base = cache_key(task, self.def_hash[name], upstream, self.hashes, self.params,
                         without=hidden)
        members: list[tuple[str, dict[str, Any]]] = []
        equal: Counter[str] = Counter()  # members of equal elements so far, by key
        for i, binding in enumerate(bound):
            member = dynamic.member(task, i, binding)
            first = dynamic.member_key(base, binding, self.run_dir)
            key = dynamic.nth_key(first, equal[first])
            equal[first] += 1
            self.tasks[member.name] = member
            self._member_keys[member.name] = key
            self._members.add(member.name)
            self.def_hash[member.name] = self.def_hash[name]
            members.append((member.name, {
                "kind": task.kind, "def_hash": self.def_hash[name], "position": self._position,
                "spec": {"group": name, "index": i, "key": key,
                         "bind": dynamic.encode_binding(binding)}}))
            self._position += 1
        self.executor.add_tasks([self.tasks[m] for m, _ in members])
        return self.planner.expand(name, members, f"map over {len(members)} elements",
                                   upstream)

    def _hidden(self, group: str) -> tuple[tuple[str, ...], set[str]]:
        """What a map's members see of what the map waits for (the tasks it maps over
        only through its map are left out), and the workflow parameters they do not
        see (those it maps over only); once per map."""
        hit = self._member_view.get(group)
        if hit is None:
            task = self.tasks[group]
            sources = dynamic.map_sources(task)
            hidden = dynamic.map_only_params(task)
            hit = self._member_view[group] = (
                tuple(d for d in self.upstream[group] if d not in sources), hidden)
            if hidden:
                self._member_params[group] = {k: v for k, v in self.params.items()
                                              if k not in hidden}
        return hit

    def _gather(self, group: str) -> list[Step]:
        """A group's members have all ended: a map's result is the list of theirs; a task
        that added tasks keeps its own result, whose hash (what tasks below see of it)
        now covers theirs too."""
        members = self.planner.members[group]
        task = self.tasks[group]
        values: dict[str, Any] = {"map": task.map is not None}
        ok = all(self.planner.state[m] is S.SUCCEEDED for m in members) \
            and not self.planner.cancelled
        code = self._group_code.pop(group, {})
        outputs = self._group_outputs.pop(group, None)
        if ok:  # the code its members ran (and its own): checked when it is reused
            values["code"] = _json(code)
            self._member_code(group, code, outputs)  # and the group's group's, if in one
        if ok and task.map is None:
            key, own = self._parents.pop(group)
            values["result_hash"] = dynamic.gathered_hash([own, *(self.hashes[m]
                                                                  for m in members)])
            if group in self.hashes:
                self.hashes[group] = upstream_id(key, values["result_hash"])
        elif ok:
            key = cache_key(task, self.def_hash.get(group, ""), self.upstream[group],
                            self.hashes, self.params)
            workdir = self.run_dir / group
            workdir.mkdir(parents=True, exist_ok=True)
            listed = [self.results.get(m) for m in members]
            values.update(results.encode(listed, workdir), cache_key=key,
                          result_hash=dynamic.gathered_hash([self.hashes[m] for m in members]),
                          outputs=_json(outputs))
            if self.downstream[group]:
                self.results[group] = listed
                self.hashes[group] = upstream_id(key, values["result_hash"])
        return self.planner.gathered(group, values, time.time())

    def _added(self, name: str, data: Any, out: Outcome) -> tuple[Outcome, list[Member]]:
        """The tasks a task added, validated and renamed into the run; a problem fails
        the task, saying what."""
        known = [n for n, st in self.planner.state.items() if st is S.SUCCEEDED]
        tasks, problems = added_tasks(name, data, known, self.params, self.wf.base_dir)
        if not problems:
            parent = self.tasks[name]
            tasks = [t if t.executor is not None or parent.executor is None
                     else dataclasses.replace(t, executor=parent.executor) for t in tasks]
            try:  # where they run: where it runs, unless they say otherwise
                self.executor.add_tasks(tasks)
            except KaleError as e:
                problems = [Problem(str(e))]
        if problems:
            shown = "; ".join(str(p) for p in problems[:5])
            return Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                           error=f"the tasks it added are not valid: {shown}"), []
        self._recall({d for t in tasks for d in t.upstream})
        members: list[Member] = []
        for i, task in enumerate(tasks):
            self.tasks[task.name] = task
            self._members.add(task.name)
            self._policy(task.name, task)
            self.def_hash[task.name] = task.definition_hash(self.wf.base_dir)
            self.downstream[task.name] = ()
            members.append((task.name, {
                "kind": task.kind, "def_hash": self.def_hash[task.name],
                "position": self._position,
                "spec": {"group": name, "index": i, "task": task.to_dict(for_store=True)}},
                tuple(task.upstream)))
            self._position += 1
        return out, members

    def _earlier(self, key: str, task: Task) -> TaskRecord | None:
        """The newest earlier result with this key that may stand for this task's: it
        still exists, and the user code it was made with is what is on disk now (so going
        back to older code finds the result that code made)."""
        for prev in self.cached.get(key, ()):
            if results.available(prev, task) and not (prev.code and usercode.stale(prev.code)):
                return prev
        return None

    def _reuse(self, name: str, prev: TaskRecord) -> list[Step]:
        self.def_hash.pop(name, None)
        self._member_code(name, prev.code, prev.outputs)
        self._reused_dir(name, prev.reused_from or prev.run_id)
        if self._keeps(name):  # only what tasks below need is kept
            self._remember(prev, name)
        return self.planner.reused(name, prev.run_id, {
            "result_json": prev.result_json, "result_path": prev.result_path,
            "result_hash": prev.result_hash, "cache_key": prev.cache_key,
            "reused_from": prev.reused_from or prev.run_id, "exit_code": prev.exit_code,
            "stdout": prev.stdout, "stderr": prev.stderr, "artifacts": _json(prev.artifacts),
            "code": _json(prev.code), "outputs": _json(prev.outputs),
            "started_at": None, "ended_at": time.time()})

    def _member_code(self, name: str, code: Mapping[str, str] | None,
                     outputs: Mapping[str, list[int]] | None = None) -> None:
        """The code a group's member ran, and its output files as it made them, for the
        group's own row (see ``_group_code``, ``_group_outputs``)."""
        group = self.planner.group_of.get(name)
        if group is not None and code:
            _merge_code(self._group_code.setdefault(group, {}), code)
        if group is not None and outputs:
            self._group_outputs.setdefault(group, {}).update(outputs)

    def _named_inputs(self, name: str) -> dict[str, str]:
        """The files a shell command named that are its code and inputs, as they were
        when it started. One edited while the task ran (the script, a configuration) stays
        the version it started with, so the edited one does not reuse this result; one
        that only grew meanwhile and is no code or configuration was written by the task
        (``--log=/scratch/me/ledger``): an output, left out
        (:func:`~kale.tasks.usercode.grown_output`). The files the command line writes
        (``>> log``, ``| tee f``) are never named (:func:`~kale.tasks.usercode.named_files`)."""
        named = self._named.pop(name, {})
        return {p: h for p, (h, size) in named.items()
                if usercode.file_hash(p) == h or not usercode.grown_output(p, h, size)}

    # -- the planner's steps -------------------------------------------------------------
    def _apply(self, steps: list[Step]) -> None:
        """Do what the planner decided, in its order: record its moves, answer its
        questions (their answers are done in their place), kill, time, adopt."""
        todo = steps[::-1]
        while todo:
            step = todo.pop()
            if isinstance(step, Move):
                self.changes.append(Change(self.run_id, step.name, step.new, step.reason,
                                           step.values or {}, step.attempt,
                                           added=step.added))
            elif isinstance(step, Resolve):
                if self.planner.asks(step):
                    todo.extend(reversed(self._resolve(step)))
            elif isinstance(step, Gather):
                todo.extend(reversed(self._gather(step.name)))
            elif isinstance(step, Kill):
                running = self.running.get(step.name)
                if running is not None:
                    running.cancel()
            elif isinstance(step, StartTimer):
                assert self._loop is not None
                self.timers[step.name] = self._loop.call_later(
                    step.delay, self._retry_due, step.name)
            elif isinstance(step, StopTimer):
                timer = self.timers.pop(step.name, None)
                if timer is not None:
                    timer.cancel()
            else:
                self._adopt(step)

    def _flush(self) -> None:
        """Hand the changes made so far to the group committer (checked right here)."""
        if not self.changes:
            return
        changes, self.changes = self.changes, []
        assert self._committer is not None
        self._committer.submit(changes)

    def _notify(self, changes: list[Change]) -> None:
        """Called (in the commit thread) once changes are committed."""
        for ch in changes:
            if ch.receipt is not None:
                try:
                    ch.receipt()
                except Exception:
                    log.exception("receipt failed")
        for listener in self.listeners:
            try:
                listener(changes)
            except Exception:  # a display must never stop a run
                log.exception("listener failed")

    def _store_failed_threadsafe(self, error: StoreWriteError) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._store_failed, error)

    def _store_failed(self, error: StoreWriteError) -> None:
        """The store refused a write: start nothing more (it could not be recorded), stop
        what runs, and end the run with the error. What was committed stays."""
        if self._finished or self._failure is not None:
            return
        self._failure = error
        self.planner.halt()
        for t in self.running.values():
            t.cancel()
        self._quiet.set()

    # -- dispatch ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand what happened to the committer, then start ready tasks in the free slots."""
        if self._failure is not None:  # the store failed: nothing more starts
            return
        extra = self.executor.ahead()
        starts = self.planner.take(self.executor.slots, self.executor.queued, self.CHUNK,
                                   extra, self._queues_ahead if extra else None)
        contexts = [self._prepare(start) for start in starts]
        self._flush()
        assert self._loop is not None
        for start, ctx in zip(starts, contexts, strict=True):
            self.running[start.name] = self._loop.create_task(
                self._execute(start.name, start.attempt, ctx))
        if starts:
            self._ahead(starts)
        if len(starts) == self.CHUNK:  # more may be ready: taken once these are on their way
            self._schedule_dispatch()
        if self.planner.idle:
            self._quiet.set()

    def _queues_ahead(self, name: str) -> bool:
        return self.executor.queues_ahead(self.tasks[name])

    #: tasks started per dispatch: thousands ready at once (a fan-out on an engine with
    #: unbounded slots) reach their executor chunk by chunk, so the first ones run while
    #: the next are prepared (one chunk of 1,000 kept Parsl waiting 0.17 s)
    CHUNK = 128

    AHEAD = 8  # ready tasks whose directories are made ahead

    def _ahead(self, starts: list[Start]) -> None:
        """Have the directories of the tasks likely to start next made ahead: the next
        ready ones, and those that wait for nothing but a task just started."""
        state, upstream = self.planner.state, self.upstream
        soon = [n for n in islice(self.planner.ready, self.AHEAD) if state[n] is S.READY]
        for start in starts:
            soon += [d for d in self.downstream[start.name]
                     if len(upstream[d]) == 1 and state.get(d) is S.PENDING
                     and d in self.selected]
        ask = self._workdirs.ask
        for name in soon:  # most were asked for at an earlier dispatch
            ask(name)

    def _prepare(self, start: Start) -> TaskContext:
        name, attempt, move = start.name, start.attempt, start.move
        ctx = self._context(name, attempt, create=True)
        task = self.tasks[name]
        if task.kind == "shell":  # the files its command names, as they are when it starts
            self._named[name] = usercode.snapshot(task.target)
        now = time.time() if move.new is S.RUNNING else None  # else once a worker has it
        self.changes.append(Change(self.run_id, name, move.new, move.reason, {
            "attempts": attempt, "started_at": now, "ended_at": None,
            "stdout": ctx.text("stdout_path"), "stderr": ctx.text("stderr_path"),
            "cache_key": self._inputs.get(name, ({}, ""))[1], "exit_code": None,
            "error": None, "traceback": None},
            {"new": True, "number": attempt, "state": move.new.value, "started_at": now}))
        self.contexts[name] = ctx
        return ctx

    def _context(self, name: str, attempt: int, create: bool = False) -> TaskContext:
        task = self.tasks[name]
        # As text: a context's paths become Paths only where they are used as such.
        run_dir, logs = self._texts
        workdir = f"{run_dir}/{name}"
        stdout, stderr = f"{logs}/{name}.{attempt}.out", f"{logs}/{name}.{attempt}.err"
        inputs = self._inputs[name][0] if name in self._inputs else {}
        env = {"KALE_RUN_ID": self.run_id, "KALE_TASK": name, "KALE_ATTEMPT": str(attempt),
               "KALE_RUN_DIR": run_dir, RECORD_ENV: f"{workdir}/{RECORDS_FILE}", **task.env}
        ctx = TaskContext(
            run_id=self.run_id, task=task, attempt=attempt, workdir=workdir,
            stdout_path=stdout, stderr_path=stderr,
            base_dir=self.wf.base_dir, inputs=inputs,
            upstream={d: self.results.get(d) for d in self.upstream[name]},
            params=self._member_params.get(group_of(name) or "", self.params)
            if name in self._member_keys else self.params, env=env)
        if create and not self.executor.makes_workdir(task) \
                and not self._workdirs.take(name):  # else made where it runs, or ahead
            ctx.make_workdir()
        return ctx

    async def _execute(self, name: str, attempt: int, ctx: TaskContext, *,
                       adopt: bool = False, adopting: bool = False) -> None:
        timeout = ctx.task.timeout
        if timeout and adopting:  # the walltime started with the attempt, not now
            timeout = max(0.001, timeout - (time.time() - self._started_at.get(name, 0.0)))
        cut: Ending | None = None
        work = self.executor.adopt(ctx, adopt) if adopting else self.executor.execute(ctx)
        try:
            if timeout:
                outcome = await self._timed(name, work, timeout,
                                            queued=not (adopting and adopt))
            else:
                outcome = await work
        except TimeoutError:
            cut, outcome = Ending.TIMED_OUT, Outcome(ok=False, artifacts=_left_behind(ctx))
        except asyncio.CancelledError:
            cut, outcome = Ending.CANCELLED, Outcome(ok=False, artifacts=_left_behind(ctx))
        except Interrupted as e:
            cut, outcome = Ending.INTERRUPTED, Outcome(ok=False, error=str(e))
        except KaleError as e:  # what the settings name cannot work: said, no traceback
            outcome = Outcome(ok=False, error=f"Kale could not run the task: {e}")
        except Exception as e:
            outcome = Outcome(ok=False, error=f"Kale could not run the task: {e!r}",
                              traceback=traceback.format_exc())
        self._post(self._finish, _Done(name, attempt, outcome, cut, ctx.text("workdir")))

    async def _timed(self, name: str, work: Awaitable[Outcome], timeout: float,
                     queued: bool) -> Outcome:
        """``work`` with a ``timeout`` that counts from the attempt's start: for an executor
        that queues tasks, from the moment it says the attempt started (time in a batch
        queue, or waiting for a Dask or Parsl worker, is not the task's own)."""
        attempt = asyncio.ensure_future(work)
        if queued and self.executor.queued:
            started = self._start_events[name] = asyncio.Event()
            waiter = asyncio.ensure_future(started.wait())
            try:
                await asyncio.wait({attempt, waiter}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                raise
            finally:
                waiter.cancel()
                self._start_events.pop(name, None)
        return await asyncio.wait_for(attempt, timeout)

    def _retry_due(self, name: str) -> None:
        """A retry's backoff is over."""
        self._post(self._timer_fired, name)

    def _post(self, fn: Callable[[Any], None], item: Any) -> None:
        """An attempt ended (or a retry timer fired): record it now, and dispatch once for
        everything that ends in the same turn of the event loop (at once when nothing
        else is under way)."""
        if self._detached:
            return
        try:
            fn(item)
        except BaseException as e:  # a bug in the engine: stop the run loudly
            self._failure = e
            self._quiet.set()
            return
        if not self.running and not self._dispatch_soon:
            # nothing else under way, so nothing else can end in this turn: no batch to
            # wait for (a chain's next hop starts one turn of the loop sooner)
            self._dispatch_now()
        else:
            self._schedule_dispatch()

    def _schedule_dispatch(self) -> None:
        if not self._dispatch_soon:
            self._dispatch_soon = True
            assert self._loop is not None
            self._loop.call_soon(self._dispatch_now)

    def _dispatch_now(self) -> None:
        self._dispatch_soon = False
        try:
            self._dispatch()
        except BaseException as e:
            self._failure = e
            self._quiet.set()

    # -- completion ----------------------------------------------------------------------
    def _timer_fired(self, name: str) -> None:
        self.timers.pop(name, None)
        self._apply(self.planner.timer_fired(name))

    def _finish(self, item: _Done) -> None:
        self.running.pop(item.name, None)
        self.contexts.pop(item.name, None)
        receipt = item.outcome.receipt
        mark = len(self.changes)
        self._apply(self.planner.ended(self._judge(item)))
        if receipt is not None:  # a worker's report: acknowledged once this is durable
            if len(self.changes) > mark:
                self.changes[-1].receipt = receipt
            else:
                receipt()

    def _judge(self, item: _Done) -> AttemptEnd:
        """What the attempt's end says, with the columns to record: its result stored (a
        success), or why it did not succeed."""
        name, out, now = item.name, item.outcome, time.time()
        row: dict[str, Any] = {"number": item.attempt, "ended_at": now}
        if item.cut is Ending.CANCELLED:
            return AttemptEnd(name, item.attempt, Ending.CANCELLED, values={
                "ended_at": now, "artifacts": _json(out.artifacts)}, row=row)
        if item.cut is Ending.INTERRUPTED:
            row["error"] = out.error
            return AttemptEnd(name, item.attempt, Ending.INTERRUPTED, out.error or "",
                              {"ended_at": now}, row)
        workdir = item.workdir or f"{self._texts[0]}/{name}"  # (a Path only if needed)
        if item.cut is None and out.ok:
            out = self._collect(name, out, workdir)
            adds = self._adds.pop(name, None)
            if out.ok and adds is not None:
                out, members = self._added(name, adds, out)
            if out.ok:
                try:
                    enc = results.encode(out.result, workdir,
                                         results.output_files(self.tasks[name], out.result))
                except Exception as e:
                    out = Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                                  error=f"cannot store the result: {type(e).__name__}: {e}")
                else:
                    end = self._succeeded(item, out, enc, row, now)
                    if adds is not None and members:
                        end.adds = members
                        _merge_code(self._group_code.setdefault(name, {}),
                                    _unjson(end.values["code"]))
                        self._parents[name] = (end.values.get("cache_key") or "",
                                               enc["result_hash"])
                    return end
        return self._failed(item, out, row, now)

    def _succeeded(self, item: _Done, out: Outcome, enc: dict[str, Any],
                   row: dict[str, Any], now: float) -> AttemptEnd:
        name = item.name
        key = self._inputs.pop(name)[1]
        self.def_hash.pop(name, None)
        code = {**(out.code or {}), **self._named_inputs(name)}
        self._member_code(name, code, enc["outputs"] and json.loads(enc["outputs"]))
        if self._keeps(name):  # only what tasks below need is kept
            self.results[name] = out.result
            self.hashes[name] = upstream_id(key, enc["result_hash"], code)
        row["exit_code"] = out.exit_code
        return AttemptEnd(name, item.attempt, Ending.SUCCEEDED, values={
            "ended_at": now, "exit_code": out.exit_code, **enc,
            "artifacts": _json(out.artifacts), "details": _json(out.details),
            "code": _json(code)}, row=row)

    def _failed(self, item: _Done, out: Outcome, row: dict[str, Any],
                now: float) -> AttemptEnd:
        values: dict[str, Any]
        if item.cut is Ending.TIMED_OUT:
            ending = Ending.TIMED_OUT
            error = f"timed out after {self.tasks[item.name].timeout:g} s"
            values = {"error": error, "exit_code": None, "artifacts": _json(out.artifacts)}
        elif out.details.get("timed_out"):  # a batch job's walltime
            ending, error = Ending.TIMED_OUT, out.error or "reached its walltime"
            values = {"error": error, "exit_code": None, "details": _json(out.details)}
        else:
            ending = Ending.LOST_WORKER if "lost_worker" in out.details else \
                Ending.REJECTED if out.details.get("rejected") else Ending.FAILED
            error = out.error or "failed"
            values = {"error": error, "exit_code": out.exit_code, "traceback": out.traceback,
                      "details": _json(out.details), "artifacts": _json(out.artifacts)}
        row.update(exit_code=values["exit_code"], error=error)
        values["ended_at"] = now
        return AttemptEnd(item.name, item.attempt, ending, error, values, row)

    def _collect(self, name: str, out: Outcome, workdir: str) -> Outcome:
        """Check declared outputs and build the task's result. Problems with what the
        task left behind fail the task, never the engine."""
        try:
            return self._collect_checked(name, out, workdir)
        except Exception as e:
            return Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                           error=f"cannot read the task's results: {type(e).__name__}: {e}",
                           traceback=traceback.format_exc())

    def _collect_checked(self, name: str, out: Outcome, text: str) -> Outcome:
        task = self.tasks[name]
        if out.elsewhere:  # checked where it ran (another site)
            return Outcome(ok=True, result=out.result, exit_code=out.exit_code,
                           artifacts=out.artifacts, code=out.code, details=out.details)
        found: dict[str, str] = {}
        for pattern in task.outputs:
            workdir = Path(text)
            matches = sorted(workdir.glob(pattern)) if any(c in pattern for c in "*?[") \
                else [workdir / pattern]
            if not matches or not all(m.exists() for m in matches):
                return Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                               error=f"declared output {pattern!r} was not created "
                                     f"in {workdir}")
            found[pattern] = str(matches[0]) if len(matches) == 1 else \
                ",".join(str(m) for m in matches)
        if out.records is not None:
            records = out.records
        elif self.executor.remote:  # never unpickled here (the worker reads them)
            records = {}
        else:
            records = read_records(f"{text}/{RECORDS_FILE}", self.wf.base_dir)
        if ADDED in records:  # kale.add_tasks: tasks for the run, not a result
            records = dict(records)
            self._adds[name] = records.pop(ADDED)
        if task.kind == "python" and out.result is not None:
            result = out.result
        else:
            result = {**found, **records} or None
        return Outcome(ok=True, result=result, exit_code=out.exit_code,
                       artifacts=out.artifacts, code=out.code, details=out.details)

    # -- cancel and end ------------------------------------------------------------------
    def _cancel(self, reason: str) -> None:
        if self.planner.cancelled or self._finished:
            return
        self._apply(self.planner.cancel(reason))
        self._dispatch()

    def _abandon(self, error: BaseException) -> None:
        """The loop itself failed (or was interrupted): stop the running tasks and say so in
        the store. Unfinished tasks stay as they are, so `kale resume` can finish them."""
        for t in self.running.values():
            t.cancel()
        with contextlib.suppress(Exception):
            self._flush()
            assert self._committer is not None
            self._committer.sync()
        if isinstance(error, StoreWriteError):
            # Left RUNNING on purpose (a write now might half succeed): the next manager
            # resumes it, and `kale status` tells that nothing drives it.
            return
        with contextlib.suppress(Exception):
            self.store.finish_run(self.run_id, RunState.FAILED,
                                  f"Kale stopped: {type(error).__name__}: {error}; "
                                  f"`kale resume {self.run_id}` finishes the run")


def _left_behind(ctx: TaskContext) -> dict[str, str]:
    """What an attempt that ended without an outcome (timeout, cancel) left to look at:
    a notebook task's notebook, saved as far as it ran."""
    if ctx.task.kind != "notebook":
        return {}
    from kale.tasks.notebook import left_behind

    try:
        return left_behind(ctx)
    except Exception:  # a record of what is left must never stop the run
        return {}


def _merge_code(into: dict[str, str], code: Mapping[str, str]) -> None:
    """Add a member's code manifest to its group's: a file two members ran in different
    versions (edited between them) is recorded as no version (never current), so the
    group is not reused whole for either."""
    for path, digest in code.items():
        into[path] = digest if into.get(path, digest) == digest else ""


def _unjson(text: str | None) -> Any:
    return json.loads(text) if text else {}


def _json(value: Any) -> str | None:
    return _ENCODE(value) if value else None


_ENCODE = json.JSONEncoder(default=str).encode  # (json.dumps(default=) makes one per call)

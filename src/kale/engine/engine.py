"""The engine drives one run: it decides what is ready, reuses earlier results, dispatches
tasks to an executor, applies retries and timeouts, propagates failures, and records every
transition in the store.

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
import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kale.config import user_name
from kale.engine.keys import cache_key, upstream_id
from kale.errors import StoreWriteError
from kale.executors.base import Executor, Interrupted
from kale.model import dag
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
_FAILED = (S.FAILED, S.TIMEOUT, S.CANCELLED, S.SKIPPED)


@dataclass
class _Done:
    name: str
    attempt: int
    how: str  # "done" | "timeout" | "cancelled" | "retry" | "interrupted"
    outcome: Outcome | None = None


Listener = Callable[[list[Change]], None]


class Engine:
    def __init__(self, store: Store, run: RunRecord, wf: Workflow, executor: Executor, *,
                 force: bool = False, listeners: list[Listener] | None = None,
                 reuse_users: Sequence[str | None] | None = None) -> None:
        self.store, self.run_rec, self.wf, self.executor = store, run, wf, executor
        self.run_id = run.id
        self.force = force
        self.listeners = list(listeners or [])
        self.run_dir = Path(run.run_dir)
        self.params = dict(run.params)
        self.selected: set[str] = set(run.options.get("selected") or wf.tasks)
        #: whose earlier results this run may reuse (None stands for runs made without a
        #: manager): its own user's only
        self.reuse_users: list[str | None] = list(
            reuse_users if reuse_users is not None else [run.submitted_by]
            if run.submitted_by else [None, user_name()])  # a local run: the home's owner
        # Tuples, and one shared empty one: a run may hold 100,000 of each.
        none: tuple[str, ...] = ()
        self.upstream: dict[str, tuple[str, ...]] = {
            n: tuple(t.upstream) or none for n, t in wf.tasks.items()}
        self.downstream: dict[str, tuple[str, ...]] = {
            n: tuple(ds) or none for n, ds in dag.downstream_map(self.upstream).items()}
        #: tasks outside the selection whose results selected tasks need
        self.needed: set[str] = (dag.ancestors(self.upstream, self.selected) - self.selected
                                 if len(self.selected) < len(wf.tasks) else set())
        self.state: dict[str, TaskState] = {}
        #: tasks per state, kept as states change (every state is a key, so other threads
        #: may copy it while the engine runs)
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self.attempts: dict[str, int] = {}
        self.def_hash: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        self.hashes: dict[str, str] = {}
        self.waiting_on: dict[str, int] = {}
        self.ready: deque[str] = deque()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.contexts: dict[str, TaskContext] = {}  # running attempts
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.changes: list[Change] = []
        self.cached: dict[str, list[TaskRecord]] = {}
        self._inputs: dict[str, tuple[dict[str, Any], str]] = {}
        self._named: dict[str, dict[str, str]] = {}  # files shell commands name (their code)
        self.cancelled = False
        self._quiet = asyncio.Event()  # set when nothing runs, waits or is ready
        self._failure: BaseException | None = None
        self._dispatch_soon = False
        self._finished = False
        self._cancel_reasons: dict[str, str] = {}  # tasks cancelled one by one
        self._started_at: dict[str, float] = {}  # attempts adopted after a restart
        self._poller: asyncio.TimerHandle | None = None
        self.interrupted: dict[str, int] = {}  # attempts cut short by a dead driver
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committer: GroupCommitter | None = None
        self._logs = self.run_dir / "logs"
        self.loaded = threading.Event()  # set once the store's picture is loaded
        self._detached = False

    # -- public --------------------------------------------------------------------------
    async def run(self) -> RunState:
        """Drive the run to its end and return its final state."""
        self._loop = asyncio.get_running_loop()
        self._quiet = asyncio.Event()
        self.executor.on_start = self._started
        self.executor.on_wait = self._waiting
        self._logs.mkdir(parents=True, exist_ok=True)
        self.store.claim_run(self.run_id)
        self._committer = GroupCommitter(self.store, on_commit=self._notify,
                                         on_error=self._store_failed_threadsafe)
        # --force runs the selected tasks again; tasks outside the selection still reuse
        self.cached = self.store.cached(self.wf.name, self.reuse_users)
        from kale.tasks.registry import runner_kind

        kinds = Counter[str](runner_kind(self.wf.tasks[n]) for n in self.selected)
        try:
            await self.executor.start(kinds)
            self._load()
            self.loaded.set()
            if self.cancelled:
                self.cancelled = False
                self._cancel(self._cancel_reason)
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
            await self.executor.close()
            try:
                self._committer.close()
            except StoreWriteError:
                if self._failure is None:
                    raise
        final = self._final_state()
        self.store.finish_run(self.run_id, final, self._summary())
        return final

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
            self.cancelled = True
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
        st = self.state.get(name)
        if st is None or st.terminal:
            return
        if name in self.running:
            self._cancel_reasons[name] = reason
            self.running[name].cancel()
            return
        timer = self.timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._change(name, S.CANCELLED, reason, {"ended_at": time.time()})
        self._skip_descendants(name)

    def _control(self, name: str, action: str, reason: str = "") -> None:
        ctx = self.contexts.get(name)
        st = self.state.get(name)
        if action in ("continue", "reject"):
            # The step's runner ends the attempt; its outcome moves the task on.
            if ctx is None or st is not S.WAITING or not self.executor.control(
                    ctx, action, reason):
                log.info("cannot %s %s: it is %s", action, name, st)
            return
        want = {"suspend": (S.RUNNING, S.SUSPENDED), "resume": (S.SUSPENDED, S.RUNNING)}
        if action not in want:
            raise ValueError(f"unknown action {action!r}")
        before, after = want[action]
        if ctx is None or st is not before:
            log.info("cannot %s %s: it is %s", action, name, st)
            return
        if self.executor.control(ctx, action):
            self._change(name, after, f"{action}ed")

    def _started(self, name: str, attempt: int, worker: str) -> None:
        """A queued attempt reached a worker."""
        if self.state.get(name) is not S.SUBMITTED or self.attempts.get(name) != attempt:
            return
        now = time.time()
        self._change(name, S.RUNNING, f"attempt {attempt} on worker {worker}",
                     {"started_at": now},
                     {"number": attempt, "state": "RUNNING", "started_at": now,
                      "worker": worker})
        self._schedule_dispatch()

    def _waiting(self, name: str, attempt: int, info: dict[str, Any]) -> None:
        """An interactive step waits for a person."""
        if self.state.get(name) not in (S.RUNNING, S.SUBMITTED) \
                or self.attempts.get(name) != attempt:
            return
        if self.state[name] is S.SUBMITTED:
            self._started(name, attempt, str(info.get("worker", "")))
        where = info.get("notebook", "")
        self._change(name, S.WAITING, f"waiting for a person: open {where}; then "
                     f"`kale continue {self.run_id} {name}` or `kale reject ...`")
        self._schedule_dispatch()  # which also commits the change

    # -- setup ---------------------------------------------------------------------------
    def _load(self) -> None:
        """Bring the in-memory picture in line with the store (new or resumed run)."""
        if self.run_rec.state is RunState.CANCELLED:
            self._reopen_cancelled()
        for rec in self.store.tasks(self.run_id):
            self.state[rec.name] = rec.state
            self.counts[rec.state] += 1
            self.attempts[rec.name] = rec.attempts
            if rec.attempts and not rec.state.terminal:
                self.interrupted[rec.name] = sum(
                    1 for a in self.store.attempts(self.run_id, rec.name)
                    if a["state"] == "INTERRUPTED")
            if not rec.state.terminal:
                self.def_hash[rec.name] = rec.def_hash or ""
            if rec.started_at is not None and not rec.state.terminal:
                self._started_at[rec.name] = rec.started_at
            if rec.state is S.SUCCEEDED and self.downstream[rec.name]:
                self.results[rec.name] = results.decode(rec, self.wf.base_dir,
                                                         sealed=self.executor.remote)
                self.hashes[rec.name] = upstream_id(rec.cache_key, rec.result_hash)
        if any(self.attempts.values()) and not self.executor.remote:
            # A resumed run: its previous driver died. Stop whatever it left running (it
            # may have started a task moments before it could record that).
            procs.kill_leftovers(self.run_id)
        adopt: list[str] = []
        for name in self.wf.order():
            st = self.state[name]
            if st.terminal:
                continue
            if st in (S.RUNNING, S.SUBMITTED, S.SUSPENDED) and self.executor.remote:
                adopt.append(name)  # its worker may still be running it
                continue
            if st in (S.RUNNING, S.SUBMITTED, S.SUSPENDED):
                self.interrupted[name] = self.interrupted.get(name, 0) + 1
                self._change(name, S.READY, "requeued: the process running it stopped",
                             attempt={"number": self.attempts[name], "state": "INTERRUPTED",
                                      "ended_at": time.time()})
            elif st is S.RETRYING:
                self._change(name, S.READY, "requeued after a restart")
            if self.state[name] is S.READY:
                self._change(name, S.PENDING, "resumed")
        order = self.wf.order()
        for name in order:
            self.waiting_on[name] = sum(
                1 for d in self.upstream[name] if self.state[d] is not S.SUCCEEDED)
        for name in order:
            if self.state[name] is S.PENDING:
                if name not in self.selected:
                    self._unselected(name)
                elif any(self.state[d] in _FAILED for d in self.upstream[name]):
                    self._skip_below_failed(name)
                elif self.waiting_on[name] == 0:
                    self._became_ready(name)
        for name in adopt:
            self._adopt(name)

    def _reopen_cancelled(self) -> None:
        """Resuming a cancelled run (Ctrl-C, `kale cancel`): what it cancelled, and what
        was skipped below that, runs after all; what succeeded stays."""
        reopen = [Change(self.run_id, rec.name, S.PENDING, "resumed after the run was "
                         "cancelled", {"ended_at": None, "error": None})
                  for rec in self.store.tasks(self.run_id)
                  if rec.name in self.selected and rec.state in (S.CANCELLED, S.SKIPPED)]
        if reopen:
            self.store.apply(reopen)

    def _adopt(self, name: str) -> None:
        """Wait for the worker that runs this attempt to report it (after a restart)."""
        task = self.wf.tasks[name]
        try:
            inputs = resolve(task.parameters, self.results, self.params)
        except MissingResult:
            inputs = {}
        key = cache_key(task, self.def_hash[name], self.upstream[name], self.hashes, self.params)
        self._inputs[name] = (inputs, key)
        attempt = self.attempts[name]
        ctx = self._context(name, attempt)
        started = self.state[name] is not S.SUBMITTED
        assert self._loop is not None
        self.contexts[name] = ctx
        self.running[name] = self._loop.create_task(
            self._execute(name, attempt, ctx, adopt=started, adopting=True))

    def _unselected(self, name: str) -> None:
        """A task outside the selection: reuse its result if a selected task needs it (or
        the run reruns failed tasks, which shows the whole workflow), else skip it. A needed
        task without a result made from its current inputs and code runs after all: a
        selected task never gets an upstream result computed from other inputs."""
        task = self.wf.tasks[name]
        wanted = name in self.needed
        if not wanted and not self.run_rec.options.get("rerun_of"):
            self._change(name, S.SKIPPED, "not selected")
            return
        prev = None
        if all(d in self.hashes for d in self.upstream[name]):
            key = cache_key(task, self.def_hash[name], self.upstream[name], self.hashes,
                            self.params)
            prev = self._earlier(key, task)
        if prev is not None:
            self._reuse(name, prev, f"not selected; reused result of run {prev.run_id}")
        elif wanted:
            below = sorted(d for d in self.downstream[name]
                           if d in self.selected or d in self.needed)
            self.selected.add(name)
            self._became_ready(name, f"not selected, but {', '.join(below)} needs it and no "
                               "earlier result of it matches its current inputs and code")
        else:
            self._change(name, S.SKIPPED, "not selected")

    def _earlier(self, key: str, task: Task) -> TaskRecord | None:
        """The newest earlier result with this key that may stand for this task's: it
        still exists, and the user code it was made with is what is on disk now (so going
        back to older code finds the result that code made)."""
        for prev in self.cached.get(key, ()):
            if results.available(prev, task) and not (prev.code and usercode.stale(prev.code)):
                return prev
        return None

    def _named_inputs(self, name: str) -> dict[str, str]:
        """The files a shell command named that it read, as they were when it started: a
        file the task itself changed (``>> /scratch/me/log``) is its output, not its code."""
        named = self._named.pop(name, {})
        return {p: h for p, h in named.items() if usercode.file_hash(p) == h}

    def _output_files(self, name: str, result: Any) -> dict[str, str]:
        """The declared output files in a shell or notebook task's result (their content,
        not their path, goes into the result's hash)."""
        task = self.wf.tasks[name]
        if task.kind == "python" or not isinstance(result, dict):
            return {}
        return {o: result[o] for o in task.outputs if isinstance(result.get(o), str)}

    # -- transitions ---------------------------------------------------------------------
    def _change(self, name: str, new: TaskState, reason: str = "",
                values: dict[str, Any] | None = None, attempt: dict[str, Any] | None = None
                ) -> None:
        old = self.state.get(name)
        if old is not None:
            self.counts[old] -= 1
        self.counts[new] += 1
        self.state[name] = new
        self.changes.append(Change(self.run_id, name, new, reason, values or {}, attempt))

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

    def _became_ready(self, name: str, why: str = "") -> None:
        """All upstream tasks succeeded: resolve inputs, reuse a result, or queue it."""
        task = self.wf.tasks[name]
        if name not in self.selected:
            self._unselected(name)
            return
        if self.cancelled:
            self._change(name, S.CANCELLED, "run cancelled")
            return
        try:
            inputs = resolve(task.parameters, self.results, self.params)
        except MissingResult as e:
            self._change(name, S.READY, "upstream done")
            self._change(name, S.FAILED, str(e), {"error": str(e), "ended_at": time.time()})
            self._skip_descendants(name)
            return
        key = cache_key(task, self.def_hash[name], self.upstream[name], self.hashes, self.params)
        prev = None if self.force else self._earlier(key, task)
        if prev is not None:
            self._change(name, S.READY, "upstream done")
            self._reuse(name, prev, f"unchanged; reused result of run {prev.run_id}")
            return
        self._inputs[name] = (inputs, key)
        self._change(name, S.READY,
                     why or ("upstream done" if self.upstream[name] else "no upstream"))
        self.ready.append(name)

    def _reuse(self, name: str, prev: Any, reason: str) -> None:
        self.def_hash.pop(name, None)
        if self.downstream[name]:  # only what tasks below need is kept
            self.results[name] = results.decode(prev, self.wf.base_dir,
                                                sealed=self.executor.remote)
            self.hashes[name] = upstream_id(prev.cache_key, prev.result_hash)
        self._change(name, S.SUCCEEDED, reason, {
            "result_json": prev.result_json, "result_path": prev.result_path,
            "result_hash": prev.result_hash, "cache_key": prev.cache_key,
            "reused_from": prev.reused_from or prev.run_id, "exit_code": prev.exit_code,
            "stdout": prev.stdout, "stderr": prev.stderr, "artifacts": _json(prev.artifacts),
            "code": _json(prev.code),
            "started_at": None, "ended_at": time.time()})
        self._upstream_done(name)

    def _upstream_done(self, name: str) -> None:
        for d in self.downstream[name]:
            if self.state[d] is S.PENDING:
                self.waiting_on[d] -= 1
                if self.waiting_on[d] == 0:
                    self._became_ready(d)

    def _skip_descendants(self, name: str) -> None:
        for d in self.downstream[name]:
            if self.state[d] is S.PENDING:
                self._change(d, S.SKIPPED, f"upstream {name!r} {self.state[name].value.lower()}")
                self._skip_descendants(d)

    def _skip_below_failed(self, name: str) -> None:
        bad = next(d for d in self.upstream[name] if self.state[d] in _FAILED)
        self._change(name, S.SKIPPED, f"upstream {bad!r} {self.state[bad].value.lower()}")
        self._skip_descendants(name)

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
        self.ready.clear()
        for t in self.running.values():
            t.cancel()
        self._quiet.set()

    # -- dispatch ------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand what happened to the committer, then start ready tasks in the free slots."""
        if self._failure is not None:  # the store failed: nothing more starts
            return
        starting: list[tuple[str, int, TaskContext]] = []
        while self.ready and len(self.running) + len(starting) < self.executor.slots:
            name = self.ready.popleft()
            if self.state[name] is not S.READY:
                continue
            starting.append((name, *self._prepare(name)))
        self._flush()
        for name, attempt, ctx in starting:
            assert self._loop is not None
            self.running[name] = self._loop.create_task(self._execute(name, attempt, ctx))
        if not (self.running or self.timers or self.ready):
            self._quiet.set()

    def _prepare(self, name: str) -> tuple[int, TaskContext]:
        attempt = self.attempts.get(name, 0) + 1
        self.attempts[name] = attempt
        ctx = self._context(name, attempt, create=True)
        task = self.wf.tasks[name]
        if task.kind == "shell":  # the files its command names, as they are when it starts
            self._named[name] = usercode.named_files(task.target)
        if self.executor.queued:  # RUNNING once a worker has it (see _started)
            state, reason, now = S.SUBMITTED, f"attempt {attempt} queued", None
        else:
            state, reason, now = S.RUNNING, f"attempt {attempt}", time.time()
        self._change(name, state, reason, {
            "attempts": attempt, "started_at": now, "ended_at": None,
            "stdout": str(ctx.stdout_path), "stderr": str(ctx.stderr_path),
            "cache_key": self._inputs.get(name, ({}, ""))[1], "exit_code": None,
            "error": None, "traceback": None},
            {"new": True, "number": attempt, "state": state.value, "started_at": now})
        self.contexts[name] = ctx
        return attempt, ctx

    def _context(self, name: str, attempt: int, create: bool = False) -> TaskContext:
        task = self.wf.tasks[name]
        workdir = self.run_dir / name
        records = workdir / RECORDS_FILE
        logs = f"{self._logs}/{name}.{attempt}"
        inputs = self._inputs[name][0] if name in self._inputs else {}
        env = {"KALE_RUN_ID": self.run_id, "KALE_TASK": name, "KALE_ATTEMPT": str(attempt),
               "KALE_RUN_DIR": str(self.run_dir), RECORD_ENV: str(records), **task.env}
        ctx = TaskContext(
            run_id=self.run_id, task=task, attempt=attempt, workdir=workdir,
            stdout_path=Path(logs + ".out"), stderr_path=Path(logs + ".err"),
            base_dir=self.wf.base_dir, inputs=inputs,
            upstream={d: self.results.get(d) for d in self.upstream[name]},
            params=self.params, env=env)
        if create and not self.executor.remote:  # remote: the worker makes it
            ctx.make_workdir()
        return ctx

    async def _execute(self, name: str, attempt: int, ctx: TaskContext, *,
                       adopt: bool = False, adopting: bool = False) -> None:
        timeout = ctx.task.timeout
        if timeout and adopting:  # the walltime started with the attempt, not now
            timeout = max(0.001, timeout - (time.time() - self._started_at.get(name, 0.0)))
        how, outcome = "done", None
        work = self.executor.adopt(ctx, adopt) if adopting else self.executor.execute(ctx)
        try:
            if timeout:
                outcome = await asyncio.wait_for(work, timeout)
            else:
                outcome = await work
        except TimeoutError:
            how, outcome = "timeout", Outcome(ok=False, artifacts=_left_behind(ctx))
        except asyncio.CancelledError:
            how, outcome = "cancelled", Outcome(ok=False, artifacts=_left_behind(ctx))
        except Interrupted as e:
            how, outcome = "interrupted", Outcome(ok=False, error=str(e))
        except Exception as e:
            outcome = Outcome(ok=False, error=f"Kale could not run the task: {e!r}",
                              traceback=traceback.format_exc())
        self._post(_Done(name, attempt, how, outcome))

    def _post(self, item: _Done) -> None:
        """An attempt ended (or a retry timer fired): record it now, and dispatch once for
        everything that ends in the same turn of the event loop."""
        if self._detached:
            return
        try:
            self._finish(item)
        except BaseException as e:  # a bug in the engine: stop the run loudly
            self._failure = e
            self._quiet.set()
            return
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
    def _finish(self, item: _Done) -> None:
        name = item.name
        if item.how == "retry":
            self.timers.pop(name, None)
            if self.state[name] is S.RETRYING:
                self._change(name, S.READY, "retrying")
                self.ready.append(name)
            return
        self.running.pop(name, None)
        self.contexts.pop(name, None)
        receipt = item.outcome.receipt if item.outcome is not None else None
        mark = len(self.changes)
        self._end(item)
        if receipt is not None:  # a worker's report: acknowledged once this is durable
            if len(self.changes) > mark:
                self.changes[-1].receipt = receipt
            else:
                receipt()

    def _end(self, item: _Done) -> None:
        name = item.name
        now = time.time()
        task = self.wf.tasks[name]
        attempt_row: dict[str, Any] = {"number": item.attempt, "ended_at": now}
        out = item.outcome
        if item.how == "cancelled":
            attempt_row["state"] = "CANCELLED"
            reason = self._cancel_reasons.pop(name, None)
            self._change(name, S.CANCELLED, reason or self._cancel_reason,
                         {"ended_at": now, "artifacts": _json(out.artifacts if out else None)},
                         attempt_row)
            if reason is not None:  # this task alone was cancelled
                self._skip_descendants(name)
            return
        if item.how == "interrupted":
            assert out is not None
            self.interrupted[name] = self.interrupted.get(name, 0) + 1
            attempt_row.update(state="INTERRUPTED", error=out.error)
            if self.cancelled:
                self._change(name, S.CANCELLED, self._cancel_reason, {"ended_at": now},
                             attempt_row)
                return
            self._change(name, S.READY, f"requeued: {out.error}", {}, attempt_row)
            self.ready.append(name)
            return
        enc: dict[str, Any] = {}
        if item.how == "done" and out is not None and out.ok:
            out = self._collect(name, out)
            if out.ok:
                try:
                    enc = results.encode(out.result, self.run_dir / name,
                                         self._output_files(name, out.result))
                except Exception as e:
                    out = Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                                  error=f"cannot store the result: {type(e).__name__}: {e}")
        if item.how == "done" and out is not None and out.ok:
            key = self._inputs.pop(name)[1]
            self.def_hash.pop(name, None)
            if self.downstream[name]:  # only what tasks below need is kept
                self.results[name] = out.result
                self.hashes[name] = upstream_id(key, enc["result_hash"])
            if self.state[name] is S.SUBMITTED:  # its worker reported it after a restart
                self._change(name, S.RUNNING, "started (reported by its worker)")
            attempt_row.update(state="SUCCEEDED", exit_code=out.exit_code)
            self._change(name, S.SUCCEEDED, "", {
                "ended_at": now, "exit_code": out.exit_code, **enc,
                "artifacts": _json(out.artifacts),
                "code": _json({**(out.code or {}), **self._named_inputs(name)})},
                attempt_row)
            self._upstream_done(name)
            return
        if item.how == "timeout":
            bad, error = S.TIMEOUT, f"timed out after {task.timeout:g} s"
            values: dict[str, Any] = {"error": error, "exit_code": None,
                                      "artifacts": _json(out.artifacts if out else None)}
        elif out is not None and out.details.get("timed_out"):  # a batch job's walltime
            bad, error = S.TIMEOUT, out.error or "reached its walltime"
            values = {"error": error, "exit_code": None, "details": _json(out.details)}
        else:
            assert out is not None
            bad, error = S.FAILED, out.error or "failed"
            values = {"error": error, "exit_code": out.exit_code, "traceback": out.traceback,
                      "details": _json(out.details), "artifacts": _json(out.artifacts)}
        lost = out is not None and "lost_worker" in out.details
        attempt_row.update(state="LOST" if lost else bad.value, exit_code=values["exit_code"],
                           error=error)
        values["ended_at"] = now
        rejected = out is not None and bool(out.details.get("rejected"))
        if item.attempt - self.interrupted.get(name, 0) <= task.retries \
                and not self.cancelled and not rejected:
            delay = task.retry_delay * (2 ** (item.attempt - 1))
            self._change(name, S.RETRYING, f"attempt {item.attempt} {error}; "
                         f"retry {item.attempt}/{task.retries} in {delay:g} s", values,
                         attempt_row)
            assert self._loop is not None
            self.timers[name] = self._loop.call_later(
                delay, self._post, _Done(name, item.attempt, "retry"))
            return
        self._change(name, bad, error, values, attempt_row)
        self._skip_descendants(name)

    def _collect(self, name: str, out: Outcome) -> Outcome:
        """Check declared outputs and build the task's result. Problems with what the
        task left behind fail the task, never the engine."""
        try:
            return self._collect_checked(name, out)
        except Exception as e:
            return Outcome(ok=False, exit_code=out.exit_code, artifacts=out.artifacts,
                           error=f"cannot read the task's results: {type(e).__name__}: {e}",
                           traceback=traceback.format_exc())

    def _collect_checked(self, name: str, out: Outcome) -> Outcome:
        task = self.wf.tasks[name]
        workdir = self.run_dir / name
        found: dict[str, str] = {}
        for pattern in task.outputs:
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
            records = read_records(workdir / RECORDS_FILE, self.wf.base_dir)
        if task.kind == "python" and out.result is not None:
            result = out.result
        else:
            result = {**found, **records} or None
        return Outcome(ok=True, result=result, exit_code=out.exit_code,
                       artifacts=out.artifacts, code=out.code)

    # -- cancel and end ------------------------------------------------------------------
    _cancel_reason = "cancelled"

    def _cancel(self, reason: str) -> None:
        if self.cancelled or self._finished:
            return
        self.cancelled = True
        self._cancel_reason = reason
        for name, handle in list(self.timers.items()):
            handle.cancel()
            self._change(name, S.CANCELLED, reason)
        self.timers.clear()
        while self.ready:
            name = self.ready.popleft()
            self._change(name, S.CANCELLED, reason)
        for name, st in list(self.state.items()):
            if st is S.PENDING and name in self.selected:
                self._change(name, S.CANCELLED, reason)
        for t in self.running.values():
            t.cancel()
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

    def _final_state(self) -> RunState:
        states = [self.state[n] for n in self.selected]
        if all(s is S.SUCCEEDED for s in states):
            return RunState.SUCCEEDED
        if self.cancelled:
            return RunState.CANCELLED
        return RunState.FAILED

    def _summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.selected:
            counts[self.state[n].value] = counts.get(self.state[n].value, 0) + 1
        return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))


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


def _json(value: Any) -> str | None:
    import json

    return json.dumps(value, default=str) if value else None

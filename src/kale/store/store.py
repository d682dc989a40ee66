"""The store: every run, task state, attempt, result and event, behind one state machine.

One process writes a run at a time (its *owner*); changes are applied in groups, one
short transaction per group (:meth:`Store.apply`), so a fast workflow costs one commit
per engine step rather than one per task. SQLite runs in WAL mode with
``synchronous=NORMAL``: a killed process loses nothing that was committed.

Any SQLAlchemy URL works; SQLite and PostgreSQL (``postgresql+psycopg://...``) are tested.
Differences the code takes care of: PostgreSQL text cannot hold NUL characters (they are
stored as U+FFFD), NULLs sort differently (orderings say where they go), and two processes
may create the schema at once (an advisory lock serialises them).
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from kale.errors import IllegalTransition, KaleError, RunNotFound, UsageError
from kale.model.states import RunState, TaskState, is_legal
from kale.procfs import process_identity
from kale.store import schema
from kale.store import tables as T
from kale.store.writer import Writer, nul_free


class RunIdTaken(KaleError):
    """:meth:`Store.create_run` was given the id of a run the store has already: two runs
    created in one second drew the same suffix (:func:`kale.engine.runs.new_run_id`),
    here or, on a store shared by several homes, in another home. Its caller draws
    another id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"a run with the id {run_id!r} exists already")


@dataclass
class Change:
    """One task transition plus the columns that go with it."""

    run_id: str
    task: str
    new: TaskState
    reason: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # extra task columns
    #: the attempt row's columns; ``"new": True`` inserts it, else it is an update
    attempt: dict[str, Any] | None = None
    #: called (in the committing thread) once the change is durable: how a worker's
    #: report is acknowledged only after what it caused is on disk
    receipt: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    #: a task the run adds while it runs (``new`` is PENDING): its row's ``kind``,
    #: ``def_hash``, ``position`` and ``spec``
    added: dict[str, Any] | None = None


@dataclass
class Batch:
    """Checked transitions as rows, ready to commit."""

    tasks: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    new_attempts: list[dict[str, Any]] = field(default_factory=list)
    new_tasks: list[dict[str, Any]] = field(default_factory=list)
    attempt_updates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TaskRecord:
    """A task's row as read from the store: a snapshot, never refreshed (read it again for
    news). ``result_json`` holds a JSON result, ``result_path`` the file of any other."""

    run_id: str
    name: str
    state: TaskState
    kind: str
    attempts: int
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    reason: str | None
    error: str | None
    traceback: str | None
    details: dict[str, Any]
    artifacts: dict[str, str]
    def_hash: str | None
    cache_key: str | None
    result_json: str | None
    result_path: str | None
    result_hash: str | None
    reused_from: str | None
    stdout: str | None
    stderr: str | None
    #: the user code the result was made with (file -> content hash), see kale.tasks.usercode
    code: dict[str, str] | None = None
    #: a task the run added while it ran (a map's member): what it binds, its key
    spec: dict[str, Any] | None = None
    #: its declared output files as they were made (path -> size, mtime and ctime in
    #: ns, inode), see :func:`kale.store.results.fingerprints`
    outputs: dict[str, list[int]] | None = None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state.value, "kind": self.kind,
            "attempts": self.attempts, "exit_code": self.exit_code,
            "started_at": self.started_at, "ended_at": self.ended_at,
            "duration": self.duration, "reason": self.reason, "error": self.error,
            "details": self.details, "artifacts": self.artifacts,
            "reused_from": self.reused_from, "stdout": self.stdout, "stderr": self.stderr,
            "result": json.loads(self.result_json) if self.result_json else None,
            "result_file": self.result_path,
            # a map's member: its map, and its place in it
            **({"member_of": self.spec["group"], "index": self.spec["index"]}
               if self.spec else {}),
        }


@dataclass
class RunRecord:
    """A run's row as read from the store: a snapshot, never refreshed. Its workflow
    (:attr:`spec`) is read from the same store on first use. ``owner_*`` name the process
    that drives the run; :meth:`owner_alive` tells whether it still lives (a reused pid does
    not count)."""

    id: str
    workflow: str
    state: RunState
    created_at: float
    ended_at: float | None
    base_dir: str
    run_dir: str
    params: dict[str, Any]
    options: dict[str, Any]
    owner_pid: int | None
    owner_host: str | None
    owner_start: str | None
    cancel_requested: float | None
    message: str | None
    submitted_by: str | None = None
    _store: Store | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The run's canonical workflow dict: read on first use (it can be megabytes)."""
        assert self._store is not None
        return self._store.run_spec(self.id)

    def owner_alive(self) -> bool:
        """Whether the process that drives this run is still alive (same host only; a pid
        reused by another process since does not count)."""
        if not self.owner_pid or self.owner_host != socket.gethostname():
            return False
        return process_identity(self.owner_pid) == self.owner_start

    def to_json(self, alive: bool | None = None) -> dict[str, Any]:
        """``alive``: whether its owner is known to be alive (else it is checked)."""
        if alive is None:
            alive = self.owner_alive()
        return {
            "id": self.id, "workflow": self.workflow, "state": self.state.value,
            "created_at": self.created_at, "ended_at": self.ended_at,
            "run_dir": self.run_dir, "params": self.params, "options": self.options,
            "driven_by_pid": self.owner_pid if alive else None,
            "message": self.message, "submitted_by": self.submitted_by,
        }


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"owner_pid": pid, "owner_host": socket.gethostname(),
            "owner_start": process_identity(pid)}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Store:
    """Thread-compatible (one connection pool); open one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        #: the store as messages name it: a file, or a database URL without its password
        self.where = url.split("///", 1)[1] if url.startswith("sqlite:///") else \
            sa.engine.make_url(url).render_as_string(hide_password=True).split("?")[0]
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._nul_free = self.engine.dialect.name == "postgresql"
        with self.engine.begin() as c:
            if self._nul_free:
                # Processes opening a new store at once would race to create its tables
                # (PostgreSQL's DDL is transactional, so the lock covers all of it).
                c.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            schema.migrate(c)  # create, or upgrade an older store; KaleError if newer
        # Current task states of the runs this process writes, for transition checks.
        self._states: dict[tuple[str, str], TaskState] = {}
        #: runs this store created and nothing claimed yet, the newest few: their tasks'
        #: (name, def_hash) (a run not among them is read back when claimed)
        self._created: dict[str, list[tuple[str, str | None]]] = {}
        self._w: Writer | None = None
        self._write_lock = threading.Lock()

    @contextlib.contextmanager
    def _writer(self) -> Iterator[Writer]:
        """The one write connection of this store, inside a transaction."""
        with self._write_lock:
            if self._w is None:
                self._w = Writer(self.engine, nul_free=self._nul_free)
            try:
                yield self._w
            except BaseException:
                try:
                    self._w.raw.rollback()
                except Exception:  # the connection is gone (a restarted server): drop it
                    self._w.raw.invalidate()
                    self._w = None
                raise
            self._w.raw.commit()

    def close(self) -> None:
        if self._w is not None:
            self._w.raw.close()
            self._w = None
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def create_run(self, run_id: str, workflow: str, spec: dict[str, Any], *, base_dir: str,
                   run_dir: str, params: dict[str, Any], options: dict[str, Any],
                   tasks: Sequence[tuple[str, str, str]], submitted_by: str | None = None
                   ) -> None:
        """Insert a run and its tasks (``(name, kind, def_hash)``), all PENDING. Raises
        :class:`RunIdTaken` (nothing written) if a run has the id already."""
        now = time.time()
        with self._writer() as w:  # (the write path's own SQL: a run may have 100,000 rows)
            try:
                w.executemany(_RUN_SQL, [{
                    "id": run_id, "workflow": workflow, "state": RunState.RUNNING.value,
                    "created_at": now, "spec": json.dumps(spec), "base_dir": base_dir,
                    "run_dir": run_dir, "params": json.dumps(params, default=repr),
                    "options": json.dumps(options), "submitted_by": submitted_by,
                    **_owner()}])
            except self.engine.dialect.loaded_dbapi.IntegrityError as e:
                raise RunIdTaken(run_id) from e  # (the id is the row's only unique column)
            w.insert("tasks", _NEW_TASK, [
                {"run_id": run_id, "name": n, "kind": k, "state": "PENDING", "attempts": 0,
                 "def_hash": h, "position": i} for i, (n, k, h) in enumerate(tasks)])
            w.insert("events", _EVENT, [{"run_id": run_id, "task": None, "ts": now,
                                         "old": None, "new": RunState.RUNNING.value,
                                         "reason": "created"}])
        for n, _, _ in tasks:
            self._states[(run_id, n)] = TaskState.PENDING
        self._created[run_id] = [(n, h) for n, _, h in tasks]
        for old in list(self._created)[:-16]:  # never claimed: its engine failed to start
            self._created.pop(old, None)

    def claim_run(self, run_id: str) -> list[tuple[str, str | None]] | None:
        """Make this process the run's owner (on resume) and load its task states.
        Returns ``(name, def_hash)`` of its tasks in workflow order when none of them has
        been touched yet (all PENDING, never attempted, none added as it ran: a run just
        created), else None: all an engine starting a new run needs of them, from the
        same read (a few columns: a run may have 100,000 tasks). A run this store created
        is not read back: its tasks are as created (only an engine changes them, and an
        engine claims the run first; another process's resume waits for this one to
        end), their states recorded here already."""
        with self.engine.begin() as c:
            c.execute(T.runs.update().where(T.runs.c.id == run_id).values(
                state=RunState.RUNNING.value, ended_at=None, cancel_requested=None, **_owner()))
        created = self._created.pop(run_id, None)
        if created is not None:
            return created
        c_ = T.tasks.c
        q = (sa.select(c_.name, c_.state, c_.def_hash, c_.attempts, c_.spec.is_(None))
             .where(c_.run_id == run_id).order_by(c_.position))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        self._states.update(((run_id, name), TaskState(state)) for name, state, *_ in rows)
        if any(state != "PENDING" or attempts or not plain
               for _, state, _, attempts, plain in rows):
            return None
        return [(name, h) for name, _, h, _, _ in rows]

    def finish_run(self, run_id: str, state: RunState, message: str = "") -> None:
        now = time.time()
        with self.engine.begin() as c:
            if self._nul_free:
                message = nul_free(message)
            c.execute(T.runs.update().where(T.runs.c.id == run_id).values(
                state=state.value, ended_at=now, owner_pid=None, message=message or None))
            c.execute(T.events.insert().values(run_id=run_id, task=None, ts=now, old=None,
                                               new=state.value, reason=message))

    def request_cancel(self, run_id: str) -> None:
        """Ask the process driving a run to cancel it (it polls for this)."""
        with self.engine.begin() as c:
            c.execute(T.runs.update().where(T.runs.c.id == run_id).values(
                cancel_requested=time.time()))

    def cancel_requested(self, run_id: str) -> bool:
        with self.engine.connect() as c:
            value = c.execute(sa.select(T.runs.c.cancel_requested)
                              .where(T.runs.c.id == run_id)).scalar()
        return value is not None

    def own_users(self) -> list[str | None]:
        """Whose runs are this OS user's when Kale reads the store itself (no manager):
        the runs this user made (a run records who made it), and on a SQLite store (a file
        in a private home) also the runs recorded before runs said who made them (None).
        On a store shared by several users (PostgreSQL), a run of no recorded user may be
        anyone's: never this user's to reuse or list."""
        from kale.config import user_name

        return [user_name(), None] if self.engine.dialect.name == "sqlite" else [user_name()]

    def get_run(self, run_id: str, users: Sequence[str | None] | None = None) -> RunRecord:
        """A run by id, unique id prefix, or ``latest``; with ``users``, only among the runs
        of those users (None stands for runs made without a manager)."""
        if run_id == "latest":
            newest = self.runs(1, users=users)
            if not newest:
                raise RunNotFound(run_id)
            return newest[0]
        mine = _users_clause(users)
        with self.engine.connect() as c:
            row = c.execute(sa.select(*_RUN_COLUMNS).where(T.runs.c.id == run_id)).first()
            if row is None:
                # Unique prefix match, so people can type the start of an id.
                q = sa.select(*_RUN_COLUMNS).where(
                    T.runs.c.id.startswith(run_id, autoescape=True))
                if mine is not None:
                    q = q.where(mine)
                rows = c.execute(q.limit(2)).all()
                if len(rows) != 1:
                    raise RunNotFound(run_id)
                row = rows[0]
        rec = _run(row, self)
        if users is not None and rec.submitted_by not in users:
            raise RunNotFound(run_id)
        return rec

    def run_spec(self, run_id: str) -> dict[str, Any]:
        with self.engine.connect() as c:
            text = c.execute(sa.select(T.runs.c.spec).where(T.runs.c.id == run_id)).scalar()
        if text is None:
            raise RunNotFound(run_id)
        spec: dict[str, Any] = json.loads(text)
        return spec

    def latest_run(self) -> RunRecord | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(*_RUN_COLUMNS)
                            .order_by(T.runs.c.created_at.desc()).limit(1)).first()
        return _run(row, self) if row else None

    def runs(self, limit: int = 50, users: Sequence[str | None] | None = None
             ) -> list[RunRecord]:
        """The newest runs; ``users``: only runs submitted by these (None: not through a
        manager)."""
        q = sa.select(*_RUN_COLUMNS).order_by(T.runs.c.created_at.desc()).limit(limit)
        mine = _users_clause(users)
        if mine is not None:
            q = q.where(mine)
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return [_run(r, self) for r in rows]

    # -- tasks ---------------------------------------------------------------------------
    def tasks(self, run_id: str, states: Iterable[str] | None = None,
              limit: int | None = None) -> list[TaskRecord]:
        """The run's tasks in workflow order; only those in ``states`` when given, and the
        first ``limit`` of them (what a big run's status lists: a few tasks under way, not
        its 100,000 that succeeded)."""
        q = sa.select(T.tasks).where(T.tasks.c.run_id == run_id)
        if states is not None:
            q = q.where(T.tasks.c.state.in_(sorted({str(s) for s in states})))
        q = q.order_by(T.tasks.c.position)
        if limit is not None:
            q = q.limit(max(0, limit))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        return [_task(r) for r in rows]

    def log_files(self, run_id: str, names: Iterable[str] | None = None
                  ) -> dict[str, tuple[TaskState, str | None, str | None]]:
        """The state and log files (stdout, stderr) of the run's tasks named in ``names``
        (default: of every task that has log files), in a query per 500 names: what a
        reader following a run needs of the tasks that just started."""
        cols = (T.tasks.c.name, T.tasks.c.state, T.tasks.c.stdout, T.tasks.c.stderr)
        mine = T.tasks.c.run_id == run_id
        if names is None:
            queries = [sa.select(*cols).where(
                mine & (T.tasks.c.stdout.is_not(None) | T.tasks.c.stderr.is_not(None)))]
        else:
            wanted = sorted(set(names))
            queries = [sa.select(*cols).where(mine & T.tasks.c.name.in_(wanted[i:i + 500]))
                       for i in range(0, len(wanted), 500)]
        out: dict[str, tuple[TaskState, str | None, str | None]] = {}
        with self.engine.connect() as c:
            for q in queries:
                for r in c.execute(q):
                    out[r.name] = (TaskState(r.state), r.stdout, r.stderr)
        return out

    def last_event(self, run_id: str) -> int:
        """The id of the run's latest event (0: none yet): where to follow it from."""
        with self.engine.connect() as c:
            last = c.execute(sa.select(sa.func.max(T.events.c.id)).where(
                T.events.c.run_id == run_id)).scalar()
        return int(last or 0)

    def task_counts(self, run_id: str) -> dict[str, int]:
        """How many of the run's tasks are in each state."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(T.tasks.c.state, sa.func.count()).where(
                T.tasks.c.run_id == run_id).group_by(T.tasks.c.state)).all()
        return {r[0]: r[1] for r in rows}

    def task_states(self, run_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """Every task's state (name -> state), and the reason of each task a condition
        skipped (its details say ``condition``): what a view of a whole graph needs, read
        without the rest of the tasks' rows (a run of 100,000 tasks: two columns)."""
        tasks = T.tasks.c
        with self.engine.connect() as c:
            states = {r[0]: r[1] for r in c.execute(
                sa.select(tasks.name, tasks.state).where(tasks.run_id == run_id))}
            skipped = c.execute(sa.select(tasks.name, tasks.reason, tasks.details).where(
                (tasks.run_id == run_id) & (tasks.state == TaskState.SKIPPED.value)
                & tasks.details.is_not(None))).all()
        conditions = {name: reason or "condition false" for name, reason, details in skipped
                      if details and json.loads(details).get("condition")}
        return states, conditions

    def member_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """How many members of each map (and tasks added by each task) of the run are in
        each state: ``{group: {state: n}}``, counted by the database (what a status that
        lists only some of a big run's tasks shows on a map's line)."""
        spec = T.tasks.c.spec  # JSON in a text column
        group: Any
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects import postgresql

            group = sa.cast(spec, postgresql.JSON)["group"].as_string()
        else:
            group = sa.func.json_extract(spec, "$.group")
        q = sa.select(group, T.tasks.c.state, sa.func.count()).where(
            (T.tasks.c.run_id == run_id) & spec.is_not(None)).group_by(group, T.tasks.c.state)
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as c:
            for name, state, n in c.execute(q).all():
                if name is not None:
                    out.setdefault(str(name), {})[state] = n
        return out

    def task(self, run_id: str, name: str) -> TaskRecord:
        with self.engine.connect() as c:
            row = c.execute(sa.select(T.tasks).where(
                (T.tasks.c.run_id == run_id) & (T.tasks.c.name == name))).first()
        if row is None:
            raise UsageError(f"run {run_id} has no task {name!r}")
        return _task(row)

    def attempts(self, run_id: str, task: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(T.attempts).where(
                (T.attempts.c.run_id == run_id) & (T.attempts.c.task == task))
                .order_by(T.attempts.c.number)).all()
        return [dict(r._mapping) for r in rows]

    def events(self, run_id: str, after_id: int = 0) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(T.events).where(
                (T.events.c.run_id == run_id) & (T.events.c.id > after_id))
                .order_by(T.events.c.id)).all()
        return [dict(r._mapping) for r in rows]

    def apply(self, changes: Iterable[Change]) -> None:
        """Check a group of transitions against the state machine and commit them in one
        transaction. Nothing is applied if one is illegal."""
        self.write([self.check(changes)])

    def check(self, changes: Iterable[Change]) -> Batch:
        """Check transitions against the state machine (raising :class:`IllegalTransition`)
        and turn them into rows for :meth:`write`. The checked states count as current
        from now on, so checks of later groups build on this one."""
        now = time.time()
        staged: dict[tuple[str, str], TaskState] = {}
        batch = Batch()
        for ch in changes:
            key = (ch.run_id, ch.task)
            if ch.added is not None:  # a new row, PENDING
                if key in staged or key in self._states:
                    raise IllegalTransition(ch.run_id, ch.task, "(exists)", ch.new.value)
                batch.new_tasks.append({
                    "run_id": ch.run_id, "name": ch.task, "kind": ch.added["kind"],
                    "state": "PENDING", "attempts": 0,
                    "def_hash": ch.added.get("def_hash"), "position": ch.added["position"],
                    "spec": json.dumps(ch.added.get("spec"), default=str)})
                batch.events.append({"run_id": ch.run_id, "task": ch.task, "ts": now,
                                     "old": None, "new": "PENDING", "reason": ch.reason})
                staged[key] = TaskState.PENDING
                if ch.new is TaskState.PENDING:
                    continue
            found = staged.get(key) or self._states.get(key)
            old = found if found is not None else self.task(ch.run_id, ch.task).state
            if old is not ch.new and not is_legal(old, ch.new):
                raise IllegalTransition(ch.run_id, ch.task, old.value, ch.new.value)
            staged[key] = ch.new
            new = ch.new._value_  # (.value is a Python-level property: thousands a second)
            batch.tasks.append({"_run": ch.run_id, "_name": ch.task, "state": new,
                                "reason": ch.reason or None, **ch.values})
            batch.events.append({"run_id": ch.run_id, "task": ch.task, "ts": now,
                                 "old": old._value_, "new": new, "reason": ch.reason})
            if ch.attempt is not None:
                a = {"run_id": ch.run_id, "task": ch.task, **ch.attempt}
                (batch.new_attempts if a.pop("new", False) else batch.attempt_updates).append(a)
        for key, state in staged.items():  # an ended task's state is read back if needed
            if state.terminal:
                self._states.pop(key, None)
            else:
                self._states[key] = state
        return batch

    def write(self, batches: Sequence[Batch]) -> None:
        """Commit checked batches, in order, in one transaction."""
        if not any(b.events for b in batches):
            return
        with self._writer() as w:
            w.insert("tasks", _NEW_TASK, [t for b in batches for t in b.new_tasks])
            _update_tasks(w, [row for b in batches for row in b.tasks])
            w.insert("events", _EVENT, [e for b in batches for e in b.events])
            _write_attempts(w, [a for b in batches for a in b.new_attempts],
                            [a for b in batches for a in b.attempt_updates])

    # -- cache ---------------------------------------------------------------------------
    def cached(self, workflow: str, users: Sequence[str | None] | None = None,
               base_dir: str | None = None) -> dict[str, list[TaskRecord]]:
        """The newest succeeded tasks in runs of ``workflow`` (of ``users`` only: None
        stands for runs made without a manager; from the workflow folder ``base_dir``
        only, if given), by cache key, newest first: one query, so checking thousands of
        tasks for reuse costs one round trip. A cache key includes the task's name, so a
        task only ever finds its own results. (A result's code manifest names the files
        of its own folder: a copy of the folder whose helper was edited must not find the
        original's results, whose files are unchanged.)

        At most ``PER_KEY`` records per key: every run that reused a result records it
        again under the same key, so without a bound a long-lived manager would load (and
        hold) every run's copy of its history (memory growing with the number of runs,
        not with the workflow). The newest few are enough: the first that is still
        available is the one reused."""
        ranked = (sa.select(T.tasks, sa.func.row_number().over(
                      partition_by=T.tasks.c.cache_key,
                      order_by=T.tasks.c.ended_at.desc().nulls_last()).label("rank"))
                  .join(T.runs, T.runs.c.id == T.tasks.c.run_id)
                  .where((T.runs.c.workflow == workflow) & (T.tasks.c.state == "SUCCEEDED")
                         & T.tasks.c.cache_key.is_not(None)))
        mine = _users_clause(users)
        if mine is not None:
            ranked = ranked.where(mine)
        if base_dir is not None:
            ranked = ranked.where(T.runs.c.base_dir == base_dir)
        sub = ranked.subquery()
        q = (sa.select(*[sub.c[c.name] for c in T.tasks.columns])
             .where(sub.c.rank <= self.PER_KEY)
             .order_by(sub.c.ended_at.desc().nulls_last()))
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        out: dict[str, list[TaskRecord]] = {}
        for r in rows:
            out.setdefault(r._mapping["cache_key"], []).append(_task(r))
        return out

    #: earlier results looked at per cache key (see :meth:`cached`)
    PER_KEY = 4


_NEW_TASK = ("run_id", "name", "kind", "state", "attempts", "def_hash", "position", "spec")
_RUN_SQL = ("INSERT INTO runs (id, workflow, state, created_at, spec, base_dir, run_dir, "
            "params, options, submitted_by, owner_pid, owner_host, owner_start) VALUES (:id, "
            ":workflow, :state, :created_at, :spec, :base_dir, :run_dir, :params, :options, "
            ":submitted_by, :owner_pid, :owner_host, :owner_start)")
_EVENT = ("run_id", "task", "ts", "old", "new", "reason")
_SCHEMA_LOCK = 0x6B616C65  # "kale": the advisory lock held while creating the schema


def _users_clause(users: Sequence[str | None] | None) -> Any:
    """Runs of these users (None stands for runs made without a manager); None: anyone's."""
    if users is None:
        return None
    cond: Any = T.runs.c.submitted_by.in_([u for u in users if u is not None])
    if None in users:
        cond = cond | T.runs.c.submitted_by.is_(None)
    return cond


@functools.lru_cache(maxsize=256)  # few shapes of change: a small memo
def _columns(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The columns a task row with ``keys`` sets, sorted (``_run``, ``_name``: not columns)."""
    return tuple(sorted(k for k in keys if not k.startswith("_")))


def _fold(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
          ) -> dict[Any, dict[str, Any]]:
    """Successive changes of one row (by ``key``) folded into one, later values winning
    (the rows given are not changed)."""
    merged: dict[Any, dict[str, Any]] = {}
    for r in rows:
        k = key(r)
        merged[k] = {**merged[k], **r} if k in merged else r
    return merged


def _by_columns(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by the columns they set: each group is written by one statement
    (rows of one kind of change have the same keys: sorted once, see ``_columns``)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_columns(tuple(r)), []).append(r)
    return groups


_task_key = operator.itemgetter("_run", "_name")
_attempt_key = operator.itemgetter("run_id", "task", "number")


def _update_tasks(w: Writer, rows: list[dict[str, Any]]) -> None:
    for cols, group in _by_columns(_fold(rows, _task_key).values()).items():
        w.update("tasks", cols, _TASK_KEY, group)


def _write_attempts(w: Writer, new: list[dict[str, Any]],
                    updates: list[dict[str, Any]]) -> None:
    """Insert the ``new`` attempt rows and apply the ``updates``. An attempt that starts
    and ends within one write (a short task's) is inserted as it ended: one row written,
    not a row and then its update."""
    made = {_attempt_key(a): dict(a) for a in new}
    later = []
    for k, change in _fold(updates, _attempt_key).items():
        row = made.get(k)
        if row is not None:
            row.update(change)
        else:
            later.append(change)
    for cols, group in _by_columns(made.values()).items():
        w.insert("attempts", cols, group)
    for cols, group in _by_columns(later).items():
        w.update("attempts", [c for c in cols if c not in _ATTEMPT_KEY], _ATTEMPT_KEY, group)


_ATTEMPT_KEY = {"run_id": "run_id", "task": "task", "number": "number"}
_TASK_KEY = {"run_id": "_run", "name": "_name"}
_RUN_COLUMNS = [c for c in T.runs.c if c.name != "spec"]


def _run(row: Any, store: Store) -> RunRecord:
    m = row._mapping
    return RunRecord(
        id=m["id"], workflow=m["workflow"], state=RunState(m["state"]),
        created_at=m["created_at"], ended_at=m["ended_at"], _store=store,
        base_dir=m["base_dir"], run_dir=m["run_dir"], params=json.loads(m["params"]),
        options=json.loads(m["options"]), owner_pid=m["owner_pid"], owner_host=m["owner_host"],
        owner_start=m["owner_start"], cancel_requested=m["cancel_requested"],
        message=m["message"], submitted_by=m.get("submitted_by"))


def _task(row: Any) -> TaskRecord:
    m = row._mapping
    return TaskRecord(
        run_id=m["run_id"], name=m["name"], state=TaskState(m["state"]), kind=m["kind"],
        attempts=m["attempts"] or 0, exit_code=m["exit_code"], started_at=m["started_at"],
        ended_at=m["ended_at"], reason=m["reason"], error=m["error"], traceback=m["traceback"],
        details=json.loads(m["details"]) if m["details"] else {},
        artifacts=json.loads(m["artifacts"]) if m["artifacts"] else {},
        def_hash=m["def_hash"], cache_key=m["cache_key"], result_json=m["result_json"],
        result_path=m["result_path"], result_hash=m["result_hash"],
        reused_from=m["reused_from"], stdout=m["stdout"], stderr=m["stderr"],
        code=json.loads(m["code"]) if m.get("code") else None,
        spec=json.loads(m["spec"]) if m.get("spec") else None,
        outputs=json.loads(m["outputs"]) if m.get("outputs") else None)

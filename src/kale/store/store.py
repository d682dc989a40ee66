"""The store: every run, task state, attempt, result and event, behind one state machine.

One process writes a run at a time (its *owner*); changes are applied in groups, one
short transaction per group (:meth:`Store.apply`), so a fast workflow costs one commit
per engine step rather than one per task. SQLite runs in WAL mode with
``synchronous=NORMAL``: a killed process loses nothing that was committed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kale.errors import IllegalTransition, KaleError, RunNotFound
from kale.model.states import RunState, TaskState, is_legal
from kale.store import tables as T


@dataclass
class Change:
    """One task transition plus the columns that go with it."""

    run_id: str
    task: str
    new: TaskState
    reason: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # extra task columns
    attempt: dict[str, Any] | None = None  # insert/update of the attempt row


@dataclass
class TaskRecord:
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
        }


@dataclass
class RunRecord:
    id: str
    workflow: str
    state: RunState
    created_at: float
    ended_at: float | None
    spec: dict[str, Any]
    base_dir: str
    run_dir: str
    params: dict[str, Any]
    options: dict[str, Any]
    owner_pid: int | None
    owner_host: str | None
    message: str | None

    def owner_alive(self) -> bool:
        """Whether the process that drives this run is still alive (same host only)."""
        if not self.owner_pid or self.owner_host != socket.gethostname():
            return False
        try:
            os.kill(self.owner_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "workflow": self.workflow, "state": self.state.value,
            "created_at": self.created_at, "ended_at": self.ended_at,
            "run_dir": self.run_dir, "params": self.params, "options": self.options,
            "driven_by_pid": self.owner_pid if self.owner_alive() else None,
            "message": self.message,
        }


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
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        T.metadata.create_all(self.engine)
        with self.engine.begin() as c:
            row = c.execute(sa.select(T.meta.c.value).where(T.meta.c.key == "schema")).first()
            if row is None:
                c.execute(T.meta.insert().values(key="schema", value=str(T.SCHEMA_VERSION)))
            elif int(row[0]) > T.SCHEMA_VERSION:
                raise KaleError(f"the store at {url} has schema {row[0]}, newer than this Kale "
                                f"({T.SCHEMA_VERSION}); upgrade Kale")
        # Current task states of the runs this process writes, for transition checks.
        self._states: dict[tuple[str, str], TaskState] = {}

    def close(self) -> None:
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def create_run(self, run_id: str, workflow: str, spec: dict[str, Any], *, base_dir: str,
                   run_dir: str, params: dict[str, Any], options: dict[str, Any],
                   tasks: Sequence[tuple[str, str, str]]) -> None:
        """Insert a run and its tasks (``(name, kind, def_hash)``), all PENDING."""
        now = time.time()
        with self.engine.begin() as c:
            c.execute(T.runs.insert().values(
                id=run_id, workflow=workflow, state=RunState.RUNNING.value, created_at=now,
                spec=json.dumps(spec), base_dir=base_dir, run_dir=run_dir,
                params=json.dumps(params, default=repr), options=json.dumps(options),
                owner_pid=os.getpid(), owner_host=socket.gethostname()))
            if tasks:
                c.execute(T.tasks.insert(), [
                    {"run_id": run_id, "name": n, "kind": k, "state": "PENDING", "attempts": 0,
                     "def_hash": h, "position": i} for i, (n, k, h) in enumerate(tasks)])
            c.execute(T.events.insert().values(run_id=run_id, task=None, ts=now, old=None,
                                               new=RunState.RUNNING.value, reason="created"))
        for n, _, _ in tasks:
            self._states[(run_id, n)] = TaskState.PENDING

    def claim_run(self, run_id: str) -> None:
        """Make this process the run's owner (on resume) and load its task states."""
        with self.engine.begin() as c:
            c.execute(T.runs.update().where(T.runs.c.id == run_id).values(
                owner_pid=os.getpid(), owner_host=socket.gethostname(),
                state=RunState.RUNNING.value, ended_at=None))
        for t in self.tasks(run_id):
            self._states[(run_id, t.name)] = t.state

    def finish_run(self, run_id: str, state: RunState, message: str = "") -> None:
        now = time.time()
        with self.engine.begin() as c:
            c.execute(T.runs.update().where(T.runs.c.id == run_id).values(
                state=state.value, ended_at=now, owner_pid=None, message=message or None))
            c.execute(T.events.insert().values(run_id=run_id, task=None, ts=now, old=None,
                                               new=state.value, reason=message))

    def get_run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as c:
            row = c.execute(sa.select(T.runs).where(T.runs.c.id == run_id)).first()
            if row is None:
                # Unique prefix match, so people can type the start of an id.
                rows = c.execute(sa.select(T.runs).where(T.runs.c.id.like(run_id + "%"))
                                 .limit(2)).all()
                if len(rows) != 1:
                    raise RunNotFound(run_id)
                row = rows[0]
        return _run(row)

    def latest_run(self) -> RunRecord | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(T.runs).order_by(T.runs.c.created_at.desc()).limit(1)).first()
        return _run(row) if row else None

    def runs(self, limit: int = 50) -> list[RunRecord]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(T.runs).order_by(T.runs.c.created_at.desc())
                             .limit(limit)).all()
        return [_run(r) for r in rows]

    # -- tasks ---------------------------------------------------------------------------
    def tasks(self, run_id: str) -> list[TaskRecord]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(T.tasks).where(T.tasks.c.run_id == run_id)
                             .order_by(T.tasks.c.position)).all()
        return [_task(r) for r in rows]

    def task(self, run_id: str, name: str) -> TaskRecord:
        with self.engine.connect() as c:
            row = c.execute(sa.select(T.tasks).where(
                (T.tasks.c.run_id == run_id) & (T.tasks.c.name == name))).first()
        if row is None:
            raise KaleError(f"run {run_id} has no task {name!r}")
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
        """Apply a group of transitions in one transaction, after checking each against
        the state machine. Nothing is applied if one is illegal."""
        changes = list(changes)
        if not changes:
            return
        now = time.time()
        staged: dict[tuple[str, str], TaskState] = {}
        task_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        new_attempts: list[dict[str, Any]] = []
        upd_attempts: list[dict[str, Any]] = []
        for ch in changes:
            key = (ch.run_id, ch.task)
            old = staged.get(key) or self._states.get(key)
            if old is None:
                old = self.task(ch.run_id, ch.task).state
            if old is not ch.new and not is_legal(old, ch.new):
                raise IllegalTransition(ch.run_id, ch.task, old.value, ch.new.value)
            staged[key] = ch.new
            row = {"state": ch.new.value, "reason": ch.reason or None, **ch.values}
            task_rows.append({"_run": ch.run_id, "_name": ch.task, **row})
            event_rows.append({"run_id": ch.run_id, "task": ch.task, "ts": now,
                               "old": old.value, "new": ch.new.value, "reason": ch.reason})
            if ch.attempt is not None:
                a = {"run_id": ch.run_id, "task": ch.task, **ch.attempt}
                (new_attempts if a.get("state") == TaskState.RUNNING.value and "started_at" in a
                 else upd_attempts).append(a)
        with self.engine.begin() as c:
            _update_tasks(c, task_rows)
            c.execute(T.events.insert(), event_rows)
            if new_attempts:
                c.execute(T.attempts.insert(), new_attempts)
            for a in upd_attempts:
                c.execute(T.attempts.update().where(
                    (T.attempts.c.run_id == a["run_id"]) & (T.attempts.c.task == a["task"])
                    & (T.attempts.c.number == a["number"])).values(
                    {k: v for k, v in a.items() if k not in ("run_id", "task", "number")}))
        self._states.update(staged)

    # -- cache ---------------------------------------------------------------------------
    def find_cached(self, cache_key: str) -> TaskRecord | None:
        """The newest succeeded task with this cache key, in any run."""
        with self.engine.connect() as c:
            row = c.execute(sa.select(T.tasks).where(
                (T.tasks.c.cache_key == cache_key) & (T.tasks.c.state == "SUCCEEDED"))
                .order_by(T.tasks.c.ended_at.desc()).limit(1)).first()
        return _task(row) if row else None

    def cache_keys(self, workflow: str) -> set[str]:
        """Cache keys of every succeeded task in runs of ``workflow`` (one query, so the
        engine looks a key up only when it can hit)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(T.tasks.c.cache_key).join(T.runs, T.runs.c.id == T.tasks.c.run_id)
                .where((T.runs.c.workflow == workflow) & (T.tasks.c.state == "SUCCEEDED")
                       & T.tasks.c.cache_key.is_not(None)).distinct()).all()
        return {r[0] for r in rows}

    def find_latest_success(self, workflow: str, task: str, def_hash: str) -> TaskRecord | None:
        """The newest success of this task definition in a run of this workflow."""
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(T.tasks).join(T.runs, T.runs.c.id == T.tasks.c.run_id).where(
                    (T.runs.c.workflow == workflow) & (T.tasks.c.name == task)
                    & (T.tasks.c.def_hash == def_hash) & (T.tasks.c.state == "SUCCEEDED"))
                .order_by(T.tasks.c.ended_at.desc()).limit(1)).first()
        return _task(row) if row else None


def _update_tasks(c: Connection, rows: list[dict[str, Any]]) -> None:
    # Fold successive changes of one task into one row (later values win), then group rows
    # by their column set so each group is one executemany.
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["_run"], r["_name"])
        merged[key] = {**merged[key], **r} if key in merged else r
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in merged.values():
        groups.setdefault(tuple(sorted(r)), []).append(r)
    for cols, group in groups.items():
        values = {k: sa.bindparam(k) for k in cols if not k.startswith("_")}
        stmt = T.tasks.update().where(
            (T.tasks.c.run_id == sa.bindparam("_run")) & (T.tasks.c.name == sa.bindparam("_name"))
        ).values(values)
        c.execute(stmt, group)


def _run(row: Any) -> RunRecord:
    m = row._mapping
    return RunRecord(
        id=m["id"], workflow=m["workflow"], state=RunState(m["state"]),
        created_at=m["created_at"], ended_at=m["ended_at"], spec=json.loads(m["spec"]),
        base_dir=m["base_dir"], run_dir=m["run_dir"], params=json.loads(m["params"]),
        options=json.loads(m["options"]), owner_pid=m["owner_pid"], owner_host=m["owner_host"],
        message=m["message"])


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
        reused_from=m["reused_from"], stdout=m["stdout"], stderr=m["stderr"])

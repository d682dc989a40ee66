"""The store's records of workers and of their resource samples (manager runs)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from kale.store import tables as T
from kale.store.store import Store


def _upsert(store: Store, table: sa.Table, row: dict[str, Any]) -> None:
    """Insert ``row`` (keyed by ``id``), or update the row already there."""
    with store.engine.begin() as c:
        updated = c.execute(table.update().where(table.c.id == row["id"])
                            .values(**{k: v for k, v in row.items() if k != "id"})).rowcount
        if not updated:
            c.execute(table.insert().values(**row))


def _rows(store: Store, query: Any, table: sa.Table, user: str | None,
          states: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``query`` for ``user`` in ``states`` (all when not given), with their
    ``info`` JSON decoded."""
    if user is not None:
        query = query.where(table.c.user == user)
    if states:
        query = query.where(table.c.state.in_(list(states)))
    with store.engine.connect() as c:
        rows = c.execute(query).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["info"] = json.loads(d["info"]) if d["info"] else {}
        out.append(d)
    return out


def save_worker(store: Store, doc: dict[str, Any]) -> None:
    """Insert or update a worker's row (``doc`` has the workers table's columns)."""
    _upsert(store, T.workers, {**doc, "info": json.dumps(doc.get("info") or {})})


def set_worker_state(store: Store, worker_ids: Sequence[str], state: str) -> None:
    if not worker_ids:
        return
    with store.engine.begin() as c:
        c.execute(T.workers.update().where(T.workers.c.id.in_(list(worker_ids)))
                  .values(state=state, last_seen=time.time()))


def workers(store: Store, user: str | None = None, states: Sequence[str] = ()
            ) -> list[dict[str, Any]]:
    return _rows(store, sa.select(T.workers).order_by(T.workers.c.started_at), T.workers,
                 user, states)


SAMPLE_COLUMNS = ("run_id", "task", "attempt", "ts", "cpu", "rss", "read_bytes",
                  "write_bytes", "procs", "gpu")


def add_samples(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    clean = [{c: (json.dumps(r[c]) if c == "gpu" and r.get(c) is not None else r.get(c))
              for c in SAMPLE_COLUMNS} for r in rows]
    with store.engine.begin() as c:
        c.execute(T.samples.insert(), clean)


def samples(store: Store, run_id: str, task: str | None = None, after_id: int = 0,
            limit: int = 10_000) -> list[dict[str, Any]]:
    q = sa.select(T.samples).where((T.samples.c.run_id == run_id)
                                   & (T.samples.c.id > after_id))
    if task is not None:
        q = q.where(T.samples.c.task == task)
    with store.engine.connect() as c:
        rows = c.execute(q.order_by(T.samples.c.id).limit(limit)).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["gpu"] = json.loads(d["gpu"]) if d["gpu"] else None
        out.append(d)
    return out


# -- batch jobs ----------------------------------------------------------------------------
def save_job(store: Store, doc: dict[str, Any]) -> None:
    """Insert or update a batch job's row (``doc`` has the batch_jobs table's columns)."""
    row = {**doc, "updated_at": time.time()}
    if "info" in row:
        row["info"] = json.dumps(row["info"] or {})
    _upsert(store, T.batch_jobs, row)


def jobs(store: Store, user: str | None = None, states: Sequence[str] = (),
         limit: int | None = None) -> list[dict[str, Any]]:
    """Batch jobs, newest first."""
    q = sa.select(T.batch_jobs).order_by(T.batch_jobs.c.submitted_at.desc())
    if limit:
        q = q.limit(limit)
    return _rows(store, q, T.batch_jobs, user, states)

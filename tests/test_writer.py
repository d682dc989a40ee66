"""The store's write path (kale.store.writer) on each backend: rows written many to a
statement on SQLite (in chunks that fit its limit on bound values, and without
``UPDATE ... FROM`` as on SQLite before 3.33) read back exactly as written one by one."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from kale.store.store import Store
from kale.store.writer import Writer

COLS = ("run_id", "task", "ts", "old", "new", "reason")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def _events(n: int) -> list[dict[str, Any]]:
    return [{"run_id": "r1", "task": f"t{i}", "ts": 1000.0 + i / 7,
             "old": None if i % 3 else "READY", "new": "RUNNING",
             "reason": f"line {i}\nwith 'quotes'" if i % 5 else None} for i in range(n)]


def _read(store: Store) -> list[tuple[Any, ...]]:
    with store.engine.connect() as c:
        return [tuple(r) for r in c.execute(sa.text(
            "SELECT run_id, task, ts, old, new, reason FROM events WHERE run_id = 'r1' "
            "ORDER BY id"))]


def _write(store: Store, fn: Any) -> None:
    w = Writer(store.engine, nul_free=store.engine.dialect.name == "postgresql")
    try:
        fn(w)
        w.raw.commit()
    finally:
        w.raw.close()


@pytest.mark.parametrize("n", [1, 5, 345])
def test_inserted_rows_read_back_in_order_as_written(store: Store, n: int) -> None:
    rows = _events(n)
    _write(store, lambda w: w.insert("events", COLS, rows))
    assert _read(store) == [tuple(r[c] for c in COLS) for r in rows]


def test_updates_set_each_row_its_own_values_and_leave_the_others(store: Store) -> None:
    rows = _events(300)
    _write(store, lambda w: w.insert("events", COLS, rows))
    with store.engine.connect() as c:
        ids = [i for (i,) in c.execute(sa.text(
            "SELECT id FROM events WHERE run_id = 'r1' ORDER BY id"))]
    changed = [{"id": ids[i], "new": "SUCCEEDED", "reason": None if i % 2 else f"done {i}"}
               for i in range(0, 300, 3)]
    _write(store, lambda w: w.update("events", ("new", "reason"), {"id": "id"}, changed))
    want = [tuple(r[c] for c in COLS) for r in rows]
    for i in range(0, 300, 3):
        want[i] = (*want[i][:4], "SUCCEEDED", None if i % 2 else f"done {i}")
    assert _read(store) == want


def test_a_small_limit_on_bound_values_splits_the_rows(tmp_path: Any) -> None:
    store = Store(f"sqlite:///{tmp_path}/kale.db")
    try:
        w = Writer(store.engine)
        conn = w.raw.driver_connection
        assert isinstance(conn, sqlite3.Connection)
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 20)  # three rows of six
        w._limit = 20
        rows = _events(77)
        w.insert("events", COLS, rows)
        w.raw.commit()
        w.raw.close()
        assert _read(store) == [tuple(r[c] for c in COLS) for r in rows]
    finally:
        store.close()


def test_without_update_from_rows_are_updated_one_by_one(tmp_path: Any) -> None:
    """SQLite before 3.33 has no ``UPDATE ... FROM``."""
    store = Store(f"sqlite:///{tmp_path}/kale.db")
    try:
        rows = _events(40)
        _write(store, lambda w: w.insert("events", COLS, rows))
        w = Writer(store.engine)
        w._update_from = False
        w.update("events", ("reason",), {"task": "task"},
                 [{"task": "t7", "reason": "seven"}, {"task": "t9", "reason": None}])
        w.raw.commit()
        w.raw.close()
        got = {r[1]: r[5] for r in _read(store)}
        assert (got["t7"], got["t9"], got["t8"]) == ("seven", None, rows[8]["reason"])
    finally:
        store.close()

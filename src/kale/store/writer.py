"""The store's write path: rows written through one raw DBAPI connection, skipping
SQLAlchemy's statement machinery (a fast run writes tens of thousands of rows a second).

On SQLite, rows go many to a statement (``INSERT ... VALUES (...), (...)``, and an
``UPDATE ... FROM`` a ``VALUES`` list). ``executemany`` would bind and step each row on
its own, and Python's sqlite3 module lets go of the interpreter lock around every step:
a committer thread then has to win the lock back once per row from the engine's busy
thread. It fell behind, and a 2,000-task run ended with a 30-50 ms write after its last
task. Many rows to a statement bind in one C loop and step once."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine

_PLACEHOLDER = re.compile(r":([A-Za-z_]\w*)")
#: rows per multi-row statement, largest first: a few sizes, so the connection's cache
#: of prepared statements serves every write
_SIZES = (256, 64, 16, 4, 1)
#: ``UPDATE ... FROM``: SQLite 3.33
_UPDATE_FROM = (3, 33, 0)


def nul_free(value: Any) -> Any:
    """PostgreSQL text cannot contain NUL: an error message or traceback that does keeps
    the rest, with U+FFFD in its place."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class Writer:
    """Writes rows (dicts) on one raw DBAPI connection, in the driver's own paramstyle.

    :meth:`insert` and :meth:`update` write many rows to a statement on SQLite, and one
    statement per row elsewhere (PostgreSQL's driver pipelines those); :meth:`executemany`
    runs named-parameter SQL once per row."""

    def __init__(self, engine: Engine, *, nul_free: bool = False) -> None:
        self.raw = engine.raw_connection()
        self.style = engine.dialect.paramstyle
        self.nul_free = nul_free
        self._sql: dict[str, tuple[str, list[str]]] = {}
        self._many: dict[tuple[Any, ...], str] = {}
        self._limit = 0  # bound values a statement may take (0: one row a statement)
        if engine.dialect.name == "sqlite" and self.style == "qmark":
            conn = self.raw.driver_connection
            self._limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) \
                if isinstance(conn, sqlite3.Connection) else 999
        self._update_from = bool(self._limit) and sqlite3.sqlite_version_info >= _UPDATE_FROM

    # -- named SQL, one row a statement ----------------------------------------------------
    def _convert(self, sql: str) -> tuple[str, list[str]]:
        hit = self._sql.get(sql)
        if hit is None:
            names = _PLACEHOLDER.findall(sql)
            repl = {"qmark": lambda m: "?", "format": lambda m: "%s",
                    "pyformat": lambda m: f"%({m.group(1)})s",
                    "named": lambda m: f":{m.group(1)}"}[self.style]
            hit = self._sql[sql] = (_PLACEHOLDER.sub(repl, sql), names)
        return hit

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run ``sql`` (``:name`` placeholders) once per row."""
        text, names = self._convert(sql)
        if self.nul_free:
            rows = [{n: nul_free(r.get(n)) for n in names} for r in rows]
        if self.style in ("qmark", "format"):  # map: no Python frame per value
            params: list[Any] = [tuple(map(r.get, names)) for r in rows]
        else:
            params = [dict(zip(names, map(r.get, names), strict=True)) for r in rows]
        cur = self.raw.cursor()
        try:
            cur.executemany(text, params)
        finally:
            cur.close()

    # -- rows ------------------------------------------------------------------------------
    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]
               ) -> None:
        """Insert ``rows``: each gives ``columns`` (a missing one is NULL)."""
        if not rows:
            return
        if not self._limit:
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                             f"VALUES ({', '.join(f':{c}' for c in columns)})", rows)
            return
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = f"({', '.join('?' * len(columns))})"
        self._chunked(("insert", table, *columns), lambda n: head + ", ".join([one] * n),
                      columns, rows)

    def update(self, table: str, columns: Sequence[str], key: Mapping[str, str],
               rows: Sequence[Mapping[str, Any]]) -> None:
        """Set ``columns`` of the rows found by ``key`` (column -> the row's field that
        holds its value). At most one row per key: which of two would win is not said."""
        if not rows:
            return
        sets = ", ".join(f"{c} = v.{c}" for c in columns)
        if not self._update_from:
            where = " AND ".join(f"{c} = :{k}" for c, k in key.items())
            self.executemany(f"UPDATE {table} SET "
                             f"{', '.join(f'{c} = :{c}' for c in columns)} WHERE {where}",
                             rows)
            return
        names = [*key.values(), *columns]
        where = " AND ".join(f"{table}.{c} = v.{k}" for c, k in key.items())
        one = f"({', '.join('?' * len(names))})"

        def sql(n: int) -> str:
            return (f"WITH v({', '.join(names)}) AS (VALUES {', '.join([one] * n)}) "
                    f"UPDATE {table} SET {sets} FROM v WHERE {where}")

        self._chunked(("update", table, *names), sql, names, rows)

    def _chunked(self, shape: tuple[Any, ...], make: Any, names: Sequence[str],
                 rows: Sequence[Mapping[str, Any]]) -> None:
        """Write ``rows`` with the statements ``make(n)`` gives for ``n`` rows, taking the
        largest sizes first (each statement's text made once)."""
        flat = [v for r in rows for v in map(r.get, names)]
        width, at, cur = len(names), 0, self.raw.cursor()
        try:
            for size in _SIZES:
                if size * width > self._limit and size > 1:
                    continue
                while len(rows) - at >= size:
                    sql = self._many.get((*shape, size))
                    if sql is None:
                        sql = self._many[(*shape, size)] = make(size)
                    cur.execute(sql, flat[at * width:(at + size) * width])
                    at += size
        finally:
            cur.close()

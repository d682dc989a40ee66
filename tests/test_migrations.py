"""Schema versions and their Alembic migrations (kale.store.schema, kale/store/migrations):
a real version-1 store keeps everything when this Kale opens it, and reopening it is a
no-op that never loads Alembic; a new store and the migrations make the same schema, that of
tables.py; a store newer than this Kale is refused; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import kale
from kale.errors import KaleError
from kale.model.states import RunState, TaskState
from kale.store import schema
from kale.store import tables as T
from kale.store.store import Change, Store

V1_STORE = Path(__file__).parent / "data" / "store-v1.sqlite"  # see data/README.md
V1_TABLES = ("kale_meta", "runs", "tasks", "attempts", "events")
NEW_COLUMNS = {"runs": {"submitted_by"}, "attempts": {"worker"},
               "tasks": {"code", "spec", "outputs"}}
QUICKSTART, QUICKSTART_AGAIN = "20261122-053813-246a", "20261122-053832-cb73"
FLAKY, FLAKY_K3 = "20261122-053826-024c", "20261122-053828-a457"


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    """A copy of the store that Kale at schema 1 (commit a66482c) made by running workflows."""
    path = tmp_path / "kale.db"
    shutil.copyfile(V1_STORE, path)
    return path


@pytest.fixture
def store_engine(store_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


def raw_rows(path: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]


def sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def layout(connection: sa.Connection) -> dict[str, Any]:
    """Tables, columns (in order, with type, nullability and primary key), indexes and
    unique constraints, as the database reports them."""
    inspector = sa.inspect(connection)
    out: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table)],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in inspector.get_indexes(table)
                              if not i.get("duplicates_constraint")),
            "unique": sorted(tuple(u["column_names"])
                             for u in inspector.get_unique_constraints(table)),
        }
    return out


def metadata_layout(metadata: sa.MetaData) -> dict[str, Any]:
    """:func:`layout` of what ``metadata`` declares, without the types (compare_metadata
    checks those)."""
    return {t.name: {
        "columns": [(c.name, c.nullable) for c in t.columns],
        "primary_key": [c.name for c in t.primary_key.columns],
        "indexes": sorted((i.name, tuple(c.name for c in i.columns), bool(i.unique))
                          for i in t.indexes),
        "unique": sorted(tuple(c.name for c in u.columns) for u in t.constraints
                         if isinstance(u, sa.UniqueConstraint)),
    } for t in metadata.sorted_tables}


def untyped(found: dict[str, Any]) -> dict[str, Any]:
    return {t: {**v, "columns": [(name, nullable) for name, _, nullable in v["columns"]]}
            for t, v in found.items()}


def versions(connection: sa.Connection) -> tuple[str | None, str | None]:
    """(the alembic_version revision, the kale_meta schema row)."""
    meta = connection.execute(sa.select(T.meta.c.value).where(T.meta.c.key == "schema"))
    return MigrationContext.configure(connection).get_current_revision(), meta.scalar()


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[sa.Engine]]:
    """Every engine made during the test, disposed at its end: a Store whose __init__
    raises leaves one behind, with a pooled connection."""
    made: list[sa.Engine] = []
    create_engine = sa.create_engine

    def record(*args: Any, **kwargs: Any) -> sa.Engine:
        made.append(create_engine(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sa, "create_engine", record)
    yield made
    for engine in made:
        engine.dispose()


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs during the test."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.Engine, "before_cursor_execute", record)


# -- a real version-1 store ---------------------------------------------------------------
def test_the_version_1_store_is_what_kale_at_schema_1_made(v1_store: Path) -> None:
    assert sqlite_tables(v1_store) == set(V1_TABLES)  # no alembic_version
    assert raw_rows(v1_store, "kale_meta") == [{"key": "schema", "value": "1"}]
    assert V1_STORE.stat().st_size < 200_000
    assert not V1_STORE.with_name(V1_STORE.name + "-wal").exists()


def test_a_version_1_store_keeps_every_run_when_opened(v1_store: Path,
                                                       statements: list[str]) -> None:
    before = {t: raw_rows(v1_store, t) for t in V1_TABLES if t != "kale_meta"}
    store = Store(f"sqlite:///{v1_store}")
    try:
        runs = store.runs()
        assert [(r.id, r.workflow, r.state) for r in runs] == [
            (QUICKSTART_AGAIN, "quickstart", RunState.SUCCEEDED),
            (FLAKY_K3, "flaky", RunState.FAILED),
            (FLAKY, "flaky", RunState.FAILED),
            (QUICKSTART, "quickstart", RunState.SUCCEEDED)]
        assert store.get_run(FLAKY).params == {"k": 7}
        assert store.get_run(FLAKY_K3).params == {"k": 3}
        assert [r.message for r in runs] == [
            "3 succeeded", *["1 failed, 1 skipped, 1 succeeded"] * 2, "3 succeeded"]

        for run_id in (QUICKSTART, QUICKSTART_AGAIN):
            tasks = store.tasks(run_id)
            assert [(t.name, t.state, t.kind) for t in tasks] == [
                ("fetch", TaskState.SUCCEEDED, "shell"),
                ("analyse", TaskState.SUCCEEDED, "notebook"),
                ("summarize", TaskState.SUCCEEDED, "python")]
            assert tasks[2].to_json()["result"] == {"count": 3, "total": 1807, "largest": 1764}
            assert tasks[1].to_json()["result"]["powers"] == [1, 42, 1764]
            assert [t.reused_from for t in tasks] == (
                [None] * 3 if run_id == QUICKSTART else [QUICKSTART] * 3)
        make, boom, after_boom = store.tasks(FLAKY)
        assert make.state is TaskState.SUCCEEDED
        assert make.to_json()["result"] == {"k": 7, "squares": [0, 1, 4, 9, 16, 25, 36]}
        assert (boom.state, boom.attempts, boom.exit_code) == (TaskState.FAILED, 2, 3)
        assert [(a["number"], a["state"], a["exit_code"], a["worker"])
                for a in store.attempts(FLAKY, "boom")] == [
                    (1, "FAILED", 3, None), (2, "FAILED", 3, None)]
        assert (after_boom.state, after_boom.reason) == (TaskState.SKIPPED,
                                                         "upstream 'boom' failed")
        events = store.events(FLAKY)
        assert [(e["task"], e["new"]) for e in events if e["task"] == "boom"] == [
            ("boom", s) for s in ("READY", "RUNNING", "RETRYING", "READY", "RUNNING", "FAILED")]
        assert (events[0]["task"], events[0]["new"], events[-1]["new"]) == (
            None, "RUNNING", "FAILED")
        for run_id in (QUICKSTART, QUICKSTART_AGAIN, FLAKY, FLAKY_K3):
            assert store.events(run_id) == [e for e in before["events"]
                                            if e["run_id"] == run_id]
    finally:
        store.close()

    # Every row is still there, column for column; the new columns are empty.
    for table, rows in before.items():
        after = raw_rows(v1_store, table)
        new = NEW_COLUMNS.get(table, set())
        assert [{k: v for k, v in r.items() if k not in new} for r in after] == rows
        assert all(r[c] is None for r in after for c in new)
    assert sqlite_tables(v1_store) == {*T.metadata.tables, "alembic_version"}
    assert raw_rows(v1_store, "kale_meta") == [{"key": "schema",
                                                 "value": str(T.SCHEMA_VERSION)}]
    assert raw_rows(v1_store, "alembic_version") == [{"version_num": schema.HEAD}]
    assert any(s.startswith("ALTER TABLE runs ADD COLUMN submitted_by") for s in statements)

    # Opening it again reads its version and does nothing else.
    schema_sql = raw_rows(v1_store, "sqlite_master")
    statements.clear()
    Store(f"sqlite:///{v1_store}").close()
    assert statements and all(s.lstrip().upper().startswith(("SELECT", "PRAGMA"))
                              for s in statements), statements
    assert len(statements) <= 3
    assert raw_rows(v1_store, "sqlite_master") == schema_sql


def test_an_upgraded_store_takes_the_new_columns_and_tables(v1_store: Path) -> None:
    store = Store(f"sqlite:///{v1_store}")
    try:
        now = time.time()
        with store.engine.begin() as c:
            c.execute(T.runs.update().where(T.runs.c.id == FLAKY).values(submitted_by="ada"))
            c.execute(T.attempts.update().where(T.attempts.c.run_id == FLAKY)
                      .values(worker="w1"))
            c.execute(T.users.insert().values(name="ada", token_hash="a" * 64,
                                              worker_token_hash="b" * 64, created_at=now))
            c.execute(T.workers.insert().values(id="w1", user="ada", host="node1", pid=42,
                                                provider="local", slots=4, state="ACTIVE",
                                                started_at=now, last_seen=now,
                                                info=json.dumps({"kale": "0.1"})))
            c.execute(T.samples.insert(), [
                {"run_id": FLAKY, "task": "boom", "attempt": 1, "ts": now + i, "cpu": 50.0,
                 "rss": 1 << 20, "read_bytes": 0, "write_bytes": 0, "procs": 1, "gpu": None}
                for i in range(3)])
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as c:  # unique tokens
            c.execute(T.users.insert().values(name="bob", token_hash="a" * 64,
                                              worker_token_hash="c" * 64, created_at=now))
        with store.engine.connect() as c:
            assert c.execute(sa.select(T.runs.c.id).where(T.runs.c.submitted_by == "ada")
                             ).scalars().all() == [FLAKY]
            assert [s for (s,) in c.execute(sa.select(T.samples.c.id)
                                            .order_by(T.samples.c.id))] == [1, 2, 3]
            assert c.execute(sa.select(T.workers.c.slots)).scalar() == 4
        assert {a["worker"] for a in store.attempts(FLAKY, "boom")} == {"w1"}
        # and it runs new workflows as before
        store.create_run("20261201-000000-0001", "wf", {"name": "wf"}, base_dir="/b",
                         run_dir="/r", params={}, options={}, tasks=[("a", "shell", "h")])
        store.apply([Change("20261201-000000-0001", "a", TaskState.READY)])
        assert store.runs()[0].id == "20261201-000000-0001"
    finally:
        store.close()


@pytest.mark.timeout(300)  # four processes at once, each given 120 s as a safety net
def test_processes_opening_a_version_1_store_at_once_upgrade_it_once(v1_store: Path) -> None:
    code = ("import sys; from kale.store.store import Store; "
            "s = Store(sys.argv[1]); print(len(s.runs())); s.close()")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(kale.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{v1_store}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert (p.returncode, out.strip()) == (0, "4"), err
    assert raw_rows(v1_store, "alembic_version") == [{"version_num": schema.HEAD}]
    assert len(raw_rows(v1_store, "runs")) == 4


def test_opening_a_store_at_head_does_not_load_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kale.db'}"
    code = ("import sys; from kale.store.store import Store; Store(sys.argv[1]).close(); "
            "print('alembic' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(kale.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    for _ in range(2):  # a new store, then one at head
        done = subprocess.run([sys.executable, "-c", code, url], env=env, capture_output=True,
                              text=True, timeout=120)
        assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_migration_0001_makes_exactly_the_version_1_schema(v1_store: Path,
                                                           tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.db"
    engine = sa.create_engine(f"sqlite:///{migrated}")
    try:
        with engine.begin() as c:
            command.upgrade(schema.alembic_config(c), "0001")
    finally:
        engine.dispose()

    def ddl(path: Path) -> list[tuple[str, str]]:
        return sorted((r["name"], r["sql"]) for r in raw_rows(path, "sqlite_master")
                      if r["name"] != "alembic_version" and r["sql"])

    assert ddl(migrated) == ddl(v1_store)  # the same CREATE statements, word for word
    assert raw_rows(migrated, "kale_meta") == raw_rows(v1_store, "kale_meta")


# -- new stores and the migrations, on each backend ---------------------------------------
def test_a_new_store_has_exactly_the_schema_of_tables_py(store_url: str,
                                                         store_engine: sa.Engine) -> None:
    Store(store_url).close()
    with store_engine.connect() as c:
        found = layout(c)
        assert found.pop("alembic_version")["columns"] == [
            ("version_num", "VARCHAR(32)", False)]
        assert untyped(found) == metadata_layout(T.metadata)
        assert compare_metadata(MigrationContext.configure(c), T.metadata) == []
        assert versions(c) == (schema.HEAD, str(T.SCHEMA_VERSION))
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    assert head == schema.HEAD == "0006"


def test_the_migrations_make_the_same_schema_as_a_new_store(store_url: str,
                                                            store_engine: sa.Engine) -> None:
    with store_engine.begin() as c:
        command.upgrade(schema.alembic_config(c), "0001")
        assert versions(c) == ("0001", "1")
        command.upgrade(schema.alembic_config(c), "head")
        assert versions(c) == (schema.HEAD, str(T.SCHEMA_VERSION))
    with store_engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), T.metadata) == []
        migrated = layout(c)
    with store_engine.begin() as c:  # start again, as a new store
        T.metadata.drop_all(c)
        c.execute(sa.text("DROP TABLE alembic_version"))
        assert sa.inspect(c).get_table_names() == []
    Store(store_url).close()
    with store_engine.connect() as c:
        assert layout(c) == migrated


def test_downgrading_to_0001_and_upgrading_again_keeps_the_runs(store_url: str,
                                                               store_engine: sa.Engine) -> None:
    store = Store(store_url)
    store.create_run("r1", "wf", {"name": "wf"}, base_dir="/b", run_dir="/r", params={},
                     options={}, tasks=[("a", "shell", "h")])
    store.close()
    with store_engine.begin() as c:
        command.downgrade(schema.alembic_config(c), "0001")
        assert versions(c) == ("0001", "1")
        assert set(sa.inspect(c).get_table_names()) == {*V1_TABLES, "alembic_version"}
        assert "submitted_by" not in {col["name"] for col in sa.inspect(c).get_columns("runs")}
    store = Store(store_url)
    try:
        assert [r.id for r in store.runs()] == ["r1"]
        assert [t.name for t in store.tasks("r1")] == ["a"]
    finally:
        store.close()
    with store_engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), T.metadata) == []
        assert versions(c) == (schema.HEAD, str(T.SCHEMA_VERSION))


@pytest.mark.parametrize("stamped", [False, True], ids=["as-kale-1-made-it", "stamped-0001"])
def test_a_version_1_store_upgrades_and_keeps_its_run(store_url: str, store_engine: sa.Engine,
                                                     stamped: bool) -> None:
    with store_engine.begin() as c:
        command.upgrade(schema.alembic_config(c), "0001")
        if not stamped:  # Kale 1 made no alembic_version table
            c.execute(sa.text("DROP TABLE alembic_version"))
        c.execute(sa.text(
            "INSERT INTO runs (id, workflow, state, created_at, ended_at, spec, base_dir, "
            "run_dir, params, options) VALUES ('old-run', 'wf', 'SUCCEEDED', 1.0, 2.0, "
            "'{\"name\": \"wf\"}', '/base', '/runs/old-run', '{\"n\": 1}', '{}')"))
        c.execute(sa.text(
            "INSERT INTO tasks (run_id, name, position, state, kind, attempts, result_json) "
            "VALUES ('old-run', 'a', 0, 'SUCCEEDED', 'python', 1, '[1, 2]')"))
        c.execute(sa.text("INSERT INTO attempts (run_id, task, number, state, exit_code) "
                          "VALUES ('old-run', 'a', 1, 'SUCCEEDED', 0)"))
        c.execute(sa.text("INSERT INTO events (run_id, task, ts, old, new, reason) "
                          "VALUES ('old-run', 'a', 1.5, 'RUNNING', 'SUCCEEDED', 'done')"))
    store = Store(store_url)
    try:
        [run] = store.runs()
        assert (run.id, run.state, run.params, run.ended_at) == (
            "old-run", RunState.SUCCEEDED, {"n": 1}, 2.0)
        [task] = store.tasks("old-run")
        assert (task.state, task.to_json()["result"]) == (TaskState.SUCCEEDED, [1, 2])
        assert [(a["number"], a["worker"]) for a in store.attempts("old-run", "a")] == [
            (1, None)]
        assert [(e["new"], e["reason"]) for e in store.events("old-run")] == [
            ("SUCCEEDED", "done")]
        with store.engine.begin() as c:
            c.execute(T.runs.update().values(submitted_by="ada"))
            c.execute(T.samples.insert().values(run_id="old-run", task="a", attempt=1, ts=1.6))
            c.execute(T.users.insert().values(name="ada", token_hash="t", worker_token_hash="w",
                                              created_at=3.0))
    finally:
        store.close()
    with store_engine.connect() as c:
        assert versions(c) == (schema.HEAD, str(T.SCHEMA_VERSION))
        assert compare_metadata(MigrationContext.configure(c), T.metadata) == []
        assert c.execute(sa.select(T.runs.c.submitted_by)).scalar() == "ada"
    Store(store_url).close()  # again: nothing to do


def test_an_upgrade_that_fails_leaves_the_store_as_it_was(store_url: str,
                                                          store_engine: sa.Engine,
                                                          engines: list[sa.Engine]) -> None:
    with store_engine.begin() as c:
        command.upgrade(schema.alembic_config(c), "0001")
        c.execute(sa.text("DROP TABLE alembic_version"))  # as Kale 1 made it
        c.execute(sa.text("INSERT INTO runs (id, workflow, state, created_at, spec, base_dir, "
                          "run_dir, params, options) VALUES "
                          "('old-run', 'wf', 'FAILED', 1.0, '{}', '/b', '/r', '{}', '{}')"))
        # in the way of migration 0002, after it has added its columns
        c.execute(sa.text("CREATE TABLE samples (x INTEGER)"))
        before = layout(c)
    with pytest.raises(sa.exc.DatabaseError, match="samples"):
        Store(store_url)
    with store_engine.connect() as c:
        assert layout(c) == before  # no new column, no alembic_version
        assert c.execute(sa.select(T.meta.c.value)).scalar() == "1"
    with store_engine.begin() as c:
        c.execute(sa.text("DROP TABLE samples"))
    store = Store(store_url)
    try:
        assert [r.id for r in store.runs()] == ["old-run"]
    finally:
        store.close()


def test_a_store_newer_than_this_kale_is_refused(store_url: str, store_engine: sa.Engine,
                                                 engines: list[sa.Engine]) -> None:
    Store(store_url).close()
    with store_engine.begin() as c:
        c.execute(T.meta.update().where(T.meta.c.key == "schema")
                  .values(value=str(T.SCHEMA_VERSION + 1)))
    with pytest.raises(KaleError, match=rf"has schema {T.SCHEMA_VERSION + 1}, newer than this "
                                        rf"Kale \({T.SCHEMA_VERSION}\); upgrade Kale") as e:
        Store(store_url)
    password = sa.engine.make_url(store_url).password
    assert password is None or str(password) not in str(e.value)
    with store_engine.connect() as c:  # and it is left as it was
        assert versions(c) == (schema.HEAD, str(T.SCHEMA_VERSION + 1))


def test_the_migrations_ship_inside_the_package() -> None:
    folder = Path(kale.__file__).parent / "store" / "migrations"
    assert folder.resolve() == schema.MIGRATIONS
    assert {p.name for p in folder.iterdir()} >= {"env.py", "script.py.mako", "versions"}
    assert sorted(p.name for p in (folder / "versions").glob("*.py")) == [
        "0001_core.py", "0002_manager.py", "0003_batch.py", "0004_code.py", "0005_dynamic.py",
        "0006_outputs.py"]
    script = ScriptDirectory.from_config(schema.alembic_config())
    assert [r.revision for r in reversed(list(script.walk_revisions()))] == [
        schema.revision(v) for v in range(1, T.SCHEMA_VERSION + 1)]

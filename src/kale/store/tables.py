"""The store's tables (SQLAlchemy Core). Times are UNIX seconds (float). Names have no
length limit (the model sets none; PostgreSQL would enforce one, SQLite ignores it)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "kale_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow", String, nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("spec", Text, nullable=False),        # canonical workflow dict, JSON
    Column("base_dir", Text, nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("params", Text, nullable=False),      # JSON
    Column("options", Text, nullable=False),     # JSON: selection, force, jobs, rerun_of
    Column("owner_pid", Integer),                # process driving the run, if any
    Column("owner_host", String),
    Column("owner_start", String(64)),           # boot id + start time: a reused pid is not it
    Column("cancel_requested", Float),           # set by `kale cancel`; the owner polls it
    Column("message", Text),
)

tasks = Table(
    "tasks", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String, primary_key=True),
    Column("position", Integer, nullable=False, default=0),  # order in the workflow
    Column("state", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("exit_code", Integer),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("reason", Text),           # why it is in its state (one line)
    Column("error", Text),
    Column("traceback", Text),
    Column("details", Text),          # JSON, e.g. {"cell_index": 3}
    Column("artifacts", Text),        # JSON, e.g. {"notebook": path}
    Column("def_hash", String(64)),
    Column("cache_key", String(64)),
    Column("result_json", Text),      # the result when it is JSON
    Column("result_path", Text),      # else a pickle file
    Column("result_hash", String(64)),
    Column("reused_from", String(64)),  # run id whose result this task reused
    Column("stdout", Text),
    Column("stderr", Text),
    Index("ix_tasks_cache_key", "cache_key"),
)

attempts = Table(
    "attempts", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("task", String, primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("exit_code", Integer),
    Column("error", Text),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("task", String),           # None for run-level events
    Column("ts", Float, nullable=False),
    Column("old", String(16)),
    Column("new", String(16), nullable=False),
    Column("reason", Text),
    Index("ix_events_run", "run_id", "id"),
)

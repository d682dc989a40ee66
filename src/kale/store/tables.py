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

SCHEMA_VERSION = 6

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
    Column("submitted_by", String(64)),          # the manager user who submitted it
    Index("ix_runs_submitted_by", "submitted_by", "created_at"),
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
    Column("code", Text),             # JSON: the user code the result was made with
    Column("spec", Text),             # JSON: a task the run added (a map's member)
    Column("outputs", Text),          # JSON: its declared output files as they were made
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
    Column("worker", String(64)),     # the worker that ran it (manager runs)
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

users = Table(
    "users", metadata,
    Column("name", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),         # sha256 hex
    Column("worker_token_hash", String(64), nullable=False, unique=True),  # sha256 hex
    Column("created_at", Float, nullable=False),
)

workers = Table(
    "workers", metadata,
    Column("id", String(64), primary_key=True),
    Column("user", String(64), nullable=False),
    Column("host", String, nullable=False),
    Column("pid", Integer),
    Column("provider", String(32)),   # "local" when the manager started it, else None
    Column("slots", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # ACTIVE | LOST | STOPPED
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("info", Text),             # JSON: python, kale version, kinds
)

samples = Table(
    "samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("task", String, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ts", Float, nullable=False),
    Column("cpu", Float),             # percent of one core, summed over the process tree
    Column("rss", Integer),           # bytes
    Column("read_bytes", Integer),    # cumulative
    Column("write_bytes", Integer),   # cumulative
    Column("procs", Integer),         # processes in the tree
    Column("gpu", Text),              # JSON list per GPU: util %, memory bytes (NVML)
    Index("ix_samples_run", "run_id", "task", "id"),
)

batch_jobs = Table(
    "batch_jobs", metadata,
    Column("id", String(64), primary_key=True),   # Kale's id, also the job's name
    Column("user", String(64), nullable=False),
    Column("scheduler", String(32), nullable=False),
    Column("mode", String(8), nullable=False),     # job (one task) | pilot
    Column("pool", String, nullable=False),        # which tasks its worker takes
    Column("native_id", String(64)),               # the scheduler's job id
    Column("state", String(16), nullable=False),   # NEW QUEUED ACTIVE COMPLETED FAILED CANCELED
    Column("nodes", Integer, nullable=False),
    Column("submitted_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("info", Text),                          # JSON: attempt key, message, exit code
    Index("ix_batch_jobs_state", "state"),
)

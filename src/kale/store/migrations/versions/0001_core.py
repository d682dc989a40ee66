"""Schema 1: runs, tasks, attempts and events (Kale before the manager).

Exactly what ``tables.metadata.create_all`` made at schema version 1 (commit a66482c),
kale_meta row included. Stores made then have no alembic_version table: opening one stamps
this revision, then upgrades.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kale_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float()),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("base_dir", sa.Text(), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("owner_pid", sa.Integer()),
        sa.Column("owner_host", sa.String()),
        sa.Column("owner_start", sa.String(64)),
        sa.Column("cancel_requested", sa.Float()),
        sa.Column("message", sa.Text()),
    )
    op.create_index("ix_runs_workflow", "runs", ["workflow"])
    op.create_table(
        "tasks",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("traceback", sa.Text()),
        sa.Column("details", sa.Text()),
        sa.Column("artifacts", sa.Text()),
        sa.Column("def_hash", sa.String(64)),
        sa.Column("cache_key", sa.String(64)),
        sa.Column("result_json", sa.Text()),
        sa.Column("result_path", sa.Text()),
        sa.Column("result_hash", sa.String(64)),
        sa.Column("reused_from", sa.String(64)),
        sa.Column("stdout", sa.Text()),
        sa.Column("stderr", sa.Text()),
    )
    op.create_index("ix_tasks_cache_key", "tasks", ["cache_key"])
    op.create_table(
        "attempts",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(), primary_key=True),
        sa.Column("number", sa.Integer(), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float()),
        sa.Column("ended_at", sa.Float()),
        sa.Column("exit_code", sa.Integer()),
        sa.Column("error", sa.Text()),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String()),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("old", sa.String(16)),
        sa.Column("new", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
    )
    op.create_index("ix_events_run", "events", ["run_id", "id"])
    set_schema(revision)


def downgrade() -> None:
    for table in ("events", "attempts", "tasks", "runs", "kale_meta"):
        op.drop_table(table)  # their indexes go with them


def set_schema(version: str) -> None:
    """The kale_meta row ``schema``, which kale.store.schema reads to skip Alembic."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

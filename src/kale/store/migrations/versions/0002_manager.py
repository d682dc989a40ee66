"""Schema 2: the manager's users, workers and resource samples; who submitted a run and
which worker ran an attempt.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ALTER TABLE ... ADD COLUMN, on SQLite too.
    op.add_column("runs", sa.Column("submitted_by", sa.String(64)))
    op.create_index("ix_runs_submitted_by", "runs", ["submitted_by", "created_at"])
    op.add_column("attempts", sa.Column("worker", sa.String(64)))
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("worker_token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("provider", sa.String(32)),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("info", sa.Text()),
    )
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("cpu", sa.Float()),
        sa.Column("rss", sa.Integer()),
        sa.Column("read_bytes", sa.Integer()),
        sa.Column("write_bytes", sa.Integer()),
        sa.Column("procs", sa.Integer()),
        sa.Column("gpu", sa.Text()),
    )
    op.create_index("ix_samples_run", "samples", ["run_id", "task", "id"])
    set_schema(revision)


def downgrade() -> None:
    for table in ("samples", "workers", "users"):
        op.drop_table(table)
    # SQLite cannot drop every kind of column in place: batch mode copies the table there.
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("worker")
    op.drop_index("ix_runs_submitted_by", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("submitted_by")
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema``, which kale.store.schema reads to skip Alembic."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

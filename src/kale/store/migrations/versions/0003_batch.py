"""Schema 3: batch jobs the manager submitted (per-task jobs and pilots), so a restarted
manager re-attaches to the ones still queued or running.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(64), nullable=False),
        sa.Column("scheduler", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("pool", sa.String(), nullable=False),
        sa.Column("native_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("info", sa.Text()),
    )
    op.create_index("ix_batch_jobs_state", "batch_jobs", ["state"])
    set_schema(revision)


def downgrade() -> None:
    op.drop_index("ix_batch_jobs_state", "batch_jobs")
    op.drop_table("batch_jobs")
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema`` (a migration is a frozen snapshot: its own copy)."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

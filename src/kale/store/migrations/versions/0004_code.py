"""Schema 4: the user code each task result was made with (``tasks.code``, JSON: file ->
content hash), so a result is reused only while that code is unchanged on disk.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("code", sa.Text()))
    set_schema(revision)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("code")
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema`` (a migration is a frozen snapshot: its own copy)."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

"""Schema 6: the declared output files of a task's result as they were made
(``tasks.outputs``, JSON: path -> size, mtime and ctime in ns, inode), so that a file
changed since is told by its own metadata, not by comparing its times with the engine's
clock (a shared file system's server may keep another time).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("outputs", sa.Text()))
    set_schema(revision)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("outputs")
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema`` (a migration is a frozen snapshot: its own copy)."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

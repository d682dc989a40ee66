"""Schema 5: tasks a run adds while it runs (``tasks.spec``, JSON: what a map's member
binds and its cache key, see kale.engine.dynamic), so a resumed run knows them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("spec", sa.Text()))
    set_schema(revision)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("spec")
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema`` (a migration is a frozen snapshot: its own copy)."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

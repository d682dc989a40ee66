"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
# The revision is the schema version it makes (tables.SCHEMA_VERSION), four digits.
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    set_schema(revision)


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
    set_schema(down_revision)


def set_schema(version: str) -> None:
    """The kale_meta row ``schema``, which kale.store.schema reads to skip Alembic."""
    meta = sa.table("kale_meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    op.execute(meta.delete().where(meta.c.key == "schema"))
    op.bulk_insert(meta, [{"key": "schema", "value": str(int(version))}])

"""Alembic's environment for the store's migrations (see :mod:`kale.store.schema`).

Kale runs them on the connection that opens the store, passed in
``config.attributes["connection"]`` and already inside a transaction, so the upgrade is part
of that transaction. Without one (Alembic's own command line, given an ini file), the
``sqlalchemy.url`` option says where the store is; ``--sql`` writes the SQL out instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from kale.store import tables

config = context.config


def run(connection: Connection | None = None) -> None:
    context.configure(
        connection=connection,
        # without one: --sql, which writes SQL for the URL's dialect
        url=None if connection is not None else config.get_main_option("sqlalchemy.url"),
        literal_binds=connection is None,
        target_metadata=tables.metadata,  # what autogenerate compares the database with
        render_as_batch=True,  # autogenerate writes ALTERs SQLite cannot do as table copies
    )
    with context.begin_transaction():  # nothing to begin when the caller holds one
        context.run_migrations()


if context.is_offline_mode():
    run()
elif (shared := config.attributes.get("connection")) is not None:
    run(shared)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes and no sqlalchemy.url option")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()

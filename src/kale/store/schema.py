"""The store's schema version, and upgrading an older store when it is opened.

The schema is versioned by Alembic migrations shipped in ``kale/store/migrations``: one
revision per schema version, named after it (version 2 is revision ``"0002"``), each of
which also writes its number to the ``kale_meta`` row ``schema``. :func:`migrate` runs
inside :class:`~kale.store.store.Store`'s opening transaction:

* at head (the common case): one ``has_table`` and one ``SELECT`` of that row; Alembic is
  not even imported;
* an empty database: ``create_all`` from :mod:`kale.store.tables` and the Alembic version
  table stamped at head (the migrations yield the same schema; the tests check it);
* older (version-1 stores predate Alembic, so have no ``alembic_version`` table: they are
  stamped with the revision their ``kale_meta`` row names first): the migrations from there
  to head, in the same transaction;
* newer than this Kale: :class:`~kale.errors.KaleError`.

Two processes must not upgrade one store at once: on PostgreSQL the caller holds an advisory
lock; on SQLite the upgrade starts with ``BEGIN IMMEDIATE`` (SQLite's write lock), then
reads the version again. Either way the whole upgrade is one transaction: a crash leaves the
store as it was.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kale.errors import KaleError
from kale.store import tables as T

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default name and layout, stamped by hand
_alembic_lock = threading.Lock()  # alembic.context and alembic.op are process-wide


def revision(version: int) -> str:
    """The Alembic revision of a schema version: 2 -> ``"0002"``."""
    return f"{version:04d}"


HEAD = revision(T.SCHEMA_VERSION)


def migrate(connection: Connection) -> None:
    """Bring the store behind ``connection`` (in a transaction) to this Kale's schema."""
    found = _stored_version(connection)
    if found == T.SCHEMA_VERSION:
        return
    _check_not_newer(connection, found)
    if connection.dialect.name == "sqlite" and _begin_immediate(connection):
        # Another process may have upgraded it while this one waited for the lock.
        found = _stored_version(connection)
        if found == T.SCHEMA_VERSION:
            return
        _check_not_newer(connection, found)
    kale_tables = set(sa.inspect(connection).get_table_names()) & set(T.metadata.tables)
    if found is None and not kale_tables:
        _create(connection)
    else:
        _upgrade(connection, found or 1)  # no version row but tables: made by version 1


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the store's migrations, in code (there is no ini file);
    ``migrations/env.py`` runs them on ``connection``, inside its transaction."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _stored_version(connection: Connection) -> int | None:
    """The ``kale_meta`` schema version, None if there is none (a new store)."""
    if not sa.inspect(connection).has_table(T.meta.name):
        return None
    value = connection.execute(
        sa.select(T.meta.c.value).where(T.meta.c.key == "schema")).scalar()
    return None if value is None else int(value)


def _check_not_newer(connection: Connection, found: int | None) -> None:
    if found is not None and found > T.SCHEMA_VERSION:
        url = connection.engine.url.render_as_string(hide_password=True)
        raise KaleError(f"the store at {url} has schema {found}, newer than this Kale "
                        f"({T.SCHEMA_VERSION}); upgrade Kale")


def _begin_immediate(connection: Connection) -> bool:
    """Take SQLite's write lock now, and make the DDL that follows part of the transaction
    (pysqlite would otherwise commit each CREATE or ALTER on its own). False if the driver
    is already inside a transaction, which then goes on as it is."""
    dbapi = connection.connection.dbapi_connection
    if dbapi is None or getattr(dbapi, "in_transaction", True):
        return False
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    return True


def _create(connection: Connection) -> None:
    """A new store: every table at head, and Alembic's version table saying so."""
    T.metadata.create_all(connection)
    connection.execute(T.meta.insert().values(key="schema", value=str(T.SCHEMA_VERSION)))
    version = sa.Table(VERSION_TABLE, sa.MetaData(),
                       sa.Column("version_num", sa.String(32), nullable=False),
                       sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))
    version.create(connection)
    connection.execute(version.insert().values(version_num=HEAD))


def _upgrade(connection: Connection, found: int) -> None:
    """Run the migrations from schema ``found`` to head (Alembic is imported only here)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = alembic_config(connection)
    with _alembic_lock:
        if MigrationContext.configure(connection).get_current_revision() is None:
            # Made before Kale used Alembic (schema 1), or by ``create_all`` alone.
            command.stamp(config, revision(found))
        command.upgrade(config, "head")
    now = _stored_version(connection)
    if now != T.SCHEMA_VERSION:
        raise KaleError(f"upgrading the store left schema {now}, not {T.SCHEMA_VERSION}: "
                        f"a migration in {MIGRATIONS} does not set kale_meta's schema row")

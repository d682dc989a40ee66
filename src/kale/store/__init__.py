"""The store layer: durable runs, task states, attempts, results and events (SQLAlchemy 2;
SQLite by default, PostgreSQL by URL)."""

from kale.store.store import Change, RunRecord, Store, TaskRecord

__all__ = ["Change", "RunRecord", "Store", "TaskRecord"]

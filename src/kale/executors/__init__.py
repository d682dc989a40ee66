"""Executors: how tasks reach compute (``local`` now; batch queues later)."""

from __future__ import annotations

from kale.errors import UsageError
from kale.executors.base import Executor


def make_executor(name: str = "local", **options: object) -> Executor:
    if name == "local":
        from kale.executors.local import LocalExecutor

        jobs = options.get("jobs")
        return LocalExecutor(jobs=int(jobs) if isinstance(jobs, int | str) else None)
    raise UsageError(f"unknown executor {name!r}; available here: local")


__all__ = ["Executor", "make_executor"]

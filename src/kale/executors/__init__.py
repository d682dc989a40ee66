"""Executors: how tasks reach compute (this machine, the manager's workers, batch queues,
other workflow engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kale.errors import UsageError
from kale.executors.base import Executor
from kale.model.executor import ExecutorSpec
from kale.model.workflow import Workflow


def make_executor(name: str = "local", **options: object) -> Executor:
    if name == "local":
        from kale.executors.local import LocalExecutor

        jobs = options.get("jobs")
        return LocalExecutor(jobs=int(jobs) if isinstance(jobs, int | str) else None)
    raise UsageError(f"unknown executor {name!r}; available here: local")


def default_spec(wf: Workflow, chosen: Any) -> ExecutorSpec | None:
    """Where a run's tasks without an executor of their own go: the run's chosen executor
    (``kale run --executor``, ``wf.run(executor=)``), else the workflow's."""
    return ExecutorSpec.parse(chosen)[0] if chosen not in (None, "local") else wf.executor


def for_run(base: Executor, wf: Workflow, chosen: Any, run_dir: Path,
            jobs: int | None = None) -> Executor:
    """The executor of a run whose other tasks go to ``base``: ``base`` itself, or a
    :class:`~kale.executors.router.Router` when some tasks run on another workflow engine."""
    from kale.executors.router import Router, uses_engines

    spec = default_spec(wf, chosen)
    if not uses_engines(wf, spec):
        return base
    return Router(base, wf, spec, run_dir, jobs)


__all__ = ["Executor", "default_spec", "for_run", "make_executor"]

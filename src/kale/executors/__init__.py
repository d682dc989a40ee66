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
            jobs: int | None = None, refuse_engines: str | None = None) -> Executor:
    """The executor of a run whose other tasks go to ``base``: ``base`` itself, or a
    :class:`~kale.executors.router.Router` when some tasks run on another workflow engine.
    ``refuse_engines``: why this run may not use one (raised as a
    :class:`~kale.errors.UsageError` if it names one; a task added later is told it)."""
    from kale.executors.router import Router, uses_engines

    spec = default_spec(wf, chosen)
    if refuse_engines is not None:
        check_no_engines(wf, spec, refuse_engines)
        base.engines_refused = refuse_engines
        return base
    if not uses_engines(wf, spec):
        return base
    return Router(base, wf, spec, run_dir, jobs)


def check_no_engines(wf: Workflow, spec: ExecutorSpec | None, why: str) -> None:
    """Raise :class:`~kale.errors.UsageError`, saying ``why``, if a task of ``wf`` (or the
    run's executor ``spec``) names a workflow engine."""
    from kale.executors.router import engine_spec

    named = sorted({f"{s.kind} ({name})" for name in wf.tasks
                    if (s := engine_spec(wf, name, spec)) is not None})
    if named:
        shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        raise UsageError(f"this run names the engine {shown}: {why}")


__all__ = ["Executor", "check_no_engines", "default_spec", "for_run", "make_executor"]

"""Creating, resuming and driving runs: the few steps shared by the CLI and the Python API."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kale.config import user_name
from kale.engine import collect
from kale.engine.engine import Engine, Listener
from kale.errors import KaleError, Problem, RunBusy, UsageError, ValidationError
from kale.executors import Executor, default_spec, for_run, make_executor
from kale.model.executor import ExecutorSpec
from kale.model.options import RunOptions
from kale.model.states import RunState, TaskState
from kale.model.workflow import Workflow
from kale.store.store import RunIdTaken, RunRecord, Store


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def apply_params(wf: Workflow, params: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow's parameters with ``params`` overriding; unknown names are an error."""
    unknown = [k for k in params if k not in wf.parameters]
    if unknown:
        known = ", ".join(wf.parameters) or "none declared"
        raise ValidationError([Problem(f"unknown workflow parameter {k!r} (parameters: {known})",
                                       ("parameters", k)) for k in unknown])
    return {**wf.parameters, **params}


def create_run(store: Store, home: Path, wf: Workflow, opts: RunOptions) -> RunRecord:
    """Validate, select, and record a new run (all tasks PENDING)."""
    wf.validate()
    params = apply_params(wf, opts.params)
    check_executor(wf, opts)  # an unknown executor fails before recording
    selected = opts.selection.apply(wf)
    if opts.rerun_of:
        prev = {t.name: t.state for t in store.tasks(store.get_run(opts.rerun_of).id)}
        selected &= {n for n, s in prev.items() if s is not TaskState.SUCCEEDED}
        if not selected:
            raise ValidationError([Problem(f"run {opts.rerun_of} has no failed tasks to rerun")])
    memo: dict[object, object] = {}
    spec = wf.to_dict(for_store=True, memo=memo)
    tasks = [(n, t.kind, t.definition_hash(wf.base_dir, memo, spec["tasks"][n]))
             for n, t in wf.tasks.items()]
    options = {"selected": sorted(selected) if len(selected) < len(wf) else None,
               "selection": opts.selection.to_dict(), "force": opts.force,
               "executor": opts.executor, "jobs": opts.jobs, "rerun_of": opts.rerun_of,
               "manager": opts.submitted_by is not None}
    for _ in range(ID_TRIES):
        # An id is the time and a random suffix: two runs created in one second may draw
        # the same one. The run's folder, then its row, claim it; a taken one, another.
        run_id = new_run_id()
        run_dir = home / "runs" / run_id
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:  # another run of this home
            continue
        try:
            store.create_run(
                run_id, wf.name, spec, base_dir=str(wf.base_dir), run_dir=str(run_dir),
                params=params, options=options, tasks=tasks,
                submitted_by=opts.submitted_by or user_name())  # its reuse and listing
        except RunIdTaken:  # another home's run, on a shared store
            run_dir.rmdir()
            continue
        return store.get_run(run_id)
    raise KaleError(f"no free run id in {ID_TRIES} tries (the clock of this host, "
                    f"{time.strftime('%Y%m%d-%H%M%S')}, may be stuck)")


#: how many ids :func:`create_run` draws before it gives up
ID_TRIES = 50


def check_executor(wf: Workflow, opts: RunOptions) -> None:
    """The chosen executor exists; batch executors only through a manager."""
    spec = wf.executor
    if opts.executor is not None:
        spec, problems = ExecutorSpec.parse(opts.executor)
        if problems:
            raise UsageError("executor: " + "; ".join(
                (".".join(p) + ": " if p else "") + m for p, m in problems))
    if opts.submitted_by is None and wf.needs_manager(spec):
        what = "batch executors" if wf.uses_batch(spec) else "interactive steps"
        raise UsageError(f"{what} run through the Kale manager, which holds the run while "
                         "this process is gone: `kale run` and `wf.run()` start one when "
                         "needed")


def load_workflow(run: RunRecord) -> Workflow:
    return Workflow.from_dict(run.spec, base_dir=run.base_dir, trusted=True)


def check_resumable(run: RunRecord) -> None:
    if run.owner_alive():
        raise RunBusy(f"run {run.id} is still running (process {run.owner_pid}); "
                      f"`kale cancel {run.id}` stops it")


def make_engine(store: Store, run: RunRecord, wf: Workflow | None = None, *,
                listeners: Sequence[Listener] = (), jobs: int | None = None,
                executor: Executor | None = None) -> Engine:
    """The engine of ``run``; its executor is the run's (``executor`` replaces it: a
    workflow across sites is driven with :class:`kale.sites.across.SiteRouter`)."""
    wf = wf or load_workflow(run)
    chosen = run.options.get("executor")
    jobs = jobs or run.options.get("jobs")
    if executor is None:
        spec = default_spec(wf, chosen)
        local = make_executor("local" if spec is None or spec.engine else spec.kind, jobs=jobs)
        executor = for_run(local, wf, chosen, Path(run.run_dir), jobs)
    return Engine(store, run, wf, executor, force=bool(run.options.get("force")),
                  listeners=list(listeners))


def drive(engine: Engine, *, handle_signals: bool = False) -> RunState:
    """Run ``engine`` to the end on a fresh event loop in this thread. With
    ``handle_signals`` (main thread only), SIGINT and SIGTERM cancel the run cleanly."""

    async def main() -> RunState:
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig, why in ((signal.SIGINT, "interrupted (Ctrl-C)"),
                             (signal.SIGTERM, "cancelled (SIGTERM)")):
                loop.add_signal_handler(sig, engine.cancel, why)
        return await engine.run()

    with collect.relaxed():  # (a run's allocations would set off full collections)
        return asyncio.run(main())

"""A run's tasks: detail, result, logs, resource samples, the kernel a task runs in, and
actions (cancel, suspend, resume, continue or reject an interactive step).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations."""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import PlainTextResponse

from kale.client.source import TASK_ACTIONS
from kale.manager.context import Ctx, User
from kale.manager.routes.runs import EventId
from kale.manager.schemas import (
    ERRORS,
    JSON_ERRORS,
    JsonResult,
    PickleResult,
    Sample,
    TaskActed,
    TaskDetail,
)

router = APIRouter(responses=ERRORS)

#: a byte offset into a log (a 4xx beyond what a file can be, never a 500)
Offset = Annotated[int, Query(ge=0, le=2**62)]


@router.get("/api/runs/{run_id}/tasks/{task}", response_model=TaskDetail)
def task_detail(ctx: Ctx, who: User, run_id: str, task: str) -> dict[str, Any]:
    """One task: its record, as the workflow describes it (description, parameters,
    upstream tasks), and each attempt (state, times, exit code, error, worker)."""
    from kale.client.local import task_detail

    return task_detail(ctx.store, ctx.own_run(who, run_id), task)


@router.post("/api/runs/{run_id}/tasks/{task}/{action}", response_model=TaskActed)
def task_action(ctx: Ctx, who: User, run_id: str, task: str, action: str,
                reason: str | None = None) -> dict[str, Any]:
    """``cancel``, ``suspend`` (SIGSTOP its processes) or ``resume`` (SIGCONT) a task;
    ``continue`` or ``reject`` an interactive step that waits for a person (``reason``
    says why, for the record)."""
    if action not in TASK_ACTIONS:
        raise HTTPException(404, f"no task action {action!r} ({', '.join(TASK_ACTIONS)})")
    rec = ctx.own_run(who, run_id)
    before = ctx.store.task(rec.id, task).state
    if action in ("continue", "reject") and before.value != "WAITING":
        raise HTTPException(409, f"task {task!r} is {before.value}, not WAITING for a "
                            "person: only an interactive step can be continued or rejected")
    engine = ctx.host.engine(rec.id)
    if engine is None:
        raise HTTPException(409, f"run {rec.id} is not active in this manager")
    if action == "cancel":
        engine.cancel_task(task, "cancelled (API)")
    else:
        engine.control(task, action, reason or "")
    return {"id": rec.id, "task": task, "action": action, "state": before.value}


@router.get("/api/runs/{run_id}/tasks/{task}/result",
            response_model=PickleResult | JsonResult)
def result(ctx: Ctx, who: User, run_id: str, task: str) -> dict[str, Any]:
    """The task's result: ``{"json": text}``, or ``{"pickle": base64}`` (the bytes the
    task's worker made; the manager never opens them, the user's client does)."""
    import base64

    rec = ctx.store.task(ctx.own_run(who, run_id).id, task)
    if rec.state.value != "SUCCEEDED":
        raise HTTPException(409, f"task {task!r} is {rec.state.value}"
                            + (f": {rec.error}" if rec.error else ""))
    if rec.result_path:
        blob = Path(rec.result_path).read_bytes()
        return {"pickle": base64.b64encode(blob).decode()}
    return {"json": rec.result_json}


@router.get("/api/runs/{run_id}/tasks/{task}/logs", response_class=PlainTextResponse,
            responses={**JSON_ERRORS, 200: {"description": "The log from ``offset`` on"}})
def logs(ctx: Ctx, who: User, run_id: str, task: str, stream: str = "stdout",
         offset: Offset = 0) -> str:
    """The task's log (its latest attempt's) from byte ``offset`` on, as every run
    interface reads it (:func:`kale.client.local.read_log`)."""
    from kale.client.local import read_log

    if stream not in ("stdout", "stderr"):
        raise HTTPException(422, "stream is stdout or stderr")
    return read_log(ctx.store, ctx.own_run(who, run_id).id, task, stream, offset)


@router.get("/api/runs/{run_id}/tasks/{task}/resources", response_model=list[Sample])
def resources(ctx: Ctx, who: User, run_id: str, task: str, after: EventId = 0
              ) -> list[dict[str, Any]]:
    """Resource samples of the task's process tree: CPU %, RSS, I/O, GPU."""
    from kale.store import workers as wstore

    rec = ctx.own_run(who, run_id)
    ctx.store.task(rec.id, task)  # 400 for an unknown task
    return wstore.samples(ctx.store, rec.id, task, after_id=max(0, after))


@router.get("/api/runs/{run_id}/tasks/{task}/kernel")
def kernel(ctx: Ctx, who: User, run_id: str, task: str) -> dict[str, Any]:
    """How to reach the Jupyter kernel the task runs in (ports, HMAC key, host), while it
    runs: only the run's owner gets it, and only through this authenticated call."""
    rec = ctx.own_run(who, run_id)
    info = ctx.broker.kernel(rec.id, task)
    if info is None and ctx.store.task(rec.id, task).state.value == "RUNNING":
        # a task on another engine's worker (Dask, Parsl) leaves it in its directory
        from kale.executors.engines.attempt import read_kernel

        info = read_kernel(Path(rec.run_dir) / task)
    if info is None:
        raise HTTPException(404, f"task {task!r} of run {rec.id} has no running kernel "
                            "(notebook tasks have one while they run on a worker)")
    return info

"""Workers (list, start local workers or pilot jobs, stop one), the batch jobs this
manager submitted, and the scheduler's queue.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations."""

import socket
from typing import Any

from fastapi import APIRouter, HTTPException

from kale.errors import KaleError
from kale.manager.context import Ctx, User
from kale.manager.models import StartWorkers
from kale.manager.schemas import (
    ERRORS,
    BatchJob,
    JobCancelled,
    LocalWorkersStarted,
    PilotsStarted,
    QueueDoc,
    WorkerDoc,
    WorkerStopped,
)

router = APIRouter(responses=ERRORS)


@router.get("/api/workers", response_model=list[WorkerDoc])
def workers(ctx: Ctx, who: User) -> list[dict[str, Any]]:
    """The user's workers: connected or not, what they run, when last heard of."""
    return ctx.broker.snapshot(who.user)


@router.post("/api/workers", status_code=201,
             response_model=LocalWorkersStarted | PilotsStarted)
def start_workers(ctx: Ctx, who: User, body: StartWorkers) -> dict[str, Any]:
    """Start workers by hand: local worker processes, or pilot jobs of a scheduler."""
    from kale.model.executor import ExecutorSpec

    if body.kind == "local":
        if ctx.local is None or who.user != ctx.tokens.owner:
            raise HTTPException(409, "this manager starts no local workers (it runs with "
                                "--workers 0, or you are not the home's owner)")
        return {"kind": "local", "pids": ctx.local.add(body.count, body.slots)}
    spec, problems = ExecutorSpec.parse({
        "kind": body.kind, "mode": "pilot", "nodes": body.nodes,
        "walltime": body.walltime, "queue": body.queue, "account": body.account,
        **({"slots": body.slots} if body.slots else {})})
    if problems:
        raise HTTPException(422, "; ".join(f"{'.'.join(p) or 'executor'}: {m}"
                                           for p, m in problems))
    if ctx.batch is None:
        raise HTTPException(409, "this manager has no URL its batch jobs could reach")
    try:
        return {"kind": body.kind, "jobs": ctx.batch.start_pilots(who.user, spec, body.count)}
    except KaleError as e:
        raise HTTPException(400, str(e)) from None


@router.post("/api/workers/{worker_id}/stop", response_model=WorkerStopped)
def stop_worker(ctx: Ctx, who: User, worker_id: str) -> dict[str, Any]:
    """Stop a worker: its tasks are handed back and run elsewhere. A batch worker's job
    is cancelled; a local worker is sent SIGTERM."""
    w = next((w for w in ctx.broker.snapshot(who.user) if w["id"] == worker_id), None)
    if w is None:
        raise HTTPException(404, f"no worker {worker_id!r}")
    if w["job"] and ctx.batch is not None and ctx.batch.cancel_job(who.user, w["job"]):
        return {"id": worker_id, "stopped": True, "job": w["job"]}
    if ctx.local is not None and w["provider"] == "local" and w["pid"] \
            and w["host"] == socket.gethostname() and ctx.local.stop_one(int(w["pid"])):
        return {"id": worker_id, "stopped": True}
    raise HTTPException(409, f"worker {worker_id} was not started by this manager "
                        f"(pid {w['pid']} on {w['host']}); stop it where it runs")


@router.get("/api/jobs", response_model=list[BatchJob])
def jobs(ctx: Ctx, who: User, limit: int = 100) -> list[dict[str, Any]]:
    """The batch jobs this manager submitted for the user, newest first."""
    from kale.store import workers as wstore

    return wstore.jobs(ctx.store, who.user, limit=max(1, min(limit, 1000)))


@router.post("/api/jobs/{job_id}/cancel", response_model=JobCancelled)
def cancel_job(ctx: Ctx, who: User, job_id: str) -> dict[str, Any]:
    if ctx.batch is None or not ctx.batch.cancel_job(who.user, job_id):
        raise HTTPException(404, f"no queued or running batch job {job_id!r}")
    return {"id": job_id, "cancelled": True}


@router.get("/api/queue", response_model=QueueDoc)
def queue(ctx: Ctx, who: User, scheduler: str | None = None) -> dict[str, Any]:
    """The batch queue: the jobs of this manager's account (state, reason, time queued,
    expected start), partitions, and which jobs Kale submitted for what."""
    import getpass

    from kale.batch.queue import queue_status
    from kale.store import workers as wstore

    try:
        doc = queue_status(scheduler, getpass.getuser(),
                           wstore.jobs(ctx.store, who.user, limit=1000))
    except KaleError as e:
        raise HTTPException(400, str(e)) from None
    if who.user != ctx.tokens.owner:
        # The scheduler lists the manager's account's jobs: another user sees only those
        # Kale submitted for them (none: see BatchWorkers._offered).
        doc["jobs"] = [j for j in doc["jobs"] if "kale" in j]
    return doc

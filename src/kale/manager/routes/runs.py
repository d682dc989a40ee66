"""Runs: list, submit, status (from memory while live), cancel, the workflow, a rerun, and
the event stream.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations."""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from kale.errors import UsageError
from kale.manager.auth import Identity
from kale.manager.context import Ctx, ManagerContext, User
from kale.manager.models import Rerun, Submit
from kale.manager.schemas import (
    ERRORS,
    JSON_ERRORS,
    RunCancelled,
    RunDoc,
    RunStates,
    RunStatus,
    Submitted,
)
from kale.model.options import RunOptions
from kale.model.states import RunState

router = APIRouter(responses=ERRORS)

#: an event or sample id (the store's ids are 32-bit integers on PostgreSQL)
EventId = Annotated[int, Query(ge=0, le=2**31 - 1)]


class EventStream(StreamingResponse):
    """Server-sent events (``text/event-stream``): how the events route is described."""

    media_type = "text/event-stream"


@router.get("/api/runs", response_model=list[RunDoc])
def runs(ctx: Ctx, who: User, limit: int = 50) -> list[dict[str, Any]]:
    return [r.to_json()
            for r in ctx.store.runs(max(1, min(limit, 1000)), users=ctx.users_of(who))]


@router.post("/api/runs", status_code=201)
def submit(ctx: Ctx, who: User, body: Submit) -> Submitted:
    from kale.model.workflow import Workflow

    wf = Workflow.from_dict(body.workflow, base_dir=body.base_dir, trusted=True)
    opts = RunOptions.from_json(body.model_dump(by_alias=True, exclude={"workflow"}),
                                submitted_by=who.user)  # (a copy of 100,000 tasks: 0.4 s)
    if opts.rerun_of:
        opts = opts.but(rerun_of=ctx.own_run(who, opts.rerun_of).id)
    rec = ctx.host.submit(wf, opts)
    return Submitted(id=rec.id)


# The answer is serialized here, not by FastAPI (a big run's tasks are many): RunStatus
# describes it, and tests/test_openapi.py holds the answers to it.
@router.get("/api/runs/{run_id}", response_model=RunStatus)
async def status(ctx: Ctx, who: User, run_id: str, tasks: bool = True,
                 states: Annotated[str | None, Query(
                     description="Comma-separated task states: list only the tasks in "
                                 "these (a big run's few tasks under way, say); the "
                                 "counts are still of every task.",
                     examples=["RUNNING,FAILED"])] = None,
                 limit: Annotated[int | None, Query(
                     ge=0, description="List at most this many tasks (the first in the "
                                       "workflow's order).")] = None) -> Response:
    """The run, how many of its tasks are in each state, and (unless ``tasks=false``)
    every task, or those in ``states``, at most ``limit`` of them. A live run's summary
    comes from memory: what progress bars poll (and, for that reason, is answered ahead
    of the framework: ``fastpath.py``)."""
    listed = None if states is None else _states(states)
    doc = None if tasks else live_summary(ctx, who, run_id)
    if doc is None and not tasks and listed is None and limit is None:
        # many clients ask for a run's summary as it ends: one count in the store serves
        # all who asked before it started
        doc = await ctx.reads.read(("summary", run_id, tuple(ctx.users_of(who))),
                                   lambda: stored_status(ctx, who, run_id, False))
    elif doc is None:
        doc = await run_in_threadpool(stored_status, ctx, who, run_id, tasks, listed, limit)
    return json_response(doc)


def _states(given: str) -> list[str]:
    """The states of ``states=``, checked: an unknown one is a 422 that names it."""
    from kale.client.local import check_states

    try:
        return check_states(s for s in given.split(",") if s.strip())
    except UsageError as e:
        raise HTTPException(422, f"states: {e}") from None


def live_summary(ctx: ManagerContext, who: Identity, run_id: str) -> dict[str, Any] | None:
    """A live run's summary, from memory (None: not live here, or not theirs)."""
    live = ctx.host.live(run_id)
    if live is None or live[0].submitted_by not in ctx.users_of(who):
        return None
    rec, engine = live
    counts = {s.value: n for s, n in dict(engine.counts).items() if n}
    doc: dict[str, Any] = {"run": rec.to_json(alive=True), "counts": counts}
    said = problems(ctx, rec, counts)
    if said:
        doc["problems"] = said
    return doc


def stored_status(ctx: ManagerContext, who: Identity, run_id: str, tasks: bool,
                  states: list[str] | None = None,
                  limit: int | None = None) -> dict[str, Any]:
    """The run's status document as every run interface gives it (read from the store,
    :func:`kale.client.local.status_document`), with what only the manager knows: a live
    run's counts from its engine, and its problems."""
    from kale.client.local import status_document

    rec = ctx.own_run(who, run_id)
    engine = ctx.host.engine(rec.id)
    live = None if engine is None else {s.value: n for s, n in dict(engine.counts).items()
                                        if n}
    doc = status_document(ctx.store, rec, tasks, live, states, limit)
    counts = doc["counts"]
    _say_failed(ctx, rec, doc)
    said = problems(ctx, rec, counts)
    if said:
        doc["problems"] = said
    return doc


def _say_failed(ctx: ManagerContext, rec: Any, doc: dict[str, Any]) -> None:
    """A run whose engine stopped because the store refused a write (the store therefore
    still says RUNNING) is FAILED in ``doc`` (the next manager resumes it from the store)."""
    failures = ctx.host.failures
    if rec.id in failures and rec.state is RunState.RUNNING:
        doc["run"].update(state=RunState.FAILED.value, message=failures[rec.id])


@router.get("/api/runs/{run_id}/states", response_model=RunStates)
async def run_states(ctx: Ctx, who: User, run_id: str) -> Response:
    """Every task's state by name, and the reason of each task a condition skipped: what
    a view of the whole graph loads (a run of 100,000 tasks: ~3 MB, against ~50 MB for
    its full status)."""
    return json_response(await run_in_threadpool(stored_states, ctx, who, run_id))


def stored_states(ctx: ManagerContext, who: Identity, run_id: str) -> dict[str, Any]:
    from kale.client.local import states_document

    rec = ctx.own_run(who, run_id)
    doc = states_document(ctx.store, rec)
    _say_failed(ctx, rec, doc)
    return doc


def problems(ctx: ManagerContext, rec: Any, counts: dict[str, int]) -> list[str]:
    """What keeps a run from going on that its tasks' states do not say: the store
    refused a write, the local workers cannot start, or an added user's tasks wait for a
    worker of theirs (the manager's own workers never run another user's tasks)."""
    out = []
    failure = ctx.host.failures.get(rec.id)
    if failure:
        out.append(failure)
    waiting = waiting_problem(ctx, rec.submitted_by) if counts.get("SUBMITTED") else None
    if waiting is not None:
        out.append(waiting)
    return out


def waiting_problem(ctx: ManagerContext, submitted_by: str | None) -> str | None:
    """What keeps the waiting tasks of ``submitted_by``'s runs from starting, if anything
    (the status board is told whether there is: :func:`kale.manager.app._tend_board`)."""
    user = submitted_by or ctx.tokens.owner
    if user == ctx.tokens.owner:
        trouble = ctx.local.problem() if ctx.local is not None else None
        if trouble is None:
            return None
        return (f"local workers cannot start: {trouble['error']}; next try in "
                f"{trouble['retry_in']:g} s (failure {trouble['failures']} in a "
                "row; the manager log has more)")
    if ctx.broker.live_workers_of(user):
        return None
    return (f"waiting for a worker of {user}'s: this manager runs no other user's "
            "tasks on its own workers; start one as yourself with `kale worker "
            "--manager URL --cert FILE` (worker token in $KALE_WORKER_TOKEN)")


@router.post("/api/runs/{run_id}/cancel", response_model=RunCancelled)
def cancel(ctx: Ctx, who: User, run_id: str) -> dict[str, Any]:
    from kale.client.local import cancel_run

    rec = ctx.own_run(who, run_id)
    engine = ctx.host.engine(rec.id)
    if engine is not None:
        engine.cancel("cancelled (API)")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not rec.state.terminal:
            time.sleep(0.05)
            rec = ctx.store.get_run(rec.id)
        if rec.state.terminal:  # and no longer live: a status asked next says it ended
            ctx.host.join(rec.id, max(0.0, deadline - time.monotonic()))
        return {"id": rec.id, "state": rec.state.value}
    return {"id": rec.id, "state": cancel_run(ctx.store, rec.id).value}


@router.get("/api/runs/{run_id}/workflow")
def run_workflow(ctx: Ctx, who: User, run_id: str) -> dict[str, Any]:
    """The workflow the run was made from (its canonical dict)."""
    return dict(ctx.own_run(who, run_id).spec)


@router.post("/api/runs/{run_id}/rerun", status_code=201)
def rerun(ctx: Ctx, who: User, run_id: str, body: Rerun) -> Submitted:
    """Run a run's workflow again, as a new run: its tasks that did not succeed
    (``failed``: what succeeded is reused), a selection (``only``), or everything below
    some tasks (``from``). The workflow is the one the run was made from."""
    from kale.model.workflow import Workflow

    rec = ctx.own_run(who, run_id)
    wf = Workflow.from_dict(rec.spec, base_dir=rec.base_dir, trusted=True)
    new = ctx.host.submit(wf, RunOptions.of(
        params=rec.params, only=body.only, from_=body.from_, force=body.force,
        jobs=rec.options.get("jobs"), executor=rec.options.get("executor"),
        rerun_of=rec.id if body.failed else None).but(submitted_by=who.user))
    return Submitted(id=new.id)


@router.get("/api/runs/{run_id}/events", response_class=EventStream, responses={
    **JSON_ERRORS, 200: {"description": "Server-sent events, each ``event: NAME`` and "
                         "``data: JSON``: ``state``, ``log``, ``resources``, and a last "
                         "``end``"}})
async def events(ctx: Ctx, who: User, run_id: str, after: EventId = 0) -> StreamingResponse:
    """Server-sent events: state changes (``event: state``), new log lines (``log``) and
    resource samples (``resources``) of the run's tasks, until the run ends."""
    rec = await run_in_threadpool(ctx.own_run, who, run_id)
    return StreamingResponse(_event_stream(ctx.store, rec.id, after, ctx.stopping),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def json_response(doc: Any) -> Response:
    return Response(json.dumps(doc, default=str), media_type="application/json")


async def _event_stream(store: Any, run_id: str, after: int,
                        stopping: threading.Event) -> AsyncIterator[str]:
    """A run's events (:class:`kale.store.tail.RunTail`), read every 0.1 s, as SSE: each
    poll's events go in one chunk (a chunk per event fell minutes behind a run of 100,000
    tasks; one per poll cut the lag of a 30,000-task run from p95 9.0 s to 3.4 s). It ends
    with the run (an ``end`` event) or, without one, when the manager stops."""
    from kale.store.tail import RunTail

    tail = await run_in_threadpool(RunTail, store, run_id, after)
    while not tail.ended and not stopping.is_set():
        batch = await run_in_threadpool(tail.poll)
        if batch:
            yield "".join(_sse(event, data) for event, data in batch)
        if not tail.ended:
            await asyncio.sleep(0.1)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"

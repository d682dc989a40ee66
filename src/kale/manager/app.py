"""The manager's HTTP API. Every endpoint but ``/health`` needs a token
(``Authorization: Bearer TOKEN``); a user sees only their own runs, and a worker token
opens nothing but the worker link (``/api/workers/link``, a WebSocket).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations,
and the dependencies they name are local to :func:`create_app`."""

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import kale
from kale.errors import KaleError, RunNotFound, UsageError, ValidationError
from kale.manager.auth import Identity, Tokens
from kale.manager.fastpath import LiveStatus
from kale.manager.limits import MAX_BODY, BodyLimit
from kale.manager.models import Health, Rerun, StartWorkers, Submit, Submitted
from kale.model.states import RunState
from kale.worker.protocol import HEARTBEAT_TIMEOUT, LINK_PATH

log = logging.getLogger("kale.manager")


@dataclass
class Settings:
    home: Path
    url: str = ""                 # where workers reach this manager (https://, pinned)
    local_url: str = ""           # where local workers reach it (unix:PATH); else url
    workers: int = 1              # local workers kept while there is work
    worker_slots: int | None = None
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    sample_interval: float = 2.0


def create_app(settings: Settings) -> FastAPI:
    from kale.client.local import open_store
    from kale.manager.batch import BatchWorkers
    from kale.manager.broker import Broker
    from kale.manager.host import RunHost
    from kale.manager.provider import LocalWorkers
    from kale.model.workflow import Workflow
    from kale.store import workers as wstore

    store, home = open_store(settings.home)
    tokens = Tokens(home, store)
    broker = Broker(store, heartbeat_timeout=settings.heartbeat_timeout,
                    sample_interval=settings.sample_interval)
    host = RunHost(store, home, broker, tokens.owner)
    local: LocalWorkers | None = None
    batch: BatchWorkers | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        nonlocal local, batch
        await broker.start()
        if settings.url:
            import psij  # noqa: F401 - here, in the main thread, as PSI/J prefers

            from kale.manager.tokens import WORKER_TOKEN_FILE, read_token

            batch = BatchWorkers(broker, store, home, settings.url,
                                 read_token(home, WORKER_TOKEN_FILE))
            await asyncio.to_thread(batch.start)
        if settings.workers > 0 and settings.url:
            from kale.manager.tokens import WORKER_TOKEN_FILE, read_token

            # through the Unix socket: no TLS, and at a path a restarted manager takes
            # again, so local workers that outlive this one reconnect to the next
            local = LocalWorkers(broker, home, settings.local_url or settings.url,
                                 read_token(home, WORKER_TOKEN_FILE),
                                 count=settings.workers, slots=settings.worker_slots)
            broker.on_lost.append(lambda _w: _ensure(local))
            host.on_submit.append(local.ensure)
        resumed = await asyncio.to_thread(host.resume_all)
        if resumed:
            log.warning("resumed runs %s", ", ".join(resumed))
        if local is not None and (resumed or broker.queued()):
            local.ensure()
        broker.open()
        try:
            yield
        finally:
            await asyncio.to_thread(drain)
            await broker.stop()

    def drain() -> None:
        """Workers first: the tasks they hand back are requeued by live engines (not
        counted as retries); then the engines let go of their runs as they are. Called
        on SIGTERM while the server still serves the worker links, and again (a no-op
        by then) at shutdown."""
        if local is not None:
            local.stop()
        if batch is not None:
            batch.stop()  # batch jobs go on; the next manager re-attaches to them
        host.detach_all()

    # No /docs or /redoc: they would load Swagger's scripts from a CDN, and need no token.
    # The API's description is /openapi.json.
    app = FastAPI(title="Kale manager", version=kale.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.state.broker, app.state.host, app.state.drain = broker, host, drain
    bearer = HTTPBearer(auto_error=False)

    async def identity(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Identity:
        who = tokens.identify(cred.credentials) if cred is not None else None
        if who is None or who.worker:
            raise HTTPException(401, "a valid user token is required (Authorization: Bearer "
                                "...)", headers={"WWW-Authenticate": "Bearer"})
        return who

    User = Annotated[Identity, Depends(identity)]

    def users_of(who: Identity) -> list[str | None]:
        # Runs made without a manager (`kale run`, a notebook) belong to the home's owner.
        return [who.user, None] if who.user == tokens.owner else [who.user]

    def own_run(who: Identity, run_id: str) -> Any:
        """A run of this user's (``latest`` and id prefixes look among theirs only)."""
        return store.get_run(run_id, users=users_of(who))

    @app.exception_handler(KaleError)
    async def kale_error(_request: Request, exc: KaleError) -> JSONResponse:
        if isinstance(exc, RunNotFound):
            return JSONResponse({"detail": str(exc)}, 404)
        if isinstance(exc, ValidationError):
            return JSONResponse({"detail": str(exc), "problems": [
                {"message": p.message, "path": list(p.path)} for p in exc.problems]}, 422)
        if isinstance(exc, UsageError):
            return JSONResponse({"detail": str(exc)}, 400)
        return JSONResponse({"detail": str(exc)}, 409)

    @app.get("/health")
    def health() -> Health:
        return Health(status="ok", version=kale.__version__, pid=os.getpid())

    @app.get("/api/runs")
    def runs(who: User, limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_json() for r in store.runs(max(1, min(limit, 1000)), users=users_of(who))]

    @app.post("/api/runs", status_code=201)
    def submit(who: User, body: Submit) -> Submitted:
        wf = Workflow.from_dict(body.workflow, base_dir=body.base_dir, trusted=True)
        rec = host.submit(wf, who.user, params=body.params, only=body.only, from_=body.from_,
                          until=body.until, tags=body.tags, force=body.force, jobs=body.jobs,
                          executor=body.executor,
                          rerun_of=own_run(who, body.rerun_of).id if body.rerun_of else None)
        return Submitted(id=rec.id)

    def live_summary(who: Identity, run_id: str) -> dict[str, Any] | None:
        """A live run's summary, from memory (None: not live here, or not theirs)."""
        live = host.live(run_id)
        if live is None or live[0].submitted_by not in users_of(who):
            return None
        rec, engine = live
        counts = {s.value: n for s, n in dict(engine.counts).items() if n}
        doc: dict[str, Any] = {"run": rec.to_json(alive=True), "counts": counts}
        said = problems(rec, counts)
        if said:
            doc["problems"] = said
        return doc

    def problems(rec: Any, counts: dict[str, int]) -> list[str]:
        """What keeps a run from going on that its tasks' states do not say: the store
        refused a write, the local workers cannot start, or an added user's tasks wait for
        a worker of theirs (the manager's own workers never run another user's tasks)."""
        out = []
        failure = host.failures.get(rec.id)
        if failure:
            out.append(failure)
        if not counts.get("SUBMITTED"):
            return out
        user = rec.submitted_by or tokens.owner
        if user == tokens.owner:
            trouble = local.problem() if local is not None else None
            if trouble is not None:
                out.append(f"local workers cannot start: {trouble['error']}; next try in "
                           f"{trouble['retry_in']:g} s (failure {trouble['failures']} in a "
                           "row; the manager log has more)")
        elif not broker.live_workers_of(user):
            out.append(f"waiting for a worker of {user}'s: this manager runs no other user's "
                       "tasks on its own workers; start one as yourself with `kale worker "
                       "--manager URL --cert FILE` (worker token in $KALE_WORKER_TOKEN)")
        return out

    def fast_status(token: str, run_id: str) -> bytes | None:
        who = tokens.identify(token)
        doc = live_summary(who, run_id) if who is not None and not who.worker else None
        return None if doc is None else json.dumps(doc).encode()

    app.add_middleware(LiveStatus, answer=fast_status)

    @app.get("/api/runs/{run_id}")
    async def status(who: User, run_id: str, tasks: bool = True) -> Response:
        """The run, how many of its tasks are in each state, and (unless ``tasks=false``)
        every task. A live run's summary comes from memory: what progress bars poll
        (and, for that reason, is answered ahead of the framework: ``fastpath.py``)."""
        doc = None if tasks else live_summary(who, run_id)
        if doc is None:
            doc = await run_in_threadpool(stored_status, who, run_id, tasks)
        return _json(doc)

    def stored_status(who: Identity, run_id: str, tasks: bool) -> dict[str, Any]:
        rec = own_run(who, run_id)
        engine = host.engine(rec.id)
        last_event = store.last_event(rec.id) if tasks else None  # before the tasks
        records = store.tasks(rec.id) if tasks else None
        if engine is not None:
            counts = {s.value: n for s, n in dict(engine.counts).items() if n}
        elif records is not None:
            counts = dict(Counter(t.state.value for t in records))
        else:
            counts = store.task_counts(rec.id)
        doc: dict[str, Any] = {"run": rec.to_json(), "counts": counts}
        if rec.id in host.failures and rec.state is RunState.RUNNING:
            # Its engine stopped because the store refused a write, which therefore still
            # says RUNNING: say FAILED (the next manager resumes it from the store).
            doc["run"].update(state=RunState.FAILED.value, message=host.failures[rec.id])
        said = problems(rec, counts)
        if said:
            doc["problems"] = said
        if records is not None:
            doc["tasks"] = [t.to_json() for t in records]
            doc["last_event"] = last_event  # the events after it are news to these tasks
        return doc

    @app.post("/api/runs/{run_id}/cancel")
    def cancel(who: User, run_id: str) -> dict[str, Any]:
        from kale.client.local import cancel_run

        rec = own_run(who, run_id)
        engine = host.engine(rec.id)
        if engine is not None:
            engine.cancel("cancelled (API)")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not rec.state.terminal:
                time.sleep(0.05)
                rec = store.get_run(rec.id)
            return {"id": rec.id, "state": rec.state.value}
        return {"id": rec.id, "state": cancel_run(store, rec.id).value}

    @app.post("/api/runs/{run_id}/tasks/{task}/{action}")
    def task_action(who: User, run_id: str, task: str, action: str,
                    reason: str | None = None) -> dict[str, Any]:
        """``cancel``, ``suspend`` (SIGSTOP its processes) or ``resume`` (SIGCONT) a task;
        ``continue`` or ``reject`` an interactive step that waits for a person (``reason``
        says why, for the record)."""
        if action not in TASK_ACTIONS:
            raise HTTPException(404, f"no task action {action!r} ({', '.join(TASK_ACTIONS)})")
        rec = own_run(who, run_id)
        before = store.task(rec.id, task).state
        if action in ("continue", "reject") and before.value != "WAITING":
            raise HTTPException(409, f"task {task!r} is {before.value}, not WAITING for a "
                                "person: only an interactive step can be continued or "
                                "rejected")
        engine = host.engine(rec.id)
        if engine is None:
            raise HTTPException(409, f"run {rec.id} is not active in this manager")
        if action == "cancel":
            engine.cancel_task(task, "cancelled (API)")
        else:
            engine.control(task, action, reason or "")
        return {"id": rec.id, "task": task, "action": action, "state": before.value}

    @app.get("/api/runs/{run_id}/tasks/{task}/result")
    def result(who: User, run_id: str, task: str) -> dict[str, Any]:
        rec = store.task(own_run(who, run_id).id, task)
        if rec.state.value != "SUCCEEDED":
            raise HTTPException(409, f"task {task!r} is {rec.state.value}"
                                + (f": {rec.error}" if rec.error else ""))
        if rec.result_path:
            blob = Path(rec.result_path).read_bytes()
            return {"pickle": base64.b64encode(blob).decode()}
        return {"json": rec.result_json}

    @app.get("/api/runs/{run_id}/tasks/{task}/logs", response_class=PlainTextResponse)
    def logs(who: User, run_id: str, task: str, stream: str = "stdout",
             offset: Offset = 0) -> str:
        if stream not in ("stdout", "stderr"):
            raise HTTPException(422, "stream is stdout or stderr")
        rec = store.task(own_run(who, run_id).id, task)
        path = rec.stdout if stream == "stdout" else rec.stderr
        if not path or not Path(path).exists():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            return f.read().decode(errors="replace")

    @app.get("/api/runs/{run_id}/tasks/{task}/resources")
    def resources(who: User, run_id: str, task: str, after: EventId = 0
                  ) -> list[dict[str, Any]]:
        """Resource samples of the task's process tree: CPU %, RSS, I/O, GPU."""
        rec = own_run(who, run_id)
        store.task(rec.id, task)  # 400 for an unknown task
        return wstore.samples(store, rec.id, task, after_id=max(0, after))

    @app.get("/api/runs/{run_id}/events")
    async def events(who: User, run_id: str, after: EventId = 0) -> StreamingResponse:
        """Server-sent events: state changes (``event: state``), new log lines (``log``)
        and resource samples (``resources``) of the run's tasks, until the run ends."""
        rec = await run_in_threadpool(own_run, who, run_id)
        return StreamingResponse(_event_stream(store, rec.id, after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/workers")
    def workers(who: User) -> list[dict[str, Any]]:
        """The user's workers: connected or not, what they run, when last heard of."""
        return broker.snapshot(who.user)

    @app.get("/api/runs/{run_id}/workflow")
    def run_workflow(who: User, run_id: str) -> dict[str, Any]:
        """The workflow the run was made from (its canonical dict)."""
        return dict(own_run(who, run_id).spec)

    @app.get("/api/runs/{run_id}/tasks/{task}")
    def task_detail(who: User, run_id: str, task: str) -> dict[str, Any]:
        """One task: its record, as the workflow describes it (description, parameters,
        upstream tasks), and each attempt (state, times, exit code, error, worker)."""
        from kale.client.local import task_detail

        return task_detail(store, own_run(who, run_id), task)

    @app.post("/api/runs/{run_id}/rerun", status_code=201)
    def rerun(who: User, run_id: str, body: Rerun) -> Submitted:
        """Run a run's workflow again, as a new run: its tasks that did not succeed
        (``failed``: what succeeded is reused), a selection (``only``), or everything
        below some tasks (``from``). The workflow is the one the run was made from."""
        rec = own_run(who, run_id)
        wf = Workflow.from_dict(rec.spec, base_dir=rec.base_dir, trusted=True)
        new = host.submit(wf, who.user, params=rec.params, only=body.only, from_=body.from_,
                          until=[], tags=[], force=body.force, jobs=rec.options.get("jobs"),
                          executor=rec.options.get("executor"),
                          rerun_of=rec.id if body.failed else None)
        return Submitted(id=new.id)

    @app.post("/api/workers", status_code=201)
    def start_workers(who: User, body: StartWorkers) -> dict[str, Any]:
        """Start workers by hand: local worker processes, or pilot jobs of a scheduler."""
        from kale.model.executor import ExecutorSpec

        if body.kind == "local":
            if local is None or who.user != tokens.owner:
                raise HTTPException(409, "this manager starts no local workers (it runs "
                                    "with --workers 0, or you are not the home's owner)")
            return {"kind": "local", "pids": local.add(body.count, body.slots)}
        spec, problems = ExecutorSpec.parse({
            "kind": body.kind, "mode": "pilot", "nodes": body.nodes,
            "walltime": body.walltime, "queue": body.queue, "account": body.account,
            **({"slots": body.slots} if body.slots else {})})
        if problems:
            raise HTTPException(422, "; ".join(f"{'.'.join(p) or 'executor'}: {m}"
                                               for p, m in problems))
        if batch is None:
            raise HTTPException(409, "this manager has no URL its batch jobs could reach")
        try:
            return {"kind": body.kind, "jobs": batch.start_pilots(who.user, spec, body.count)}
        except KaleError as e:
            raise HTTPException(400, str(e)) from None

    @app.post("/api/workers/{worker_id}/stop")
    def stop_worker(who: User, worker_id: str) -> dict[str, Any]:
        """Stop a worker: its tasks are handed back and run elsewhere. A batch worker's
        job is cancelled; a local worker is sent SIGTERM."""
        w = next((w for w in broker.snapshot(who.user) if w["id"] == worker_id), None)
        if w is None:
            raise HTTPException(404, f"no worker {worker_id!r}")
        if w["job"] and batch is not None and batch.cancel_job(who.user, w["job"]):
            return {"id": worker_id, "stopped": True, "job": w["job"]}
        if local is not None and w["provider"] == "local" and w["pid"] \
                and w["host"] == socket.gethostname() and local.stop_one(int(w["pid"])):
            return {"id": worker_id, "stopped": True}
        raise HTTPException(409, f"worker {worker_id} was not started by this manager "
                            f"(pid {w['pid']} on {w['host']}); stop it where it runs")

    @app.get("/api/jobs")
    def jobs(who: User, limit: int = 100) -> list[dict[str, Any]]:
        """The batch jobs this manager submitted for the user, newest first."""
        return wstore.jobs(store, who.user, limit=max(1, min(limit, 1000)))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(who: User, job_id: str) -> dict[str, Any]:
        if batch is None or not batch.cancel_job(who.user, job_id):
            raise HTTPException(404, f"no queued or running batch job {job_id!r}")
        return {"id": job_id, "cancelled": True}

    @app.get("/api/runs/{run_id}/tasks/{task}/kernel")
    def kernel(who: User, run_id: str, task: str) -> dict[str, Any]:
        """How to reach the Jupyter kernel the task runs in (ports, HMAC key, host), while
        it runs: only the run's owner gets it, and only through this authenticated call."""
        rec = own_run(who, run_id)
        info = broker.kernel(rec.id, task)
        if info is None:
            raise HTTPException(404, f"task {task!r} of run {rec.id} has no running kernel "
                                "(notebook tasks have one while they run on a worker)")
        return info

    @app.get("/api/queue")
    def queue(who: User, scheduler: str | None = None) -> dict[str, Any]:
        """The batch queue: the jobs of this manager's account (state, reason, time
        queued, expected start), partitions, and which jobs Kale submitted for what."""
        import getpass

        from kale.batch.queue import queue_status

        try:
            doc = queue_status(scheduler, getpass.getuser(),
                               wstore.jobs(store, who.user, limit=1000))
        except KaleError as e:
            raise HTTPException(400, str(e)) from None
        if who.user != tokens.owner:
            # The scheduler lists the manager's account's jobs: another user sees only
            # those Kale submitted for them (none: see _offered in batch.py).
            doc["jobs"] = [j for j in doc["jobs"] if "kale" in j]
        return doc

    @app.websocket(LINK_PATH)
    async def link(ws: WebSocket) -> None:
        auth = ws.headers.get("authorization", "")
        who = tokens.identify(auth[7:]) if auth.lower().startswith("bearer ") else None
        if who is None or not who.worker:
            await ws.close(code=1008, reason="a worker token is required")
            return
        await ws.accept()

        async def receive() -> Any:
            try:
                return json.loads(await ws.receive_text())
            except WebSocketDisconnect:
                return None

        async def send(msg: dict[str, Any]) -> None:
            await ws.send_text(json.dumps(msg))

        try:
            await broker.serve(who.user, receive, send)
        except (ValueError, PermissionError, KeyError) as e:
            with contextlib.suppress(Exception):
                await ws.close(code=1008, reason=str(e)[:120])
        except WebSocketDisconnect:
            pass

    return app


def _json(doc: Any) -> Response:
    return Response(json.dumps(doc, default=str), media_type="application/json")


TASK_ACTIONS = ("cancel", "suspend", "resume", "continue", "reject")


def _ensure(local: Any) -> None:
    if local is not None:
        local.ensure()


#: a byte offset into a log (a 4xx beyond what a file can be, never a 500)
Offset = Annotated[int, Query(ge=0, le=2**62)]
#: an event or sample id (the store's ids are 32-bit integers on PostgreSQL)
EventId = Annotated[int, Query(ge=0, le=2**31 - 1)]


async def _event_stream(store: Any, run_id: str, after: int) -> AsyncIterator[str]:
    """A run's events (:class:`kale.store.tail.RunTail`), read every 0.1 s, as SSE."""
    from kale.store.tail import RunTail

    tail = await run_in_threadpool(RunTail, store, run_id, after)
    while not tail.ended:
        for event, data in await run_in_threadpool(tail.poll):
            yield _sse(event, data)
        if not tail.ended:
            await asyncio.sleep(0.1)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"

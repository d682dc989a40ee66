"""The manager's HTTP API. Every endpoint but ``/health`` needs the user's token
(``Authorization: Bearer TOKEN``).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations,
and the dependencies they name are local to :func:`create_app`."""

import asyncio
import base64
import json
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import kale
from kale.errors import KaleError, RunNotFound, UsageError, ValidationError
from kale.manager.auth import same
from kale.manager.models import Health, Submit, Submitted

MAX_BODY = 16 * 1024 * 1024  # a workflow document larger than this is refused


def create_app(home: Path, token: str) -> FastAPI:
    from kale.client.local import open_store, start_run
    from kale.model.workflow import Workflow

    store, _ = open_store(home)
    app = FastAPI(title="Kale manager", version=kale.__version__)
    bearer = HTTPBearer(auto_error=False)
    live: dict[str, Any] = {}  # run id -> Run handle driven here
    lock = threading.Lock()

    def authorised(
        cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if cred is None or not same(cred.credentials, token):
            raise HTTPException(401, "a valid token is required (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})

    Auth = Depends(authorised)

    @app.middleware("http")
    async def limit_size(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            return JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, 413)
        return await call_next(request)

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

    @app.get("/api/runs", dependencies=[Auth])
    def runs(limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_json() for r in store.runs(max(1, min(limit, 1000)))]

    @app.post("/api/runs", dependencies=[Auth], status_code=201)
    def submit(body: Submit) -> Submitted:
        wf = Workflow.from_dict(body.workflow, base_dir=body.base_dir, trusted=True)
        run = start_run(wf, params=body.params, only=body.only, from_=body.from_,
                        until=body.until, tags=body.tags, force=body.force, jobs=body.jobs,
                        home=home)
        with lock:
            live[run.id] = run
        return Submitted(id=run.id)

    @app.get("/api/runs/{run_id}", dependencies=[Auth])
    def status(run_id: str) -> dict[str, Any]:
        rec = store.get_run(run_id)
        return {"run": rec.to_json(), "tasks": [t.to_json() for t in store.tasks(rec.id)]}

    @app.post("/api/runs/{run_id}/cancel", dependencies=[Auth])
    def cancel(run_id: str) -> dict[str, Any]:
        from kale.client.local import cancel_run

        rec = store.get_run(run_id)
        with lock:
            run = live.get(rec.id)
        if run is not None and not run.done():
            run.cancel()
            state = run.state
        else:
            state = cancel_run(store, rec.id)
        return {"id": rec.id, "state": state.value}

    @app.get("/api/runs/{run_id}/tasks/{task}/result", dependencies=[Auth])
    def result(run_id: str, task: str) -> dict[str, Any]:
        rec = store.task(store.get_run(run_id).id, task)
        if rec.state.value != "SUCCEEDED":
            raise HTTPException(409, f"task {task!r} is {rec.state.value}"
                                + (f": {rec.error}" if rec.error else ""))
        if rec.result_path:
            blob = Path(rec.result_path).read_bytes()
            return {"pickle": base64.b64encode(blob).decode()}
        return {"json": rec.result_json}

    @app.get("/api/runs/{run_id}/tasks/{task}/logs", dependencies=[Auth],
             response_class=PlainTextResponse)
    def logs(run_id: str, task: str, stream: str = "stdout", offset: int = 0) -> str:
        if stream not in ("stdout", "stderr"):
            raise HTTPException(422, "stream is stdout or stderr")
        rec = store.task(store.get_run(run_id).id, task)
        path = rec.stdout if stream == "stdout" else rec.stderr
        if not path or not Path(path).exists():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, offset))
            return f.read().decode(errors="replace")

    @app.get("/api/runs/{run_id}/events", dependencies=[Auth])
    async def events(run_id: str, after: int = 0) -> StreamingResponse:
        """Server-sent events: every state change (``event: state``) and every new log
        line of the run's tasks (``event: log``), until the run ends."""
        rec = store.get_run(run_id)
        return StreamingResponse(_event_stream(store, rec.id, after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return app


async def _event_stream(store: Any, run_id: str, after: int) -> AsyncIterator[str]:
    offsets: dict[str, int] = {}  # log path -> bytes already sent
    partial: dict[str, bytes] = {}
    last = after
    while True:
        rows = await run_in_threadpool(store.events, run_id, last)
        for e in rows:
            last = e["id"]
            yield _sse("state", {"id": e["id"], "task": e["task"], "old": e["old"],
                                 "new": e["new"], "reason": e["reason"], "ts": e["ts"]})
        tasks = await run_in_threadpool(store.tasks, run_id)
        for t in tasks:
            for stream, path in (("stdout", t.stdout), ("stderr", t.stderr)):
                for line in _new_lines(path, offsets, partial):
                    yield _sse("log", {"task": t.name, "stream": stream, "line": line})
        run = await run_in_threadpool(store.get_run, run_id)
        if run.state.terminal and not rows:
            yield _sse("end", {"state": run.state.value})
            return
        await asyncio.sleep(0.1)


def _new_lines(path: str | None, offsets: dict[str, int],
               partial: dict[str, bytes]) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(offsets.get(path, 0))
            chunk = f.read(1 << 20)
    except FileNotFoundError:
        return []
    if not chunk:
        return []
    offsets[path] = offsets.get(path, 0) + len(chunk)
    data = partial.pop(path, b"") + chunk
    *lines, rest = data.split(b"\n")
    if rest:
        partial[path] = rest
    return [line.decode(errors="replace") for line in lines]


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"

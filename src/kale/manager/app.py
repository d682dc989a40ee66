"""The manager's HTTP API, assembled: its parts (:class:`~kale.manager.context.
ManagerContext`), their start and stop (the lifespan), the error mapping, and the routers of
:mod:`kale.manager.routes`. Every endpoint but ``/health`` needs a token
(``Authorization: Bearer TOKEN``); a user sees only their own runs, and a worker token
opens nothing but the worker link (``/api/workers/link``, a WebSocket).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations."""

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kale.config import version
from kale.errors import KaleError, RunNotFound, UsageError, ValidationError
from kale.manager.context import ManagerContext
from kale.manager.fastpath import LiveStatus
from kale.manager.limits import MAX_BODY, BodyLimit
from kale.manager.schemas import Health
from kale.worker.protocol import HEARTBEAT_TIMEOUT

log = logging.getLogger("kale.manager")


#: the API's description in /openapi.json
DESCRIPTION = (
    "A Kale home's manager. Every route but `/health` and this document needs a user "
    "token (`Authorization: Bearer TOKEN`); a user sees only their own runs. Not described "
    "here: the worker link, a WebSocket at `/api/workers/link` opened with a worker token, "
    "whose messages `kale.worker.protocol` defines.")


@dataclass
class Settings:
    """How `kale manager start` configured this manager: its home, where workers and local
    workers reach it, and how many local workers it keeps."""

    home: Path
    url: str = ""                 # where workers reach this manager (https://, pinned)
    local_url: str = ""           # where local workers reach it (unix:PATH); else url
    workers: int = 1              # local workers kept while there is work
    worker_slots: int | None = None
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    sample_interval: float = 2.0


def create_app(settings: Settings) -> FastAPI:
    from kale.client.local import open_store
    from kale.manager.auth import Tokens
    from kale.manager.board import BOARD_FILE, Board
    from kale.manager.broker import Broker
    from kale.manager.host import RunHost
    from kale.manager.routes import ROUTERS
    from kale.manager.routes.runs import live_summary

    store, home = open_store(settings.home)
    tokens = Tokens(home, store)
    broker = Broker(store, heartbeat_timeout=settings.heartbeat_timeout,
                    sample_interval=settings.sample_interval)
    ctx = ManagerContext(home=home, store=store, tokens=tokens, broker=broker,
                         host=RunHost(store, home, broker, tokens.owner))
    try:
        ctx.host.board = Board(home / BOARD_FILE, tokens.owner, store.own_users())
    except OSError as e:  # a file system that cannot map it: the manager answers it all
        log.warning("no status board (%s): status.sock passes every request on", e)

    # No /docs or /redoc: they would load Swagger's scripts from a CDN, and need no token.
    # The API's description, and its contract, is /openapi.json (served without a token):
    # every route declares what it answers (kale.manager.schemas; tests/test_openapi.py).
    app = FastAPI(title="Kale manager", version=version(), description=DESCRIPTION,
                  lifespan=_lifespan(ctx, settings), docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.state.kale = ctx
    app.state.drain = lambda: _drain(ctx)

    def fast_status(token: str, run_id: str) -> bytes | None:
        who = tokens.identify(token)
        doc = live_summary(ctx, who, run_id) if who is not None and not who.worker else None
        return None if doc is None else json.dumps(doc).encode()

    app.add_middleware(LiveStatus, answer=fast_status)
    app.add_exception_handler(KaleError, _kale_error)  # type: ignore[arg-type]

    @app.get("/health")
    def health() -> Health:
        return Health(status="ok", version=version(), pid=os.getpid())

    for router in ROUTERS:
        app.include_router(router)
    return app


def _lifespan(ctx: ManagerContext, settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from kale.manager.batch import BatchWorkers
        from kale.manager.provider import LocalWorkers
        from kale.manager.tokens import WORKER_TOKEN_FILE, read_token

        broker, host, home = ctx.broker, ctx.host, ctx.home
        await broker.start()
        if settings.url:
            import psij  # noqa: F401 - here, in the main thread, as PSI/J prefers

            ctx.batch = BatchWorkers(broker, ctx.store, home, settings.url,
                                     read_token(home, WORKER_TOKEN_FILE))
            await asyncio.to_thread(ctx.batch.start)
        if settings.workers > 0 and settings.url:
            # through the Unix socket: no TLS, and at a path a restarted manager takes
            # again, so local workers that outlive this one reconnect to the next
            local = ctx.local = LocalWorkers(
                broker, home, settings.local_url or settings.url,
                read_token(home, WORKER_TOKEN_FILE), count=settings.workers,
                slots=settings.worker_slots)

            def replace(_lost: Any) -> None:  # a lost worker is replaced while there is work
                local.ensure()

            broker.on_lost.append(replace)
            host.on_submit.append(local.ensure)
        resumed = await asyncio.to_thread(host.resume_all)
        if resumed:
            log.warning("resumed runs %s", ", ".join(resumed))
        if ctx.local is not None and (resumed or broker.queued()):
            ctx.local.ensure()
        broker.open()
        tending = asyncio.create_task(_tend_board(ctx))
        try:
            yield
        finally:
            tending.cancel()
            await asyncio.to_thread(_drain, ctx)
            await broker.stop()

    return lifespan


async def _tend_board(ctx: ManagerContext) -> None:
    """Tell the status board, every :data:`~kale.manager.board.TEND` seconds, the tokens
    seen and whether each live run's user has waiting tasks with a problem to report."""
    from kale.manager.board import TEND
    from kale.manager.routes.runs import waiting_problem

    board = ctx.host.board
    if board is None:
        return
    while True:
        try:
            board.update(ctx.tokens.users(), [(user, waiting_problem(ctx, user) is not None)
                                              for user in board.users()])
        except Exception:
            log.exception("telling the status board")
        await asyncio.sleep(TEND)


def _drain(ctx: ManagerContext) -> None:
    """Workers first: the tasks they hand back are requeued by live engines (not counted
    as retries); then the engines let go of their runs as they are. Called on SIGTERM
    while the server still serves the worker links, and again (a no-op by then) at
    shutdown. Event streams end first: the server does not wait for their clients."""
    ctx.stopping.set()
    if ctx.local is not None:
        ctx.local.stop()
    if ctx.batch is not None:
        ctx.batch.stop()  # batch jobs go on; the next manager re-attaches to them
    ctx.host.detach_all()


async def _kale_error(_request: Request, exc: KaleError) -> JSONResponse:
    if isinstance(exc, RunNotFound):
        return JSONResponse({"detail": str(exc)}, 404)
    if isinstance(exc, ValidationError):
        return JSONResponse({"detail": str(exc), "problems": [
            {"message": p.message, "path": list(p.path)} for p in exc.problems]}, 422)
    if isinstance(exc, UsageError):
        return JSONResponse({"detail": str(exc)}, 400)
    return JSONResponse({"detail": str(exc)}, 409)

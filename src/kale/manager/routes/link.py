"""The worker link: one WebSocket per worker, opened with a worker token; the broker
speaks the protocol (:mod:`kale.worker.protocol`)."""

import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from kale.manager.context import ManagerContext
from kale.worker.protocol import LINK_PATH

router = APIRouter()


@router.websocket(LINK_PATH)
async def link(ws: WebSocket) -> None:
    ctx: ManagerContext = ws.app.state.kale
    auth = ws.headers.get("authorization", "")
    who = ctx.tokens.identify(auth[7:]) if auth.lower().startswith("bearer ") else None
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
        await ctx.broker.serve(who.user, receive, send)
    except (ValueError, PermissionError, KeyError) as e:
        with contextlib.suppress(Exception):
            await ws.close(code=1008, reason=str(e)[:120])
    except WebSocketDisconnect:
        pass

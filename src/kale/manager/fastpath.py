"""The one request answered before the framework: ``GET /api/runs/RUN?tasks=false`` of a
run this manager drives. It is what progress bars and dashboards poll (twenty clients at
twenty per second is normal), and the answer is in memory: going through FastAPI's
dependency and middleware stack would cost several times the answer itself. Anything
else, a bad token included, falls through to the app, which answers it the usual way."""

from __future__ import annotations

from collections.abc import Callable

from kale.manager.limits import ASGIApp, Receive, Scope, Send

#: ``(token, run id) -> JSON body``, or None to let the app answer
Answer = Callable[[str, str], bytes | None]
PREFIX = "/api/runs/"


class LiveStatus:
    """ASGI middleware that answers ``GET /api/runs/RUN?tasks=false`` from memory, before
    FastAPI; anything else, and any request ``answer`` declines (None), goes to the app.

    Threads: the server's event loop; ``answer`` is called there, so it must be quick: it
    answers from what the live engines hold in memory."""

    def __init__(self, app: ASGIApp, answer: Answer) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["query_string"] == b"tasks=false"
                and scope["path"].startswith(PREFIX) and "/" not in scope["path"][10:]):
            token = ""
            for name, value in scope["headers"]:
                if name == b"authorization" and value[:7].lower() == b"bearer ":
                    token = value[7:].decode("latin-1")
            body = self.answer(token, scope["path"][len(PREFIX):]) if token else None
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

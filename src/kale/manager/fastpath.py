"""The one request answered before the framework: ``GET /api/runs/RUN?tasks=false`` of a
run this manager drives. It is what progress bars and dashboards poll (twenty clients at
twenty per second is normal), and the answer is in memory: going through FastAPI's
dependency and middleware stack would cost several times the answer itself. Anything
else, a bad token included, falls through to the app, which answers it the usual way."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the status line's process imports this module: nothing heavy
    from kale.manager.limits import ASGIApp, Receive, Scope, Send

#: ``(token, run id) -> JSON body``, or None to let the app answer
Answer = Callable[[str, str], bytes | None]
PREFIX = "/api/runs/"


def fast_run(method: str, path: str, query: bytes) -> str | None:
    """The run of ``GET /api/runs/RUN?tasks=false`` (``path`` decoded), else None: the
    request answered from memory (here, and on the status line)."""
    if (method == "GET" and query == b"tasks=false" and path.startswith(PREFIX)
            and "/" not in path[len(PREFIX):]):
        return path[len(PREFIX):]
    return None


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The token of a request's ``Authorization: Bearer`` header (names in lower case, as
    ASGI gives them; the last such header counts), or ""."""
    token = ""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            token = value[7:].decode("latin-1")
    return token


class LiveStatus:
    """ASGI middleware that answers ``GET /api/runs/RUN?tasks=false`` from memory, before
    FastAPI; anything else, and any request ``answer`` declines (None), goes to the app.

    Threads: the server's event loop; ``answer`` is called there, so it must be quick: it
    answers from what the live engines hold in memory."""

    def __init__(self, app: ASGIApp, answer: Answer) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = fast_run(scope["method"], scope["path"], scope["query_string"]) \
            if scope["type"] == "http" else None
        if run is not None:
            token = bearer(scope["headers"])
            body = self.answer(token, run) if token else None
            if body is not None:
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

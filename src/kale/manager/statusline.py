"""The status line: a listener on a thread of its own for what progress bars, dashboards
and ``kale status`` poll, so that their answers do not wait behind the worker links.

The server's event loop carries every worker link; with hundreds of busy workers a loop
turn handles hundreds of messages, and a status request waits for several turns (its
accept, its read, its answer) and for the interpreter between them. This listener, on
``$KALE_HOME/status.sock`` (0600 in the 0700 home, like ``manager.sock``), has its own
thread and event loop and answers ``GET /api/runs/RUN?tasks=false`` of a live run from
memory (the same ``answer`` as :class:`~kale.manager.fastpath.LiveStatus`). Any other
request without a body (another GET, a finished run, a bad token) is handed to the app on
the server's loop and its answer relayed, so a client may send it any GET and gets what
``manager.sock`` would answer. Requests with a body and WebSocket upgrades are refused
(405): they belong on ``manager.sock``.

HTTP/1.1 (and 1.0) as clients of the manager speak it: keep-alive, one request at a time
per connection (a pipelined request waits for the one before it, and the connection is
not read meanwhile), no request bodies, heads of at most :data:`MAX_HEAD` bytes. A relayed
answer is written as the app sends it, and the app waits while the client does not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

from kale.manager.fastpath import Answer, bearer, fast_run

log = logging.getLogger("kale.manager")

ASGI = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Any]],
                 Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]
#: the longest request head accepted (request line and headers)
MAX_HEAD = 16 * 1024
_REASONS = {200: b"OK", 400: b"Bad Request", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error"}
#: answers that never have a body (RFC 9110 6.4.1)
_NO_BODY = {204, 304}


class StatusLine:
    """The status listener on ``sock`` (a listening Unix socket): :meth:`start` runs it on
    the thread ``kale-status``, :meth:`stop` ends it. ``answer`` is called on that thread;
    anything it declines goes to ``app`` on ``app_loop`` (the server's loop)."""

    def __init__(self, sock: Any, answer: Answer, app: ASGI,
                 app_loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self.answer, self.app, self.app_loop = sock, answer, app, app_loop
        self.loop = asyncio.new_event_loop()
        self.connections: set[_Connection] = set()
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="kale-status", daemon=True)

    def start(self) -> None:
        """Listen; raises what kept it from listening."""
        self.thread.start()
        self.ready.wait()
        if self.failed is not None:
            raise self.failed

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            server = self.loop.run_until_complete(self.loop.create_unix_server(
                lambda: _Connection(self), sock=self.sock, backlog=2048))
        except BaseException as e:  # handed to start(), which raises it
            self.failed = e
            self.loop.close()
            return
        finally:
            self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            for conn in list(self.connections):
                conn.abort()  # not close(): that would wait for a client that reads nothing
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 2))
            self.loop.close()


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed as they come, answered in order. Everything
    here runs on the status line's thread but :meth:`_forward`'s coroutines."""

    def __init__(self, line: StatusLine) -> None:
        self.line = line
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False            # a request is with the app
        self.gone: asyncio.Future[None] | None = None  # on the app's loop: the client left
        #: on the app's loop while a relayed answer is written: set while the client reads
        self.writable: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.line.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.line.connections.discard(self)
        self.transport = None
        gone = self.gone
        if gone is not None:
            self._on_app_loop(_settle, gone)
        self.resume_writing()  # a relay waiting for the client goes on (and finds it gone)

    def pause_writing(self) -> None:
        writable = self.writable
        if writable is not None:
            self._on_app_loop(writable.clear)

    def resume_writing(self) -> None:
        writable = self.writable
        if writable is not None:
            self._on_app_loop(writable.set)

    def _on_app_loop(self, call: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # its loop closed: nothing waits there
            self.line.app_loop.call_soon_threadsafe(call, *args)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.busy:  # read no more until the app answered the request before
            assert self.transport is not None
            self.transport.pause_reading()
            return
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._refuse(431, "the request's head is too long")
                elif b"\n\n" in self.buf:
                    self._refuse(400, "lines of a request end with CRLF")
                return
            if end > MAX_HEAD:
                self._refuse(431, "the request's head is too long")
                return
            head = bytes(self.buf[:end])
            del self.buf[:end + 4]
            self._request(head)

    def _request(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            self._refuse(400, "not an HTTP/1.1 request")
            return
        method, target, old = parts[0], parts[1], parts[2] == b"HTTP/1.0"
        headers: list[tuple[bytes, bytes]] = []
        options = set()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                self._refuse(400, "a header line without a name and a colon")
                return
            name, value = name.lower(), value.strip()
            headers.append((name, value))
            if name == b"connection":
                options |= {o.strip().lower() for o in value.split(b",")}
            elif (name == b"transfer-encoding" or name == b"upgrade"
                  or (name == b"content-length" and value != b"0")):
                self._refuse(405, "this socket answers requests without a body; "
                             "send this one to manager.sock")
                return
        keep = b"keep-alive" in options if old else b"close" not in options
        if method not in (b"GET", b"HEAD"):
            self._refuse(405, "this socket answers GET; send this request to manager.sock")
            return
        raw, _, query = target.partition(b"?")
        path = unquote(raw.decode("latin-1"))  # as the app sees it (scope["path"])
        run = fast_run(method.decode("latin-1"), path, query)
        token = bearer(headers) if run is not None else ""
        if run is not None and token:
            try:
                body = self.line.answer(token, run)
            except Exception:  # the app answers it, and logs whatever went wrong there
                log.exception("status line: answering %s", target.decode("latin-1"))
                body = None
            if body is not None:
                self._write(200, [(b"content-type", b"application/json")], body, keep)
                return
        self._forward(method, raw, path, query, headers, keep, old)

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
               keep: bool) -> None:
        assert self.transport is not None
        head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
        head += [b"%s: %s" % h for h in headers]
        head.append(b"content-length: %d" % len(body))
        if not keep:
            head.append(b"connection: close")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if not keep:
            self.transport.close()
            self.transport = None

    def _refuse(self, status: int, detail: str) -> None:
        self.buf.clear()
        self._write(status, [(b"content-type", b"application/json")],
                    json.dumps({"detail": detail}).encode(), keep=False)

    # -- a request for the app, on the server's loop ---------------------------------------
    def _forward(self, method: bytes, raw: bytes, path: str, query: bytes,
                 headers: list[tuple[bytes, bytes]], keep: bool, old: bool) -> None:
        """Hand the request to the app on its loop; its answer comes back as it is sent
        (chunked unless the app says its length, or the client speaks HTTP/1.0: then the
        connection closes after it). The next request waits for it."""
        self.busy = True
        line, mine = self.line, self.line.loop
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.0" if old else "1.1", "method": method.decode("latin-1"),
            "scheme": "http", "path": path, "raw_path": raw,
            "query_string": query, "root_path": "", "headers": headers,
            "client": None, "server": None, "state": {}}
        sent_body = False
        reply = _Reply(self, keep and not old, method == b"HEAD", old)

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.gone is None:
                self.gone = asyncio.get_running_loop().create_future()
                if self.transport is None:
                    _settle(self.gone)
            await self.gone
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if self.writable is None:
                self.writable = asyncio.Event()
                self.writable.set()
            await self.writable.wait()  # the client reads what was written before
            with contextlib.suppress(RuntimeError):  # the line stopped: nobody to write to
                mine.call_soon_threadsafe(reply.take, dict(message))

        async def call() -> None:
            try:
                await line.app(scope, receive, send)
            except Exception:  # the app's answer (a 500) went out already, or goes now
                log.exception("status line: the app failed on %s %s",
                              method.decode("latin-1"), path)
            finally:
                with contextlib.suppress(RuntimeError):
                    mine.call_soon_threadsafe(reply.done)

        asyncio.run_coroutine_threadsafe(call(), line.app_loop)

    def _next(self) -> None:
        self.busy = False
        self.gone = self.writable = None
        if self.transport is not None:
            self.transport.resume_reading()
        self._serve()


class _Reply:
    """The app's answer to one forwarded request, written as its messages arrive (on the
    status line's thread)."""

    def __init__(self, conn: _Connection, keep: bool, head_only: bool, old: bool) -> None:
        self.conn, self.keep, self.head_only, self.old = conn, keep, head_only, old
        self.started = self.chunked = self.ended = False
        self.bodyless = head_only

    def take(self, message: dict[str, Any]) -> None:
        t = self.conn.transport
        if t is None or self.ended:
            return
        if message["type"] == "http.response.start":
            self.started = True
            status = int(message["status"])
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            if any(k == b"connection" and b"close" in v.lower() for k, v in headers):
                self.keep = False
            self.bodyless = self.head_only or status in _NO_BODY or status < 200
            sized = any(k == b"content-length" for k, _ in headers)
            if not sized and not self.bodyless and self.old:
                self.keep = False  # HTTP/1.0: the body ends where the connection does
            self.chunked = not sized and not self.bodyless and not self.old
            head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b""))]
            head += [b"%s: %s" % h for h in headers if h[0] != b"connection"]
            if self.chunked:
                head.append(b"transfer-encoding: chunked")
            if not self.keep:
                head.append(b"connection: close")
            t.write(b"\r\n".join(head) + b"\r\n\r\n")
        elif message["type"] == "http.response.body" and self.started:
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not self.bodyless:
                if self.chunked:
                    if body:
                        t.write(b"%x\r\n%s\r\n" % (len(body), body))
                    if not more:
                        t.write(b"0\r\n\r\n")
                else:
                    t.write(body)
            if not more:
                self.ended = True

    def done(self) -> None:
        conn = self.conn
        if conn.transport is None:
            return
        if not self.started:  # the app failed before answering
            conn._write(500, [(b"content-type", b"application/json")],
                        b'{"detail": "internal error; the manager log has more"}', False)
            return
        if not self.ended or not self.keep:
            conn.transport.close()
            conn.transport = None
            return
        conn._next()


def _settle(gone: asyncio.Future[None]) -> None:
    if not gone.done():
        gone.set_result(None)

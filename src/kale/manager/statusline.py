"""The status line: a process of its own, beside the manager, that answers what progress
bars, dashboards and ``kale status`` poll, so that their answers wait neither for the
manager's worker links nor for its interpreter.

The manager's engines, its worker links and its API share one Python interpreter; while
a run goes as fast as it can, an engine holds that interpreter most of the time, and a
status request waits for it, several times (its accept, its read, its answer), and for a
core besides. This process has an interpreter of its own. It listens on
``$KALE_HOME/status.sock`` (bound by the manager, 0600 in the 0700 home, like
``manager.sock``) and answers ``GET /api/runs/RUN?tasks=false`` of a live run from the
status board (:mod:`kale.manager.board`), which the run's engine counts into as it goes:
what it answers is what the manager would answer at that moment. Any other GET (a full
status, a finished run, a token the board does not know, a run with a problem to report)
is passed to ``manager.sock`` and its answer relayed as it comes, so a client may send it
any GET and gets what ``manager.sock`` would answer. Requests with a body and WebSocket
upgrades are refused (405): they belong on ``manager.sock``.

HTTP/1.1 (and 1.0) as clients of the manager speak it: keep-alive, requests answered in
order (a pipelined request waits for the one before it), no request bodies, heads of at
most :data:`MAX_HEAD` bytes.

The manager starts it (:class:`StatusLine`), hands it the listening socket, starts it
again if it dies, and stops it by closing its standard input (so it also ends when the
manager is killed). It reads nothing from the manager but the board (never unpickled)
and what ``manager.sock`` answers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from kale.manager.fastpath import bearer, fast_run

if TYPE_CHECKING:
    from kale.manager.board import BoardReader

log = logging.getLogger("kale.manager")

#: the longest request head accepted (request line and headers)
MAX_HEAD = 16 * 1024
#: the longest answer head relayed from the manager
MAX_UPSTREAM_HEAD = 1 << 20
_REASONS = {200: b"OK", 400: b"Bad Request", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large", 502: b"Bad Gateway"}
#: the line is started again at most this many times in :data:`RESTART_WINDOW` seconds
RESTARTS, RESTART_WINDOW = 5, 60.0


class StatusLine:
    """The manager's side: runs the status line's process on ``sock`` (a listening Unix
    socket at ``path``), reading ``board`` and passing what it does not answer to
    ``upstream`` (``manager.sock``). :meth:`start` starts it, a thread starts it again
    when it dies (if it keeps dying, the socket is closed and removed: clients then use
    ``manager.sock``), :meth:`stop` ends it."""

    def __init__(self, sock: socket.socket, path: Path, board: Path | None,
                 upstream: Path) -> None:
        self.sock, self.path, self.board, self.upstream = sock, path, board, upstream
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # spawning, against stopping
        self.starts: list[float] = []
        self.watcher = threading.Thread(target=self._watch, name="kale-status", daemon=True)

    def start(self) -> None:
        with self.lock:
            self._spawn()
        self.watcher.start()

    def _spawn(self) -> None:
        """Start the process (with :attr:`lock` held); a failure to start counts as an
        end (the watcher tries again, or gives up)."""
        now = time.monotonic()
        self.starts = [t for t in self.starts if now - t < RESTART_WINDOW] + [now]
        fd = self.sock.fileno()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "kale.manager.statusline", str(fd),
                 str(self.board or ""), str(self.upstream)],
                stdin=subprocess.PIPE, pass_fds=(fd,), start_new_session=True)
        except OSError as e:  # no process to be had (a login node's limits)
            log.error("cannot start the status line (%s): %s", self.path, e)
            self.proc = None

    def _watch(self) -> None:
        while True:
            proc = self.proc
            rc = None
            if proc is not None:
                rc = proc.wait()
                if proc.stdin is not None:
                    proc.stdin.close()
            if self.stopping.is_set():
                return
            if len(self.starts) > RESTARTS:
                log.error("the status line (%s) ended (exit %s) %d times within %g s; "
                          "clients use manager.sock", self.path, rc, len(self.starts),
                          RESTART_WINDOW)
                with self.lock:
                    if not self.stopping.is_set():
                        self.path.unlink(missing_ok=True)
                        self.sock.close()
                return
            if proc is not None:
                log.error("the status line (%s) ended (exit %s); starting it again",
                          self.path, rc)
            if self.stopping.wait(0.2):
                return
            with self.lock:
                if self.stopping.is_set():
                    return
                self._spawn()

    def stop(self) -> None:
        with self.lock:  # no new process after this
            self.stopping.set()
            proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # its signal to stop
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the status line's process -------------------------------------------------------------

def main(argv: list[str]) -> int:
    """``python -m kale.manager.statusline FD BOARD UPSTREAM``: serve the listening socket
    ``FD`` until standard input ends."""
    import signal

    from kale.manager.board import BoardReader

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the manager's
    logging.basicConfig(format="%(asctime)s kale-status %(levelname)s %(message)s")
    fd, board, upstream = int(argv[0]), argv[1], argv[2]
    sock = socket.socket(fileno=fd)
    reader: BoardReader | None = None
    if board:  # else the manager has none (see kale.manager.app): pass it all on
        try:
            reader = BoardReader(Path(board))
        except (OSError, ValueError) as e:
            log.warning("status line: cannot read the board %s (%s); passing every request "
                        "on", board, e)
    line = _Line(reader, upstream)
    asyncio.run(line.serve(sock))
    return 0


class _Line:
    """The status line's server: clients of ``status.sock``, answered from ``board`` or
    by ``upstream``."""

    def __init__(self, board: BoardReader | None, upstream: str) -> None:
        self.board, self.upstream = board, upstream
        self.clients: set[asyncio.StreamWriter] = set()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()

        def stdin_ready() -> None:
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                ended.set()

        loop.add_reader(0, stdin_ready)
        server = await asyncio.start_unix_server(self._client, sock=sock, backlog=2048)
        await ended.wait()
        server.close()
        for writer in list(self.clients):
            writer.transport.abort()  # not close(): that waits for a client that reads nothing
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        buf = bytearray()
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        _refuse(writer, 431, "the request's head is too long")
                        return
                    if b"\n\n" in buf:
                        _refuse(writer, 400, "lines of a request end with CRLF")
                        return
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                if end > MAX_HEAD:
                    _refuse(writer, 431, "the request's head is too long")
                    return
                head = bytes(buf[:end])
                del buf[:end + 4]
                if not await self._request(head, writer):
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # the line stops; Python 3.11's streams would log a
            pass                        # cancelled handler as an error
        except Exception:
            log.exception("status line: a connection failed")
        finally:
            self.clients.discard(writer)
            writer.close()  # after what is written (stop() aborts what is left)

    async def _request(self, head: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection goes on."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
            return _refuse(writer, 400, "not an HTTP/1.1 request")
        method, target, version = parts
        headers: list[tuple[bytes, bytes]] = []
        options = set()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                return _refuse(writer, 400, "a header line without a name and a colon")
            name, value = name.lower(), value.strip()
            headers.append((name, value))
            if name == b"connection":
                options |= {o.strip().lower() for o in value.split(b",")}
            elif (name == b"transfer-encoding" or name == b"upgrade"
                  or (name == b"content-length" and value != b"0")):
                return _refuse(writer, 405, "this socket answers requests without a body; "
                               "send this one to manager.sock")
        keep = b"keep-alive" in options if version == b"HTTP/1.0" else b"close" not in options
        if method not in (b"GET", b"HEAD"):
            return _refuse(writer, 405, "this socket answers GET; send this request to "
                           "manager.sock")
        raw, _, query = target.partition(b"?")
        run = fast_run(method.decode("latin-1"), unquote(raw.decode("latin-1")), query)
        token = bearer(headers) if run is not None else ""
        if run is not None and token and self.board is not None:
            try:
                body = self.board.answer(hashlib.sha256(token.encode()).hexdigest(), run)
            except Exception:  # the manager answers it
                log.exception("status line: answering %s", target.decode("latin-1"))
                body = None
            if body is not None:
                _write(writer, 200, body, keep)
                return keep
        return await self._forward(lines[0], headers, method == b"HEAD", keep,
                                   version == b"HTTP/1.0", writer)

    async def _forward(self, first: bytes, headers: list[tuple[bytes, bytes]],
                       head_only: bool, keep: bool, old: bool,
                       writer: asyncio.StreamWriter) -> bool:
        """Pass the request to ``manager.sock`` on a connection of its own and relay the
        answer as it comes; the connection to the client goes on if it asked to and the
        answer says where it ends (its length, or chunks; to an HTTP/1.0 client, ``old``,
        a chunked answer is relayed without its chunks, and the connection then closes)."""
        try:
            up_r, up_w = await asyncio.open_unix_connection(self.upstream,
                                                            limit=MAX_UPSTREAM_HEAD)
        except OSError as e:
            _write(writer, 502, json.dumps({"detail": f"the manager does not answer: {e}"})
                   .encode(), False)
            return False
        started = False  # the answer's head went to the client
        try:
            sent = [first] + [b"%s: %s" % h for h in headers if h[0] != b"connection"]
            up_w.write(b"\r\n".join(sent) + b"\r\nconnection: close\r\n\r\n")
            answer = (await up_r.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
            status = answer[0].split(b" ")
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            kept = [line for line in answer[1:]
                    if line.partition(b":")[0].strip().lower() != b"connection"]
            names = {line.partition(b":")[0].strip().lower() for line in kept}
            bodyless = head_only or code in (204, 304) or 100 <= code < 200
            # HTTP/1.0 has no chunks: the body ends where the connection does
            unchunk = old and not bodyless and b"transfer-encoding" in names
            if unchunk:
                kept = [line for line in kept if line.partition(b":")[0].strip().lower()
                        != b"transfer-encoding"]
            keep = keep and not unchunk and (bodyless or b"content-length" in names
                                             or b"transfer-encoding" in names)
            if not keep:
                kept.append(b"connection: close")
            writer.write(b"\r\n".join([answer[0], *kept]) + b"\r\n\r\n")
            started = True
            if unchunk:
                await _unchunk(up_r, writer)
                return False
            while chunk := await up_r.read(65536):  # the manager closes after its answer
                writer.write(chunk)
                await writer.drain()
            return keep
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                ConnectionError) as e:
            if not started:  # the manager went away before it answered: say so
                with contextlib.suppress(ConnectionError):
                    _write(writer, 502, json.dumps({"detail": "the manager did not answer: "
                                                    f"{type(e).__name__}"}).encode(), False)
            return False  # (mid-answer: the connection ends, as the answer did)
        finally:
            up_w.transport.abort()


async def _unchunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Relay a chunked body's chunks without their framing."""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return
        writer.write(await reader.readexactly(size))
        await reader.readexactly(2)
        await writer.drain()


def _write(writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool) -> None:
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"")),
            b"content-type: application/json", b"content-length: %d" % len(body)]
    if not keep:
        head.append(b"connection: close")
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)


def _refuse(writer: asyncio.StreamWriter, status: int, detail: str) -> bool:
    _write(writer, status, json.dumps({"detail": detail}).encode(), False)
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

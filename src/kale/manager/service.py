"""Starting, finding and stopping the manager process of a Kale home.

``$KALE_HOME/manager.json`` says where the manager listens: ``{"url", "socket", "cert",
"fingerprint", "pid", ...}``; the token is in ``$KALE_HOME/token`` (0600).

The manager listens twice, and its status line a third time. Clients and workers of the
same user on the same host use the Unix socket ``$KALE_HOME/manager.sock`` (0600 in the
0700 home: no other user can open it, nor make one in its place), plain HTTP; the status
line (:mod:`kale.manager.statusline`, a process of the manager's own) answers their
status polls on ``$KALE_HOME/status.sock``, made the same way. Everything else (batch
workers on compute nodes, other users of a shared manager, SSH tunnels) uses ``url``,
``https://HOST:PORT``: TLS with the home's self-signed certificate (:mod:`kale.tls`),
which they pin. The TCP listener is on 127.0.0.1 unless told otherwise; its port is
``--port``, else the previous manager's if it is free (batch workers that outlived a
restart find it again), else one the operating system chooses (no well-known port
another user could take first). It binds both before it writes ``manager.json``, so the
file only ever names addresses this manager holds, and ``start`` only reports the
manager it started itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kale.config import write_private
from kale.errors import KaleError
from kale.manager.tokens import WORKER_TOKEN_FILE, ensure_token
from kale.worker.protocol import HEARTBEAT_TIMEOUT

STATE_FILE = "manager.json"
#: the status line's socket (:mod:`kale.manager.statusline`), beside ``manager.sock``
STATUS_SOCKET = "status.sock"
#: the last manager's TCP port, which the next one takes again if it is free
PORT_FILE = "manager.port"


def state(home: Path) -> dict[str, Any] | None:
    """The running manager's record, or None if none is running."""
    try:
        doc: dict[str, Any] = json.loads((home / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    from kale.procfs import process_identity

    if process_identity(int(doc.get("pid", 0))) != doc.get("identity"):
        return None
    return doc


def healthy(doc: dict[str, Any], timeout: float = 1.0) -> bool:
    """The manager of ``doc`` (a ``manager.json``) answers on its Unix socket."""
    import httpx

    from kale.tls import owned_pool, unix_path

    try:
        transport = httpx.HTTPTransport(uds=unix_path(Path(doc["socket"])))
        transport._pool = owned_pool(uds=unix_path(Path(doc["socket"])))  # closes failed connects
        with httpx.Client(transport=transport, base_url="http://kale") as http:
            return http.get("/health", timeout=timeout).status_code == 200
    except (httpx.HTTPError, OSError, KeyError):
        return False


def start(home: Path, host: str = "127.0.0.1", port: int = 0, *, workers: int = 1,
          worker_slots: int | None = None, heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
          sample_interval: float = 2.0, timeout: float = 120.0) -> dict[str, Any]:
    """Start the manager in the background (or return the running one's record). It keeps
    ``workers`` local workers (of ``worker_slots`` slots each) while it has work; a worker
    silent for ``heartbeat_timeout`` seconds is lost and its tasks retried. ``port`` 0: one
    the operating system chooses. A port that cannot be bound is a :class:`KaleError`."""
    running = state(home)
    if running is not None:
        return running
    ensure_token(home)
    ensure_token(home, WORKER_TOKEN_FILE)
    log = home / "manager.log"
    options = {"workers": workers, "worker_slots": worker_slots,
               "heartbeat_timeout": heartbeat_timeout, "sample_interval": sample_interval}
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "kale.manager.service", str(home), host, str(port),
             json.dumps(options)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True,
            env={**os.environ, "KALE_HOME": str(home)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = state(home)
        # only the manager this call started counts, never whatever else answers
        if doc is not None and doc.get("pid") == proc.pid and healthy(doc):
            _reap_when_it_ends(proc)
            return doc
        if proc.poll() is not None:
            doc = state(home)
            if doc is not None and healthy(doc):
                return doc  # another `kale manager start` won the race: that one serves
            text = log.read_text(errors="replace")
            problem = next((line.split("kale-manager: ", 1)[1] for line in reversed(
                text.splitlines()) if "kale-manager: " in line), None)
            if problem and "already running" in problem:
                time.sleep(0.1)  # the other one is still starting: wait for its record
                continue
            if problem:
                raise KaleError(problem)
            raise KaleError(f"the manager exited (code {proc.returncode}); {log}:\n"
                            f"{text[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    _reap_when_it_ends(proc)
    raise KaleError(f"the manager did not answer within {timeout:g} s; see {log}")


def stop(home: Path, timeout: float = 15.0) -> bool:
    """Stop the running manager; False if none was running."""
    doc = state(home)
    if doc is None:
        return False
    os.kill(int(doc["pid"]), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state(home) is not None:
        time.sleep(0.1)
    if state(home) is not None:
        os.kill(int(doc["pid"]), signal.SIGKILL)
    (home / STATE_FILE).unlink(missing_ok=True)
    return True


def _reap_when_it_ends(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a manager this process started, in a thread of its own: a long-lived
    process (a notebook's kernel) reaps it when it ends instead of keeping a zombie, and
    one that exits first leaves it running without a word (a Popen object still held at
    exit warns that its process is still running, but a manager is meant to outlive the
    process that started it)."""
    threading.Thread(target=proc.wait, name=f"kale-reap-{proc.pid}", daemon=True).start()


def _server(config: Any, drain: Any, unix: Any = None, status: Any = None) -> Any:
    """uvicorn's server, except that SIGTERM/SIGINT first ``drain`` the manager (its local
    workers hand their tasks back over links that are still open), then stop it; that
    it also serves the Unix socket ``unix``, without TLS; and that it starts and stops the
    status line ``status`` (a :class:`~kale.manager.statusline.StatusLine`).

    uvicorn gives every socket of a server the same TLS context; a second server for the
    Unix socket would have its own signal handling and shutdown to keep in step. So this
    one server also listens on ``unix`` (once the app has started, as uvicorn does for its
    own sockets) with a plain protocol factory: one server state, its connections closed
    together at shutdown, one drain."""
    import asyncio
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with Kale's stop and its other listeners: the first SIGTERM or
        SIGINT drains the manager in a thread (``kale-drain``: the links stay open while local
        workers hand their tasks back), then stops the server; a second one stops it at once.
        It also serves the Unix socket, on the same loop, with the same app state, and runs
        the status line's process."""

        draining = False

        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.started:
                return
            await self._listen_unix()
            if status is not None:  # after manager.sock: it passes requests there
                await asyncio.to_thread(status.start)

        async def _listen_unix(self) -> None:
            if unix is None:
                return
            cfg, state, app_state = self.config, self.server_state, self.lifespan.state

            def protocol(_loop: Any = None) -> Any:  # what uvicorn's startup builds
                make: Any = cfg.http_protocol_class
                return make(config=cfg, server_state=state, app_state=app_state, _loop=_loop)

            loop = asyncio.get_running_loop()
            self.servers.append(await loop.create_unix_server(protocol, sock=unix,
                                                              backlog=cfg.backlog))

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            if status is not None:
                await asyncio.to_thread(status.stop)
            await super().shutdown(sockets=sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # Not uvicorn's own: it would raise the signal again once the server stopped,
            # and the process would die of it before ``serve`` removes manager.json and
            # the sockets. Setting ``should_exit`` stops the server the same way.
            if self.draining:  # a second signal: stop now (a second Ctrl-C: at once)
                self.should_exit = True
                self.force_exit = self.force_exit or sig == signal.SIGINT
                return
            self.draining = True

            def then_exit() -> None:
                try:
                    drain()
                finally:
                    self.should_exit = True

            threading.Thread(target=then_exit, name="kale-drain", daemon=True).start()

    return Server(config)


def serve(home: Path, host: str, port: int, options: dict[str, Any] | None = None) -> None:
    """Run the manager in this process (what ``start`` launches)."""
    import logging
    import socket

    import uvicorn

    from kale import tls
    from kale.manager.app import Settings, create_app
    from kale.manager.board import BOARD_FILE
    from kale.manager.statusline import StatusLine
    from kale.procfs import process_identity

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ensure_token(home)
    ensure_token(home, WORKER_TOKEN_FILE)
    path = home / STATE_FILE
    lock = _claim(home)
    if lock is None:  # another manager of this home is starting or running
        print(f"kale-manager: a manager of {home} is already running", flush=True)
        sys.exit(1)
    try:
        sock = _bind(host, port) if port else _bind_sticky(home, host)
    except (OSError, OverflowError) as e:  # OverflowError: a port past 65535
        why = getattr(e, "strerror", None) or e
        print(f"kale-manager: cannot listen on {host}:{port}: {why}", flush=True)
        sys.exit(1)
    sock_path, status_path = tls.socket_path(home), home / STATUS_SOCKET
    where = sock_path
    try:
        unix = _bind_unix(sock_path)
        where = status_path
        status_sock = _bind_unix(status_path)
        cert = tls.ensure_cert(home, host)
    except OSError as e:
        print(f"kale-manager: cannot listen on {where}: {e.strerror or e}", flush=True)
        sys.exit(1)
    port = sock.getsockname()[1]
    write_private(home / PORT_FILE, f"{port}\n")
    url = f"https://{_url_host(host)}:{port}"
    app = create_app(Settings(home=home, url=url, local_url=f"unix:{sock_path}",
                              **(options or {})))
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            ws_max_size=1 << 27, proxy_headers=False,
                            timeout_graceful_shutdown=GRACE,
                            ssl_certfile=str(cert), ssl_keyfile=str(tls.key_path(home)))
    board = app.state.kale.host.board
    line = StatusLine(status_sock, status_path, board and board.path, sock_path)
    server = _server(config, app.state.drain, unix, line)
    doc = {"url": url, "socket": str(sock_path), "status_socket": str(status_path),
           "cert": str(cert),
           "fingerprint": tls.fingerprint(cert.read_text()), "hostname": socket.gethostname(),
           "pid": os.getpid(), "identity": process_identity(os.getpid()),
           "host": host, "port": port, "started": time.time()}
    write_private(path, json.dumps(doc))
    tune_runtime()
    try:
        server.run(sockets=[sock])
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
                sock_path.unlink(missing_ok=True)
                status_path.unlink(missing_ok=True)
                (home / BOARD_FILE).unlink(missing_ok=True)
        except (FileNotFoundError, ValueError):
            pass


#: seconds the stopping server waits for requests still being answered (event streams
#: end by themselves when the manager stops) before it cancels them
GRACE = 5

#: the manager's garbage collector thresholds (Python's default: 700, 10, 10)
GC_THRESHOLDS = (2_000, 1_000, 100)
#: how long a thread of the manager runs before one that waits gets its turn (Python's
#: default: 5 ms)
SWITCH_INTERVAL = 0.0005


def tune_runtime() -> None:
    """Collect less often in the manager, never look again at what start-up made, and
    hand the interpreter between threads more often.

    The manager allocates a few container objects per task event, so with Python's
    default thresholds it ran a young collection every ~700 allocations and an older one
    every ten of those, each a pause for every thread (the status answers wait behind
    it). Freezing what start-up made and collecting at 50,000 / 50 / 100 made status p99
    96-100 -> 24-38 ms with one simulated worker (``bench/scale_workers.py --workers 1``,
    alternated); young collections of 50,000 objects then took up to 28 ms each, so the
    young generation is now 2,000 objects, and objects that survive reach the old
    generation only after a thousand of those.

    The server's event loop (worker links, status answers) shares the interpreter with
    the engines' threads, which are busy while a run goes fast: with Python's 5 ms switch
    interval every system call of the loop's thread (a socket read, waking an engine) could
    cost it 5 ms more before it ran again. py-spy with ``--gil`` showed an engine holding the
    interpreter 76% of the time and the server loop waiting in the rest. With 0.5 ms and
    these thresholds, 20,000 no-op tasks and 20 pollers on simulated workers at nice 19
    (alternated, two rounds; ``docs/performance.md`` section 19): status p99 at 1 / 100 /
    1,000 workers 37-68 / 171 / 442-615 ms -> 12-16 / 44-67 / 52-77 ms, at 3,900-4,700
    tasks/s (4,400-4,700 before: the interpreter changes hands more often)."""
    import gc

    gc.collect()
    gc.freeze()  # imports, the app: never garbage, never scanned again
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)


def _bind_sticky(home: Path, host: str) -> Any:
    """The previous manager's port if it is free (batch workers that outlived it find this
    one there), else one the operating system chooses."""
    import logging

    try:
        previous = int((home / PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        previous = 0
    if 0 < previous < 65536:
        try:
            return _bind(host, previous)
        except OSError as e:
            logging.getLogger("kale.manager").warning(
                "the previous port %d is taken (%s); listening on another", previous,
                e.strerror or e)
    return _bind(host, 0)


def _bind_unix(path: Path) -> Any:
    """The Unix socket, 0600 from the start. A socket left there by a manager that died is
    replaced: this process holds the home's lock, so no live manager owns it."""
    import socket

    from kale.tls import unix_path

    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(unix_path(path))
        os.chmod(path, 0o600)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


def _bind(host: str, port: int) -> Any:
    """The manager's listening socket, bound before anything says where it is."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # lets a restarted manager take its old port while old connections linger in
        # TIME_WAIT; on Linux it never lets a second socket listen on a port in use
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _claim(home: Path) -> Any:
    """An exclusive lock on ``$KALE_HOME/manager.lock`` held for the manager's life: two
    managers of one home never run at once (the second one exits, saying so)."""
    import fcntl

    fd = os.open(home / "manager.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
          json.loads(sys.argv[4]) if len(sys.argv) > 4 else None)

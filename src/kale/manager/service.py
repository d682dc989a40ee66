"""Starting, finding and stopping the manager process of a Kale home.

``$KALE_HOME/manager.json`` says where the manager listens (``{"url", "pid", ...}``); the
token is in ``$KALE_HOME/token`` (0600). The manager listens on 127.0.0.1 unless told
otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kale.errors import KaleError
from kale.manager.tokens import WORKER_TOKEN_FILE, ensure_token
from kale.worker.protocol import HEARTBEAT_TIMEOUT

STATE_FILE = "manager.json"


def state(home: Path) -> dict[str, Any] | None:
    """The running manager's record, or None if none is running."""
    try:
        doc: dict[str, Any] = json.loads((home / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    from kale.store.store import process_identity

    if process_identity(int(doc.get("pid", 0))) != doc.get("identity"):
        return None
    return doc


def healthy(url: str, timeout: float = 1.0) -> bool:
    import httpx

    try:
        return httpx.get(url + "/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def start(home: Path, host: str = "127.0.0.1", port: int = 8765, *, workers: int = 1,
          worker_slots: int | None = None, heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
          sample_interval: float = 2.0, timeout: float = 20.0) -> dict[str, Any]:
    """Start the manager in the background (or return the running one's record). It keeps
    ``workers`` local workers (of ``worker_slots`` slots each) while it has work; a worker
    silent for ``heartbeat_timeout`` seconds is lost and its tasks retried."""
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
            [sys.executable, "-m", "kale.manager.service", str(home), host, str(port),
             json.dumps(options)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True,
            env={**os.environ, "KALE_HOME": str(home)})
    _reap()
    _started.append(proc)  # reaped once it ends (a notebook that started it lives on)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = state(home)
        if doc is not None and healthy(doc["url"]):
            return doc
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise KaleError(f"the manager exited (code {proc.returncode}); {log}:\n{tail}")
        time.sleep(0.1)
    proc.kill()
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
    _reap()
    return True


#: managers this process started (a long-lived process, such as a notebook's kernel, reaps
#: them when they end instead of keeping zombies)
_started: list[subprocess.Popen[bytes]] = []


def _reap() -> None:
    _started[:] = [p for p in _started if p.poll() is None]


def _server(config: Any, drain: Any) -> Any:
    """uvicorn's server, except that SIGTERM/SIGINT first ``drain`` the manager (its local
    workers hand their tasks back over links that are still open), then stop it."""
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        draining = False

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.draining:  # a second signal: stop now
                super().handle_exit(sig, frame)
                return
            self.draining = True

            def then_exit() -> None:
                try:
                    drain()
                finally:
                    uvicorn.Server.handle_exit(self, sig, frame)

            threading.Thread(target=then_exit, name="kale-drain", daemon=True).start()

    return Server(config)


def serve(home: Path, host: str, port: int, options: dict[str, Any] | None = None) -> None:
    """Run the manager in this process (what ``start`` launches)."""
    import logging

    import uvicorn

    from kale.manager.app import Settings, create_app
    from kale.store.store import process_identity

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ensure_token(home)
    ensure_token(home, WORKER_TOKEN_FILE)
    url = f"http://{host}:{port}"
    app = create_app(Settings(home=home, url=url, **(options or {})))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            access_log=False, ws_max_size=1 << 27, proxy_headers=False)
    server = _server(config, app.state.drain)
    doc = {"url": url, "pid": os.getpid(), "identity": process_identity(os.getpid()),
           "host": host, "port": port, "started": time.time()}
    path = home / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    try:
        server.run()
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (FileNotFoundError, ValueError):
            pass


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
          json.loads(sys.argv[4]) if len(sys.argv) > 4 else None)

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
from kale.manager.auth import ensure_token

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


def start(home: Path, host: str = "127.0.0.1", port: int = 8765,
          timeout: float = 20.0) -> dict[str, Any]:
    """Start the manager in the background (or return the running one's record)."""
    running = state(home)
    if running is not None:
        return running
    ensure_token(home)
    log = home / "manager.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kale.manager.service", str(home), host, str(port)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True,
            env={**os.environ, "KALE_HOME": str(home)})
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
    return True


def serve(home: Path, host: str, port: int) -> None:
    """Run the manager in this process (what ``start`` launches)."""
    import uvicorn

    from kale.manager.app import create_app
    from kale.store.store import process_identity

    token = ensure_token(home)
    app = create_app(home, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{host}:{port}"
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
    serve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))

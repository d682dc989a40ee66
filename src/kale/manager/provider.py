"""Local workers: the manager keeps ``count`` ``kale worker`` processes on this machine
while there is work, and replaces one that is lost. They run in their own sessions, so a
manager that dies leaves them running; they reconnect to the next one."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kale.manager.broker import Broker

log = logging.getLogger("kale.manager")


class LocalWorkers:
    provider = "local"

    def __init__(self, broker: Broker, home: Path, url: str, token: str, *, count: int,
                 slots: int | None = None) -> None:
        self.broker, self.home, self.url, self.token = broker, home, url, token
        self.count, self.slots = count, slots
        self.floor = count  # what the manager was started with
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.Lock()  # submits (API threads) and lost workers (the loop)

    def ensure(self) -> int:
        """Start workers until ``count`` are alive; returns how many it started."""
        with self._lock:
            self.procs = [p for p in self.procs if p.poll() is None]
            live = {w.pid for w in self.broker.live_workers(self.provider)}
            starting = [p for p in self.procs if p.pid not in live]
            missing = self.count - len(live) - len(starting)
            for _ in range(max(0, missing)):
                self._spawn()
            return max(0, missing)

    def add(self, count: int, slots: int | None = None) -> list[int]:
        """Start ``count`` more workers now (a person asked for them), and keep them:
        the number kept while there is work grows by ``count``. Returns their pids."""
        with self._lock:
            self.count += count
            return [self._spawn(slots) for _ in range(count)]

    def stop_one(self, pid: int) -> bool:
        """Stop the local worker ``pid`` (its tasks are handed back and requeued), and
        keep one fewer from now on, though never fewer than ``floor``."""
        if not _is_worker(pid):
            return False
        with self._lock:
            self.count = max(self.floor, self.count - 1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return True

    def _spawn(self, slots: int | None = None) -> int:
        logs = self.home / "workers"
        logs.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "kale.worker", "--manager", self.url,
                "--provider", self.provider]
        if slots or self.slots:
            argv += ["--slots", str(slots or self.slots)]
        env = {**os.environ, "KALE_HOME": str(self.home), "KALE_WORKER_TOKEN": self.token}
        log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.procs)}.log"
        with open(log_path, "ab") as f:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    start_new_session=True, env=env)
        self.procs.append(proc)
        log.info("started local worker pid %d", proc.pid)
        return proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the local workers: those this manager started, and those an earlier
        manager started that reconnected to it. Their tasks are handed back."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        mine = {p.pid for p in self.procs}
        here = socket.gethostname()
        others = [w.pid for w in self.broker.live_workers(self.provider)
                  if w.pid and w.host == here and w.pid not in mine and _is_worker(w.pid)]
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        while others and time.monotonic() < deadline:
            others = [pid for pid in others if _is_worker(pid)]
            time.sleep(0.05)


def _is_worker(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"kale.worker" in cmd and state != "Z"

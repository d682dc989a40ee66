"""Local workers: the manager keeps ``count`` ``kale worker`` processes on this machine
while there is work, and replaces one that is lost. They run in their own sessions, so a
manager that dies leaves them running; they reconnect to the next one.

A worker that cannot start (the disk its log and home are on is full, a broken Python
environment) exits before it ever connects, so the broker never hears of it and never
reports it lost: without a watch, the run would wait for it forever, silently. So a
thread watches each worker from its start until it connects. One that exits first is a
failed start: logged at WARNING with its exit code and the end of its log (and the free
space where the log is, when there is next to none), kept for :meth:`LocalWorkers.problem`,
and retried after a backoff (1 s, doubling to 60 s: a machine that cannot start Python
is not asked again every few milliseconds), which ends once a worker connects.
"""

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
from typing import Any

from kale import procfs
from kale.manager.broker import Broker

log = logging.getLogger("kale.manager")

#: the delay before trying again after a failed start, doubled each failure in a row...
BACKOFF_FIRST = 1.0
#: ...up to this
BACKOFF_MAX = 60.0
#: how often the watch looks at workers that have started but not yet connected
WATCH_EVERY = 0.25


class LocalWorkers:
    """The manager's local provider: ``count`` ``kale worker`` processes on this machine while
    there is work (see the module's text for starts that fail).

    Promises: at most ``count`` workers are alive or starting (lost ones are replaced; none
    is started during a backoff after a failed start); every worker started is watched until
    it connects or exits; workers run in sessions of their own, so they outlive a manager
    that dies and reconnect to the next one; ``count`` never goes below ``floor``, the
    number the manager was started with.

    Threads: :meth:`ensure` from API request threads (a submit) and the server loop (a
    worker lost); :meth:`add`, :meth:`stop_one` and :meth:`problem` from request threads;
    :meth:`stop` from the drain; the watch in its own thread. All of them take ``_lock``
    (re-entrant)."""

    provider = "local"

    def __init__(self, broker: Broker, home: Path, url: str, token: str, *, count: int,
                 slots: int | None = None) -> None:
        self.broker, self.home, self.url, self.token = broker, home, url, token
        self.count, self.slots = count, slots
        self.floor = count  # what the manager was started with
        self.procs: list[subprocess.Popen[bytes]] = []
        self._lock = threading.RLock()  # submits (API threads), lost workers (the loop), watch
        #: workers started and not yet connected (pid -> process, log file)
        self._starting: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self._failures = 0        # failed starts in a row
        self._retry_at = 0.0      # monotonic time before which no worker is started
        self._problem: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._closed = False
        self._watch: threading.Thread | None = None

    def ensure(self) -> int:
        """Start workers until ``count`` are alive; returns how many it started. While
        backing off after a failed start it starts none: the watch tries again when the
        delay is over."""
        with self._lock:
            self._check()
            self.procs = [p for p in self.procs if p.poll() is None]
            live = {w.pid for w in self.broker.live_workers(self.provider)}
            starting = [p for p in self.procs if p.pid not in live]
            missing = max(0, self.count - len(live) - len(starting))
            if missing and (self._closed or time.monotonic() < self._retry_at):
                return 0
            started = 0
            for _ in range(missing):
                if self._spawn() is None:
                    break
                started += 1
            return started

    def problem(self) -> dict[str, Any] | None:
        """Why local workers cannot start, while they cannot (None once one connects):
        ``error`` (one line), ``exit_code``, ``log`` (the failed worker's log file),
        ``tail`` (its last lines), ``failures`` (in a row), ``since`` (epoch seconds of
        the first), ``retry_in`` (seconds until the next try)."""
        with self._lock:
            if self._problem is None:
                return None
            left = max(0.0, self._retry_at - time.monotonic())
            return {**self._problem, "failures": self._failures, "retry_in": round(left, 1)}

    def _check(self) -> None:
        """Look at the workers that have not connected yet: one that connected ends any
        backoff; one that exited first is a failed start. Called with the lock held."""
        if not self._starting:
            return
        live = {w.pid for w in self.broker.live_workers(self.provider)}
        for pid, (proc, log_path) in list(self._starting.items()):
            if pid in live:
                del self._starting[pid]
                if self._problem is not None:
                    log.warning("local worker pid %d connected: local workers start again "
                                "(after %d failed starts)", pid, self._failures)
                self._failures, self._retry_at, self._problem = 0, 0.0, None
            elif proc.poll() is not None:
                del self._starting[pid]
                if not self._closed:
                    self._failed(f"local worker pid {pid} exited with code {proc.returncode} "
                                 "before it connected", proc.returncode, log_path)

    def _failed(self, error: str, code: int | None, log_path: Path) -> None:
        """A worker could not start: say so, keep it for :meth:`problem`, back off."""
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        tail = _tail(log_path)
        space = _low_space(log_path.parent)
        line = error + (f"; {space}" if space else "")
        since = self._problem["since"] if self._problem else time.time()
        self._problem = {"error": line, "exit_code": code, "log": str(log_path),
                         "tail": tail, "since": since}
        log.warning("%s; its log %s %s; trying again in %g s (failure %d in a row)", line,
                    log_path, "ends:\n" + tail if tail else "is empty", delay, self._failures)
        self._wake.set()

    def _watch_loop(self) -> None:
        while not self._closed:
            with self._lock:
                busy = bool(self._starting) or self._retry_at > 0
            self._wake.wait(WATCH_EVERY if busy else None)
            self._wake.clear()
            if self._closed:
                return
            try:
                with self._lock:
                    self._check()
                    due = self._retry_at > 0 and time.monotonic() >= self._retry_at
                if due:
                    self.ensure()
                    with self._lock:
                        if not self._starting and self._retry_at <= time.monotonic():
                            self._retry_at = 0.0  # none was missing: nothing to retry
            except Exception:  # the watch must outlive a store hiccup
                log.exception("watching local workers start")

    def add(self, count: int, slots: int | None = None) -> list[int]:
        """Start ``count`` more workers now (a person asked for them), and keep them:
        the number kept while there is work grows by ``count``. Returns their pids."""
        with self._lock:
            self.count += count
            pids = [self._spawn(slots) for _ in range(count)]
            return [pid for pid in pids if pid is not None]

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

    def _spawn(self, slots: int | None = None) -> int | None:
        """Start one worker; its pid, or None if it could not even be started (which
        counts as a failed start)."""
        logs = self.home / "workers"
        argv = [sys.executable, "-P", "-m", "kale.worker", "--manager", self.url,
                "--provider", self.provider]
        if slots or self.slots:
            argv += ["--slots", str(slots or self.slots)]
        env = {**os.environ, "KALE_HOME": str(self.home), "KALE_WORKER_TOKEN": self.token}
        log_path = logs / f"worker-{time.strftime('%Y%m%d-%H%M%S')}-{len(self.procs)}.log"
        try:
            logs.mkdir(exist_ok=True)
            with open(log_path, "ab") as f:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                        start_new_session=True, env=env)
        except OSError as e:
            self._failed(f"cannot start a local worker: {e}", None, log_path)
            return None
        self.procs.append(proc)
        self._starting[proc.pid] = (proc, log_path)
        if self._watch is None:
            self._watch = threading.Thread(target=self._watch_loop, daemon=True,
                                           name="kale-local-workers")
            self._watch.start()
        self._wake.set()
        log.info("started local worker pid %d", proc.pid)
        return proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the local workers: those this manager started, and those an earlier
        manager started that reconnected to it. Their tasks are handed back."""
        with self._lock:
            self._closed = True  # no more starts, and stopped workers are no failures
            self._wake.set()
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


def _tail(path: Path, lines: int = 10, size: int = 2048) -> str:
    """The last lines of a worker's log (at most ``size`` bytes), or "" if none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


def _low_space(folder: Path) -> str:
    """What to say about the free space where the workers' logs go, if there is next to
    none (a full disk is the usual reason a worker dies before it has said anything)."""
    path = folder if folder.exists() else folder.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if free >= 1 << 20 and (st.f_files == 0 or st.f_favail > 0):
        return ""
    if st.f_files and st.f_favail == 0:
        return f"no inodes left on the file system of {path}"
    return f"{free // 1024} KB free on the file system of {path}"


def _is_worker(pid: int) -> bool:
    cmd, st = procfs.cmdline(pid), procfs.stat(pid)
    return cmd is not None and st is not None and b"kale.worker" in cmd and st.state != "Z"

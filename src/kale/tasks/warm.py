"""Warm Python worker processes: where they come from and where they wait between runs.

A worker process is started by one long-lived thread of this process (:func:`spawn`), so
its parent-death signal (``_pyworker`` asks for SIGKILL when its parent dies, and Linux
sends it when the *thread* that started it ends) fires when this process ends, not when
the run whose engine thread asked for it does.

When a run ends, its idle workers wait in :data:`POOL` for the next run of this process
(a notebook that runs a workflow again starts on processes that have already imported
its libraries) for ``$KALE_WARM_SECONDS`` (default 120; ``0``: a run's workers stop with
it). A worker is only ever given to a run that would have started it the same way
(:func:`origin`: the same interpreter, working directory, environment and installed
packages) for tasks of the same workflow folder (the folder it put on ``sys.path`` with
its first job): a module of the same name in another folder is never the one a task runs.
Its code is checked before every job as always (``kale.tasks.usercode``: a changed file
means a fresh process, and the next try of that task takes a new one, not another kept
one that imported the same code).

Threads: :data:`POOL` is used from any thread (a lock); :func:`spawn` from any thread.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

DEFAULT_SECONDS = 120.0

_spawner: concurrent.futures.ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def spawn(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """``start()`` run by the process's spawning thread (made on first use, kept until
    the interpreter exits); its result or exception."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kale-spawn")
            with contextlib.suppress(AttributeError):  # (no fork hooks: not POSIX)
                os.register_at_fork(after_in_child=_forked)
        pool = _spawner
    return pool.submit(start).result()


def _forked() -> None:
    """In a forked child: the parent's spawning thread, its lock and its kept workers are
    not this process's (the child starts its own when it needs one)."""
    global _spawner, _spawner_lock
    _spawner, _spawner_lock = None, threading.Lock()
    POOL._forget()


def origin() -> tuple[str, str, int]:
    """How a worker started now would start: the interpreter, the working directory and
    (a digest of) the environment it inherits and of the installed packages it would
    import (the times their folders last changed: ``pip install`` changes them)."""
    try:
        cwd = os.getcwd()
    except FileNotFoundError:
        cwd = os.path.expanduser("~")
    return sys.executable, cwd, hash((frozenset(os.environ.items()), _installed()))


def _installed() -> tuple[int, ...]:
    """When each folder of installed packages last changed (a package installed, upgraded
    or removed there); -1 for one that is not there."""
    stamps = []
    for folder in _package_folders():
        try:
            stamps.append(os.stat(folder).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


@functools.cache
def _package_folders() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    found = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    with contextlib.suppress(AttributeError):  # (site may be one that has none)
        found.append(site.getusersitepackages())
    return tuple(dict.fromkeys(found))


def keep_seconds() -> float:
    """How long an idle worker waits for the next run (``$KALE_WARM_SECONDS``)."""
    raw = os.environ.get("KALE_WARM_SECONDS", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


class Warm(Protocol):
    """What the pool needs of a worker."""

    proc: subprocess.Popen[bytes]
    origin: tuple[str, str, int]
    base_dir: str | None

    def kill(self) -> None: ...


class Pool:
    """Idle workers between runs, newest last; each leaves after :func:`keep_seconds`.

    Promises: :meth:`take` returns only a live worker of the asked origin whose folder is
    the asked one (or that has run nothing yet), and each worker to one taker only; a
    worker given back is killed, not kept, when keeping is off; everything still kept is
    killed when the interpreter exits (and by its parent-death signal if the process is
    killed); a forked child never sees its parent's workers."""

    #: at most this many workers kept in all (beyond it, the oldest is stopped)
    LIMIT = max(4, 2 * (os.cpu_count() or 1))

    def __init__(self) -> None:
        self._idle: list[tuple[float, Warm]] = []  # (when it may be stopped, worker)
        self._lock = threading.Condition()
        self._reaper: threading.Thread | None = None
        self._pid = os.getpid()

    def take(self, want: tuple[str, str, int], base_dir: str | None) -> Warm | None:
        """An idle worker of origin ``want`` for a task of folder ``base_dir`` (None: any
        folder, as :meth:`count` counts), or None."""
        dead: list[Warm] = []
        found: Warm | None = None
        with self._lock:
            for i in range(len(self._idle) - 1, -1, -1):
                w = self._idle[i][1]
                if w.origin != want or (base_dir is not None and w.base_dir
                                        not in (None, base_dir)):
                    continue
                del self._idle[i]
                if w.proc.poll() is None:
                    found = w
                    break
                dead.append(w)
        for w in dead:
            w.kill()
        return found

    def count(self, want: tuple[str, str, int]) -> int:
        """How many idle workers of origin ``want`` are kept."""
        with self._lock:
            return sum(1 for _, w in self._idle if w.origin == want)

    def give(self, worker: Warm) -> None:
        """Keep ``worker`` (idle, its socket watched by no event loop) for a later run."""
        seconds = keep_seconds()
        if seconds <= 0 or worker.proc.poll() is not None or os.getpid() != self._pid:
            _stop(worker)
            return
        with self._lock:
            self._idle.append((time.monotonic() + seconds, worker))
            extra = self._idle[:-self.LIMIT] if len(self._idle) > self.LIMIT else []
            del self._idle[:len(extra)]
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="kale-warm",
                                                daemon=True)
                self._reaper.start()
                atexit.register(self.clear)
                with contextlib.suppress(AttributeError):  # (no fork hooks: not POSIX)
                    os.register_at_fork(after_in_child=self._forget)
            self._lock.notify()
        for _, w in extra:
            _stop(w)

    def clear(self) -> None:
        """Stop every kept worker."""
        with self._lock:
            gone, self._idle = self._idle, []
        for _, w in gone:
            _stop(w)

    def _reap(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                due = [w for t, w in self._idle if t <= now]
                self._idle = [(t, w) for t, w in self._idle if t > now]
                if not due:
                    nxt = min((t for t, _ in self._idle), default=None)
                    self._lock.wait(None if nxt is None else nxt - now)
                    continue
            for w in due:
                _stop(w)

    def _forget(self) -> None:
        # In a forked child: the parent's workers and their sockets are the parent's.
        self._idle = []
        self._lock = threading.Condition()
        self._reaper = None
        self._pid = os.getpid()


def _stop(worker: Warm) -> None:
    worker.kill()
    with contextlib.suppress(Exception):
        worker.proc.wait(timeout=5)


POOL = Pool()

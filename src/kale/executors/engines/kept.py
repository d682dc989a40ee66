"""Parsl DataFlowKernels kept between runs in one process (a notebook session, the
manager): starting one (its interchange, a block of workers, Kale's runners in them) takes
seconds, which a run of many short tasks would otherwise pay every time.

A run's :class:`~kale.executors.engines.parsl.ParslExecutor` hands its DataFlowKernel back
with :func:`keep` when the run ends; the next run whose config has the same
:func:`config_key` (the same settings, for the same workflow folder) in this process takes
it with :func:`take` instead of starting one. Only a config whose executors all run on
this machine (no provider, or a ``LocalProvider``) is kept: a batch provider's block is an
allocation, released with its run.

While one is kept, a watcher process (:data:`WATCHER`, reading a pipe from this process)
stops its interchanges and its blocks' process groups if this process dies without
taking it back, however it dies (the manager ends by its signal, which skips ``atexit``;
a SIGKILL): no run of this process drives them any more.

Invariants: at most one kept DataFlowKernel per key; a kept one is cleaned up after
:data:`KEEP_IDLE` seconds unused, or when the process exits (an ``atexit`` handler: Parsl's
own only warns), or by its watcher if the process dies;
:func:`take` returns only one whose interchanges still run and whose executors are not in
a bad state (others are cleaned up)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from kale import procfs

#: how long (seconds) an unused DataFlowKernel is kept for the next run
KEEP_IDLE = 120.0

#: what a watcher runs: given the processes and process groups of a kept DataFlowKernel
#: (with their identities), it stops them when its stdin ends without a word (the process
#: that kept them died); a line on stdin means "taken back": it exits and stops nothing
WATCHER = """
import json, os, signal, sys
from kale import procfs
if sys.stdin.readline():
    sys.exit(0)
for pid, identity, target, group in json.loads(sys.argv[1]):
    if procfs.process_identity(pid) == identity:
        try:
            if group:
                os.killpg(target, signal.SIGKILL)
            else:
                os.kill(target, signal.SIGKILL)
        except OSError:
            pass
"""

_KEPT: dict[str, tuple[Any, threading.Timer]] = {}
_WATCHERS: dict[int, subprocess.Popen[bytes]] = {}  # id(dfk) -> its watcher
_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []  # whether clear() is registered to run at exit


def config_key(config: Any, base_dir: Path) -> str | None:
    """What identifies ``config`` (a ``parsl.Config``, before Kale sets its ``run_dir``)
    for reuse, or None if it may not be kept. Parsl's configs show all their settings in
    their ``repr``; object addresses in it (a default manager selector...) are left out."""
    for ex in getattr(config, "executors", ()):
        provider = getattr(ex, "provider", None)
        if provider is not None and type(provider).__name__ != "LocalProvider":
            return None
    return f"{base_dir}\n" + re.sub(r" at 0x[0-9a-fA-F]+", "", repr(config))


def take(key: str) -> Any:
    """The DataFlowKernel kept for ``key`` (no longer kept), or None. One that cannot
    run tasks any more is cleaned up instead."""
    with _LOCK:
        entry = _KEPT.pop(key, None)
    if entry is None:
        return None
    dfk, timer = entry
    timer.cancel()
    _unwatch(dfk)
    if healthy(dfk):
        return dfk
    cleanup(dfk)
    return None


def keep(key: str, dfk: Any) -> bool:
    """Keep ``dfk`` for the next run of ``key``; False if one is kept already (the caller
    cleans this one up)."""
    with _LOCK:
        if key in _KEPT:
            return False
        if not _AT_EXIT:
            atexit.register(clear)
            _AT_EXIT.append(True)
        timer = threading.Timer(KEEP_IDLE, _expire, (key, dfk))
        timer.daemon = True
        _KEPT[key] = (dfk, timer)
        timer.start()
    _watch(dfk)
    return True


def healthy(dfk: Any) -> bool:
    """Whether ``dfk`` can still run tasks: not cleaned up, its executors not in a bad
    state, their interchanges running."""
    if getattr(dfk, "cleanup_called", False):
        return False
    for ex in dfk.executors.values():
        if getattr(ex, "bad_state_is_set", False):
            return False
        proc = getattr(ex, "interchange_proc", None)
        if proc is not None and proc.poll() is not None:
            return False
    return True


def _expire(key: str, dfk: Any) -> None:
    with _LOCK:
        entry = _KEPT.get(key)
        if entry is None or entry[0] is not dfk:
            return
        del _KEPT[key]
    _unwatch(dfk)
    cleanup(dfk)


def cleanup(dfk: Any) -> None:
    """``dfk.cleanup()``, and close the handler of its ``parsl.log``: Parsl takes it off
    its loggers without closing it, so the file stays open until the garbage collector
    finds the handler (a ``ResourceWarning`` then, wherever that happens)."""
    import logging

    run_dir = os.path.abspath(str(getattr(dfk, "run_dir", "") or "")) + os.sep
    parsl_log = logging.getLogger("parsl")
    mine = [h for h in parsl_log.handlers if isinstance(h, logging.FileHandler)
            and run_dir != os.sep and h.baseFilename.startswith(run_dir)]
    with contextlib.suppress(Exception):
        dfk.cleanup()
    for h in mine:
        if h not in parsl_log.handlers:  # taken off: nobody writes to it any more
            h.close()


def clear() -> None:
    """Clean up every kept DataFlowKernel now."""
    with _LOCK:
        entries = list(_KEPT.values())
        _KEPT.clear()
    for dfk, timer in entries:
        timer.cancel()
        _unwatch(dfk)
        cleanup(dfk)


def processes(dfk: Any) -> list[tuple[int, str, int, bool]]:
    """What ``dfk`` runs on this machine: its interchanges, and the process groups of its
    local blocks (never this process's own group), as ``(pid, its identity, what to stop,
    whether that is a process group)``."""
    found: list[tuple[int, str, int, bool]] = []
    mine = os.getpgid(0)
    for ex in dfk.executors.values():
        pid = getattr(getattr(ex, "interchange_proc", None), "pid", None)
        if pid is not None:
            found.append((pid, procfs.process_identity(pid) or "", pid, False))
        resources = getattr(getattr(ex, "provider", None), "resources", None) or {}
        for job in resources.values():
            with contextlib.suppress(OSError, TypeError, ValueError, KeyError):
                pid = int(job["remote_pid"])
                group = os.getpgid(pid)
                if group != mine:
                    found.append((pid, procfs.process_identity(pid) or "", group, True))
    return [f for f in found if f[1]]


def _watch(dfk: Any) -> None:
    with contextlib.suppress(OSError):
        _WATCHERS[id(dfk)] = subprocess.Popen(
            [sys.executable, "-c", WATCHER, json.dumps(processes(dfk))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)


def _unwatch(dfk: Any) -> None:
    watcher = _WATCHERS.pop(id(dfk), None)
    if watcher is None or watcher.stdin is None:
        return
    with contextlib.suppress(OSError):
        watcher.stdin.write(b"taken\n")
        watcher.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        watcher.wait(5)

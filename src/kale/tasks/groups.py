"""An attempt's processes, recorded in its task directory, so the next attempt can make
sure none of them still runs before it starts there.

Why: a worker that is SIGKILLed (or OOM-killed) cannot kill the task it was running. The
task's shell leads its own session (:func:`kale.tasks.procs.spawn`), so it and everything
it started go on running, re-parented to init, while the manager retries the task on
another worker, in the same directory: two attempts would write the same files at once.

How: right after starting a task's process, its runner writes :data:`GROUP_FILE` in the
task's directory (:func:`record`): the host, the boot id, the process group (the leader's
pid), the leader's start time (so a recycled pid is never taken for it) and the
``KALE_RUN_ID``/``KALE_TASK`` the task's processes carry in their environment. When the
attempt ends the way Kale ends attempts (the command exits, a timeout or cancel kills its
group), the runner removes the file (:func:`forget`). So a file still there when the next
attempt begins means the earlier one ended with its runner: :meth:`TaskContext.make_workdir`
(called where the task runs, before each attempt) calls :func:`stop_earlier`, which, on the
same host and boot, SIGKILLs what is left (the group, if its leader is the recorded one,
and any process carrying the attempt's run and task in its environment, which catches
those that left the group) and waits until they are gone.

Not covered: an earlier attempt on another host (nothing here can signal it; the file
names the host, and is overwritten by this attempt's own record), and the microseconds
between the start of the process and the writing of the file.

A ``PR_SET_PDEATHSIG`` for the shell was measured and left out: setting it needs a
``preexec_fn``, which makes :mod:`subprocess` fork and run Python in the child instead of
``vfork``: 0.5 ms per spawn became 3-4 ms, several times the whole cost of a ``true`` task,
and it would only reach the shell, not what the shell started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import time
from pathlib import Path
from typing import Any

from kale import procfs

log = logging.getLogger("kale.tasks")

GROUP_FILE = ".kale-group.json"
#: how long :func:`stop_earlier` waits for SIGKILLed processes to be gone (one stuck in
#: uninterruptible I/O ends when the I/O does; it runs no more of its own code meanwhile)
WAIT = 10.0

_HOST = socket.gethostname()


def record(workdir: Path, pid: int, env: dict[str, str], attempt: int) -> None:
    """Note the process ``pid`` just started (the leader of its own process group) as the
    running attempt in ``workdir``. Never fails the task: a directory that cannot take the
    file only loses this protection."""
    st = procfs.stat(pid)  # on every shell task's path: procfs reads it in ~15 us
    doc: dict[str, Any] = {
        "host": _HOST, "boot": procfs.boot_id(), "pgid": pid,
        "start": st.start if st else None,
        "run": env.get("KALE_RUN_ID"), "task": env.get("KALE_TASK"), "attempt": attempt}
    with contextlib.suppress(OSError):
        fd = os.open(workdir / GROUP_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, json.dumps(doc).encode())
        finally:
            os.close(fd)


def forget(workdir: Path) -> None:
    """The attempt's processes are all killed: nothing for the next attempt to stop."""
    with contextlib.suppress(OSError):
        os.unlink(workdir / GROUP_FILE)


def prepare_workdir(workdir: str, records: str) -> None:
    """Make a task's directory for an attempt (:meth:`TaskContext.make_workdir`, and a
    Python worker for its job): a new one, or one an earlier attempt used, where whatever
    that attempt left running on this host is stopped first and its ``records`` file
    removed (they must not leak into this attempt)."""
    try:
        os.mkdir(workdir)
    except FileExistsError:
        stop_earlier(Path(workdir))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(records)
    except FileNotFoundError:  # the run directory itself was removed
        os.makedirs(workdir, exist_ok=True)


def stop_earlier(workdir: Path) -> list[int]:
    """Kill what an earlier attempt in ``workdir`` left running on this host, and wait
    until it is gone (at most :data:`WAIT` seconds). Returns the pids it killed."""
    path = workdir / GROUP_FILE
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict) or doc.get("host") != _HOST or doc.get("boot") != procfs.boot_id():
        return []  # another machine's (or an earlier boot's) attempt: nothing to reach here
    pgid, start = doc.get("pgid"), doc.get("start")
    leader = procfs.stat(pgid) if isinstance(pgid, int) and pgid > 0 else None
    group = pgid if leader is not None and leader.start == start else None
    marks: set[bytes] = set()
    if doc.get("run") and doc.get("task"):
        marks = {f"KALE_RUN_ID={doc['run']}".encode(), f"KALE_TASK={doc['task']}".encode()}
    victims = _find(group, marks)
    killed = []
    fds = []
    for pid, since in victims.items():
        fd = _pidfd(pid)
        st = procfs.stat(pid)
        if st is None or st.start != since or st.state == "Z":  # gone, or the pid is reused
            if fd is not None:
                os.close(fd)
            continue
        try:
            if fd is not None:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                fds.append(fd)
            else:
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            if fd is not None:
                os.close(fd)
    if killed:
        log.warning("killed %d process(es) left running by attempt %s of task %s in %s "
                    "(its worker died): %s", len(killed), doc.get("attempt"), doc.get("task"),
                    workdir, " ".join(map(str, killed)))
    if not _wait(fds, killed):
        log.warning("processes of an earlier attempt in %s did not end within %g s of "
                    "SIGKILL (stuck in I/O?)", workdir, WAIT)
    forget(workdir)
    return killed


def _find(group: int | None, marks: set[bytes]) -> dict[int, int]:
    """The live processes (pid -> start time) in process group ``group`` or whose
    environment holds all of ``marks``."""
    found: dict[int, int] = {}
    me = os.getpid()
    for pid in procfs.pids():
        if pid == me:
            continue
        st = procfs.stat(pid)
        if st is None or st.state == "Z":
            continue
        if group is not None and st.pgid == group:
            found[pid] = st.start
        elif marks:
            environ = procfs.environ(pid)
            if environ is not None and marks <= environ:
                found[pid] = st.start
    return found


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait(fds: list[int], pids: list[int]) -> bool:
    """Wait until the killed processes have exited: through their pidfds (readable on
    exit), or, without pidfds, by looking at /proc. True if all did within :data:`WAIT`."""
    deadline = time.monotonic() + WAIT
    try:
        if fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            left = set(fds)
            while left:
                ms = int((deadline - time.monotonic()) * 1000)
                if ms <= 0:
                    return False
                for fd, _ in poller.poll(ms):
                    left.discard(fd)
                    poller.unregister(fd)
            return True
        while any((st := procfs.stat(p)) is not None and st.state != "Z" for p in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
    finally:
        for fd in fds:
            os.close(fd)

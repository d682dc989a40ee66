"""Child processes for task runners: start in their own session, await exit without a
helper thread (pidfd on Linux), and kill the whole process group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from kale import procfs


def spawn(argv: Sequence[str], *, cwd: str | Path, env: Mapping[str, str], stdout: IO[Any] | int,
          stderr: IO[Any] | int, pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a list, never a shell string) as the leader of a new session."""
    return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=stdout, stderr=stderr, start_new_session=True,
                            pass_fds=tuple(pass_fds), close_fds=True)


async def wait(proc: subprocess.Popen[bytes]) -> int:
    """Await the exit of ``proc`` and return its exit code (negative: killed by signal)."""
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return await asyncio.to_thread(proc.wait)
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the process and everything in its session (its process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)


async def terminate(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """SIGTERM the group, then SIGKILL after ``grace`` seconds; reap the process."""
    if proc.poll() is not None:
        kill_group(proc)  # its children may still run
        return
    kill_group(proc, signal.SIGTERM)
    try:
        await asyncio.wait_for(wait(proc), grace)
    except TimeoutError:
        pass
    finally:  # also when this wait is itself cancelled: never leave the group alive
        kill_group(proc)
    if proc.poll() is None:
        await wait(proc)


def kill_leftovers(run_id: str) -> int:
    """Kill every process still running a task of this run, found by the ``KALE_RUN_ID``
    variable Kale puts in each task's environment (a reused pid never matches, and nothing
    has to be written per task to find them later). Used on resume and cancel, after the
    driver of a run died. Returns how many processes it killed."""
    want = f"KALE_RUN_ID={run_id}".encode()
    me = os.getpid()
    killed = 0
    for pid in procfs.pids():
        if pid == me:
            continue
        environ = procfs.environ(pid)
        if environ is not None and want in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed

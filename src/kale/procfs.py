"""Reading processes from Linux's ``/proc``: the one place that parses ``/proc/PID/stat``,
tells a process from a later one with the same pid, and scans environments.

Read by hand rather than through psutil because some callers are hot: the worker's monitor
reads the stat line of every process on the machine each sample, and every shell task's
runner reads its process's start time (:mod:`kale.tasks.groups`). A small file is read with
one ``os.read`` (about 15 us, against 25 us through ``open()``, and much more through
``psutil.Process``).

Nothing here raises because a process vanished, turned zombie or is not ours to read: the
readers return None. Elsewhere than Linux (no ``/proc``) they all return None too; the
monitor then uses psutil (:mod:`kale.tasks.monitor`).

Imports only the standard library.
"""

from __future__ import annotations

import os
from typing import NamedTuple

__all__ = ["Stat", "boot_id", "cmdline", "environ", "pids", "process_identity", "read",
           "stat", "stat_fields"]


class Stat(NamedTuple):
    """What callers need of ``/proc/PID/stat``."""

    state: str  # R, S, D, Z (zombie), X (dead), T...
    ppid: int
    pgid: int   # its process group
    start: int  # start time, in clock ticks after boot: with the pid, names the process


def read(path: str) -> bytes | None:
    """A small ``/proc`` file (up to 4 KiB) in one read; None if it is gone or not ours
    to read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` after the command name, so field ``n`` of
    proc(5) (counted from 1) is at index ``n - 3``: 0 state, 1 ppid, 2 process group,
    11/12 user/system time, 13/14 children's user/system time, 19 start time, 21 RSS in
    pages. The name, in parentheses, may itself hold spaces and ``)``: the fields start
    after the *last* ``)``. None if the process is gone or the line is cut short."""
    data = read(f"/proc/{pid}/stat")
    if data is None:
        return None
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 2:].split()


def stat(pid: int) -> Stat | None:
    """State, parent, process group and start time of ``pid`` (None if it is gone)."""
    f = stat_fields(pid)
    if f is None:
        return None
    try:
        return Stat(f[0].decode(), int(f[1]), int(f[2]), int(f[19]))
    except (ValueError, IndexError):
        return None


_BOOT: list[str] = []


def boot_id() -> str:
    """This boot of this machine ("" if unknown): pids and start times mean nothing across
    a reboot. Read once per process."""
    if not _BOOT:
        data = read("/proc/sys/kernel/random/boot_id")
        _BOOT.append(data.decode().strip() if data is not None else "")
    return _BOOT[0]


def process_identity(pid: int) -> str | None:
    """``boot id:start time`` of a live process: equal only for the same process, also
    after its pid is reused or the machine rebooted. None if it does not exist (or is a
    zombie), or elsewhere than Linux."""
    st = stat(pid)
    if st is None or st.state == "Z":
        return None
    boot = boot_id()
    if not boot:
        return None
    return f"{boot}:{st.start}"


def cmdline(pid: int) -> bytes | None:
    """The command line of ``pid``, arguments separated by NULs (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def environ(pid: int) -> set[bytes] | None:
    """The environment of ``pid`` as its ``NAME=value`` entries (None if it is gone or
    not ours to read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return set(f.read().split(b"\0"))
    except OSError:
        return None


def pids() -> list[int]:
    """Every process of the machine (of this pid namespace); [] without ``/proc``."""
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []

"""A copy between two remote hosts, relayed through this machine by two rsync commands:
source to a private local temporary directory, then that directory to the destination.

So that only changed files travel, even on the first leg, the temporary directory starts
as a *skeleton* of the destination: for each regular file there (listed with ``rsync
--list-only``), a sparse file of the same size, modification time and mode, which takes
no disk. rsync's quick check then skips on the first leg every selected file the
destination already has, and replaces (a new inode) each changed one. The skeleton's
untouched files are removed before the second leg, which sends only what the first
fetched, and never touches the destination's existing directories
(``--no-implied-dirs``).

Invariants: the skeleton only saves work; nothing it holds is ever sent (a listing that
fails, or a line it does not understand, means that file is fetched in full); the
temporary directory is removed whatever happens; each leg keeps the invariants of
:mod:`kale.transfers.base`, and a failure names the end at fault.
"""

from __future__ import annotations

import calendar
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from kale.transfers.base import Endpoint

if TYPE_CHECKING:
    from kale.transfers.rsync import RsyncTransfer, Sent

#: one line of ``rsync --list-only --no-human-readable`` in UTC: type, mode, size, time, name
_LINE = re.compile(r"^([-d])([-rwxsStT]{9})\s+(\d+) (\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) (.+)$")
#: (inode, size, mtime in ns, mode) of a skeleton file as made
Mark = tuple[int, int, int, int]


def relay(transfer: RsyncTransfer, src: Endpoint, dst: Endpoint, paths: list[str] | None,
          log: TextIO | None) -> Sent:
    """Copy ``paths`` of ``src`` to ``dst`` (both remote) through this machine."""
    with tempfile.TemporaryDirectory(prefix="kale-relay-") as tmp:
        here = Endpoint(None, tmp)
        files, dirs = skeleton(transfer, dst, Path(tmp))
        transfer.run(src, here, paths, log, extra=["--whole-file"])
        fetched = unskeleton(Path(tmp), files, dirs)  # none: the second leg makes dst
        return transfer.run(here, dst, fetched, log, extra=["--no-implied-dirs"])


def skeleton(transfer: RsyncTransfer, dst: Endpoint,
             root: Path) -> tuple[dict[str, Mark], set[str]]:
    """Make ``root`` a skeleton of ``dst``: its files and directories as made."""
    argv = [transfer.rsync, "--list-only", "-r", "--no-human-readable",
            f"--timeout={transfer.io_timeout}", "-e", transfer.rsh(dst),
            f"--rsync-path={transfer.remote_rsync}", "--", f"{dst.host}:{dst.path.rstrip('/')}/"]
    code, out, err = transfer.execute(argv, None, None)
    # the destination cannot be reached, or has no rsync: say so before the first leg
    # (23: some of it cannot be listed, or it is not there yet: fetch in full)
    if code not in (0, 23, 24):
        raise transfer.failure(code, err, Endpoint(None, str(root)), dst)
    files: dict[str, Mark] = {}
    dirs: set[str] = set()
    for line in out.splitlines() if code == 0 else ():
        m = _LINE.match(line)
        if not m or "\\#" in line:
            continue
        kind, mode, size, when, name = m.groups()
        if name == "." or name.startswith("/") or ".." in name.split("/"):
            continue
        path = root / name
        if kind == "d":
            path.mkdir(parents=True, exist_ok=True)
            dirs.add(name)
            continue
        mtime = calendar.timegm(time.strptime(when, "%Y/%m/%d %H:%M:%S"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(int(size))
        os.chmod(path, parse_mode(mode))
        os.utime(path, (mtime, mtime))
        st = path.stat()
        files[name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return files, dirs


def unskeleton(root: Path, files: dict[str, Mark], dirs: set[str]) -> list[str]:
    """Remove the skeleton files the first leg left untouched; what remains to send
    (files, links, and directories the first leg made), relative to ``root``."""
    for name, mark in files.items():
        try:
            st = (root / name).lstat()
        except FileNotFoundError:
            continue
        if (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode) == mark:
            (root / name).unlink()
    out: list[str] = []
    for here, subdirs, names in os.walk(root):
        rel = os.path.relpath(here, root)
        prefix = "" if rel == "." else rel + "/"
        out += [prefix + n for n in names]
        out += [prefix + d for d in subdirs if prefix + d not in dirs]
        subdirs[:] = [d for d in subdirs if not (Path(here) / d).is_symlink()]
    return sorted(out)


def parse_mode(text: str) -> int:
    """``rwxr-sr-x`` as permission bits (set-id and sticky included)."""
    bits = 0
    for i, (c, who) in enumerate(zip(text, "uuugggooo", strict=True)):
        shift = 6 - 3 * (i // 3)
        if c in "rwxst":
            bits |= (4 >> (i % 3)) << shift if c in "rwx" or i % 3 == 2 else 0
        if c in "sS" and who == "u":
            bits |= stat.S_ISUID
        elif c in "sS" and who == "g":
            bits |= stat.S_ISGID
        elif c in "tT":
            bits |= stat.S_ISVTX
    return bits

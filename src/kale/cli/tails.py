"""Why a task failed, in its own words: the last lines it wrote to stderr.

Every runner writes what went wrong to the task's stderr log (a shell command's messages,
a Python task's traceback, a notebook's failing cell), so the end of that log is the
answer for every kind of task; the task's ``traceback`` field is added when the log does
not already end with it (a log on another machine, a runner that keeps it apart)."""

from __future__ import annotations

import re
from pathlib import Path

TAIL_BYTES = 65_536  # read at most this much of the end of a log
LINE_CHARS = 500     # a longer line is cut (a binary blob, a minified JSON)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def read_tail(path: str | Path | None, limit: int = TAIL_BYTES) -> str:
    """The end of the file at ``path`` ("" when there is none)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if size > limit:  # the first line is likely cut
        text = text.partition("\n")[2]
    return text


def last_lines(text: str, limit: int) -> list[str]:
    """The last ``limit`` non-blank lines of ``text``, as a terminal showed them: colour
    codes removed, a line redrawn with carriage returns (a progress bar) as it ended."""
    lines = []
    for raw in _ANSI.sub("", text).split("\n"):
        line = raw.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
        if line.strip():
            lines.append(line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…")
    return lines[-limit:] if limit > 0 else []


def failure_lines(stderr: str, traceback: str | None = None, limit: int = 10) -> list[str]:
    """What to show under a failed task: the last ``limit`` lines of its ``stderr``,
    ending with its ``traceback`` when stderr does not already end with it."""
    lines = last_lines(stderr, limit)
    tb = last_lines(traceback or "", limit)
    if tb and tb[-1] not in lines:
        lines = (lines + tb)[-limit:]
    return lines

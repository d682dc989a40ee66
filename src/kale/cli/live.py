"""Progress of a run in the terminal: a live table and progress bar on a TTY, plain lines
(one per transition) otherwise. Both are engine listeners, and both show a task that
failed with the last lines of its stderr (:mod:`kale.cli.tails`): below the table, or
under the line that says it failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from kale.cli.tails import failure_lines, read_tail
from kale.model.display import COLORS, duration
from kale.model.dynamic import group_of
from kale.model.states import TaskState
from kale.store.store import Change

ACTIVE = {TaskState.RUNNING, TaskState.RETRYING, TaskState.SUBMITTED, TaskState.WAITING,
          TaskState.SUSPENDED}
PROBLEM = {TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELLED}
FAILED = {TaskState.FAILED, TaskState.TIMEOUT}
#: what a map's member is shown for, one line each
QUIET_MEMBER = PROBLEM | {TaskState.RETRYING, TaskState.SKIPPED}
TAIL_LINES = 10  # of a failed task's stderr, at the failure


class Failures:
    """The stderr log of each task's current attempt (the engine says where when the
    attempt starts; ``stderr_of`` finds it for an attempt started before this process
    listened, e.g. a resumed run), and the last lines of it once the task failed."""

    def __init__(self, stderr_of: Callable[[str], str | None] | None = None) -> None:
        self.stderr_of = stderr_of
        self.paths: dict[str, str] = {}

    def lines(self, ch: Change, limit: int = TAIL_LINES) -> list[str]:
        """Remember where ``ch``'s task logs; if it failed, the lines that say why."""
        if ch.values.get("stderr"):
            self.paths[ch.task] = str(ch.values["stderr"])
        if ch.new not in FAILED:
            return []
        path = self.paths.get(ch.task)
        if path is None and self.stderr_of is not None:
            try:
                path = self.stderr_of(ch.task)
            except Exception:  # a display never stops a run
                path = None
        return failure_lines(read_tail(path), ch.values.get("traceback"), limit)


class PlainProgress:
    """One line per transition: ``12:00:01 fetch RUNNING attempt 1``; a failure is
    followed by the last lines of the task's stderr, indented. A map's members (there may
    be thousands) get a line only when they are in trouble (failed, retried, timed out,
    cancelled); their map's lines say when it starts and ends."""

    def __init__(self, console: Console,
                 stderr_of: Callable[[str], str | None] | None = None) -> None:
        self.console = console
        self.failures = Failures(stderr_of)

    def __call__(self, changes: Sequence[Change]) -> None:
        stamp = time.strftime("%H:%M:%S")
        for ch in changes:
            why = self.failures.lines(ch)
            if ch.new in (TaskState.PENDING, TaskState.READY) or (
                    ch.new not in QUIET_MEMBER and group_of(ch.task) is not None):
                continue
            reason = f" {ch.reason}" if ch.reason else ""
            self.console.print(f"{stamp} {ch.task} {ch.new.value}{reason}", highlight=False,
                               markup=False, soft_wrap=True)
            print_tail(self.console, why)


    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def print_tail(console: Console, lines: Sequence[str]) -> None:
    """A failed task's last stderr lines, under the line that says it failed."""
    for line in lines:
        console.print(f"    | {line}", highlight=False, markup=False, soft_wrap=True)


class LiveTable:
    """A live table of the tasks that are running or in trouble, and a progress bar."""

    MAX_ROWS = 20
    MAX_FAILURES = 3  # shown with their stderr below the table (the latest ones)
    FAILURE_LINES = TAIL_LINES

    def __init__(self, console: Console, names: Sequence[str], selected: set[str],
                 stderr_of: Callable[[str], str | None] | None = None) -> None:
        self.console = console
        self.failures = Failures(stderr_of)
        self.why: dict[str, list[str]] = {}  # failed task -> its last stderr lines
        self.names = list(names)
        self.selected = selected
        self.state: dict[str, TaskState] = dict.fromkeys(self.names, TaskState.PENDING)
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.reason: dict[str, str] = {}
        self.lock = threading.Lock()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.bar = self.progress.add_task("tasks", total=len(selected))
        self.live = Live(console=console, refresh_per_second=8, get_renderable=self.render,
                         transient=False)

    def __call__(self, changes: Sequence[Change]) -> None:
        now = time.time()
        why = {ch.task: self.failures.lines(ch, self.FAILURE_LINES) for ch in changes}
        with self.lock:
            for ch in changes:
                if ch.new in FAILED:
                    self.why.pop(ch.task, None)  # (re)inserted last: the latest failure
                    self.why[ch.task] = why[ch.task]
                elif ch.task in self.why:  # running again (a rerun)
                    del self.why[ch.task]
                self.state[ch.task] = ch.new
                if ch.new is TaskState.RUNNING:
                    self.started[ch.task] = now
                elif ch.new.terminal:
                    self.ended[ch.task] = now
                if ch.reason:
                    self.reason[ch.task] = ch.reason
            done = sum(1 for n in self.selected if self.state[n].terminal)
        self.progress.update(self.bar, completed=done)

    def render(self) -> Group:
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("task", "state", "time", "note"):
            table.add_column(col, overflow="fold" if col == "note" else "ellipsis")
        with self.lock:
            shown = [n for n in self.names if self.state[n] in ACTIVE | PROBLEM]
            if len(self.names) <= self.MAX_ROWS:
                shown = self.names
            now = time.time()
            for n in shown[: self.MAX_ROWS]:
                st = self.state[n]
                t0 = self.started.get(n)
                spent = (self.ended.get(n, now) - t0) if t0 else None
                table.add_row(n, f"[{COLORS[st.value]}]{st.value}[/]", duration(spent),
                              self.reason.get(n, "") if st is not TaskState.SUCCEEDED else "")
            hidden = len(shown) - self.MAX_ROWS
            failed = [(n, lines) for n, lines in self.why.items() if lines]
        parts: list[Any] = [table]
        if hidden > 0:
            parts.append(f"... and {hidden} more")
        for name, lines in failed[-self.MAX_FAILURES:]:
            parts.append(Text(f"{name} failed; the end of its stderr:", style="bold red"))
            parts.extend(Text(f"    | {line}", style="dim") for line in lines)
        if len(failed) > self.MAX_FAILURES:
            parts.append(f"... and {len(failed) - self.MAX_FAILURES} more failed tasks "
                         "(`kale status RUN TASK` shows each)")
        parts.append(self.progress)
        return Group(*parts)

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

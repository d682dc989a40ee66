"""Progress of a run in the terminal: a live table and progress bar on a TTY, plain lines
(one per transition) otherwise. Both are engine listeners."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kale.display import COLORS, duration
from kale.model.states import TaskState
from kale.store.store import Change

ACTIVE = {TaskState.RUNNING, TaskState.RETRYING, TaskState.SUBMITTED, TaskState.WAITING,
          TaskState.SUSPENDED}
PROBLEM = {TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELLED}


class PlainProgress:
    """One line per transition: ``12:00:01 fetch RUNNING attempt 1``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, changes: Sequence[Change]) -> None:
        stamp = time.strftime("%H:%M:%S")
        for ch in changes:
            if ch.new in (TaskState.PENDING, TaskState.READY):
                continue
            reason = f" {ch.reason}" if ch.reason else ""
            self.console.print(f"{stamp} {ch.task} {ch.new.value}{reason}", highlight=False,
                               markup=False, soft_wrap=True)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class LiveTable:
    """A live table of the tasks that are running or in trouble, and a progress bar."""

    MAX_ROWS = 20

    def __init__(self, console: Console, names: Sequence[str], selected: set[str]) -> None:
        self.console = console
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
        with self.lock:
            for ch in changes:
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
        parts: list[Any] = [table]
        if hidden > 0:
            parts.append(f"... and {hidden} more")
        parts.append(self.progress)
        return Group(*parts)

    def __enter__(self) -> LiveTable:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

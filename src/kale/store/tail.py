"""Follow a run as it happens: its state changes, new log lines and resource samples,
read from the store and the task log files. The manager's event stream
(``GET /api/runs/R/events``) and the dashboards of runs without a manager both read a run
through :class:`RunTail`."""

from __future__ import annotations

import os
from typing import Any

from kale.store import workers as wstore
from kale.store.store import Store

Event = tuple[str, dict[str, Any]]

RAN = ("SUBMITTED", "RUNNING", "SUSPENDED")  # states from which a task's end had logs


class RunTail:
    """Each :meth:`poll` returns what happened since the last one, as ``(event, data)``:
    ``state`` (a task or the run changed state; ``id`` orders them), ``log`` (a line of a
    task's stdout or stderr, with ``offset``: the byte just after it in its file),
    ``resources`` (a sample of a task's process tree, with the ``worker`` that ran it),
    and last ``end``.

    Log files are followed only while their task is under way (from its ``SUBMITTED`` or
    ``RUNNING`` event to its end, plus one last read then); a reader from the run's start
    (``after=0``) also gets, once, what the files of tasks already over hold, while one
    that resumes (``after`` > 0) had those, except for a task that was under way at
    ``after`` and ended since: its files are read once more, whole (a view keeps a line
    once, by its offset), so the lines it wrote while the reader was away are not lost.
    A poll costs one query for the log files of every task that started since the last
    (not one per task) and a ``stat`` per followed file (opened only when it grew; most
    tasks write nothing, and their files are never made), so following a run of 100,000
    tasks costs about its new events."""

    def __init__(self, store: Store, run_id: str, after: int = 0) -> None:
        self.store, self.run_id = store, run_id
        self.last, self.last_sample = after, 0
        self.ended = False
        self._offsets: dict[str, int] = {}       # log path -> bytes already read
        self._partial: dict[str, bytes] = {}     # log path -> a line not yet ended
        self._logs: dict[str, tuple[str | None, str | None]] = {}  # task -> its log files
        self._active: set[str] = set()  # tasks whose logs are followed
        self._workers: dict[tuple[str, int], str | None] = {}
        #: the events the log files read here already reflect: a start among them is not
        #: a new attempt (a reader from the start of a finished run of 100,000 tasks
        #: looks up no log file again)
        self._known = store.last_event(run_id)
        for name, (state, out, err) in store.log_files(run_id).items():
            if after == 0 or not state.terminal:  # what is there, then followed if it runs
                self._logs[name] = (out, err)
                self._active.add(name)

    def poll(self) -> list[Event]:
        if self.ended:
            return []
        # The run's state first: once it is seen ended, the events read next include every
        # task's last event (they were committed before the run's end).
        run_state = self.store.get_run(self.run_id).state
        rows = self.store.events(self.run_id, self.last)
        out: list[Event] = []
        ending: set[str] = set()
        for e in rows:
            self.last = e["id"]
            out.append(("state", {"id": e["id"], "task": e["task"], "old": e["old"],
                                  "new": e["new"], "reason": e["reason"], "ts": e["ts"]}))
            name = e["task"]
            if name is None:
                continue
            if e["new"] in ("SUBMITTED", "RUNNING"):
                self._active.add(name)
                if e["id"] > self._known:
                    self._logs.pop(name, None)  # a new attempt: new log files
                ending.discard(name)  # (READY, then SUBMITTED, in one read)
            elif e["new"] != "SUSPENDED":
                if e["old"] in RAN and name not in self._active:
                    # under way before this reader's start and ended since (a view that
                    # resumes after its connection dropped): one last read of its logs
                    self._active.add(name)
                ending.add(name)
        unknown = [n for n in self._active if n not in self._logs]
        if unknown:  # committed with the event that made them active: one query for all
            found = self.store.log_files(self.run_id, unknown)
            for name in unknown:
                self._logs[name] = found[name][1:] if name in found else (None, None)
        for name in sorted(self._active):
            for stream, path in zip(("stdout", "stderr"), self._logs[name], strict=True):
                for line, offset in self._new_lines(path):
                    out.append(("log", {"task": name, "stream": stream, "line": line,
                                        "offset": offset}))
        self._active -= ending
        for name in ending:
            self._logs.pop(name, None)
        for s in wstore.samples(self.store, self.run_id, None, self.last_sample):
            self.last_sample = s["id"]
            s["worker"] = self._worker(s["task"], s["attempt"])
            out.append(("resources", s))
        if run_state.terminal and not rows:
            self.ended = True
            out.append(("end", {"state": run_state.value}))
        return out

    def _worker(self, task: str, attempt: int) -> str | None:
        key = (task, attempt)
        if key not in self._workers:
            rows = [a for a in self.store.attempts(self.run_id, task) if a["number"] == attempt]
            self._workers[key] = rows[0]["worker"] if rows else None
        return self._workers[key]

    def _new_lines(self, path: str | None) -> list[tuple[str, int]]:
        if not path:
            return []
        start = self._offsets.get(path, 0)
        try:
            if os.stat(path).st_size <= start:  # nothing new (or no file yet): not opened
                return []
            with open(path, "rb") as f:
                f.seek(start)
                chunk = f.read(1 << 20)
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self._offsets[path] = start + len(chunk)
        before = self._partial.pop(path, b"")
        data = before + chunk
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[path] = rest
        out, pos = [], start - len(before)
        for line in lines:
            pos += len(line) + 1
            out.append((line.decode(errors="replace"), pos))
        return out

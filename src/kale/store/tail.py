"""Follow a run as it happens: its state changes, new log lines and resource samples,
read from the store and the task log files. The manager's event stream
(``GET /api/runs/R/events``) and the dashboards of runs without a manager both read a run
through :class:`RunTail`."""

from __future__ import annotations

from typing import Any

from kale.store import workers as wstore
from kale.store.store import Store

Event = tuple[str, dict[str, Any]]


class RunTail:
    """Each :meth:`poll` returns what happened since the last one, as ``(event, data)``:
    ``state`` (a task or the run changed state; ``id`` orders them), ``log`` (a line of a
    task's stdout or stderr, with ``offset``: the byte just after it in its file),
    ``resources`` (a sample of a task's process tree, with the ``worker`` that ran it),
    and last ``end``. Log files are read only for tasks that have started and not
    ended (plus one last read when they end), so following a run of thousands of tasks
    costs little more than its new events."""

    def __init__(self, store: Store, run_id: str, after: int = 0) -> None:
        self.store, self.run_id = store, run_id
        self.last, self.last_sample = after, 0
        self.ended = False
        self._offsets: dict[str, int] = {}       # log path -> bytes already read
        self._partial: dict[str, bytes] = {}     # log path -> a line not yet ended
        self._logs: dict[str, tuple[str | None, str | None]] = {}  # task -> its log files
        self._active: set[str] = set()
        self._workers: dict[tuple[str, int], str | None] = {}
        for t in store.tasks(run_id):
            if t.stdout or t.stderr:
                self._logs[t.name] = (t.stdout, t.stderr)
                self._active.add(t.name)  # sends what is there, then follows it if it runs

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
                self._logs.pop(name, None)  # a new attempt: new log files
                ending.discard(name)  # (READY, then SUBMITTED, in one read)
            elif e["new"] != "SUSPENDED":
                ending.add(name)
        for name in sorted(self._active):
            if name not in self._logs:
                t = self.store.task(self.run_id, name)
                self._logs[name] = (t.stdout, t.stderr)
            for stream, path in zip(("stdout", "stderr"), self._logs[name], strict=True):
                for line, offset in self._new_lines(path):
                    out.append(("log", {"task": name, "stream": stream, "line": line,
                                        "offset": offset}))
        self._active -= ending
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

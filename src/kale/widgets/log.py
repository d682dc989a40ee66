"""LogView: a task's stdout or stderr, followed live."""

from __future__ import annotations

from typing import Any

import traitlets as T

from kale.widgets.base import RunView, asset
from kale.widgets.source import Event

KEEP = 200_000  # characters of a log the view holds (the end of it)


class LogView(RunView):
    """The end of one task's stdout or stderr, with the lines the task writes added as
    they come (``follow`` keeps the view scrolled to the newest). Choose the task and the
    stream in the widget, or set ``task`` / ``stream``."""

    _esm = asset("common.js", "log.js")
    task = T.Unicode("").tag(sync=True)
    stream = T.Enum(["stdout", "stderr"], "stdout").tag(sync=True)
    follow = T.Bool(True).tag(sync=True)
    text = T.Unicode("").tag(sync=True)
    tasks = T.List(T.Unicode()).tag(sync=True)

    def __init__(self, run: Any = None, task: str = "", **kwargs: Any) -> None:
        self._bytes = 0  # how far into the log file the text goes
        self._wanted = task
        super().__init__(run, **kwargs)
        self.observe(self._switch, names=["task", "stream"])

    def reset(self, run_id: str) -> None:
        doc = self.source.status(run_id)
        self.run_id = doc["run"]["id"]
        tasks = doc.get("tasks", [])
        self.tasks = [t["name"] for t in tasks]
        self.after = int(doc.get("last_event") or 0)
        if self._wanted in self.tasks:
            task = self._wanted
        elif self.task in self.tasks:
            task = self.task
        else:  # something running, else what failed, else the first
            task = next((t["name"] for t in tasks if t["state"] == "RUNNING"),
                        next((t["name"] for t in tasks if t["state"] == "FAILED"),
                             self.tasks[0] if self.tasks else ""))
        with self.hold_trait_notifications():
            self.task = task
        self._load()

    def _switch(self, _change: dict[str, Any]) -> None:
        with self.reporting(), self._lock:
            self._load()

    def _load(self) -> None:
        text = self.source.logs(self.run_id, self.task, self.stream) if self.task else ""
        self._bytes = len(text.encode())
        self.text = text[-KEEP:]

    def on_events(self, batch: list[Event]) -> None:
        new = []
        for event, data in batch:
            if event == "log" and data["task"] == self.task and data["stream"] == self.stream:
                offset = int(data.get("offset") or 0)
                if offset > self._bytes:  # not already in the text (a reconnection resends)
                    new.append(data["line"] + "\n")
                    self._bytes = offset
            elif event == "state" and int(data["id"]) > self.after and data["task"] == self.task \
                    and data["new"] in ("SUBMITTED", "RUNNING") and data["old"] in (
                        "RETRYING", "READY", "PENDING"):
                self._bytes = 0  # a new attempt writes new log files
                self.text = ""
        if new:
            self.text = (self.text + "".join(new))[-KEEP:]

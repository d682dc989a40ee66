"""LogView: a task's stdout or stderr, followed live."""

from __future__ import annotations

from typing import Any

import traitlets as T

from kale.model.dynamic import group_of
from kale.widgets.base import RunView, asset
from kale.widgets.source import Event

KEEP = 200_000  # characters of a log the view holds (the end of it)


LIST_MAX = 1000  # tasks the widget's choice lists at most (a run may have 100,000)


def offered(workflow: list[str], task: str, limit: int = LIST_MAX) -> list[str]:
    """The choice a LogView offers: the workflow's first ``limit`` tasks, and ``task`` (the
    one shown) if it is not among them. Any other task is shown by name, or by a click on
    its box in a :class:`~kale.widgets.Dashboard`'s graph."""
    listed = workflow[:limit]
    return listed + ([task] if task and task not in set(listed) else [])


class LogView(RunView):
    """The end of one task's stdout or stderr, with the lines the task writes added as
    they come (``follow`` keeps the view scrolled to the newest). Choose the task and the
    stream in the widget, or set ``task`` / ``stream``.

    ``tasks`` (the widget's choice) lists the workflow's own tasks, in the run's order,
    plus the task shown if it is not one of them: a map's member (``analyse[7]``) or a
    task a task added (``plan[refine]``). So a map of 10,000 members adds one entry, not
    10,000; of a run of 100,000 tasks, it lists the first :data:`LIST_MAX`. Any task or
    member can be shown by name (``task = "analyse[7]"``, or a click on it in a
    :class:`Dashboard`'s graph), including one made after the view loaded; a name the run
    does not have is refused (``error``), and the view keeps what it showed."""

    _esm = asset("common.js", "log.js")
    task = T.Unicode("").tag(sync=True)
    stream = T.Enum(["stdout", "stderr"], "stdout").tag(sync=True)
    follow = T.Bool(True).tag(sync=True)
    text = T.Unicode("").tag(sync=True)
    tasks = T.List(T.Unicode()).tag(sync=True)

    def __init__(self, run: Any = None, task: str = "", **kwargs: Any) -> None:
        self._bytes = 0  # how far into the log file the text goes
        self._wanted = task
        self._workflow: list[str] = []  # the run's tasks that are no member
        self._members: set[str] = set()  # the members the view knows the run has
        super().__init__(run, **kwargs)
        self.observe(self._switch, names=["task", "stream"])

    def reset(self, run_id: str) -> None:
        doc = self.source.status(run_id)
        self.run_id = doc["run"]["id"]
        tasks = doc.get("tasks", [])
        self._workflow = [t["name"] for t in tasks if not t.get("member_of")]
        self._members = {t["name"] for t in tasks if t.get("member_of")}
        self.after = int(doc.get("last_event") or 0)
        if self._known(self._wanted):
            task = self._wanted
        elif self._known(self.task):
            task = self.task
        else:  # something running, else what failed, else the first
            task = next((t["name"] for t in tasks if t["state"] == "RUNNING"),
                        next((t["name"] for t in tasks if t["state"] == "FAILED"),
                             self._workflow[0] if self._workflow else ""))
        with self.hold_trait_notifications():
            self.tasks = self._listed(task)
            self.task = task
        self._load()

    def _known(self, task: str) -> bool:
        return bool(task) and (task in self._members or task in self._workflow)

    def _listed(self, task: str) -> list[str]:
        """The choice the widget offers (:func:`offered`)."""
        return offered(self._workflow, task)

    def show(self, task: str) -> None:
        """Show ``task``'s log: a task of the workflow or any member, by name."""
        self.task = task

    def _switch(self, change: dict[str, Any]) -> None:
        with self.reporting(), self._lock:
            if change["name"] == "task" and self.task and not self._known(self.task):
                try:  # a member made after the view loaded (else no task of the run)
                    self.source.task(self.run_id, self.task)
                except Exception:
                    self.task = change["old"]  # (which loads it again)
                    raise
                self._members.add(self.task)
            with self.hold_sync():
                self.tasks = self._listed(self.task)
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
            elif event == "state" and data["task"]:
                self._state(data)
        if new:
            self.text = (self.text + "".join(new))[-KEEP:]

    def _state(self, data: dict[str, Any]) -> None:
        if group_of(data["task"]) is not None:
            self._members.add(data["task"])  # (a member the run made since the view loaded)
        if int(data["id"]) > self.after and data["task"] == self.task \
                and data["new"] in ("SUBMITTED", "RUNNING") \
                and data["old"] in ("RETRYING", "READY", "PENDING"):
            self._bytes = 0  # a new attempt writes new log files
            self.text = ""

"""ResourceView: CPU, memory (and GPU when reported) over time, per task or per worker."""

from __future__ import annotations

from typing import Any

import traitlets as T

from kale.model.dynamic import group_of
from kale.widgets.base import RunView, asset
from kale.widgets.source import Event

POINTS = 300  # kept per line
BUCKET = 2.0  # seconds: the time step of a summed line (the workers' default sample interval)

Line = dict[str, list[float | None]]
Values = tuple[float, float, float | None]  # cpu, rss, gpu


def _empty() -> Line:
    return {"t": [], "cpu": [], "rss": [], "gpu": []}


def box_of(task: str) -> str:
    """The task of the workflow ``task`` is listed under (its box in the graph): itself,
    or for a map's member or a task a task added, the task they are below
    (``analyse[3]`` and ``plan[refine][2]`` -> ``analyse``, ``plan``)."""
    while (group := group_of(task)) is not None:
        task = group
    return task


class Summed:
    """Samples of several tasks added up over time, per key (a map, a worker): time is cut
    into ``BUCKET``-second steps, and a step's value is the sum over the tasks sampled in
    it of each one's latest sample there (CPU: cores' worth in use together; memory: all
    of it; GPU: utilisation summed, None when no task of the step reported a GPU).

    Invariants: a task counts once per step, whatever its sample interval; a key keeps
    its newest ``POINTS`` steps."""

    def __init__(self) -> None:
        self._keys: dict[str, dict[int, dict[str, Values]]] = {}

    def add(self, key: str, task: str, ts: float, values: Values) -> None:
        steps = self._keys.setdefault(key, {})
        steps.setdefault(int(ts // BUCKET), {})[task] = values
        if len(steps) > POINTS:
            for old in sorted(steps)[:-POINTS]:
                del steps[old]

    def names(self) -> list[str]:
        """The keys, in the order their first sample came."""
        return list(self._keys)

    def line(self, key: str) -> Line:
        line = _empty()
        for step, tasks in sorted(self._keys.get(key, {}).items()):
            gpus = [v[2] for v in tasks.values() if v[2] is not None]
            line["t"].append(step * BUCKET)
            line["cpu"].append(sum(v[0] for v in tasks.values()))
            line["rss"].append(sum(v[1] for v in tasks.values()))
            line["gpu"].append(sum(gpus) if gpus else None)
        return line


class ResourceView(RunView):
    """Live line charts of the run's resource samples (taken every 2 s by the workers
    from each task's process tree): CPU in % of one core, resident memory, and GPU
    utilisation when the worker reports one.

    ``by="task"``: a line per task of the workflow, every sample of it. A map's members
    (and the tasks a task added, with that task's own samples) are one line, named after
    the map, their sum (:class:`Summed`: the CPU and memory the map uses at a time), not
    a line per member. ``task`` draws that task alone: a task of the workflow, or one
    member (``analyse[7]``: its own samples), as clicking it in a :class:`Dashboard`'s
    graph does. ``by="worker"``: a line per worker, the sum of its tasks."""

    _esm = asset("common.js", "resources.js")
    by = T.Enum(["task", "worker"], "task").tag(sync=True)
    task = T.Unicode("").tag(sync=True)
    series = T.Dict().tag(sync=True)

    def __init__(self, run: Any = None, **kwargs: Any) -> None:
        self._tasks: dict[str, Line] = {}  # every task's own samples, members' too
        self._boxes: dict[str, None] = {}  # the workflow's tasks sampled, in order
        self._maps = Summed()  # per task of the workflow, its samples and its members'
        self._grouped: set[str] = set()  # the tasks of the workflow with members sampled
        self._workers = Summed()
        self._seen = 0
        super().__init__(run, **kwargs)
        self.observe(lambda _c: self._publish(), names=["by", "task"])

    def reset(self, run_id: str) -> None:
        self.run_id = run_id
        self._tasks, self._boxes, self._grouped, self._seen = {}, {}, set(), 0
        self._maps, self._workers = Summed(), Summed()
        self.series = {}

    def on_events(self, batch: list[Event]) -> None:
        fresh = False
        for event, s in batch:
            if event != "resources" or int(s["id"]) <= self._seen:
                continue  # (a reconnection sends the samples again)
            self._seen, fresh = int(s["id"]), True
            self._sample(s)
        if fresh:
            self._publish()

    def _sample(self, s: dict[str, Any]) -> None:
        gpu = sum(g.get("util", 0) for g in s["gpu"]) if s.get("gpu") else None
        values: Values = (s["cpu"] or 0.0, s["rss"] or 0, gpu)
        task, ts = s["task"], float(s["ts"])
        line = self._tasks.setdefault(task, _empty())
        for key, value in zip(("t", "cpu", "rss", "gpu"), (ts, *values), strict=True):
            line[key].append(value)
            del line[key][:-POINTS]
        box = box_of(task)
        self._boxes.setdefault(box)
        if box != task:
            self._grouped.add(box)
        self._maps.add(box, task, ts, values)
        self._workers.add(s.get("worker") or "?", task, ts, values)

    def _line(self, name: str) -> Line | None:
        """What the chart draws for ``name``: a map's sum, else the task's own samples."""
        if name in self._grouped:
            return self._maps.line(name)
        return self._tasks.get(name)

    def _publish(self) -> None:
        if self.by == "worker":
            self.series = {w: self._workers.line(w) for w in self._workers.names()}
            return
        names = [self.task] if self.task else list(self._boxes)
        self.series = {n: line for n in names if (line := self._line(n)) is not None}

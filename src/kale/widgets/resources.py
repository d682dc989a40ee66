"""ResourceView: CPU, memory (and GPU when reported) over time, per task or per worker."""

from __future__ import annotations

from typing import Any

import traitlets as T

from kale.widgets.base import RunView, asset
from kale.widgets.source import Event

POINTS = 300  # kept per line


def _empty() -> dict[str, list[float | None]]:
    return {"t": [], "cpu": [], "rss": [], "gpu": []}


class ResourceView(RunView):
    """Live line charts of the run's resource samples (taken every 2 s by the workers
    from each task's process tree): CPU in % of one core, resident memory, and GPU
    utilisation when the worker reports one. ``by="task"`` draws a line per task (only
    ``task`` if it is set), ``by="worker"`` sums the tasks of each worker."""

    _esm = asset("common.js", "resources.js")
    by = T.Enum(["task", "worker"], "task").tag(sync=True)
    task = T.Unicode("").tag(sync=True)
    series = T.Dict().tag(sync=True)

    def __init__(self, run: Any = None, **kwargs: Any) -> None:
        self._tasks: dict[str, dict[str, list[float | None]]] = {}
        self._workers: dict[str, dict[int, list[float]]] = {}  # worker -> second -> sums
        self._seen = 0
        super().__init__(run, **kwargs)
        self.observe(lambda _c: self._publish(), names=["by", "task"])

    def reset(self, run_id: str) -> None:
        self.run_id = run_id
        self._tasks, self._workers, self._seen = {}, {}, 0
        self.series = {}

    def on_events(self, batch: list[Event]) -> None:
        fresh = False
        for event, s in batch:
            if event != "resources" or int(s["id"]) <= self._seen:
                continue  # (a reconnection sends the samples again)
            self._seen, fresh = int(s["id"]), True
            gpu = sum(g.get("util", 0) for g in s["gpu"]) if s.get("gpu") else None
            line = self._tasks.setdefault(s["task"], _empty())
            for key, value in (("t", s["ts"]), ("cpu", s["cpu"] or 0.0),
                               ("rss", s["rss"] or 0), ("gpu", gpu)):
                line[key].append(value)
                del line[key][:-POINTS]
            per = self._workers.setdefault(s.get("worker") or "?", {})
            sums = per.setdefault(int(s["ts"] // 2), [0.0, 0.0, 0.0])
            sums[0] += s["cpu"] or 0.0
            sums[1] += s["rss"] or 0
            sums[2] += gpu or 0.0
            for old in sorted(per)[:-POINTS]:
                del per[old]
        if fresh:
            self._publish()

    def _publish(self) -> None:
        if self.by == "task":
            self.series = {k: v for k, v in self._tasks.items()
                           if not self.task or k == self.task}
            return
        out = {}
        for worker, per in self._workers.items():
            line = _empty()
            for bucket in sorted(per):
                cpu, rss, gpu = per[bucket]
                line["t"].append(bucket * 2.0)
                line["cpu"].append(cpu)
                line["rss"].append(rss)
                line["gpu"].append(gpu)
            out[worker] = line
        self.series = out

"""RunsView: your runs, newest first, with their states; open one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import traitlets as T

from kale.model.display import COLORS
from kale.widgets.base import Refreshing, asset
from kale.widgets.source import Source, source_of


class RunsView(Refreshing):
    """Past and current runs (workflow, state, when, how long). "Open" sets ``opened``
    to the run's id and calls the ``on_open`` callbacks (a Dashboard shows that run)."""

    _esm = asset("common.js", "runs.js")
    runs: T.List[dict[str, Any]] = T.List().tag(sync=True)
    opened = T.Unicode("").tag(sync=True)
    colors = T.Dict(dict(COLORS)).tag(sync=True)
    limit = T.Int(50).tag(sync=True)

    def __init__(self, client: Any = None, *, source: Source | None = None,
                 interval: float = 10.0, limit: int = 50, **kwargs: Any) -> None:
        self.on_open: list[Callable[[str], Any]] = []
        super().__init__(source or source_of(client)[0], own_source=source is None,
                         interval=interval, limit=limit,
                         **kwargs)

    def refresh(self) -> None:
        runs = self.source.runs(self.limit)
        with self.hold_sync():
            self.runs = [{k: r.get(k) for k in ("id", "workflow", "state", "created_at",
                                                 "ended_at", "submitted_by", "message")}
                         for r in runs]
            self.updated = time.time()

    def open_run(self, run_id: str) -> None:
        self.opened = run_id
        for callback in self.on_open:
            callback(run_id)

    def act(self, action: str, content: dict[str, Any]) -> None:
        if action == "open":
            self.open_run(str(content["id"]))
        else:
            super().act(action, content)

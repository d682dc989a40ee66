"""QueueView: your batch jobs and the partitions they can go to."""

from __future__ import annotations

from typing import Any

import traitlets as T

from kale.widgets.base import Refreshing, asset
from kale.widgets.source import Source, source_of


class QueueView(Refreshing):
    """The batch scheduler's view of your jobs (state, why they wait, when they are
    expected to start, and which Kale task or pilot each is for) and of its partitions
    (up or down, idle nodes and CPUs, longest walltime), read every ``interval``
    seconds. ``QueueView()`` uses this home's manager; ``QueueView(client)`` another;
    ``scheduler`` names one when several are on PATH (else the one found).

    A scheduler may be slow or not answer at all (Slurm's commands wait for a controller
    that is down): the view never waits for it. It shows at once, saying "waiting for
    slurm..." (``waiting``), and fills in when the answer comes, in its own thread; the
    other views and the kernel go on meanwhile."""

    _esm = asset("common.js", "queue.js")
    background = True
    scheduler = T.Unicode("").tag(sync=True)
    jobs: T.List[dict[str, Any]] = T.List().tag(sync=True)
    partitions: T.List[dict[str, Any]] = T.List().tag(sync=True)
    problems = T.List(T.Unicode()).tag(sync=True)

    def __init__(self, client: Any = None, *, source: Source | None = None,
                 interval: float = 10.0, scheduler: str | None = None,
                 **kwargs: Any) -> None:
        self._scheduler = scheduler
        super().__init__(source or source_of(client)[0], own_source=source is None,
                         interval=interval, **kwargs)

    def waiting_for(self) -> str:
        from kale.batch.queue import detected

        # The one asked for, else the one on this machine's PATH: the manager's, in the
        # usual case of a manager on this machine (its answer says which it is).
        name = self._scheduler or detected()
        self.scheduler = name or ""
        return f"waiting for {name or 'the batch scheduler'}..."

    def refresh(self) -> None:
        import time

        doc = self.source.queue(self._scheduler)
        with self.hold_sync():
            self.scheduler = doc.get("scheduler", "")
            self.jobs = doc.get("jobs", [])
            self.partitions = doc.get("partitions", [])
            self.problems = doc.get("errors", [])
            self.updated = time.time()
            self.waiting = ""

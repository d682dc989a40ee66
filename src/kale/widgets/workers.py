"""WorkersView: the workers that run your tasks, and a form to start or stop some."""

from __future__ import annotations

import time
from typing import Any

import traitlets as T

from kale.errors import KaleError
from kale.model.executor import LOCAL, executor_kinds
from kale.widgets.base import Refreshing, asset
from kale.widgets.source import Source, source_of


class WorkersView(Refreshing):
    """Your workers (where, how many slots, what they run, when last heard from) and the
    batch jobs the manager submitted, with a form: start ``count`` local workers, or
    ``count`` pilot jobs of a scheduler (nodes, walltime, queue, slots); stop a worker or
    cancel a job. Read again every ``interval`` seconds and after each action."""

    _esm = asset("common.js", "workers.js")
    workers: T.List[dict[str, Any]] = T.List().tag(sync=True)
    jobs: T.List[dict[str, Any]] = T.List().tag(sync=True)
    #: what the form can start: local workers, or pilots of any registered scheduler
    kinds = T.List(T.Unicode()).tag(sync=True)

    def __init__(self, client: Any = None, *, source: Source | None = None,
                 interval: float = 5.0, **kwargs: Any) -> None:
        super().__init__(source or source_of(client)[0], own_source=source is None,
                         interval=interval, **kwargs)

    @T.default("kinds")
    def _kinds(self) -> list[str]:
        return list(executor_kinds())

    def refresh(self) -> None:
        workers, jobs = self.source.workers(), self.source.jobs()
        with self.hold_sync():
            self.workers = [w for w in workers if w.get("state") == "ACTIVE"]
            self.jobs = [j for j in jobs if j.get("state") in ("NEW", "QUEUED", "ACTIVE")]
            self.updated = time.time()

    def start(self, kind: str = LOCAL, count: int = 1, **options: Any) -> dict[str, Any]:
        """Start ``count`` local workers or pilot jobs (``nodes``, ``walltime``,
        ``queue``, ``account``, ``slots``)."""
        options = {k: v for k, v in options.items() if v not in (None, "")}
        done = self.source.start_workers(kind, int(count), **options)
        started = done.get("pids") or done.get("jobs") or []
        self.message = f"started {len(started)} {kind} " + (
            "worker(s)" if kind == LOCAL else "pilot job(s)")
        self.refresh()
        return dict(done)

    def stop(self, worker_id: str) -> None:
        self.source.stop_worker(worker_id)
        self.message = f"stopping worker {worker_id}"
        self.refresh()

    def cancel_job(self, job_id: str) -> None:
        self.source.cancel_job(job_id)
        self.message = f"cancelling job {job_id}"
        self.refresh()

    def act(self, action: str, content: dict[str, Any]) -> None:
        if action == "start":
            form = dict(content.get("form") or {})
            try:
                count = int(form.pop("count", 1) or 1)
                for key in ("nodes", "slots"):
                    if form.get(key) not in (None, ""):
                        form[key] = int(form[key])
            except (TypeError, ValueError) as e:
                raise KaleError(f"count, nodes and slots are whole numbers ({e})") from None
            self.start(str(form.pop("kind", LOCAL)), count, **form)
        elif action == "stop":
            self.stop(str(content["id"]))
        elif action == "cancel_job":
            self.cancel_job(str(content["id"]))
        else:
            super().act(action, content)

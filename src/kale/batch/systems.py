"""Which way Kale talks to a scheduler: its commands through PSI/J
(:class:`~kale.batch.jobs.BatchJobs`), or Slurm's REST API
(:class:`~kale.batch.rest_jobs.RestJobs`). Both offer :class:`JobSystem`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kale.batch.jobs import POLL_INTERVAL, BatchJobs, JobRequest, JobUpdate
from kale.model.executor import RestAccess


class JobSystem(Protocol):
    """Submit, attach to and cancel batch jobs; state changes go to the ``on_update`` it
    was made with."""

    def submit(self, req: JobRequest) -> str: ...

    def attach(self, key: str, native_id: str) -> None: ...

    def cancel(self, key: str) -> None: ...


def job_system(scheduler: str, access: RestAccess | None, work_dir: Path,
               on_update: Callable[[JobUpdate], None], *,
               poll: float = POLL_INTERVAL) -> JobSystem:
    """The way to ``scheduler``: through ``access`` (its REST endpoint) when given, else its
    commands."""
    if access is None:
        return BatchJobs(scheduler, work_dir, on_update, poll=poll)
    from kale.batch.rest_jobs import RestJobs

    return RestJobs(access, work_dir, on_update, poll=poll)


def system_key(scheduler: str, access: RestAccess | None) -> str:
    """One job system per scheduler and endpoint: the key that tells them apart."""
    if access is None:
        return scheduler
    return f"{scheduler}+rest:{access.url}|{access.token_file}|{access.token_command}"

"""Where the widgets read a run from and send a person's actions to: the manager (through
a :class:`~kale.client.remote.Client`), or, for a run made without one, the Kale home's
store. Both give the same documents, so a widget does not care which."""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from kale.errors import KaleError

Event = tuple[str, dict[str, Any]]
TAIL_BYTES = 16_384  # of each log, shown in a task's details


class Source(Protocol):
    """What the widgets need from a manager or a store."""

    def runs(self, limit: int = 50) -> list[dict[str, Any]]: ...
    def status(self, run_id: str) -> dict[str, Any]: ...
    def workflow(self, run_id: str) -> dict[str, Any]: ...
    def task(self, run_id: str, task: str) -> dict[str, Any]: ...
    def logs(self, run_id: str, task: str, stream: str = "stdout") -> str: ...
    def events(self, run_id: str, after: int = 0) -> Iterator[Event]: ...
    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None) -> str: ...
    def cancel(self, run_id: str) -> None: ...
    def cancel_task(self, run_id: str, task: str) -> None: ...
    def queue(self, scheduler: str | None = None) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def workers(self) -> list[dict[str, Any]]: ...
    def jobs(self) -> list[dict[str, Any]]: ...
    def start_workers(self, kind: str, count: int, **options: Any) -> dict[str, Any]: ...
    def stop_worker(self, worker_id: str) -> None: ...
    def cancel_job(self, job_id: str) -> None: ...


class ManagerSource:
    """A manager, through its API (the usual case: runs that outlive the notebook)."""

    def __init__(self, client: Any, *, owns_client: bool = False) -> None:
        self.client = client
        self.owns_client = owns_client  # made for this source: closed with it

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return list(self.client.runs(limit))

    def status(self, run_id: str) -> dict[str, Any]:
        return dict(self.client.status(run_id))

    def workflow(self, run_id: str) -> dict[str, Any]:
        return dict(self.client.workflow(run_id))

    def task(self, run_id: str, task: str) -> dict[str, Any]:
        return dict(self.client.task(run_id, task))

    def logs(self, run_id: str, task: str, stream: str = "stdout") -> str:
        return str(self.client.logs(run_id, task, stream))

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        return iter(self.client.events(run_id, after))

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None) -> str:
        return str(self.client.rerun(run_id, failed=failed, only=only, from_=from_).id)

    def cancel(self, run_id: str) -> None:
        self.client.cancel(run_id)

    def cancel_task(self, run_id: str, task: str) -> None:
        self.client.task_action(run_id, task, "cancel")

    def queue(self, scheduler: str | None = None) -> dict[str, Any]:
        return dict(self.client.queue(scheduler))

    def workers(self) -> list[dict[str, Any]]:
        return list(self.client.workers())

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.client.jobs())

    def start_workers(self, kind: str, count: int, **options: Any) -> dict[str, Any]:
        return dict(self.client.start_workers(kind, count, **options))

    def stop_worker(self, worker_id: str) -> None:
        self.client.stop_worker(worker_id)

    def cancel_job(self, job_id: str) -> None:
        self.client.cancel_job(job_id)


class StoreSource:
    """A Kale home's store, for runs made without a manager (``wf.run()`` in a notebook,
    ``kale run --embedded``). It has no workers to start or stop."""

    def __init__(self, home: str | Path | None = None) -> None:
        from kale.client.local import open_store

        self.store, self.home = open_store(home)

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.store.runs(limit)]

    def status(self, run_id: str) -> dict[str, Any]:
        rec = self.store.get_run(run_id)
        last = self.store.last_event(rec.id)  # before the tasks: nothing missed between
        return {"run": rec.to_json(), "tasks": [t.to_json() for t in self.store.tasks(rec.id)],
                "last_event": last}

    def workflow(self, run_id: str) -> dict[str, Any]:
        return dict(self.store.run_spec(self.store.get_run(run_id).id))

    def task(self, run_id: str, task: str) -> dict[str, Any]:
        from kale.client.local import task_detail

        return task_detail(self.store, self.store.get_run(run_id), task)

    def logs(self, run_id: str, task: str, stream: str = "stdout") -> str:
        rec = self.store.task(self.store.get_run(run_id).id, task)
        path = rec.stdout if stream == "stdout" else rec.stderr
        if not path or not Path(path).exists():
            return ""
        return Path(path).read_text(errors="replace")

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        from kale.store.tail import RunTail

        tail = RunTail(self.store, self.store.get_run(run_id).id, after)
        while not tail.ended:
            yield from tail.poll()
            if not tail.ended:
                time.sleep(0.1)

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None) -> str:
        from kale.client.local import start_run
        from kale.model.workflow import Workflow

        rec = self.store.get_run(run_id)
        wf = Workflow.from_dict(rec.spec, base_dir=rec.base_dir, trusted=True)
        run = start_run(wf, params=rec.params, only=only or None, from_=from_ or None,
                        rerun_of=rec.id if failed else None, home=self.home)
        return str(run.id)

    def cancel(self, run_id: str) -> None:
        from kale.client.local import cancel_run

        cancel_run(self.store, self.store.get_run(run_id).id)

    def cancel_task(self, run_id: str, task: str) -> None:
        raise KaleError("cancelling one task needs the manager (`kale manager start`); "
                        "a run without one can be cancelled whole")

    def queue(self, scheduler: str | None = None) -> dict[str, Any]:
        from kale.batch.queue import queue_status

        return queue_status(scheduler, getpass.getuser(), [])

    def workers(self) -> list[dict[str, Any]]:
        return []

    def jobs(self) -> list[dict[str, Any]]:
        return []

    def start_workers(self, kind: str, count: int, **options: Any) -> dict[str, Any]:
        raise KaleError("starting workers needs the manager (`kale manager start`)")

    def stop_worker(self, worker_id: str) -> None:
        raise KaleError("stopping workers needs the manager (`kale manager start`)")

    def cancel_job(self, job_id: str) -> None:
        raise KaleError("batch jobs are the manager's (`kale manager start`)")

    def close(self) -> None:
        """Nothing to close: the store is the process's, shared (``open_store``)."""


def source_of(obj: Any = None) -> tuple[Source, str | None]:
    """The source behind a run handle, a client, a source, or nothing (this home's
    manager if one runs, else its store), and the run's id if ``obj`` is a run."""
    from kale.client.remote import Client, RemoteRun
    from kale.client.run import Run

    if isinstance(obj, RemoteRun):
        return ManagerSource(obj.client), obj.id
    if isinstance(obj, Run):
        return StoreSource(obj.home), obj.id
    if isinstance(obj, Client):
        return ManagerSource(obj), None
    if isinstance(obj, ManagerSource | StoreSource):
        return obj, None
    if obj is None:
        try:
            return ManagerSource(Client(), owns_client=True), None
        except KaleError:
            return StoreSource(), None
    raise TypeError(f"expected a run, a kale Client or nothing, not {type(obj).__name__}")


def tail(text: str, limit: int = TAIL_BYTES) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]

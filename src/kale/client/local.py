"""The embedded client: runs execute in this process (a background thread when started
from Python), against the store in the Kale home."""

from __future__ import annotations

import copy
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from kale.client.run import Run
from kale.config import kale_home, store_url
from kale.engine.runs import RunOptions, create_run, drive, make_engine
from kale.errors import RunBusy
from kale.model.selection import Selection
from kale.model.states import RunState, TaskState
from kale.model.workflow import Workflow
from kale.store.store import Change, Store
from kale.tasks.procs import kill_leftovers


@cache
def _store(url: str) -> Store:
    return Store(url)


def open_store(home: str | Path | None = None) -> tuple[Store, Path]:
    path = kale_home(home)
    return _store(store_url(path)), path


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [getattr(v, "name", v) for v in value]


def start_run(wf: Workflow, *, params: dict[str, Any] | None = None, only: Any = None,
              from_: Any = None, until: Any = None, tags: Any = None, force: bool = False,
              jobs: int | None = None, executor: str | dict[str, Any] | None = None,
              rerun_of: str | None = None, manager: bool = False,
              home: str | Path | None = None) -> Any:
    """Record a new run of ``wf`` and drive it in a background thread. A run that uses a
    batch executor or has interactive steps, or is asked to (``manager=True``), goes to
    this home's manager instead (started if need be), which drives it while this process
    is gone; it returns a :class:`kale.client.remote.RemoteRun`."""
    store, path = open_store(home)
    if manager or wf.needs_manager(executor):
        from kale.client.remote import Client, RemoteRun
        from kale.manager import service

        service.start(path)
        options = {"params": dict(params or {}), "only": _names(only), "from_": _names(from_),
                   "until": _names(until), "tags": _names(tags), "force": force,
                   "jobs": jobs, "executor": executor,
                   "rerun_of": rerun_of}
        client = Client(home=path)
        try:
            run_id = client.submit(wf, **{k: v for k, v in options.items()
                                          if v is not None}).id
        except BaseException:
            client.close()
            raise
        return RemoteRun(client, run_id, owns_client=True)
    opts = RunOptions(params=dict(params or {}), force=force, jobs=jobs, executor=executor,
                      rerun_of=rerun_of, selection=Selection(
                          _names(only), _names(from_), _names(until), _names(tags)))
    rec = create_run(store, path, wf, opts)
    # The engine works on its own copy: the notebook may go on editing `wf`.
    engine = make_engine(store, rec, copy.deepcopy(wf))
    run = Run(store, rec.id, engine=engine)
    run.home = path

    def target() -> None:
        try:
            drive(engine)
        except BaseException as e:  # reported by Run.wait()
            run._error = e

    thread = threading.Thread(target=target, name=f"kale-run-{rec.id}")
    run._thread = thread
    thread.start()
    return run


def get_run(run_id: str | None = None, *, home: str | Path | None = None) -> Run:
    """Re-attach to a run by id (or id prefix); the newest run if no id is given."""
    store, path = open_store(home)
    if run_id is None:
        latest = store.latest_run()
        if latest is None:
            from kale.errors import KaleError

            raise KaleError("no runs yet in this Kale home")
        run_id = latest.id
    run = Run(store, store.get_run(run_id).id)
    run.home = path
    return run


def runs(*, home: str | Path | None = None, limit: int = 50) -> list[Run]:
    store, _ = open_store(home)
    return [Run(store, r.id) for r in store.runs(limit)]


def task_detail(store: Store, rec: Any, task: str) -> dict[str, Any]:
    """One task of run ``rec``: its record, its description, parameters and upstream
    tasks as the workflow gives them, and ``attempt_rows`` (each attempt's state, times,
    exit code, error and worker). What a dashboard shows when a task is clicked."""
    doc = store.task(rec.id, task).to_json()
    spec = (rec.spec.get("tasks") or {}).get(task) or {}
    after = spec.get("after") or []
    doc.update(description=spec.get("description", ""),
               parameters=spec.get("parameters") or {},
               after=[after] if isinstance(after, str) else list(after),
               attempt_rows=store.attempts(rec.id, task))
    return doc


def cancel_run(store: Store, run_id: str, timeout: float = 15.0) -> RunState:
    """Cancel a run. The process driving it (a `kale run`, or a notebook) notices the
    request within a second and cancels cleanly; if no process drives it, the unfinished
    tasks are recorded CANCELLED here, after killing what a dead driver left running."""
    rec = store.get_run(run_id)
    if rec.state.terminal:
        return rec.state
    store.request_cancel(rec.id)
    deadline = time.monotonic() + timeout
    while rec.owner_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
        rec = store.get_run(run_id)
        if rec.state.terminal:
            return rec.state
    if rec.owner_alive():
        raise RunBusy(f"run {rec.id} did not stop within {timeout:g} s; its process "
                      f"{rec.owner_pid} is still alive")
    store.claim_run(rec.id)
    kill_leftovers(rec.id)
    changes = []
    for t in store.tasks(rec.id):
        if not t.state.terminal:
            changes.append(Change(rec.id, t.name, TaskState.CANCELLED,
                                  "cancelled (no process was running the run)",
                                  {"ended_at": time.time()}))
    store.apply(changes)
    store.finish_run(rec.id, RunState.CANCELLED, "cancelled")
    return RunState.CANCELLED

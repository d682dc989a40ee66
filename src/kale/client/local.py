"""The embedded client: runs execute in this process (a background thread when started
from Python), against the store in the Kale home."""

from __future__ import annotations

import os
import signal
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

from kale.client.run import Run
from kale.config import kale_home, store_url
from kale.engine.runs import RunOptions, create_run, drive, make_engine
from kale.model.selection import Selection
from kale.model.states import RunState, TaskState
from kale.model.workflow import Workflow
from kale.store.store import Change, Store


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
              jobs: int | None = None, executor: str = "local",
              home: str | Path | None = None) -> Run:
    """Record a new run of ``wf`` and drive it in a background thread."""
    store, path = open_store(home)
    opts = RunOptions(params=dict(params or {}), force=force, jobs=jobs, executor=executor,
                      selection=Selection(_names(only), _names(from_), _names(until),
                                          _names(tags)))
    rec = create_run(store, path, wf, opts)
    engine = make_engine(store, rec, wf)
    run = Run(store, rec.id, engine=engine)

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
    store, _ = open_store(home)
    if run_id is None:
        latest = store.latest_run()
        if latest is None:
            from kale.errors import KaleError

            raise KaleError("no runs yet in this Kale home")
        run_id = latest.id
    return Run(store, store.get_run(run_id).id)


def runs(*, home: str | Path | None = None, limit: int = 50) -> list[Run]:
    store, _ = open_store(home)
    return [Run(store, r.id) for r in store.runs(limit)]


def cancel_run(store: Store, run_id: str, timeout: float = 15.0) -> RunState:
    """Cancel a run: signal the process driving it, or, if none is alive, record the
    cancellation of its unfinished tasks directly."""
    rec = store.get_run(run_id)
    if rec.state.terminal:
        return rec.state
    if rec.owner_alive() and rec.owner_pid != os.getpid():
        assert rec.owner_pid is not None
        os.kill(rec.owner_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = store.get_run(run_id)
            if rec.state.terminal:
                return rec.state
            time.sleep(0.1)
    store.claim_run(rec.id)
    changes = [Change(rec.id, t.name, TaskState.CANCELLED, "cancelled (no process was running "
                      "the run)", {"ended_at": time.time()})
               for t in store.tasks(rec.id) if not t.state.terminal]
    store.apply(changes)
    store.finish_run(rec.id, RunState.CANCELLED, "cancelled")
    return RunState.CANCELLED

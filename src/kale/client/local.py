"""The embedded implementation of the run interface (:class:`EmbeddedSource`): runs are
read from a Kale home's store, and the runs it submits are driven in this process (a
background thread per run). The functions below it are the store-backed readings the
manager's API serves too, so both give the same documents."""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import traceback
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kale.client.source import TASK_ACTIONS, Event
from kale.config import kale_home, store_url
from kale.errors import KaleError, RunBusy, TaskError, UsageError
from kale.model.options import RunOptions
from kale.model.states import RunState, TaskState
from kale.model.workflow import Workflow
from kale.store import results
from kale.store.store import Change, RunRecord, Store
from kale.tasks.procs import kill_leftovers

if TYPE_CHECKING:
    from kale.engine.engine import Engine
    from kale.executors.base import Executor

#: seconds between two looks at the store while waiting for a run or following it
POLL = 0.1


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()
#: stores a run of this process is driving on, and by how many runs (:func:`driving`)
_driving: Counter[int] = Counter()


def _store(url: str) -> Store:
    with _stores_lock:
        store = _stores.get(url)
        if store is None:
            store = _stores[url] = Store(url)
        return store


@contextlib.contextmanager
def driving(store: Store) -> Iterator[None]:
    """While a run this process drives writes to ``store``: :func:`close_stores` leaves
    that store open."""
    with _stores_lock:
        _driving[id(store)] += 1
    try:
        yield
    finally:
        with _stores_lock:
            _driving[id(store)] -= 1
            if not _driving[id(store)]:
                del _driving[id(store)]


def close_stores() -> None:
    """Close the stores this process opened (:func:`open_store`) that no run it drives is
    using (:func:`driving`): their connections and files. For a process done with its
    Kale homes (a test suite opens a home per test); a later ``open_store`` opens one
    again."""
    with _stores_lock:
        idle = {url: s for url, s in _stores.items() if id(s) not in _driving}
        for url in idle:
            del _stores[url]
    for store in idle.values():
        store.close()


def open_store(home: str | Path | None = None) -> tuple[Store, Path]:
    """The store of a Kale home (one per process and home) and the home's path."""
    path = kale_home(home)
    return _store(store_url(path)), path


class _Driver:
    """A run this process drives: its engine (until the run ends: then it is let go, with
    its workflow, so that a notebook's runs do not pile up in its memory), the thread that
    drives it, and what stopped that thread if it crashed (reported by
    :meth:`EmbeddedSource.wait`)."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine: Engine | None = engine
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=f"kale-run-{run_id}")

    def _main(self) -> None:
        from kale.engine.runs import drive

        assert self.engine is not None
        try:  # (no local of the engine: a traceback kept for wait() would keep it)
            with driving(self.engine.store):
                drive(self.engine)
        except BaseException as e:
            # what stopped it is kept for wait(); not the frames' locals (the engine)
            traceback.clear_frames(e.__traceback__)
            self.error = e
        finally:
            self.engine = None

    def live(self) -> Engine | None:
        """Its engine while it drives the run, else None."""
        engine = self.engine
        return engine if engine is not None and self.thread.is_alive() else None


#: the runs driven in this process, by run id (a handle from `get_run` finds them too)
_DRIVERS: dict[str, _Driver] = {}


class EmbeddedSource:
    """A Kale home's store (:class:`~kale.client.source.RunSource`). Runs it submits are
    driven by a thread of this process; it reads any run of the store, whoever drives
    it. It has no workers or batch jobs: those are the manager's."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.store, self.home = open_store(home)
        self.where = f"the Kale home {self.home}"

    def _run(self, run_id: str) -> RunRecord:
        if run_id == "latest":
            newest = self.store.runs(1, users=self.store.own_users())
            if not newest:
                raise KaleError("no runs yet in this Kale home")
            return newest[0]
        return self.store.get_run(run_id, users=self.store.own_users())

    # -- runs ----------------------------------------------------------------------------
    def submit(self, wf: Workflow, options: RunOptions) -> str:
        # (imported here: reading runs, what `kale status` does, needs no engine)
        from kale.engine import collect
        from kale.engine.runs import create_run, make_engine

        if options.rerun_of:
            options = options.but(rerun_of=self._run(options.rerun_of).id)
        with collect.relaxed():  # (as while the run is driven: see kale.engine.collect)
            rec = create_run(self.store, self.home, wf, options)
            # The engine works on its own copy: the notebook may go on editing `wf`.
            engine = make_engine(self.store, rec, copy.deepcopy(wf),
                                 executor=self.executor(wf, options))
        driver = _DRIVERS[rec.id] = _Driver(engine, rec.id)
        driver.thread.start()
        return rec.id

    def executor(self, wf: Workflow, options: RunOptions) -> Executor | None:
        """The executor of the runs it drives (None: the run's own, from its options)."""
        return None

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.store.runs(limit, users=self.store.own_users())]

    def status(self, run_id: str, tasks: bool = True,
               states: Collection[str] | None = None,
               limit: int | None = None) -> dict[str, Any]:
        return status_document(self.store, self._run(run_id), tasks, states=states,
                               limit=limit)

    def states(self, run_id: str) -> dict[str, Any]:
        return states_document(self.store, self._run(run_id))

    def workflow(self, run_id: str) -> dict[str, Any]:
        return dict(self._run(run_id).spec)

    def wait(self, run_id: str, timeout: float | None = None) -> RunState:
        """The run's state once it ended, or when ``timeout`` seconds passed; a
        :class:`KaleError` if the thread of this process that drove it crashed."""
        rec = self._run(run_id)
        driver = _DRIVERS.get(rec.id)
        if driver is not None:
            driver.thread.join(timeout)
            if driver.error is not None:
                raise KaleError(f"run {rec.id} stopped: {driver.error}") from driver.error
            return self.store.get_run(rec.id).state
        deadline = None if timeout is None else time.monotonic() + timeout
        while not rec.state.terminal:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(POLL)
            rec = self.store.get_run(rec.id)
        return rec.state

    def cancel(self, run_id: str) -> RunState:
        rec = self._run(run_id)
        driver = _DRIVERS.get(rec.id)
        engine = driver.live() if driver is not None else None
        if driver is not None and engine is not None:
            engine.cancel("cancelled from Python")
            driver.thread.join()
            return self.store.get_run(rec.id).state
        return cancel_run(self.store, rec.id)

    def rerun(self, run_id: str, *, failed: bool = False, only: list[str] | None = None,
              from_: list[str] | None = None, force: bool = False) -> str:
        rec = self._run(run_id)
        wf = Workflow.from_dict(rec.spec, base_dir=rec.base_dir, trusted=True)
        return self.submit(wf, RunOptions.of(
            params=rec.params, only=only, from_=from_, force=force,
            jobs=rec.options.get("jobs"), executor=rec.options.get("executor"),
            rerun_of=rec.id if failed else None))

    def events(self, run_id: str, after: int = 0) -> Iterator[Event]:
        from kale.store.tail import RunTail

        tail = RunTail(self.store, self._run(run_id).id, after)
        while not tail.ended:
            yield from tail.poll()
            if not tail.ended:
                time.sleep(POLL)

    # -- tasks ---------------------------------------------------------------------------
    def task(self, run_id: str, task: str) -> dict[str, Any]:
        return task_detail(self.store, self._run(run_id), task)

    def result(self, run_id: str, task: str) -> Any:
        rec = self._run(run_id)
        t = self.store.task(rec.id, task)
        if t.state is not TaskState.SUCCEEDED:
            raise TaskError(task, t.state.value + (f": {t.error}" if t.error else
                                                   f" ({t.reason})" if t.reason else ""))
        return results.decode(t, rec.base_dir)

    def logs(self, run_id: str, task: str, stream: str = "stdout", offset: int = 0) -> str:
        return read_log(self.store, self._run(run_id).id, task, stream, offset)

    def fetch(self, run_id: str, task: str, dest: Path) -> list[Path]:
        from kale.client.outputs import copy_outputs, output_paths

        return copy_outputs(*output_paths(self, run_id, task), dest)

    def task_action(self, run_id: str, task: str, action: str,
                    reason: str | None = None) -> dict[str, Any]:
        if action not in TASK_ACTIONS:
            raise KaleError(f"no task action {action!r} ({', '.join(TASK_ACTIONS)})")
        rec = self._run(run_id)
        before = self.store.task(rec.id, task).state
        driver = _DRIVERS.get(rec.id)
        engine = driver.live() if driver is not None else None
        if engine is None:
            raise KaleError(f"{action} needs the manager (`kale manager start`), or the "
                            f"process that drives run {rec.id} while it runs; a run "
                            "without either can be cancelled whole")
        if action in ("continue", "reject") and before is not TaskState.WAITING:
            raise KaleError(f"task {task!r} is {before.value}, not WAITING for a person")
        if action == "cancel":
            engine.cancel_task(task, "cancelled from Python")
        else:
            engine.control(task, action, reason or "")
        return {"id": rec.id, "task": task, "action": action, "state": before.value}

    # -- the manager's -------------------------------------------------------------------
    def queue(self, scheduler: str | None = None) -> dict[str, Any]:
        import getpass

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

    def __repr__(self) -> str:
        return f"<EmbeddedSource {self.home}>"


def check_states(states: Iterable[str]) -> list[str]:
    """The task states ``states`` names, checked (:class:`UsageError` names any unknown
    one and the states there are)."""
    names = [str(s).strip().upper() for s in states]
    unknown = sorted({n for n in names if n not in TaskState.__members__})
    if unknown:
        raise UsageError(f"no task state {', '.join(unknown)}: the states are "
                         + ", ".join(TaskState.__members__))
    return names


# -- the store-backed documents (the manager's API serves the same) ------------------------

def status_document(store: Store, rec: RunRecord, tasks: bool = True,
                    counts: dict[str, int] | None = None,
                    states: Collection[str] | None = None,
                    limit: int | None = None) -> dict[str, Any]:
    """``{"run", "counts"}`` and, with ``tasks``, ``"tasks"`` (only those in ``states``
    when given, the first ``limit`` of them) and ``"last_event"``; with only some tasks
    listed, ``"maps"``: each map's (and each task that added tasks) members per state,
    which the listed tasks alone do not tell. ``counts`` (always of every task) may come
    from a live engine (else they are counted in the store)."""
    if states is not None:
        states = check_states(states)
    last_event = store.last_event(rec.id) if tasks else None  # before the tasks: nothing
    records = store.tasks(rec.id, states, limit) if tasks else None  # is missed between
    if counts is None:
        every = states is None and limit is None
        counts = dict(Counter(t.state.value for t in records)) \
            if records is not None and every else store.task_counts(rec.id)
    doc: dict[str, Any] = {"run": rec.to_json(), "counts": counts}
    if records is not None:
        doc["tasks"] = [t.to_json() for t in records]
        doc["last_event"] = last_event  # the events after it are news to these tasks
        if states is not None or limit is not None:
            doc["maps"] = store.member_counts(rec.id)
    return doc


def states_document(store: Store, rec: RunRecord) -> dict[str, Any]:
    """``{"run", "last_event", "states", "conditions"}``: every task's state by name, and
    the reason of each task a condition skipped; what a view of the whole graph loads (a
    run of 100,000 tasks: ~3 MB, against ~50 MB for the full status)."""
    last_event = store.last_event(rec.id)  # before the states: nothing is missed between
    states, conditions = store.task_states(rec.id)
    return {"run": rec.to_json(), "last_event": last_event, "states": states,
            "conditions": conditions}


def task_detail(store: Store, rec: RunRecord, task: str) -> dict[str, Any]:
    """One task of run ``rec``: its record, its description, parameters and upstream
    tasks as the workflow gives them, and ``attempt_rows`` (each attempt's state, times,
    exit code, error and worker). What a dashboard shows when a task is clicked."""
    record = store.task(rec.id, task)
    doc = record.to_json()
    spec = _definition(store, rec, task, record.spec)
    if record.spec and "bind" in record.spec:  # a map's member: the element it got
        doc["element"] = record.spec["bind"].get("json", "(a value JSON cannot show)")
    after = spec.get("after") or []
    doc.update(description=spec.get("description", ""),
               parameters=spec.get("parameters") or {},
               after=[after] if isinstance(after, str) else list(after),
               attempt_rows=store.attempts(rec.id, task), traceback=record.traceback)
    return doc


def _definition(store: Store, rec: RunRecord, task: str,
                member: dict[str, Any] | None) -> dict[str, Any]:
    """A task's definition (canonical dict): the workflow's; for a task another task
    added, the one it was added with; for a map's member, its map's with the element
    bound (shown when it is JSON)."""
    if member is None:
        return dict((rec.spec.get("tasks") or {}).get(task) or {})
    if "task" in member:
        return dict(member["task"])
    group = str(member["group"])
    spec = _definition(store, rec, group, store.task(rec.id, group).spec)
    spec.pop("map", None)
    bound = member.get("bind", {}).get("json")
    if isinstance(bound, dict):
        spec["parameters"] = {**(spec.get("parameters") or {}), **bound}
    return spec


def read_log(store: Store, run_id: str, task: str, stream: str = "stdout",
             offset: int = 0) -> str:
    """A task's log (stdout or stderr of its latest attempt) from byte ``offset`` on."""
    if stream not in ("stdout", "stderr"):
        raise KaleError(f"a log stream is stdout or stderr, not {stream!r}")
    rec = store.task(run_id, task)
    path = rec.stdout if stream == "stdout" else rec.stderr
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, offset))
        return whole_chars(f.read()).decode(errors="replace")


def whole_chars(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut at its end (a writer's next bytes finish
    it): so a reader that follows a log by byte offsets (``offset += len(text.encode())``)
    never splits a character. Bytes that are not UTF-8 at all read as U+FFFD."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return data  # ASCII: nothing is cut
        if byte >= 0xC0:  # the lead byte of the last character: is it whole?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data


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
        time.sleep(POLL)
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

"""The store on each backend it supports (SQLite and PostgreSQL; ``store_url`` in
conftest.py): runs and tasks, the state machine, events, attempts, group commit, result
reuse queries, cancel requests, run lookup, and a whole workflow run on PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from kale.errors import IllegalTransition, RunNotFound
from kale.model.states import RunState, TaskState
from kale.store.commit import GroupCommitter
from kale.store.store import Change, Store

S = TaskState


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def make_run(store: Store, run_id: str = "20240101-120000-abcd", workflow: str = "wf",
             tasks: tuple[str, ...] = ("a", "b", "c")) -> str:
    store.create_run(run_id, workflow, {"name": workflow, "tasks": {t: {} for t in tasks}},
                     base_dir="/base", run_dir=f"/runs/{run_id}", params={"n": 1, "s": "x"},
                     options={"jobs": None, "force": False},
                     tasks=[(t, "shell", f"def-{t}"[:32]) for t in tasks])
    return run_id


def newer_than(store: Store, run_id: str) -> None:
    """Until the clock has moved past run ``run_id``'s creation, so that a run created
    next is newer (runs are ordered by their creation time)."""
    created = store.get_run(run_id).created_at
    wait_until(lambda: time.time() > created, 60, "the clock to move on")


def task_events(store: Store, run_id: str) -> list[tuple[str, str, str, str]]:
    return [(e["task"], e["old"], e["new"], e["reason"]) for e in store.events(run_id)
            if e["task"] is not None]


def succeed(store: Store, run_id: str, task: str, *, cache_key: str | None, ended_at: float,
            result: str = "1") -> None:
    store.apply([Change(run_id, task, S.READY), Change(run_id, task, S.RUNNING),
                 Change(run_id, task, S.SUCCEEDED, "done",
                        {"cache_key": cache_key, "ended_at": ended_at, "result_json": result,
                         "result_hash": f"h{result}"})])


def test_create_run_records_the_run_and_pending_tasks(store: Store) -> None:
    before = time.time()
    run_id = make_run(store)
    run = store.get_run(run_id)
    assert (run.id, run.workflow, run.state) == (run_id, "wf", RunState.RUNNING)
    assert run.spec == {"name": "wf", "tasks": {"a": {}, "b": {}, "c": {}}}
    assert run.params == {"n": 1, "s": "x"}
    assert run.options == {"jobs": None, "force": False}
    assert (run.base_dir, run.run_dir) == ("/base", f"/runs/{run_id}")
    assert before <= run.created_at <= time.time() and run.ended_at is None
    assert run.owner_pid == os.getpid() and run.cancel_requested is None
    tasks = store.tasks(run_id)
    assert [(t.name, t.state, t.kind, t.def_hash, t.attempts) for t in tasks] == [
        (n, S.PENDING, "shell", f"def-{n}", 0) for n in ("a", "b", "c")]
    [event] = store.events(run_id)
    assert (event["task"], event["old"], event["new"], event["reason"]) == (
        None, None, "RUNNING", "created")


def test_transitions_write_task_columns_events_and_attempts(store: Store) -> None:
    run_id = make_run(store)
    t0 = time.time()
    store.apply([Change(run_id, "a", S.READY, "no upstream")])
    store.apply([Change(run_id, "a", S.RUNNING, "", {"attempts": 1, "started_at": t0},
                        attempt={"new": True, "number": 1, "state": "RUNNING",
                                 "started_at": t0, "worker": "w1"})])
    rec = store.task(run_id, "a")
    assert (rec.state, rec.attempts, rec.started_at, rec.reason) == (S.RUNNING, 1, t0, None)
    assert store.attempts(run_id, "a") == [
        {"run_id": run_id, "task": "a", "number": 1, "state": "RUNNING", "started_at": t0,
         "ended_at": None, "exit_code": None, "error": None, "worker": "w1"}]
    t1 = t0 + 1.25
    result = '{"total": 85, "text": "gr\\u00fc\\u00df \\u2713"}'
    store.apply([Change(run_id, "a", S.SUCCEEDED, "finished",
                        {"ended_at": t1, "exit_code": 0, "result_json": result,
                         "details": '{"cell_index": 3}', "artifacts": '{"nb": "/x.ipynb"}'},
                        attempt={"number": 1, "state": "SUCCEEDED", "ended_at": t1,
                                 "exit_code": 0})])
    rec = store.task(run_id, "a")
    assert (rec.state, rec.ended_at, rec.exit_code, rec.reason) == (
        S.SUCCEEDED, t1, 0, "finished")
    assert rec.duration == pytest.approx(1.25)
    assert rec.to_json()["result"] == {"total": 85, "text": "grüß ✓"}
    assert (rec.details, rec.artifacts) == ({"cell_index": 3}, {"nb": "/x.ipynb"})
    [attempt] = store.attempts(run_id, "a")
    assert (attempt["state"], attempt["ended_at"], attempt["exit_code"]) == (
        "SUCCEEDED", t1, 0)
    assert task_events(store, run_id) == [("a", "PENDING", "READY", "no upstream"),
                                          ("a", "READY", "RUNNING", ""),
                                          ("a", "RUNNING", "SUCCEEDED", "finished")]
    ids = [e["id"] for e in store.events(run_id)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(isinstance(e["ts"], float) for e in store.events(run_id))
    assert store.events(run_id, after_id=ids[-2]) == store.events(run_id)[-1:]
    # the untouched tasks did not move
    assert [t.state for t in store.tasks(run_id)] == [S.SUCCEEDED, S.PENDING, S.PENDING]


def test_several_changes_of_one_task_in_one_group(store: Store) -> None:
    run_id = make_run(store)
    store.apply([Change(run_id, "a", S.READY, "r1"), Change(run_id, "b", S.SKIPPED, "s"),
                 Change(run_id, "a", S.RUNNING, "r2", {"started_at": 5.0})])
    assert {t.name: t.state for t in store.tasks(run_id)} == {
        "a": S.RUNNING, "b": S.SKIPPED, "c": S.PENDING}
    assert store.task(run_id, "a").started_at == 5.0
    assert task_events(store, run_id) == [("a", "PENDING", "READY", "r1"),
                                          ("b", "PENDING", "SKIPPED", "s"),
                                          ("a", "READY", "RUNNING", "r2")]


def test_log_files_of_many_tasks_are_read_in_a_few_queries(store: Store) -> None:
    """``log_files`` gives the state and log files of the tasks asked for (more than one
    query's worth of names here), or of every task that has them; other runs' tasks and
    unknown names are not in it."""
    names = tuple(f"t{i}" for i in range(1203))
    run_id = make_run(store, tasks=names)
    other = make_run(store, "20240101-120000-ffff", tasks=("t1",))
    started = names[::2]
    store.apply([Change(run_id, n, S.READY) for n in started])
    store.apply([Change(run_id, n, S.RUNNING, values={"stdout": f"/logs/{n}.1.out",
                                                      "stderr": f"/logs/{n}.1.err"})
                 for n in started])
    store.apply([Change(other, "t1", S.READY), Change(other, "t1", S.RUNNING,
                                                      values={"stdout": "/other.out"})])
    every = store.log_files(run_id)
    assert sorted(every) == sorted(started)
    assert every["t4"] == (S.RUNNING, "/logs/t4.1.out", "/logs/t4.1.err")
    asked = store.log_files(run_id, [*names, "nope"])
    assert len(asked) == len(names) and asked["t1"] == (S.PENDING, None, None)
    assert asked["t1202"] == (S.RUNNING, "/logs/t1202.1.out", "/logs/t1202.1.err")
    assert store.log_files(other) == {"t1": (S.RUNNING, "/other.out", None)}


def test_task_states_are_every_tasks_state_and_the_conditions_reasons(store: Store) -> None:
    """``task_states``: each task's state by name, and the reason of each task a condition
    skipped (not of one skipped for another reason); other runs' tasks are not in it."""
    run_id = make_run(store, tasks=("a", "b", "c", "d"))
    other = make_run(store, "20240101-120000-ffff", tasks=("a",))
    store.apply([Change(run_id, "a", S.READY), Change(run_id, "a", S.RUNNING),
                 Change(run_id, "b", S.SKIPPED, "condition false: 0 > 0",
                        {"details": '{"condition": true}'}),
                 Change(run_id, "c", S.SKIPPED, "upstream 'x' failed")])
    assert store.task_states(run_id) == (
        {"a": "RUNNING", "b": "SKIPPED", "c": "SKIPPED", "d": "PENDING"},
        {"b": "condition false: 0 > 0"})
    assert store.task_states(other) == ({"a": "PENDING"}, {})


def test_members_are_counted_per_map_and_state(store: Store) -> None:
    """``member_counts`` counts the members of each map (and each task's added tasks) by
    state in the database: what a big run's status shows on a map's line while it lists
    only some tasks."""
    run_id = make_run(store, tasks=("m", "p", "z"))
    other = make_run(store, "20240101-120000-ffff", tasks=("m",))

    def member(run: str, name: str, group: str, index: int) -> Change:
        return Change(run, name, S.PENDING, added={
            "kind": "python", "position": 10 + index,
            "spec": {"group": group, "index": index, "bind": {"json": index}}})

    store.apply([member(run_id, f"m[{i}]", "m", i) for i in range(4)]
                + [member(run_id, "p.sub", "p", 0), member(other, "m[0]", "m", 0)])
    store.apply([Change(run_id, "m[1]", S.READY), Change(run_id, "m[1]", S.RUNNING),
                 Change(run_id, "m[2]", S.READY), Change(run_id, "m[2]", S.RUNNING),
                 Change(run_id, "m[2]", S.FAILED, "exit 1")])
    assert store.member_counts(run_id) == {"m": {"PENDING": 2, "RUNNING": 1, "FAILED": 1},
                                           "p": {"PENDING": 1}}
    assert store.member_counts(other) == {"m": {"PENDING": 1}}
    assert store.member_counts(make_run(store, "20240101-130000-eeee")) == {}


def test_tasks_in_some_states_only(store: Store) -> None:
    """``tasks(run, states=..., limit=...)`` reads only the tasks in those states, the
    first ``limit`` in workflow order (what a big run's status lists); the counts still
    cover every task."""
    run_id = make_run(store, tasks=("a", "b", "c", "d", "e"))
    other = make_run(store, "20240101-120000-ffff")
    store.apply([Change(run_id, "e", S.READY), Change(run_id, "e", S.RUNNING),
                 Change(run_id, "b", S.READY), Change(run_id, "b", S.RUNNING),
                 Change(run_id, "b", S.FAILED, "exit 3"), Change(run_id, "c", S.SKIPPED),
                 Change(other, "a", S.READY), Change(other, "a", S.RUNNING)])
    listed = store.tasks(run_id, states=[S.RUNNING, "FAILED"])
    assert [(t.name, t.state) for t in listed] == [("b", S.FAILED), ("e", S.RUNNING)]
    assert [t.name for t in store.tasks(run_id, states=("PENDING",))] == ["a", "d"]
    assert store.tasks(run_id, states=[]) == []
    assert [t.name for t in store.tasks(run_id, states=["PENDING", "RUNNING"], limit=2)] \
        == ["a", "d"]
    assert [t.name for t in store.tasks(run_id, limit=1)] == ["a"]
    assert store.task_counts(run_id) == {"PENDING": 2, "RUNNING": 1, "FAILED": 1,
                                         "SKIPPED": 1}


def test_an_illegal_transition_applies_nothing(store: Store) -> None:
    run_id = make_run(store)
    with pytest.raises(IllegalTransition) as info:
        store.apply([Change(run_id, "a", S.READY), Change(run_id, "b", S.RUNNING)])
    assert (info.value.task, info.value.old, info.value.new) == ("b", "PENDING", "RUNNING")
    assert [t.state for t in store.tasks(run_id)] == [S.PENDING] * 3
    assert task_events(store, run_id) == []
    # the refused group did not count as current either: "a" is still PENDING to the checks
    with pytest.raises(IllegalTransition):
        store.apply([Change(run_id, "a", S.RUNNING)])
    # terminal states stay terminal
    succeed(store, run_id, "a", cache_key=None, ended_at=1.0)
    with pytest.raises(IllegalTransition, match="SUCCEEDED to RUNNING"):
        store.apply([Change(run_id, "a", S.RUNNING)])
    assert store.task(run_id, "a").state is S.SUCCEEDED


def test_a_second_store_sees_committed_state_and_checks_against_it(store_url: str,
                                                                   store: Store) -> None:
    run_id = make_run(store)
    store.apply([Change(run_id, "a", S.READY), Change(run_id, "a", S.RUNNING)])
    other = Store(store_url)
    try:
        assert store.get_run(run_id) == other.get_run(run_id)
        assert other.task(run_id, "a").state is S.RUNNING
        with pytest.raises(IllegalTransition, match="RUNNING to PENDING"):
            other.apply([Change(run_id, "a", S.PENDING)])
        other.apply([Change(run_id, "a", S.FAILED, "by the other store", {"error": "boom"})])
        rec = store.task(run_id, "a")
        assert (rec.state, rec.error, rec.reason) == (S.FAILED, "boom", "by the other store")
    finally:
        other.close()
    # reopening the store keeps everything (and the schema is not created twice)
    again = Store(store_url)
    try:
        assert [t.state for t in again.tasks(run_id)] == [S.FAILED, S.PENDING, S.PENDING]
    finally:
        again.close()


def test_group_commit_commits_everything_and_calls_the_listener_after(store_url: str,
                                                                      store: Store) -> None:
    names = tuple(f"t{i:03d}" for i in range(60))
    run_id = make_run(store, tasks=names)
    reader = Store(store_url)
    seen: list[list[Change]] = []
    visible: list[bool] = []

    def listener(changes: list[Change]) -> None:
        # called once the changes are committed: another connection sees their events
        committed = {(e["task"], e["new"], e["reason"]) for e in reader.events(run_id)}
        visible.append(all((c.task, c.new.value, c.reason) in committed for c in changes))
        seen.append(changes)

    gc = GroupCommitter(store, on_commit=listener)
    try:
        batches = [[Change(run_id, n, S.READY, f"ready {n}")] for n in names]
        batches += [[Change(run_id, n, S.RUNNING), Change(run_id, n, S.SUCCEEDED, "ok",
                                                          {"ended_at": 1.0})]
                    for n in names[:30]]
        for b in batches:
            gc.submit(b)
        with pytest.raises(IllegalTransition):  # refused at submit, before any commit
            gc.submit([Change(run_id, names[0], S.RUNNING)])
        gc.sync()
        assert [t.state for t in reader.tasks(run_id)] == (
            [S.SUCCEEDED] * 30 + [S.READY] * 30)
        assert seen == batches and all(visible)
        events = task_events(store, run_id)
        assert events[:60] == [(n, "PENDING", "READY", f"ready {n}") for n in names]
        assert len(events) == 60 + 60
        gc.submit([Change(run_id, names[-1], S.CANCELLED, "late")])
    finally:
        gc.close()  # waits for the last batch
        reader.close()
    assert store.task(run_id, names[-1]).state is S.CANCELLED
    assert seen[-1] == [Change(run_id, names[-1], S.CANCELLED, "late")]


def test_group_commit_from_several_threads(store: Store) -> None:
    names = tuple(f"t{i}" for i in range(40))
    run_id = make_run(store, tasks=names)
    gc = GroupCommitter(store)

    def work(chunk: tuple[str, ...]) -> None:
        for n in chunk:
            gc.submit([Change(run_id, n, S.READY)])
            gc.submit([Change(run_id, n, S.SKIPPED)])

    threads = [threading.Thread(target=work, args=(names[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc.close()
    assert {t.state for t in store.tasks(run_id)} == {S.SKIPPED}
    assert len(task_events(store, run_id)) == 80


def test_the_writer_reconnects_after_losing_its_connection(store: Store) -> None:
    run_id = make_run(store)
    store.apply([Change(run_id, "a", S.READY)])
    assert store._w is not None
    store._w.raw.dbapi_connection.close()  # as when the server restarts
    batch = store.check([Change(run_id, "a", S.RUNNING)])
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        store.write([batch])
    assert store.task(run_id, "a").state is S.READY
    store.write([batch])  # a new connection
    assert store.task(run_id, "a").state is S.RUNNING


def test_text_keeps_unicode_and_survives_nul(store: Store) -> None:
    run_id = make_run(store)
    error = "ValueError: bad byte \x00 here — ünïcödé ✓"
    store.apply([Change(run_id, "a", S.READY), Change(run_id, "a", S.RUNNING),
                 Change(run_id, "a", S.FAILED, f"attempt 1 {error}",
                        {"error": error, "traceback": "tb\x00" * 3 + "x" * 100_000})])
    rec = store.task(run_id, "a")
    # PostgreSQL text cannot hold NUL: it becomes U+FFFD; SQLite keeps it
    assert rec.error is not None and rec.error.replace("\ufffd", "\x00") == error
    assert rec.traceback is not None and len(rec.traceback) == 100_009
    assert task_events(store, run_id)[-1][3].replace("\ufffd", "\x00") == f"attempt 1 {error}"
    store.finish_run(run_id, RunState.FAILED, f"task a failed: {error}")
    message = store.get_run(run_id).message
    assert message is not None and message.replace("\ufffd", "\x00").endswith(error)


def test_long_task_and_workflow_names(store: Store) -> None:
    long = "t" * 400
    run_id = make_run(store, workflow="w" * 300, tasks=(long,))
    store.apply([Change(run_id, long, S.READY)])
    assert store.get_run(run_id).workflow == "w" * 300
    assert store.task(run_id, long).state is S.READY


def test_cached_results_by_key_newest_first_and_per_user(store: Store) -> None:
    r1 = make_run(store, "20240101-000001-aaaa")
    r2 = make_run(store, "20240101-000002-bbbb")
    other = make_run(store, "20240101-000003-cccc", workflow="other")
    succeed(store, r1, "a", cache_key="k-a", ended_at=100.0, result="1")
    succeed(store, r2, "a", cache_key="k-a", ended_at=200.0, result="2")
    succeed(store, r1, "b", cache_key="k-b1", ended_at=300.0, result="3")
    succeed(store, r2, "b", cache_key="k-b2", ended_at=50.0, result="4")
    succeed(store, other, "a", cache_key="k-a", ended_at=999.0, result="5")
    store.apply([Change(r2, "c", S.READY), Change(r2, "c", S.RUNNING),
                 Change(r2, "c", S.FAILED, "", {"cache_key": "k-c", "ended_at": 400.0})])

    cached = store.cached("wf")
    assert set(cached) == {"k-a", "k-b1", "k-b2"}  # not failures, not other workflows
    # every earlier result of a key, newest first (an older one may fit older code)
    assert [(r.run_id, r.result_json) for r in cached["k-a"]] == [(r2, "2"), (r1, "1")]
    assert [r.run_id for r in cached["k-b1"]] == [r1]
    assert [r.run_id for r in cached["k-b2"]] == [r2]

    # a success without an end time counts as the oldest, on every backend
    r3 = make_run(store, "20240101-000004-dddd")
    succeed(store, r3, "a", cache_key="k-a", ended_at=150.0, result="6")
    store.apply([Change(r3, "a", S.PENDING, "rerun")])
    store.apply([Change(r3, "a", S.SUCCEEDED, "reused", {"ended_at": None})])
    assert [r.run_id for r in store.cached("wf")["k-a"]] == [r2, r1, r3]

    # only the given users' runs (None: runs made without a manager)
    assert store.cached("wf", users=["somebody"]) == {}
    assert set(store.cached("wf", users=[None])) == {"k-a", "k-b1", "k-b2"}


def test_cached_holds_the_newest_few_per_key_however_many_runs_reused_it(
        store: Store) -> None:
    """Each run that reuses a result records it again under its key: what a new run
    loads must not grow with the number of earlier runs (a long-lived manager's memory
    stays flat), and the newest copies come first."""
    runs = [make_run(store, f"20240101-0000{i:02d}-aaaa", tasks=("a",)) for i in range(12)]
    for i, run in enumerate(runs):
        succeed(store, run, "a", cache_key="k-a", ended_at=float(i), result=str(i))
    kept = store.cached("wf")["k-a"]
    assert len(kept) == Store.PER_KEY < len(runs)
    assert [r.run_id for r in kept] == runs[::-1][:Store.PER_KEY]


def test_cancel_request(store: Store) -> None:
    run_id = make_run(store)
    other = make_run(store, "20240101-120000-ffff")
    assert not store.cancel_requested(run_id)
    before = time.time()
    store.request_cancel(run_id)
    assert store.cancel_requested(run_id) and not store.cancel_requested(other)
    cancel_at = store.get_run(run_id).cancel_requested
    assert cancel_at is not None and cancel_at >= before
    store.claim_run(run_id)  # a resumed run starts without the old request
    assert not store.cancel_requested(run_id)


def test_get_run_by_id_prefix_and_latest(store: Store) -> None:
    assert store.latest_run() is None
    with pytest.raises(RunNotFound):
        store.get_run("latest")
    first = make_run(store, "20240101-000001-aaaa")
    for wildcard in ("%", "_", "2024010_"):  # a prefix is text, not a LIKE pattern
        with pytest.raises(RunNotFound):
            store.get_run(wildcard)
    newer_than(store, first)
    second = make_run(store, "20240101-000002-bbbb")
    newer_than(store, second)
    third = make_run(store, "20240102-000003-cccc")
    assert store.get_run(second).id == second
    assert store.get_run("20240102").id == third
    assert store.get_run("20240101-000001").id == first
    with pytest.raises(RunNotFound):
        store.get_run("20240101")  # two runs start like this
    with pytest.raises(RunNotFound):
        store.get_run("1999")
    assert store.get_run("latest").id == third
    latest = store.latest_run()
    assert latest is not None and latest.id == third
    assert [r.id for r in store.runs()] == [third, second, first]
    assert [r.id for r in store.runs(limit=2)] == [third, second]


def test_finish_and_claim_run(store: Store) -> None:
    run_id = make_run(store)
    store.finish_run(run_id, RunState.CANCELLED, "cancelled by a person")
    run = store.get_run(run_id)
    assert (run.state, run.message, run.owner_pid) == (
        RunState.CANCELLED, "cancelled by a person", None)
    assert run.ended_at is not None and run.ended_at >= run.created_at
    assert store.events(run_id)[-1]["new"] == "CANCELLED"
    store.claim_run(run_id)
    run = store.get_run(run_id)
    assert (run.state, run.ended_at, run.owner_pid) == (RunState.RUNNING, None, os.getpid())
    assert run.owner_alive()


def test_a_run_just_created_is_claimed_with_its_tasks_as_recorded(store: Store,
                                                                   store_url: str) -> None:
    """The store that created a run does not read its tasks back to claim it: it must give
    what another store reads from the database."""
    run_id = make_run(store, tasks=("b", "a", "c"))
    other = Store(store_url)
    try:
        read = other.claim_run(run_id)
    finally:
        other.close()
    assert store.claim_run(run_id) == read == [("b", "def-b"), ("a", "def-a"), ("c", "def-c")]
    store.apply([Change(run_id, "a", S.READY, "upstream done")])
    assert store.claim_run(run_id) is None  # claimed again, once it ran: read back
    # Runs created and never claimed: the store keeps the newest few; an older one is
    # read back, with the same answer.
    made = [make_run(store, f"20240101-1300{i:02d}-abcd", tasks=("x", "y")) for i in range(20)]
    assert [store.claim_run(r) for r in (made[0], made[-1])] == [[("x", "def-x"),
                                                                  ("y", "def-y")]] * 2


@pytest.mark.slow
def test_a_workflow_runs_on_the_store(store_url: str, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from kale import Workflow
    from kale.client import local

    monkeypatch.setenv("KALE_HOME", str(tmp_path / "kale-home"))
    monkeypatch.setenv("KALE_STORE_URL", store_url)
    wf = Workflow("on-store", base_dir=tmp_path)
    fetch = wf.shell("fetch", "echo 21 > value.txt; echo fetched", outputs=["value.txt"])

    @wf.python(after=[fetch])
    def double(fetch):
        return {"value": 2 * int(Path(fetch["value.txt"]).read_text())}

    wf.shell("bad", "echo oops >&2; exit 3")
    wf.shell("below", "true", after=["bad"])
    try:
        run = wf.run().wait()
        assert run.state is RunState.FAILED
        assert {t.name: t.state for t in run.tasks} == {
            "fetch": S.SUCCEEDED, "double": S.SUCCEEDED, "bad": S.FAILED, "below": S.SKIPPED}
        assert run.result("double") == {"value": 42}
        assert run.logs("fetch") == "fetched\n"
        assert run["bad"].record.exit_code == 3

        # the same store, read afresh: the run is there, and a second run reuses results
        store = Store(store_url)
        try:
            assert store.get_run("latest").id == run.id
            assert [a["state"] for a in store.attempts(run.id, "double")] == ["SUCCEEDED"]
        finally:
            store.close()
        again = wf.run(only=["double"]).wait()
        assert again.state is RunState.SUCCEEDED
        assert again["double"].record.reused_from == run.id
        assert again.result("double") == {"value": 42}
    finally:
        local.open_store()[0].close()


def test_a_run_id_drawn_twice_is_drawn_again_and_the_run_there_is_untouched(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run id is the time and a random suffix, so two runs created in one second may
    draw the same one (a CI run did: `kale run` failed with FileExistsError). A taken id,
    by a run of this home (its folder exists) or of another home on the same store (its
    row exists), is drawn again; the run that has it is untouched. (The collision is
    forced: the ids drawn are given.)"""
    from kale import Workflow
    from kale.engine import runs
    from kale.model.options import RunOptions
    from kale.store.store import RunIdTaken

    wf = Workflow("ids", base_dir=tmp_path)
    wf.shell("a", ["true"])
    here, other = tmp_path / "home-a", tmp_path / "home-b"
    first = runs.create_run(store, here, wf, RunOptions())
    with pytest.raises(RunIdTaken):  # the store's own word, with nothing written
        make_run(store, first.id, tasks=("z",))
    drawn = iter([first.id, "20260101-000000-beef", first.id, "20260101-000000-cafe"])
    monkeypatch.setattr(runs, "new_run_id", lambda: next(drawn))
    second = runs.create_run(store, here, wf, RunOptions())  # its folder is there
    third = runs.create_run(store, other, wf, RunOptions())  # its row is there
    assert (second.id, third.id) == ("20260101-000000-beef", "20260101-000000-cafe")
    assert not (other / "runs" / first.id).exists()  # the folder it made, given back
    assert Path(third.run_dir) == other / "runs" / third.id
    kept = store.get_run(first.id)
    assert (kept.run_dir, kept.workflow) == (first.run_dir, "ids")
    assert [t.name for t in store.tasks(first.id)] == ["a"]
    assert {r.id for r in store.runs()} >= {first.id, second.id, third.id}

"""The one run interface: a run driven in this process and a run driven by the manager are
the same handle type and behave the same (wait, cancel, results, logs with offsets,
rerun, re-attach by id); their documents have the same shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Manager, busy_py, wait_until

import kale
from kale import RunState, TaskError, TaskState

Where = Callable[[kale.Workflow], kale.Run]


@pytest.fixture(params=["embedded", "manager"])
def where(request: pytest.FixtureRequest, home: Path,
          managers: Callable[..., Manager]) -> Iterator[Where]:
    """How a test starts its runs: driven here, or by the home's manager."""
    if request.param == "manager":
        managers()
    made: list[kale.Run] = []

    def start(wf: kale.Workflow) -> kale.Run:
        run = wf.run(manager=request.param == "manager")
        made.append(run)
        return run

    yield start
    for run in made:
        run.close()


def _wf(tmp_path: Path) -> kale.Workflow:
    wf = kale.Workflow("iface", base_dir=tmp_path)
    wf.shell("hello", "printf 'héllo\\nworld\\n'")
    wf.shell("bad", "echo doomed >&2; exit 3", after=["hello"])
    wf.shell("below", "echo never", after=["bad"])
    return wf


def test_one_handle_whatever_drives_the_run(where: Where, tmp_path: Path) -> None:
    run = where(_wf(tmp_path))
    assert type(run) is kale.Run
    assert run.wait() is run  # a FAILED run is an ending, not an error
    assert run.state is RunState.FAILED and run.done()
    states = {t.name: t.state for t in run.tasks}
    assert states == {"hello": TaskState.SUCCEEDED, "bad": TaskState.FAILED,
                      "below": TaskState.SKIPPED}
    assert run["bad"].record.exit_code == 3
    with pytest.raises(TaskError, match="FAILED"):
        run.result("bad")
    assert run.results() == {"hello": None}
    # logs, whole and from a byte offset (a reader following a log)
    assert run.logs("hello") == "héllo\nworld\n"
    assert run.logs("hello", offset=len("héllo\n".encode())) == "world\n"
    assert run.logs("bad", "stderr") == "doomed\n"
    # the status document has one shape
    doc = run.status()
    assert set(doc) >= {"run", "counts", "tasks", "last_event"}
    assert doc["counts"] == {"SUCCEEDED": 1, "FAILED": 1, "SKIPPED": 1}
    assert run.spec()["tasks"]["bad"]["after"] == ["hello"]
    detail = run["bad"].detail()
    assert detail["after"] == ["hello"] and detail["attempt_rows"]
    # events end with "end"
    assert [e for e, _ in run.events()][-1] == "end"
    # a rerun of what failed is a handle of the same type; what succeeded is reused
    again = run.rerun(failed=True).wait()
    assert type(again) is kale.Run and again.id != run.id
    assert again["hello"].record.reused_from is not None  # not run again
    assert again["bad"].record.attempts == 1
    again.close()


def test_reattach_by_id_gives_the_same_story(where: Where, tmp_path: Path,
                                             managers: Callable[..., Manager]) -> None:
    run = where(_wf(tmp_path)).wait()
    by_id = kale.get_run(run.id[:12])
    assert type(by_id) is kale.Run and by_id.id == run.id
    assert by_id.status()["tasks"] == run.status()["tasks"]
    assert kale.get_run().id == run.id  # the newest
    assert [r.id for r in kale.runs()] == [run.id]


def test_cancel_returns_how_the_run_ended(where: Where, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = kale.Workflow("stop", base_dir=tmp_path)
    wf.shell("busy", ["python3", "-c", busy_py(gate)])
    run = where(wf)
    wait_until(lambda: run.status()["counts"].get("RUNNING"), what="busy running")
    assert run.cancel() is RunState.CANCELLED
    assert run.wait().state is RunState.CANCELLED
    assert run["busy"].state is TaskState.CANCELLED


def test_a_manager_run_from_the_client_is_the_same_handle(
        home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers()
    with m.client() as client:
        run = client.submit(_wf(tmp_path), kale.RunOptions.of(only=["hello"]))
        assert type(run) is kale.Run and type(client.run(run.id)) is kale.Run
        assert run.wait().state is RunState.SUCCEEDED
        assert {t.name: t.state for t in run.tasks} == {
            "hello": TaskState.SUCCEEDED, "bad": TaskState.SKIPPED, "below": TaskState.SKIPPED}
        assert client.run(run.id[:12]).logs("hello") == "héllo\nworld\n"


def test_options_travel_as_one_object() -> None:
    opts = kale.RunOptions.of(params={"n": 5}, only="a", from_=["b"], tags=("t",),
                              force=True, jobs=3, executor={"kind": "slurm"})
    assert kale.RunOptions.from_json(opts.to_json()) == opts
    assert kale.RunOptions.from_json({}) == kale.RunOptions()
    assert kale.RunOptions().to_json() == {}


def test_embedded_task_actions_need_the_driving_process(home: Path, tmp_path: Path) -> None:
    run = _wf(tmp_path).run().wait()
    with pytest.raises(kale.KaleError, match="cancel needs the manager"):
        run["bad"].cancel()
    other: Any = kale.get_run(run.id)
    with pytest.raises(kale.KaleError, match="needs the manager"):
        other["hello"].kernel()

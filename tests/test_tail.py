"""Following a run (:class:`kale.store.tail.RunTail`, behind the manager's event stream and
the dashboards): each log line once, every attempt's logs, and a reader that resumes
mid-run gets what is new, not the logs of tasks that were over before it came."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import gate_sh, wait_until
from kale import Workflow
from kale.client.local import open_store
from kale.store.tail import RunTail


def _drain(tail: RunTail) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    wait_until(lambda: events.extend(tail.poll()) or tail.ended, what="the run's end")
    return events


def _lines(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, str]]:
    return [(d["task"], d["stream"], d["line"]) for e, d in events if e == "log"]


def test_a_reader_of_a_finished_run_gets_each_tasks_lines_once(tmp_path: Path) -> None:
    wf = Workflow("tail")
    wf.shell("talk", "echo one; echo two >&2")
    # attempt 1 writes and fails; attempt 2 writes to its own files, which the task's
    # record names (the files a finished run's reader is given)
    flag = tmp_path / "tried"
    wf.shell("flaky", f"if [ -e {flag} ]; then echo second; else touch {flag}; "
                      "echo first; exit 3; fi", retries=1, retry_delay=0)
    wf.shell("quiet", "true")
    run = wf.run(home=tmp_path / "home").wait()
    assert run.state.value == "SUCCEEDED"
    store, _ = open_store(tmp_path / "home")

    events = _drain(RunTail(store, run.id))
    assert sorted(_lines(events)) == [("flaky", "stdout", "second"), ("talk", "stderr", "two"),
                                      ("talk", "stdout", "one")]
    assert events[-1] == ("end", {"state": "SUCCEEDED"})
    states = [(d["task"], d["new"]) for e, d in events if e == "state" and d["task"] == "flaky"]
    assert states.count(("flaky", "RUNNING")) == 2 and states[-1] == ("flaky", "SUCCEEDED")


def test_a_reader_that_resumes_mid_run_follows_only_what_is_under_way(tmp_path: Path) -> None:
    gate, said = tmp_path / "gate", tmp_path / "said-a"
    wf = Workflow("tail-resume")
    wf.shell("early", "echo early-line")
    wf.shell("slow", f"echo a; touch {said}; {gate_sh(gate)}; echo b")
    handle = wf.run(home=tmp_path / "home")
    store, _ = open_store(tmp_path / "home")
    run_id = handle.id
    wait_until(lambda: said.exists() and store.task(run_id, "early").state.value == "SUCCEEDED"
               and store.task(run_id, "slow").state.value == "RUNNING",
               what="early done and slow under way, both recorded")

    tail = RunTail(store, run_id, after=store.last_event(run_id))
    first = tail.poll()
    assert _lines(first) == [("slow", "stdout", "a")]  # what is there, of a task under way
    assert _lines(tail.poll()) == []  # nothing twice
    gate.touch()
    rest = _drain(tail)
    assert _lines(rest) == [("slow", "stdout", "b")]
    assert [d["new"] for e, d in rest if e == "state" and d["task"] == "slow"] == ["SUCCEEDED"]
    assert handle.wait().state.value == "SUCCEEDED"


def test_a_reader_that_resumes_gets_the_last_lines_of_a_task_that_ended_while_it_was_away(
        tmp_path: Path) -> None:
    """A dashboard's connection drops while a task runs; the task writes its last lines
    and ends before the view reconnects (after the last event it saw): the resumed
    reader still gives those lines (a view drops the ones it had, by their offset)."""
    gate, said = tmp_path / "gate", tmp_path / "said-a"
    wf = Workflow("tail-away")
    wf.shell("slow", f"echo a; touch {said}; {gate_sh(gate)}; echo b")
    handle = wf.run(home=tmp_path / "home")
    store, _ = open_store(tmp_path / "home")
    run_id = handle.id
    wait_until(lambda: said.exists() and store.task(run_id, "slow").state.value == "RUNNING",
               what="slow under way, recorded")
    seen = store.last_event(run_id)  # where the view's stream broke off
    gate.touch()
    assert handle.wait().state.value == "SUCCEEDED"

    rest = _drain(RunTail(store, run_id, after=seen))
    assert ("slow", "stdout", "b") in _lines(rest)
    assert [d["new"] for e, d in rest if e == "state" and d["task"] == "slow"] == ["SUCCEEDED"]

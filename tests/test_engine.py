"""The engine through the Python API: data passing, failures, retries, timeouts, cancel,
result reuse, selection. Real processes, real store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import process_alive, wait_until
from kale import TaskError, TaskState, ValidationError, Workflow
from kale.model.states import RunState


def states(run) -> dict[str, str]:
    return {t.name: t.state.value for t in run.tasks}


def test_results_flow_from_shell_to_python_to_python(home: Path, tmp_path: Path) -> None:
    wf = Workflow("flow", base_dir=tmp_path)
    fetch = wf.shell("fetch", "echo 42 > value.txt", outputs=["value.txt"])

    @wf.python(after=[fetch])
    def double(fetch):
        return 2 * int(Path(fetch["value.txt"]).read_text())

    @wf.python(after=["double"], parameters={"offset": 1})
    def add(double, offset):
        return {"total": double + offset}

    wf.shell("show", ["sh", "-c", 'echo "total=$total"'], parameters={"total": add["total"]})
    run = wf.run().wait()
    assert run.state is RunState.SUCCEEDED, states(run)
    assert run.result("double") == 84
    assert run.result("add") == {"total": 85}
    assert run.logs("show") == "total=85\n"
    # each task ran in its own directory inside the run directory
    assert Path(run.result("fetch")["value.txt"]).parent == run.run_dir / "fetch"


def test_failure_skips_downstream_while_independent_branch_goes_on(home: Path) -> None:
    wf = Workflow("branches")
    bad = wf.shell("bad", "echo oops >&2; exit 3")
    wf.shell("below", "true", after=[bad])
    wf.shell("further", "true", after=["below"])
    wf.shell("independent", "sleep 0.3; echo fine")
    run = wf.run().wait()
    assert run.state is RunState.FAILED
    assert states(run) == {"bad": "FAILED", "below": "SKIPPED", "further": "SKIPPED",
                           "independent": "SUCCEEDED"}
    rec = run["bad"].record
    assert rec.exit_code == 3 and "exit code 3" in (rec.error or "")
    assert run.logs("bad", "stderr") == "oops\n"
    assert "upstream 'bad' failed" in (run["below"].record.reason or "")
    with pytest.raises(TaskError, match="bad"):
        run.result("bad")


def test_retries_with_backoff_until_success(home: Path, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    wf = Workflow("retry")

    def flaky(path: str = str(counter)) -> int:
        n = int(Path(path).read_text()) + 1 if Path(path).exists() else 1
        Path(path).write_text(str(n))
        if n < 3:
            raise RuntimeError(f"attempt {n} fails")
        return n

    wf.python(flaky, retries=2, retry_delay=0.2)
    t0 = time.monotonic()
    run = wf.run().wait()
    assert run.state is RunState.SUCCEEDED
    assert run.result("flaky") == 3
    assert time.monotonic() - t0 >= 0.2 + 0.4  # backoff doubles: 0.2 s then 0.4 s
    attempts = run.source.store.attempts(run.id, "flaky")
    assert [a["state"] for a in attempts] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert "attempt 2 fails" in attempts[1]["error"]
    events = [(e["old"], e["new"]) for e in run.source.store.events(run.id) if e["task"] == "flaky"]
    assert ("RUNNING", "RETRYING") in events and ("RETRYING", "READY") in events


def test_retries_exhausted_is_failed(home: Path) -> None:
    wf = Workflow("retry-out")
    wf.shell("nope", "exit 1", retries=1, retry_delay=0)
    run = wf.run().wait()
    assert states(run) == {"nope": "FAILED"}
    assert run["nope"].record.attempts == 2


def test_timeout_kills_the_process_group(home: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    wf = Workflow("slow")
    # (the timeout leaves the shell ample time to write the pid file on a loaded machine)
    wf.shell("sleepy", f"sleep 60 & echo $! > {pidfile}; wait", timeout=15)
    run = wf.run().wait()
    rec = run["sleepy"].record
    assert rec.state is TaskState.TIMEOUT
    assert "timed out after 15 s" in (rec.error or "")
    pid = int(pidfile.read_text())
    wait_until(lambda: not process_alive(pid), what=f"the task's child {pid} to be killed")


def test_python_timeout_kills_worker_and_next_task_runs(home: Path) -> None:
    wf = Workflow("pyslow")

    def forever() -> None:
        time.sleep(60)

    def after_it() -> str:
        return "ran"

    wf.python(forever, timeout=0.5)
    wf.python(after_it)
    run = wf.run(jobs=1).wait()
    assert states(run) == {"forever": "TIMEOUT", "after_it": "SUCCEEDED"}


def test_cancel_kills_running_and_records_cancelled(home: Path) -> None:
    wf = Workflow("cancel-me")
    first = wf.shell("long", "sleep 60")
    wf.shell("later", "true", after=[first])
    run = wf.run()
    wait_until(lambda: run["long"].state is TaskState.RUNNING, what="long to run")
    run.cancel()
    run.wait(timeout=120)
    assert run.state is RunState.CANCELLED
    assert states(run) == {"long": "CANCELLED", "later": "CANCELLED"}


def test_python_error_reports_the_users_traceback(home: Path) -> None:
    wf = Workflow("pyerr")

    def broken() -> None:
        values: list[int] = []
        values[3]

    wf.python(broken)
    run = wf.run().wait()
    rec = run["broken"].record
    assert rec.state is TaskState.FAILED
    assert rec.error == "IndexError: list index out of range"
    assert "values[3]" in (rec.traceback or "")
    assert "_pyworker" not in (rec.traceback or "")
    assert "IndexError" in run.logs("broken", "stderr")


def test_declared_output_must_exist(home: Path) -> None:
    wf = Workflow("outputs")
    wf.shell("liar", "echo no file", outputs=["result.json"])
    run = wf.run().wait()
    rec = run["liar"].record
    assert rec.state is TaskState.FAILED
    assert "declared output 'result.json' was not created" in (rec.error or "")


def test_unchanged_tasks_are_reused_and_force_reruns(home: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    wf = Workflow("reuse", parameters={"n": 1})
    a = wf.shell("a", f"echo a >> {ledger}; echo $n", parameters={"n": "${params.n}"})
    wf.shell("b", f"echo b >> {ledger}", after=[a])
    wf.shell("c", f"echo c >> {ledger}")
    first = wf.run().wait()
    second = wf.run().wait()
    assert second.state is RunState.SUCCEEDED
    assert sorted(ledger.read_text().split()) == ["a", "b", "c"]
    assert {t.reused_from for t in second.tasks} == {first.id}
    # a new parameter value changes a's inputs: a and b (its result changed) run again
    wf.run(params={"n": 2}).wait()
    assert sorted(ledger.read_text().split()) == ["a", "a", "b", "b", "c"]
    forced = wf.run(force=True).wait()
    assert all(t.reused_from is None for t in forced.tasks)
    assert len(ledger.read_text().split()) == 8


def test_selection_only_from_until_tags(home: Path) -> None:
    wf = Workflow("sel")
    a = wf.shell("a", "true", tags=["prep"])
    b = wf.shell("b", "true", after=[a])
    c = wf.shell("c", "true", after=[b], tags=["post"])
    wf.shell("d", "true", tags=["post"])
    assert states(wf.run(until=["b"]).wait()) == {"a": "SUCCEEDED", "b": "SUCCEEDED",
                                                   "c": "SKIPPED", "d": "SKIPPED"}
    run = wf.run(from_=[b], force=True).wait()
    # a is not selected: its earlier result is reused, b and c run
    assert states(run) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED", "d": "SKIPPED"}
    assert run["a"].record.reused_from is not None and run["b"].record.reused_from is None
    assert states(wf.run(tags=["post"]).wait())["d"] == "SUCCEEDED"
    run = wf.run(only=[c, "d"], force=True).wait()
    assert run.state is RunState.SUCCEEDED
    assert {t.name for t in run.tasks if t.reused_from is None} == {"c", "d"}


def test_a_needed_upstream_without_an_earlier_result_runs_first(home: Path) -> None:
    wf = Workflow("sel2")
    a = wf.shell("a", "echo a > a.txt", outputs=["a.txt"])
    wf.shell("b", 'cat "$f"', parameters={"f": a["a.txt"]})
    wf.shell("c", "true")  # neither selected nor needed
    run = wf.run(only=["b"]).wait()
    assert states(run) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SKIPPED"}
    assert run["a"].record.reused_from is None
    reasons = [e["reason"] for e in run.source.store.events(run.id) if e["task"] == "a"]
    assert any("not selected, but b needs it" in (r or "") for r in reasons), reasons
    assert run.logs("b") == "a\n"
    # now a has a result for these inputs: --only b reuses it
    again = wf.run(only=["b"], force=True).wait()
    assert again["a"].record.reused_from == run.id
    assert again["b"].record.reused_from is None


def test_non_json_results_round_trip_through_pickle(home: Path) -> None:
    wf = Workflow("pickled")

    @wf.python()
    def make():
        return {(1, 2): {3, 4}}

    @wf.python(after=["make"])
    def use(make):
        return sorted(make[(1, 2)])

    run = wf.run().wait()
    assert run.result("make") == {(1, 2): {3, 4}}
    assert run.result("use") == [3, 4]


def test_env_and_record_from_shell(home: Path) -> None:
    wf = Workflow("envs")
    wf.shell("envy", 'echo "$GREETING $KALE_TASK"; kale record answer 42',
             env={"GREETING": "hello"})
    run = wf.run().wait()
    assert run.logs("envy") == "hello envy\n"
    assert run.result("envy") == {"answer": 42}


def test_kale_record_in_python_task_merges_into_result(home: Path) -> None:
    wf = Workflow("rec")

    @wf.python()
    def rec():
        import kale

        kale.record("mean", 2.5)

    run = wf.run().wait()
    assert run.result("rec") == {"mean": 2.5}


def test_a_retried_python_task_keeps_its_directory_but_not_the_earlier_records(
        home: Path, tmp_path: Path) -> None:
    wf = Workflow("rec-retry")

    def twice(flag: str = str(tmp_path / "tried")) -> None:
        import os

        import kale

        if not os.path.exists(flag):
            open(flag, "w").close()
            open("left-by-attempt-1", "w").close()
            kale.record("early", 1)
            raise RuntimeError("attempt 1 fails")
        kale.record("late", [os.path.basename(os.getcwd()),
                             os.path.exists("left-by-attempt-1")])

    wf.python(twice, retries=1)
    run = wf.run(jobs=1).wait()
    assert run.state is RunState.SUCCEEDED, run["twice"].record.error
    # the same directory, the files an attempt made stay; its records do not
    assert run.result("twice") == {"late": ["twice", True]}


def test_python_tasks_do_not_leak_environment_or_cwd_to_each_other(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALE_TEST_BASE", "base")  # in the worker's own environment
    wf = Workflow("isolation")

    @wf.python(env={"ONLY_FOR_FIRST": "1", "KALE_TEST_BASE": "mine"})
    def first():
        import os
        import subprocess

        os.environ["SET_BY_FIRST"] = "x"
        os.chdir("/")
        child = subprocess.run(["sh", "-c", 'echo "$ONLY_FOR_FIRST $KALE_TEST_BASE"'],
                               capture_output=True, text=True).stdout.strip()
        return [os.environ.get("ONLY_FOR_FIRST"), os.environ.get("KALE_TEST_BASE"), child]

    @wf.python(after=["first"])
    def second():
        import os
        import subprocess

        child = subprocess.run(["sh", "-c", 'echo "${ONLY_FOR_FIRST-unset} $KALE_TEST_BASE"'],
                               capture_output=True, text=True).stdout.strip()
        return [os.environ.get("ONLY_FOR_FIRST"), os.environ.get("SET_BY_FIRST"),
                os.environ.get("KALE_TEST_BASE"), os.path.basename(os.getcwd()), child]

    run = wf.run(jobs=1).wait()
    # what the task was given, seen by it and by the processes it starts...
    assert run.result("first") == ["1", "mine", "1 mine"]
    # ...and gone for the next task in the same worker, the worker's own value back
    assert run.result("second") == [None, None, "base", "second", "unset base"]


def test_tasks_run_in_parallel_up_to_jobs(home: Path, tmp_path: Path) -> None:
    wf = Workflow("parallel")
    # Each task starts, then waits until all four have started: only four at once can
    # all finish (one at a time, the first would give up after 120 s and fail).
    everyone = " ".join(f"[ -e {tmp_path}/start{i} ]" for i in range(4)).replace(" [", " && [")
    for i in range(4):
        wf.shell(f"s{i}", f"touch {tmp_path}/start{i}; n=0; until {everyone}; do "
                 "n=$((n+1)); [ $n -lt 2400 ] || exit 99; sleep 0.05; done")
    run = wf.run(jobs=4).wait()
    assert run.state is RunState.SUCCEEDED, states(run)



def test_failing_notebook_cell_is_reported_with_index_and_traceback(home: Path,
                                                                    tmp_path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# fails"),
                nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('before')"),
                nbformat.v4.new_code_cell("1 / (x - 1)")]
    nbformat.write(nb, tmp_path / "fails.ipynb")
    wf = Workflow("nbfail", base_dir=tmp_path)
    wf.notebook("nb", "fails.ipynb", parameters={"x": 1})
    wf.shell("after_nb", "true", after=["nb"])
    run = wf.run().wait()
    rec = run["nb"].record
    assert rec.state is TaskState.FAILED
    assert rec.error == "cell 3: ZeroDivisionError: division by zero"
    assert rec.details["cell_index"] == 3
    assert "1 / (x - 1)" in (rec.traceback or "")
    assert run["after_nb"].state is TaskState.SKIPPED
    # the executed notebook, with the error in it, is kept with the run
    kept = nbformat.read(rec.artifacts["notebook"], as_version=4)
    assert any(o.get("ename") == "ZeroDivisionError" for c in kept.cells
               if c.cell_type == "code" for o in c.outputs)
    assert "before" in run.logs("nb")


K = 2


def test_changed_global_of_a_notebook_function_is_not_reused(home: Path) -> None:
    global K
    wf = Workflow("globals")

    def read_k() -> int:
        return K

    wf.python(read_k)
    assert wf.run().wait().result("read_k") == 2
    K = 3
    try:
        again = wf.run().wait()
        assert again.result("read_k") == 3
        assert again["read_k"].record.reused_from is None
    finally:
        K = 2


def test_deleted_outputs_are_not_reused(home: Path) -> None:
    import shutil

    wf = Workflow("gone")
    wf.shell("make", "echo 1 > out.txt", outputs=["out.txt"])
    first = wf.run().wait()
    shutil.rmtree(first.run_dir)
    again = wf.run().wait()
    assert again["make"].record.reused_from is None
    assert Path(again.result("make")["out.txt"]).read_text() == "1\n"


def test_outputs_must_stay_inside_the_task_directory() -> None:
    wf = Workflow("escape")
    with pytest.raises(ValidationError, match="outputs are paths inside"):
        wf.shell("a", "true", outputs=["/etc/passwd"])
    with pytest.raises(ValidationError, match="outputs are paths inside"):
        wf.shell("b", "true", outputs=["../x"])


def test_results_of_classes_from_a_module_beside_the_workflow(home: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / "pts.py").write_text(
        "import kale\n\nclass P:\n    def __init__(self, v):\n        self.v = v\n\n"
        "def make():\n    kale.record('also', P(2))\n    return P(1)\n\n"
        "def use(make):\n    return make.v + 10\n")
    wf = Workflow("classes", base_dir=tmp_path)
    wf.python("pts:make", name="make")
    wf.python("pts:use", name="use", after=["make"])
    run = wf.run().wait()
    assert run.state is RunState.SUCCEEDED, [(t.name, t.error) for t in run.tasks]
    assert run.result("use") == 11


def test_cancel_from_another_handle_stops_the_run(home: Path) -> None:
    import kale

    wf = Workflow("other-handle")
    wf.shell("nap", "sleep 60")
    run = wf.run()
    wait_until(lambda: run["nap"].state is TaskState.RUNNING, what="nap to run")
    kale.get_run(run.id).cancel()
    run.wait(timeout=120)
    assert run.state is RunState.CANCELLED
    assert run["nap"].state is TaskState.CANCELLED


def test_a_python_task_finds_kale_on_its_path(home: Path, tmp_path: Path) -> None:
    def shell_out() -> str:
        import subprocess

        subprocess.run(["kale", "record", "answer", "42"], check=True)
        return "done"

    wf = Workflow("path", base_dir=tmp_path)
    wf.python(shell_out)
    run = wf.run().wait()
    assert run.state is RunState.SUCCEEDED, run["shell_out"].record.error


def test_a_long_chain_reused_whole(home: Path, tmp_path: Path) -> None:
    """Reusing a long chain resolves each task in turn (the old engine recursed per task
    and hit Python's recursion limit at about 600)."""
    wf = Workflow("long-chain", base_dir=tmp_path)
    for i in range(700):
        wf.shell(f"t{i}", "true", after=[f"t{i - 1}"] if i else [])
    first = wf.run(jobs=2).wait()
    assert first.state is RunState.SUCCEEDED
    again = wf.run().wait()
    assert again.state is RunState.SUCCEEDED
    assert {t.reused_from for t in again.tasks} == {first.id}


def test_a_finished_run_is_freed_without_the_garbage_collector(
        home: Path, tmp_path: Path) -> None:
    """Once a run ended and its handle is gone, nothing of its engine stays in memory
    waiting for the cyclic garbage collector (whose pass over a big run stops every
    thread of the process for tens of ms): no reference cycle holds it, and the process
    that drove it does not keep it (a notebook runs many)."""
    import gc

    from kale.engine.planner import Planner

    wf = Workflow("freed", base_dir=tmp_path, parameters={"xs": [1, 2, 3]})
    first = wf.shell("first", "true")
    wf.shell("each", ["sh", "-c", "echo $x"], after=[first], map={"x": "${params.xs}"})

    @wf.python(after=["each"])
    def last() -> int:
        return 1

    gc.collect()
    gc.disable()
    try:
        run = wf.run().wait()
        assert run.state is RunState.SUCCEEDED, states(run)
        del run
        assert [o for o in gc.get_objects() if isinstance(o, Planner)] == []
    finally:
        gc.enable()

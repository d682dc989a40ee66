"""Warm Python workers kept between runs of one process (``kale.tasks.warm``): a rerun
starts on the processes the last run left, but only ones that would have started the same
way, for the same workflow folder; they end with their process, killed or not."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import process_alive, service_missing, wait_until
from kale import Workflow
from kale.model.states import RunState


def _pid_workflow(folder: Path, name: str = "warm") -> Workflow:
    def pid() -> tuple[int, str | None]:
        import os

        return os.getpid(), os.environ.get("KALE_TEST_WARM")

    wf = Workflow(name, base_dir=folder)
    wf.python(pid, name="pid")
    return wf


def _pid(wf: Workflow, **kwargs: object) -> tuple[int, str | None]:
    run = wf.run(jobs=1, force=True, **kwargs).wait()  # type: ignore[arg-type]
    assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
    pid, value = run.result("pid")
    return int(pid), value


def test_a_rerun_starts_on_the_worker_the_last_run_left(home: Path, tmp_path: Path) -> None:
    wf = _pid_workflow(tmp_path)
    first, _ = _pid(wf)
    assert process_alive(first)  # kept after its run ended
    second, _ = _pid(wf)
    assert second == first


def test_a_changed_environment_gets_a_fresh_worker_that_sees_it(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = _pid_workflow(tmp_path)
    first, seen = _pid(wf)
    assert seen is None
    monkeypatch.setenv("KALE_TEST_WARM", "changed")
    second, seen = _pid(wf)
    assert (second != first, seen) == (True, "changed")


def test_a_workflow_in_another_folder_never_gets_the_worker_of_this_one(
        home: Path, tmp_path: Path) -> None:
    # Each folder has its own steps.py: a worker that imported one must not run the other.
    pids, values = [], []
    for label in ("alpha", "beta", "alpha"):
        folder = tmp_path / label
        folder.mkdir(exist_ok=True)
        (folder / "steps.py").write_text(f"import os\n\ndef value():\n"
                                         f"    return os.getpid(), {label!r}\n")
        wf = Workflow(label, base_dir=folder)
        wf.python("steps:value", name="pid")
        pid, value = _pid(wf)
        pids.append(pid)
        values.append(value)
    assert values == ["alpha", "beta", "alpha"]
    assert pids[0] != pids[1] and pids[2] == pids[0]


def test_a_kept_worker_killed_between_runs_is_replaced(home: Path, tmp_path: Path) -> None:
    wf = _pid_workflow(tmp_path)
    first, _ = _pid(wf)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not process_alive(first), what="the killed worker to be gone")
    second, _ = _pid(wf)
    assert second != first


def test_warm_seconds_0_stops_a_runs_workers_with_it(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALE_WARM_SECONDS", "0")
    wf = _pid_workflow(tmp_path)
    first, _ = _pid(wf)
    assert not process_alive(first)
    assert _pid(wf)[0] != first


_DRIVER = textwrap.dedent("""\
    import os, sys
    from kale import Workflow

    def pid():
        return os.getpid()

    wf = Workflow("warm-driver", base_dir=sys.argv[1])
    wf.python(pid, name="pid")
    print(wf.run(jobs=1).wait().result("pid"), flush=True)
    if sys.argv[2] == "wait":
        sys.stdin.read()
""")


def _driver(home: Path, tmp_path: Path, mode: str, **env: str
            ) -> tuple[subprocess.Popen[str], int]:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "KALE_HOME": str(home), **env})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), line
    return proc, int(line)


@pytest.mark.parametrize("how", ["exits", "killed", "reaped"])
def test_kept_workers_end_with_their_process_or_their_time(
        home: Path, tmp_path: Path, how: str) -> None:
    env = {"KALE_WARM_SECONDS": "0.2"} if how == "reaped" else {}
    proc, worker = _driver(home, tmp_path, "exit" if how == "exits" else "wait", **env)
    try:
        if how == "killed":
            proc.kill()  # no atexit: the worker's parent-death signal
        wait_until(lambda: not process_alive(worker), what=f"worker {worker} to end")
    finally:
        proc.kill()
        proc.communicate()


def test_a_task_whose_kept_workers_all_imported_code_since_edited_runs_the_code_on_disk(
        home: Path, tmp_path: Path) -> None:
    # Four workers each import steps.py (the tasks wait for each other: one per worker);
    # the file is edited; a one-task rerun must not be handed stale kept worker after
    # stale kept worker until it gives up: it runs the code as it is now.
    steps = tmp_path / "steps.py"
    steps.write_text(textwrap.dedent(f"""\
        import os, time

        def meet():
            here = {str(tmp_path)!r}
            open(os.path.join(here, "in-" + os.environ["KALE_TASK"]), "w").close()
            while len([f for f in os.listdir(here) if f.startswith("in-")]) < 4:
                time.sleep(0.01)
            return os.getpid()

        def value():
            return "before"
        """))
    wf = Workflow("fan", base_dir=tmp_path)
    for i in range(4):
        wf.python("steps:meet", name=f"meet{i}")
    run = wf.run(jobs=4).wait()
    assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
    assert len({run.result(f"meet{i}") for i in range(4)}) == 4  # four kept workers

    steps.write_text(steps.read_text().replace('return "before"', 'return "after the edit"'))
    again = Workflow("one", base_dir=tmp_path)
    again.python("steps:value", name="value")
    run = again.run(jobs=1).wait()
    assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
    assert run.result("value") == "after the edit"


def test_a_forked_child_runs_python_tasks_on_workers_of_its_own(
        home: Path, tmp_path: Path) -> None:
    wf = _pid_workflow(tmp_path)
    kept, _ = _pid(wf)  # the parent's spawning thread started; a worker kept
    said = tmp_path / "child-said"
    child = os.fork()
    if child == 0:  # the child: a run of its own, its answer in a file
        code = 1
        try:
            said.write_text(str(_pid(wf)[0]))
            code = 0
        finally:
            os._exit(code)
    try:
        _, status = wait_until(lambda: (lambda r: r if r[0] else None)(
            os.waitpid(child, os.WNOHANG)), what="the forked child's run")
        assert os.waitstatus_to_exitcode(status) == 0
        assert int(said.read_text()) not in (kept, os.getpid())
        assert _pid(wf)[0] == kept  # the parent's kept worker is still the parent's
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)


def test_a_package_installed_between_runs_gets_a_fresh_worker(
        home: Path, tmp_path: Path) -> None:
    # `pip install -U somelib` changes its site-packages folder: a kept worker may have
    # imported the old somelib (installed code is not checked before each job as the
    # workflow's own is), so the rerun starts a new one.
    import sysconfig

    folder = sysconfig.get_paths()["purelib"]
    if not os.access(folder, os.W_OK):  # (under CI=true a failure, never a skip)
        service_missing(f"cannot change {folder} as this user (the test acts as pip)")
    wf = _pid_workflow(tmp_path)
    first, _ = _pid(wf)
    assert _pid(wf)[0] == first
    st = os.stat(folder)
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))  # what an install does
    try:
        assert _pid(wf)[0] != first
    finally:
        os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_fresh_worker_takes_an_upstream_result_of_a_class_beside_the_workflow(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The second run reuses `make` (a Point, of points.py) and runs `use` in a new process
    # (none kept) that has imported nothing of the folder when the job reaches it.
    monkeypatch.setenv("KALE_WARM_SECONDS", "0")
    (tmp_path / "points.py").write_text(textwrap.dedent("""\
        class Point:
            def __init__(self, x):
                self.x = x

        def make():
            return Point(1)

        def use(make, k):
            return make.x + k
        """))
    for k in (10, 20):
        wf = Workflow("points", base_dir=tmp_path)
        wf.python("points:make", name="make")
        wf.python("points:use", name="use", after=["make"], parameters={"k": k})
        run = wf.run(jobs=1).wait()
        assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
        assert run.result("use") == 1 + k
    assert {t.name: t.reused_from for t in run.tasks}["make"] is not None

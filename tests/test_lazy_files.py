"""A Python task's log files are made only once it writes something (issue 17): what a
user sees of its logs is unchanged. Output from the task, its child processes and raw fd
writes lands in its own logs, is followable while it runs, and a task that wrote nothing
shows empty logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import wait_until
from kale import Workflow
from kale.model.states import RunState


def test_output_of_the_task_its_children_and_its_fds_in_its_logs(home: Path,
                                                                 tmp_path: Path) -> None:
    wf = Workflow("lazy-logs", base_dir=tmp_path)

    @wf.python()
    def talks() -> str:
        print("from print")
        print("to stderr", file=sys.stderr)
        subprocess.run(["sh", "-c", "echo child-out; echo child-err >&2"], check=True)
        os.write(1, b"raw fd\n")
        return os.getcwd()

    @wf.python()
    def quiet() -> int:
        return 1

    @wf.python()
    def fails() -> None:
        raise ValueError("boom")

    @wf.python()
    def much() -> int:
        sys.stdout.write("x" * 300_000 + "\n")  # more than a pipe holds
        return 3

    run = wf.run(jobs=2).wait()
    assert {t.name: t.state for t in run.tasks}["fails"] is not RunState.SUCCEEDED
    assert run.logs("talks") == "from print\nchild-out\nraw fd\n"
    assert run.logs("talks", "stderr") == "to stderr\nchild-err\n"
    assert run.result("talks") == str(run.run_dir / "talks")  # its cwd, as ever
    assert run.logs("quiet") == "" and run.logs("quiet", "stderr") == ""
    rec = run["quiet"].record
    assert rec.stdout and not os.path.exists(rec.stdout)  # no file was made for it
    assert "ValueError: boom" in run.logs("fails", "stderr")
    assert run.logs("much") == "x" * 300_000 + "\n"


def test_logs_are_followable_while_it_runs(home: Path, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    wf = Workflow("lazy-follow", base_dir=tmp_path)

    @wf.python()
    def slow() -> None:
        print("started", flush=True)
        end = time.monotonic() + 300  # (a gate: the test opens it)
        while not os.path.exists(gate) and time.monotonic() < end:
            time.sleep(0.02)
        print("ended")

    run = wf.run(jobs=1)
    try:
        wait_until(lambda: run.logs("slow") == "started\n", what="the first line")
    finally:
        Path(gate).touch()
    run.wait()
    assert run.logs("slow") == "started\nended\n"


def test_a_child_left_running_writes_to_its_own_tasks_log(home: Path,
                                                            tmp_path: Path) -> None:
    late, done = str(tmp_path / "late"), str(tmp_path / "done")
    wf = Workflow("lazy-child", base_dir=tmp_path)

    @wf.python()
    def first() -> None:  # its child outlives it
        subprocess.Popen([sys.executable, "-c",
                          f"import os, time\nwhile not os.path.exists({late!r}): "
                          "time.sleep(0.02)\nprint('late', flush=True)"])

    @wf.python(after=["first"])
    def second() -> None:  # the same warm process (jobs=1) runs it next
        print("second", flush=True)
        end = time.monotonic() + 300
        while not os.path.exists(done) and time.monotonic() < end:
            time.sleep(0.02)

    run = wf.run(jobs=1)
    try:
        wait_until(lambda: run.logs("second") == "second\n", what="the second task")
        Path(late).touch()
        wait_until(lambda: run.logs("first") == "late\n", what="the child's line")
        assert run.logs("second") == "second\n"
    finally:
        Path(late).touch()
        Path(done).touch()
    assert run.wait().state is RunState.SUCCEEDED


def test_each_task_of_a_chain_runs_in_its_own_new_directory(home: Path,
                                                             tmp_path: Path) -> None:
    """Each hop starts in a new, empty directory of its own, made by the warm worker
    that ran the hop before; a retry starts in its own directory with what its failed
    attempt left there, but without the records that attempt made."""
    wf = Workflow("chain-dirs", base_dir=tmp_path)
    names = [f"hop{i}" for i in range(6)]
    for i, name in enumerate(names):
        wf.python(f"hops:{'flaky' if name == 'hop3' else 'hop'}", name=name,
                  after=names[i - 1:i], retries=1 if name == "hop3" else 0,
                  retry_delay=0)
    (tmp_path / "hops.py").write_text(
        "import os\n"
        "import kale\n"
        "def hop():\n"
        "    before = sorted(os.listdir('.'))\n"
        "    with open('mine.txt', 'w') as f:\n"
        "        f.write(os.path.basename(os.getcwd()))\n"
        "    return [os.getcwd(), before]\n"
        "def flaky():\n"
        "    if not os.path.exists('tried'):\n"
        "        open('tried', 'w').close()\n"
        "        kale.record('from_the_failed_attempt', 1)\n"
        "        raise RuntimeError('first attempt')\n"
        "    kale.record('late', [os.getcwd(), sorted(os.listdir('.'))])\n")
    run = wf.run(jobs=1).wait()
    assert run.state is RunState.SUCCEEDED, [(t.name, t.state, t.error) for t in run.tasks]
    for name in names:
        if name == "hop3":  # its second attempt: what the first left, but no records
            assert run.result(name) == {"late": [str(run.run_dir / name), ["tried"]]}
        else:
            cwd, before = run.result(name)
            assert cwd == str(run.run_dir / name)
            assert before == []  # new and empty
            assert (run.run_dir / name / "mine.txt").read_text() == name

"""Python tasks queued ahead in a busy warm worker (``PythonRunner.ahead``, set by the local
executor): the worker starts the next task the moment its last one ends. A queued task
runs exactly once, in order, with the code on disk; one stuck behind a long task is taken
back (run elsewhere, or handed back to the engine to requeue); cancelling it leaves the
task before it running; a worker that dies takes only its running task with it."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from kale import Workflow
from kale.model.states import RunState
from kale.tasks.base import Outcome, Requeue, TaskContext
from kale.tasks.python import PythonRunner

STEPS = """\
import os, time

def hold(here, name):
    # says it started, then runs until the test lets it go (a file appears)
    open(os.path.join(here, "started-" + name), "w").close()
    while not os.path.exists(os.path.join(here, "go-" + name)):
        time.sleep(0.005)
    return os.getpid()

def mark(here, name):
    # fails if it ever runs twice
    os.close(os.open(os.path.join(here, "ran-" + name), os.O_CREAT | os.O_EXCL))
    return os.getpid()

def big(here, name, pad):
    return mark(here, name)

def die(here, name):
    hold(here, name)
    os._exit(3)

def value():
    return "before"
"""


def _steps(folder: Path) -> None:
    (folder / "steps.py").write_text(STEPS)


def _ctx(folder: Path, func: str, name: str, **more: Any) -> TaskContext:
    """An attempt of ``steps:func`` (``here`` and ``name`` given, but to ``value``)."""
    inputs = {} if func == "value" else {"here": str(folder), "name": name, **more}
    task = Workflow("ahead", base_dir=folder).python(f"steps:{func}", name=name)
    work = folder / "work" / name
    return TaskContext(run_id="r1", task=task, attempt=1, workdir=work,
                       stdout_path=work / "stdout", stderr_path=work / "stderr",
                       base_dir=folder, inputs=inputs)


async def _until(predicate: Any, what: str) -> None:
    """Yield to the loop until ``predicate()`` (a safety net of 120 s, not a timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def _runner(slots: int, rescue: float | None = None) -> PythonRunner:
    runner = PythonRunner(slots=slots)
    runner.ahead = True
    if rescue is not None:
        runner.RESCUE = rescue
    return runner


async def _started(runner: PythonRunner, folder: Path, func: str, name: str
                   ) -> asyncio.Task[Outcome]:
    """Start ``steps:func`` (``hold`` or ``die``) and return once it runs."""
    task = asyncio.ensure_future(runner.run(_ctx(folder, func, name)))
    await _until(lambda: (folder / f"started-{name}").exists(), f"{name} to start")
    return task


async def _queued_behind(runner: PythonRunner, run: Awaitable[Outcome]) -> asyncio.Task[Outcome]:
    """Start ``run`` and return once its job waits in a worker behind another."""
    task = asyncio.ensure_future(run)
    await _until(lambda: any(len(w.jobs) == 2 for w in runner._all), "the job to be queued")
    return task


def _go(folder: Path, name: str) -> None:
    (folder / f"go-{name}").touch()


def test_a_task_stuck_behind_a_long_one_with_no_free_worker_goes_back_to_the_engine(
        tmp_path: Path) -> None:
    _steps(tmp_path)

    async def main() -> None:
        runner = _runner(slots=1)
        long = await _started(runner, tmp_path, "hold", "long")
        with pytest.raises(Requeue):  # nothing else was free: the engine requeues it
            await runner.run(_ctx(tmp_path, "mark", "short"))
        assert not (tmp_path / "ran-short").exists()
        _go(tmp_path, "long")
        first = await long
        assert first.ok, first.error
        # the worker lives on, and runs the task that was handed back
        again = await runner.run(_ctx(tmp_path, "mark", "short"))
        assert again.ok, again.error
        assert again.result == first.result
        await runner.close()

    asyncio.run(main())


def test_a_task_with_big_inputs_never_waits_in_a_busy_worker(tmp_path: Path) -> None:
    # (it would wait in the worker's socket: one bigger than the socket's buffer would
    # block the engine's loop until the worker read it)
    _steps(tmp_path)

    async def main() -> None:
        runner = _runner(slots=1, rescue=3600)
        long = await _started(runner, tmp_path, "hold", "long")
        pad = "x" * (4 * runner.QUEUED_BYTES)
        with pytest.raises(Requeue, match="too big"):
            await runner.run(_ctx(tmp_path, "big", "big", pad=pad))
        assert [len(w.jobs) for w in runner._all] == [1]  # never sent
        _go(tmp_path, "long")
        assert (await long).ok
        again = await runner.run(_ctx(tmp_path, "big", "big", pad=pad))
        assert again.ok, again.error
        assert (tmp_path / "ran-big").exists()
        await runner.close()

    asyncio.run(main())


def test_cancelling_a_queued_task_leaves_the_task_before_it_running(tmp_path: Path) -> None:
    _steps(tmp_path)

    async def main() -> None:
        runner = _runner(slots=1, rescue=3600)
        long = await _started(runner, tmp_path, "hold", "long")
        queued = await _queued_behind(runner, runner.run(
            _ctx(tmp_path, "mark", "short")))
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        _go(tmp_path, "long")
        first = await long
        assert first.ok, first.error
        assert not (tmp_path / "ran-short").exists()  # taken back: it never ran
        after = await runner.run(_ctx(tmp_path, "mark", "after"))
        assert after.ok and after.result == first.result  # the same worker, not killed
        await runner.close()

    asyncio.run(main())


def test_a_task_queued_behind_one_whose_process_dies_runs_on_a_new_one(
        tmp_path: Path) -> None:
    _steps(tmp_path)

    async def main() -> None:
        runner = _runner(slots=1, rescue=3600)
        dying = await _started(runner, tmp_path, "die", "dying")
        queued = await _queued_behind(runner, runner.run(
            _ctx(tmp_path, "mark", "short")))
        _go(tmp_path, "dying")
        died, short = await asyncio.gather(dying, queued)
        assert not died.ok and died.exit_code == 3, died
        assert "exit code 3" in (died.error or "")
        assert short.ok, short.error  # it had not started: not reported as died
        assert (tmp_path / "ran-short").exists()
        assert short.result not in (None, os.getpid())
        await runner.close()

    asyncio.run(main())


def test_a_task_queued_behind_one_runs_the_code_edited_while_that_one_ran(
        tmp_path: Path) -> None:
    _steps(tmp_path)

    async def main() -> None:
        runner = _runner(slots=1, rescue=3600)
        long = await _started(runner, tmp_path, "hold", "long")
        queued = await _queued_behind(runner, runner.run(_ctx(tmp_path, "value", "value")))
        steps = tmp_path / "steps.py"
        steps.write_text(steps.read_text().replace('return "before"', 'return "after"'))
        _go(tmp_path, "long")
        first, value = await asyncio.gather(long, queued)
        assert first.ok, first.error
        assert value.ok and value.result == "after", value
        await runner.close()

    asyncio.run(main())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's")
def test_python_tasks_run_as_batch_work(home: Path, tmp_path: Path) -> None:
    def policy() -> int:
        import os

        return os.sched_getscheduler(0)

    wf = Workflow("batch", base_dir=tmp_path)
    wf.python(policy, name="policy")
    run = wf.run(jobs=1).wait()
    assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
    assert run.result("policy") == os.SCHED_BATCH


def test_a_long_task_never_holds_up_the_short_ones_queued_behind_it(
        home: Path, tmp_path: Path) -> None:
    # Through the engine: the long task ends only once every short one has run, so a
    # short one left waiting behind it (as the ones sent just after it often are: its
    # worker had just started it) would hang the run (the test's timeout); one run twice
    # fails the run. The runner tests above take the same path deterministically.
    n = 60
    (tmp_path / "steps.py").write_text(STEPS + textwrap.dedent(f"""
        def last(here):
            open(os.path.join(here, "started-last"), "w").close()
            while len([f for f in os.listdir(here) if f.startswith("ran-")]) < {n}:
                time.sleep(0.005)
            return "all ran"
        """))
    wf = Workflow("mixed", base_dir=tmp_path)
    for i in range(n):  # (the long one among them: short ones are queued behind it)
        if i == n // 2:
            wf.python("steps:last", name="last", parameters={"here": str(tmp_path)})
        wf.python("steps:mark", name=f"short{i}",
                  parameters={"here": str(tmp_path), "name": f"short{i}"})
    run = wf.run(jobs=2).wait()
    assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks if t.error]
    assert run.result("last") == "all ran"
    assert len(list(tmp_path.glob("ran-short*"))) == n

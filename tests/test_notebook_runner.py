"""NotebookRunner and KernelPool on real ipykernel kernels (no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kale.model.workflow import Task
from kale.tasks._notebook_params import INJECTED_TAG, inject, literal
from kale.tasks.base import Outcome, TaskContext
from kale.tasks.notebook import NotebookRunner
from kale.tasks.record import read_records

pytestmark = pytest.mark.timeout(60)


def write_nb(base: Path, *cells: str, params: str | None = None, name: str = "nb.ipynb",
             markdown: bool = False) -> Path:
    """A notebook of code cells; ``params`` becomes the cell tagged ``parameters``."""
    nb_cells = [new_markdown_cell("# Title")] if markdown else []
    if params is not None:
        nb_cells.append(new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb_cells += [new_code_cell(c) for c in cells]
    path = base / name
    nbformat.write(new_notebook(cells=nb_cells), path)
    return path


def make_ctx(tmp_path: Path, label: str = "nb", inputs: dict[str, Any] | None = None,
             kernel: str | None = None, target: str = "nb.ipynb",
             env: dict[str, str] | None = None) -> TaskContext:
    workdir = tmp_path / "runs" / label
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task(name="nb", kind="notebook", target=target, kernel=kernel)
    return TaskContext(
        run_id="t", task=task, attempt=1, workdir=workdir,
        stdout_path=tmp_path / f"{label}.out", stderr_path=tmp_path / f"{label}.err",
        base_dir=tmp_path, inputs=inputs or {},
        env={"KALE_RECORD_FILE": str(workdir / ".kale-records.pkl"), **(env or {})})


def with_runner(body: Callable[[NotebookRunner], Awaitable[Any]], slots: int = 1,
                pool_size: int | None = None) -> Any:
    async def main() -> Any:
        runner = NotebookRunner(slots=slots, pool_size=pool_size)
        await runner.start()
        try:
            return await body(runner)
        finally:
            await runner.close()

    return asyncio.run(main())


def kernel_gone(pid: int, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def kernel_children() -> set[int]:
    """pids of live ipykernel processes started by this test process."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if "ipykernel" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


# -- parameter injection (no kernel) ------------------------------------------------------

def test_inject_after_parameters_cell_and_map_user_indices(tmp_path: Path) -> None:
    nb = new_notebook(cells=[
        new_markdown_cell("# T"),
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("# Parameters\nx = 5", metadata={"tags": [INJECTED_TAG]}),  # stale
        new_code_cell("print(x)"),
    ])
    origin = inject(nb, {"x": 2, "when": dt.date(2024, 1, 2)}, tmp_path)
    assert origin == [0, 1, None, 3]
    injected = nb.cells[2]
    assert injected.metadata["tags"] == [INJECTED_TAG]
    assert "x = 2\n" in injected.source
    assert 'when = __import__("pickle").load(open(' in injected.source
    assert (tmp_path / ".kale-params" / "when.pkl").is_file()
    nbformat.validate(nb)

    top = new_notebook(cells=[new_code_cell("print(1)")])
    assert inject(top, {"y": [1, 2]}, tmp_path) == [None, 0]
    assert top.cells[0].source == "# Parameters\ny = [1, 2]\n"


def test_literal_rule() -> None:
    assert literal({"a": (1, 2.5), "b": {(1, 2)}}) == "{'a': (1, 2.5), 'b': {(1, 2)}}"
    assert literal(float("nan")) is None
    assert literal(dt.datetime(2024, 1, 1)) is None

    class Int(int):
        pass

    assert literal(Int(3)) is None  # reads back as a plain int: pickled instead


# -- running notebooks ---------------------------------------------------------------------

def test_parameters_records_logs_and_saved_notebook(tmp_path: Path) -> None:
    write_nb(tmp_path,
             "import kale, os\n"
             "print('sum is', x + y)\n"
             "kale.record('total', x + y)\n"
             "kale.record('cwd', os.getcwd())\n"
             "x * 10",
             params="x = 1\ny = 2", markdown=True)
    ctx = make_ctx(tmp_path, inputs={"x": 40})

    out: Outcome = with_runner(lambda r: r.run(ctx))
    assert out.ok, out
    assert out.exit_code == 0
    assert read_records(ctx.records_path) == {"total": 42, "cwd": str(ctx.workdir)}
    assert ctx.stdout_path.read_text() == "sum is 42\n"

    saved = Path(out.artifacts["notebook"])
    assert saved == ctx.workdir / "nb.ipynb"
    nb = nbformat.read(saved, as_version=4)
    assert [c.metadata.get("tags", []) for c in nb.cells] == [
        [], ["parameters"], [INJECTED_TAG], []]
    assert nb.cells[2].source == "# Parameters\nx = 40\n"
    outputs = nb.cells[3].outputs
    assert outputs[0]["text"] == "sum is 42\n"
    assert outputs[1]["data"]["text/plain"] == "400"
    assert nb.cells[3].execution_count == 3
    assert nb.metadata["language_info"]["name"] == "python"
    # the source notebook is untouched
    assert not nbformat.read(tmp_path / "nb.ipynb", as_version=4).cells[2].get("outputs")


def test_non_literal_parameters_round_trip(tmp_path: Path) -> None:
    when = dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.UTC)
    pairs = {(1, "a"), (2, "b")}
    write_nb(tmp_path, "import kale\nkale.record('when', when)\nkale.record('pairs', pairs)\n"
                       "kale.record('kind', type(when).__name__)",
             params="when = None\npairs = None")
    ctx = make_ctx(tmp_path, inputs={"when": when, "pairs": pairs})
    out: Outcome = with_runner(lambda r: r.run(ctx))
    assert out.ok, out
    assert read_records(ctx.records_path) == {"when": when, "pairs": pairs, "kind": "datetime"}


def test_failing_cell_reports_user_index_and_saves_notebook(tmp_path: Path) -> None:
    write_nb(tmp_path, "a = 1", "print('before')\nraise ValueError(f'bad value {x}')",
             "print('never')", params="x = 0")

    async def body(r: NotebookRunner) -> tuple[Outcome, Outcome, int | None, int | None]:
        pid1 = r.pool.kernels[0].pid
        failed = await r.run(make_ctx(tmp_path, "one", inputs={"x": 7}))
        ok = await r.run(make_ctx(tmp_path, "two", inputs={"x": 8}, target="ok.ipynb"))
        return failed, ok, pid1, r.pool.kernels[0].pid

    write_nb(tmp_path, "assert x == 8", params="x = 0", name="ok.ipynb")
    out, after, pid1, pid2 = with_runner(body)
    assert not out.ok
    assert out.exit_code == 1
    assert out.error == "cell 2: ValueError: bad value 7"
    assert out.details == {"cell_index": 2, "ename": "ValueError", "evalue": "bad value 7"}
    assert out.traceback is not None
    assert "ValueError: bad value 7" in out.traceback
    assert "raise ValueError" in out.traceback
    assert "\x1b[" not in out.traceback
    err_log = (tmp_path / "one.err").read_text()
    assert "ValueError: bad value 7" in err_log and "\x1b[" not in err_log
    assert (tmp_path / "one.out").read_text() == "before\n"

    nb = nbformat.read(out.artifacts["notebook"], as_version=4)
    failing = nb.cells[3]  # user cell 2, after the injected cell
    assert [o["output_type"] for o in failing.outputs] == ["stream", "error"]
    assert failing.outputs[1]["ename"] == "ValueError"
    assert nb.cells[4].outputs == []  # never ran

    assert after.ok, after  # the pool replaced the kernel after the failure
    assert pid1 != pid2


def test_stdout_streams_to_log_while_running(tmp_path: Path) -> None:
    write_nb(tmp_path,
             "import os, sys, time\n"
             "print('started', flush=True)\n"
             "print('to stderr', file=sys.stderr, flush=True)\n"
             "for _ in range(1000):\n"
             "    if os.path.exists('go'):\n"
             "        break\n"
             "    time.sleep(0.01)\n"
             "else:\n"
             "    raise RuntimeError('nobody said go')\n"
             "print('finished')")
    ctx = make_ctx(tmp_path)

    async def body(r: NotebookRunner) -> tuple[str, str, Outcome]:
        task = asyncio.ensure_future(r.run(ctx))
        deadline = time.monotonic() + 10
        # stdout and stderr arrive as separate messages: wait for both, while the cell
        # is still waiting for "go"
        while time.monotonic() < deadline and not (
                "started" in _read(ctx.stdout_path) and "stderr" in _read(ctx.stderr_path)):
            await asyncio.sleep(0.01)
        seen_out, seen_err = _read(ctx.stdout_path), _read(ctx.stderr_path)
        assert not task.done()
        (ctx.workdir / "go").touch()
        return seen_out, seen_err, await task

    seen_out, seen_err, out = with_runner(body)
    assert seen_out == "started\n"
    assert seen_err == "to stderr\n"
    assert out.ok, out
    assert ctx.stdout_path.read_text() == "started\nfinished\n"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_cancel_kills_kernel_promptly(tmp_path: Path) -> None:
    write_nb(tmp_path, "print('sleeping', flush=True)", "import time\ntime.sleep(30)",
             "print('woke up')")
    ctx = make_ctx(tmp_path)

    async def body(r: NotebookRunner) -> tuple[float, int, int | None]:
        (kernel,) = r.pool.kernels
        assert kernel.pid is not None
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.run(ctx), 1.0)
        elapsed = time.monotonic() - t0
        assert kernel_gone(kernel.pid, within=0.5)
        # the pool starts a replacement, which still works
        out = await r.run(make_ctx(tmp_path, "again", target="ok.ipynb"))
        assert out.ok, out
        return elapsed, kernel.pid, r.pool.kernels[0].pid

    write_nb(tmp_path, "1 + 1", name="ok.ipynb")
    elapsed, old_pid, new_pid = with_runner(body)
    assert elapsed < 2.0
    assert old_pid != new_pid
    # what ran before the cancel was saved
    nb = nbformat.read(ctx.workdir / "nb.ipynb", as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "sleeping\n"
    assert nb.cells[2].outputs == []
    assert "sleeping" in ctx.stdout_path.read_text()


def test_kernel_reuse_does_not_leak_state(tmp_path: Path) -> None:
    write_nb(tmp_path,
             "import os, sys\n"
             "secret = 42\n"
             "os.environ['KALE_TEST_LEAK'] = 'yes'\n"
             "sys.path.append('/leaked/path')\n"
             "import kale\nkale.record('pid', os.getpid())",
             name="one.ipynb")
    write_nb(tmp_path,
             "import os, sys\n"
             "import kale\n"
             "kale.record('pid', os.getpid())\n"
             "kale.record('has_secret', 'secret' in globals())\n"
             "kale.record('env', (os.environ.get('KALE_TEST_LEAK'), os.environ.get('MINE')))\n"
             "kale.record('leaked_path', '/leaked/path' in sys.path)\n"
             "kale.record('cwd', os.getcwd())\n"
             "kale.record('base_on_path', sys.path[0])",
             name="two.ipynb")
    ctx1 = make_ctx(tmp_path, "one", target="one.ipynb", env={"MINE": "1"})
    ctx2 = make_ctx(tmp_path, "two", target="two.ipynb")

    async def body(r: NotebookRunner) -> tuple[Outcome, Outcome]:
        return await r.run(ctx1), await r.run(ctx2)

    out1, out2 = with_runner(body)
    assert out1.ok and out2.ok, (out1, out2)
    rec1, rec2 = read_records(ctx1.records_path), read_records(ctx2.records_path)
    assert rec1["pid"] == rec2["pid"]  # the same kernel served both tasks
    assert rec2["has_secret"] is False
    assert rec2["env"] == (None, None)
    assert rec2["leaked_path"] is False
    assert rec2["cwd"] == str(ctx2.workdir)
    assert rec2["base_on_path"] == str(tmp_path)


def test_unknown_kernel_missing_notebook_bad_parameter(tmp_path: Path) -> None:
    write_nb(tmp_path, "1")

    async def body(r: NotebookRunner) -> tuple[Outcome, Outcome, Outcome]:
        assert r.pool.kernels == []  # pool_size=0: nothing pre-started
        return (await r.run(make_ctx(tmp_path, kernel="no-such-kernel")),
                await r.run(make_ctx(tmp_path, "missing", target="missing.ipynb")),
                await r.run(make_ctx(tmp_path, "bad", inputs={"my-name": 1})))

    unknown, missing, bad = with_runner(body, pool_size=0)
    assert not unknown.ok
    assert unknown.error is not None
    assert unknown.error.startswith("no such kernel: no-such-kernel (available: ")
    assert "python3" in unknown.error
    assert not missing.ok
    assert missing.error == f"notebook not found: {tmp_path / 'missing.ipynb'}"
    assert not bad.ok
    assert bad.error is not None and "'my-name' is not a Python identifier" in bad.error


def test_warm_pool_overhead_and_close_leaves_no_kernels(tmp_path: Path) -> None:
    write_nb(tmp_path, "y = x + 1", params="x = 0")

    async def body(r: NotebookRunner) -> tuple[list[float], list[int]]:
        pids = [k.pid for k in r.pool.kernels if k.pid]
        assert len(pids) == 2  # pool size defaults to slots
        times = []
        for i in range(10):
            t0 = time.perf_counter()
            out = await r.run(make_ctx(tmp_path, f"r{i}", inputs={"x": i}))
            times.append(time.perf_counter() - t0)
            assert out.ok, out
        pids += [k.pid for k in r.pool.kernels if k.pid]
        return times, pids

    before = kernel_children()
    times, pids = with_runner(body, slots=2)
    assert statistics.median(times) < 0.25, times
    for pid in set(pids):
        assert kernel_gone(pid, within=0.2), pid
    assert kernel_children() <= before  # other tests' kernels are not ours to judge


def test_concurrent_tasks_share_the_pool(tmp_path: Path) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())\nkale.record('x', x)",
             params="x = 0")
    ctxs = [make_ctx(tmp_path, f"c{i}", inputs={"x": i}) for i in range(6)]

    async def body(r: NotebookRunner) -> list[Outcome]:
        sem = asyncio.Semaphore(r.slots)

        async def one(c: TaskContext) -> Outcome:
            async with sem:
                return await r.run(c)

        return list(await asyncio.gather(*(one(c) for c in ctxs)))

    outs = with_runner(body, slots=2)
    assert all(o.ok for o in outs), outs
    recs = [read_records(c.records_path) for c in ctxs]
    assert [r["x"] for r in recs] == list(range(6))
    assert len({r["pid"] for r in recs}) == 2  # reused, not a kernel per task


def test_runner_is_registered() -> None:
    from kale.tasks.registry import runner_class

    assert runner_class("notebook") is NotebookRunner
    assert NotebookRunner.kind == "notebook"


def test_kernel_retired_after_max_uses_and_dead_kernel_reported(tmp_path: Path) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())")
    write_nb(tmp_path, "1", "import os\nos._exit(3)", name="dies.ipynb")
    ctxs = [make_ctx(tmp_path, f"u{i}") for i in range(8)]

    async def body(r: NotebookRunner) -> tuple[Outcome, int]:
        for c in ctxs:
            out = await r.run(c)
            assert out.ok, out
        died = await r.run(make_ctx(tmp_path, "dies", target="dies.ipynb"))
        return died, len(r.pool.kernels)

    async def main() -> tuple[Outcome, int]:
        runner = NotebookRunner(slots=1, max_uses=2)
        await runner.start()
        try:
            return await body(runner)
        finally:
            await runner.close()

    before = kernel_children()
    died, held = asyncio.run(main())
    pids = [read_records(c.records_path)["pid"] for c in ctxs]
    assert len(set(pids)) >= 2
    assert max(pids.count(p) for p in pids) <= 4  # at most twice max_uses
    assert held <= 2
    assert not died.ok
    assert died.error == "the kernel died while running cell 1"
    assert died.details == {"cell_index": 1}
    assert kernel_children() <= before

"""NotebookRunner and KernelPool on real ipykernel kernels (no mocks): papermill's
behaviour (a fresh kernel per notebook, the notebook's kernelspec, sys.exit, parameters
without a tagged cell), the opt-in kernel reuse and its limits, the user-code manifest."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import process_alive, wait_until
from kale.model.workflow import Task
from kale.tasks import usercode
from kale.tasks._notebook_params import INJECTED_TAG, inject, literal
from kale.tasks.base import Outcome, TaskContext
from kale.tasks.notebook import NotebookRunner
from kale.tasks.record import read_records

pytestmark = pytest.mark.timeout(60)


REUSE = {"KALE_KERNEL_REUSE": "1"}  # the opt-in, in a task's env


def write_nb(base: Path, *cells: str, params: str | None = None, name: str = "nb.ipynb",
             markdown: bool = False, kernelspec: str | None = None) -> Path:
    """A notebook of code cells; ``params`` becomes the cell tagged ``parameters``."""
    nb_cells = [new_markdown_cell("# Title")] if markdown else []
    if params is not None:
        nb_cells.append(new_code_cell(params, metadata={"tags": ["parameters"]}))
    nb_cells += [new_code_cell(c) for c in cells]
    nb = new_notebook(cells=nb_cells)
    if kernelspec is not None:
        nb.metadata["kernelspec"] = {"name": kernelspec, "display_name": kernelspec,
                                     "language": "python"}
    path = base / name
    nbformat.write(nb, path)
    return path


def make_ctx(tmp_path: Path, label: str = "nb", inputs: dict[str, Any] | None = None,
             kernel: str | None = None, target: str = "nb.ipynb",
             env: dict[str, str] | None = None, kind: str = "notebook",
             attempt: int = 1) -> TaskContext:
    workdir = tmp_path / "runs" / label
    workdir.mkdir(parents=True, exist_ok=True)
    task = Task(name="nb", kind=kind, target=target, kernel=kernel, env=dict(env or {}))  # type: ignore[arg-type]
    return TaskContext(
        run_id="t", task=task, attempt=attempt, workdir=workdir,
        stdout_path=tmp_path / f"{label}.out", stderr_path=tmp_path / f"{label}.err",
        base_dir=tmp_path, inputs=inputs or {},
        env={"KALE_RECORD_FILE": str(workdir / ".kale-records.pkl"), **(env or {})})


def with_runner(body: Callable[[NotebookRunner], Awaitable[Any]], slots: int = 1,
                pool_size: int | None = None, **options: Any) -> Any:
    async def main() -> Any:
        runner = NotebookRunner(slots=slots, pool_size=pool_size, **options)
        await runner.start()
        try:
            return await body(runner)
        finally:
            await runner.close()

    return asyncio.run(main())


def kernel_gone(pid: int, within: float = 60.0) -> bool:
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
    """pids of live kernel processes (and kernel factories) started by this test process."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            if ("ipykernel" in cmd or "forkserver" in cmd) \
                    and p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def run_each(tmp_path: Path, *ctxs: TaskContext, **options: Any) -> list[Outcome]:
    """Run tasks one after the other on one runner (one slot)."""

    async def body(r: NotebookRunner) -> list[Outcome]:
        return [await r.run(c) for c in ctxs]

    return list(with_runner(body, **options))


def records(ctx: TaskContext) -> dict[str, Any]:
    return read_records(ctx.records_path)


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


async def until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> None:
    """Await ``predicate()`` (a safety-net timeout, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_failing_cell_reports_user_index_and_saves_notebook(tmp_path: Path) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())",
             "print('before')\nraise ValueError(f'bad value {x}')", "print('never')",
             params="x = 0")
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())\nassert x == 8",
             params="x = 0", name="ok.ipynb")
    one = make_ctx(tmp_path, "one", inputs={"x": 7})
    two = make_ctx(tmp_path, "two", inputs={"x": 8}, target="ok.ipynb")
    out, after = run_each(tmp_path, one, two)
    assert not out.ok
    assert out.exit_code == 1
    assert out.error == "cell 2: ValueError: bad value 7"
    assert out.details == {"cell_index": 2, "ename": "ValueError", "evalue": "bad value 7"}
    assert out.code is None  # no manifest for a failed task: its result is not reused
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

    assert after.ok, after
    assert records(one)["pid"] != records(two)["pid"]


def test_stdout_streams_to_log_while_running(tmp_path: Path) -> None:
    write_nb(tmp_path,
             "import os, sys, time\n"
             "print('started', flush=True)\n"
             "print('to stderr', file=sys.stderr, flush=True)\n"
             "for _ in range(30000):\n"
             "    if os.path.exists('go'):\n"
             "        break\n"
             "    time.sleep(0.01)\n"
             "else:\n"
             "    raise RuntimeError('nobody said go')\n"
             "print('finished')")
    ctx = make_ctx(tmp_path)

    async def body(r: NotebookRunner) -> tuple[str, str, Outcome]:
        task = asyncio.ensure_future(r.run(ctx))
        deadline = time.monotonic() + 120
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




def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_cancel_kills_kernel_promptly_and_saves_what_ran(tmp_path: Path) -> None:
    write_nb(tmp_path, "import os\nprint('kernel', os.getpid(), flush=True)",
             "import time\ntime.sleep(60)", "print('woke up')")
    write_nb(tmp_path, "1 + 1", name="ok.ipynb")
    ctx = make_ctx(tmp_path)

    async def body(r: NotebookRunner) -> tuple[int, Outcome]:
        task = asyncio.ensure_future(r.run(ctx))
        await until(lambda: "kernel" in _read(ctx.stdout_path), "the first cell's output")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pid = int(_read(ctx.stdout_path).split()[1])
        return pid, await r.run(make_ctx(tmp_path, "again", target="ok.ipynb"))

    pid, again = with_runner(body)
    assert kernel_gone(pid)  # killed, not left sleeping
    assert again.ok, again  # the pool still serves
    nb = nbformat.read(ctx.workdir / "nb.ipynb", as_version=4)  # what ran is saved
    assert nb.cells[0].outputs[0]["text"].startswith("kernel ")
    assert nb.cells[2].outputs == []


# -- isolation: a fresh kernel per task (issue: notebook tasks leaked state) ---------------

# The monkey-patch is of a function the kernel itself never calls: a patched ``json.dumps``
# (as this test had) breaks the kernel's own messages wherever jupyter_client serializes
# them with the json module (when orjson is not installed), so the patching task fails
# before isolation can be checked; that is the notebook breaking its own kernel, as it would
# under papermill.
LEAK = (
    "import decimal, logging, os, statistics, sys, warnings, kale\n"
    "kale.record('pid', os.getpid())\n"
    "logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))\n"
    "logging.getLogger().setLevel(logging.DEBUG)\n"
    "warnings.simplefilter('error')\n"
    "decimal.getcontext().prec = 5\n"
    "statistics.mean = lambda *a, **k: 'patched'\n"
    "sys.modules['leaked_module'] = type(sys)('leaked_module')\n"
    "secret = 42")
CHECK = (
    "import decimal, logging, os, statistics, sys, warnings, kale\n"
    "kale.record('pid', os.getpid())\n"
    "kale.record('state', {\n"
    "    'root_level': logging.getLogger().level,\n"
    "    'root_handlers': len(logging.getLogger().handlers),\n"
    "    'error_filter': any(f[0] == 'error' and f[2] is Warning for f in warnings.filters),\n"
    "    'prec': decimal.getcontext().prec,\n"
    "    'mean': statistics.mean([1, 3]),\n"
    "    'leaked_module': 'leaked_module' in sys.modules,\n"
    "    'secret': 'secret' in globals()})")


def test_a_notebook_task_never_sees_what_another_one_changed(tmp_path: Path) -> None:
    """logging, warnings filters, the decimal context, monkey-patches and modules set by
    notebook A do not change what notebook B sees: each runs on a fresh kernel."""
    write_nb(tmp_path, LEAK, name="leak.ipynb")
    write_nb(tmp_path, CHECK, name="check.ipynb")
    clean = make_ctx(tmp_path, "clean", target="check.ipynb")
    leak = make_ctx(tmp_path, "leak", target="leak.ipynb")
    after = make_ctx(tmp_path, "after", target="check.ipynb")
    outs = run_each(tmp_path, clean, leak, after)
    assert all(o.ok for o in outs), outs
    assert records(after)["state"] == records(clean)["state"]
    assert records(after)["state"]["prec"] == 28
    assert records(after)["state"]["mean"] == 2
    assert len({records(c)["pid"] for c in (clean, leak, after)}) == 3


def test_kernels_are_started_ahead_and_each_serves_one_task(tmp_path: Path) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())")
    ctxs = [make_ctx(tmp_path, f"r{i}") for i in range(4)]

    async def body(r: NotebookRunner) -> tuple[set[int], list[int], set[int]]:
        ahead = {k.pid for k in r.pool.kernels if k.pid}
        assert len(ahead) == r.pool.ahead == 2  # started before any task asked
        used = []
        for c in ctxs:
            out = await r.run(c)
            assert out.ok, out
            used.append(records(c)["pid"])
            await until(lambda: not process_alive(used[-1]), "the used kernel to end")
        await until(lambda: r.pool.idle() == (2, 0), "the pool to be topped up")
        return ahead, used, {k.pid for k in r.pool.kernels if k.pid}

    before = kernel_children()
    ahead, used, later = with_runner(body, slots=1)
    assert len(set(used)) == 4  # a kernel per task...
    assert set(used[:2]) == ahead  # ...the ones started ahead of demand first
    assert not later & set(used)  # and none used twice
    assert kernel_children() <= before  # close leaves no kernel and no factory


def test_concurrent_tasks_each_get_their_own_kernel(tmp_path: Path) -> None:
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
    recs = [records(c) for c in ctxs]
    assert [r["x"] for r in recs] == list(range(6))
    assert len({r["pid"] for r in recs}) == 6


# Modules the way a kernel is started loads, not the kernel: ``python -m ipykernel_launcher``
# imports runpy to run the launcher; a forked kernel comes from a factory run with ``-c``.
# (IPython < 9 imported runpy itself, so both had it.) runpy has no state a notebook sees.
LAUNCHER_MODULES = ("runpy",)
FACTS = (
    "import logging, os, random, signal, sys, warnings, kale\n"
    "kale.record('facts', {\n"
    "    'argv0': os.path.basename(sys.argv[0]), 'argv': sys.argv[1:2],\n"
    "    'path0': sys.path[0], 'main': sys.modules['__main__'].__name__,\n"
    "    'modules': sorted(m for m in sys.modules if not m.startswith(('kale', '_kale'))\n"
    f"                      and m not in {LAUNCHER_MODULES!r}),\n"
    "    'filters': [(f[0], str(f[2])) for f in warnings.filters],\n"
    "    'root': (logging.getLogger().level, len(logging.getLogger().handlers)),\n"
    "    'sigint': str(signal.getsignal(signal.SIGINT)),\n"
    "    'parent_env': os.environ.get('JPY_PARENT_PID') is not None})\n"
    "kale.record('random', random.random())")


def test_a_forked_kernel_is_as_fresh_as_a_launched_one(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels forked from the factory (the default) start in the same state as kernels
    jupyter_client launches (KALE_KERNEL_FORK=0): same modules, warnings filters, logging,
    signal handlers; and no two of them share their random state."""
    write_nb(tmp_path, FACTS)
    forked = [make_ctx(tmp_path, f"f{i}") for i in range(2)]
    assert all(o.ok for o in run_each(tmp_path, *forked))
    monkeypatch.setenv("KALE_KERNEL_FORK", "0")
    launched = make_ctx(tmp_path, "launched")
    (out,) = run_each(tmp_path, launched)
    assert out.ok, out
    assert records(forked[0])["facts"] == records(launched)["facts"]
    assert records(forked[1])["facts"] == records(launched)["facts"]
    assert records(forked[0])["random"] != records(forked[1])["random"]


# -- reuse: the opt-in -----------------------------------------------------------------------

def test_reuse_opt_in_shares_a_kernel_but_not_variables(tmp_path: Path) -> None:
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
    ctx1 = make_ctx(tmp_path, "one", target="one.ipynb", env={"MINE": "1", **REUSE})
    ctx2 = make_ctx(tmp_path, "two", target="two.ipynb", env=REUSE)
    out1, out2 = run_each(tmp_path, ctx1, ctx2)
    assert out1.ok and out2.ok, (out1, out2)
    rec1, rec2 = records(ctx1), records(ctx2)
    assert rec1["pid"] == rec2["pid"]  # the same kernel served both tasks
    assert rec2["has_secret"] is False
    assert rec2["env"] == (None, None)
    assert rec2["leaked_path"] is False
    assert rec2["cwd"] == str(ctx2.workdir)
    assert rec2["base_on_path"] == str(tmp_path)


def test_reuse_keeps_module_state_the_documented_trade_off(tmp_path: Path) -> None:
    write_nb(tmp_path, LEAK, name="leak.ipynb")
    write_nb(tmp_path, CHECK, name="check.ipynb")
    leak = make_ctx(tmp_path, "leak", target="leak.ipynb", env=REUSE)
    after = make_ctx(tmp_path, "after", target="check.ipynb", env=REUSE)
    fresh = make_ctx(tmp_path, "fresh", target="check.ipynb")  # did not opt in
    outs = run_each(tmp_path, leak, after, fresh)
    assert all(o.ok for o in outs), outs
    assert records(after)["pid"] == records(leak)["pid"]
    state = records(after)["state"]
    assert state["prec"] == 5 and state["mean"] == "patched" and state["leaked_module"]
    assert state["error_filter"] and state["root_handlers"] > records(fresh)["state"][
        "root_handlers"]
    assert state["secret"] is False  # variables never leak
    # a task that did not opt in never gets a used kernel
    assert records(fresh)["pid"] != records(leak)["pid"]
    assert records(fresh)["state"]["prec"] == 28


def test_reuse_as_a_runner_setting_and_bad_values(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())")
    monkeypatch.setenv("KALE_KERNEL_REUSE", "yes")  # the worker's (this process's) setting
    a, b = make_ctx(tmp_path, "a"), make_ctx(tmp_path, "b")
    no = make_ctx(tmp_path, "no", env={"KALE_KERNEL_REUSE": "0"})  # a task may say no
    bad = make_ctx(tmp_path, "bad", env={"KALE_KERNEL_REUSE": "maybe"})
    outs = run_each(tmp_path, a, b, no, bad)
    assert all(o.ok for o in outs[:3]), outs
    assert records(a)["pid"] == records(b)["pid"]
    assert records(no)["pid"] != records(a)["pid"]
    assert not outs[3].ok
    assert outs[3].error == ("KALE_KERNEL_REUSE='maybe' in the task's env: use 1 to reuse "
                             "kernels between tasks or 0 for a fresh kernel per task")
    monkeypatch.setenv("KALE_KERNEL_REUSE", "sometimes")
    (worker_bad,) = run_each(tmp_path, make_ctx(tmp_path, "w"))
    assert not worker_bad.ok
    assert worker_bad.error is not None and "in the environment Kale runs in" in worker_bad.error


def helper_module(base: Path, value: int) -> Path:
    path = base / "helper.py"
    path.write_text(f"import os\nVALUE = {value}\n\ndef value():\n"
                    "    return {'value': VALUE, 'pid': os.getpid()}\n")
    return path


def test_a_reused_kernel_never_runs_code_older_than_the_disk(tmp_path: Path) -> None:
    """Reuse opted in: a kernel whose user modules changed on disk is discarded, for
    notebook tasks and for Python tasks run in a kernel alike."""
    write_nb(tmp_path, "import helper, kale\nkale.record('got', helper.value())")
    nb = [make_ctx(tmp_path, f"nb{i}", env=REUSE) for i in range(3)]
    py = [make_ctx(tmp_path, f"py{i}", kind="python", target="helper:value",
                   kernel="python3", env=REUSE) for i in range(3)]

    async def body(r: NotebookRunner) -> list[Outcome]:
        outs = []
        for ctxs, edited in ((nb, 22), (py, 333)):
            helper_module(tmp_path, 1)
            for i, c in enumerate(ctxs):
                if i == 2:
                    helper_module(tmp_path, edited)
                outs.append(await r.run(c))
        return outs

    outs = with_runner(body)
    assert all(o.ok for o in outs), outs
    by_kind = {22: [records(c)["got"] for c in nb], 333: [o.result for o in outs[3:]]}
    for edited, got in by_kind.items():
        assert [g["value"] for g in got] == [1, 1, edited]
        assert got[0]["pid"] == got[1]["pid"]  # reused while its code is unchanged
        assert got[2]["pid"] != got[1]["pid"]  # then discarded


def test_the_outcome_names_the_user_code_the_task_ran(tmp_path: Path) -> None:
    helper = os.path.realpath(helper_module(tmp_path, 1))
    write_nb(tmp_path, "import helper, kale\nkale.record('got', helper.value())")
    nb_ctx = make_ctx(tmp_path, "nb")
    py_ctx = make_ctx(tmp_path, "py", kind="python", target="helper:value", kernel="python3")
    plain = make_ctx(tmp_path, "plain", target="plain.ipynb")
    write_nb(tmp_path, "import json\njson.dumps([1])", name="plain.ipynb")
    outs = run_each(tmp_path, nb_ctx, py_ctx, plain)
    assert all(o.ok for o in outs), outs
    want = {helper: usercode.file_hash(helper)}
    # a notebook task's own notebook, as it ran, is part of its code (edited after its
    # run was made, the result is of what ran)
    for ctx, out in ((nb_ctx, outs[0]), (plain, outs[2])):
        notebook = str(tmp_path / str(ctx.task.target))
        assert (out.code or {}).pop(notebook) == usercode.file_hash(notebook)
    assert outs[0].code == want
    assert outs[1].code == want
    assert outs[2].code == {}  # no user module: an empty manifest, not an unknown one


# -- the notebook's kernelspec ---------------------------------------------------------------

def test_the_notebooks_kernelspec_decides_unless_the_task_names_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "jupyter" / "kernels" / "kale-test-spec"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Kale test", "language": "python",
        "env": {"KALE_SPEC_MARK": "from-spec"}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    mark = "import os, kale\nkale.record('mark', os.environ.get('KALE_SPEC_MARK'))"
    write_nb(tmp_path, mark, kernelspec="kale-test-spec", name="spec.ipynb")
    write_nb(tmp_path, mark, kernelspec="r", name="r.ipynb")
    on_spec = make_ctx(tmp_path, "spec", target="spec.ipynb")
    on_r = make_ctx(tmp_path, "r", target="r.ipynb")
    told = make_ctx(tmp_path, "told", target="r.ipynb", kernel="kale-test-spec")
    default = make_ctx(tmp_path, "default", target="spec.ipynb", kernel="python3")
    outs = run_each(tmp_path, on_spec, on_r, told, default)
    assert outs[0].ok, outs[0]
    assert records(on_spec)["mark"] == "from-spec"
    assert not outs[1].ok
    assert outs[1].error is not None
    assert outs[1].error.startswith(
        "no such kernel: r (the notebook's kernelspec; installed: ")
    assert "kale-test-spec" in outs[1].error and "python3" in outs[1].error
    assert outs[1].error.endswith("; name an installed kernel with the task's kernel: setting")
    assert not on_r.records_path.exists()  # nothing ran
    assert outs[2].ok and records(told)["mark"] == "from-spec"
    assert outs[3].ok and records(default)["mark"] is None


def test_kernel_for_is_what_validation_calls(tmp_path: Path) -> None:
    from kale.model.kernels import UnknownKernel
    from kale.tasks.kernels import kernel_for

    write_nb(tmp_path, "1", kernelspec="python3", name="py.ipynb")
    write_nb(tmp_path, "1", kernelspec="r", name="r.ipynb")
    write_nb(tmp_path, "1", name="none.ipynb")
    assert kernel_for(tmp_path / "py.ipynb") == "python3"
    assert kernel_for(tmp_path / "none.ipynb") == "python3"
    assert kernel_for(str(tmp_path / "r.ipynb"), "python3") == "python3"
    assert kernel_for(tmp_path / "missing.ipynb") == "python3"
    with pytest.raises(UnknownKernel) as e:
        kernel_for(tmp_path / "r.ipynb")
    assert str(e.value).startswith("no such kernel: r (the notebook's kernelspec; installed: ")
    assert e.value.name == "r" and "python3" in e.value.available
    with pytest.raises(UnknownKernel, match=r"^no such kernel: julia \(the task's kernel; "):
        kernel_for(tmp_path / "py.ipynb", "julia")


# -- sys.exit, parameters without a tagged cell, what a stopped task leaves ------------------

def test_sys_exit_stops_the_notebook_cleanly_as_in_papermill(tmp_path: Path) -> None:
    stops = {"exit": ("sys.exit()", None), "exit0": ("sys.exit(0)", None),
             "raise": ("raise SystemExit", None), "exit1": ("sys.exit(1)", "1"),
             "text": ("sys.exit('bye')", "bye")}
    ctxs = []
    for label, (stop, _) in stops.items():
        write_nb(tmp_path, "import sys, kale\nkale.record('before', 1)", stop,
                 "kale.record('after', 1)", name=f"{label}.ipynb")
        ctxs.append(make_ctx(tmp_path, label, target=f"{label}.ipynb"))
    outs = run_each(tmp_path, *ctxs)
    for ctx, out, (stop, failure) in zip(ctxs, outs, stops.values(), strict=True):
        assert records(ctx) == {"before": 1}, stop  # later cells did not run
        nb = nbformat.read(out.artifacts["notebook"], as_version=4)
        assert [o.get("ename") for o in nb.cells[1].outputs if o.get("ename")] \
            == ["SystemExit"]
        assert nb.cells[2].execution_count is None
        if failure is None:
            assert out.ok, (stop, out)
            assert "the notebook stops there and succeeds" in ctx.stderr_path.read_text()
        else:
            assert not out.ok, stop
            assert out.error == f"cell 1: SystemExit: {failure}"


def test_parameters_without_a_tagged_cell_go_on_top_and_the_log_says_so(
        tmp_path: Path) -> None:
    write_nb(tmp_path, "import kale\nkale.record('msg', msg)")
    ctx = make_ctx(tmp_path, inputs={"msg": "Hello", "n": 3})
    (out,) = run_each(tmp_path, ctx)
    assert out.ok, out
    assert records(ctx) == {"msg": "Hello"}
    assert ctx.stderr_path.read_text() == (
        "kale: nb.ipynb has no cell tagged 'parameters': its parameters (msg, n) were "
        "injected at the top, as papermill does\n")
    nb = nbformat.read(out.artifacts["notebook"], as_version=4)
    assert nb.cells[0].metadata["tags"] == [INJECTED_TAG]


def test_a_stopped_notebook_is_left_behind_for_the_record(tmp_path: Path) -> None:
    """A timeout or cancel ends the attempt without an outcome; the executed notebook is
    saved, and left_behind(ctx) (what the engine records for such an attempt) lists it."""
    from kale.tasks.notebook import left_behind

    write_nb(tmp_path, "print('started', flush=True)", "import time\ntime.sleep(60)")
    ctx = make_ctx(tmp_path)

    async def body(r: NotebookRunner) -> None:
        task = asyncio.ensure_future(r.run(ctx))
        await until(lambda: "started" in _read(ctx.stdout_path), "the first cell's output")
        task.cancel()  # what the engine's timeout does (asyncio.wait_for), and a cancel
        with pytest.raises(asyncio.CancelledError):
            await task

    with_runner(body)
    saved = ctx.workdir / "nb.ipynb"
    assert left_behind(ctx) == {"notebook": str(saved)}
    assert nbformat.read(saved, as_version=4).cells[0].outputs[0]["text"] == "started\n"
    assert left_behind(make_ctx(tmp_path, attempt=2)) == {}  # attempt 1's, not 2's
    assert left_behind(make_ctx(tmp_path, "elsewhere")) == {}  # none saved there


def test_a_cancelled_notebook_task_lists_its_notebook(tmp_path: Path, home: Path) -> None:
    from kale import Workflow

    write_nb(tmp_path, "print('started', flush=True)", "import time\ntime.sleep(300)")
    wf = Workflow("stopped", base_dir=tmp_path)
    wf.notebook("slow", "nb.ipynb")
    run = wf.run()
    try:
        wait_until(lambda: "started" in run["slow"].logs(), what="the first cell's output")
    finally:
        run.cancel()
    run.wait(timeout=120)
    record = run["slow"].record
    assert record.state.value == "CANCELLED"
    assert record.artifacts == {"notebook": str(run.run_dir / "slow" / "nb.ipynb")}


def test_a_timed_out_notebook_task_lists_its_notebook(tmp_path: Path, home: Path) -> None:
    from kale import Workflow

    # the first cell waits for the gate the test never opens: the timeout ends it
    gate = tmp_path / "never"
    write_nb(tmp_path, "print('started', flush=True)",
             f"import os, time\nwhile not os.path.exists({str(gate)!r}):\n    time.sleep(0.05)")
    wf = Workflow("timed-out", base_dir=tmp_path)
    wf.notebook("slow", "nb.ipynb", timeout=30)
    run = wf.run().wait(timeout=180)
    record = run["slow"].record
    assert record.state.value == "TIMEOUT"
    saved = run.run_dir / "slow" / "nb.ipynb"
    assert record.artifacts == {"notebook": str(saved)}
    assert saved.is_file()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workflows_on_a_manager_do_not_leak_into_each_other(
        kale: Any, home: Path, tmp_path: Path, managers: Callable[..., Any]) -> None:
    from kale import Workflow

    write_nb(tmp_path, LEAK, name="leak.ipynb")
    write_nb(tmp_path, CHECK, name="check.ipynb")
    m = managers("--workers", "1")
    with m.client() as client:
        first = Workflow("first", base_dir=tmp_path)
        first.notebook("leak", "leak.ipynb")
        assert client.submit(first).wait(timeout=120).state.value == "SUCCEEDED"
        second = Workflow("second", base_dir=tmp_path)
        second.notebook("check", "check.ipynb")
        run = client.submit(second).wait(timeout=120)
        assert run.state.value == "SUCCEEDED"
        state = run.result("check")["state"]
    assert state["prec"] == 28
    assert state["mean"] == 2
    assert not state["leaked_module"] and not state["error_filter"]


# -- errors and the pool -------------------------------------------------------------------

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
    assert unknown.error.startswith(
        "no such kernel: no-such-kernel (the task's kernel; installed: ")
    assert "python3" in unknown.error
    assert not missing.ok
    assert missing.error == f"notebook not found: {tmp_path / 'missing.ipynb'}"
    assert not bad.ok
    assert bad.error is not None and "'my-name' is not a Python identifier" in bad.error


def test_runner_is_registered() -> None:
    from kale.tasks.registry import runner_class

    assert runner_class("notebook") is NotebookRunner
    assert NotebookRunner.kind == "notebook"


def test_reused_kernels_retire_after_max_uses_and_a_dead_kernel_is_reported(
        tmp_path: Path) -> None:
    write_nb(tmp_path, "import os, kale\nkale.record('pid', os.getpid())")
    write_nb(tmp_path, "1", "import os\nos._exit(3)", name="dies.ipynb")
    ctxs = [make_ctx(tmp_path, f"u{i}", env=REUSE) for i in range(6)]

    async def body(r: NotebookRunner) -> Outcome:
        for c in ctxs:
            out = await r.run(c)
            assert out.ok, out
        return await r.run(make_ctx(tmp_path, "dies", target="dies.ipynb"))

    before = kernel_children()
    died = with_runner(body, max_uses=2)
    pids = [records(c)["pid"] for c in ctxs]
    assert max(pids.count(p) for p in pids) == 2  # each served max_uses tasks
    assert len(set(pids)) == 3
    assert not died.ok
    assert died.error == "the kernel died while running cell 1"
    assert died.details == {"cell_index": 1}
    assert kernel_children() <= before

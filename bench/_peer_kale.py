"""Kale's local engine: ``python bench/_peer_kale.py SCENARIO --n N [--repeat R]``.

Every run gets a fresh Kale home, so no result is ever reused from an earlier run. The
first-task latency is a separate one-task run (submit to done), the process's first, so it
includes starting a Python worker; the timed runs start on the workers an earlier run of
the process left warm (``kale.tasks.warm``, as a notebook's second run does; the first
timed run starts its second worker), as Parsl's and Dask's timed runs use the workers
they started once.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import CpuMeter, main, parse_args, remove, result

# `--home-on DIR` puts the Kale homes (store and run directories) on another filesystem.
_ON = sys.argv[sys.argv.index("--home-on") + 1] if "--home-on" in sys.argv else None
HOMES = Path(tempfile.mkdtemp(prefix="kale-bench-", dir=_ON))
os.environ["KALE_HOME"] = str(HOMES / "default")

from kale import Workflow  # noqa: E402 - after KALE_HOME is set
from noops import noop  # noqa: E402

BENCH = Path(__file__).resolve().parent
JOBS = 2


def _home() -> str:
    return tempfile.mkdtemp(dir=HOMES)


def in_run(run: Any) -> float:
    """First task start to last task end: the run without its setup, worker start-up and
    teardown."""
    tasks = run.tasks
    return float(max(t.ended_at for t in tasks) - min(t.started_at for t in tasks))


def run_once(wf: Workflow) -> tuple[float, Any]:
    """Submit ``wf`` in a fresh home and wait; seconds from submit to all done."""
    home = _home()
    t0 = time.perf_counter()
    run = wf.run(jobs=JOBS, home=home).wait()
    elapsed = time.perf_counter() - t0
    if run.state.value != "SUCCEEDED":
        bad = [t for t in run.tasks if t.state.value != "SUCCEEDED"][:1]
        why = f"{bad[0].name}: {bad[0].state.value} {bad[0].error or bad[0].reason}" if bad else ""
        raise RuntimeError(f"run {run.state.value} {why}")
    return elapsed, run


def python_wf(n: int) -> Workflow:
    wf = Workflow("bench-python", base_dir=BENCH)
    for i in range(n):
        wf.python(noop, name=f"t{i}")
    return wf


def shell_wf(n: int) -> Workflow:
    wf = Workflow("bench-shell", base_dir=BENCH)
    for i in range(n):
        wf.shell(f"s{i}", ["true"])
    return wf


def chain_wf(n: int) -> Workflow:
    wf = Workflow("bench-chain", base_dir=BENCH)
    for i in range(n):
        wf.python(noop, name=f"c{i}", after=[f"c{i - 1}"] if i else [])
    return wf


def repeated(build: Any, n: int, repeat: int) -> dict[str, Any]:
    first, _ = run_once(build(1))
    t0 = time.perf_counter()
    wf = build(n)
    build_s = time.perf_counter() - t0
    with CpuMeter() as cpu:
        runs = [run_once(wf) for _ in range(repeat)]
    return result([t for t, _ in runs], first_task=first, build=build_s,
                  in_run=statistics.median([in_run(r) for _, r in runs]),
                  **cpu.report(repeat, n))


def notebook(n: int) -> dict[str, Any]:
    if importlib.util.find_spec("kale.tasks.notebook") is None:
        return {"skipped": "kale.tasks.notebook is not available yet"}
    from _notebook import make_notebook

    folder = Path(tempfile.mkdtemp(dir=HOMES))
    make_notebook(folder / "nb.ipynb")

    def build(count: int) -> Workflow:
        wf = Workflow("bench-notebook", base_dir=folder)
        for i in range(count):
            wf.notebook(f"nb{i}", "nb.ipynb", parameters={"x": i})
        return wf

    first, _ = run_once(build(1))
    total, run = run_once(build(n))
    per_task = [t.ended_at - t.started_at for t in run.tasks]
    return result([total], first_task=first, per_task_median=statistics.median(per_task),
                  per_task_max=max(per_task), in_run=in_run(run))


def run() -> dict[str, Any]:
    args = parse_args(["python", "shell", "chain", "notebook"],
                      ("--home-on", {"default": None, "help": "folder for the Kale homes"}))
    try:
        if args.scenario == "notebook":
            return notebook(args.n)
        build = {"python": python_wf, "shell": shell_wf, "chain": chain_wf}[args.scenario]
        return repeated(build, args.n, args.repeat)
    finally:
        remove(HOMES)


if __name__ == "__main__":
    main(run)


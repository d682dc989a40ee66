"""Notebook tasks per second: a fresh kernel per task (Kale's default) against papermill,
and against Kale's opt-in kernel reuse, side by side in one run.

    python bench/notebooks.py            # full sizes -> bench/results/notebooks.md
    python bench/notebooks.py --quick    # small sizes (CI smoke, about a minute)

Every row runs in a fresh process of its own, one after the other, on the trivial 2-cell
notebook of ``_notebook.py`` (a ``parameters`` cell, then ``y = x + 1``), each task with
its own parameter value.

``kale-fresh``    ``Workflow.run(jobs=2)`` (embedded engine, 2 slots) of N independent
                  notebook tasks, the default: every task on a kernel no task used before,
                  started ahead of demand. Timed from ``run()`` to all done, the pool's
                  start-up included (a new run starts its own kernels).
``kale-fresh-launched``  the same with ``KALE_KERNEL_FORK=0``: kernels launched by
                  jupyter_client (a new interpreter each) instead of forked from the factory.
``kale-reuse``    the same with ``KALE_KERNEL_REUSE=1`` in every task's env: kernels are
                  reset and reused between tasks (the opt-in; module state may leak).
``kale-manager``  the same N tasks submitted to ``kale manager start --workers 2`` (two
                  local workers, one slot each, fresh kernels), after one warm-up run.
``papermill``     ``papermill.execute_notebook`` called N times in a row in one process
                  (each call starts, uses and shuts down its own kernel), after one
                  warm-up call: papermill has no parallelism of its own, and this is how
                  it is used from a script.

CPU is what the row's process and all its children (kernels included) used, per notebook.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MARKER, emit
from _manager import reap
from environment import describe, load_average

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PEERS = ("kale-fresh", "kale-fresh-launched", "kale-reuse", "kale-manager", "papermill")
TARGET = 5.0  # fresh-kernel notebooks/s at least 5x papermill's, with 2 slots


def cpu() -> float:
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def workflow(folder: Path, n: int, offset: int, reuse: bool) -> Any:
    from kale import Workflow

    wf = Workflow("bench-notebooks", base_dir=folder)
    env = {"KALE_KERNEL_REUSE": "1"} if reuse else {}
    for i in range(n):
        wf.notebook(f"nb{i}", "nb.ipynb", parameters={"x": offset + i}, env=env)
    return wf


def check(run: Any) -> None:
    if run.state.value != "SUCCEEDED":
        bad = [t for t in run.tasks if t.state.value != "SUCCEEDED"][:1]
        why = f": {bad[0].name} {bad[0].state.value} {bad[0].error}" if bad else ""
        raise RuntimeError(f"run {run.state.value}{why}")


def peer_kale(folder: Path, n: int, repeat: int, reuse: bool) -> dict[str, Any]:
    times, in_run = [], []
    t0 = time.perf_counter()
    check(workflow(folder, 1, -1, reuse).run(jobs=2).wait())
    first = time.perf_counter() - t0
    c0 = cpu()
    for r in range(repeat):
        wf = workflow(folder, n, r * n, reuse)  # new parameters: nothing is reused
        t0 = time.perf_counter()
        run = wf.run(jobs=2).wait()
        times.append(time.perf_counter() - t0)
        check(run)
        in_run.append(max(t.ended_at for t in run.tasks) - min(t.started_at
                                                               for t in run.tasks))
    return {"times": times, "n": n, "first": first, "in_run": statistics.median(in_run),
            "cpu_per_task": (cpu() - c0) / (n * repeat)}


def peer_manager(folder: Path, home: Path, n: int, repeat: int) -> dict[str, Any]:
    from kale import Client
    from kale.manager import service

    home.mkdir(parents=True, exist_ok=True)
    service.start(home, workers=2, worker_slots=1)
    try:
        with Client(home=home) as client:
            def timed(wf: Any) -> float:
                t0 = time.perf_counter()
                run = client.submit(wf).wait(timeout=600)
                took = time.perf_counter() - t0
                if run.state.value != "SUCCEEDED":
                    bad = [t for t in client.status(run.id)["tasks"]
                           if t["state"] != "SUCCEEDED"][:1]
                    why = f": {bad[0]['name']} {bad[0]['state']} {bad[0]['error']}" \
                        if bad else ""
                    raise RuntimeError(f"manager run {run.id} {run.state.value}{why}")
                return took

            first = timed(workflow(folder, 1, -1, False))
            timed(workflow(folder, n, -1000 - n, False))  # warm-up: workers and kernels
            times = [timed(workflow(folder, n, r * n, False)) for r in range(repeat)]
    finally:
        service.stop(home)
    return {"times": times, "n": n, "first": first, "cpu_per_task": None}


def peer_papermill(folder: Path, n: int) -> dict[str, Any]:
    import papermill

    def one(i: int) -> None:
        papermill.execute_notebook(str(folder / "nb.ipynb"), str(folder / f"out{i}.ipynb"),
                                   parameters={"x": i}, kernel_name="python3",
                                   progress_bar=False, log_output=False)

    t0 = time.perf_counter()
    one(-1)  # its imports and first kernel: reported apart, as Kale's first run is
    first = time.perf_counter() - t0
    c0 = cpu()
    each = []
    t0 = time.perf_counter()
    for i in range(n):
        t1 = time.perf_counter()
        one(i)
        each.append(time.perf_counter() - t1)
    total = time.perf_counter() - t0
    return {"times": [total], "n": n, "first": first,
            "per_task_median": statistics.median(each), "cpu_per_task": (cpu() - c0) / n}


def run_peer(args: argparse.Namespace) -> None:
    from _notebook import make_notebook

    root = Path(args.root)
    folder = Path(tempfile.mkdtemp(dir=root, prefix=f"{args.peer}-"))
    make_notebook(folder / "nb.ipynb")
    os.environ["KALE_HOME"] = str(folder / "home")
    os.environ.pop("KALE_KERNEL_REUSE", None)
    os.environ["KALE_KERNEL_FORK"] = "0" if args.peer == "kale-fresh-launched" else "1"
    try:
        if args.peer == "papermill":
            doc = peer_papermill(folder, args.n)
        elif args.peer == "kale-manager":
            doc = peer_manager(folder, folder / "home", args.n, args.repeat)
        else:
            doc = peer_kale(folder, args.n, args.repeat, reuse=args.peer == "kale-reuse")
    except Exception as e:
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    emit(doc)


def run_all(quick: bool) -> None:
    n, repeat, n_pm = (12, 1, 4) if quick else (100, 3, 20)
    root = Path(tempfile.mkdtemp(prefix="kale-bench-nb-", dir="/dev/shm"
                                 if os.path.isdir("/dev/shm") else None))
    load = load_average()
    docs: dict[str, dict[str, Any]] = {}
    try:
        for peer in PEERS:
            count = n_pm if peer == "papermill" else n
            cmd = [sys.executable, __file__, "--peer", peer, "--n", str(count),
                   "--repeat", str(repeat), "--root", str(root)]
            print(f"== {peer} ({count} notebooks)", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)),
                        None)
            docs[peer] = json.loads(line[len(MARKER):]) if line else {
                "error": (proc.stderr.strip().splitlines() or ["no result"])[-1]}
            reap(root)
    finally:
        reap(root)
        shutil.rmtree(root, ignore_errors=True)
    text = report(docs, quick, load)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "notebooks-quick" if quick else "notebooks"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(docs, indent=1))


def rate(doc: dict[str, Any]) -> float | None:
    if "times" not in doc:
        return None
    return float(doc["n"] / statistics.median(doc["times"]))


def report(docs: dict[str, dict[str, Any]], quick: bool, load: str) -> str:
    notes = {
        "kale-fresh": "default: a fresh kernel per task, started ahead; `run(jobs=2)`",
        "kale-fresh-launched": "the same, kernels launched by jupyter_client, not forked",
        "kale-reuse": "opt-in `KALE_KERNEL_REUSE=1`: kernels reset and reused",
        "kale-manager": "manager, 2 local workers x 1 slot, fresh kernels, warm workers",
        "papermill": "`execute_notebook` in one process, one after the other",
    }
    pm = rate(docs.get("papermill", {}))
    rows = []
    for peer in PEERS:
        doc = docs.get(peer, {})
        r = rate(doc)
        if r is None:
            rows.append(f"| {peer} | — | — | — | — | — | — | {doc.get('error', 'no result')} |")
            continue
        ratio = f"{r / pm:.1f}x" if pm else "—"
        cpu_s = f"{doc['cpu_per_task'] * 1000:.0f} ms" if doc.get("cpu_per_task") else "—"
        rows.append(f"| {peer} | {doc['n']} | {statistics.median(doc['times']):.2f} | "
                    f"{r:.1f} | {ratio} | {doc['first']:.2f} s | {cpu_s} | {notes[peer]} |")
    fresh = rate(docs.get("kale-fresh", {}))
    if fresh and pm:
        verdict = "**met**" if fresh / pm >= TARGET else "**not met**"
        target = (f"Target: fresh-kernel notebook tasks at least {TARGET:g}x papermill's "
                  f"throughput with 2 slots: {verdict} ({fresh / pm:.1f}x).")
    else:
        target = "Target: not measured (a row failed)."
    reps = docs.get("kale-fresh", {}).get("times", [])
    return (
        f"### Notebook tasks: fresh kernels vs papermill ({'quick' if quick else 'full'} "
        f"sizes)\n\n"
        f"Load average at the start: {load}. Kale rows: median of {len(reps)} run(s); "
        "notebooks/s = notebooks / (submit to all done), start-up included; first = a "
        "one-notebook run, submit to done.\n\n"
        "| row | notebooks | total s | notebooks/s | vs papermill | first | CPU per "
        "notebook | notes |\n|---|---:|---:|---:|---:|---:|---:|---|\n"
        + "\n".join(rows) + f"\n\n{target}\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.peer:
        run_peer(args)
    else:
        for key, value in describe(ROOT):
            print(f"{key}: {value}")
        run_all(args.quick)


if __name__ == "__main__":
    main()

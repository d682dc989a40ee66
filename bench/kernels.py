"""Attaching to a running task's kernel, and what running in a kernel costs.

    python bench/kernels.py            # full sizes -> bench/results/kernels.md
    python bench/kernels.py --quick    # small sizes (CI smoke)

``attach``    a notebook task loops (``sleep`` in a cell) on a manager's local worker; R
              times: ``Client.kernel(run, task)`` (fetch the connection info from the
              manager, connect, wait until ready) and the reply to ``execute_interactive``
              of ``total``, timed from the call. Beside it, in the same run: a fresh
              ipykernel's start to ready (``jupyter_client.manager.start_new_kernel``),
              what an attach must not pay.
``overhead``  N trivial tasks through the manager and one local worker: a Python task
              (``return 1``, the warm worker-process pool) and the same code as a one-cell
              notebook task (a warm kernel, in its subshell); seconds per task.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat

from _common import save_report, timed_manager_run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def loop_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import time\ntotal = 0\nfor i in range(100000):\n    total += 1\n    time.sleep(0.05)")]
    nbformat.write(nb, path)


def one_cell(path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("value = 1")]
    nbformat.write(nb, path)


def fresh_kernel() -> float:
    from jupyter_client.manager import start_new_kernel

    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    took = time.perf_counter() - t0
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return took


def attach_once(client: Any, run_id: str) -> float:
    t0 = time.perf_counter()
    kc = client.kernel(run_id, "loop")
    reply = kc.execute_interactive("total", timeout=10, output_hook=lambda m: None)
    took = time.perf_counter() - t0
    kc.stop_channels()
    assert reply["content"]["status"] == "ok"
    return took


def per_task(client: Any, wf: Any) -> float:
    return timed_manager_run(client, wf) / len(wf)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    repeat, n = (5, 20) if args.quick else (20, 200)

    from kale import Client, Workflow
    from kale.manager import service

    home = Path(tempfile.mkdtemp(prefix="kale-bench-kernels-"))
    work = Path(tempfile.mkdtemp(prefix="kale-bench-kernels-wf-"))
    os.environ["KALE_HOME"] = str(home)
    loop_notebook(work / "loop.ipynb")
    one_cell(work / "one.ipynb")
    service.start(home, port=8798, workers=1, worker_slots=2)
    try:
        with Client(home=home) as client:
            wf = Workflow("attach-bench", base_dir=work)
            wf.notebook("loop", "loop.ipynb")
            run = client.submit(wf)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.kernel_info(run.id, "loop")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            attach_once(client, run.id)  # warm-up: imports in this process
            attaches = [attach_once(client, run.id) for _ in range(repeat)]
            client.cancel(run.id)
            starts = [fresh_kernel() for _ in range(max(3, repeat // 4))]

            py = Workflow("py-tasks", base_dir=work)
            nbw = Workflow("nb-tasks", base_dir=work)
            for i in range(n):
                py.python(_one, name=f"t{i}")
                nbw.notebook(f"t{i}", "one.ipynb")
            per_task(client, py)  # warm-up: pools start
            per_task(client, nbw)
            py_s, nb_s = per_task(client, py), per_task(client, nbw)
    finally:
        service.stop(home)

    doc = {"repeat": repeat, "n": n, "attach": attaches, "fresh_kernel": starts,
           "python_per_task": py_s, "notebook_per_task": nb_s}
    save_report(RESULTS, "kernels-quick" if args.quick else "kernels", report(doc, args.quick),
                doc)


def _one() -> int:
    return 1


def report(doc: dict[str, Any], quick: bool) -> str:
    med = statistics.median
    a, k = doc["attach"], doc["fresh_kernel"]
    return (
        f"### Kernels ({'quick' if quick else 'full'} sizes)\n\n"
        "| | median | min | max |\n|---|---:|---:|---:|\n"
        f"| attach to a running task's kernel, first reply (n={len(a)}) | "
        f"{med(a) * 1000:.0f} ms | {min(a) * 1000:.0f} ms | {max(a) * 1000:.0f} ms |\n"
        f"| a fresh ipykernel, start to ready (n={len(k)}) | {med(k) * 1000:.0f} ms | "
        f"{min(k) * 1000:.0f} ms | {max(k) * 1000:.0f} ms |\n\n"
        f"| {doc['n']} trivial tasks, manager + 1 worker (2 slots) | per task |\n|---|---:|\n"
        f"| Python task (warm worker processes) | {doc['python_per_task'] * 1000:.1f} ms |\n"
        f"| the same in a kernel (one-cell notebook task, a fresh kernel each) | "
        f"{doc['notebook_per_task'] * 1000:.1f} ms |\n")


if __name__ == "__main__":
    main()

"""Baselines without a workflow system: ``python bench/_peer_baseline.py SCENARIO --n N``.

``shell``: a plain ``subprocess.run(["true"])`` loop, one process at a time.
``notebook``: ``papermill.execute_notebook`` called N times in a row in this process (each
call starts a fresh kernel); the per-notebook time is the wall time of one call.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import main, parse_args, result, timed


def shell(n: int, repeat: int) -> dict[str, Any]:
    first = timed(lambda: subprocess.run(["true"], check=True))

    def loop() -> None:
        for _ in range(n):
            subprocess.run(["true"], check=True)

    return result([timed(loop) for _ in range(repeat)], first_task=first)


def notebook(n: int) -> dict[str, Any]:
    import papermill

    from _notebook import make_notebook

    folder = Path(tempfile.mkdtemp(prefix="pm-bench-"))
    source = make_notebook(folder / "nb.ipynb")
    each: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        each.append(timed(lambda i=i: papermill.execute_notebook(
            source, folder / f"out{i}.ipynb", parameters={"x": i}, kernel_name="python3",
            progress_bar=False, log_output=False)))
    total = time.perf_counter() - t0
    return result([total], first_task=each[0], per_task_median=statistics.median(each),
                  per_task_max=max(each))


def run() -> dict[str, Any]:
    args = parse_args(["shell", "notebook"])
    if args.scenario == "shell":
        return shell(args.n, args.repeat)
    return notebook(args.n)


if __name__ == "__main__":
    main(run)

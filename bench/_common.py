"""Helpers shared by the peer scripts: argument parsing, timing and the JSON report.

A peer script runs one scenario for one system and prints a single line
``@@RESULT {json}`` on stdout; ``bench/run.py`` reads it. Times are in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "@@RESULT "
BENCH = os.path.dirname(os.path.abspath(__file__))

# Worker processes a peer starts (Parsl, Dask) import the task bodies from bench/noops.py.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (BENCH, os.environ.get("PYTHONPATH")) if p)


def parse_args(scenarios: list[str], *extra: tuple[str, dict[str, Any]]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=scenarios)
    p.add_argument("--n", type=int, required=True, help="number of tasks (or hops)")
    p.add_argument("--repeat", type=int, default=3)
    for flag, kw in extra:
        p.add_argument(flag, **kw)
    return p.parse_args()


class CpuMeter:
    """CPU time (user + system) over a stretch of a peer's work: of this process (all its
    threads) and of the processes below it (its workers, a scheduler, an interchange,
    however deep; those that ended meanwhile counted once waited for). With the wall time,
    it shows where the time goes and how close a system is to what 2 cores allow."""

    def __enter__(self) -> CpuMeter:
        self._start = _cpu_now()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_now()
        self.own, self.below = (b - a for a, b in zip(self._start, end, strict=True))

    def report(self, runs: int, tasks: int) -> dict[str, float]:
        """Microseconds of CPU per task: ``cpu_own_us`` and ``cpu_below_us``."""
        per = 1e6 / (runs * tasks)
        return {"cpu_own_us": self.own * per, "cpu_below_us": self.below * per}


def _cpu_now() -> tuple[float, float]:
    """(this process's CPU seconds, those of its live descendants and its waited-for
    children)."""
    import resource

    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                text = f.read()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()
        parent[int(entry.name)] = int(fields[1])
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    me = os.getpid()

    def below(pid: int) -> bool:
        for _ in range(64):
            pid = parent.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    own = resource.getrusage(resource.RUSAGE_SELF)
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(c for pid, c in cpu.items() if pid != me and below(pid))
    return own.ru_utime + own.ru_stime, live + waited.ru_utime + waited.ru_stime


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a peer's folder now, unless it lies in the bench run's scratch folder
    (``$KALE_BENCH_SCRATCH``, which ``bench/run.py`` removes when the whole run ends):
    ext4 passes over the inodes freed in the last half minute or so when it makes new
    ones, so thousands of directories removed just before a measured run made its
    ``mkdir`` several times dearer (36 -> 500 µs of CPU, the kernel in
    ``recently_deleted``), and the next peer's disk row measured the last one's clean-up."""
    scratch = os.environ.get("KALE_BENCH_SCRATCH")
    if scratch and os.path.realpath(path).startswith(os.path.realpath(scratch) + os.sep):
        return
    shutil.rmtree(path, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> float:
    """Seconds ``fn()`` takes (wall clock)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def result(times: list[float], **extra: Any) -> dict[str, Any]:
    """The standard report: every run's time, their median, and scenario extras."""
    return {"times": times, "median": statistics.median(times), **extra}


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.flush()
    print(MARKER + json.dumps(payload), flush=True)


def main(run: Callable[[], dict[str, Any]]) -> None:
    """Run a peer: emit its result, or its error as ``{"error": ...}`` (exit code 1)."""
    try:
        payload = run()
    except Exception as e:
        traceback.print_exc()
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    emit(payload)


def timed_manager_run(client: Any, wf: Any) -> float:
    """Seconds from submitting ``wf`` to a manager (``kale.Client``; results not reused)
    until its event stream ends; the run must have succeeded."""
    t0 = time.perf_counter()
    run = client.submit(wf, force=True)
    for event, _data in client.events(run.id):
        if event == "end":
            break
    took = time.perf_counter() - t0
    state = client.status(run.id, tasks=False)["run"]["state"]
    assert state == "SUCCEEDED", f"run {run.id} of {wf.name}: {state}"
    return took


def save_report(results: Path, name: str, text: str, doc: dict[str, Any]) -> None:
    """Print a benchmark's report and keep it, with its figures, as ``results/NAME.md``
    and ``results/NAME.json``."""
    print(text)
    results.mkdir(exist_ok=True)
    (results / f"{name}.md").write_text(text)
    (results / f"{name}.json").write_text(json.dumps(doc, indent=1))

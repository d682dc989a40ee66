"""Kale's local engine against its peers, side by side on this machine.

    python bench/run.py                 # every scenario, full size -> bench/results/latest.md
    python bench/run.py --quick         # small sizes (CI smoke, < 60 s) -> results/partial.md
    python bench/run.py --only chain    # one scenario -> results/partial.md
    python bench/run.py --only manager  # the manager's scenarios only -> results/partial.md

Each peer runs in its own fresh process (one per scenario and system, one after the other),
so their threads and workers never share the machine and one failing peer only blanks its
own row. Every system gets 2 workers. The manager scenarios (``bench/_manager.py``) run
``kale manager start`` and its workers in a Kale home on tmpfs; whatever they leave running
is killed afterwards.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MARKER
from _manager import reap
from environment import describe, load_average
from report import manager_section, section, table
from scenarios import (
    HTEX,
    ManagerCase,
    ManagerScenario,
    Peer,
    Scenario,
    manager_scenarios,
    scenarios,
)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
REPEAT = 3

METHOD = """\
How to read this: *speed-up* is peer time / Kale time (above 1: Kale is faster). Times are
wall-clock seconds from submitting the first task to the last result, median of the runs
listed. Each system runs in its own fresh process with 2 workers. Parsl and Dask start
their workers once per process: that start-up and the first task's latency are listed
separately and are *not* in the timed runs (Parsl's first task includes waiting for its
job-status poller to launch the block; `strategy_period=0.5` here instead of the default
5 s). Kale's timed runs *include* run setup (a fresh Kale home each) and teardown, on the
Python workers an earlier run of the same process left warm (a notebook's second run;
its first-task column, the process's first run, includes starting one); *in-run* is
Kale's first task start to last task end (from the run's task records). *CPU µs/task*:
CPU time (user + system) over the timed runs per task, of the system's own process (all
its threads: for Kale the engine and the store's commit thread) + the processes below it
(workers, an interchange, a scheduler); 2 cores give at most 2 s of CPU per second, so at
X µs in all a run can do at most 2,000,000 / X tasks/s. The machine is shared and has 2
cores, so expect noise of 10% or more between runs."""
QUICK = """
Quick sizes: start-up weighs more in every number; the targets are set for the full sizes."""


def run_peer(script: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one peer script in a fresh process (its own session, so that a timeout can
    kill it with every worker it started) and return its JSON result."""
    cmd = [sys.executable, str(BENCH / script), *args]
    # The peer's cwd and every temporary file it makes (Kale homes, Parsl run dirs, Dask
    # worker space) live in tmp, removed with the scratch folder when the bench run ends
    # (not now: see _common.remove).
    tmp = tempfile.mkdtemp(prefix="kale-bench-", dir=_scratch())
    env = {**os.environ, "TMPDIR": tmp, "KALE_BENCH_SCRATCH": _scratch()}
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timed out after {timeout:g} s"}
    # Whatever the peer left running in its session must not disturb the next one.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            res: dict[str, Any] = json.loads(line[len(MARKER):])
            return res
    tail = (err.strip().splitlines() or [f"exit code {proc.returncode}, no result"])[-1]
    return {"error": tail[:200]}


_SCRATCH: list[str] = []


def _scratch() -> str:
    """The bench run's scratch folder (made on first use, removed at exit): every peer's
    temporary files, removed together once nothing is measured any more."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="kale-bench-scratch-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return _SCRATCH[0]


def peer_args(sc: Scenario, peer: Peer, n: int) -> list[str]:
    return [sc.name, "--n", str(n), "--repeat", str(REPEAT if sc.repeat else 1),
            *peer.options]


def summary(res: dict[str, Any]) -> str:
    if "error" in res or "skipped" in res:
        return next(f"{k}: {v}" for k, v in res.items() if k in ("error", "skipped"))
    if "median" in res:
        return f"median {res['median']:.3f} s"
    return "done"


def run_scenario(index: int, sc: Scenario, quick: bool) -> tuple[str, dict[str, Any]]:
    n = sc.quick if quick else sc.full
    timeout = 60 if quick else 900
    results: dict[str, dict[str, Any]] = {}
    for peer in sc.peers:
        print(f"[{sc.name}] {peer.label} (n={n}) ...", end=" ", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[peer.label] = res = run_peer(peer.script, peer_args(sc, peer, n), timeout)
        print(f"{summary(res)} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return section(index, sc, n, REPEAT, results), results


def htex_rate(python: dict[str, Any] | None, quick: bool) -> float | None:
    """Parsl HTEX's tasks/s in scenario 1 ("python") of this bench run, if it ran."""
    res = (python or {}).get(HTEX, {})
    if "median" not in res:
        return None
    n = next(sc.quick if quick else sc.full for sc in scenarios() if sc.name == "python")
    rate: float = n / res["median"]
    return rate


def run_manager_case(case: ManagerCase, n: int, quick: bool) -> dict[str, Any]:
    """One ``bench/_manager.py`` run, its Kale homes in a fresh folder on tmpfs; every
    process left with a home there is killed afterwards, however the script ended."""
    timeout = case.timeout[0 if quick else 1]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = tempfile.mkdtemp(prefix="kale-bench-manager-", dir=shm)
    args = [case.case, "--n", str(n), "--root", root, "--timeout", f"{timeout - 20:g}",
            *case.options]
    try:
        return run_peer("_manager.py", args, timeout)
    finally:
        reap(root)
        if not os.environ.get("KALE_BENCH_KEEP"):  # keep the homes, to read their logs
            shutil.rmtree(root, ignore_errors=True)


def run_manager_scenario(index: int, sc: ManagerScenario, quick: bool,
                         htex: float | None) -> str:
    results: dict[str, dict[str, Any]] = {}
    sizes = []
    for case in sc.cases:
        n = case.quick if quick else case.full
        if n is None:
            continue
        sizes.append(n)
        print(f"[{sc.name}] {case.label} (n={n}) ...", end=" ", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results[case.label] = res = run_manager_case(case, n, quick)
        print(f"{manager_summary(res)} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return manager_section(index, sc, sizes[0] if sizes else None, results, htex)


def manager_summary(res: dict[str, Any]) -> str:
    if "error" in res or "skipped" in res:
        return summary(res)
    keys = ("tasks_per_s", "p99_ms", "kb_per_task_end", "seconds", "done_s")
    return ", ".join(f"{k} {res[k]:.4g}" for k in keys if k in res)


def main() -> None:
    all_scenarios = scenarios()
    managed = manager_scenarios()
    names = [sc.name for sc in all_scenarios] + [sc.name for sc in managed] + ["manager"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    p.add_argument("--only", choices=names, action="append", metavar="NAME",
                   help=f"run only this scenario (repeatable): {', '.join(names)}")
    p.add_argument("--out", type=Path, help="markdown file to write (default: "
                   "results/latest.md for a full run, results/partial.md otherwise)")
    args = p.parse_args()
    full_run = not args.quick and not args.only
    out = args.out or RESULTS / ("latest.md" if full_run else "partial.md")

    t0 = time.perf_counter()
    load_before = load_average()
    chosen = set(args.only or names)
    if "manager" in chosen:
        chosen |= {sc.name for sc in managed}
    sections, python = [], None
    for i, sc in enumerate(all_scenarios, 1):
        if sc.name in chosen:
            text, results = run_scenario(i, sc, args.quick)
            sections.append(text)
            python = results if sc.name == "python" else python
    htex = htex_rate(python, args.quick)
    for i, msc in enumerate(managed, len(all_scenarios) + 1):
        if msc.name in chosen:
            sections.append(run_manager_scenario(i, msc, args.quick, htex))
    env = [*describe(BENCH.parent), ("load average (1/5/15 min)",
                                     f"{load_before} before, {load_average()} after"),
           ("command", " ".join(["python bench/run.py", *sys.argv[1:]])),
           ("bench wall time", f"{time.perf_counter() - t0:.0f} s")]
    text = "\n\n".join([
        "## Kale local engine vs peers, and the manager service"
        + (" (quick sizes)" if args.quick else ""),
        table(["", ""], [[k, v] for k, v in env]),
        METHOD + (QUICK if args.quick else ""), *sections]) + "\n"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""What ``bench/run.py`` measures: each scenario, its sizes, its peers and its target.

Every peer is a script in this folder run in a fresh process as
``python bench/SCRIPT SCENARIO --n N --repeat R [OPTIONS]``; it prints one JSON result.
The first peer of a scenario is Kale, the reference for the speed-up column.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KALE = "Kale local"
HTEX = "Parsl HTEX"


@dataclass(frozen=True)
class Peer:
    label: str
    script: str
    options: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Target:
    text: str
    #: (results, n, key) -> the measured value; key is the Kale time used: "median"
    #: (submit to all done) or "in_run" (first task start to last task end)
    check: Callable[[dict[str, dict[str, Any]], int, str], float]
    limit: float
    higher_is_better: bool

    def verdict(self, results: dict[str, dict[str, Any]], n: int) -> str:
        try:
            value = self.check(results, n, "median")
        except (KeyError, TypeError, ZeroDivisionError):
            return f"Target: {self.text}: not measured"
        ok = value >= self.limit if self.higher_is_better else value <= self.limit
        text = f"Target: {self.text}: **{'met' if ok else 'NOT met'}** (measured {value:.3g}"
        with contextlib.suppress(KeyError, TypeError, ZeroDivisionError):
            text += f"; {self.check(results, n, 'in_run'):.3g} counting Kale's in-run time only"
        return text + ")"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    what: str
    full: int
    quick: int
    layout: str  # "rate", "hop", "notebook" or "steps" (see report.py)
    peers: tuple[Peer, ...]
    repeat: bool = True
    target: Target | None = None
    timing: str = "Timed from submit to all done"


Results = dict[str, dict[str, Any]]


def _speedup_vs_htex(results: Results, _n: int, key: str) -> float:
    value: float = results[HTEX]["median"] / results[KALE][key]
    return value


def _kale_ms_per_hop(results: Results, n: int, key: str) -> float:
    value: float = 1000 * results[KALE][key] / n
    return value


def _kale_per_notebook(results: Results, _n: int, key: str) -> float:
    if key != "median":
        raise KeyError(key)  # already a per-task time
    value: float = results[KALE]["per_task_median"]
    return value


def _spec_load(results: Results, _n: int, key: str) -> float:
    if key != "median":
        raise KeyError(key)
    value: float = results[KALE]["steps"]["load"]["median"]
    return value


KALE_PY = Peer(KALE, "_peer_kale.py", note="fresh home per run; workers kept from the last run")
KALE_TMPFS = Peer("Kale local, home on tmpfs", "_peer_kale.py", ("--home-on", "/dev/shm"),
                 note="the same, run directories in /dev/shm: no disk metadata cost")
HTEX_PY = Peer(HTEX, "_peer_parsl.py", ("--executor", "htex"),
               note="LocalProvider, 1 block, max_workers_per_node=2")
DASK = Peer("Dask LocalCluster", "_peer_dask.py",
            note="2 worker processes x 1 thread, pure=False")
THREADS = Peer("Parsl threads (reference)", "_peer_parsl.py", ("--executor", "threads"),
               note="ThreadPoolExecutor(max_threads=2), in-process")
POOL = Peer("ProcessPoolExecutor(2) (the limit)", "_peer_pool.py",
            note="2 processes, nothing recorded or captured: the machine's limit")
MKDIR = Peer("os.mkdir, a directory per task (the disk's limit)", "_peer_mkdir.py",
             note="n directories in a new folder where Kale's disk rows put theirs, "
             "nothing else: the file system's limit for a directory per task, as it is now")


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            "python", "No-op Python tasks",
            "{n} independent Python tasks that return None, 2 workers.",
            2000, 200, "rate", (KALE_PY, KALE_TMPFS, HTEX_PY, DASK, THREADS, POOL, MKDIR),
            target=Target("Kale >= 1.5x the throughput of Parsl HTEX", _speedup_vs_htex,
                          1.5, True)),
        Scenario(
            "shell", "Shell tasks (`true`)",
            "{n} independent shell tasks running `true` (argv, no shell), 2 workers.",
            500, 50, "rate", (
                Peer(KALE, "_peer_kale.py", note="argv ['true']; fresh Kale home per run"),
                Peer("Kale local, home on tmpfs", "_peer_kale.py", ("--home-on", "/dev/shm"),
                     note="the same, run directories in /dev/shm"),
                Peer("Parsl bash_app on HTEX", "_peer_parsl.py", ("--executor", "htex"),
                     note="returns 'true', run by the worker through a shell"),
                Peer("subprocess.run loop", "_peer_baseline.py",
                     note="one process at a time, no workflow system"))),
        Scenario(
            "chain", "Linear chain of Python tasks",
            "{n} no-op Python tasks, each waiting for the one before; per-hop latency.",
            500, 50, "hop", (KALE_PY, KALE_TMPFS, HTEX_PY, DASK, THREADS, POOL, MKDIR),
            target=Target("Kale <= 1 ms per hop", _kale_ms_per_hop, 1.0, False)),
        Scenario(
            "notebook", "Trivial notebook tasks",
            "{n} independent runs of a 2-cell notebook (a `parameters` cell and `y = x + 1`).",
            20, 4, "notebook", (
                Peer(KALE, "_peer_kale.py",
                     note="jobs=2, a fresh pre-started kernel each; per task = "
                     "ended_at - started_at"),
                Peer("papermill, sequential", "_peer_baseline.py",
                     note="execute_notebook in-process, a new kernel each")),
            repeat=False,
            target=Target("Kale median per notebook task <= 0.25 s", _kale_per_notebook,
                          0.25, False)),
        Scenario(
            "spec", "Large workflow definitions",
            "{n} Python tasks in 100 chains (task i waits for task i-100).",
            10_000, 1000, "steps", (Peer(KALE, "_peer_spec.py"),),
            target=Target("kale.spec.load_workflow < 1 s", _spec_load, 1.0, False),
            timing="Each step timed on its own"),
    ]



# -- the manager service (bench/_manager.py) -----------------------------------------------
MANAGER = "Kale manager"


@dataclass(frozen=True)
class ManagerCase:
    """One run of ``python bench/_manager.py CASE --n N [OPTIONS]`` (one row)."""

    label: str
    case: str  # "throughput", "memory", "lost" or "resume"
    full: int
    quick: int | None  # None: not in --quick runs
    options: tuple[str, ...] = ()
    note: str = ""
    timeout: tuple[float, float] = (90, 600)  # seconds allowed: quick, full


@dataclass(frozen=True)
class ManagerScenario:
    name: str
    title: str
    what: str
    layout: str  # "throughput", "memory", "lost" or "resume" (see report.py)
    cases: tuple[ManagerCase, ...]
    target: str = ""


def manager_scenarios() -> list[ManagerScenario]:
    return [
        ManagerScenario(
            "manager-throughput", "Manager: throughput and status latency",
            "{n} independent no-op Python tasks (`noops:noop`, built as in scenario 1), "
            "submitted with `kale.Client` to `kale manager start --workers 2`; timed from "
            "the submit until a client sees the run SUCCEEDED. Meanwhile 20 threads, each "
            "with its own `httpx.Client`, poll `GET /api/runs/{{id}}?tasks=false` (50 ms "
            "between a response and the next request) and time every request. The "
            "manager's workers are started by a 100-task warm-up run first. *vs Parsl "
            "HTEX* is this row's tasks/s over Parsl HTEX's in scenario 1 of the same bench "
            "run (its size, not this one). One run each; Kale home on tmpfs.",
            "throughput", (
                ManagerCase("2 workers x CPU-count slots, 20 pollers", "throughput", 10_000,
                            2_000, note="the default slots (`--worker-slots` unset)"),
                ManagerCase("2 workers x 2 slots, 20 pollers", "throughput", 10_000, 2_000,
                            ("--slots", "2"), note="`--worker-slots 2`"),
                ManagerCase("2 workers x CPU-count slots, no pollers", "throughput", 10_000,
                            2_000, ("--pollers", "0"),
                            note="the same without the 20 pollers (one client polls "
                            "every 100 ms)"),
            ),
            target=">= 1,000 tasks/s and status p99 <= 50 ms with 20 pollers"),
        ManagerScenario(
            "manager-memory", "Manager: memory per finished task",
            "One run of {n} no-op Python tasks through the manager and 2 workers. The "
            "manager's RSS (psutil) is read after a 100-task warm-up run, right before the "
            "submit, every 50 ms while the run goes (peak), the moment a client sees the "
            "run end, and 3 s later. KB/task = (RSS - RSS before) / tasks. Kale home on "
            "tmpfs.",
            "memory", (
                ManagerCase(MANAGER, "memory", 100_000, 20_000,
                            note="2 workers x CPU-count slots", timeout=(150, 1800)),),
            target="<= 3 KB per finished task (at the run's end)"),
        ManagerScenario(
            "manager-lost", "Manager: lost-worker detection",
            "One `sleep 30` shell task (`retries=1`, `retry_delay=0`) on `--workers 2 "
            "--worker-slots 1 --heartbeat-timeout T`. Once it runs, the worker running it "
            "(`kale status RUN TASK --json`, then `/api/workers` for its pid) is SIGKILLed; "
            "timed from the kill until the task's attempts reach 2 (the retry dispatched to "
            "the other worker). The manager counts the silence from the worker's last "
            "message (it sends one every timeout / 5 s, at most 2 s apart), so the time "
            "from the kill can be up to that interval shorter than the timeout.",
            "lost", (
                ManagerCase("heartbeat timeout 3 s", "lost", 1, 1, ("--heartbeat", "3"),
                            timeout=(60, 120)),
                ManagerCase("heartbeat timeout 15 s (default)", "lost", 1, None,
                            ("--heartbeat", "15"), timeout=(60, 120)),
            )),
        ManagerScenario(
            "manager-resume", "Manager: resume after a restart",
            "{n} shell tasks `sleep 1` on 2 workers (CPU-count slots each). Once a third "
            "have succeeded the manager is SIGKILLed and `kale manager start` run again at "
            "once (same port, same options); timed from the kill. *Progress* is the run's "
            "SUCCEEDED count passing what the store held at the kill.",
            "resume", (
                ManagerCase(MANAGER, "resume", 200, 40, timeout=(90, 300)),)),
    ]

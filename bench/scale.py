"""Big runs (issue 17, goal 4): a 100,000-task workflow, validated, submitted, run and
reported, embedded and through the manager, with Parsl and Dask side by side; and a
1,000,000-task workflow validated and loaded.

    python bench/scale.py            # 100,002 tasks, 1,000,002 for the spec (~15 min)
                                     #   -> bench/results/scale.txt
    python bench/scale.py --quick    # 202 tasks, 20,002 for the spec (CI smoke, ~1 min)

The workflow: one task ``start``, a fan-out of W chains of L tasks each after it, and
``gather`` after every chain's last task (a fan-in of W); every task is the no-op Python
function ``noops:noop``. Full sizes: W=1,000, L=100 (100,002 tasks); the spec's big one
W=10,000 (1,000,002 tasks, 57 MB of YAML).

Each measurement runs in a fresh process (its own Kale home on tmpfs when there is one):

``spec``      ``kale validate FILE`` (the CLI, wall clock, start-up included) and
              ``kale.spec.load_workflow`` in one process, for both sizes; the big one
              also as JSON (``spec_big_json``: what a program that writes a big workflow
              may write; a JSON document is YAML, read by the JSON decoder).
``embedded``  ``kale run FILE --embedded`` (the CLI; stdout and stderr to files, as in a
              batch script): *submit* is from the command's start to its printing the run
              id (the file read, validated, the run and its tasks in the store); *run* to
              its exit; memory is the process's peak RSS less its RSS before the run (an
              empty Kale process of the same imports), per task. ``kale status RUN`` (human,
              ``--json``, ``--all``) while it runs and after; ``kale status`` of the latest
              run; the store's size per task.
``manager``   ``kale manager start`` in a fresh home, the workflow submitted with the Python
              ``Client`` (*submit*: ``Client.submit`` returning), waited for through its
              events; the manager's RSS growth (peak, sampled every 0.2 s, and after) per
              task; the same status commands; then ``kale run FILE --detach`` of the same
              file (every result reused: the CLI's submit through the manager).
``parsl``     a DataFlowKernel with a HighThroughputExecutor on a LocalProvider (2 workers):
              the same graph of ``python_app`` futures (``app(previous)``), *submit* the
              time to make them all, *run* until ``gather``'s result; memory is this
              process's peak RSS growth per task.
``dask``      a LocalCluster (2 worker processes of one thread) and ``client.submit`` of the
              same graph (``pure=False``, each future given the previous one); memory is the
              client's process (which also holds the scheduler) peak RSS growth per task.

Nothing is asserted about times; the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
MARKER = "@@RESULT "
RESULTS = BENCH / "results" / "scale.txt"
RESULTS_JSON = BENCH / "results" / "scale.json"
NOOPS = (BENCH / "noops.py").read_text()
GOALS = {"submit": 5.0, "manager_kb": 3.0, "status": 1.0, "spec_1m": 10.0}


# -- the workflow ------------------------------------------------------------------------
def yaml_text(width: int, length: int) -> str:
    """``start``, W chains of L tasks after it, ``gather`` after every chain's end."""
    lines = ["name: scale", "description: a fan-out of chains and a fan-in", "tasks:",
             "  start:", "    python: noops:noop"]
    tails = []
    for c in range(width):
        prev = "start"
        for k in range(length):
            name = f"c{c}-{k}"
            lines += [f"  {name}:", "    python: noops:noop", f"    after: [{prev}]"]
            prev = name
        tails.append(prev)
    lines += ["  gather:", "    python: noops:noop", f"    after: [{', '.join(tails)}]"]
    return "\n".join(lines) + "\n"


def write_workflow(folder: Path, width: int, length: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "noops.py").write_text(NOOPS)
    path = folder / f"scale-{width * length + 2}.yaml"
    path.write_text(yaml_text(width, length))
    return path


def write_json(yaml_path: Path) -> Path:
    """The same workflow as a JSON file (what a program that generates one may write)."""
    from kale.spec import load_yaml_text

    path = yaml_path.with_suffix(".json")
    path.write_text(json.dumps(load_yaml_text(yaml_path.read_text()), indent=1) + "\n")
    return path


# -- helpers -----------------------------------------------------------------------------
def kale_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kale.cli.main", *args]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "KALE_HOME": str(home),
            "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), os.environ.get(
                "PYTHONPATH")) if p)}


#: CPU seconds (user + system) of the last :func:`timed_cli` command: on a shared machine
#: its wall time also holds the time it waited for a core
LAST_CPU: list[float] = [0.0]
#: the CI smoke: plain ``kale status`` only
QUICK = os.environ.get("KALE_SCALE_QUICK") == "1"


def timed_cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of a CLI command (it must succeed) and its stdout."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args[3:])}: exit {done.returncode}: "
                           f"{done.stderr[-800:]}")
    return took, done.stdout


class PeakRss:
    """Samples a process's RSS every 0.2 s in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:
                return

    def cpu(self) -> float:
        """The process's CPU seconds so far (user + system)."""
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def now(self) -> int:
        rss = int(self.proc.memory_info().rss)
        self.peak = max(self.peak, rss)
        return rss

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return int(self.peak)


def scratch() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="kale-scale-", dir=base))


def store_size(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("kale.db*"))


def dir_size(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path``."""
    size = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.stat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return size, files


def status_figures(home: Path, run_id: str, prefix: str) -> dict[str, Any]:
    """``kale status`` of a run: human, --json, --all; seconds and lines printed."""
    env = env_for(home)
    out: dict[str, Any] = {}
    kinds = (("human", []), ("json", ["--json"]), ("all", ["--all"]))
    for label, extra in kinds[:1] if QUICK else kinds:
        took, text = timed_cli(kale_cmd("status", run_id, *extra), env)
        out[f"{prefix}_{label}"] = took
        out[f"{prefix}_{label}_cpu"] = LAST_CPU[0]
        out[f"{prefix}_{label}_lines"] = text.count("\n")
    return out


def wait_some_done(home: Path, run_id: str, n: int, timeout: float = 120) -> None:
    """Until a tenth of the run's tasks (at most 200) succeeded: a run under way."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{home / 'kale.db'}?mode=ro", uri=True) as db:
                done = db.execute("select count(*) from tasks where run_id=? and "
                               "state='SUCCEEDED'", (run_id,)).fetchone()[0]
            if done >= min(200, n // 10):
                return
        except sqlite3.Error:
            pass
        time.sleep(0.2)


# -- Kale embedded -----------------------------------------------------------------------
def baseline_rss(env: dict[str, str]) -> int:
    """RSS of a Kale CLI process with what `kale run` imports, before any run."""
    code = ("import kale.cli.main, kale.engine.runs, kale.spec, kale.executors.local, "
            "kale.tasks.python, psutil, os; print(psutil.Process(os.getpid()).memory_info().rss)")
    return int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True).stdout)


def kale_embedded(path: Path, n: int) -> dict[str, Any]:
    root = scratch()
    home = root / "home"
    home.mkdir(mode=0o700)
    env = env_for(home)
    try:
        base = baseline_rss(env)
        with open(root / "out.txt", "w+") as outf, open(root / "err.txt", "w") as errf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(kale_cmd("run", str(path), "--embedded", "-j", "2"),
                                    env=env, stdout=outf, stderr=errf)
            rss = PeakRss(proc.pid)
            while True:
                outf.seek(0)
                run_id = outf.read().strip()
                if run_id or proc.poll() is not None:
                    break
                time.sleep(0.005)
            submit = time.perf_counter() - t0
            submit_cpu = rss.cpu()
            rss_submitted = rss.now()
            wait_some_done(home, run_id, n)
            res: dict[str, Any] = status_figures(home, run_id, "running")
            code = proc.wait(timeout=3600)
            run_s = time.perf_counter() - t0
            peak = rss.close()
        if code:
            raise RuntimeError(f"kale run exit {code}: {(root / 'err.txt').read_text()[-800:]}")
        res |= status_figures(home, run_id, "done")
        res["latest_human"], _ = timed_cli(kale_cmd("status"), env)
        res["latest_human_cpu"] = LAST_CPU[0]
        res["cli_start"], _ = timed_cli(kale_cmd("--version"), env)
        res["cli_start_cpu"] = LAST_CPU[0]
        db = store_size(home)
        runs_bytes, runs_files = dir_size(home / "runs")
        return {"submit": submit, "submit_cpu": submit_cpu, "run": run_s,
                "tasks_per_s": n / (run_s - submit),
                "rss_submitted_kb_per_task": (rss_submitted - base) / 1024 / n,
                "rss_kb_per_task": (peak - base) / 1024 / n, "base_rss_mb": base / 2**20,
                "db_bytes_per_task": db / n, "runs_bytes_per_task": runs_bytes / n,
                "runs_files": runs_files, **res}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- Kale through the manager ------------------------------------------------------------
def kale_manager(path: Path, n: int) -> dict[str, Any]:
    import kale
    from kale import Client
    from kale.spec import load_workflow

    root = scratch()
    home = root / "home"
    home.mkdir(mode=0o700)
    env = env_for(home)
    wf = load_workflow(path, cls=kale.Workflow)
    subprocess.run(kale_cmd("manager", "start", "--workers", "1", "--worker-slots", "2"),
                   env=env, check=True, capture_output=True)
    try:
        pid = json.loads((home / "manager.json").read_text())["pid"]
        rss = PeakRss(pid)
        base = rss.now()
        with Client(home=home) as client:
            t0, c0, m0 = time.perf_counter(), time.process_time(), rss.cpu()
            run = client.submit(wf, force=True)
            submit = time.perf_counter() - t0
            submit_cpu = time.process_time() - c0 + rss.cpu() - m0
            rss_submitted = rss.now()
            wait_some_done(home, run.id, n)
            res: dict[str, Any] = status_figures(home, run.id, "running")
            state = run.wait(3600).state.value
            run_s = time.perf_counter() - t0
            after = rss.now()
            peak = rss.close()
            if state != "SUCCEEDED":
                raise RuntimeError(f"run {run.id} ended {state}")
            res |= status_figures(home, run.id, "done")
            t1 = time.perf_counter()
            doc = client.status(run.id)
            res["api_status"] = time.perf_counter() - t1
            res["api_status_bytes"] = len(json.dumps(doc, default=str))
        try:  # the CLI's submit through the manager (every result reused)
            cli_submit, out = timed_cli(kale_cmd("run", str(path), "--detach"), env)
        except RuntimeError as e:
            cli_submit, out = None, f"error: {str(e)[-300:]}"
        db = store_size(home)
        return {"submit": submit, "submit_cpu": submit_cpu, "run": run_s,
                "tasks_per_s": n / (run_s - submit),
                "rss_submitted_kb_per_task": (rss_submitted - base) / 1024 / n,
                "rss_kb_per_task": (peak - base) / 1024 / n,
                "rss_after_kb_per_task": (after - base) / 1024 / n, "base_rss_mb": base / 2**20,
                "db_bytes_per_task": db / (2 * n), "cli_submit_reused": cli_submit,
                "cli_run_id": out.strip(), **res}
    finally:
        subprocess.run(kale_cmd("manager", "stop"), env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# -- peers -------------------------------------------------------------------------------
def graph(submit: Callable[..., Any], width: int, length: int) -> Any:
    """The workflow's graph through ``submit(*upstream)``; the ``gather`` future."""
    start = submit()
    tails = []
    for _c in range(width):
        f = start
        for _k in range(length):
            f = submit(f)
        tails.append(f)
    return submit(*tails)


def peer_parsl(width: int, length: int) -> dict[str, Any]:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    from noops import noop

    executor = HighThroughputExecutor(
        label="htex", address="127.0.0.1", max_workers_per_node=2, cores_per_worker=1,
        provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
    parsl.load(Config(executors=[executor], run_dir=tempfile.mkdtemp(prefix="parsl-scale-"),
                      strategy="none", strategy_period=0.5))
    try:
        app = parsl.python_app(noop)
        app().result()  # workers connected
        rss = PeakRss(os.getpid())
        base = rss.now()
        t0 = time.perf_counter()
        last = graph(app, width, length)
        submit = time.perf_counter() - t0
        last.result()
        run_s = time.perf_counter() - t0
        peak = rss.close()
    finally:
        parsl.dfk().cleanup()
    n = width * length + 2
    return {"submit": submit, "run": run_s, "tasks_per_s": n / run_s,
            "rss_kb_per_task": (peak - base) / 1024 / n}


def peer_dask(width: int, length: int) -> dict[str, Any]:
    import logging

    from distributed import Client, LocalCluster

    from noops import noop

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        client.submit(noop, pure=False).result()
        rss = PeakRss(os.getpid())
        base = rss.now()
        t0 = time.perf_counter()
        last = graph(lambda *up: client.submit(noop, *up, pure=False), width, length)
        submit = time.perf_counter() - t0
        last.result()
        run_s = time.perf_counter() - t0
        peak = rss.close()
    finally:
        client.close()
        cluster.close()
    n = width * length + 2
    return {"submit": submit, "run": run_s, "tasks_per_s": n / run_s,
            "rss_kb_per_task": (peak - base) / 1024 / n}


# -- the spec ----------------------------------------------------------------------------
def spec(path: Path, n: int) -> dict[str, Any]:
    """`kale validate` (CLI) and load_workflow (in this process) of a file of n tasks."""
    from kale.spec import load_workflow

    env = env_for(Path(tempfile.gettempdir()))
    validate, out = timed_cli(kale_cmd("validate", str(path)), env)
    validate_cpu = LAST_CPU[0]
    if f"({n} tasks)" not in out:
        raise RuntimeError(f"kale validate said {out!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    wf = load_workflow(path)
    load, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert len(wf) == n
    return {"validate_cli": validate, "validate_cli_cpu": validate_cpu,
            "load_workflow": load, "load_workflow_cpu": load_cpu,
            "mb": path.stat().st_size / 1e6}


# -- running one side in a fresh process -------------------------------------------------
SIDES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "spec": lambda a: spec(Path(a.file), a.width * a.length + 2),
    "embedded": lambda a: kale_embedded(Path(a.file), a.width * a.length + 2),
    "manager": lambda a: kale_manager(Path(a.file), a.width * a.length + 2),
    "parsl": lambda a: peer_parsl(a.width, a.length),
    "dask": lambda a: peer_dask(a.width, a.length),
}


def side(name: str, width: int, length: int, file: Path) -> dict[str, Any]:
    """Run one side in a process of its own (own session, killed at the end)."""
    args = [sys.executable, str(Path(__file__)), "--side", name, "--width", str(width),
            "--length", str(length), "--file", str(file)]
    tmp = Path(tempfile.mkdtemp(prefix=f"scale-{name}-"))
    env = {**env_for(tmp / "home"), "TMPDIR": str(tmp),
           "KALE_SCALE_QUICK": "1" if QUICK else "0"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=3600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        shutil.rmtree(tmp, ignore_errors=True)
    for line in out.splitlines():
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER):]))
    return {"error": f"exit {proc.returncode}, no result"}


def run_side(args: argparse.Namespace) -> None:
    try:
        payload = SIDES[args.side](args)
    except Exception as e:
        import traceback

        traceback.print_exc()
        payload = {"error": f"{type(e).__name__}: {e}"}
    print(MARKER + json.dumps(payload), flush=True)


# -- the report --------------------------------------------------------------------------
def loadavg() -> float:
    """The 1-minute load average (the machine is shared: every figure carries it)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def fmt(v: Any, spec_: str = ".2f") -> str:
    return "-" if v is None else format(v, spec_)


def report(n: int, big: int, res: dict[str, dict[str, Any]]) -> str:
    lines = [f"# Big runs: {n:,} tasks (start, fan-out of chains, fan-in), "
             f"spec of {big:,} tasks", ""]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"{name}: ERROR {r['error']}")
    lines.append("load average (1 min) before/after each side: " + ", ".join(
        f"{name} {r['load'][0]:.2f}/{r['load'][1]:.2f}" for name, r in res.items()
        if "load" in r) + " (2 cores)")
    lines.append("measured: " + ", ".join(f"{name} {r['at']}" for name, r in res.items()
                                          if "at" in r))
    kale = res.get("embedded", {})
    lines += ["", "| system | build+submit s | run s | tasks/s | peak memory KB/task | "
              "submit vs Kale embedded |", "|---|---|---|---|---|---|"]
    for name in ("embedded", "manager", "parsl", "dask"):
        r = res.get(name, {})
        if "submit" not in r:
            continue
        ratio = r["submit"] / kale["submit"] if kale.get("submit") else None
        label = {"embedded": "Kale embedded (kale run)", "manager": "Kale manager (Client)",
                 "parsl": "Parsl HTEX", "dask": "Dask LocalCluster"}[name]
        lines.append(f"| {label} | {fmt(r['submit'])} | {fmt(r['run'], '.1f')} | "
                     f"{fmt(r['tasks_per_s'], '.0f')} | {fmt(r['rss_kb_per_task'])} | "
                     f"{fmt(ratio)}x |")
    man = res.get("manager", {})
    lines += ["", "| measure | embedded | manager | goal |", "|---|---|---|---|"]
    rows = [("submit s", "submit", GOALS["submit"]),
            ("memory KB/task after submit", "rss_submitted_kb_per_task", None),
            ("memory KB/task peak", "rss_kb_per_task", GOALS["manager_kb"]),
            ("memory KB/task after the run", "rss_after_kb_per_task", None),
            ("kale status RUN, running s", "running_human", GOALS["status"]),
            ("  lines printed", "running_human_lines", None),
            ("kale status RUN --json, running s", "running_json", None),
            ("kale status RUN --all, running s", "running_all", None),
            ("kale status RUN, finished s", "done_human", GOALS["status"]),
            ("  lines printed", "done_human_lines", None),
            ("kale status RUN --json, finished s", "done_json", None),
            ("kale status RUN --all, finished s", "done_all", None),
            ("  lines printed", "done_all_lines", None),
            ("kale status (latest), finished s", "latest_human", None),
            ("manager API status (all tasks) s", "api_status", None),
            ("kale run --detach (all reused) s", "cli_submit_reused", None),
            ("store DB bytes/task", "db_bytes_per_task", None),
            ("run directory bytes/task", "runs_bytes_per_task", None)]
    rows += [("kale --version (CLI start-up) s", "cli_start", None)]
    for label, key, goal in rows:
        for lab, k in ((label, key), ("  CPU s", f"{key}_cpu")):
            a, b = kale.get(k), man.get(k)
            if a is None and b is None:
                continue
            f = ".0f" if "lines" in lab or "bytes" in lab else ".2f"
            lines.append(f"| {lab} | {fmt(a, f)} | {fmt(b, f)} | "
                         f"{'' if goal is None or k != key else goal} |")
    lines += ["", "| spec | tasks | MB | kale validate (CLI) s | CPU s | load_workflow s | "
              "CPU s | goal (pro rata) |", "|---|---|---|---|---|---|---|---|"]
    for key, count in (("spec", n), ("spec_big", big), ("spec_big_json", big)):
        r = res.get(key, {})
        if "load_workflow" in r:
            goal = GOALS["spec_1m"] * count / 1_000_000
            lines.append(f"| {key} | {count:,} | {r['mb']:.1f} | {r['validate_cli']:.2f} | "
                         f"{fmt(r.get('validate_cli_cpu'))} | {r['load_workflow']:.2f} | "
                         f"{fmt(r.get('load_workflow_cpu'))} | {goal:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--side", choices=list(SIDES))
    p.add_argument("--only", action="append", choices=[*SIDES, "spec_big", "spec_big_json"])
    p.add_argument("--width", type=int)
    p.add_argument("--length", type=int, default=100, help="of each chain (full run)")
    p.add_argument("--file")
    p.add_argument("--update", action="store_true",
                   help="with --only: rerun those sides, keep the others from "
                        "bench/results/scale.json, and write the results")
    args = p.parse_args()
    if args.quick:
        global QUICK
        QUICK = True
    if args.side:
        run_side(args)
        return
    width, big_width = (10, 1000) if args.quick else (args.width or 1000, 10_000)
    length = 20 if args.quick else args.length
    n, big = width * length + 2, big_width * length + 2
    folder = Path(tempfile.mkdtemp(prefix="kale-scale-wf-"))
    try:
        path = write_workflow(folder / "small", width, length)
        big_path = write_workflow(folder / "big", big_width, length)
        res: dict[str, dict[str, Any]] = {}
        for name in ("spec", "spec_big", "spec_big_json", "manager", "embedded", "parsl",
                     "dask"):
            if args.only and name not in args.only:
                continue
            which, f, w = ("spec", big_path, big_width) if name == "spec_big" else (
                ("spec", write_json(big_path), big_width) if name == "spec_big_json" else
                (name, path, width))
            t0 = time.perf_counter()
            load0 = loadavg()
            res[name] = side(which, w, length, f)
            res[name]["load"] = [load0, loadavg()]
            res[name]["at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(f"{name}: {time.perf_counter() - t0:.0f} s {res[name]}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = report(n, big, res)
    print(text)
    if args.update and RESULTS_JSON.exists():
        kept = json.loads(RESULTS_JSON.read_text())["results"]
        res = {name: res.get(name, kept.get(name, {})) for name in (*kept, *res)}
        text = report(n, big, res)
        print(text)
    if not args.quick and (args.update or not args.only):
        RESULTS.write_text(text)
        RESULTS_JSON.write_text(json.dumps({"tasks": n, "big": big, "results": res},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()

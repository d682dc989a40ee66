"""The overhead Kale adds over using Dask or Parsl directly, side by side in one run.

    python bench/engines.py            # full sizes (~15 min) -> bench/results/engines.txt
    python bench/engines.py --quick    # small sizes, CI smoke (< 2 min); prints only
    python bench/engines.py --profile dask|parsl [--n 1000]   # where Kale's time goes

Two sides, each in a fresh process of its own (its own TMPDIR, its session killed at the
end, so nothing one leaves running disturbs the other):

``dask``   one ``distributed.LocalCluster`` (worker processes, one per core, one thread
           each), used by both rows: *Dask alone* is ``client.map`` of the no-op (a chain:
           ``client.submit(noop, previous)``), then gather; *Kale on Dask* is
           ``Workflow.run()`` (the embedded engine) with ``executor: {kind: dask,
           address: <that cluster's scheduler>}``, so each Kale attempt is one Dask future
           of ``run_on_dask`` on the same workers.
``parsl``  *Parsl alone* is a ``HighThroughputExecutor`` with a ``LocalProvider`` (one
           block, a worker per core) loaded with ``parsl.load``, a ``python_app`` of the
           no-op, a list of futures; *Kale on Parsl* is ``executor: {kind: parsl, config:
           "cfg:config"}``, where ``cfg.config()`` returns the same configuration.

Every system runs the same function, ``mod:noop`` (a module written into a temporary
folder on every worker's ``PYTHONPATH``). Workloads: ``noop`` (N independent tasks, the
issue's goal: Kale within 1.5x of the engine alone at 1,000), ``chain`` (N dependent
tasks, per-hop latency) and ``scale`` (one 10,000-task run).

What is timed: the engine alone from submitting the first task to the last result, on an
engine already started and warmed with one task (its start-up and first task are listed
apart); Kale from ``wf.run()`` to ``wait()`` returning, in a fresh Kale home each time (no
reuse), so its times *include* the run's setup (the store, the Dask client's connection;
for Parsl, the DataFlowKernel Kale makes for each run, with its HTEX interchange and
workers starting) and teardown. *in-run* is Kale's first task start to last task end (the
run's task records). Runs of the engine alone and of Kale alternate, so a drift of the
machine's load hits both alike. No timing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
MARKER = "@@RESULT "
WORKERS = os.cpu_count() or 1
GOAL = 1.5  # Kale at most 1.5x the engine alone's time, 1,000 no-op tasks

MODULE = '''"""The task every system runs."""


def noop(*_args):
    return None
'''
CFG = f'''"""Both Parsl rows' configuration: HTEX, a LocalProvider, a worker per core."""

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


def config(run_dir="runinfo"):
    return Config(
        executors=[HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node={WORKERS},
            cores_per_worker=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, strategy="none", strategy_period=0.5)
'''


@dataclass(frozen=True)
class Sizes:
    """Tasks per workload and how many timed runs of each (a run of Kale and one of the
    engine alone per round)."""

    noop: int
    chain: int
    scale: int
    rounds: int

    def plan(self) -> list[tuple[str, int, int]]:
        return [("noop", self.noop, self.rounds), ("chain", self.chain, self.rounds),
                ("scale", self.scale, 1)]


FULL = Sizes(noop=1000, chain=200, scale=10_000, rounds=3)
QUICK = Sizes(noop=50, chain=10, scale=200, rounds=1)


# -- one side, in its own process -----------------------------------------------------------
def project() -> Path:
    """The temporary folder with ``mod.py`` and ``cfg.py``, on the workers' path."""
    folder = Path(tempfile.mkdtemp(prefix="kale-bench-engines-"))
    (folder / "mod.py").write_text(MODULE)
    (folder / "cfg.py").write_text(CFG)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, str(folder))
    os.environ["KALE_HOME"] = str(folder / "home")
    return folder


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class KaleRows:
    """Kale runs of ``mod:noop`` workflows on one executor spec, each in a fresh home."""

    def __init__(self, folder: Path, executor: dict[str, Any]) -> None:
        self.folder, self.executor = folder, executor
        self.homes = 0

    def workflow(self, kind: str, n: int) -> Any:
        from kale import Workflow

        wf = Workflow(f"bench-engines-{kind}", base_dir=self.folder, executor=self.executor)
        for i in range(n):
            after = [f"t{i - 1}"] if kind == "chain" and i else []
            wf.python("mod:noop", name=f"t{i}", after=after)
        return wf

    def run(self, wf: Any) -> tuple[float, float]:
        """Seconds from ``run()`` to ``wait()`` returning, and the run's in-run seconds."""
        self.homes += 1
        home = self.folder / f"home-{self.homes}"
        t0 = time.perf_counter()
        run = wf.run(home=home).wait()
        took = time.perf_counter() - t0
        tasks = run.tasks
        if run.state.value != "SUCCEEDED":
            bad = [t for t in tasks if t.state.value != "SUCCEEDED"][:1]
            why = f": {bad[0].name} {bad[0].state.value} {bad[0].error}" if bad else ""
            raise RuntimeError(f"Kale run {run.state.value}{why}")
        return took, float(max(t.ended_at for t in tasks) - min(t.started_at for t in tasks))


def alternate(plan: list[tuple[str, int, int]], engine: Callable[[str, int], None],
              kale: KaleRows) -> dict[str, Any]:
    """Each workload: rounds of the engine alone then Kale, timed."""
    out: dict[str, Any] = {}
    for kind, n, rounds in plan:
        wf = kale.workflow(kind, n)
        row: dict[str, Any] = {"n": n, "engine": [], "kale": [], "in_run": []}
        for r in range(rounds):
            row["engine"].append(timed(lambda kind=kind, n=n: engine(kind, n)))
            took, in_run = kale.run(wf)
            row["kale"].append(took)
            row["in_run"].append(in_run)
            print(f"  {kind} n={n} round {r + 1}: engine {row['engine'][-1]:.3f} s, "
                  f"Kale {took:.3f} s", file=sys.stderr, flush=True)
        out[kind] = row
    return out


def side_dask(sizes: Sizes) -> dict[str, Any]:
    folder = project()
    import mod  # type: ignore[import-not-found]
    from distributed import Client, LocalCluster, wait

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    startup = time.perf_counter() - t0

    def engine(kind: str, n: int) -> None:
        if kind == "chain":
            f = client.submit(mod.noop, pure=False)
            for _ in range(n - 1):
                f = client.submit(mod.noop, f, pure=False)
            f.result()
            return
        futures = client.map(mod.noop, range(n), pure=False)
        wait(futures)
        bad = [f for f in futures if f.status != "finished"]
        if bad:
            raise RuntimeError(f"{len(bad)} Dask tasks ended {bad[0].status}")
        client.gather(futures)

    try:
        first = timed(lambda: client.submit(mod.noop, pure=False).result())
        kale = KaleRows(folder, {"kind": "dask", "address": cluster.scheduler_address})
        kale_first, _ = kale.run(kale.workflow("noop", 1))
        rows = alternate(sizes.plan(), engine, kale)
    finally:
        client.close()
        cluster.close()
    return {"startup": startup, "first": first, "kale_first": kale_first, "rows": rows}


def side_parsl(sizes: Sizes) -> dict[str, Any]:
    folder = project()
    import cfg  # type: ignore[import-not-found]
    import mod
    import parsl

    t0 = time.perf_counter()
    dfk = parsl.load(cfg.config(str(folder / "parsl-alone")))
    startup = time.perf_counter() - t0
    app = parsl.python_app(mod.noop, data_flow_kernel=dfk)

    def engine(kind: str, n: int) -> None:
        if kind == "chain":
            f = app()
            for _ in range(n - 1):
                f = app(f)
            f.result()
            return
        futures = [app() for _ in range(n)]
        for f in futures:
            f.result()

    try:
        first = timed(lambda: app().result())
        kale = KaleRows(folder, {"kind": "parsl", "config": "cfg:config"})
        kale_first, _ = kale.run(kale.workflow("noop", 1))
        rows = alternate(sizes.plan(), engine, kale)
    finally:
        dfk.cleanup()
    return {"startup": startup, "first": first, "kale_first": kale_first, "rows": rows}


def side(engine: str, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    try:
        doc = (side_dask if engine == "dask" else side_parsl)(sizes)
    except Exception as e:
        import traceback

        traceback.print_exc()
        doc = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.flush()
    print(MARKER + json.dumps(doc), flush=True)


# -- where the time goes -------------------------------------------------------------------
def profile_threads(profiles: list[tuple[str, Any]]) -> Callable[[], None]:
    """Give every thread started from now on its own cProfile (the run's engine and
    commit threads, the Dask client's loop); returns an undo."""
    import cProfile

    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            profiles.append((self.name, prof))

    threading.Thread.run = run  # type: ignore[method-assign]

    def undo() -> None:
        threading.Thread.run = original  # type: ignore[method-assign]

    return undo


def print_profiles(profiles: list[tuple[str, Any]], top: int) -> None:
    import io
    import pstats

    by_name: dict[str, pstats.Stats] = {}
    for name, prof in profiles:
        group = name.rstrip("0123456789-_")
        if group in by_name:
            by_name[group].add(prof)
        else:
            by_name[group] = pstats.Stats(prof, stream=io.StringIO())
    for group, stats in sorted(by_name.items()):
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.strip_dirs().sort_stats("tottime").print_stats(top)
        print(f"===== thread {group} (by own time) =====\n{buf.getvalue()}")


def worker_side(stream: list[dict[str, Any]], what: str) -> None:
    """Per-task times on the Dask workers, from the client's task stream."""
    spans = [(s["startstops"], s["key"]) for s in stream]
    compute = [ss["stop"] - ss["start"] for sss, _ in spans for ss in sss
               if ss["action"] == "compute"]
    moves = [ss["stop"] - ss["start"] for sss, _ in spans for ss in sss
             if ss["action"] != "compute"]
    if compute:
        print(f"{what}: {len(compute)} tasks; on the worker, compute median "
              f"{statistics.median(compute) * 1000:.2f} ms, total {sum(compute):.2f} s over "
              f"{WORKERS} workers; transfers/other {sum(moves):.2f} s")


def profile(engine: str, n: int, top: int) -> None:
    """Kale on ``engine`` (1 warm-up run, then an ``n``-task run) under cProfile, each
    thread apart; for Dask also the task stream of the same tasks run by Dask alone."""
    folder = project()
    import cProfile

    profiles: list[tuple[str, Any]] = []
    cluster: Any = None
    if engine == "dask":
        import mod
        from distributed import Client, LocalCluster, get_task_stream

        cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=":0",
                               silence_logs=logging.ERROR)
        client = Client(cluster)
        spec: dict[str, Any] = {"kind": "dask", "address": cluster.scheduler_address}
    else:
        spec = {"kind": "parsl", "config": "cfg:config"}
    try:
        kale = KaleRows(folder, spec)
        kale.run(kale.workflow("noop", 1))
        wf = kale.workflow("noop", n)
        if engine == "dask":
            with get_task_stream(client) as alone:
                client.gather(client.map(mod.noop, range(n), pure=False))
            worker_side(alone.data, "Dask alone")
            stream_cm: Any = get_task_stream(client)
        else:
            stream_cm = contextlib.nullcontext()
        undo = profile_threads(profiles)
        main_prof = cProfile.Profile()
        with stream_cm as stream:
            main_prof.enable()
            took, in_run = kale.run(wf)
            main_prof.disable()
        undo()
        print(f"Kale on {engine}, {n} no-op tasks: {took:.3f} s (in-run {in_run:.3f} s) "
              "under cProfile")
        if stream is not None:
            worker_side([s for s in stream.data if str(s["key"]).startswith("kale-")],
                        "Kale on Dask")
        profiles.append(("main", main_prof))
        print_profiles(profiles, top)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()


# -- the driver -----------------------------------------------------------------------------
def run_side(engine: str, quick: bool, timeout: float) -> dict[str, Any]:
    """One side in a fresh process (its own session and TMPDIR); its progress goes to our
    stderr; whatever it leaves running is killed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_side", engine,
           *(["--quick"] if quick else [])]
    with tempfile.TemporaryDirectory(prefix="kale-bench-", ignore_cleanup_errors=True) as tmp:
        proc = subprocess.Popen(cmd, cwd=tmp, env={**os.environ, "TMPDIR": tmp},
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout:g} s"}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            doc: dict[str, Any] = json.loads(line[len(MARKER):])
            return doc
    return {"error": f"exit code {proc.returncode}, no result"}


LABELS = {"dask": ("Dask alone", "Kale on Dask"), "parsl": ("Parsl alone", "Kale on Parsl")}
WHAT = {"noop": "independent no-op tasks", "chain": "a chain of dependent no-op tasks",
        "scale": "independent no-op tasks (scaling)"}


def rate(kind: str, n: int, seconds: float) -> str:
    if kind == "chain":
        return f"{seconds / n * 1000:.2f} ms/hop"
    return f"{n / seconds:,.0f} tasks/s"


def workload_table(kind: str, sides: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| system | n | runs (s) | median (s) | rate | Kale in-run (s) | Kale / engine |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for engine, doc in sides.items():
        alone, kale = LABELS[engine]
        if "error" in doc:
            rows.append(f"| {alone} / {kale} | | {doc['error']} | | | | |")
            continue
        row = doc["rows"][kind]
        n, med = row["n"], {k: statistics.median(row[k]) for k in ("engine", "kale")}
        ratio = statistics.median(k / e for k, e in zip(row["kale"], row["engine"],
                                                        strict=True))
        for label, key in ((alone, "engine"), (kale, "kale")):
            runs = ", ".join(f"{t:.3f}" for t in row[key])
            in_run = f"{statistics.median(row['in_run']):.3f}" if key == "kale" else ""
            rows.append(f"| {label} | {n:,} | {runs} | {med[key]:.3f} | "
                        f"{rate(kind, n, med[key])} | {in_run} | "
                        f"{f'**{ratio:.2f}x**' if key == 'kale' else ''} |")
    return rows


def startup_table(sides: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| engine | engine start-up (s) | engine's first task (s) | "
            "Kale's first one-task run (s) |", "|---|---:|---:|---:|"]
    for engine, doc in sides.items():
        if "error" not in doc:
            rows.append(f"| {engine} | {doc['startup']:.3f} | {doc['first']:.3f} | "
                        f"{doc['kale_first']:.3f} |")
    return rows


def goal_lines(sides: dict[str, dict[str, Any]], quick: bool) -> list[str]:
    lines = []
    for engine, doc in sides.items():
        if "error" in doc:
            lines.append(f"- {LABELS[engine][1]}: no result ({doc['error']})")
            continue
        row = doc["rows"]["noop"]
        ratio = statistics.median(k / e for k, e in zip(row["kale"], row["engine"],
                                                        strict=True))
        met = "met" if ratio <= GOAL else "NOT met"
        lines.append(f"- {LABELS[engine][1]}, {row['n']:,} no-op tasks: {ratio:.2f}x the "
                     f"engine alone's time: goal (at most {GOAL}x) **{met}**"
                     + (" (quick sizes: start-up weighs more; the goal is for 1,000)"
                        if quick else ""))
    return lines


def report(sides: dict[str, dict[str, Any]], quick: bool, wall: float) -> str:
    from environment import describe, load_average

    head = [f"### Kale on Dask and Parsl vs the engines alone "
            f"({'quick' if quick else 'full'} sizes)", ""]
    head += [f"- {k}: {v}" for k, v in describe(BENCH.parent)]
    head += [f"- load average at the end: {load_average()}",
             f"- workers: {WORKERS} (one per core) on every system",
             "- command: " + " ".join(["python bench/engines.py", *sys.argv[1:]]),
             f"- bench wall time: {wall:.0f} s", ""]
    body = ["Goal (issue 16): Kale within 1.5x of the engine alone for 1,000 no-op tasks.",
            "", *goal_lines(sides, quick), "", "Start-up (not in the timed runs of the "
            "engine alone; in every Kale run, which connects or starts its own):", "",
            *startup_table(sides)]
    for kind in ("noop", "chain", "scale"):
        body += ["", f"{WHAT[kind]}; Kale / engine: the median of each round's ratio", "",
                 *workload_table(kind, sides)]
    return "\n".join(head + body) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["_side"]:
        side(sys.argv[2], "--quick" in sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    p.add_argument("--profile", choices=["dask", "parsl"],
                   help="instead: Kale on this engine under cProfile, per thread")
    p.add_argument("--n", type=int, default=1000, help="tasks of the --profile run")
    p.add_argument("--top", type=int, default=25, help="functions per thread (--profile)")
    args = p.parse_args()
    if args.profile:
        profile(args.profile, args.n, args.top)
        return
    t0 = time.perf_counter()
    sides = {}
    for engine in ("dask", "parsl"):
        print(f"[{engine}]", file=sys.stderr, flush=True)
        sides[engine] = run_side(engine, args.quick, 120 if args.quick else 1800)
    text = report(sides, args.quick, time.perf_counter() - t0)
    print(text)
    if not args.quick:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "engines.txt").write_text(text)
        print(f"written to {BENCH / 'results' / 'engines.txt'}", file=sys.stderr)
    if any("error" in doc for doc in sides.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()

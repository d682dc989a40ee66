"""A map of 10,000 elements in Kale against Parsl and Dask, side by side in one run (issue 18).

    python bench/dynamic.py            # 10,000 elements, 3 rounds (6-13 min) -> results/dynamic.txt
    python bench/dynamic.py --quick    # 500 elements, 1 round, CI smoke (~30 s); prints only
    python bench/dynamic.py --profile [--n 2000]  # Kale's map under cProfile, per thread

The workload, the same function bodies on every system (``mapmod``, a module written into a
temporary folder on every worker's ``PYTHONPATH``): ``make(n)`` returns ``list(range(n))``;
``one(x)`` (returns ``x``: a no-op) runs once per element; ``total`` sums the list of their
results. How each system says it:

``Kale``     ``make = wf.python(make, parameters={"n": n})``, ``wf.python(one,
             map=make.result)`` (members ``one[0]`` ... ``one[n-1]``; the map's result is
             the list of theirs), ``wf.python(total, after=[one])``. *embedded*:
             ``wf.run(jobs=2)`` in this process (LocalExecutor, 2 warm Python workers) in a
             fresh home each time, so nothing is reused and the run's setup, worker start-up
             and teardown are in its time; *manager*: ``kale.Client.submit(force=True)`` to
             ``kale manager start --workers 2`` (started, and its workers warmed by a small
             map, before the timed run), until the run's event stream ends.
``Parsl``    HTEX, a LocalProvider, one block of 2 workers (``_peer_parsl.config``):
             ``xs = make_app(n).result()``, ``[one_app(x) for x in xs]``, then
             ``total_app(inputs=futures).result()``.
``Dask``     ``LocalCluster`` of 2 worker processes, one thread each (as ``_peer_dask``):
             ``xs = client.submit(make, n).result()``, ``client.map(one, xs)``, then
             ``client.submit(total, futures).result()``; ``pure=False`` throughout.

Parsl and Dask are started and warmed with one task before the timed run (their start-up is
listed apart). Every system runs in a fresh process of its own, with its own ``TMPDIR``
(what it leaves running is killed by session and by that folder); rounds go Kale embedded,
Kale manager, Parsl, Dask, then again, so a drift of the machine's load hits all alike.

Also measured, Kale embedded: the same home run again unchanged (every member reused), and
with one element changed (``make`` returns ``n`` in place of ``0`` at index 0: ``make``,
one member and ``total`` run, the other members reuse); and a control, ``n`` independent
tasks ``one(x=i)`` written out (no map), to tell the map's own cost from a task's. Where a
cold Kale run's time goes comes from its task records (start and end of each phase). No
timing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import MARKER, timed

BENCH = Path(__file__).resolve().parent
WORKERS = 2
SIDES = ("kale", "manager", "parsl", "dask")
MODULE = '''"""The map benchmark's task bodies: every system runs these."""


def make(n, bump=0):
    """The list a map goes over: 0 .. n-1, with ``bump`` added to its first element."""
    xs = list(range(n))
    xs[0] += bump
    return xs


def one(x):
    """A map's member: a no-op that returns its element."""
    return x


def total(one):
    """The join: the sum of every member's result."""
    return sum(one)


def total_inputs(inputs=()):
    """The join as a Parsl app (Parsl resolves the futures given as ``inputs``)."""
    return sum(inputs)
'''


@dataclass(frozen=True)
class Sizes:
    """Elements of the map, and timed rounds (one run of each system per round)."""

    n: int
    rounds: int


FULL = Sizes(n=10_000, rounds=3)
QUICK = Sizes(n=500, rounds=1)
PARAM_N = 1000  # elements of the map over a workflow parameter (reuse after one changes)


# -- one side, in its own process -----------------------------------------------------------
def project() -> Path:
    """The temporary folder with ``mapmod.py``, on this process's and the workers' path;
    the default Kale home inside it."""
    folder = Path(tempfile.mkdtemp(prefix="kale-bench-dynamic-"))
    (folder / "mapmod.py").write_text(MODULE)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), str(BENCH), os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, str(folder))
    os.environ["KALE_HOME"] = str(folder / "home")
    return folder


def map_workflow(folder: Path, n: int, bump: int = 0) -> Any:
    """``make`` -> ``one`` mapped over its result -> ``total``."""
    import mapmod

    from kale import Workflow

    wf = Workflow("bench-map", base_dir=folder)
    make = wf.python(mapmod.make, parameters={"n": n, "bump": bump})
    one = wf.python(mapmod.one, map=make.result)
    wf.python(mapmod.total, after=[one])
    return wf


def param_workflow(folder: Path, xs: list[int]) -> Any:
    """``one`` mapped over a workflow parameter (``map="${params.xs}"``) -> ``total``."""
    import mapmod

    from kale import Workflow

    wf = Workflow("bench-param-map", base_dir=folder, parameters={"xs": xs})
    one = wf.python(mapmod.one, map="${params.xs}")
    wf.python(mapmod.total, after=[one])
    return wf


def static_workflow(folder: Path, n: int) -> Any:
    """The control: ``n`` independent tasks ``one(x=i)`` written out, no map."""
    import mapmod

    from kale import Workflow

    wf = Workflow("bench-static", base_dir=folder)
    for i in range(n):
        wf.python(mapmod.one, name=f"one-{i}", parameters={"x": i})
    return wf


def kale_run(wf: Any, home: Path) -> tuple[float, float, Any]:
    """``wf.run(jobs=2)`` in ``home`` until ``wait()`` returns: the epoch time it was
    called, the seconds it took, and the finished run (which must have succeeded)."""
    wall = time.time()
    t0 = time.perf_counter()
    run = wf.run(jobs=WORKERS, home=home).wait()
    took = time.perf_counter() - t0
    if run.state.value != "SUCCEEDED":
        bad = [t for t in run.tasks if t.state.value != "SUCCEEDED"][:1]
        why = f": {bad[0].name} {bad[0].state.value} {bad[0].error}" if bad else ""
        raise RuntimeError(f"Kale run {run.state.value}{why}")
    return wall, took, run


def counted_members(run: Any) -> dict[str, int]:
    """Members that ran and members that reused an earlier result."""
    members = [t for t in run.tasks if t.name.startswith("one[")]
    reused = sum(1 for t in members if t.reused_from is not None)
    return {"members": len(members), "reused": reused, "ran": len(members) - reused}


def phases(wall: float, took: float, run: Any) -> dict[str, float]:
    """Where a map run's time went, from its task records (seconds)."""
    tasks = {t.name: t for t in run.tasks}
    members = [t for name, t in tasks.items() if name.startswith("one[")]
    first = min(t.started_at for t in members)
    last = max(t.ended_at for t in members)
    make, total = tasks["make"], tasks["total"]
    return {"setup": make.started_at - wall, "make": make.ended_at - make.started_at,
            "expand": first - make.ended_at, "members": last - first,
            "gather": total.started_at - last, "total": total.ended_at - total.started_at,
            "teardown": wall + took - total.ended_at}


def counted(wall: float, took: float, run: Any) -> dict[str, float]:
    """Members that ran and members that reused an earlier result; seconds until
    ``make`` was done (run or reused), then until the last member was, then the rest."""
    make = next(t for t in run.tasks if t.name == "make").ended_at - wall
    last = max(t.ended_at for t in run.tasks if t.name.startswith("one[")) - wall
    return {**counted_members(run), "make": make, "members_s": last - make,
            "rest": took - last}


def side_kale(n: int) -> dict[str, Any]:
    folder = project()
    kale_run(map_workflow(folder, 2), folder / "warm")  # imports and first-use costs
    home = folder / "map"
    wall, cold, run = kale_run(map_workflow(folder, n), home)
    if run.result("total") != n * (n - 1) // 2:
        raise RuntimeError(f"Kale's total: {run.result('total')}")
    out: dict[str, Any] = {"seconds": cold, "phases": phases(wall, cold, run),
                           "cold": counted(wall, cold, run)}
    for key, bump in (("reuse", 0), ("changed", n)):
        wall, out[key], run = kale_run(map_workflow(folder, n, bump), home)
        out[f"{key}_counts"] = counted(wall, out[key], run)
    if run.result("total") != n * (n - 1) // 2 + n:
        raise RuntimeError(f"Kale's total after the change: {run.result('total')}")
    xs = list(range(min(n, PARAM_N)))
    kale_run(param_workflow(folder, xs), folder / "param")
    wall, out["param"], run = kale_run(param_workflow(folder, [-1, *xs[1:]]), folder / "param")
    out["param_counts"] = counted_members(run)
    _, out["static"], run = kale_run(static_workflow(folder, n), folder / "static")
    starts = [t.started_at for t in run.tasks]
    out["static_in_run"] = max(t.ended_at for t in run.tasks) - min(starts)
    return out


def side_manager(n: int) -> dict[str, Any]:
    from _common import timed_manager_run
    from _manager import manager

    folder = project()
    with manager(folder) as m:
        client = m.client()
        try:
            warm = timed_manager_run(client, map_workflow(folder, 100))
            took = timed_manager_run(client, map_workflow(folder, n))
        finally:
            client.close()
        return {"seconds": took, "startup": m.startup, "first": warm}


def side_parsl(n: int) -> dict[str, Any]:
    project()
    import mapmod
    import parsl

    from _peer_parsl import config

    t0 = time.perf_counter()
    dfk = parsl.load(config("htex"))
    startup = time.perf_counter() - t0
    make, one = parsl.python_app(mapmod.make), parsl.python_app(mapmod.one)
    total = parsl.python_app(mapmod.total_inputs)
    try:
        first = timed(lambda: one(0).result())

        def body() -> int:
            xs = make(n).result()
            futures = [one(x) for x in xs]
            got: int = total(inputs=futures).result()
            return got

        t0 = time.perf_counter()
        got = body()
        took = time.perf_counter() - t0
    finally:
        dfk.cleanup()
    if got != n * (n - 1) // 2:
        raise RuntimeError(f"Parsl's total: {got}")
    return {"seconds": took, "startup": startup, "first": first}


def side_dask(n: int) -> dict[str, Any]:
    import logging

    project()
    import mapmod
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    startup = time.perf_counter() - t0
    try:
        first = timed(lambda: client.submit(mapmod.one, 0, pure=False).result())
        t0 = time.perf_counter()
        xs = client.submit(mapmod.make, n, pure=False).result()
        futures = client.map(mapmod.one, xs, pure=False)
        got = client.submit(mapmod.total, futures, pure=False).result()
        took = time.perf_counter() - t0
    finally:
        client.close()
        cluster.close()
    if got != n * (n - 1) // 2:
        raise RuntimeError(f"Dask's total: {got}")
    return {"seconds": took, "startup": startup, "first": first}


def side(name: str, n: int) -> None:
    run = {"kale": side_kale, "manager": side_manager, "parsl": side_parsl,
           "dask": side_dask}[name]
    try:
        doc = run(n)
    except Exception as e:
        import traceback

        traceback.print_exc()
        doc = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.flush()
    print(MARKER + json.dumps(doc), flush=True)


# -- the driver -----------------------------------------------------------------------------
def reap(folder: str) -> int:
    """SIGKILL every process of this user whose ``TMPDIR`` is ``folder`` or whose command
    line names it (a side's leftovers: Parsl's interchange and worker pools, Dask's
    workers, a manager's workers); returns how many."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == os.getpid():
            continue
        try:
            tmp = proc.environ().get("TMPDIR", "")
            cmd = " ".join(proc.info["cmdline"] or ())
        except (psutil.Error, OSError):
            continue
        if tmp == folder or folder in cmd:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed += 1
    return killed


def run_side(name: str, n: int, timeout: float) -> dict[str, Any]:
    """One side in a fresh process (its own session and TMPDIR); its progress goes to our
    stderr; whatever it leaves running is killed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_side", name, str(n)]
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
            left = reap(tmp)
            if left:
                print(f"  killed {left} processes {name} left", file=sys.stderr)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            doc: dict[str, Any] = json.loads(line[len(MARKER):])
            return doc
    return {"error": f"exit code {proc.returncode}, no result"}


def other_load() -> str:
    """Test runs going on besides this one (``pgrep -af pytest``), else "none seen"."""
    out = subprocess.run(["pgrep", "-af", "pytest"], capture_output=True, text=True).stdout
    lines = [line for line in out.splitlines() if "pgrep" not in line]
    return f"{len(lines)} pytest processes running" if lines else "none seen"


def measure(sizes: Sizes) -> dict[str, list[dict[str, Any]]]:
    """Every side, once a round, round after round."""
    got: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    timeout = 180 if sizes.n <= 1000 else 1200
    for r in range(sizes.rounds):
        for name in SIDES:
            doc = run_side(name, sizes.n, timeout)
            got[name].append(doc)
            said = doc.get("error") or f"{doc['seconds']:.3f} s"
            print(f"  round {r + 1} {name}: {said}", file=sys.stderr, flush=True)
    return got


# -- the report -----------------------------------------------------------------------------
LABELS = {"kale": "Kale embedded (`wf.run()`, LocalExecutor)",
          "manager": "Kale through the manager (`Client.submit`)",
          "parsl": "Parsl HTEX (list comprehension of apps, `inputs=` join)",
          "dask": "Dask LocalCluster (`client.map`, `client.submit(total, futures)`)"}


def med(docs: list[dict[str, Any]], key: str = "seconds") -> float:
    return float(statistics.median(d[key] for d in docs))


def ok(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if "error" not in d]


def versus(kale: list[dict[str, Any]], peer: list[dict[str, Any]], n: int) -> str:
    """Kale's overhead per member over a peer (ms) and Kale's time over the peer's: the
    median of each round's (a round's runs share the machine's load of the moment)."""
    pairs = [(k["seconds"], p["seconds"]) for k, p in zip(kale, peer, strict=False)
             if "error" not in k and "error" not in p]
    if not pairs:
        return " | "
    over = statistics.median((k - p) / n * 1000 for k, p in pairs)
    return f"{over:+.2f} | {statistics.median(k / p for k, p in pairs):.2f}x"


def main_table(got: dict[str, list[dict[str, Any]]], n: int) -> list[str]:
    rows = ["| system | runs (s) | median (s) | members/s | Kale embedded: overhead per "
            "member (ms) | Kale embedded / this | Kale manager: overhead per member (ms) | "
            "Kale manager / this |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    kale, mgr = got["kale"], got["manager"]
    for name in SIDES:
        docs = ok(got[name])
        if not docs:
            errors = "; ".join(d["error"] for d in got[name])
            rows.append(f"| {LABELS[name]} | {errors} | | | | | | |")
            continue
        runs = ", ".join(f"{d['seconds']:.3f}" for d in docs)
        m = med(docs)
        rows.append(f"| {LABELS[name]} | {runs} | {m:.3f} | {n / m:,.0f} | "
                    f"{versus(kale, got[name], n) if name != 'kale' else ' | '} | "
                    f"{versus(mgr, got[name], n) if name not in ('kale', 'manager') else ' | '} |")
    return rows


def startup_table(got: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| system | start-up (s) | first task or run (s) |", "|---|---:|---:|"]
    for name, what in (("manager", "`kale manager start`; a 100-element map"),
                       ("parsl", "`parsl.load`; one app"), ("dask", "cluster and client; "
                                                           "one future")):
        docs = ok(got[name])
        if docs:
            rows.append(f"| {name} ({what}) | {med(docs, 'startup'):.3f} | "
                        f"{med(docs, 'first'):.3f} |")
    return rows


def rerun_table(kale: list[dict[str, Any]], n: int) -> list[str]:
    rows = ["| Kale embedded, same home | runs (s) | median (s) | members run | members "
            "reused | ms per member | until `make` done or reused (s) | then until the last "
            "member (s) | the rest (s) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, key in (("cold (fresh home, nothing to reuse)", "cold"),
                       ("run again unchanged", "reuse"), ("one element changed", "changed")):
        col = "seconds" if key == "cold" else key
        counts = "cold" if key == "cold" else f"{key}_counts"
        runs = ", ".join(f"{d[col]:.3f}" for d in kale)
        c, m = kale[-1][counts], med(kale, col)
        split = " | ".join(f"{statistics.median(d[counts][k] for d in kale):.3f}"
                           for k in ("make", "members_s", "rest"))
        rows.append(f"| {label} | {runs} | {m:.3f} | {c['ran']:,} | {c['reused']:,} | "
                    f"{m / n * 1000:.3f} | {split} |")
    static = med(kale, "static")
    runs = ", ".join(f"{d['static']:.3f}" for d in kale)
    rows.append(f"| control: {n:,} tasks written out, no map (fresh home) | {runs} | "
                f"{static:.3f} | {n:,} | 0 | {static / n * 1000:.3f} | | | |")
    c, p = kale[-1]["param_counts"], med(kale, "param")
    runs = ", ".join(f"{d['param']:.3f}" for d in kale)
    rows.append(f"| map over `${{params.xs}}` ({c['members']:,} elements), one element "
                f"changed | {runs} | {p:.3f} | "
                f"{c['ran']:,} | {c['reused']:,} | {p / c['members'] * 1000:.3f} | | | |")
    return rows


def phase_table(kale: list[dict[str, Any]], n: int) -> list[str]:
    what = {"setup": "`wf.run()` called -> `make` starts (store, run rows, warm workers)",
            "make": "`make` runs", "expand": "`make` ends -> first member starts (the map "
            "resolved, members' keys and rows)", "members": "first member starts -> last "
            "member ends", "gather": "last member ends -> `total` starts (the map's result)",
            "total": "`total` runs", "teardown": "`total` ends -> `wait()` returns"}
    rows = ["| phase (cold run, median of rounds) | s | ms per member |", "|---|---:|---:|"]
    for key, label in what.items():
        s = statistics.median(d["phases"][key] for d in kale)
        rows.append(f"| {label} | {s:.3f} | {s / n * 1000:.3f} |")
    static = statistics.median(d["static_in_run"] for d in kale)
    rows.append(f"| control: first task starts -> last ends, {n:,} tasks written out | "
                f"{static:.3f} | {static / n * 1000:.3f} |")
    return rows


def report(got: dict[str, list[dict[str, Any]]], sizes: Sizes, wall: float,
           load: tuple[str, str]) -> str:
    from environment import describe, load_average

    n = sizes.n
    head = [f"### Maps: a {n:,}-element map in Kale, Parsl and Dask "
            f"({'quick' if sizes.n == QUICK.n else 'full'} sizes)", ""]
    head += [f"- {k}: {v}" for k, v in describe(BENCH.parent)]
    head += [f"- load average at the end: {load_average()}",
             f"- other test runs: {load[0]} at the start, {load[1]} at the end",
             f"- workers: {WORKERS} processes on every system; {sizes.rounds} round(s)",
             "- command: " + " ".join(["python bench/dynamic.py", *sys.argv[1:]]),
             f"- bench wall time: {wall:.0f} s", ""]
    body = [f"`make` -> `one` mapped over its {n:,}-element list -> `total`; seconds from "
            "submitting (Kale: `wf.run()`, setup included) to the total; overhead per member "
            "= (Kale's time - this system's) / members, and Kale / this: each the median of "
            "the rounds' (a round runs every system once, one after the other)", "",
            *main_table(got, n), "", "Start-up (not in Parsl's and Dask's timed runs; Kale "
            "embedded starts its workers in every run):", "", *startup_table(got)]
    kale = ok(got["kale"])
    if kale:
        body += ["", "Kale's re-runs of the map:", "", *rerun_table(kale, n), "",
                 "Where a cold Kale run's time goes (its task records):", "",
                 *phase_table(kale, n)]
    return "\n".join(head + body) + "\n"


# -- where the time goes -------------------------------------------------------------------
def profile(n: int, top: int) -> None:
    """Kale's map of ``n`` elements, embedded, under cProfile per thread."""
    import cProfile

    from engines import print_profiles, profile_threads

    folder = project()
    kale_run(map_workflow(folder, 2), folder / "warm")
    wf = map_workflow(folder, n)
    profiles: list[tuple[str, Any]] = []
    undo = profile_threads(profiles)
    main_prof = cProfile.Profile()
    main_prof.enable()
    try:
        wall, took, run = kale_run(wf, folder / "profiled")
    finally:
        main_prof.disable()
        undo()
    print_profiles([*profiles, ("main", main_prof)], top)
    print(f"{n} members under cProfile: {took:.3f} s; phases (s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in phases(wall, took, run).items()))


def main() -> None:
    if sys.argv[1:2] == ["_side"]:
        side(sys.argv[2], int(sys.argv[3]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 elements, one round (CI smoke)")
    p.add_argument("--profile", action="store_true", help="instead: Kale under cProfile")
    p.add_argument("--n", type=int, default=2000, help="elements of the --profile run")
    p.add_argument("--top", type=int, default=25, help="functions per thread (--profile)")
    args = p.parse_args()
    if args.profile:
        profile(args.n, args.top)
        return
    sizes = QUICK if args.quick else FULL
    t0, before = time.perf_counter(), other_load()
    got = measure(sizes)
    text = report(got, sizes, time.perf_counter() - t0, (before, other_load()))
    print(text)
    if not args.quick:
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "dynamic.txt").write_text(text)
        print(f"written to {BENCH / 'results' / 'dynamic.txt'}", file=sys.stderr)
    if any("error" in d for docs in got.values() for d in docs):
        sys.exit(1)


if __name__ == "__main__":
    main()

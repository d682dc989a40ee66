"""Many workers on one manager (issue 17, goal 3): simulated workers that speak the real
worker protocol (:mod:`simworkers`) run no-op tasks through ``kale manager start``.

``python bench/scale_workers.py [--quick] [--workers 1,10,100,1000] [--slots 10] [--n N]``

For each number of workers: a fresh manager (Kale home on tmpfs, ``--workers 0``), that
many simulated workers of ``--slots`` slots connected (in 1 process, 2 from 100 workers
on), a 200-task warm-up run, then ``--n`` independent no-op Python tasks (``noops:noop``,
built as in scenario 1, results not reused) submitted with ``kale.Client`` while 20
pollers time ``GET /api/runs/{id}?tasks=false`` every 50 ms (as in scenario 6) on the
manager's status line, ``status.sock``, as ``kale.Client`` does (``--poll-via manager``:
on ``manager.sock``, the server's own loop; ``both``: half each, each reported). Reported:
tasks/s (submit to a poller seeing SUCCEEDED), status p50/p99, the manager's CPU per task
over the run (user + system, psutil) and per second, and its memory per connected worker
(RSS with the workers connected minus before, over their number).

``--nice 19`` runs the simulated workers at low priority: on a cluster the workers are
on other nodes and take none of the manager's CPU, which the default does not model.
By default the simulated workers share the machine's two cores with the manager, as real
workers on this machine would (a real no-op worker costs about as much CPU per task as the
simulated one: both decode the task and encode the report; the simulated one runs no
process). Before each row, the peer and the machine's limit in the same load: a
``ProcessPoolExecutor`` of 2 processes running as many no-op tasks. ``--quick`` (CI): 1 and
100 workers, 2,000 tasks. Results: bench/results/
scale-workers.json (full runs only: the default workers and ``--n``). Asserts no timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _manager import Manager, Pollers, ProcPollers, noop_wf, reap  # noqa: E402
from simworkers import SimWorkers  # noqa: E402

#: the issue's targets for this scenario
TARGET_RATE, TARGET_P99_MS = 3000.0, 50.0


def cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def line_cpu_s(proc: Any) -> float:
    """CPU seconds of the manager's status line process (``status.sock``'s answers)."""
    total = 0.0
    for child in proc.children():
        try:
            if "kale.manager.statusline" in " ".join(child.cmdline()):
                total += cpu_s(child)
        except Exception:  # it ended meanwhile
            pass
    return total


def one(root: Path, workers: int, slots: int, n: int, pollers: int, *, delay: float = 0.0,
        jobs: int | None = None, procs: int | None = None, nice: int = 0,
        timeout: float = 600, heartbeat: float | None = None,
        sockets: tuple[str, ...] = ("status.sock",), processes: bool = False) -> dict[str, Any]:
    """One manager, ``workers`` simulated workers, one measured run of ``n`` tasks."""
    import psutil

    m = Manager(root, workers=0, heartbeat=heartbeat).start()
    try:
        proc = psutil.Process(m.pid)
        time.sleep(0.5)
        rss0 = proc.memory_info().rss
        procs = procs or (1 if workers < 100 else 2)
        t0 = time.perf_counter()
        with SimWorkers(m.home, workers, slots, delay=delay, procs=procs, nice=nice):
            connect_s = time.perf_counter() - t0
            time.sleep(0.5)
            rss1 = proc.memory_info().rss
            client = m.client()
            try:
                warm = client.submit(noop_wf(200, "warm-up"), force=True)
                warm.wait(timeout / 4)
                out = measured(m, client, proc, n, pollers, jobs, timeout, sockets,
                               processes)
                out["lost_workers"] = sum(w["state"] == "LOST" for w in client.workers())
            finally:
                client.close()
        out.update(workers=workers, slots=slots, delay=delay, procs=procs, nice=nice,
                   connect_s=connect_s, rss_before_mb=rss0 / 2**20, rss_workers_mb=rss1 / 2**20,
                   kb_per_worker=(rss1 - rss0) / 1024 / workers)
        return out
    finally:
        m.stop()


def measured(m: Manager, client: Any, proc: Any, n: int, pollers: int, jobs: int | None,
             timeout: float, sockets: tuple[str, ...] = ("status.sock",),
             processes: bool = False) -> dict[str, Any]:
    """Submit ``n`` no-op tasks and time them to the end, with ``pollers`` pollers
    (threads of this process, or with ``processes`` processes of their own)."""
    wf = noop_wf(n)
    deadline = time.monotonic() + timeout
    early = ProcPollers(m, pollers, deadline, sockets) if pollers and processes else None
    try:
        c0, l0, t0 = cpu_s(proc), line_cpu_s(proc), time.perf_counter()
        run = client.submit(wf, force=True, jobs=jobs)
        submit_s = time.perf_counter() - t0
        polls = early.begin(run.id) if early is not None else \
            Pollers(m, run.id, pollers, deadline, sockets).start() if pollers else None
        if polls is not None:
            elapsed = polls.wait_end(t0)
        else:
            run.wait(timeout)
            elapsed = time.perf_counter() - t0
    finally:
        if early is not None:
            early.kill()
    cpu, line_cpu = cpu_s(proc) - c0, line_cpu_s(proc) - l0
    doc = client.status(run.id, tasks=False)["run"]
    state = doc["state"]
    if state != "SUCCEEDED":  # reported, not hidden: e.g. workers judged lost under load
        print(f"run {run.id}: {state}: {doc.get('message')}", file=sys.stderr, flush=True)
    out: dict[str, Any] = {"state": state, "message": doc.get("message"),
        "n": n, "seconds": elapsed, "tasks_per_s": n / elapsed, "submit_s": submit_s,
        "manager_cpu_s": cpu, "manager_cpu_ms_per_task": 1000 * cpu / n,
        "manager_cpu_share": cpu / elapsed, "status_line_cpu_s": line_cpu,
        "status_line_cpu_share": line_cpu / elapsed}
    if polls is not None:
        out.update(polls.figures())
    return out


def pool_rate(n: int, procs: int = 2) -> float:
    """The peer and the machine's limit: no-op tasks/s of a ``ProcessPoolExecutor`` of
    ``procs`` processes (one ``submit`` and ``result`` per task, as scenario 1's peer)."""
    from concurrent.futures import ProcessPoolExecutor

    from noops import noop

    with ProcessPoolExecutor(procs) as pool:
        for f in [pool.submit(noop) for _ in range(200)]:  # warm-up: processes started
            f.result()
        t0 = time.perf_counter()
        for f in [pool.submit(noop) for _ in range(n)]:
            f.result()
        return n / (time.perf_counter() - t0)


def loadavg() -> str:
    """The machine's 1, 5 and 15 minute load averages (it is shared: read figures with it)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| workers x slots | tasks/s | status p50 / p99 (ms) | manager CPU per task "
             "(ms) | manager CPU (cores) | memory per worker (KB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['workers']:,} x {r['slots']} | {r['tasks_per_s']:,.0f} | "
            f"{r.get('p50_ms', 0):.1f} / {r.get('p99_ms', 0):.1f} | "
            f"{r['manager_cpu_ms_per_task']:.3f} | {r['manager_cpu_share']:.2f} | "
            f"{r['kb_per_worker']:,.0f} |")
    return "\n".join(lines)


FULL = [1, 10, 100, 1000]  # the numbers of workers of a full run, whose results are kept


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: 1 and 100 workers, "
                   "2,000 tasks")
    p.add_argument("--workers", default="1,10,100,1000",
                   help="comma-separated numbers of workers (default 1,10,100,1000)")
    p.add_argument("--slots", type=int, default=10)
    p.add_argument("--n", type=int, default=20_000, help="tasks in the measured run")
    p.add_argument("--pollers", type=int, default=20)
    p.add_argument("--nice", type=int, default=0, metavar="N",
                   help="run the simulated workers at this niceness (e.g. 19): they stand "
                        "in for workers on other nodes, which do not take the manager's "
                        "CPU; results then go to results/scale-workers-nice.json")
    p.add_argument("--poll-via", choices=["status", "manager", "both"], default="status",
                   help="the socket the pollers poll: the status line (status.sock, as "
                        "kale.Client does), the server's own (manager.sock, as before the "
                        "status line), or half each, each reported (default status)")
    p.add_argument("--poller-processes", action="store_true",
                   help="each poller a process of its own, as separate clients are (a "
                        "progress bar, a dashboard, `kale status`), instead of threads of "
                        "this process, which wait for each other's interpreter")
    args = p.parse_args(argv)
    args.sockets = {"status": ("status.sock",), "manager": ("manager.sock",),
                    "both": ("status.sock", "manager.sock")}[args.poll_via]
    try:
        args.counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--workers {args.workers!r}: expected numbers, e.g. 1,10,100")
    if args.quick:
        args.counts, args.n = [1, 100], 2_000
    if not args.counts or min(args.counts) < 1 or args.slots < 1 or args.n < 1:
        p.error("--workers, --slots and --n must be at least 1")
    return args


def main() -> None:
    args = parse()
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="kale-bench-scale-", dir=shm))
    rows, pools = [], []
    try:
        for w in args.counts:  # the peer before each Kale row: both see the same load
            pools.append(pool_rate(args.n))
            r = one(root, w, args.slots, args.n, args.pollers, nice=args.nice,
                    sockets=args.sockets, processes=args.poller_processes)
            r.update(loadavg=loadavg(), pool_tasks_per_s=pools[-1])
            rows.append(r)
            print(f"{w} workers: {r['tasks_per_s']:,.0f} tasks/s (ProcessPool {pools[-1]:,.0f}"
                  f"/s), p99 {r.get('p99_ms', 0):.1f} ms, manager "
                  f"{r['manager_cpu_ms_per_task']:.3f} ms CPU/task, status line "
                  f"{r['status_line_cpu_share']:.2f} cores, "
                  f"{r['kb_per_worker']:,.0f} KB/worker, load {r['loadavg']}",
                  file=sys.stderr, flush=True)
            for sock, f in r.get("by_socket", {}).items():
                print(f"  pollers of {sock}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} "
                      f"ms ({f['requests']} requests)", file=sys.stderr, flush=True)
    finally:
        reap(root)
        shutil.rmtree(root, ignore_errors=True)  # its stores: ~125 MB for 100,000 tasks
    print(table(rows))
    base = rows[0]["manager_cpu_ms_per_task"]
    for r in rows:
        grow = r["manager_cpu_ms_per_task"] / base
        print(f"{r['workers']:>5} workers: manager CPU per task x{grow:.2f}"
              f" of {rows[0]['workers']} worker(s); vs target {TARGET_RATE:,.0f}/s: "
              f"x{r['tasks_per_s'] / TARGET_RATE:.2f}; vs ProcessPoolExecutor(2) "
              f"{r['pool_tasks_per_s']:,.0f}/s: x{r['tasks_per_s'] / r['pool_tasks_per_s']:.2f};"
              f" p99 vs {TARGET_P99_MS:g} ms: x{r.get('p99_ms', 0) / TARGET_P99_MS:.2f}; "
              f"load {r['loadavg']}")
    if args.quick or args.counts != FULL or args.n != 20_000:  # a partial run: printed only
        print("(a partial run: bench/results/ left as it is)", file=sys.stderr)
    else:
        out = BENCH / "results" / ("scale-workers-nice.json" if args.nice else
                                   "scale-workers.json")
        out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"),
                                   "pollers": "processes" if args.poller_processes
                                   else "threads", "rows": rows},
                                  indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Pilots at scale, simulated (issue 17, goal 6): 1,000 pilot workers of 64 slots receive
100,000 one-second tasks through one manager.

``python bench/scale_pilots.py [--quick] [--pilots 1000] [--slots 64] [--n 100000]
[--seconds 1]``

A fresh manager (Kale home on tmpfs, ``kale manager start --workers 0``), ``--pilots``
simulated workers (:mod:`simworkers`: the real worker agent and protocol, over 2
processes) of ``--slots`` slots each, as many pilot jobs would connect, and one run of
``--n`` independent tasks that each "take" ``--seconds``: the simulated worker answers
after that delay (an ``asyncio.sleep``; no task process, so 64,000 slots fit in two
processes of this 2-core machine), submitted without ``jobs`` (the manager keeps its
workers' slots and 1,024 more in flight). Reported: the time from the submit to the end of the
run (and from the manager's acceptance of the submit), against the ideal
``n x seconds / (pilots x slots)``, and the manager's CPU over the run (seconds, per task,
cores). The manager's heartbeat timeout is 60 s here (``--heartbeat``; 15 s by default):
500 simulated pilots share one process and one core, and when 32,000 one-second tasks end
together their event loop runs up to ~9 s late, so at 15 s the manager judged up to a
quarter of them lost (a real pilot has a node of its own). The simulated pilots are general
workers (no batch pool: no Slurm job is asked for). ``--quick`` (CI): 20 pilots, 5,000
tasks. Results: bench/results/scale-pilots.json (full runs only). Asserts no timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from _manager import reap  # noqa: E402
from scale_workers import loadavg, one  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: 20 pilots, 5,000 tasks")
    p.add_argument("--pilots", type=int, default=1000)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seconds", type=float, default=1.0, help="how long each task takes")
    p.add_argument("--pollers", type=int, default=0, help="status pollers meanwhile")
    p.add_argument("--heartbeat", type=float, default=60.0,
                   help="the manager's heartbeat timeout (s; kale's default is 15)")
    args = p.parse_args()
    if args.quick:
        args.pilots, args.n = 20, 5_000
    if min(args.pilots, args.slots, args.n) < 1 or args.seconds < 0:
        p.error("--pilots, --slots and --n must be at least 1, --seconds at least 0")
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    root = Path(tempfile.mkdtemp(prefix="kale-bench-pilots-", dir=shm))
    try:
        load0 = loadavg()
        r = one(root, args.pilots, args.slots, args.n, args.pollers, delay=args.seconds,
                procs=2, timeout=1800, heartbeat=args.heartbeat)
    finally:
        reap(root)
        shutil.rmtree(root, ignore_errors=True)  # its stores: ~125 MB for 100,000 tasks
    ideal = args.n * args.seconds / (args.pilots * args.slots)
    r.update(ideal_s=ideal, drain_s=r["seconds"] - r["submit_s"],
             loadavg_before=load0, loadavg=loadavg())
    print(f"| pilots x slots | tasks x s | drain (s) | ideal (s) | x ideal | submit (s) | "
          f"manager CPU (s) | per task (ms) | cores | memory per pilot (KB) | load |\n"
          f"|---|---|---|---|---|---|---|---|---|---|---|\n"
          f"| {args.pilots:,} x {args.slots} | {args.n:,} x {args.seconds:g} | "
          f"{r['seconds']:.1f} | {ideal:.2f} | {r['seconds'] / ideal:.1f} | "
          f"{r['submit_s']:.1f} | {r['manager_cpu_s']:.1f} | "
          f"{r['manager_cpu_ms_per_task']:.3f} | {r['manager_cpu_share']:.2f} | "
          f"{r['kb_per_worker']:,.0f} | {r['loadavg']} |")
    print(f"run {r['state']} ({r['message']}); workers judged lost: {r['lost_workers']}")
    print(f"drain {r['seconds']:.1f} s from the submit ({r['drain_s']:.1f} s after it was "
          f"accepted) vs ideal {ideal:.2f} s: x{r['seconds'] / ideal:.1f}; at the manager's "
          f"pace, {args.n / r['seconds']:,.0f} tasks/s; load before {load0}, after "
          f"{r['loadavg']}")
    if not args.quick:
        out = BENCH / "results" / "scale-pilots.json"
        out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), **r}, indent=1)
                       + "\n")


if __name__ == "__main__":
    main()

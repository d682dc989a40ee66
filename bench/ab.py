"""Kale against an earlier Kale, side by side in one run: ``python bench/ab.py --base REF``.

A change that should not change speed (a refactoring) is checked with this: the earlier
commit ``REF`` is checked out in a temporary worktree, and each scenario runs alternately
on it and on this tree, ``--rounds`` times, so both see the same machine load. Printed per
scenario: the medians, and new/old (below 1 is faster for times; the manager's throughput
is in tasks per second, so above 1 is faster there).

Scenarios: embedded no-op Python tasks (``_peer_kale.py python``; homes on tmpfs, and on
the disk as `bench/run.py` measures them), a 500-task chain and
500 shell tasks, and the manager's no-op throughput with 20 status pollers
(``_manager.py throughput``), with their status p99."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARKER = "@@RESULT "


def scenarios(quick: bool) -> list[tuple[str, list[str], str, bool]]:
    """(name, argv after the bench folder, metric, higher is better)."""
    n, chain, manager = (200, 50, 500) if quick else (2000, 500, 10000)
    shm = ["--home-on", "/dev/shm"] if Path("/dev/shm").is_dir() else []
    return [
        (f"embedded no-op python x{n}", ["_peer_kale.py", "python", "--n", str(n),
                                         "--repeat", "3", *shm], "median", False),
        (f"embedded no-op python x{n}, disk", ["_peer_kale.py", "python", "--n", str(n),
                                               "--repeat", "3"], "median", False),
        (f"embedded chain x{chain}", ["_peer_kale.py", "chain", "--n", str(chain),
                                      "--repeat", "3"], "median", False),
        (f"embedded shell x{chain}", ["_peer_kale.py", "shell", "--n", str(chain),
                                      "--repeat", "3"], "median", False),
        (f"manager no-op x{manager}, tasks/s", ["_manager.py", "throughput", "--n",
                                                str(manager)], "tasks_per_s", True),
        (f"manager x{manager}, status p99 ms", ["_manager.py", "throughput", "--n",
                                                str(manager)], "p99_ms", False),
    ]


def run_one(tree: Path, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    argv = list(argv)
    if argv[0] == "_manager.py":
        argv += ["--root", tempfile.mkdtemp(prefix="kale-ab-", dir="/dev/shm"
                                            if Path("/dev/shm").is_dir() else None)]
    out = subprocess.run([sys.executable, str(tree / "bench" / argv[0]), *argv[1:]],
                         cwd=tree / "bench", env=env, capture_output=True, text=True,
                         timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith(MARKER):
            return dict(json.loads(line[len(MARKER):]))
    raise RuntimeError(f"{tree.name} {' '.join(argv)} gave no result:\n{out.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit (a git ref)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--only", action="append", default=[], metavar="WORD",
                        help="only the scenarios whose name has WORD (repeatable)")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    base = Path(tempfile.mkdtemp(prefix="kale-ab-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base),
                    args.base], check=True)
    try:
        trees = {"old": base, "new": ROOT}
        rows = [row for row in scenarios(args.quick)
                if not args.only or any(w in row[0] for w in args.only)]
        # The two manager rows come from one run: run each command once per tree and round.
        commands = {tuple(argv) for _, argv, _, _ in rows}
        seen: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        for r in range(rounds):
            for argv in sorted(commands):
                for side in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    doc = run_one(trees[side], list(argv))
                    seen.setdefault((side, argv), []).append(doc)
                    print(f"round {r + 1} {side} {' '.join(argv)}: "
                          + ", ".join(f"{k}={doc[k]:.4g}" for k in ("median", "tasks_per_s",
                                                                    "p99_ms") if k in doc),
                          flush=True)
        print(f"\nKale at {args.base} (old) and this tree (new), {rounds} rounds, medians:")
        print(f"{'scenario':42} {'old':>10} {'new':>10} {'new/old':>8}")
        for name, argv, metric, _higher in rows:
            old = statistics.median(d[metric] for d in seen[("old", tuple(argv))])
            new = statistics.median(d[metric] for d in seen[("new", tuple(argv))])
            print(f"{name:42} {old:10.4g} {new:10.4g} {new / old:8.3f}")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                       check=False)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

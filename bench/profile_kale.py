"""Where Kale's engine spends its time: scenario 1 (no-op Python tasks) under cProfile.

    python bench/profile_kale.py [--n 2000] [--top 25] [--sort tottime|cumtime]

The engine and the group committer run in their own threads, which cProfile does not
follow, so every thread started during the run gets its own profiler; the report lists
the busiest functions per thread (engine, commit, main). cProfile slows tight loops down
by a factor of 2 or so: read the ranking, not the absolute times. (``py-spy record --threads
-- python bench/profile_kale.py --no-profile`` gives a sampling view instead.)
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PROFILES: list[tuple[str, cProfile.Profile]] = []


def profile_threads(profiles: list[tuple[str, Any]] | None = None) -> Callable[[], None]:
    """Give every thread started from now on its own profiler, appended to ``profiles``
    (default :data:`PROFILES`) when the thread ends; returns an undo."""
    found: list[tuple[str, Any]] = PROFILES if profiles is None else profiles
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            found.append((self.name, prof))

    threading.Thread.run = run  # type: ignore[method-assign]

    def undo() -> None:
        threading.Thread.run = original  # type: ignore[method-assign]

    return undo


def group(name: str) -> str:
    if name.startswith("kale-run"):
        return "engine thread"
    if name.startswith("kale-commit"):
        return "commit thread"
    return f"thread {name}"


def report(profiles: list[tuple[str, Any]], top: int, sort: str) -> str:
    by_group: dict[str, pstats.Stats] = {}
    for name, prof in profiles:
        g = group(name)
        if g in by_group:
            by_group[g].add(prof)
        else:
            by_group[g] = pstats.Stats(prof, stream=io.StringIO())
    out = []
    for g, stats in sorted(by_group.items()):
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.strip_dirs().sort_stats(sort).print_stats(top)
        out.append(f"===== {g} =====\n{buf.getvalue()}")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime", choices=["tottime", "cumtime"])
    p.add_argument("--no-profile", action="store_true", help="just run (for py-spy)")
    args = p.parse_args()
    os.environ["KALE_HOME"] = tempfile.mkdtemp(prefix="kale-profile-")
    from kale import Workflow
    from noops import noop

    warm = Workflow("profile-warm", base_dir=BENCH)
    warm.python(noop, name="t0")
    warm.run(jobs=2, home=tempfile.mkdtemp()).wait()  # imports and first-use costs

    wf = Workflow("profile", base_dir=BENCH)
    for i in range(args.n):
        wf.python(noop, name=f"t{i}")
    undo = None if args.no_profile else profile_threads()
    main_prof = cProfile.Profile()
    t0 = time.perf_counter()
    if undo:
        main_prof.enable()
    run = wf.run(jobs=2, home=tempfile.mkdtemp()).wait()
    main_prof.disable()
    elapsed = time.perf_counter() - t0
    if undo:
        undo()
        print(report([*PROFILES, ("main", main_prof)], args.top, args.sort))
    print(f"{args.n} tasks: {run.state.value} in {elapsed:.3f} s"
          f"{' (under cProfile)' if undo else ''}")


if __name__ == "__main__":
    main()

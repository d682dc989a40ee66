"""A long-lived manager's memory over many runs of one workflow (issue 13).

Starts a manager in a fresh home, submits the same N-task workflow (no-op Python tasks)
eight times (every run after the first reuses the first's results) and prints the
manager's RSS after each run. Before the fix, every run loaded every earlier run's copy
of its results, so RSS grew with the number of runs; now it levels off.

    python bench/manager_memory.py [N]          (default 3000; --quick: 300)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from kale import Client, Workflow


def workflow(n: int) -> Workflow:
    wf = Workflow("memory")
    for t in range(n):
        wf.python("json:dumps", name=f"t{t}", parameters={"obj": [t]})
    return wf


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--quick"]
    n = 300 if "--quick" in sys.argv else int(args[0]) if args else 3000
    home = Path(tempfile.mkdtemp(prefix="kale-mem-")) / "home"
    home.mkdir(mode=0o700)
    env = {**os.environ, "KALE_HOME": str(home)}
    kale = [sys.executable, "-m", "kale.cli.main"]
    subprocess.run([*kale, "manager", "start", "--workers", "2"], env=env, check=True,
                   capture_output=True)
    pid = json.loads((home / "manager.json").read_text())["pid"]
    manager = psutil.Process(pid)
    rss = []
    try:
        with Client(home=home) as client:
            for i in range(8):
                t0 = time.perf_counter()
                state = client.submit(workflow(n)).wait(600).state.value
                rss.append(manager.memory_info().rss / 2**20)
                print(f"run {i}: {state} in {time.perf_counter() - t0:.1f} s, "
                      f"manager RSS {rss[-1]:.0f} MB", flush=True)
                if state != "SUCCEEDED":
                    sys.exit(f"run {i} ended {state}")
    finally:
        subprocess.run([*kale, "manager", "stop"], env=env, capture_output=True)
    print(f"growth over the last four runs: {rss[-1] - rss[3]:+.0f} MB "
          f"(first run {rss[0]:.0f} MB, last {rss[-1]:.0f} MB)")


if __name__ == "__main__":
    main()

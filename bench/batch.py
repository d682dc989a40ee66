"""Kale on a batch scheduler against raw ``sbatch``, side by side on this machine's Slurm.

    python bench/batch.py            # full sizes -> bench/results/batch.md
    python bench/batch.py --quick    # small sizes (CI smoke)

Needs a Slurm cluster (``scripts/services/slurm.sh`` starts one on localhost; its
SLURM_CONF is read from test-output/slurm.env when not set).

``latency``  one ``sleep 1`` task, R times, one after the other, each from an idle queue:
             - raw: ``sbatch --wrap "sleep 1"``, then ``squeue -j ID`` every 0.1 s until the
               job is RUNNING, then until it is gone or COMPLETED;
             - Kale: ``Client.submit`` of a one-task workflow (``executor: slurm``, one job
               per task) to a running manager; RUNNING and SUCCEEDED as the run's event
               stream tells them (what ``kale run`` prints).
             Median seconds from submit to RUNNING and to SUCCEEDED, and Kale minus raw.
``pilots``   N ``sleep 1`` tasks: one job per task, and pilot mode (``max_jobs: 2``) with
             one slot per core and with 25 slots per pilot (the tasks only sleep: I/O-bound
             work packs many to a core); seconds from submit to the run's end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import timed_manager_run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def slurm_env() -> None:
    if os.environ.get("SLURM_CONF"):
        return
    env_file = ROOT / "test-output" / "slurm.env"
    if env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("export SLURM_CONF="):
                os.environ["SLURM_CONF"] = line.split("=", 1)[1].strip()
                return
    sys.exit("no Slurm cluster: run scripts/services/slurm.sh (as root) first")


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-j", job, "-o", "%T"],
                         capture_output=True, text=True).stdout.strip()
    return out or "GONE"


def raw_once() -> tuple[float, float]:
    t0 = time.perf_counter()
    job = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 1"],
                         capture_output=True, text=True, check=True).stdout.strip()
    running = None
    while True:
        state = squeue_state(job)
        now = time.perf_counter() - t0
        if running is None and state in ("RUNNING", "COMPLETING", "COMPLETED", "GONE"):
            running = now
        if state in ("COMPLETED", "GONE", "FAILED", "CANCELLED"):
            return running, now
        time.sleep(0.1)


def kale_once(client: Any, wf: Any) -> tuple[float, float]:
    t0 = time.perf_counter()
    run = client.submit(wf, force=True)  # not reused from the previous round
    running = done = None
    for event, data in client.events(run.id):
        if event == "state" and data.get("task") == "sleep":
            if data["new"] == "RUNNING" and running is None:
                running = time.perf_counter() - t0
            elif data["new"] == "SUCCEEDED":
                done = time.perf_counter() - t0
        elif event == "end":
            break
    assert running is not None and done is not None, "the task did not succeed"
    return running, done


def many(client: Any, n: int, executor: Any) -> float:
    from kale import Workflow

    wf = Workflow("many-sleeps", executor=executor)
    for i in range(n):
        wf.shell(f"t{i}", "sleep 1")
    return timed_manager_run(client, wf)


def settle() -> None:
    """Each measurement starts from the same state: an empty queue and a scheduler that is
    not busy finishing the previous job (a job submitted while another is completing waits
    for the next scheduling pass, up to 1 s here: that would bias whichever came second)."""
    wait_idle()
    time.sleep(1.5)


def wait_idle() -> None:
    """Let pilots of the previous case end before timing the next."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
            return
        time.sleep(0.5)


def cancel_leftovers(home: Path) -> None:
    """Cancel the jobs this benchmark's manager submitted that are still queued or running
    (idle pilots would end by themselves; nothing else of the user's is touched)."""
    from kale.store import workers as wstore
    from kale.store.store import Store

    store = Store(f"sqlite:///{home / 'kale.db'}")
    try:
        ids = [j["native_id"] for j in wstore.jobs(store, states=("QUEUED", "ACTIVE"))
               if j["native_id"]]
    finally:
        store.close()
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    slurm_env()
    repeat, n = (3, 20) if args.quick else (15, 200)

    from kale import Client, Workflow
    from kale.manager import service

    home = Path(tempfile.mkdtemp(prefix="kale-bench-batch-"))
    os.environ["KALE_HOME"] = str(home)
    service.start(home, port=8799, workers=0)
    try:
        with Client(home=home) as client:
            one = Workflow("one-sleep", executor="slurm")
            one.shell("sleep", "sleep 1")
            kale_once(client, one)  # warm-up: the manager's first job (PSI/J, imports)
            raw, kale = [], []
            for _ in range(repeat):  # interleaved, so that drift hits both alike
                settle()
                raw.append(raw_once())
                settle()
                kale.append(kale_once(client, one))
            wait_idle()
            per_task = many(client, n, "slurm")
            wait_idle()
            pilot_cores = many(client, n, {"kind": "slurm", "mode": "pilot", "max_jobs": 2,
                                           "idle": 2})
            wait_idle()
            pilot_packed = many(client, n, {"kind": "slurm", "mode": "pilot", "max_jobs": 2,
                                            "slots": 25, "idle": 2})
    finally:
        service.stop(home)
        cancel_leftovers(home)

    med = statistics.median
    r_run, r_done = med(x[0] for x in raw), med(x[1] for x in raw)
    k_run, k_done = med(x[0] for x in kale), med(x[1] for x in kale)
    doc = {"repeat": repeat, "n": n,
           "latency": {"raw_running": r_run, "raw_done": r_done,
                       "kale_running": k_run, "kale_done": k_done,
                       "raw": raw, "kale": kale},
           "pilots": {"per_task": per_task, "pilot_cores": pilot_cores,
                      "pilot_packed": pilot_packed}}
    text = report(doc, args.quick)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "batch-quick.md" if args.quick else "batch.md"
    (RESULTS / name).write_text(text)
    (RESULTS / name.replace(".md", ".json")).write_text(json.dumps(doc, indent=1))


def report(doc: dict[str, Any], quick: bool) -> str:
    lat, pil = doc["latency"], doc["pilots"]
    def spread(runs: list[list[float]], i: int) -> str:
        values = [r[i] for r in runs]
        return f"{min(values):.2f}-{max(values):.2f}"

    rows = [
        "| `sleep 1`, one job | raw sbatch + squeue | Kale (job per task) | Kale adds "
        "| range raw | range Kale |",
        "|---|---:|---:|---:|---:|---:|",
        f"| submit -> RUNNING | {lat['raw_running']:.2f} s | {lat['kale_running']:.2f} s "
        f"| {lat['kale_running'] - lat['raw_running']:+.2f} s | {spread(lat['raw'], 0)} "
        f"| {spread(lat['kale'], 0)} |",
        f"| submit -> done | {lat['raw_done']:.2f} s | {lat['kale_done']:.2f} s "
        f"| {lat['kale_done'] - lat['raw_done']:+.2f} s | {spread(lat['raw'], 1)} "
        f"| {spread(lat['kale'], 1)} |",
        "",
        f"| {doc['n']} x `sleep 1` | seconds | vs one job per task |",
        "|---|---:|---:|",
        f"| one job per task | {pil['per_task']:.1f} | 1.0x |",
        f"| pilots, 1 slot per core (max_jobs 2) | {pil['pilot_cores']:.1f} "
        f"| {pil['per_task'] / pil['pilot_cores']:.1f}x |",
        f"| pilots, 25 slots each (max_jobs 2) | {pil['pilot_packed']:.1f} "
        f"| {pil['per_task'] / pil['pilot_packed']:.1f}x |",
    ]
    head = (f"### Batch: Kale on Slurm vs raw sbatch ({'quick' if quick else 'full'} sizes; "
            f"latency: median of {doc['repeat']})\n\n")
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()

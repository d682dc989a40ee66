"""The simulated workers of ``bench/simworkers.py`` (what the scale benchmarks run by the
hundred) speak the real worker protocol: a real manager, started by the CLI, runs a run on
them alone, and its store records every task once, on one of them."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from conftest import Kale, Manager
from kale import Workflow

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_50_simulated_workers_run_500_tasks_through_a_real_manager(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from simworkers import SimWorkers
    finally:
        sys.path.remove(str(BENCH))
    m = managers("--workers", "0")
    wf = Workflow("simulated", base_dir=tmp_path)
    for i in range(500):
        wf.shell(f"t{i}", "true")  # never run: the simulated worker only answers
    with SimWorkers(home, 50, 10, procs=2, prefix="sim") as sims, m.client() as client:
        workers = {w["id"]: w for w in client.workers()}
        assert len(workers) == 50 and all(w["connected"] for w in workers.values())
        assert {w["pid"] for w in workers.values()} == set(sims.pids)  # they, not others
        assert {w["slots"] for w in workers.values()} == {10}
        run = client.submit(wf)
        assert run.wait(300).state.value == "SUCCEEDED", client.status(run.id)
        tasks = client.status(run.id)["tasks"]
    assert len(tasks) == 500
    assert all(t["state"] == "SUCCEEDED" and t["attempts"] == 1 for t in tasks)
    ran_on = Counter(kale.attempts(run.id, f"t{i}")[0]["worker"] for i in (0, 250, 499))
    assert all(w in workers for w in ran_on)  # each on a simulated worker, by its own id

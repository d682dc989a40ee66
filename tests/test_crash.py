"""Crash safety with a real fault: SIGKILL `kale run` mid-run, then `kale resume`."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from conftest import Kale, process_alive


def _status(kale: Kale, run_id: str) -> dict:
    out = kale("status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_for(kale: Kale, run_id: str, want: dict[str, str], timeout: float = 120) -> dict:
    """Poll ``kale status`` until each named task is in the wanted state (the timeout is a
    safety net only: the tasks involved wait for the test, not for the clock)."""
    deadline = time.monotonic() + timeout
    while True:
        status = _status(kale, run_id)
        states = {t["name"]: t["state"] for t in status["tasks"]}
        if all(states.get(n) == s for n, s in want.items()):
            return status
        assert time.monotonic() < deadline, f"waited for {want}, have {states}"
        time.sleep(0.05)


def test_sigkill_mid_run_then_resume_finishes_without_rerunning_successes(
        kale: Kale, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    gate = tmp_path / "gate"
    lines = ["name: crashy", "tasks:"]
    # Two independent chains of 4 tasks; each task appends its name to the ledger. a0, a1
    # and b0 finish at once; every later task blocks until the test creates the gate, so the
    # kill lands exactly when a0, a1, b0 are SUCCEEDED and a2, b1 RUNNING, however slow the
    # machine is.
    for chain in ("a", "b"):
        for i in range(4):
            blocks = (chain, i) not in (("a", 0), ("a", 1), ("b", 0))
            wait = f"; while [ ! -e {gate} ]; do sleep 0.05; done" if blocks else ""
            lines += [f"  {chain}{i}:",
                      f"    shell: echo {chain}{i} >> {ledger}{wait}",
                      *([f"    after: [{chain}{i - 1}]"] if i else [])]
    wf = tmp_path / "crashy.yaml"
    wf.write_text("\n".join(lines) + "\n")

    with kale.popen("run", str(wf), "--jobs", "2") as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        _wait_for(kale, run_id, {"a0": "SUCCEEDED", "a1": "SUCCEEDED", "b0": "SUCCEEDED",
                                 "a2": "RUNNING", "b1": "RUNNING"})
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    before = _status(kale, run_id)
    states = {t["name"]: t["state"] for t in before["tasks"]}
    succeeded_before = {n for n, s in states.items() if s == "SUCCEEDED"}
    assert succeeded_before == {"a0", "a1", "b0"}, states
    assert before["run"]["state"] == "RUNNING"
    assert before["run"]["driven_by_pid"] is None  # nobody drives it now

    gate.touch()  # the resumed run's tasks (and any orphan of the killed run) may finish
    resumed = kale("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    after = _status(kale, run_id)
    assert after["run"]["state"] == "SUCCEEDED"
    assert all(t["state"] == "SUCCEEDED" for t in after["tasks"])
    runs = ledger.read_text().split()
    for name in succeeded_before:
        assert runs.count(name) == 1, f"{name} ran again after it had succeeded: {runs}"
    assert sorted(set(runs)) == sorted(t["name"] for t in after["tasks"])
    # what was recorded before the crash is still there
    for t in before["tasks"]:
        if t["state"] == "SUCCEEDED":
            same = next(u for u in after["tasks"] if u["name"] == t["name"])
            assert same["ended_at"] == t["ended_at"] and same["attempts"] == t["attempts"]


def test_resume_refuses_a_run_that_is_still_being_driven(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "slow.yaml"
    wf.write_text("name: slow\ntasks:\n  nap:\n    shell: sleep 600\n")  # until Ctrl-C
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        try:
            out = kale("resume", run_id)
            assert out.returncode == 2
            assert "still running" in out.stderr and "Traceback" not in out.stderr
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    # Ctrl-C cancelled cleanly
    assert proc.returncode == 130
    status = _status(kale, run_id)
    assert status["run"]["state"] == "CANCELLED"
    assert status["tasks"][0]["state"] == "CANCELLED"


def test_kale_cancel_of_a_run_whose_driver_died_kills_what_it_left(kale: Kale,
                                                                    tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    wf = tmp_path / "orphan.yaml"
    wf.write_text(f"name: orphan\ntasks:\n  nap:\n    shell: echo $$ > {pidfile}; exec sleep 60\n")
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        _wait_for(kale, run_id, {"nap": "RUNNING"})
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert time.monotonic() < deadline, "the task never wrote its pid"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    pid = int(pidfile.read_text())
    assert process_alive(pid)  # the orphan outlived its driver
    out = kale("cancel", run_id)
    assert out.returncode == 0 and "CANCELLED" in out.stdout, out.stderr
    deadline = time.monotonic() + 30  # a killed process may take a moment to be reaped
    while process_alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived kale cancel"
        time.sleep(0.05)
    assert _status(kale, run_id)["tasks"][0]["state"] == "CANCELLED"


def test_kale_cancel_of_a_run_driven_by_another_process_leaves_that_process_alive(
        kale: Kale, tmp_path: Path) -> None:
    """A run started from Python (a notebook) is cancelled without killing the notebook."""
    import subprocess
    import sys

    script = tmp_path / "nb.py"
    script.write_text(
        "import sys, kale\n"
        "wf = kale.Workflow('embedded')\nwf.shell('nap', 'sleep 60')\n"
        "run = wf.run()\nprint(run.id, flush=True)\nrun.wait()\n"
        "print('still alive', run.state.value, flush=True)\n")
    with subprocess.Popen([sys.executable, str(script)], env=kale.env(), cwd=tmp_path,
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        _wait_for(kale, run_id, {"nap": "RUNNING"})
        out = kale("cancel", run_id)
        assert out.returncode == 0, out.stderr
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
    assert "still alive CANCELLED" in rest

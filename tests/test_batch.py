"""Workflows on a real Slurm cluster (scripts/services/slurm.sh): one job per task and
pilot jobs, multi-rank srun tasks, and the faults the issue names as real faults: a job
cancelled with scancel outside Kale, a walltime that expires, a pilot reaching its
walltime, a manager SIGKILLed while jobs are queued, jobs the scheduler refuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, Manager, gate_sh, process_alive, wait_until
from kale.store import workers as wstore
from kale.store.store import Store

# Jobs go through a real scheduler; each wait below is a safety net of a minute or two, and
# together they may exceed the default 120 s per test on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def status(kale: Kale, run_id: str) -> dict[str, Any]:
    out = kale("status", run_id, "--json")
    assert out.returncode in (0, 1), out.stderr
    return {t["name"]: t for t in json.loads(out.stdout)["tasks"]}


def run_state(kale: Kale, run_id: str) -> str:
    return str(json.loads(kale("status", run_id, "--json").stdout)["run"]["state"])


def logs(kale: Kale, run_id: str, task: str) -> str:
    return kale("logs", run_id, task).stdout


def batch_jobs(home: Path) -> list[dict[str, Any]]:
    store = Store(f"sqlite:///{home / 'kale.db'}")
    try:
        return wstore.jobs(store)
    finally:
        store.close()


def native_id(home: Path, run_id: str, task: str, attempt: int = 1) -> str:
    def find() -> str | None:
        for j in batch_jobs(home):
            if j["info"].get("key") == [run_id, task, attempt] and j["native_id"]:
                return str(j["native_id"])
        return None
    return str(wait_until(find, what=f"the batch job of {task}"))


def test_a_workflow_runs_one_slurm_job_per_task(slurm: str, kale: Kale, home: Path,
                                                tmp_path: Path) -> None:
    """`kale run` starts the manager itself; every task runs in a job of its own; a failing
    task's exit code comes back; a two-rank task runs its ranks with srun."""
    wf = write(tmp_path / "wf.yaml", """\
name: per-task
executor: slurm
tasks:
  first:
    shell: echo "job $SLURM_JOB_ID"
  second:
    shell: echo "job $SLURM_JOB_ID"
    after: [first]
  broken:
    shell: echo "job $SLURM_JOB_ID"; exit 3
  ranks:
    shell: echo "rank $SLURM_PROCID of job $SLURM_JOB_ID"
    launcher: srun
    resources: {ranks: 2}
""")
    try:
        out = kale("run", str(wf))
        assert out.returncode == 1, out.stderr
        assert "started the Kale manager" in out.stderr
        run_id = out.stdout.strip()
        tasks = status(kale, run_id)
        assert {n: t["state"] for n, t in tasks.items()} == {
            "first": "SUCCEEDED", "second": "SUCCEEDED", "broken": "FAILED",
            "ranks": "SUCCEEDED"}
        assert tasks["broken"]["exit_code"] == 3
        jobs = {n: logs(kale, run_id, n).split()[-1] for n in ("first", "second", "broken")}
        assert len(set(jobs.values())) == 3 and all(j.isdigit() for j in jobs.values())
        ranks = sorted(logs(kale, run_id, "ranks").splitlines())
        assert [r.split(" of ")[0] for r in ranks] == ["rank 0", "rank 1"]
        recorded = {j["native_id"] for j in batch_jobs(home)}
        assert set(jobs.values()) <= recorded and len(recorded) == 4
        # Slurm agrees: each of those jobs completed.
        acct = subprocess.run(["scontrol", "show", "job", jobs["first"], "-o"],
                              capture_output=True, text=True, timeout=60)
        assert "JobState=COMPLETED" in acct.stdout and "kale-first" in acct.stdout
    finally:
        kale("manager", "stop")


def test_pilots_run_a_burst_of_tasks_and_end_when_idle(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    managers("--workers", "0")
    tasks = "".join(f"  t{i}:\n    shell: sleep 0.2; echo $SLURM_JOB_ID\n" for i in range(40))
    wf = write(tmp_path / "wf.yaml", "name: burst\ntasks:\n" + tasks)
    out = kale("run", str(wf), "--executor", "slurm", "--pilot")
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert all(t["state"] == "SUCCEEDED" for t in status(kale, run_id).values())
    ran_in = {logs(kale, run_id, f"t{i}").strip() for i in range(40)}
    pilots = [j for j in batch_jobs(home) if j["mode"] == "pilot"]
    # Far fewer jobs than tasks, each task in one of the pilots Kale recorded.
    assert ran_in <= {j["native_id"] for j in pilots}
    assert 1 <= len(pilots) <= 4, pilots  # the default max_jobs
    # Pilots end by themselves once idle (and queued ones that are not needed go).
    ids = [j["native_id"] for j in pilots]
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", ",".join(ids)],
                                          capture_output=True, text=True).stdout.strip(),
               what="idle pilots to end")


def test_queue_shows_kale_jobs_and_partitions(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")
    wf = write(tmp_path / "wf.yaml", "name: q\nexecutor: slurm\n"  # runs until cancelled
               f"tasks:\n  wait:\n    shell: {gate_sh(tmp_path / 'never')}\n")
    out = kale("run", str(wf), "--detach")
    run_id = out.stdout.strip()
    job = native_id(home, run_id, "wait")
    doc = json.loads(kale("queue", "--json").stdout)
    assert doc["scheduler"] == "slurm" and not doc["errors"]
    mine = {j["id"]: j for j in doc["jobs"]}
    assert mine[job]["kale"]["task"] == [run_id, "wait", 1]
    assert mine[job]["state"] in ("PENDING", "RUNNING")
    assert {p["name"] for p in doc["partitions"]} == {"debug", "short"}
    assert next(p for p in doc["partitions"] if p["name"] == "short")["max_walltime"] == 60
    with m.client() as client:  # the same through the API
        api = client.queue()
        assert job in {j["id"] for j in api["jobs"]}
        client.cancel(run_id)
    wait_until(lambda: run_state(kale, run_id) == "CANCELLED", what="the run to cancel")
    # Cancelling the run cancelled its job.
    wait_until(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                                          text=True).stdout.strip(), what="the job to go")


def test_a_job_cancelled_outside_kale_is_retried(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    managers("--workers", "0")
    marker = tmp_path / "first-attempt"
    # The first attempt runs until it is cancelled; the retry ends at once.
    victim = f"if [ -e {marker} ]; then echo second; exit 0; fi; touch {marker}; " \
             + gate_sh(tmp_path / "never")
    wf = write(tmp_path / "wf.yaml", f"""\
name: scancelled
executor: slurm
tasks:
  victim:
    shell: {victim}
    retries: 1
    retry_delay: 0
  bystander:
    shell: sleep 2; echo fine
""")
    run_id = kale("run", str(wf), "--detach").stdout.strip()
    job = native_id(home, run_id, "victim")
    wait_until(marker.exists, what="the first attempt to start")
    subprocess.run(["scancel", job], check=True, timeout=60)
    wait_until(lambda: run_state(kale, run_id) == "SUCCEEDED", what="the run to succeed")
    attempts = json.loads(kale("status", run_id, "victim", "--json").stdout)["attempts"]
    assert [a["state"] for a in attempts] == ["FAILED", "SUCCEEDED"]
    assert f"slurm job {job} was cancelled outside Kale" in attempts[0]["error"]
    assert status(kale, run_id)["bystander"]["state"] == "SUCCEEDED"


@pytest.mark.timeout(300)
def test_a_task_killed_at_its_walltime_is_timeout(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    """Slurm's smallest walltime is a minute, and it checks limits every 30 s: this takes
    60-100 s."""
    managers("--workers", "0")
    wf = write(tmp_path / "wf.yaml", """\
name: walltime
executor: slurm
tasks:
  slow:
    shell: sleep 600
    resources: {walltime: "00:01:00"}
  after_slow:
    shell: echo never
    after: [slow]
""")
    run_id = kale("run", str(wf), "--detach").stdout.strip()
    job = native_id(home, run_id, "slow")
    wait_until(lambda: run_state(kale, run_id) == "FAILED", 200, "the walltime")
    tasks = status(kale, run_id)
    assert tasks["slow"]["state"] == "TIMEOUT"
    assert f"slurm job {job} reached its walltime" in tasks["slow"]["error"]
    assert tasks["after_slow"]["state"] == "SKIPPED"
    shown = subprocess.run(["scontrol", "show", "job", job, "-o"], capture_output=True,
                           text=True, timeout=60).stdout
    assert "JobState=TIMEOUT" in shown


def test_a_pilot_near_its_walltime_hands_back_what_it_cannot_finish(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    """A 30 s pilot with one slot: the first task ends at once; the second's first attempt
    never ends by itself, so it is still running when the pilot nears its end: it is
    handed back 2 s before, and runs again (and ends at once) in the next pilot. (The
    pilot takes tasks for its first 25 s: time enough to start a worker and both tasks.)"""
    managers("--workers", "0")
    marker = tmp_path / "first-attempt"
    second = f"if [ -e {marker} ]; then echo $SLURM_JOB_ID; exit 0; fi; touch {marker}; " \
             + gate_sh(tmp_path / "never")
    wf = write(tmp_path / "wf.yaml", f"""\
name: pilot-walltime
executor: {{kind: slurm, mode: pilot, walltime: "00:00:30", slots: 1, max_jobs: 1, idle: 5}}
tasks:
  one:
    shell: echo $SLURM_JOB_ID
  two:
    shell: {second}
    after: [one]
""")
    out = kale("run", str(wf), timeout=240)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert "two READY  requeued" in out.stderr, out.stderr
    one, two = (logs(kale, run_id, n).split()[-1] for n in ("one", "two"))
    assert one != two  # the second task finished in a second pilot
    attempts = json.loads(kale("status", run_id, "two", "--json").stdout)["attempts"]
    assert [a["state"] for a in attempts] == ["INTERRUPTED", "SUCCEEDED"]
    assert len([j for j in batch_jobs(home) if j["mode"] == "pilot"]) == 2


def test_the_manager_killed_while_jobs_wait_reattaches_to_them(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    """Three 2-CPU jobs on a 2-CPU node: one runs, two wait in the queue. The manager is
    SIGKILLed; the next one re-attaches to the same jobs (none is submitted again) and
    every task runs once."""
    m = managers("--workers", "0")
    ledger = tmp_path / "ran.txt"
    body = "".join(f"  t{i}:\n    shell: sleep 3; echo t{i} >> {ledger}\n"
                   f"    resources: {{cpus: 2}}\n" for i in range(3))
    wf = write(tmp_path / "wf.yaml", "name: reattach\nexecutor: slurm\ntasks:\n" + body)
    run_id = kale("run", str(wf), "--detach").stdout.strip()
    wait_until(lambda: len([j for j in batch_jobs(home) if j["native_id"]]) == 3,
               what="three jobs submitted")
    pid = int(m.doc["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not process_alive(pid), what="the killed manager to be gone")
    m.start()
    wait_until(lambda: run_state(kale, run_id) == "SUCCEEDED", what="the run to succeed")
    assert sorted(ledger.read_text().split()) == ["t0", "t1", "t2"]
    assert all(t["attempts"] == 1 for t in status(kale, run_id).values())
    assert len(batch_jobs(home)) == 3  # re-attached, not resubmitted


def test_jobs_the_scheduler_refuses_fail_their_task_with_its_message(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    managers("--workers", "0")
    wf = write(tmp_path / "wf.yaml", """\
name: refused
executor: slurm
tasks:
  nowhere:
    shell: echo hi
    resources: {queue: nosuch}
  too_long:
    shell: echo hi
    resources: {queue: short, walltime: "00:05:00"}
  fine:
    shell: echo fine
""")
    out = kale("run", str(wf))
    assert out.returncode == 1, out.stderr
    tasks = status(kale, out.stdout.strip())
    assert tasks["fine"]["state"] == "SUCCEEDED"
    assert tasks["nowhere"]["state"] == "FAILED"
    assert "slurm refused the job" in tasks["nowhere"]["error"]
    assert "invalid partition" in tasks["nowhere"]["error"].lower()
    assert tasks["too_long"]["state"] == "FAILED"
    assert "time limit" in tasks["too_long"]["error"].lower()


def test_pilots_the_scheduler_refuses_fail_the_tasks_waiting_for_them(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    managers("--workers", "1")  # for the local task
    wf = write(tmp_path / "wf.yaml", """\
name: refused-pilots
executor: {kind: slurm, mode: pilot, queue: nosuch}
tasks:
  a: {shell: echo a}
  b: {shell: echo b, after: [a]}
  local: {shell: echo fine, executor: local}
""")
    out = kale("run", str(wf))
    assert out.returncode == 1, out.stderr
    tasks = status(kale, out.stdout.strip())
    assert tasks["a"]["state"] == "FAILED" and tasks["b"]["state"] == "SKIPPED"
    assert tasks["local"]["state"] == "SUCCEEDED"
    assert "slurm refused the job" in tasks["a"]["error"]
    assert "invalid partition" in tasks["a"]["error"].lower()


def test_from_python_a_run_on_slurm_goes_through_the_manager(slurm: str, kale: Kale,
                                                             home: Path) -> None:
    """What a notebook does: ``wf.run()`` with a batch executor starts the manager if need
    be, and a function defined right here runs inside a Slurm job."""
    from kale import Workflow

    wf = Workflow("from-python", executor="slurm")

    @wf.python
    def where() -> str:
        import os

        return os.environ["SLURM_JOB_ID"]

    try:
        run = wf.run()
        assert run.wait(120).state.value == "SUCCEEDED"
        job = run.result("where")
        assert job in {j["native_id"] for j in batch_jobs(home)}
    finally:
        kale("manager", "stop")

"""Tasks through real Parsl (issue 16): a HighThroughputExecutor with a LocalProvider (Kale's
default, and a user's own config) and one with a SlurmProvider on the test Slurm. Kale keeps
the state, reuse and logs; Parsl's workers run the tasks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Kale, process_alive, wait_until
from engine_kit import (
    MODULE,
    check_bad_settings,
    kill_orphans,
    project,
    resume_and_check,
    run_cli,
    start_and_kill,
    states,
    status,
)
from kale import Workflow
from kale.executors.engines import kept
from kale.model.states import RunState

pytestmark = pytest.mark.timeout(300)

CONFIG = '''
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import {provider}
{launcher_import}

def config():
    return Config(executors=[HighThroughputExecutor(
        label="mine", address="127.0.0.1", max_workers_per_node={workers}, encrypted=True,
        provider={provider}({provider_args}))], usage_tracking=0)
'''


def _config(tmp_path: Path, provider: str = "LocalProvider",
            provider_args: str = "init_blocks=1, max_blocks=1",
            launcher_import: str = "", workers: int = 2) -> None:
    (tmp_path / "cfg.py").write_text(CONFIG.format(
        provider=provider, provider_args=provider_args, launcher_import=launcher_import,
        workers=workers))


@pytest.fixture(autouse=True)
def _nothing_kept() -> Iterator[None]:
    """The DataFlowKernels a test's runs kept for the next run end with the test."""
    yield
    kept.clear()


def test_kales_default_parsl_runs_python_shell_and_notebook_tasks(
        kale: Kale, tmp_path: Path) -> None:
    wf = project(tmp_path, "parsl")
    first = run_cli(kale, str(wf))
    tasks = status(kale, first)
    assert {t["state"] for t in tasks.values()} == {"SUCCEEDED"}, tasks
    for name in ("produce", "shout", "square"):
        assert kale.attempts(first, name)[0]["worker"] == f"parsl:{socket.gethostname()}"
    assert kale.attempts(first, "consume")[0]["worker"] == "local"
    produced = tasks["produce"]["result"]
    assert produced["n"] == 5 and produced["pid"] != os.getpid()
    assert tasks["consume"]["result"] == {"sum": 10, "text": "hello"}
    assert tasks["square"]["result"]["squared"] == 25
    assert Path(tasks["shout"]["result"]["said.txt"]).read_text() == "hello from dask\n"
    assert "producing 5" in kale("logs", first, "produce").stdout
    # Parsl's run directory is kept with the run's, not in the current directory
    assert not (tmp_path / "runinfo").exists()
    second = run_cli(kale, str(wf))
    again = status(kale, second)
    assert {n: t["reused_from"] for n, t in again.items()} == dict.fromkeys(tasks, first)


def test_the_next_run_in_the_process_runs_on_the_workers_the_last_one_started(
        home: Path, tmp_path: Path) -> None:
    """A local config's DataFlowKernel, workers and all, is kept for the next run of the
    same config in this process (a notebook session, the manager), and ends when the
    process lets it go."""
    (tmp_path / "steps.py").write_text(MODULE)
    _config(tmp_path, workers=1)
    pids = []
    for n in (1, 2):  # (two values: the second run cannot reuse the first's result)
        wf = Workflow("kept", base_dir=tmp_path,
                      executor={"kind": "parsl", "config": "cfg.py:config"})
        wf.python("steps:produce", name="produce", parameters={"n": n})
        run = wf.run()
        assert run.wait().state is RunState.SUCCEEDED
        pids.append(run.result("produce")["pid"])
    assert pids[1] == pids[0]  # the same Python process, on the same Parsl worker
    kept.clear()
    wait_until(lambda: not process_alive(pids[0]), what="the kept workers stopped")



POINTS = """
class Point:
    def __init__(self, x):
        self.x = x


def make():
    return Point(1)


def use(make):
    return make.x + 10
"""


def test_a_result_of_a_class_beside_the_workflow_reaches_the_task_below_on_parsl(
        home: Path, tmp_path: Path) -> None:
    """An upstream result is an instance of a class in the workflow's folder, made here:
    the Parsl worker that runs the task below (and imported nothing of the workflow's
    yet) finds the module where the workflow is."""
    (tmp_path / "points.py").write_text(POINTS)
    _config(tmp_path, workers=1)
    wf = Workflow("points", base_dir=tmp_path,
                  executor={"kind": "parsl", "config": "cfg.py:config"})
    wf.python("points:make", name="make", executor="local")
    wf.python("points:use", name="use", after=["make"])
    run = wf.run()
    assert run.wait().state is RunState.SUCCEEDED, [t.error for t in run.tasks]
    assert run.result("use") == 11

KEEPER = """
import sys
from kale import Workflow
wf = Workflow("kept", base_dir=sys.argv[1],
              executor={"kind": "parsl", "config": "cfg.py:config"})
wf.python("steps:where", name="where")
assert wf.run().wait().state.value == "SUCCEEDED"
print("kept", flush=True)
sys.stdin.read()
"""


def test_what_a_killed_process_kept_stops_with_it(home: Path, tmp_path: Path) -> None:
    """The Parsl processes a DataFlowKernel kept for the next run stop when the process
    that kept them dies, even by SIGKILL (nothing of Kale's then runs in it)."""
    (tmp_path / "steps.py").write_text(MODULE)
    _config(tmp_path, workers=1)
    proc = subprocess.Popen([sys.executable, "-c", KEEPER, str(tmp_path)], cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "kept\n"  # its run ended; its Parsl still runs
    interchanges, pools = _interchanges(tmp_path), _interchanges(tmp_path, b"worker_pool")
    assert interchanges and pools
    left = interchanges + pools
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stdin.close()
    for pid in left:
        wait_until(lambda pid=pid: not process_alive(pid), what=f"Parsl's process {pid} stopped")
    kill_orphans(tmp_path)


def test_a_users_config_cancel_and_timeout_stop_the_task_on_its_parsl_worker(
        home: Path, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    _config(tmp_path)
    gate = tmp_path / "never"
    wf = Workflow("stop-on-parsl", base_dir=tmp_path,
                  executor={"kind": "parsl", "config": "cfg.py:config"})
    wf.python("steps:wait_for", name="cancelled",
              parameters={"gate": str(gate), "note": str(tmp_path / "c.note")})
    wf.python("steps:wait_for", name="slow", timeout=1,
              parameters={"gate": str(gate), "note": str(tmp_path / "s.note")})
    run = wf.run()
    pids = wait_until(lambda: all((tmp_path / f).is_file() and (tmp_path / f).read_text()
                                  for f in ("c.note", "s.note")) and
                      [int((tmp_path / f).read_text().split()[0])
                       for f in ("c.note", "s.note")],
                      what="both tasks started on Parsl's workers")
    wait_until(lambda: states(run)["slow"] == "TIMEOUT", what="the slow task timed out")
    assert run.cancel() is RunState.CANCELLED
    for pid in pids:  # the cancel marker reached them: Parsl itself cannot stop an app
        wait_until(lambda pid=pid: not process_alive(pid), what=f"process {pid} stopped")
    assert states(run) == {"cancelled": "CANCELLED", "slow": "TIMEOUT"}


def test_a_parsl_worker_killed_mid_task_is_retried_and_nothing_runs_twice_after_success(
        home: Path, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    _config(tmp_path)
    gate, note = tmp_path / "gate", tmp_path / "starts.txt"
    wf = Workflow("kill-a-parsl-worker", base_dir=tmp_path,
                  executor={"kind": "parsl", "config": "cfg.py:config"})
    wf.python("steps:wait_for", name="long", retries=1, retry_delay=0,
              parameters={"gate": str(gate), "note": str(note)})
    run = wf.run()
    first = wait_until(lambda: note.is_file() and note.read_text().split(),
                       what="the task started")
    os.kill(int(first[1]), signal.SIGKILL)  # the Parsl worker that runs the task's process
    second = wait_until(lambda: len(note.read_text().splitlines()) > 1
                        and note.read_text().splitlines()[1].split(),
                        what="the task started again (Kale's retry)")
    assert second[1] != first[1]
    gate.touch()
    assert run.wait().state is RunState.SUCCEEDED
    long = next(t for t in run.status()["tasks"] if t["name"] == "long")
    assert long["attempts"] == 2  # Parsl said the worker was lost; Kale retried
    assert run.result("long") == "opened"
    again = wf.run()
    assert again.wait().state is RunState.SUCCEEDED
    assert {t["name"]: t["reused_from"] for t in again.status()["tasks"]} == {"long": run.id}
    assert len(note.read_text().splitlines()) == 2


def test_resume_after_kale_is_sigkilled_mid_run_on_parsl(kale: Kale, tmp_path: Path) -> None:
    run_id = start_and_kill(kale, tmp_path, "parsl")
    left = _interchanges(tmp_path)
    assert left  # Parsl's interchange outlives the driver...
    resume_and_check(kale, tmp_path, run_id)
    for pid in left:  # ...until the run's next driver stops it
        wait_until(lambda pid=pid: not process_alive(pid), what=f"interchange {pid} stopped")
    kill_orphans(tmp_path)


def test_parsl_with_a_slurm_provider_runs_tasks_in_slurm_jobs(
        slurm: str, kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    _config(tmp_path, "SlurmProvider",
            "partition='debug', nodes_per_block=1, init_blocks=1, max_blocks=1, "
            "walltime='00:10:00', launcher=SingleNodeLauncher(), "
            f"worker_init='export PATH={os.path.dirname(sys.executable)}:$PATH'",
            "from parsl.launchers import SingleNodeLauncher")
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: parsl-on-slurm\nexecutor: {kind: parsl, config: 'cfg:config'}\n"
                  "tasks:\n  where: {python: 'steps:where'}\n")
    run_id = run_cli(kale, str(wf))
    task = status(kale, run_id)["where"]
    assert task["state"] == "SUCCEEDED", task
    job = task["result"]["job"]
    assert job.isdigit()
    wait_until(lambda: job not in subprocess.run(["squeue", "-h", "-o", "%i"],
                                                 capture_output=True, text=True).stdout,
               what=f"Slurm job {job} ended with the run")


def test_bad_parsl_settings_say_what_and_where(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "cfg.py").write_text("config = 42\n")
    check_bad_settings(
        kale, tmp_path, "{kind: parsl, config: 'cfg:config', scale: 2}",
        ["bad.yaml:2: executor.scale: not a setting of 'parsl'; allowed: config"],
        "{kind: parsl, config: 'cfg:config'}",
        "executor parsl: config 'cfg:config' is a int, not a parsl.Config")


def _interchanges(tmp_path: Path, what: bytes = b"interchange") -> list[int]:
    """Parsl interchanges (or other processes whose command line has ``what``) started
    by a `kale` of this test (their working directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if what in cmd and cwd == str(tmp_path):
            found.append(int(entry.name))
    return found

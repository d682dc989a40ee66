"""Batch pieces that need no scheduler: the ``executor:`` and ``launcher:`` of a workflow,
the job PSI/J would submit for a task, and the CLI's answers to bad batch options."""

from __future__ import annotations

import io
from pathlib import Path

import psij
import pytest

from conftest import Kale
from kale import Workflow
from kale.batch.jobs import BatchJobs, JobRequest, JobUpdate, custom_attributes, memory_bytes
from kale.errors import ValidationError
from kale.model.executor import ExecutorSpec
from kale.model.resources import Resources
from kale.tasks.launchers import launch_prefix
from kale.worker.agent import _walltime_plan


def problems(data: dict) -> list[str]:
    with pytest.raises(ValidationError) as e:
        Workflow.from_dict(data)
    return [str(p) for p in e.value.problems]


def test_executor_at_workflow_and_task_level_round_trips() -> None:
    data = {"name": "w", "executor": {"kind": "slurm", "mode": "pilot", "max_jobs": 2,
                                      "walltime": "00:30:00"},
            "tasks": {"a": {"shell": "true"},
                      "b": {"shell": "true", "executor": "local"},
                      "c": {"shell": "srun hostname", "executor": "pbs", "launcher": "mpiexec",
                            "resources": {"nodes": 2, "ranks": 4}}}}
    wf = Workflow.from_dict(data)
    assert wf.executor == ExecutorSpec("slurm", "pilot", {"max_jobs": 2, "walltime": "00:30:00"})
    assert wf.executor.pilot and wf.executor.setting("max_nodes") == 4  # a default
    assert wf["a"].executor is None and wf["b"].executor == ExecutorSpec("local")
    assert wf["c"].resources.ranks == 4
    assert Workflow.from_dict(wf.to_dict()).to_dict() == wf.to_dict() == data


def test_bad_executors_and_launchers_say_what_and_where() -> None:
    found = problems({"name": "w", "executor": {"kind": "slrum", "max_jobs": 0},
                      "tasks": {"a": {"shell": "true", "executor": {"kind": "local",
                                                                    "mode": "pilot"}},
                                "b": {"python": "m:f", "launcher": "srun"},
                                "c": {"shell": "x", "launcher": "aprun"}}})
    assert "executor.kind: unknown executor 'slrum'; known: local, slurm, pbs, lsf, flux, " \
        "cobalt, dask, parsl" in found
    assert "executor.max_jobs: must be an integer >= 1, got 0" in found
    assert any(p.startswith("tasks.a.executor.mode: pilot mode needs a batch scheduler")
               for p in found)
    assert any(p.startswith("tasks.b.launcher: only shell tasks take a launcher")
               for p in found)
    assert "tasks.c.launcher: must be one of srun, mpiexec, mpirun, got 'aprun'" in found


def test_where_a_task_runs_does_not_change_its_reuse_hash() -> None:
    a = Workflow("w").shell("t", "echo hi")
    b = Workflow("w").shell("t", "echo hi", executor="slurm")
    assert a.definition_hash() == b.definition_hash()


def test_launchers_build_argv_from_the_tasks_resources() -> None:
    res = Resources(nodes=2, ranks=4, cpus=3, gpus=1)
    assert launch_prefix("srun", res) == ["srun", "--nodes=2", "--ntasks=8",
                                          "--cpus-per-task=3", "--gpus-per-task=1"]
    assert launch_prefix("mpiexec", res) == ["mpiexec", "-n", "8"]


def test_memory_and_scheduler_options() -> None:
    assert memory_bytes("4G") == 4 << 30 and memory_bytes("512M") == 512 << 20
    assert memory_bytes("1.5GB") == int(1.5 * (1 << 30)) and memory_bytes("100") == 100 << 20
    assert custom_attributes("slurm", ["--qos=debug", "--constraint knl"]) == {
        "slurm.qos": "debug", "slurm.constraint": "knl"}
    with pytest.raises(ValueError, match="--exclusive"):
        custom_attributes("slurm", ["--exclusive"])


def test_timeouts_are_read_from_the_schedulers_message() -> None:
    # PSI/J's message for Slurm's TimeLimit reason, and a PBS-style one
    assert JobUpdate("k", "1", "FAILED", True, None, "The job exhausted its time limit.").timed_out
    assert JobUpdate("k", "1", "FAILED", True, None, "job killed: walltime 70 exceeded").timed_out
    assert not JobUpdate("k", "1", "FAILED", True, 3, "NonZeroExitCode").timed_out
    assert not JobUpdate("k", "1", "CANCELED", True).timed_out


def test_the_slurm_script_psij_writes_for_a_task(tmp_path: Path) -> None:
    """PSI/J's own template, filled from a task's resources (nothing is submitted)."""
    jobs = BatchJobs("slurm", tmp_path / "batch", lambda u: None)
    req = JobRequest("kale-sim-abc123", ["python", "-m", "kale.worker", "--once"], tmp_path,
                     Resources(nodes=2, ranks=4, cpus=2, memory="4G", queue="debug",
                               account="proj", options=["--qos=high"]),
                     walltime="00:30:00", env={"KALE_HOME": "/h"})
    job = psij.Job(jobs._spec(req))
    buf = io.StringIO()
    ex = jobs.executor
    ex.generate_submit_script(job, ex._create_script_context(job), buf)
    script = buf.getvalue()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=2", "#SBATCH --time=0:30:0",
                 '#SBATCH --partition="debug"', '#SBATCH --account="proj"',
                 '#SBATCH --qos="high"', '#SBATCH --job-name="kale-sim-abc123"',
                 f"#SBATCH --mem={4 << 20}K"):
        assert line in script, (line, script)
    assert "KALE_HOME" in script and "kale.worker" in script
    assert oct((tmp_path / "batch").stat().st_mode & 0o777) == "0o700"


def test_a_pilot_drains_then_hands_back_before_its_walltime() -> None:
    def drain() -> None: ...
    def stop() -> None: ...
    assert _walltime_plan(20, drain, stop) == [(5.0, drain), (2.0, stop)]
    assert _walltime_plan(3600, drain, stop) == [(120.0, drain), (30.0, stop)]


def test_cli_batch_options_are_checked(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text("name: w\ntasks:\n  a:\n    shell: 'true'\n")
    out = kale("run", str(wf), "--pilot")
    assert out.returncode == 2 and "--pilot needs a batch --executor" in out.stderr
    out = kale("run", str(wf), "--executor", "slrum")
    assert out.returncode == 2 and "unknown executor 'slrum'" in out.stderr
    out = kale("run", str(wf), "--executor", "slurm", "--embedded")
    assert out.returncode == 2 and "batch executors run through the Kale manager" in out.stderr
    assert "Traceback" not in out.stderr

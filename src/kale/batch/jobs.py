"""Batch jobs through PSI/J: submit, watch and cancel, for any scheduler PSI/J knows.

Kale does not re-implement submission: PSI/J writes the job script from its own packaged
template for the scheduler, submits it, polls the queue and reads the exit code. What Kale
adds is the tuning (PSI/J polls every 30 s by default; Kale polls every second, so a state
change is seen within about 1 s of the scheduler), a per-job log file, and the mapping
from a task's :class:`~kale.model.resources.Resources` to PSI/J's resource spec.

One :class:`BatchJobs` per scheduler; its status callback runs in PSI/J's polling thread.
The scheduler's adapter (:func:`kale.batch.schedulers.scheduler`, any registered one, a
plug-in's too) names the PSI/J executor that submits its jobs (``psij_name``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from kale.errors import SubmitError
from kale.model.resources import Resources, walltime_seconds

log = logging.getLogger("kale.batch")

#: how often PSI/J polls the scheduler's queue (seconds)
POLL_INTERVAL = 1.0
#: a job's walltime when neither the task nor the pilot gives one
DEFAULT_WALLTIME = "01:00:00"

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_OPTION = re.compile(r"^--?([A-Za-z][\w-]*)(?:[= ](.*))?$")


@dataclass
class JobRequest:
    """One batch job: what it runs and what it asks of the scheduler."""

    key: str                      # Kale's id for the job (also its name in the queue)
    argv: list[str]
    directory: Path
    resources: Resources = field(default_factory=Resources)
    walltime: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class JobUpdate:
    """A job's state as PSI/J last saw it."""

    key: str
    native_id: str | None
    state: str                    # QUEUED, ACTIVE, COMPLETED, FAILED, CANCELED
    final: bool
    exit_code: int | None = None
    message: str | None = None

    @property
    def timed_out(self) -> bool:
        """The scheduler ended the job at its walltime."""
        text = (self.message or "").lower()
        return self.state == "FAILED" and ("time limit" in text or "walltime" in text)


def memory_bytes(text: str) -> int:
    """``"4G"`` -> 4 GiB, ``"512M"``, ``"1.5GB"``, ``"100"`` (megabytes, as Slurm)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)i?B?", text.strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"memory {text!r} is not like 512M or 4G")
    unit = m.group(2).upper()
    return int(float(m.group(1)) * (_UNITS[unit] if unit else 1 << 20))


def custom_attributes(scheduler: str, options: list[str]) -> dict[str, object]:
    """Extra scheduler options (``--qos=debug``, ``--constraint knl``) as PSI/J custom
    attributes (``slurm.qos``), which its template writes as directives."""
    out: dict[str, object] = {}
    for opt in options:
        m = _OPTION.match(opt.strip())
        if not m or m.group(2) is None:
            raise ValueError(f"scheduler option {opt!r} must look like --name=value")
        out[f"{scheduler}.{m.group(1)}"] = m.group(2)
    return out


class BatchJobs:
    """Submit, attach to and cancel jobs on one scheduler; ``on_update`` hears of every
    state change (from PSI/J's polling thread)."""

    def __init__(self, scheduler: str, work_dir: Path,
                 on_update: Callable[[JobUpdate], None], *,
                 poll: float = POLL_INTERVAL) -> None:
        from kale.batch.schedulers import scheduler as adapter

        self.scheduler = scheduler
        #: the PSI/J executor's name, which also prefixes its custom attributes
        self.psij_name = adapter(scheduler).psij_name
        self.work_dir = work_dir
        self.on_update = on_update
        self.poll = poll
        self.jobs: dict[str, Any] = {}    # key -> psij.Job
        self._lock = threading.Lock()
        self._executor: Any = None
        # PSI/J logs every poll at INFO; Kale logs what matters about jobs itself.
        logging.getLogger("psij").setLevel(logging.WARNING)

    @property
    def executor(self) -> Any:
        if self._executor is None:
            self._executor = make_executor(self.psij_name, self.work_dir, self.poll)
        return self._executor

    def submit(self, req: JobRequest) -> str:
        """Submit; returns the scheduler's job id. Raises :class:`SubmitError` with the
        scheduler's own message when it refuses the job."""
        import psij

        job = psij.Job(self._spec(req))
        self._watch(req.key, job)
        try:
            self.executor.submit(job)
        except psij.SubmitException as e:
            with self._lock:
                self.jobs.pop(req.key, None)
            raise SubmitError(self.scheduler, _first_lines(str(e.message or e))) from None
        return str(job.native_id)

    def attach(self, key: str, native_id: str) -> None:
        """Watch a job submitted earlier (by a manager before a restart)."""
        import psij

        job = psij.Job()
        self._watch(key, job)
        self.executor.attach(job, native_id)

    def cancel(self, key: str) -> None:
        with self._lock:
            job = self.jobs.get(key)
        if job is None or job.native_id is None:
            return
        try:
            self.executor.cancel(job)
        except Exception as e:  # already gone: nothing to cancel
            log.info("cancel %s (%s): %s", key, job.native_id, e)

    def _watch(self, key: str, job: Any) -> None:
        with self._lock:
            self.jobs[key] = job

        def changed(j: Any, status: Any) -> None:
            state = status.state
            if state.final:
                with self._lock:
                    self.jobs.pop(key, None)
            try:
                self.on_update(JobUpdate(key, j.native_id, str(state), bool(state.final),
                                         status.exit_code, status.message))
            except Exception:
                log.exception("job update handler failed")

        job.set_job_status_callback(changed)

    def _attributes(self, req: JobRequest) -> dict[str, object]:
        attrs = custom_attributes(self.psij_name, req.resources.options)
        if self.psij_name == "slurm":  # PSI/J 0.9's Slurm executor names jobs by its uuid
            attrs.setdefault("slurm.job-name", req.key)
        return attrs

    def _spec(self, req: JobRequest) -> Any:
        return psij_spec(req, self.work_dir, self._attributes(req))


def psij_spec(req: JobRequest, work_dir: Path, attributes: dict[str, object]) -> Any:
    """PSI/J's spec of the job ``req``: what its template writes into the job script (the
    sbatch path submits that script; the REST path sends the same script). ``attributes``:
    PSI/J custom attributes (``slurm.qos``). The job inherits the submitting process's
    environment, plus ``req.env``; its output goes to ``work_dir/<key>.out`` and ``.err``."""
    import psij

    r = req.resources
    work_dir.mkdir(parents=True, exist_ok=True)
    return psij.JobSpec(
        name=req.key,
        executable=req.argv[0], arguments=req.argv[1:],
        directory=req.directory,
        environment=dict(req.env),
        stdout_path=work_dir / f"{req.key}.out",
        stderr_path=work_dir / f"{req.key}.err",
        inherit_environment=True,
        resources=psij.ResourceSpecV1(
            node_count=r.nodes, processes_per_node=r.ranks,
            cpu_cores_per_process=r.cpus, gpu_cores_per_process=r.gpus or None,
            memory=memory_bytes(r.memory) if r.memory else None),
        attributes=psij.JobAttributes(
            duration=timedelta(seconds=job_walltime(req)),
            queue_name=r.queue, account=r.account,
            custom_attributes=attributes or None),
        launcher="single")


def job_walltime(req: JobRequest) -> int:
    """The job's walltime in seconds (:data:`DEFAULT_WALLTIME` when the request has none)."""
    return walltime_seconds(req.walltime or DEFAULT_WALLTIME)


def make_executor(psij_name: str, work_dir: Path, poll: float) -> Any:
    """PSI/J's executor ``psij_name``, polling every ``poll`` seconds. Every PSI/J batch
    executor takes the batch configuration (its per-scheduler classes add nothing to it);
    the others (Flux) read only the work directory from it."""
    import psij
    from psij.executors.batch.batch_scheduler_executor import BatchSchedulerExecutorConfig

    work_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(work_dir, 0o700)  # job scripts carry the environment
    # PSI/J types the interval as int but sleeps on it; fractions work.
    config = BatchSchedulerExecutorConfig(
        work_directory=work_dir, queue_polling_interval=poll,  # type: ignore[arg-type]
        initial_queue_polling_delay=0)
    return psij.JobExecutor.get_instance(psij_name, config=config)


def _first_lines(text: str, n: int = 5) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n]) or "the scheduler refused the job"

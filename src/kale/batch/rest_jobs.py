"""Batch jobs through slurmrestd instead of sbatch/squeue/scancel: the same interface as
:class:`kale.batch.jobs.BatchJobs` (submit, attach, cancel; every state change to
``on_update`` as a :class:`~kale.batch.jobs.JobUpdate` in PSI/J's words), so the manager's
job-per-task and pilot paths use either.

The job script is the one the sbatch path submits: PSI/J's packaged Slurm template,
rendered for the same request (environment, directory, the launcher, the output and
exit-code files in the work directory); it goes as the ``script`` of the submission, its
directives repeated as job properties (slurmrestd ignores ``#SBATCH`` lines). As with
PSI/J, the exit code is the one the script wrote to ``<native id>.ec`` (the template wraps
the command, so Slurm itself records 0), else the one slurmrestd reports.

Polling never gives up on a job because slurmrestd did not answer or refused the token:
a job ends only when slurmrestd says so (or says it no longer knows it). A token that
expires is renewed (:mod:`kale.batch.rest_auth`) and the run goes on.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kale.batch.jobs import (
    POLL_INTERVAL,
    JobRequest,
    JobUpdate,
    custom_attributes,
    job_walltime,
    make_executor,
    memory_bytes,
    psij_spec,
)
from kale.batch.rest_auth import TokenSource
from kale.batch.rest_client import SlurmRestClient, SlurmRestError
from kale.batch.slurm_rest import (
    INVALID_JOB_ID,
    JobInfo,
    job_environment,
    job_gone,
    job_properties,
    parse_job,
    submit_body,
    submitted_id,
)
from kale.errors import SchedulerError, SubmitError
from kale.model.executor import RestAccess

log = logging.getLogger("kale.batch")


class RestSubmitError(SubmitError):
    """slurmrestd did not take the job: unreachable, the token refused, or the job refused.
    The message has the URL, the HTTP status and slurmrestd's words."""

    def __init__(self, error: SlurmRestError) -> None:
        SchedulerError.__init__(self, f"slurm job not submitted: {error}", stderr=str(error),
                                transient=error.transient)
        self.scheduler, self.status, self.auth = "slurm", error.status, error.auth


@dataclass
class _Watched:
    key: str
    native_id: str
    state: str | None          # last state reported (None: attached, not seen yet)


class RestJobs:
    """Submit, attach to and cancel Slurm jobs through one slurmrestd. ``on_update`` runs
    in this object's polling thread (``kale-slurmrestd``), which runs while jobs are
    watched. ``jobs`` is shared under ``_lock``, never held across a request."""

    scheduler = "slurm"

    def __init__(self, access: RestAccess, work_dir: Path,
                 on_update: Callable[[JobUpdate], None], *, poll: float = POLL_INTERVAL,
                 client: SlurmRestClient | None = None) -> None:
        self.access = access
        self.client = client or SlurmRestClient(
            access.url, TokenSource(access.token_file, access.token_command))
        self.work_dir, self.on_update, self.poll = work_dir, on_update, poll
        self.jobs: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._renderer: Any = None
        self._last_error = ""
        # httpx logs every request at INFO: one line per job per second in the manager's log
        logging.getLogger("httpx").setLevel(logging.WARNING)

    # -- the BatchJobs interface ---------------------------------------------------------
    def submit(self, req: JobRequest) -> str:
        """Submit through slurmrestd; returns Slurm's job id. Raises
        :class:`RestSubmitError` (a :class:`SubmitError`) when it does not take the job."""
        body = submit_body(self.script(req), self.properties(req))
        try:
            doc = self.client.post("job/submit", body)
        except SlurmRestError as e:
            raise RestSubmitError(e) from None
        native = submitted_id(doc)
        if native is None:
            raise RestSubmitError(SlurmRestError(
                f"slurmrestd at {self.client.url} gave no job id: {str(doc)[:200]}"))
        self._watch(_Watched(req.key, native, "QUEUED"))
        self._tell(JobUpdate(req.key, native, "QUEUED", False))
        return native

    def attach(self, key: str, native_id: str) -> None:
        """Watch a job submitted earlier (by a manager before a restart)."""
        self._watch(_Watched(key, native_id, None))

    def cancel(self, key: str) -> None:
        with self._lock:
            job = self.jobs.get(key)
        if job is None:
            return
        try:
            self.client.request("DELETE", f"job/{job.native_id}", accept=(INVALID_JOB_ID,))
        except SlurmRestError as e:
            log.warning("cancel %s (%s) through slurmrestd: %s", key, job.native_id, e)
        self._wake.set()

    def close(self) -> None:
        with self._lock:
            self.jobs.clear()
        self._wake.set()
        self.client.close()

    # -- what is sent --------------------------------------------------------------------
    def script(self, req: JobRequest) -> str:
        """The job script: PSI/J's Slurm template, as the sbatch path renders it."""
        import psij

        if self._renderer is None:
            self._renderer = make_executor("slurm", self.work_dir, self.poll)
        # where the script writes its output and exit code (PSI/J makes it on submit)
        Path(self._renderer.work_directory).mkdir(parents=True, exist_ok=True)
        attrs = custom_attributes("slurm", req.resources.options)
        attrs.setdefault("slurm.job-name", req.key)
        job = psij.Job(psij_spec(req, self.work_dir, attrs))
        out = io.StringIO()
        # PSI/J builds the template's context (launcher command, script dir) privately.
        context = self._renderer._create_script_context(job)
        self._renderer.generate_submit_script(job, context, out)
        return out.getvalue()

    def properties(self, req: JobRequest) -> dict[str, Any]:
        """The submission's job properties: what the script's directives say."""
        r = req.resources
        options = {k.split(".", 1)[1]: str(v)
                   for k, v in custom_attributes("slurm", r.options).items()}
        return job_properties(
            name=req.key, directory=str(req.directory),
            environment=job_environment(os.environ, {}),
            walltime_seconds=job_walltime(req), nodes=r.nodes, ranks=r.nodes * r.ranks,
            ranks_per_node=r.ranks, cpus_per_rank=r.cpus, gpus_per_rank=r.gpus or None,
            memory_bytes=memory_bytes(r.memory) if r.memory else None,
            partition=r.queue, account=r.account, options=options)

    # -- watching ------------------------------------------------------------------------
    def _watch(self, job: _Watched) -> None:
        with self._lock:
            self.jobs[job.key] = job
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kale-slurmrestd",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.poll)
            self._wake.clear()
            with self._lock:
                watched = list(self.jobs.values())
                if not watched:
                    self._thread = None
                    return
            for job in watched:
                try:
                    self._poll(job)
                except Exception:
                    log.exception("polling Slurm job %s failed", job.native_id)

    def _poll(self, job: _Watched) -> None:
        try:
            doc = self.client.request("GET", f"job/{job.native_id}", accept=(INVALID_JOB_ID,))
        except SlurmRestError as e:
            # Not the job's fault: keep it, try again next round (the token may be renewed).
            if str(e) != self._last_error:
                log.warning("cannot poll Slurm job %s: %s", job.native_id, e)
                self._last_error = str(e)
            return
        if self._last_error:
            log.info("slurmrestd at %s answers again", self.client.url)
            self._last_error = ""
        info = parse_job(doc, job.native_id)
        if info is None and not job_gone(doc):
            return
        if info is None:   # Slurm forgot it (MinJobAge): it ended; the .ec file says how
            info = JobInfo(job.native_id, "UNKNOWN", "COMPLETED", None, None, None)
        if info.final:
            self._ended(job, info)
        elif info.state != job.state:
            job.state = info.state
            self._tell(JobUpdate(job.key, job.native_id, info.state, False))

    def _ended(self, job: _Watched, info: JobInfo) -> None:
        with self._lock:
            if self.jobs.get(job.key) is not job:
                return
            del self.jobs[job.key]
        state, exit_code = info.state, info.exit_code
        if state != "CANCELED":
            written = self._exit_file(job.native_id)
            if written is not None:
                exit_code = written
                if written != 0 and state == "COMPLETED":
                    state = "FAILED"
        self._tell(JobUpdate(job.key, job.native_id, state, True, exit_code, info.message))

    def _exit_file(self, native_id: str) -> int | None:
        """The exit code the job script wrote (and the file gone, as PSI/J does)."""
        script_dir = Path(self._renderer.work_directory) if self._renderer is not None \
            else self.work_dir / "slurm"
        path = script_dir / f"{native_id}.ec"
        try:
            text = path.read_text().strip()
            path.unlink()
            (script_dir / f"{native_id}.nodefile").unlink(missing_ok=True)
        except OSError:
            return None
        try:
            return int(text)
        except ValueError:
            return None

    def _tell(self, update: JobUpdate) -> None:
        try:
            self.on_update(update)
        except Exception:
            log.exception("job update handler failed")

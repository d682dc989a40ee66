"""Batch workers: the manager puts workers into batch jobs (through PSI/J and the
scheduler's commands, or through Slurm's REST API for an executor with ``via: rest``:
:func:`kale.batch.systems.job_system` gives one or the other, per scheduler and endpoint).

Two modes, both a ``kale worker`` inside a batch job, connected back to this manager:

- **job**: each attempt gets a job of its own, sized by the task's resources. Its worker
  takes that one attempt (``--once``, pool ``task:RUN/TASK/N``) and exits.
- **pilot**: jobs whose workers take any attempt of one executor spec (pool ``pilot:...``).
  Every second the provider compares each pool's backlog with the slots of its pilots
  still queued, and submits more within the spec's ``max_jobs`` (queued or running) and
  ``max_nodes``; a pilot with nothing to do for ``idle`` seconds ends itself, and one
  near its walltime stops taking tasks and hands back what it cannot finish.

The scheduler's word on a job decides what happens to attempts its worker did not
report: a job that hit its walltime makes its task TIMEOUT, a job cancelled outside Kale
or one that failed fails its attempts (retried per their policy), with the scheduler's
message. Jobs are recorded in the store (``batch_jobs``), so a restarted manager
re-attaches to those still queued or running.
"""

from __future__ import annotations

import logging
import math
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kale.batch.jobs import JobRequest, JobUpdate
from kale.batch.systems import JobSystem, job_system, system_key
from kale.config import user_name
from kale.errors import KaleError, SubmitError
from kale.executors.base import Interrupted
from kale.manager.broker import Broker, Pending
from kale.model.executor import ExecutorSpec, RestAccess
from kale.model.resources import Resources, walltime_seconds
from kale.store import workers as wstore
from kale.store.store import Store
from kale.tasks.base import Outcome
from kale.worker.protocol import Key

log = logging.getLogger("kale.batch")

LIVE = ("NEW", "QUEUED", "ACTIVE")
#: how long a per-task job's worker waits for its task before it gives up
ONCE_IDLE = 120.0


@dataclass
class Job:
    """One batch job as the manager sees it, mirrored in its ``batch_jobs`` row (:meth:`row`).
    Changed only under :attr:`BatchWorkers.lock`; ``state`` is NEW until Kale submitted
    it, then what PSI/J last reported."""

    id: str
    user: str
    scheduler: str
    mode: str                 # job | pilot
    pool: str
    nodes: int
    slots: int
    native_id: str | None = None
    state: str = "NEW"
    key: Key | None = None    # job mode: the attempt it is for
    cancelled: bool = False   # by Kale
    submitted_at: float = field(default_factory=time.time)
    message: str | None = None
    access: RestAccess | None = None   # the scheduler's REST endpoint (``via: rest``)

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "scheduler": self.scheduler,
                "mode": self.mode, "pool": self.pool, "native_id": self.native_id,
                "state": self.state, "nodes": self.nodes, "submitted_at": self.submitted_at,
                "info": {"key": list(self.key) if self.key else None, "slots": self.slots,
                         "cancelled": self.cancelled, "message": self.message,
                         "rest": self.access.to_json() if self.access else None}}


class BatchWorkers:
    """The manager's batch provider: a job per attempt, or pilots per executor spec, each
    running a ``kale worker`` that connects back to this manager (see the module's text).

    Promises: a job is recorded in ``batch_jobs`` before it is submitted, and every state
    PSI/J reports is saved, so a restarted manager re-attaches to what is queued or running
    and submits nothing twice; an attempt gets at most one live job of its own; the sizing
    loop keeps pilots within their spec's ``max_jobs`` and ``max_nodes``; jobs run as the
    manager's owner, so only the owner's attempts get them (another user's wait for that
    user's own workers); what a job's workers did not report when it ends gets the
    scheduler's verdict (:meth:`Broker.end_job`).

    Threads: :meth:`start` and :meth:`stop` from the manager's start and drain (a thread, off
    the server loop); the broker hooks (``_offered``, ``_withdrawn``) from engine threads;
    job updates from PSI/J's polling thread; the pilot sizing loop in its own thread
    (``kale-batch``); ``sbatch`` and the like on a pool of four ``kale-sbatch`` threads;
    :meth:`start_pilots` and :meth:`cancel_job` from API request threads. ``jobs`` and
    ``pilots`` are shared under :attr:`lock` (re-entrant), never held across a scheduler
    command."""

    def __init__(self, broker: Broker, store: Store, home: Path, url: str, token: str, *,
                 poll: float = 1.0) -> None:
        self.broker, self.store, self.home, self.url, self.token = \
            broker, store, home, url, token
        self.poll = poll
        #: the manager's account: its jobs run as this user, so only this user's tasks
        self.owner = user_name()
        self.systems: dict[str, JobSystem] = {}
        self.jobs: dict[str, Job] = {}
        self.pilots: dict[tuple[str, str], ExecutorSpec] = {}   # (user, pool) -> spec
        self.lock = threading.RLock()
        self._submitters = ThreadPoolExecutor(4, thread_name_prefix="kale-sbatch")
        self._thread: threading.Thread | None = None
        self._kick = threading.Event()
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Re-attach to the jobs an earlier manager left queued or running; hook into
        the broker; start sizing pilots."""
        for row in wstore.jobs(self.store, states=LIVE):
            info = row["info"]
            job = Job(row["id"], row["user"], row["scheduler"], row["mode"], row["pool"],
                      row["nodes"], int(info.get("slots") or 1), row["native_id"], row["state"],
                      tuple(info["key"]) if info.get("key") else None,
                      submitted_at=row["submitted_at"],
                      access=RestAccess.from_json(info["rest"]) if info.get("rest") else None)
            if job.native_id is None:  # died between recording and submitting
                job.state, job.message = "FAILED", "the manager stopped while submitting"
                self._save(job)
                continue
            self.jobs[job.id] = job
            try:
                self._system(job).attach(job.id, job.native_id)
                log.info("re-attached to %s job %s (%s)", job.scheduler, job.native_id, job.id)
            except Exception as e:
                log.warning("cannot re-attach to job %s: %s", job.native_id, e)
        self.broker.on_offer.append(self._offered)
        self.broker.on_withdraw.append(self._withdrawn)
        self._thread = threading.Thread(target=self._loop, name="kale-batch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sizing; jobs go on (a restarted manager re-attaches to them)."""
        self._stopped = True
        self._kick.set()
        self._submitters.shutdown(wait=False, cancel_futures=True)

    # -- broker hooks (engine threads) ---------------------------------------------------
    def _offered(self, p: Pending) -> None:
        assert p.pool is not None and p.placement is not None
        if p.user != self.owner:
            # Jobs this manager submits run as its owner, with the owner's worker token:
            # another user's task never runs in them. It waits for that user's own worker
            # (the run's status says so).
            return
        spec: ExecutorSpec = p.placement["spec"]
        if spec.pilot:
            with self.lock:
                self.pilots[(p.user, p.pool)] = spec
            self._kick.set()
            return
        with self.lock:
            if any(j.pool == p.pool and j.state in LIVE for j in self.jobs.values()):
                return  # re-attached after a restart: its worker will take it
        self._submitters.submit(self._submit_for_task, p)

    def _withdrawn(self, p: Pending) -> None:
        """An attempt was cancelled (or timed out in Kale): its own job goes too."""
        if p.pool is None or not p.pool.startswith("task:"):
            return
        with self.lock:
            jobs = [j for j in self.jobs.values() if j.pool == p.pool and j.state in LIVE]
            for j in jobs:
                j.cancelled = True
        for j in jobs:
            self._submitters.submit(self._system(j).cancel, j.id)

    # -- submitting ----------------------------------------------------------------------
    def _submit_for_task(self, p: Pending) -> None:
        assert p.pool is not None and p.placement is not None
        spec: ExecutorSpec = p.placement["spec"]
        res: Resources = p.placement["resources"]
        job = Job(_job_id(p.key[1]), p.user, spec.kind, "job", p.pool, res.nodes, 1,
                  key=p.key, access=spec.rest)
        argv = self._worker_argv(job, ["--once", "--idle-exit", str(ONCE_IDLE)])
        try:
            self._submit(job, JobRequest(job.id, argv, self.home, res, res.walltime,
                                         self._env()))
        except SubmitError as e:
            # The scheduler refused it: the task fails with the scheduler's message.
            refused = Outcome(ok=False, error=str(e), details={"batch_job": None})
            self.broker.end_job(job.id, lambda _p: refused, keys=(p.key,))

    def _pilot(self, user: str, pool: str, spec: ExecutorSpec) -> tuple[Job, JobRequest]:
        slots = int(spec.setting("slots") or 0)
        nodes = int(spec.setting("nodes"))
        walltime = str(spec.setting("walltime"))
        job = Job(_job_id("pilot"), user, spec.kind, "pilot", pool, nodes, _pilot_slots(spec),
                  access=spec.rest)
        extra = ["--walltime", str(walltime_seconds(walltime)),
                 "--idle-exit", str(spec.setting("idle"))]
        if slots:
            extra += ["--slots", str(slots * nodes)]
        res = Resources(nodes=nodes, queue=spec.setting("queue"),
                        account=spec.setting("account"),
                        options=list(spec.setting("options") or []))
        return job, JobRequest(job.id, self._worker_argv(job, extra), self.home, res,
                               walltime, self._env())

    def _submit_pilot(self, user: str, pool: str, spec: ExecutorSpec) -> None:
        try:
            self._submit(*self._pilot(user, pool, spec))
        except SubmitError as e:
            # Nothing can run in this pool as configured: fail what waits for it.
            log.error("pilot for %s refused: %s", pool, e)
            with self.lock:
                self.pilots.pop((user, pool), None)
            self._fail_backlog(user, pool, str(e))

    # -- by hand (the API, a dashboard) --------------------------------------------------
    def start_pilots(self, user: str, spec: ExecutorSpec, count: int) -> list[str]:
        """Submit ``count`` pilots of ``spec`` now: they take the tasks of runs whose
        executor is the same spec, and end after ``idle`` seconds without work. Raises
        :class:`SubmitError` with the scheduler's words if it refuses one."""
        from kale.manager.executor import batch_pool

        if user != self.owner:
            raise KaleError("pilots this manager submits run as its owner; start your own "
                            "workers as yourself (`kale worker --manager URL --cert FILE` "
                            "in a batch job of yours)")
        pool = batch_pool(("", "", 0), spec)
        ids = []
        for _ in range(count):
            job, req = self._pilot(user, pool, spec)
            self._submit(job, req)
            ids.append(job.id)
        return ids

    def cancel_job(self, user: str, job_id: str) -> bool:
        """Cancel one of ``user``'s batch jobs (what its workers run is handed back)."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.user != user or job.state not in LIVE:
                return False
            job.cancelled = True
        self._system(job).cancel(job.id)
        return True

    def _submit(self, job: Job, req: JobRequest) -> None:
        with self.lock:
            self.jobs[job.id] = job
        self._save(job)  # before sbatch: a restart knows it may exist
        try:
            job.native_id = self._system(job).submit(req)
        except SubmitError as e:
            with self.lock:
                job.state, job.message = "FAILED", str(e)
                self.jobs.pop(job.id, None)
            self._save(job)
            raise
        with self.lock:
            if job.state == "NEW":
                job.state = "QUEUED"
        self._save(job)
        log.info("submitted %s job %s (%s) for %s", job.scheduler, job.native_id, job.id,
                 job.pool)

    def _worker_argv(self, job: Job, extra: list[str]) -> list[str]:
        return [sys.executable, "-P", "-m", "kale.worker", "--manager", self.url,
                "--provider", job.scheduler, "--pool", job.pool, "--job", job.id,
                "--batch", *extra]

    def _env(self) -> dict[str, str]:
        """The job's environment: its token, and the manager's certificate, which the
        worker pins before it sends the token (one line: it goes into a job script)."""
        from kale.tls import CERT_ENV, cert_path, one_line

        return {"KALE_HOME": str(self.home), "KALE_WORKER_TOKEN": self.token,
                CERT_ENV: one_line(cert_path(self.home).read_text()),
                "PYTHONUNBUFFERED": "1"}

    def _system(self, job: Job) -> JobSystem:
        """The way to ``job``'s scheduler: its commands, or its REST endpoint."""
        key = system_key(job.scheduler, job.access)
        with self.lock:
            system = self.systems.get(key)
            if system is None:
                system = self.systems[key] = job_system(
                    job.scheduler, job.access, self.home / "batch" / job.scheduler,
                    self._update, poll=self.poll)
            return system

    # -- the scheduler's word (PSI/J's polling thread) -------------------------------------
    def _update(self, u: JobUpdate) -> None:
        with self.lock:
            job = self.jobs.get(u.key)
            if job is None:
                return
            job.native_id = u.native_id or job.native_id
            job.state = u.state
            if u.message:
                job.message = u.message
            if u.final:
                self.jobs.pop(job.id, None)
        self._save(job)
        if u.final:
            self._ended(job, u)
            self._kick.set()

    def _ended(self, job: Job, u: JobUpdate) -> None:
        native = f"{job.scheduler} job {job.native_id}"
        what = "pilot " if job.mode == "pilot" else ""
        log_hint = f" (job output: {self.home / 'batch' / job.scheduler / job.id}.out)"

        def outcome(p: Pending) -> Outcome | BaseException:
            if u.state == "COMPLETED":
                # The worker ended without reporting this attempt (it gave up waiting,
                # or handed it back): run it again, not counted as a retry.
                return Interrupted(f"{what}{native} ended before the task did")
            if u.state == "CANCELED":
                return Outcome(ok=False, error=f"{what}{native} was cancelled outside Kale",
                               details={"batch_job": job.native_id})
            if u.timed_out:
                if job.mode == "job":
                    return Outcome(ok=False, error=f"{native} reached its walltime",
                                   details={"timed_out": True, "batch_job": job.native_id})
                return Outcome(ok=False, error=f"pilot {native} reached its walltime before "
                               "the task ended", details={"batch_job": job.native_id})
            msg = (u.message or "").strip().splitlines()
            return Outcome(ok=False, exit_code=u.exit_code,
                           error=f"{what}{native} failed"
                                 + (f": {msg[0]}" if msg else "") + log_hint,
                           details={"batch_job": job.native_id})

        if job.cancelled and u.state == "CANCELED":
            self.broker.end_job(job.id, lambda _p: Interrupted(f"{native} was cancelled"),
                                keys=(job.key,) if job.key else ())
            return
        n = self.broker.end_job(job.id, outcome, keys=(job.key,) if job.key else ())
        if n:
            log.warning("%s%s ended (%s): %d attempt(s) affected", what, native, u.state, n)

    # -- pilots --------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopped:
            self._kick.wait(1.0)
            self._kick.clear()
            if self._stopped:
                return
            try:
                self._size_pilots()
            except Exception:
                log.exception("sizing pilots failed")

    def _size_pilots(self) -> None:
        with self.lock:
            pools = list(self.pilots.items())
        for (user, pool), spec in pools:
            backlog = len(self.broker.waiting(user, pool))
            with self.lock:
                mine = [j for j in self.jobs.values() if j.pool == pool and j.state in LIVE]
            connected = {w.job for w in self.broker.live_workers() if w.job}
            waiting = [j for j in mine if j.id not in connected]
            # Slots still to come: pilots queued, or started but not yet connected.
            coming = sum(j.slots for j in waiting)
            if not backlog:
                # Nothing left to take: pilots still in the queue are not needed (those
                # running end by themselves after `idle` seconds).
                for j in waiting:
                    if j.state == "QUEUED" and not j.cancelled:
                        j.cancelled = True
                        self._system(j).cancel(j.id)
                if not mine:
                    with self.lock:
                        self.pilots.pop((user, pool), None)
                continue
            if backlog <= coming:
                continue
            per_job = waiting[0].slots if waiting else _pilot_slots(spec)
            want = math.ceil((backlog - coming) / max(1, per_job))
            nodes = sum(j.nodes for j in mine)
            room_jobs = int(spec.setting("max_jobs")) - len(mine)
            room_nodes = (int(spec.setting("max_nodes")) - nodes) // int(spec.setting("nodes"))
            for _ in range(max(0, min(want, room_jobs, room_nodes))):
                self._submit_pilot(user, pool, spec)

    def _fail_backlog(self, user: str, pool: str, error: str) -> None:
        keys = tuple(self.broker.waiting(user, pool))
        self.broker.end_job("", lambda _p: Outcome(ok=False, error=error), keys=keys)

    # -- store ---------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        try:
            wstore.save_job(self.store, job.row())
        except Exception:
            log.exception("cannot record batch job %s", job.id)


def _job_id(what: str) -> str:
    return f"kale-{what[:40]}-{secrets.token_hex(3)}"


def _pilot_slots(spec: ExecutorSpec) -> int:
    """Tasks one pilot of ``spec`` runs at once: ``slots`` per node, else this machine's
    CPUs per node (compute nodes usually match the node the manager runs on; the worker
    reports the truth)."""
    import os

    return int(spec.setting("nodes")) * (int(spec.setting("slots") or 0) or os.cpu_count() or 1)

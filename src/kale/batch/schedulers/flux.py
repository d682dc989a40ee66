"""Flux: ``flux jobs`` for the queue, ``flux queue list`` for queues.

Both take a Python format string (``-o``) and ``-n`` (no header); fields are joined with
``|`` and the job name comes last, so a name holding ``|`` still parses. Times are epoch
seconds (``t_submit``, ``t_run``; ``0.0`` when not reached) and durations are seconds,
``0.0`` (job) or ``inf`` (queue) meaning no limit. The scheduler's estimated start and
pending reason are job annotations (``sched.t_estimate``, ``sched.reason_pending``),
empty when the scheduler sets none. ``queue``, ``duration`` and the queue ``resources.*``
fields need a recent flux-core (0.6x).
"""

from __future__ import annotations

from kale.batch.schedulers.base import (
    Partition,
    QueueJob,
    Scheduler,
    no_value,
    parse_duration,
    parse_int,
    text_or_none,
)

QUEUE_FORMAT = ("{id.f58}|{state}|{result}|{urgency}|{username}|{queue}|{nnodes}|{t_submit}|"
                "{t_run}|{duration}|{sched.t_estimate}|{sched.reason_pending}|{name}")
PARTITION_FORMAT = ("{queuem}|{enabled.ascii}|{started.ascii}|{limits.timelimit}|"
                    "{resources.all.nnodes}|{resources.free.nnodes}|"
                    "{resources.all.ncores}|{resources.free.ncores}")

_STATES = {
    "NEW": "PENDING", "DEPEND": "PENDING", "PRIORITY": "PENDING", "SCHED": "PENDING",
    "RUN": "RUNNING", "CLEANUP": "COMPLETING",
}
_RESULTS = {"COMPLETED": "COMPLETED", "FAILED": "FAILED", "CANCELED": "CANCELLED",
            "TIMEOUT": "TIMEOUT"}
_HELD_URGENCY = 0    # flux job urgency 0 holds a pending job


def _epoch(text: str) -> float | None:
    """A Flux timestamp; ``0.0`` (a state not reached yet) gives None."""
    if no_value(text):
        return None
    value = float(text)
    return value if value > 0 else None


def job_state(state: str, result: str, urgency: int | None) -> str:
    if state == "INACTIVE":
        return _RESULTS.get(result, "UNKNOWN")
    normalized = _STATES.get(state, "UNKNOWN")
    if normalized == "PENDING" and urgency == _HELD_URGENCY:
        return "HELD"
    return normalized


def parse_flux_jobs(text: str) -> list[QueueJob]:
    """Parse ``flux jobs -n -o QUEUE_FORMAT`` output."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        (jobid, state, result, urgency, user, queue, nnodes, t_submit, t_run, duration,
         t_estimate, reason, name) = line.split("|", 12)
        state, result = state.strip(), result.strip()
        limit = parse_duration(duration)
        jobs.append(QueueJob(
            id=jobid.strip(), name=name,
            state=job_state(state, result, parse_int(urgency)),
            reason=text_or_none(reason), partition=text_or_none(queue),
            nodes=parse_int(nnodes), user=text_or_none(user), submitted=_epoch(t_submit),
            start=_epoch(t_run) or _epoch(t_estimate),
            walltime=limit or None,      # 0: no limit
            native_state=f"{state}/{result}" if result else state))
    return jobs


def parse_flux_queues(text: str) -> list[Partition]:
    """Parse ``flux queue list -n -o PARTITION_FORMAT`` output. ``queuem`` marks the
    default queue with ``*``; a Flux without named queues has one anonymous queue, listed
    with the empty name and as the default."""
    out = []
    for line in text.splitlines():
        if "|" not in line:
            continue
        name, enabled, started, limit, nodes, free_nodes, cores, free_cores = line.split("|")
        name = name.strip()
        out.append(Partition(
            name=name.rstrip("*"), available=enabled.strip() == "y" and started.strip() == "y",
            default=name.endswith("*") or name == "", nodes=parse_int(nodes),
            idle_nodes=parse_int(free_nodes), cpus=parse_int(cores),
            idle_cpus=parse_int(free_cores), max_walltime=parse_duration(limit) or None))
    return out


class FluxScheduler(Scheduler):
    """Flux: ``flux jobs`` for the queue, ``flux queue list`` for queues; jobs go through
    PSI/J's ``flux`` executor."""

    name = "flux"
    psij_name = "flux"

    def queue_argv(self, user: str | None) -> list[str]:
        """``flux jobs -n -u USER|all -o FORMAT``: pending and running jobs, like squeue
        (``-a`` would add every finished job Flux remembers)."""
        return ["flux", "jobs", "-n", "-u", user or "all", "-o", QUEUE_FORMAT]

    def parse_queue(self, text: str) -> list[QueueJob]:
        return parse_flux_jobs(text)

    def partitions_argv(self) -> list[str]:
        return ["flux", "queue", "list", "-n", "-o", PARTITION_FORMAT]

    def parse_partitions(self, text: str) -> list[Partition]:
        return parse_flux_queues(text)

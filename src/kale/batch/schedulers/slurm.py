"""Slurm: ``squeue`` for the queue, ``sinfo`` for partitions.

Both use ``-h`` (no header) and an explicit ``-o`` format with ``|`` between fields: the
default output is column-aligned for people and truncates names. The job name is the
last field, so a name that itself holds ``|`` still parses. Times (``%V`` submitted,
``%S`` start or expected start) are ISO 8601 in the cluster's local time, without a zone.
"""

from __future__ import annotations

from kale.batch.schedulers.base import (
    Partition,
    QueueJob,
    Scheduler,
    local_time,
    parse_duration,
    parse_int,
    text_or_none,
)

#: job id, state, reason, partition, nodes, user, submitted, start, time limit, name
QUEUE_FORMAT = "%i|%T|%r|%P|%D|%u|%V|%S|%l|%j"
#: partition (``*`` marks the default), up/down, nodes, allocated/idle nodes,
#: allocated/idle/other/total CPUs, time limit
PARTITION_FORMAT = "%P|%a|%D|%A|%C|%l"
ISO = "%Y-%m-%dT%H:%M:%S"

_STATES = {
    "PENDING": "PENDING", "REQUEUED": "PENDING", "REQUEUE_FED": "PENDING",
    "CONFIGURING": "RUNNING", "RUNNING": "RUNNING", "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "COMPLETING": "COMPLETING", "STAGE_OUT": "COMPLETING",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED", "BOOT_FAIL": "FAILED", "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED", "SPECIAL_EXIT": "FAILED", "PREEMPTED": "FAILED",
    "CANCELLED": "CANCELLED", "REVOKED": "CANCELLED",
    "TIMEOUT": "TIMEOUT", "DEADLINE": "TIMEOUT",
    "SUSPENDED": "SUSPENDED", "STOPPED": "SUSPENDED",
    "REQUEUE_HOLD": "HELD", "RESV_DEL_HOLD": "HELD",
}
_HELD_REASONS = {"JobHeldUser", "JobHeldAdmin"}


def job_state(native: str, reason: str | None) -> str:
    """Slurm's state (and reason: a held job is PENDING with reason JobHeldUser) as one of
    the normalized states."""
    if native == "PENDING" and reason in _HELD_REASONS:
        return "HELD"
    return _STATES.get(native, "UNKNOWN")


def parse_squeue(text: str) -> list[QueueJob]:
    """Parse ``squeue -h -o QUEUE_FORMAT`` output."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        (jobid, native, reason, partition, nodes, user, submitted, start, limit,
         name) = line.split("|", 9)
        why = text_or_none(reason)
        jobs.append(QueueJob(
            id=jobid.strip(), name=name, state=job_state(native.strip(), why), reason=why,
            partition=text_or_none(partition), nodes=parse_int(nodes),
            user=text_or_none(user), submitted=local_time(submitted, ISO),
            start=local_time(start, ISO), walltime=parse_duration(limit),
            native_state=native.strip()))
    return jobs


def parse_sinfo(text: str) -> list[Partition]:
    """Parse ``sinfo -h -o PARTITION_FORMAT`` output. Should sinfo split one partition
    over several lines (nodes in different states), their counts are added up."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, avail, nodes, alloc_idle, cpus, limit = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        idle_nodes = parse_int(alloc_idle.split("/")[-1])
        cpu = [parse_int(c) for c in cpus.split("/")]   # allocated/idle/other/total
        p = Partition(name=name, available=avail.strip().lower() == "up", default=default,
                      nodes=parse_int(nodes), idle_nodes=idle_nodes,
                      cpus=cpu[3] if len(cpu) == 4 else None,
                      idle_cpus=cpu[1] if len(cpu) == 4 else None,
                      max_walltime=parse_duration(limit))
        if name in found:
            old = found[name]
            old.nodes = _add(old.nodes, p.nodes)
            old.idle_nodes = _add(old.idle_nodes, p.idle_nodes)
            old.cpus = _add(old.cpus, p.cpus)
            old.idle_cpus = _add(old.idle_cpus, p.idle_cpus)
        else:
            found[name] = p
    return list(found.values())


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


class SlurmScheduler(Scheduler):
    """Slurm: ``squeue`` for the queue, ``sinfo`` for partitions (formats in the module's
    docstring); jobs go through PSI/J's ``slurm`` executor."""

    name = "slurm"
    psij_name = "slurm"

    def queue_argv(self, user: str | None) -> list[str]:
        """``squeue -h -o FORMAT``, with ``-u USER`` for one user (not ``--me``, which
        older Slurm lacks and which cannot name another user)."""
        return ["squeue", "-h", *(["-u", user] if user else []), "-o", QUEUE_FORMAT]

    def parse_queue(self, text: str) -> list[QueueJob]:
        return parse_squeue(text)

    def partitions_argv(self) -> list[str]:
        return ["sinfo", "-h", "-o", PARTITION_FORMAT]

    def parse_partitions(self, text: str) -> list[Partition]:
        return parse_sinfo(text)

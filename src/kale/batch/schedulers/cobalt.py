"""Cobalt (ALCF): ``qstat -f -l`` for the queue, ``qstat -Q -l`` for queues.

``-l`` prints one ``Key : value`` line per field under a ``JobID: N`` (or ``Name: Q``)
line, instead of a table that truncates; ``-f`` asks for every field. Times look like
``Tue Nov 29 02:11:40 2016 +0000 (UTC)``. Cobalt's default queue is the one named
``default``.
"""

from __future__ import annotations

import re
from datetime import datetime

from kale.batch.schedulers.base import (
    Partition,
    QueueJob,
    Scheduler,
    no_value,
    parse_duration,
    parse_int,
    text_or_none,
)

_FIELD = re.compile(r"^\s*([A-Za-z_]+)\s*:\s?(.*)$")
_STATES = {
    "queued": "PENDING",
    "starting": "RUNNING", "running": "RUNNING",
    "exiting": "COMPLETING", "killing": "COMPLETING",
    "user_hold": "HELD", "admin_hold": "HELD", "dep_hold": "HELD", "maxrun_hold": "HELD",
    "dep_fail": "FAILED",
    "preempted": "SUSPENDED",
}


def blocks(text: str, head: str) -> list[dict[str, str]]:
    """Split ``-l`` output into one dict per record; a record starts at ``head: value``."""
    out: list[dict[str, str]] = []
    for line in text.splitlines():
        m = _FIELD.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        if key == head and not line[:1].isspace():
            out.append({head: value})
        elif out:
            out[-1][key] = value
    return out


def cobalt_time(text: str | None) -> float | None:
    """``Tue Nov 29 02:11:40 2016 +0000 (UTC)`` as epoch seconds."""
    if no_value(text):
        return None
    assert text is not None
    stamp = text.split("(")[0].strip()
    return datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y %z").timestamp()


def _hold_reason(job: dict[str, str], state: str) -> str | None:
    if state.endswith("_hold"):
        return state.replace("_", " ")
    return text_or_none(job.get("Dependencies")) if state == "dep_fail" else None


def parse_cobalt_jobs(text: str) -> list[QueueJob]:
    """Parse ``qstat -f -l`` output."""
    jobs = []
    for job in blocks(text, "JobID"):
        native = job.get("State", "")
        name = job.get("JobName", "")
        jobs.append(QueueJob(
            id=job["JobID"], name="" if no_value(name) else name,
            state=_STATES.get(native, "UNKNOWN"), reason=_hold_reason(job, native),
            partition=text_or_none(job.get("Queue")), nodes=parse_int(job.get("Nodes")),
            user=text_or_none(job.get("User")), submitted=cobalt_time(job.get("SubmitTime")),
            start=cobalt_time(job.get("StartTime")),
            walltime=parse_duration(job.get("WallTime")), native_state=native))
    return jobs


def parse_cobalt_queues(text: str) -> list[Partition]:
    """Parse ``qstat -Q -l`` output. Cobalt gives the queue's node total but not how many
    are idle, nor CPUs."""
    return [Partition(
        name=q["Name"], available=q.get("State") == "running", default=q["Name"] == "default",
        nodes=parse_int(q.get("TotalNodes")), idle_nodes=None, cpus=None, idle_cpus=None,
        max_walltime=parse_duration(q.get("MaxTime"))) for q in blocks(text, "Name")]


class CobaltScheduler(Scheduler):
    """Cobalt (ALCF): ``qstat -f -l`` for the queue, ``qstat -Q -l`` for queues; jobs go through
    PSI/J's ``cobalt`` executor."""

    name = "cobalt"
    psij_name = "cobalt"

    def queue_argv(self, user: str | None) -> list[str]:
        return ["qstat", "-f", "-l", *(["-u", user] if user else [])]

    def parse_queue(self, text: str) -> list[QueueJob]:
        return parse_cobalt_jobs(text)

    def partitions_argv(self) -> list[str]:
        return ["qstat", "-Q", "-l"]

    def parse_partitions(self, text: str) -> list[Partition]:
        return parse_cobalt_queues(text)

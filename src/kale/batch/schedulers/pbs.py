"""PBS Professional / OpenPBS: ``qstat -f -F json`` for the queue, ``qstat -Q -f -F json``
for queues.

The JSON output (PBS Pro 19+) carries every attribute under its own name, with full job
ids, where the default table truncates them. It cannot be combined with ``-u``, so the
queue command lists every job and :func:`parse_qstat_jobs` keeps the user's (by
``Job_Owner``, which is ``user@submithost``). Times are ``ctime``-style local times
(``Wed Apr 14 23:34:17 2021``). Which queue is the default is a server attribute, read
from ``qstat -B -f -F json``.
"""

from __future__ import annotations

import json
from typing import Any

from kale.batch.schedulers.base import (
    Partition,
    QueueJob,
    Scheduler,
    local_time,
    parse_duration,
    parse_int,
    text_or_none,
)
from kale.errors import SchedulerError

CTIME = "%a %b %d %H:%M:%S %Y"

_STATES = {
    "Q": "PENDING", "T": "PENDING", "W": "PENDING",   # queued, in transit, waiting for -a time
    "R": "RUNNING", "B": "RUNNING",                   # running; array with subjobs begun
    "E": "COMPLETING",                                # exiting
    "F": "COMPLETED", "X": "COMPLETED",               # finished (qstat -x); subjob finished
    "H": "HELD",
    "S": "SUSPENDED", "U": "SUSPENDED",               # suspended; cycle-harvesting user busy
}
_EXIT_CANCELLED = 265    # 256 + SIGKILL: what qdel leaves (PSI/J reads it the same way)


def _load(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    # strict=False: some PBS versions put raw control characters in Variable_List.
    data = json.loads(text, strict=False)
    return data if isinstance(data, dict) else {}


def job_state(native: str, info: dict[str, Any]) -> str:
    state = _STATES.get(native, "UNKNOWN")
    if native == "F":
        status = info.get("Exit_status")
        comment = str(info.get("comment", "")).lower()
        if status == _EXIT_CANCELLED:
            return "CANCELLED"
        if "walltime" in comment and "exceeded" in comment:
            return "TIMEOUT"
        if status not in (None, 0):
            return "FAILED"
    return state


def owner(info: dict[str, Any]) -> str | None:
    """The job's user: ``Job_Owner`` without its ``@host``."""
    text = text_or_none(info.get("Job_Owner"))
    return text.split("@", 1)[0] if text else None


def parse_qstat_jobs(text: str, user: str | None = None) -> list[QueueJob]:
    """Parse ``qstat -f -F json``; only ``user``'s jobs when one is given."""
    jobs = []
    for jobid, info in _load(text).get("Jobs", {}).items():
        who = owner(info)
        if user is not None and who != user:
            continue
        native = str(info.get("job_state", ""))
        state = job_state(native, info)
        resources = info.get("Resource_List", {})
        estimated = info.get("estimated", {})
        running = state in ("RUNNING", "COMPLETING", "COMPLETED")
        start = info.get("stime") if running else estimated.get("start_time")
        jobs.append(QueueJob(
            id=jobid, name=str(info.get("Job_Name", "")), state=state,
            # a running job's comment is only "Job run at ... on (...)"
            reason=None if running else text_or_none(info.get("comment")),
            partition=text_or_none(info.get("queue")),
            nodes=parse_int(resources.get("nodect")), user=who,
            submitted=local_time(info.get("qtime") or info.get("ctime"), CTIME),
            start=local_time(start, CTIME),
            walltime=parse_duration(resources.get("walltime")), native_state=native))
    return jobs


def parse_default_queue(text: str) -> str | None:
    """The server's ``default_queue`` from ``qstat -B -f -F json``."""
    for info in _load(text).get("Server", {}).values():
        return text_or_none(info.get("default_queue"))
    return None


def parse_qstat_queues(text: str, default_queue: str | None = None) -> list[Partition]:
    """Parse ``qstat -Q -f -F json``. Nodes and CPUs come from the queue's
    ``resources_available`` (less ``resources_assigned`` for the idle ones), which only
    queues tied to vnodes have."""
    out = []
    for name, info in _load(text).get("Queue", {}).items():
        available = info.get("resources_available", {})
        assigned = info.get("resources_assigned", {})
        nodes, cpus = parse_int(available.get("nodect")), parse_int(available.get("ncpus"))
        used_nodes, used_cpus = (parse_int(assigned.get("nodect")),
                                 parse_int(assigned.get("ncpus")))
        out.append(Partition(
            name=name,
            available=info.get("enabled") == "True" and info.get("started") == "True",
            default=name == default_queue, nodes=nodes,
            idle_nodes=None if nodes is None else nodes - (used_nodes or 0),
            cpus=cpus, idle_cpus=None if cpus is None else cpus - (used_cpus or 0),
            max_walltime=parse_duration(info.get("resources_max", {}).get("walltime"))))
    return out


class PbsScheduler(Scheduler):
    """PBS Pro and OpenPBS: ``qstat -F json`` for the queue and queues; jobs go through PSI/J's
    ``pbs`` executor."""

    name = "pbs"
    psij_name = "pbs"

    def queue_argv(self, user: str | None) -> list[str]:
        """``qstat -f -F json``: every user's jobs (``-u`` does not combine with ``-f``);
        :meth:`queue` filters by owner."""
        return ["qstat", "-f", "-F", "json"]

    def parse_queue(self, text: str) -> list[QueueJob]:
        return parse_qstat_jobs(text)

    def queue(self, user: str | None = None) -> list[QueueJob]:
        return parse_qstat_jobs(self.run(self.queue_argv(user)), user)

    def partitions_argv(self) -> list[str]:
        return ["qstat", "-Q", "-f", "-F", "json"]

    def server_argv(self) -> list[str]:
        return ["qstat", "-B", "-f", "-F", "json"]

    def parse_partitions(self, text: str) -> list[Partition]:
        return parse_qstat_queues(text)

    def partitions(self) -> list[Partition]:
        queues = self.run(self.partitions_argv())
        try:
            default = parse_default_queue(self.run(self.server_argv()))
        except SchedulerError:   # some sites hide server attributes: no default then
            default = None
        return parse_qstat_queues(queues, default)

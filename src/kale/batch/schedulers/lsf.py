"""IBM Spectrum LSF: ``bjobs -o ... -json`` for the queue, ``bqueues -o ... -json`` for
queues.

``-o`` picks the fields and ``-json`` (LSF 10.1) prints them as ``{"RECORDS": [...]}``
with each field under its upper-case name, so nothing is column-aligned or truncated.
LSF prints time stamps without a year (``Dec 28 19:56``, with ``L``/``E``/``X`` after
finish or estimated times; ``LSB_DISPLAY_YEAR=y`` adds the year): the year is the one
that puts the time closest to now. Run limits are minutes (``1440.0``, or
``1440.0/host`` with ``ABS_RUNLIMIT``) unless the site sets ``LSB_HMS_TIME_FORMAT``,
which gives ``24:00:00``; both parse.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

from kale.batch.schedulers.base import (
    Partition,
    QueueJob,
    Scheduler,
    no_value,
    parse_duration,
    parse_int,
    text_or_none,
)

JOB_FIELDS = ("jobid job_name stat user queue submit_time start_time estimated_start_time "
              "runtimelimit nexec_host pend_reason")
QUEUE_FIELDS = "queue_name status runlimit"

_STATES = {
    "PEND": "PENDING", "WAIT": "PENDING", "PROV": "PENDING",
    "RUN": "RUNNING",
    "DONE": "COMPLETED", "EXIT": "FAILED",
    "PSUSP": "HELD",                        # suspended while pending: bstop / bsub -H
    "USUSP": "SUSPENDED", "SSUSP": "SUSPENDED",
    "UNKWN": "UNKNOWN", "ZOMBI": "UNKNOWN",
}
_STAMP = re.compile(r"([A-Z][a-z]{2})\s+(\d{1,2})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s+(\d{4}))?")


def _records(text: str) -> list[dict[str, Any]]:
    if not text.strip():
        return []
    data = json.loads(text)
    records = data.get("RECORDS", []) if isinstance(data, dict) else []
    return [r for r in records if isinstance(r, dict) and "ERROR" not in r]


def lsf_time(text: str | None, now: float | None = None) -> float | None:
    """An LSF time stamp (``Dec 28 19:56``, ``Dec 28 19:56 L``, ``Dec 28 19:56:07 2024``)
    as epoch seconds, local time. Without a year, the year that puts it closest to ``now``
    (default: the current time)."""
    if no_value(text):
        return None
    assert text is not None
    m = _STAMP.search(text)
    if not m:
        raise ValueError(f"LSF time {text!r} is not like 'Dec 28 19:56'")
    mon, day, hour, minute, sec, year = m.groups()
    stamp = f"{mon} {day} {hour}:{minute}:{sec or '00'}"
    if year:
        return datetime.strptime(f"{stamp} {year}", "%b %d %H:%M:%S %Y").timestamp()
    ref = time.time() if now is None else now
    this_year = datetime.fromtimestamp(ref).year
    best: float | None = None
    for y in (this_year - 1, this_year, this_year + 1):
        try:   # Feb 29 exists only in some years
            t = datetime.strptime(f"{stamp} {y}", "%b %d %H:%M:%S %Y").timestamp()
        except ValueError:
            continue
        if best is None or abs(t - ref) < abs(best - ref):
            best = t
    return best


def run_limit(text: str | None) -> int | None:
    """``runtimelimit``/``runlimit``: minutes (``"1440.0"``, ``"1440.0/hostA"``) or,
    under ``LSB_HMS_TIME_FORMAT``, ``"24:00:00"``."""
    if no_value(text):
        return None
    assert text is not None
    value = text.split("/", 1)[0].strip()
    if ":" in value:
        return parse_duration(value)
    return round(float(value) * 60)


def parse_bjobs(text: str, now: float | None = None) -> list[QueueJob]:
    """Parse ``bjobs -o JOB_FIELDS -json``; ``now`` dates the year-less time stamps."""
    jobs = []
    for r in _records(text):
        native = str(r.get("STAT", ""))
        state = _STATES.get(native, "UNKNOWN")
        started = lsf_time(r.get("START_TIME"), now)
        reason = text_or_none(r.get("PEND_REASON"))
        jobs.append(QueueJob(
            id=str(r.get("JOBID", "")), name=str(r.get("JOB_NAME", "")), state=state,
            reason=reason.rstrip(";").strip() if reason else None,
            partition=text_or_none(r.get("QUEUE")), nodes=parse_int(r.get("NEXEC_HOST")),
            user=text_or_none(r.get("USER")), submitted=lsf_time(r.get("SUBMIT_TIME"), now),
            start=started if started is not None
            else lsf_time(r.get("ESTIMATED_START_TIME"), now),
            walltime=run_limit(r.get("RUNTIMELIMIT")), native_state=native))
    return jobs


def parse_bqueues(text: str) -> list[Partition]:
    """Parse ``bqueues -o QUEUE_FIELDS -json``. LSF says nothing here about hosts, CPUs or
    which queue is the default (that is ``DEFAULT_QUEUE`` in ``lsb.params``)."""
    out = []
    for r in _records(text):
        status = str(r.get("STATUS", ""))
        limit = r.get("RUNLIMIT", r.get("MAX_RUNLIMIT"))
        out.append(Partition(
            name=str(r.get("QUEUE_NAME", "")),
            available=status.startswith("Open") and ":Active" in status, default=False,
            nodes=None, idle_nodes=None, cpus=None, idle_cpus=None,
            max_walltime=run_limit(limit)))
    return out


class LsfScheduler(Scheduler):
    """LSF: ``bjobs`` and ``bqueues`` (``-json``) for the queue and queues; jobs go
    through PSI/J's ``lsf`` executor."""

    name = "lsf"
    psij_name = "lsf"
    # bjobs exits non-zero when it has nothing to show
    empty_markers = ("No unfinished job found", "No job found")

    def queue_argv(self, user: str | None) -> list[str]:
        """``bjobs -u USER|all -o FIELDS -json``: without ``-u`` bjobs shows only the
        caller's jobs."""
        return ["bjobs", "-u", user or "all", "-o", JOB_FIELDS, "-json"]

    def parse_queue(self, text: str) -> list[QueueJob]:
        return parse_bjobs(text)

    def partitions_argv(self) -> list[str]:
        return ["bqueues", "-o", QUEUE_FIELDS, "-json"]

    def parse_partitions(self, text: str) -> list[Partition]:
        return parse_bqueues(text)

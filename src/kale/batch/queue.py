"""The queue status a user sees (``kale queue``, ``GET /api/queue``): their batch jobs with
state, reason, time queued and expected start, the scheduler's partitions, and for each
job Kale submitted, what it is for (a task of a run, or a pilot)."""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kale.batch.schedulers import names as scheduler_names
from kale.batch.schedulers import scheduler as get_scheduler
from kale.errors import KaleError, SchedulerError, UsageError

log = logging.getLogger("kale.batch")


def probes() -> list[tuple[str, str]]:
    """``(scheduler, command)`` for every registered scheduler, in the registry's order:
    the command that lists its queue, whose presence on PATH says this machine has it.
    (Schedulers that share a command, PBS's and Cobalt's ``qstat``, are told apart only by
    name: the first one registered is the one detected.)"""
    out: list[tuple[str, str]] = []
    for name in scheduler_names():
        try:
            argv = get_scheduler(name).queue_argv(None)
        except KaleError as e:  # a broken plug-in must not hide the others
            log.warning("scheduler %s left out of detection: %s", name, e)
            continue
        if argv:
            out.append((name, argv[0]))
    return out


def detected() -> str | None:
    """The scheduler whose commands are on PATH, if any (cheap: nothing is run)."""
    for name, command in probes():
        if shutil.which(command):
            return name
    return None


def detect() -> str:
    """The scheduler whose commands are on PATH."""
    name = detected()
    if name is not None:
        return name
    looked = ", ".join(dict.fromkeys(command for _, command in probes()))
    raise UsageError(f"no batch scheduler found on PATH (looked for {looked}); name one "
                     "with --scheduler")


def queue_status(name: str | None = None, user: str | None = None,
                 kale_jobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"scheduler", "jobs": [...], "partitions": [...], "errors": [...]}``; each job
    is the scheduler's view plus ``kale`` (what Kale submitted it for) when Kale did."""
    name = name or detect()
    sched = get_scheduler(name)
    by_native = {j["native_id"]: j for j in kale_jobs or [] if j.get("native_id")}
    # Both listings at once: a scheduler that does not answer costs one timeout, not two.
    with ThreadPoolExecutor(1, thread_name_prefix="kale-partitions") as pool:
        listed = pool.submit(sched.partitions)
        errors: list[str] = []
        jobs: list[dict[str, Any]] = []
        try:
            queued = sched.queue(user)
        except SchedulerError as e:
            queued = []
            errors.append(str(e))
        now = time.time()
        for j in queued:
            doc = j.to_json()
            doc["queued_for"] = round(now - j.submitted, 1) if j.submitted else None
            k = by_native.get(j.id)
            if k is not None:
                doc["kale"] = {"id": k["id"], "mode": k["mode"], "pool": k["pool"],
                               "task": (k.get("info") or {}).get("key")}
            jobs.append(doc)
        partitions: list[dict[str, Any]] = []
        try:
            partitions = [p.to_json() for p in listed.result()]
        except SchedulerError as e:
            errors.append(str(e))
    return {"scheduler": name, "jobs": jobs, "partitions": partitions, "errors": errors}

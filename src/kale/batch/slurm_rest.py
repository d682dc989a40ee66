"""Slurm's REST API (slurmrestd, API v0.0.38 of Slurm 22.05) as pure functions: the body
of a job submission, and what slurmrestd's answers mean. No I/O here: the tests feed these
functions answers captured from a real slurmrestd (``tests/data/slurmrestd/``);
:mod:`kale.batch.rest_client` sends and receives, :mod:`kale.batch.rest_jobs` watches jobs.

What slurmrestd 22.05 does that shapes this module:

- ``#SBATCH`` lines in the script are *ignored*: everything the sbatch path says in
  directives goes into the submission's ``job`` properties here (:func:`job_properties`);
  ``environment`` must be a mapping, and there is no ``--export=ALL``: the submitting
  process's environment is sent, as sbatch would export it.
- ``exit_code`` in ``/job/ID`` is the raw wait status (768 is exit code 3, 9 is SIGKILL).
- Errors come as ``{"errors": [{"error_number" or "error_code", "error", "description"}]}``
  with HTTP 500 for nearly everything. A rejected token (bad or expired) is *not* a 401 when
  slurmrestd runs with ``SLURM_JWT=daemon``: slurmctld refuses the forwarded token and the
  answer reads like another failure ("Unable to find JobId=N" with error number -1, "Zero
  Bytes were transmitted or received"). Only a missing token is a 401. So "the job is gone"
  is error number 2017 (:data:`INVALID_JOB_ID`) and nothing else, and the client checks the
  token itself when an answer is an unexplained failure.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the REST API version of Slurm 22.05
API_VERSION = "v0.0.38"
#: Slurm's ESLURM_INVALID_JOB_ID: the job is not (or no longer) known to slurmctld
INVALID_JOB_ID = 2017
#: environment variables never sent into a job (the token that submitted it)
SECRET_ENV = frozenset({"SLURM_JWT"})

#: slurmrestd's job states -> the states PSI/J reports (what the manager reads)
_PSIJ_STATES = {
    "PENDING": "QUEUED", "REQUEUED": "QUEUED", "REQUEUE_FED": "QUEUED",
    "REQUEUE_HOLD": "QUEUED", "RESV_DEL_HOLD": "QUEUED", "CONFIGURING": "QUEUED",
    "RUNNING": "ACTIVE", "COMPLETING": "ACTIVE", "SUSPENDED": "ACTIVE", "STOPPED": "ACTIVE",
    "RESIZING": "ACTIVE", "SIGNALING": "ACTIVE", "STAGE_OUT": "ACTIVE",
    "COMPLETED": "COMPLETED",
    "CANCELLED": "CANCELED", "REVOKED": "CANCELED",
    "FAILED": "FAILED", "BOOT_FAIL": "FAILED", "NODE_FAIL": "FAILED", "DEADLINE": "FAILED",
    "OUT_OF_MEMORY": "FAILED", "PREEMPTED": "FAILED", "SPECIAL_EXIT": "FAILED",
    "TIMEOUT": "FAILED",
}
#: why a job failed, in the words PSI/J uses for the same states (the manager reads "time
#: limit" in a message as a walltime reached)
_MESSAGES = {
    "TIMEOUT": "The job exhausted its time limit.",
    "DEADLINE": "The job reached its deadline.",
    "NODE_FAIL": "A node of the job failed.",
    "BOOT_FAIL": "A node of the job failed to boot.",
    "OUT_OF_MEMORY": "The job ran out of memory.",
    "PREEMPTED": "The job was preempted.",
}
#: sbatch options (``resources.options``) whose job property is not the option's name
_OPTION_PROPERTIES = {"constraint": "constraints", "job-name": "name", "chdir":
                      "current_working_directory", "mem": "memory_per_node",
                      "mem-per-cpu": "memory_per_cpu", "ntasks": "tasks",
                      "time": "time_limit", "output": "standard_output",
                      "error": "standard_error", "export": None}


@dataclass(frozen=True, slots=True)
class RestFailure:
    """One entry of slurmrestd's ``errors``: Slurm's error number and its text."""

    number: int | None
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A job as ``GET /job/ID`` shows it. ``state`` is one of PSI/J's (QUEUED, ACTIVE,
    COMPLETED, FAILED, CANCELED); ``exit_code`` is the job script's exit code (or 128 + the
    signal that ended it), decoded from Slurm's raw wait status."""

    native_id: str
    native_state: str
    state: str
    reason: str | None
    exit_code: int | None
    message: str | None

    @property
    def final(self) -> bool:
        return self.state in ("COMPLETED", "FAILED", "CANCELED")


# -- requests ----------------------------------------------------------------------------

def api_path(what: str) -> str:
    """``/slurm/v0.0.38/<what>``."""
    return f"/slurm/{API_VERSION}/{what.lstrip('/')}"


def submit_body(script: str, properties: Mapping[str, Any]) -> dict[str, Any]:
    """The body of ``POST /job/submit``."""
    return {"script": script, "job": dict(properties)}


def job_environment(environ: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """What a job's environment starts from: the submitting process's own (sbatch's
    ``--export=ALL``, which the sbatch path uses), then ``extra``; never :data:`SECRET_ENV`
    (slurmrestd refuses an empty mapping, so PATH is always there)."""
    env = {k: v for k, v in environ.items() if k not in SECRET_ENV}
    env.update(extra)
    env.setdefault("PATH", os.defpath)
    return env


def job_properties(*, name: str, directory: str, environment: Mapping[str, str],
                   walltime_seconds: int, nodes: int = 1, ranks: int | None = None,
                   ranks_per_node: int | None = None, cpus_per_rank: int | None = None,
                   gpus_per_rank: int | None = None, memory_bytes: int | None = None,
                   partition: str | None = None, account: str | None = None,
                   options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``job`` of a submission: what the sbatch template's directives say, as job
    properties (slurmrestd ignores the directives). The script writes its own output (as
    with sbatch), so Slurm's goes to /dev/null. ``options``: extra sbatch options by
    name (``qos``, ``constraint``...), see :func:`option_properties`."""
    props: dict[str, Any] = {
        "name": name, "current_working_directory": directory,
        "environment": dict(environment), "standard_output": "/dev/null",
        "standard_error": "/dev/null", "nodes": [nodes, nodes],
        "time_limit": max(1, math.ceil(walltime_seconds / 60)),
    }
    if ranks is not None:
        props["tasks"] = ranks
    if ranks_per_node is not None:
        props["tasks_per_node"] = ranks_per_node
    if cpus_per_rank is not None:
        props["cpus_per_task"] = cpus_per_rank
    if gpus_per_rank:
        props["gpus_per_task"] = str(gpus_per_rank)
    if memory_bytes is not None:
        props["memory_per_node"] = max(1, math.ceil(memory_bytes / (1 << 20)))
    if partition:
        props["partition"] = partition
    if account:
        props["account"] = account
    props.update(option_properties(options or {}))
    return props


def option_properties(options: Mapping[str, str]) -> dict[str, Any]:
    """sbatch long options (``{"qos": "debug", "constraint": "knl"}``) as job properties:
    the option's name with ``_`` for ``-``, or its property where the name differs
    (``constraint`` -> ``constraints``). ``export`` is left out (the environment is always
    sent). slurmrestd refuses properties it does not know, naming them."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        prop = _OPTION_PROPERTIES.get(key, key.replace("-", "_"))
        if prop is not None:
            out[prop] = value
    return out


# -- answers -----------------------------------------------------------------------------

def failures(doc: Any) -> list[RestFailure]:
    """slurmrestd's ``errors`` (empty when it reports none)."""
    if not isinstance(doc, dict):
        return []
    out = []
    for e in doc.get("errors") or []:
        if not isinstance(e, dict):
            continue
        number = e.get("error_number", e.get("error_code"))
        error, description = str(e.get("error") or ""), str(e.get("description") or "")
        if description and error and error != "Unspecified error" \
                and error not in description:
            text = f"{description} ({error})"
        else:
            text = description or error or "unknown error"
        out.append(RestFailure(number if isinstance(number, int) else None, text))
    return out


def failure_text(doc: Any, fallback: str = "") -> str:
    """The errors of an answer as one line (the most specific first), or ``fallback``."""
    found = failures(doc)
    # "Failure during parsing" and the like summarize the entries before them: last.
    found.sort(key=lambda f: f.number == 9001)
    return "; ".join(dict.fromkeys(str(f) for f in found)) or fallback


def submitted_id(doc: Any) -> str | None:
    """The job id in a ``POST /job/submit`` answer, if it has one."""
    if isinstance(doc, dict) and isinstance(doc.get("job_id"), int) and not failures(doc):
        return str(doc["job_id"])
    return None


def job_gone(doc: Any) -> bool:
    """True if the answer says slurmctld does not know the job (any more): error number
    :data:`INVALID_JOB_ID`. (A rejected token gives "Unable to find JobId" too, but with
    number -1: that is not a job gone.)"""
    return any(f.number == INVALID_JOB_ID for f in failures(doc))


def exit_status(raw: int | None) -> int | None:
    """A raw wait status as an exit code: ``768`` -> 3; a signal ``n`` -> ``128 + n``."""
    if raw is None:
        return None
    if raw & 0x7F:
        return 128 + (raw & 0x7F)
    return (raw >> 8) & 0xFF


def parse_job(doc: Any, native_id: str) -> JobInfo | None:
    """Job ``native_id`` in a ``GET /job/ID`` (or ``/jobs``) answer; None if it is not
    there."""
    if not isinstance(doc, dict):
        return None
    for job in doc.get("jobs") or []:
        if isinstance(job, dict) and str(job.get("job_id")) == native_id:
            native = str(job.get("job_state") or "UNKNOWN")
            reason = job.get("state_reason")
            reason = None if reason in (None, "", "None") else str(reason)
            raw = job.get("exit_code")
            state = _PSIJ_STATES.get(native, "ACTIVE")
            message = _MESSAGES.get(native)
            if message is None and state == "FAILED":
                message = f"Slurm ended the job: {native}" + (f" ({reason})" if reason else "")
            return JobInfo(native_id, native, state, reason,
                           exit_status(raw) if isinstance(raw, int) else None, message)
    return None


# -- tokens ------------------------------------------------------------------------------

def token_from_text(text: str) -> str:
    """The token in what ``scontrol token`` prints (``SLURM_JWT=...``) or a token file holds
    (the bare token, or that same line); empty if there is none."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):].strip()
        if line.startswith("SLURM_JWT="):
            line = line[len("SLURM_JWT="):]
        line = line.strip().strip("'\"")
        if line:
            return line
    return ""


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (its payload), read without checking its signature (slurmctld
    does that): ``exp`` (expiry, epoch seconds) and ``sun`` (the Slurm user name) are what
    Kale uses. Empty when ``token`` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return {}
    return claims if isinstance(claims, dict) else {}

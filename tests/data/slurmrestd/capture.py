"""Capture slurmrestd's answers for the parser tests (tests/test_slurm_rest.py).

Run as root against the project's local Slurm with slurmrestd (``bash
scripts/services/slurm.sh``, then ``python3 tests/data/slurmrestd/capture.py [timeout]``):
each answer is written here as ``NAME.json``, with the HTTP status as ``_status`` (and a
body that is not JSON as ``_text``). ``timeout`` also captures a job killed at its time
limit (a minute's wait). Slurm 22.05.8, API v0.0.38.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

OUT = Path(__file__).resolve().parent
URL = "http://127.0.0.1:6820/slurm/v0.0.38"


def token(lifespan: int = 600) -> str:
    out = subprocess.run(["scontrol", "token", f"lifespan={lifespan}"], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip().split("=", 1)[1]


HEADERS = {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": token()}
BAD = {"X-SLURM-USER-NAME": "root", "X-SLURM-USER-TOKEN": "not-a-jwt"}
http = httpx.Client(timeout=30)


def save(name: str, r: httpx.Response) -> Any:
    try:
        doc = r.json()
    except ValueError:
        doc = {"_text": r.text}
    doc = {"_status": r.status_code, **doc}
    (OUT / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(name, r.status_code)
    return doc


def job(script: str, **props: Any) -> dict[str, Any]:
    base = {"name": "capture", "current_working_directory": "/tmp",
            "environment": {"PATH": "/usr/bin:/bin"}, "standard_output": "/dev/null",
            "standard_error": "/dev/null"}
    return {"script": f"#!/bin/bash\n{script}\n", "job": {**base, **props}}


def submit(name: str, body: dict[str, Any]) -> Any:
    return save(name, http.post(f"{URL}/job/submit", json=body, headers=HEADERS))


def get(name: str, job_id: int, headers: dict[str, str] = HEADERS) -> Any:
    return save(name, http.get(f"{URL}/job/{job_id}", headers=headers))


def wait(job_id: int, states: set[str]) -> None:
    for _ in range(2000):
        doc = http.get(f"{URL}/job/{job_id}", headers=HEADERS).json()
        if doc["jobs"][0]["job_state"] in states:
            return
        time.sleep(0.1)
    raise SystemExit(f"job {job_id} never reached {states}")


def main() -> None:
    save("ping", http.get(f"{URL}/ping", headers=HEADERS))
    jid = submit("submit-ok", job("sleep 1; exit 3", nodes=[1, 1], time_limit=5))["job_id"]
    wait(jid, {"RUNNING"})
    get("job-running", jid)
    wait(jid, {"FAILED", "COMPLETED"})
    get("job-failed", jid)
    held = submit("submit-held", job("true", hold=True, time_limit=5))["job_id"]
    get("job-pending-held", held)
    http.delete(f"{URL}/job/{held}", headers=HEADERS)
    done = submit("submit-done", job("true", time_limit=5))["job_id"]
    wait(done, {"COMPLETED"})
    get("job-completed", done)
    doomed = submit("submit-cancel", job("sleep 100", time_limit=5))["job_id"]
    wait(doomed, {"RUNNING"})
    save("cancel-ok", http.delete(f"{URL}/job/{doomed}", headers=HEADERS))
    wait(doomed, {"CANCELLED"})
    get("job-cancelled", doomed)
    submit("submit-refused-partition", job("true", partition="nosuch", time_limit=5))
    submit("submit-refused-walltime", job("true", partition="short", time_limit=50))
    submit("submit-bad-environment", {"script": "#!/bin/bash\ntrue\n",
                                      "job": {"environment": ["A=1"]}})
    get("job-unknown", 999999)
    save("cancel-unknown", http.delete(f"{URL}/job/999999", headers=HEADERS))
    save("ping-bad-token", http.get(f"{URL}/ping", headers=BAD))
    get("job-bad-token", jid, BAD)
    save("submit-bad-token", http.post(f"{URL}/job/submit", json=job("true"), headers=BAD))
    save("no-token-401", http.get(f"{URL}/ping"))
    short = token(1)
    time.sleep(2.1)  # until the one-second token has expired
    get("job-expired-token", jid, {**HEADERS, "X-SLURM-USER-TOKEN": short})
    if "timeout" in sys.argv[1:]:
        slow = submit("submit-timeout", job("sleep 300", time_limit=1))["job_id"]
        wait(slow, {"TIMEOUT"})
        get("job-timeout", slow)


if __name__ == "__main__":
    main()

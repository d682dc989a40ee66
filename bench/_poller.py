"""One status poller in a process of its own (``_manager.ProcPollers``): as a progress bar,
a dashboard or ``kale status`` in its own process polls a run. Says ``ready``, reads the
run's id from standard input, then times ``GET /api/runs/{id}?tasks=false`` on the Unix
socket ``argv[1]`` every ``argv[2]`` seconds (the first after ``argv[4]`` seconds) until
the run ends or ``argv[3]`` (a ``time.monotonic``) passes; prints ``{"latencies": [...],
"ended_at": perf_counter or null, "errors": [...]}``. The token is in ``$KALE_TOKEN``."""

from __future__ import annotations

import json
import os
import sys
import time

import httpx

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def main() -> None:
    sock, every, deadline = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    print("ready", flush=True)
    run_id = sys.stdin.readline().strip()
    time.sleep(float(sys.argv[4]))  # the pollers spread over the interval
    latencies: list[float] = []
    errors: list[str] = []
    ended_at = None
    with httpx.Client(base_url="http://kale", timeout=10,
                      transport=httpx.HTTPTransport(uds=sock),
                      headers={"Authorization": f"Bearer {os.environ['KALE_TOKEN']}"}) as http:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                state = http.get(f"/api/runs/{run_id}", params={"tasks": "false"}
                                 ).json()["run"]["state"]
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
                time.sleep(every)
                continue
            t1 = time.perf_counter()
            latencies.append(t1 - t0)
            if state in TERMINAL:
                ended_at = t1
                break
            time.sleep(every)
    json.dump({"latencies": latencies, "ended_at": ended_at, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()

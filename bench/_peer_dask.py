"""Dask distributed: ``python bench/_peer_dask.py SCENARIO --n N``.

A LocalCluster of 2 worker processes with one thread each. Start-up (cluster and client)
and the first task are measured but not part of the timed runs. Every submission is
``pure=False`` so nothing is deduplicated.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from distributed import Client, LocalCluster, wait

from _common import CpuMeter, main, parse_args, result, timed
from noops import noop


def run() -> dict[str, Any]:
    args = parse_args(["python", "chain"])
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    startup = time.perf_counter() - t0
    try:
        first = timed(lambda: client.submit(noop, pure=False).result())

        def fan_out() -> None:
            futures = client.map(noop, range(args.n), pure=False)
            wait(futures)
            bad = [f for f in futures if f.status != "finished"]
            if bad:
                raise RuntimeError(f"{len(bad)} tasks ended {bad[0].status}")

        def chain() -> None:
            f = client.submit(noop, pure=False)
            for _ in range(args.n - 1):
                f = client.submit(noop, f, pure=False)
            f.result()

        body = chain if args.scenario == "chain" else fan_out
        with CpuMeter() as cpu:
            times = [timed(body) for _ in range(args.repeat)]
    finally:
        client.close()
        cluster.close()
    return result(times, startup=startup, first_task=first, **cpu.report(args.repeat, args.n))


if __name__ == "__main__":
    main(run)

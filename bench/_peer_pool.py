"""The machine's limit for scenarios 1 and 3: ``python bench/_peer_pool.py SCENARIO --n N``.

A ``concurrent.futures.ProcessPoolExecutor`` of 2 processes runs the same no-op tasks
(one ``submit`` and ``result`` per task; a chain waits for each result before it submits
the next), recording nothing, capturing no output, isolating nothing: what 2 worker
processes cost on this machine with no workflow system at all. Its processes are started
once (not timed), as Parsl's and Dask's workers are.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from _common import CpuMeter, main, parse_args, result, timed
from noops import noop


def run() -> dict[str, Any]:
    args = parse_args(["python", "chain"])
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        for f in [pool.submit(noop) for _ in range(2)]:  # both processes started
            f.result()
        startup = time.perf_counter() - t0
        first = timed(lambda: pool.submit(noop).result())

        def fan_out() -> None:
            for f in [pool.submit(noop) for _ in range(args.n)]:
                f.result()

        def chain() -> None:
            value = None
            for _ in range(args.n):
                value = pool.submit(noop, value).result()

        body = chain if args.scenario == "chain" else fan_out
        with CpuMeter() as cpu:
            times = [timed(body) for _ in range(args.repeat)]
    return result(times, startup=startup, first_task=first, **cpu.report(args.repeat, args.n))


if __name__ == "__main__":
    main(run)

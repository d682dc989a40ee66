"""Parsl: ``python bench/_peer_parsl.py SCENARIO --n N --executor htex|threads``.

HighThroughputExecutor with a LocalProvider (one block, 2 workers, loopback address), or
ThreadPoolExecutor (2 threads). The one-time start-up (``parsl.load`` and the wait for the
first task, which covers the worker pool connecting) is measured but not part of the timed
runs.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import parsl
from parsl.config import Config
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor
from parsl.providers import LocalProvider

from _common import CpuMeter, main, parse_args, result, timed
from noops import noop, true_cmd

WORKERS = 2


def config(kind: str) -> Config:
    if kind == "htex":
        executor: Any = HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node=WORKERS, cores_per_worker=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))
    else:
        executor = ThreadPoolExecutor(label="threads", max_threads=WORKERS)
    # strategy "none": no scaling while timing. A short strategy_period only makes the
    # job-status poller launch the initial block at once instead of after 5 s.
    return Config(executors=[executor], run_dir=tempfile.mkdtemp(prefix="parsl-bench-"),
                  strategy="none", strategy_period=0.5)


def run() -> dict[str, Any]:
    args = parse_args(["python", "shell", "chain"],
                      ("--executor", {"choices": ["htex", "threads"], "default": "htex"}))
    t0 = time.perf_counter()
    parsl.load(config(args.executor))
    startup = time.perf_counter() - t0
    py_app, sh_app = parsl.python_app(noop), parsl.bash_app(true_cmd)
    try:
        app = sh_app if args.scenario == "shell" else py_app
        first = timed(lambda: app().result())

        def fan_out() -> None:
            futures = [app() for _ in range(args.n)]
            codes = [f.result() for f in futures]
            if args.scenario == "shell" and any(codes):
                raise RuntimeError(f"bash_app exit codes {set(codes)}")

        def chain() -> None:
            f = py_app()
            for _ in range(args.n - 1):
                f = py_app(f)
            f.result()

        body = chain if args.scenario == "chain" else fan_out
        with CpuMeter() as cpu:
            times = [timed(body) for _ in range(args.repeat)]
    finally:
        parsl.dfk().cleanup()
    return result(times, startup=startup, first_task=first, **cpu.report(args.repeat, args.n))


if __name__ == "__main__":
    main(run)

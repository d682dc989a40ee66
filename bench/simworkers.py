"""Simulated workers: many :class:`~kale.worker.agent.WorkerAgent` in one process, each with
its own link to a real manager, that run no task process.

``python bench/simworkers.py --home HOME --workers 100 --slots 10 [--delay 0] [--procs 1]``

Each simulated worker IS the real worker's agent (:mod:`kale.worker.agent`): the same
WebSocket link, the same ``hello``/``sync``/``batch`` messages, authenticated with the home's
worker token, the same credits, unacknowledged reports kept and resent, heartbeats. Only
running an attempt is replaced: the context the manager sent is decoded (unpickled, as a
real worker does), then, instead of a task runner, the attempt waits ``--delay`` seconds
(an ``asyncio.sleep``; 0: none) and reports success with no result (the agent's own
:meth:`~kale.worker.agent.WorkerAgent._run` around it: slots, credits, reports). So the manager sees
exactly what N real workers of no-op tasks would send it, while one process holds hundreds
of them.

``--procs P`` spreads the workers over P processes (each an asyncio loop). The script
prints ``@@READY`` once every worker of every process is connected, and runs until SIGTERM
or SIGINT (each agent then says ``bye``, as ``kale worker`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kale.tasks.base import Outcome, TaskContext
from kale.worker.agent import WorkerAgent

READY = "@@READY"


class SimAgent(WorkerAgent):
    """A worker agent whose attempts are simulated: decoded, then ``delay`` seconds of
    ``asyncio.sleep``, then reported as succeeded (no result, no records)."""

    def __init__(self, url: str, token: str, *, delay: float = 0.0, **options: Any) -> None:
        super().__init__(url, token, **options)
        self.delay = delay
        self.connected = asyncio.Event()

    def _welcome(self, msg: dict[str, Any]) -> None:
        super()._welcome(msg)
        self.connected.set()

    async def _execute(self, ctx: TaskContext) -> Outcome:
        if self.delay:
            await asyncio.sleep(self.delay)
        return Outcome(ok=True, records={})


def local_url(home: Path) -> str:
    """Where local workers reach the home's running manager: ``unix:`` its socket."""
    from kale.manager import service

    doc = service.state(home)
    if doc is None:
        raise SystemExit(f"no manager is running for {home}")
    return f"unix:{doc['socket']}"


async def serve(home: Path, workers: int, slots: int, delay: float, prefix: str,
                ready: bool = True) -> None:
    """Run ``workers`` simulated agents until SIGTERM/SIGINT."""
    from kale.manager.tokens import WORKER_TOKEN_FILE, read_token

    url, token = local_url(home), read_token(home, WORKER_TOKEN_FILE)
    agents = [SimAgent(url, token, delay=delay, slots=slots, worker_id=f"{prefix}{i}",
                       provider="sim", give_up=60.0) for i in range(workers)]
    runs = [asyncio.create_task(a.run()) for a in agents]
    await asyncio.sleep(0)  # the agents install their signal handlers; ours replace them
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for a in agents:
            a.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):  # the agents' own handlers: the last wins
        loop.add_signal_handler(sig, stop_all)
    await asyncio.wait([asyncio.create_task(a.connected.wait()) for a in agents])
    lag = asyncio.create_task(_lag())
    if ready:
        print(READY, flush=True)
    await asyncio.gather(*runs, return_exceptions=True)
    lag.cancel()
    print(f"simulated workers {prefix}*: event loop late by up to {LAG[0]:.2f} s",
          file=sys.stderr, flush=True)


#: how late this process's event loop ran a timer at worst (s): a loop late by more than
#: the manager's heartbeat timeout makes its workers look lost
LAG = [0.0]


async def _lag(every: float = 0.25) -> None:
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(every)
        LAG[0] = max(LAG[0], time.monotonic() - t0 - every)


class SimWorkers:
    """``workers`` simulated workers of ``slots`` slots in ``procs`` processes, for a home's
    running manager; a context manager that waits until all are connected and stops them
    (SIGTERM, then SIGKILL) at the end."""

    def __init__(self, home: Path, workers: int, slots: int, *, delay: float = 0.0,
                 procs: int = 1, prefix: str = "sim", nice: int = 0) -> None:
        self.home, self.workers, self.slots, self.delay = home, workers, slots, delay
        #: the processes' niceness: above 0, they stand in for workers on other nodes,
        #: which do not take the manager's CPU
        self.nice = nice
        self.procs = max(1, min(procs, workers))
        self.prefix = prefix
        self.popen: list[subprocess.Popen[str]] = []

    def __enter__(self) -> SimWorkers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120) -> None:
        share = [self.workers // self.procs + (i < self.workers % self.procs)
                 for i in range(self.procs)]
        for i, n in enumerate(share):
            self.popen.append(subprocess.Popen(
                [*(["nice", "-n", str(self.nice)] if self.nice else []),
                 sys.executable, __file__, "--home", str(self.home), "--workers", str(n),
                 "--slots", str(self.slots), "--delay", str(self.delay),
                 "--prefix", f"{self.prefix}{i}-"], stdout=subprocess.PIPE, text=True,
                env={**os.environ, "KALE_HOME": str(self.home)}))
        deadline = time.monotonic() + timeout
        for p in self.popen:
            assert p.stdout is not None
            line = p.stdout.readline()  # blocks until READY (or the process ends)
            if line.strip() != READY or time.monotonic() > deadline:
                raise RuntimeError(f"simulated workers (pid {p.pid}) did not connect: "
                                   f"{line.strip()!r}, exit {p.poll()}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.popen]

    def stop(self) -> None:
        for p in self.popen:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in self.popen:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
        self.popen = []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--home", type=Path, default=os.environ.get("KALE_HOME"),
                   help="the Kale home of the running manager (default: $KALE_HOME)")
    p.add_argument("--workers", type=int, default=10)
    p.add_argument("--slots", type=int, default=10)
    p.add_argument("--delay", type=float, default=0.0, help="seconds each task 'runs'")
    p.add_argument("--procs", type=int, default=1, help="processes to spread them over")
    p.add_argument("--prefix", default="sim-", help="worker ids are PREFIX0, PREFIX1...")
    args = p.parse_args()
    if args.home is None or args.workers < 1 or args.slots < 1 or args.delay < 0:
        p.error("give --home (or $KALE_HOME), --workers >= 1, --slots >= 1, --delay >= 0")
    if args.procs > 1:
        with SimWorkers(args.home, args.workers, args.slots, delay=args.delay,
                        procs=args.procs, prefix=args.prefix):
            print(READY, flush=True)
            wanted = {signal.SIGTERM, signal.SIGINT}
            signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
            signal.sigwait(wanted)
        return
    asyncio.run(serve(args.home, args.workers, args.slots, args.delay, args.prefix))


if __name__ == "__main__":
    main()

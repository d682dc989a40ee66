"""What the engine executors share: their settings (the spec, the workflow's folder, the
slots), and the watch over the files their attempts' hosts write in the run's directory
(:class:`~kale.executors.engines.attempt.Inbox`): start markers, for an engine that does
not say when a task starts, and resource samples."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from kale.executors.base import Executor
from kale.executors.engines.attempt import Inbox
from kale.model.executor import ExecutorSpec

#: how often (seconds) the start markers are looked for while tasks wait
START_POLL = 0.25
#: how often (seconds) new resource samples are read while tasks run
SAMPLES_POLL = 1.0


class EngineExecutor(Executor):
    """An executor whose attempts run on another engine's workers, made from its spec
    (``spec``, resolved against ``base_dir``, the workflow's folder) for one run
    (``run_dir``). The engine queues and places tasks itself: :attr:`slots` is ``jobs``
    if given, else unbounded. :meth:`start_watching` (called when the engine starts) turns
    the hosts' files into :attr:`on_start` (for attempts registered with
    :meth:`expect_start`) and :attr:`on_samples` calls, on the engine's loop."""

    queued = True

    def __init__(self, spec: ExecutorSpec, base_dir: Path, run_dir: Path,
                 jobs: int | None = None, run_id: str | None = None) -> None:
        self.spec, self.base_dir = spec, base_dir
        self.slots = jobs or 100_000
        self.run_dir = run_dir
        self.inbox = Inbox(run_dir)
        #: attempts submitted and not yet seen to start: marker name -> (task, attempt)
        self.waiting: dict[str, tuple[str, int]] = {}
        self.active = 0
        self._watch: asyncio.Task[None] | None = None
        self._run_id = run_id or run_dir.name

    def start_watching(self) -> None:
        self._watch = asyncio.get_running_loop().create_task(self._watching())

    def expect_start(self, task: str, attempt: int) -> str:
        marker = f"{attempt}-{task}"
        self.waiting[marker] = (task, attempt)
        return marker

    def seen(self, marker: str, where: str = "") -> None:
        """Attempt ``marker`` started (on host ``where``): say so, once."""
        found = self.waiting.pop(marker, None)
        if found is not None and self.on_start is not None:
            self.on_start(found[0], found[1], f"{self.name}:{where}")

    def drain(self) -> None:
        """Read what the hosts wrote: start markers, then samples."""
        if self.waiting:
            for marker, where in self.inbox.started().items():
                self.seen(marker, where)
        rows = self.inbox.samples(self._run_id)
        if rows and self.on_samples is not None:
            self.on_samples(rows)

    async def _watching(self) -> None:
        ticks = round(SAMPLES_POLL / START_POLL)
        tick = 0
        while True:
            await asyncio.sleep(START_POLL)
            tick += 1
            if self.waiting or (self.active and tick % ticks == 0):
                try:
                    self.drain()
                except Exception:  # a bad file must not stop the run's watch
                    continue

    async def stop_watching(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(BaseException):
                await self._watch
            self._watch = None
        with contextlib.suppress(Exception):
            self.drain()

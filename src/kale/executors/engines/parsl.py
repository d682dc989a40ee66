"""Tasks through Parsl: each attempt is one Parsl app call of
:func:`~kale.executors.engines.attempt.run_attempt`, on the executors and providers of the
user's ``parsl.Config`` (Local, Slurm, PBS...); Kale keeps the run's state, reuse and views.

A run's DataFlowKernel comes from the config the spec names: a function returning a
``parsl.Config`` (made afresh for each run: the best form when a manager drives several
runs), or a ``Config`` (copied, since Parsl's executors are good for one DataFlowKernel
only). A config whose executors all run on this machine keeps its DataFlowKernel, workers
and all, for the next run of the same config in this process (:mod:`.kept`); any other is
started for the run and cleaned up at its end. Plain ``parsl`` is one
HighThroughputExecutor on this machine, with encrypted links and Parsl's usage tracking off
(Kale sends nothing off the machine). A relative ``run_dir`` (Parsl's ``runinfo``) goes
under the directory of the run that started the DataFlowKernel.

Parsl says nothing when a task starts on a worker: the attempt's host writes a start
marker once the attempt ran 50 ms (a shorter one is made RUNNING as its outcome, which
says where it ran, arrives), and this executor lists the run's folder of them every 0.25 s
while tasks wait
(:class:`~kale.executors.engines.base.EngineExecutor`): a task is SUBMITTED while it waits
for a block, and its timeout counts from its start. Parsl cannot stop an app that runs,
so cancel (and timeouts) reach the attempt through the cancel marker its host watches
(:mod:`.attempt`)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale import procfs
from kale.errors import UsageError
from kale.executors.engines import kept
from kale.executors.engines.attempt import cancel_marker, run_on_parsl
from kale.executors.engines.base import EngineExecutor
from kale.executors.engines.targets import load_target
from kale.model.executor import ExecutorSpec
from kale.serial import dumps, loads
from kale.tasks.base import Outcome, TaskContext

#: the interchanges of the run's DataFlowKernel, while it lives (in the run's directory)
PROCESSES = "parsl/processes.json"


def default_config() -> Any:
    """One HighThroughputExecutor on this machine (a worker per core), encrypted, with
    usage tracking off."""
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider as provider

    local: Any = provider
    return Config(executors=[HighThroughputExecutor(
        label="kale_local", address="127.0.0.1", encrypted=True,
        max_workers_per_node=os.cpu_count() or 1,
        provider=local(init_blocks=1, min_blocks=1, max_blocks=1))],
        usage_tracking=0, initialize_logging=False)


class ParslExecutor(EngineExecutor):
    """Attempts as Parsl app calls through this run's DataFlowKernel (made in
    :meth:`start`, cleaned up in :meth:`close`)."""

    name = "parsl"

    def __init__(self, spec: ExecutorSpec, base_dir: Path, run_dir: Path,
                 jobs: int | None = None) -> None:
        super().__init__(spec, base_dir, run_dir, jobs)
        self.dfk: Any = None
        self.app: Any = None
        self._key: str | None = None  # the config's, for keeping its DataFlowKernel
        self._futures: set[Any] = set()  # Parsl's futures of the attempts not ended
        self._checked: Any = None  # the config, made by check()

    def _config(self) -> Any:
        from parsl.config import Config

        where = self.spec.options.get("config")
        if where is None:
            return default_config()
        found = load_target(str(where), self.base_dir, "executor parsl: config")
        if callable(found) and not isinstance(found, Config):
            found = found()
        elif isinstance(found, Config):
            try:
                found = copy.deepcopy(found)
            except Exception as e:
                raise UsageError(f"executor parsl: config {where!r} cannot be copied for "
                                 f"this run ({type(e).__name__}: {e}); name a function "
                                 "that returns a parsl.Config instead") from e
        if not isinstance(found, Config):
            raise UsageError(f"executor parsl: config {where!r} is a "
                             f"{type(found).__name__}, not a parsl.Config (or a function "
                             "returning one)")
        return found

    def check(self) -> None:
        self._checked = self._config()

    async def start(self, kinds: Mapping[str, int]) -> None:
        from parsl import python_app

        self._stop_leftovers()
        config = self._checked if self._checked is not None else self._config()
        self._key = kept.config_key(config, self.base_dir)
        self.dfk = kept.take(self._key) if self._key is not None else None
        if self.dfk is None:
            if not os.path.isabs(config.run_dir):
                config.run_dir = str(self.run_dir / "parsl" / config.run_dir)
            self.dfk = await self._start_dfk(config)
        self.app = python_app(run_on_parsl, data_flow_kernel=self.dfk)
        self._note_processes()
        self.start_watching()

    @staticmethod
    async def _start_dfk(config: Any) -> Any:
        from parsl.dataflow.dflow import DataFlowKernel

        try:  # starts the executors' interchanges and blocks: not on the engine's loop
            return await asyncio.to_thread(DataFlowKernel, config)
        except Exception as e:
            raise UsageError(f"executor parsl: cannot start its config: "
                             f"{type(e).__name__}: {e}") from e

    def _note_processes(self) -> None:
        """Write down this DataFlowKernel's interchanges (pid and start time), which a
        later driver of the run stops if this one dies without cleaning up: Parsl's
        interchange does not watch its parent (its worker pools end once it is gone)."""
        mine = []
        for ex in self.dfk.executors.values():
            pid: int | None = getattr(getattr(ex, "interchange_proc", None), "pid", None)
            identity = procfs.process_identity(pid) if pid is not None else None
            if identity is not None:
                mine.append({"pid": pid, "identity": identity})
        path = self.run_dir / PROCESSES
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"host": socket.gethostname(), "driver": os.getpid(),
                                    "processes": mine}))

    def _stop_leftovers(self) -> None:
        """Stop the interchanges a dead driver of this run left (see :meth:`_note_processes`)."""
        path = self.run_dir / PROCESSES
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if doc.get("host") == socket.gethostname() and doc.get("driver") != os.getpid():
            for p in doc.get("processes") or ():
                if procfs.process_identity(int(p["pid"])) == p.get("identity"):
                    with contextlib.suppress(OSError):
                        os.kill(int(p["pid"]), signal.SIGKILL)
        with contextlib.suppress(OSError):
            path.unlink()

    async def execute(self, ctx: TaskContext) -> Outcome:
        marker = self.expect_start(ctx.task.name, ctx.attempt)
        self.active += 1
        future = self.app(dumps(ctx), str(ctx.base_dir))  # bytes: see run_on_parsl
        self._futures.add(future)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()

        def settle(f: Any) -> None:  # Parsl's thread; its futures cannot be cancelled
            loop.call_soon_threadsafe(_copy, f, done)

        future.add_done_callback(settle)
        where: str | None = None
        outcome: Outcome
        try:
            where, outcome = loads(await done, ctx.base_dir)
        except asyncio.CancelledError:
            with contextlib.suppress(OSError):
                cancel_marker(ctx).touch()
            raise
        except Exception as e:  # the app did not return: its worker was lost, ...
            return Outcome(ok=False, error=f"Parsl: {type(e).__name__}: {e}")
        finally:
            self.active -= 1
            if future.done():
                self._futures.discard(future)
            if where is None and marker in self.waiting:  # its marker, if it got there
                self.drain()
        if marker in self.waiting:  # ended before its start was seen: it ran there
            self.seen(marker, str(where))
        return outcome

    async def close(self) -> None:
        await self.stop_watching()
        if self.dfk is not None:
            dfk, self.dfk = self.dfk, None
            busy = any(not f.done() for f in self._futures)  # cancelled, still stopping
            if busy or self._key is None or not kept.keep(self._key, dfk):
                await asyncio.to_thread(kept.cleanup, dfk)
            with contextlib.suppress(OSError):
                (self.run_dir / PROCESSES).unlink()


def _copy(source: Any, target: asyncio.Future[bytes]) -> None:
    if target.done():  # the attempt was cancelled here
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())

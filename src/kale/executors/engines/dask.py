"""Tasks on a Dask cluster: each attempt is one Dask future running
:func:`~kale.executors.engines.attempt.run_on_dask` on a worker, so Dask's own scheduling,
work stealing and worker restarts apply (Dask re-runs a task whose worker died, up to its
``allowed-failures``); Kale keeps the run's state, reuse and views.

The cluster is a running one (``address``), or one Kale starts from a class path
(``cluster``, default ``distributed:LocalCluster``) with the spec's ``options`` as keyword
arguments, scales to ``scale`` workers, and closes when the run ends. A cluster Kale starts
is given TLS with a throw-away certificate (``security=True``) when its class takes one
and ``options`` says nothing else: on a shared login node, a plain TCP scheduler would run
whatever any local user sends it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.errors import UsageError
from kale.executors.engines.attempt import cancel_marker, run_on_dask
from kale.executors.engines.base import EngineExecutor
from kale.executors.engines.targets import load_target
from kale.model.executor import ExecutorSpec
from kale.tasks.base import Outcome, TaskContext

DEFAULT_CLUSTER = "distributed:LocalCluster"
#: how long a cancelled attempt may take to stop on its worker before execute() returns
CANCEL_GRACE = 30.0


class DaskExecutor(EngineExecutor):
    """Attempts as Dask futures on one client (made in :meth:`start`, on the engine's
    loop). Tasks wait in Dask's queue: the engine records them SUBMITTED, and RUNNING when
    a worker starts one (the ``kale-started`` event)."""

    name = "dask"
    queued = True

    def __init__(self, spec: ExecutorSpec, base_dir: Path, run_dir: Path,
                 jobs: int | None = None) -> None:
        super().__init__(run_dir)
        self.spec, self.base_dir = spec, base_dir
        self.slots = jobs or 100_000  # Dask queues and places tasks itself
        self.client: Any = None
        self.cluster: Any = None
        self.dashboard: str | None = None
        self._keys: dict[str, tuple[str, int]] = {}

    def check(self) -> None:
        if self.spec.options.get("address") is None:
            self._cluster_class()

    def _cluster_class(self) -> Any:
        path = str(self.spec.options.get("cluster") or DEFAULT_CLUSTER)
        return load_target(path, self.base_dir, "executor dask: cluster")

    async def start(self, kinds: Mapping[str, int]) -> None:
        import distributed

        client: Any = distributed.Client
        address = self.spec.options.get("address")
        if address:
            try:
                self.client = await client(address, asynchronous=True, timeout="30s")
            except OSError as e:
                raise UsageError(f"executor dask: cannot reach the scheduler at {address}: "
                                 f"{e}") from e
        else:
            self.cluster = await self._start_cluster()
            self.client = await client(self.cluster, asynchronous=True)
        self.dashboard = self.client.dashboard_link
        self.client.subscribe_topic("kale-started", self._started)
        self.start_watching()  # for the samples

    async def _start_cluster(self) -> Any:
        path = str(self.spec.options.get("cluster") or DEFAULT_CLUSTER)
        cls = self._cluster_class()
        kwargs = dict(self.spec.options.get("options") or {})
        params = _parameters(cls)
        if "security" in params and "security" not in kwargs:
            kwargs["security"] = True
        if path == DEFAULT_CLUSTER:
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("dashboard_address", "127.0.0.1:0")
            kwargs.setdefault("n_workers", 0 if "scale" in self.spec.options else None)
            if kwargs["n_workers"] is None:
                del kwargs["n_workers"]
        try:
            cluster = await cls(asynchronous=True, **kwargs)
        except Exception as e:
            raise UsageError(f"executor dask: cannot start {path}: {type(e).__name__}: "
                             f"{e}") from e
        scale = self.spec.options.get("scale")
        if scale is not None:
            cluster.scale(int(scale))
        return cluster

    def _started(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        if msg.get("run") is None or self.on_start is None:
            return
        key = (str(msg["task"]), int(msg["attempt"]))
        if key in self._keys.values():
            self.on_start(key[0], key[1], f"dask:{msg.get('worker', '')}")

    async def execute(self, ctx: TaskContext) -> Outcome:
        from distributed import KilledWorker

        key = f"kale-{ctx.task.name}-{ctx.attempt}-{uuid.uuid4().hex[:12]}"
        self._keys[key] = (ctx.task.name, ctx.attempt)
        future = self.client.submit(run_on_dask, ctx, key=key, pure=False)
        self.active += 1
        try:
            outcome: Outcome = await future
        except asyncio.CancelledError:
            await self._cancel(ctx, future)
            raise
        except KilledWorker as e:
            return Outcome(ok=False, error=f"the Dask workers running it died ({e}); Dask "
                           "gave up on it after its allowed failures")
        except Exception as e:
            return Outcome(ok=False, error=f"Dask: {type(e).__name__}: {e}")
        finally:
            self.active -= 1
            self._keys.pop(key, None)
        if self.dashboard:
            outcome.details.setdefault("dask_dashboard", self.dashboard)
        return outcome

    async def _cancel(self, ctx: TaskContext, future: Any) -> None:
        """Stop the attempt wherever it runs: the cancel marker (the worker's host kills
        the task's processes), then drop the future from Dask's queue."""
        with contextlib.suppress(OSError):
            cancel_marker(ctx).touch()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.cancel([future]), CANCEL_GRACE)

    async def close(self) -> None:
        await self.stop_watching()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.close()
        self.client = self.cluster = None


def _parameters(cls: Any) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()

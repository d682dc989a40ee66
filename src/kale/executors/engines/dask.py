"""Tasks on a Dask cluster: each attempt is one Dask future running
:func:`~kale.executors.engines.attempt.run_on_dask` on a worker, so Dask's own scheduling,
work stealing and worker restarts apply (Dask re-runs a task whose worker died, up to its
``allowed-failures``); Kale keeps the run's state, reuse and views.

The cluster is a running one (``address``: ``tls://`` only, its files in ``security`` or
in Dask's own configuration), or one Kale starts from a class path (``cluster``, default
``distributed:LocalCluster``) with the spec's ``options`` as keyword arguments, scales to
``scale`` workers, and closes when the run ends. A cluster Kale starts is given TLS with a
throw-away certificate (``security=True``) when its class takes one and ``options`` says
nothing else: on a shared login node, a plain TCP scheduler would run whatever any local
user sends it. Its scheduler serves HTTP on this host only (127.0.0.1, a free port), and
its dashboard (which lists the tasks and shows the workers' logs, to anyone who can reach
it: no login) only when ``options`` asks for one (``dashboard_address``, or in
``scheduler_options``)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass
class _Attempt:
    """One attempt on its way through Dask: its Dask key, its context, the asyncio future
    :meth:`DaskExecutor.execute` awaits (the worker's address and the outcome), its Dask
    future once submitted, and whether its start was told."""

    key: str
    ctx: TaskContext
    done: asyncio.Future[tuple[str, Outcome]]
    future: Any = None
    started: bool = False


class DaskExecutor(EngineExecutor):
    """Attempts as Dask futures on one client (made in :meth:`start`, on the engine's
    loop). Tasks wait in Dask's queue: the engine records them SUBMITTED, and RUNNING when
    a worker starts one (the ``kale-started`` events), or at the latest when its outcome
    comes back.

    Per turn of the engine's loop, not per task: the attempts :meth:`execute` was called
    for go to the scheduler in one ``client.map`` (one graph update), and the results of
    the futures that finished are fetched in one ``client.gather`` (one request), as a
    Dask user does with many tasks. Invariants: every attempt awaited in :meth:`execute`
    is in :attr:`_attempts` (by Dask key) and :attr:`_by_task` until it returns;
    :attr:`on_start` is called at most once per attempt, and before its outcome is
    returned."""

    name = "dask"

    def __init__(self, spec: ExecutorSpec, base_dir: Path, run_dir: Path,
                 jobs: int | None = None) -> None:
        super().__init__(spec, base_dir, run_dir, jobs)
        self.client: Any = None
        self.cluster: Any = None
        self.dashboard: str | None = None
        self._attempts: dict[str, _Attempt] = {}
        self._by_task: dict[tuple[str, int], _Attempt] = {}  # the same, by (task, attempt)
        self._outbox: list[_Attempt] = []  # to submit at the end of this loop turn
        self._finished: Any = None  # distributed.as_completed of the submitted futures
        self._collector: asyncio.Task[None] | None = None

    def check(self) -> None:
        if self.spec.options.get("address") is None:
            self._cluster_class()
        else:
            self._security()

    def _security(self) -> Any:
        """The ``distributed.Security`` that reaches the running cluster: the spec's
        ``security`` files (relative to the workflow's folder), else Dask's configuration
        (``distributed.comm.tls``); encryption required. Raises :class:`UsageError` when
        neither names the CA that proves the scheduler, or a file is not there."""
        import distributed

        given = dict(self.spec.options.get("security") or {})
        files = {k: self._file(k, v) for k, v in given.items()}
        names = {"ca": "tls_ca_file", "cert": "tls_client_cert", "key": "tls_client_key"}
        make: Any = distributed.Security
        security = make(require_encryption=True,
                        **{names[k]: v for k, v in files.items()})
        if not (security.tls_ca_file and security.tls_client_cert):
            raise UsageError("executor dask: the TLS files that reach the scheduler at "
                             f"{self.spec.options['address']} are not known (the CA that "
                             "proves it, the certificate that proves Kale): give "
                             "security: {ca: ..., cert: ..., key: ...}, or set "
                             "distributed.comm.tls.ca-file and .client in Dask's "
                             "configuration")
        return security

    def _file(self, what: str, name: str) -> str:
        path = Path(name).expanduser()
        path = path if path.is_absolute() else self.base_dir / path
        if not path.is_file():
            raise UsageError(f"executor dask: security.{what}: no file {path}")
        return str(path)

    def _cluster_class(self) -> Any:
        path = str(self.spec.options.get("cluster") or DEFAULT_CLUSTER)
        return load_target(path, self.base_dir, "executor dask: cluster")

    async def start(self, kinds: Mapping[str, int]) -> None:
        import distributed

        client: Any = distributed.Client
        address = self.spec.options.get("address")
        if address:
            try:
                self.client = await client(address, asynchronous=True, timeout="30s",
                                           security=self._security())
            except OSError as e:
                raise UsageError(f"executor dask: cannot reach the scheduler at {address}: "
                                 f"{e}") from e
            self.dashboard = self.client.dashboard_link  # the cluster's owner's choice
        else:
            self.cluster, shown = await self._start_cluster()
            self.client = await client(self.cluster, asynchronous=True)
            self.dashboard = self.client.dashboard_link if shown else None
        self.client.subscribe_topic("kale-started", self._started)
        self.start_watching()  # for the samples

    async def _start_cluster(self) -> tuple[Any, bool]:
        """The cluster Kale starts, and whether it shows a dashboard (asked for)."""
        import dask

        path = str(self.spec.options.get("cluster") or DEFAULT_CLUSTER)
        cls = self._cluster_class()
        kwargs = dict(self.spec.options.get("options") or {})
        params = _parameters(cls)
        if "security" in params and "security" not in kwargs:
            kwargs["security"] = True
            if "shared_temp_directory" in params:  # dask-jobqueue: the certificate's files
                # for the job's workers, in the run's private folder (not the current one)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                kwargs.setdefault("shared_temp_directory", str(self.run_dir))
        if path == DEFAULT_CLUSTER:
            kwargs.setdefault("host", "127.0.0.1")
            kwargs.setdefault("n_workers", 0 if "scale" in self.spec.options else None)
            if kwargs["n_workers"] is None:
                del kwargs["n_workers"]
        shown = _http_here(kwargs, params)
        # no dashboard asked for: its scheduler's HTTP server answers health checks only
        # (Dask reads these routes as the scheduler starts: the info pages would list the
        # tasks and show the workers' logs to anyone on the host)
        routes = {} if shown else {"distributed.scheduler.http.routes":
                                   ["distributed.http.health"]}
        try:
            with dask.config.set(routes):
                cluster = await cls(asynchronous=True, **kwargs)
        except Exception as e:
            raise UsageError(f"executor dask: cannot start {path}: {type(e).__name__}: "
                             f"{e}") from e
        scale = self.spec.options.get("scale")
        if scale is not None:
            cluster.scale(int(scale))
        return cluster, shown

    def _started(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        for start in msg.get("started") or ():
            attempt = self._by_task.get((str(start.get("task")), int(start.get("attempt", 0))))
            if attempt is not None and start.get("run") == attempt.ctx.run_id:
                self._tell_start(attempt, str(msg.get("worker", "")))

    def _tell_start(self, attempt: _Attempt, worker: str) -> None:
        if not attempt.started and not attempt.done.done():
            attempt.started = True
            if self.on_start is not None:
                self.on_start(attempt.ctx.task.name, attempt.ctx.attempt, f"dask:{worker}")

    async def execute(self, ctx: TaskContext) -> Outcome:
        from distributed import KilledWorker

        loop = asyncio.get_running_loop()
        key = f"kale-{ctx.task.name}-{ctx.attempt}-{uuid.uuid4().hex[:12]}"
        attempt = self._attempts[key] = _Attempt(key, ctx, loop.create_future())
        self._by_task[ctx.task.name, ctx.attempt] = attempt
        self._outbox.append(attempt)
        if len(self._outbox) == 1:
            loop.call_soon(self._submit)
        self.active += 1
        try:
            worker, outcome = await attempt.done
        except asyncio.CancelledError:
            await self._cancel(attempt)
            raise
        except KilledWorker as e:
            return Outcome(ok=False, error=f"the Dask workers running it died ({e}); Dask "
                           "gave up on it after its allowed failures")
        except Exception as e:
            return Outcome(ok=False, error=f"Dask: {type(e).__name__}: {e}")
        finally:
            self.active -= 1
            self._attempts.pop(key, None)
            self._by_task.pop((ctx.task.name, ctx.attempt), None)
        if not attempt.started and self.on_start is not None:  # ended before it was told
            attempt.started = True
            self.on_start(ctx.task.name, ctx.attempt, f"dask:{worker}")
        if self.dashboard:
            outcome.details.setdefault("dask_dashboard", self.dashboard)
        return outcome

    def _submit(self) -> None:
        """Send the attempts of this loop turn to the scheduler, in one graph update."""
        import distributed

        as_completed: Any = distributed.as_completed
        batch = [a for a in self._outbox if not a.done.done()]
        self._outbox = []
        if not batch or self.client is None:
            return
        try:
            futures = self.client.map(run_on_dask, [a.ctx for a in batch],
                                      key=[a.key for a in batch], pure=False)
        except Exception:  # one of them cannot be sent (its inputs...): each on its own
            futures = [self._submit_one(a) for a in batch]
        sent = []
        for attempt, future in zip(batch, futures, strict=True):
            if future is not None:
                attempt.future = future
                sent.append(future)
        if self._finished is None:
            self._finished = as_completed([], loop=self.client.loop)
        self._finished.update(sent)
        if self._collector is None or self._collector.done():
            self._collector = asyncio.get_running_loop().create_task(self._collect())

    def _submit_one(self, attempt: _Attempt) -> Any:
        try:
            return self.client.submit(run_on_dask, attempt.ctx, key=attempt.key, pure=False)
        except Exception as e:
            attempt.done.set_exception(e)
            return None

    async def _collect(self) -> None:
        """Hand the finished futures' results to their attempts: what finished since the
        last time, fetched in one request."""
        finished = self._finished
        async for first in finished:
            batch = [first, *finished.next_batch(block=False)]
            ok = [f for f in batch if f.status == "finished"]
            for future in batch:
                if future.status != "finished":  # an error or cancelled: known here
                    self._settle_from(future)
            if not ok:
                continue
            try:
                values = await self.client.gather(ok)
            except Exception:  # one could not be fetched: each on its own
                for future in ok:
                    self._settle_from(future)
                continue
            for future, value in zip(ok, values, strict=True):
                attempt = self._attempts.get(future.key)
                if attempt is not None and not attempt.done.done():
                    attempt.done.set_result(value)

    def _settle_from(self, future: Any) -> None:
        """Settle an attempt from its Dask future on its own (awaiting it)."""
        attempt = self._attempts.get(future.key)
        if attempt is None or attempt.done.done():
            return
        waiter = asyncio.ensure_future(future.result())
        waiter.add_done_callback(lambda w: _copy(w, attempt.done))

    async def _cancel(self, attempt: _Attempt) -> None:
        """Stop the attempt wherever it runs: the cancel marker (the worker's host kills
        the task's processes), then drop the future from Dask's queue."""
        if not attempt.done.done():
            attempt.done.cancel()
        if attempt.future is None:  # not sent yet
            with contextlib.suppress(ValueError):
                self._outbox.remove(attempt)
            return
        with contextlib.suppress(OSError):
            cancel_marker(attempt.ctx).touch()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.cancel([attempt.future]), CANCEL_GRACE)

    async def close(self) -> None:
        await self.stop_watching()
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(BaseException):
                await self._collector
        if self.client is not None:
            with contextlib.suppress(Exception):  # no starts sent to a closed client
                self.client.unsubscribe_topic("kale-started")
            with contextlib.suppress(Exception):
                await self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                await self.cluster.close()
        self.client = self.cluster = None


def _copy(source: asyncio.Future[Any], target: asyncio.Future[tuple[str, Outcome]]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


def _http_here(kwargs: dict[str, Any], params: set[str]) -> bool:
    """Where the scheduler of a cluster Kale starts serves HTTP: on this host only, a free
    port, with no dashboard, unless its ``options`` ask for one (``dashboard_address``, or
    ``scheduler_options.dashboard_address`` for the classes that take it there, such as
    dask-jobqueue's, whose default is port 8787 on every interface). Changes ``kwargs``;
    returns whether a dashboard was asked for."""
    if "scheduler_options" in params:
        inner = dict(kwargs.get("scheduler_options") or {})
        shown = "dashboard_address" in inner
        inner.setdefault("dashboard_address", "127.0.0.1:0")
        if not shown:
            inner.setdefault("dashboard", False)
        kwargs["scheduler_options"] = inner
        return shown
    shown = "dashboard_address" in kwargs
    if not shown and "dashboard_address" in params:
        kwargs["dashboard_address"] = "127.0.0.1:0"
        if "scheduler_kwargs" in params:
            kwargs["scheduler_kwargs"] = {"dashboard": False,
                                          **(kwargs.get("scheduler_kwargs") or {})}
    return shown


def _parameters(cls: Any) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()

"""One workflow across sites: tasks that name a ``site:`` run there, the others here, and
what one place made reaches another through a transfer task of its own.

:func:`plan` adds a transfer task on every edge from a task that declares ``outputs`` at
one place to a task at another (``simulate-to-hpc``: state, retries, logs, bytes and
time, in the DAG like any task). :class:`SiteRouter` is the executor of such a run: a
site's task becomes a one-task run of that site's manager (its files staged first, its
upstream values and moved paths filled in, its logs copied here as they grow); a
transfer task copies the upstream task's outputs with a :mod:`kale.transfers` transfer
(rsync over the sites' SSH, relayed through this machine); every other task runs here,
in a :class:`~kale.executors.local.LocalExecutor`.

Invariants: the run is driven from this side (embedded: this process, or ``kale run``);
a task at a site sees the moved files at their place there, never a path of another
machine; a transfer writes whole files only (the transfer's own invariant), into a
directory of this run, so a retry completes it and the consumer starts only after it
succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shlex
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kale.client.local import EmbeddedSource
from kale.errors import KaleError
from kale.executors.base import Executor
from kale.executors.local import LocalExecutor
from kale.model.options import RunOptions
from kale.model.refs import substitute
from kale.model.states import RunState
from kale.model.workflow import Task, Workflow
from kale.sites.site import Site
from kale.sites.source import SiteSource, shared_site
from kale.tasks.base import Outcome, TaskContext
from kale.tasks.registry import runner_kind
from kale.tasks.shell import ref_values

#: the tag of the transfer tasks :func:`plan` adds
TRANSFER_TAG = "kale-transfer"
#: what a transfer task runs (never called: :class:`SiteRouter` runs transfers itself)
TRANSFER_TARGET = "kale.sites.across:transfer"
#: seconds between two looks at a task running at a site (it grows to this from 0.05)
POLL = 1.0


def transfer() -> None:
    """The target of transfer tasks, which only a cross-site run's executor runs."""
    raise KaleError("a transfer task runs only in a workflow across sites (its tasks' "
                    "`site:`), driven from this side")


def plan(wf: Workflow) -> Workflow:
    """A copy of ``wf`` with a transfer task on every edge where declared outputs cross
    from one place to another (done once: a planned workflow is returned unchanged)."""
    out = copy.deepcopy(wf)
    for task in list(out.tasks.values()):
        for up in task.upstream:
            source = out.tasks[up]
            if not source.outputs or source.site == task.site or TRANSFER_TAG in task.tags:
                continue
            name = f"{up}-to-{task.site or 'here'}"
            if name not in out.tasks:
                where = f"site {task.site}" if task.site else "this machine"
                out.add(Task(name=name, kind="python", target=TRANSFER_TARGET, after=[up],
                             retries=2, tags=[TRANSFER_TAG],
                             parameters={"source": up, "to": task.site or ""},
                             description=f"Copies the outputs of `{up}` to {where}."))
            if name not in task.after:
                task.after.append(name)
    return out


class SiteRouter(Executor):
    """The executor of a run across sites (see the module). Threads: the engine's event
    loop; blocking SSH and HTTP calls go to worker threads."""

    name = "sites"

    def __init__(self, wf: Workflow, jobs: int | None = None,
                 home: str | Path | None = None, force: bool = False) -> None:
        self.local = LocalExecutor(jobs=jobs)
        self.force = force  # the run's --force: a site does not reuse either
        self.slots = self.local.slots + 32  # tasks at sites mostly wait for their site
        self.home = home
        #: where each task runs (None: here)
        self.where = {n: t.site for n, t in wf.tasks.items()}
        self.transfers = {n for n, t in wf.tasks.items() if TRANSFER_TAG in t.tags}
        self.here = Counter(runner_kind(t) for t in wf.tasks.values()
                            if not t.site and TRANSFER_TAG not in t.tags)
        self.staged: dict[str, str] = {}  # where each site has the workflow's folder

    async def start(self, kinds: Mapping[str, int]) -> None:
        """Warm the local runners for the tasks that run here only."""
        del kinds
        await self.local.start(self.here)

    async def execute(self, ctx: TaskContext) -> Outcome:
        if TRANSFER_TAG in ctx.task.tags:
            from kale.transfers import get

            transfer = get()
            try:
                return await asyncio.to_thread(self._transfer, ctx, transfer)
            except asyncio.CancelledError:  # rsync runs in its own process group
                with contextlib.suppress(NotImplementedError):
                    transfer.cancel()
                raise
        moved = {k: v for k, v in ctx.upstream.items()
                 if k in self.transfers and isinstance(v, dict) and "moved" in v}
        if moved:
            ctx = _relocated(ctx, moved)
        if ctx.task.site:
            return await self._at_site(ctx)
        return await self.local.execute(ctx)

    async def close(self) -> None:
        await self.local.close()

    # -- a task at a site ----------------------------------------------------------------
    def _site(self, name: str) -> Site:
        return shared_site(name, self.home)

    async def _at_site(self, ctx: TaskContext) -> Outcome:
        site = self._site(str(ctx.task.site))
        source, run_id = await asyncio.to_thread(self._submit, site, ctx)
        client = source.client
        offsets = {"stdout": 0, "stderr": 0}
        try:
            pause = 0.05
            while True:
                doc = await asyncio.to_thread(client.status, run_id, False)
                await asyncio.to_thread(_copy_logs, client, run_id, ctx, offsets)
                if RunState(doc["run"]["state"]).terminal:
                    break
                await asyncio.sleep(pause)
                pause = min(POLL, pause * 1.5)
            return await asyncio.to_thread(_outcome, client, run_id, ctx, site.name)
        except asyncio.CancelledError:
            await asyncio.to_thread(client.cancel, run_id)
            raise
        finally:
            await asyncio.to_thread(source.close)

    def _submit(self, site: Site, ctx: TaskContext) -> tuple[SiteSource, str]:
        """A one-task run of ``ctx``'s task at ``site``: the source that reaches it, and
        its id."""
        source = SiteSource(site)
        try:
            if site.name not in self.staged:
                self.staged[site.name] = site.stage(ctx.base_dir).path
            wf = Workflow(f"{ctx.run_id}.{ctx.task.name}", base_dir=ctx.base_dir)
            wf.add(_standalone(ctx))
            run_id = source.client.submit_id(wf, RunOptions(force=self.force),
                                            base_dir=self.staged[site.name])
        except BaseException:
            source.close()
            raise
        with open(ctx.stdout_path, "a") as log:
            log.write(f"[kale] at site {site.name}: run {run_id}\n")
        return source, run_id

    # -- a transfer ----------------------------------------------------------------------
    def _transfer(self, ctx: TaskContext, transfer: Any) -> Outcome:
        from kale.transfers.base import TransferError

        up = str(ctx.task.parameters["source"])
        to = str(ctx.task.parameters["to"]) or None
        produced = ctx.upstream.get(up)
        paths = _output_paths(produced)
        if not paths:
            return Outcome(ok=False, error=f"{up} made no outputs to move")
        src_dir = _common_dir(paths)
        src = self._endpoint(self.where.get(up), src_dir)
        if to is None:
            dest_dir = str(ctx.workdir / "data")
        else:
            site = self._site(to)
            info = site.info or site.connect()
            dest_dir = f"{info.home}/transfers/{ctx.run_id}/{up}"
        dst = self._endpoint(to, dest_dir)
        relative = [p[len(src_dir):].lstrip("/") for p in paths]
        with open(ctx.stdout_path, "a") as log:
            log.write(f"[kale] {up}: {len(relative)} output(s) from {src} to {dst}\n")
            log.flush()
            try:
                report = transfer.copy(src, dst, relative, log)
            except TransferError as e:
                return Outcome(ok=False, error=str(e))
            log.write(f"[kale] {report.files} file(s), {report.bytes} bytes sent in "
                      f"{report.seconds:.2f} s ({report.method})\n")
        return Outcome(ok=True, result={"moved": {src_dir: dest_dir}, "files": report.files,
                                        "bytes": report.bytes, "seconds": report.seconds,
                                        "method": report.method}, elsewhere=True)

    def _endpoint(self, site: str | None, path: str) -> Any:
        from kale.transfers.base import Endpoint

        if site is None:
            return Endpoint(None, path)
        s = self._site(site)
        s.link.connect()
        return Endpoint(s.config.destination, path, tuple(s.link.ssh_args()))


def _standalone(ctx: TaskContext) -> Task:
    """The task as a workflow of its own: its references filled in with their values."""
    task = copy.copy(ctx.task)
    task.parameters = dict(ctx.inputs)
    task.after, task.site = [], None
    if task.kind == "shell":  # the values the shell runner would give its references
        value = ref_values(ctx)
        if isinstance(task.target, str):
            task.target = substitute(task.target, lambda r: shlex.quote(value(r)))
        else:
            task.target = [substitute(a, value) for a in task.target]
    return task


def _relocated(ctx: TaskContext, moved: dict[str, Any]) -> TaskContext:
    """``ctx`` with every path the transfers moved replaced by where they put it."""
    pairs = [(a, b) for v in moved.values() for a, b in v["moved"].items()]

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            for a, b in pairs:
                if value == a or value.startswith(a + "/"):
                    return b + value[len(a):]
            return value
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    out = copy.copy(ctx)
    out.inputs = fix(ctx.inputs)
    out.upstream = {k: fix(v) for k, v in ctx.upstream.items()}
    return out


def _output_paths(result: Any) -> list[str]:
    """The files a task's result names: its declared outputs (``pattern -> path``, a
    glob's matches joined by commas)."""
    if not isinstance(result, dict):
        return []
    paths = []
    for value in result.values():
        if isinstance(value, str) and value.startswith("/"):
            paths += [p for p in value.split(",") if p]
    return paths


def _common_dir(paths: list[str]) -> str:
    import posixpath

    return posixpath.commonpath([posixpath.dirname(p.rstrip("/")) for p in paths])


def _copy_logs(client: Any, run_id: str, ctx: TaskContext, offsets: dict[str, int]) -> None:
    for stream, path in (("stdout", ctx.stdout_path), ("stderr", ctx.stderr_path)):
        chunk = client.logs(run_id, ctx.task.name, stream, offsets[stream])
        if chunk:
            data = chunk.encode(errors="replace")
            offsets[stream] += len(data)
            with open(path, "ab") as f:
                f.write(data)


def _outcome(client: Any, run_id: str, ctx: TaskContext, site: str) -> Outcome:
    detail = client.task(run_id, ctx.task.name)
    if detail["state"] != "SUCCEEDED":
        return Outcome(ok=False, exit_code=detail.get("exit_code"),
                       error=f"at site {site} (run {run_id}): "
                             f"{detail.get('error') or detail['state']}",
                       traceback=detail.get("traceback"))
    result = client.result(run_id, ctx.task.name)
    return Outcome(ok=True, result=result, exit_code=detail.get("exit_code"), elsewhere=True)


class CrossSiteSource(EmbeddedSource):
    """This home's store, driving runs across sites in this process (a thread): the
    workflow gets its transfer tasks (:func:`plan`) and :class:`SiteRouter` runs it."""

    def submit(self, wf: Workflow, options: RunOptions) -> str:
        return super().submit(plan(wf), options)

    def executor(self, wf: Workflow, options: RunOptions) -> Executor | None:
        return SiteRouter(plan(wf), jobs=options.jobs, home=self.home, force=options.force)

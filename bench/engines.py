"""The overhead Kale adds over using Dask or Parsl directly, side by side in one run.

    python bench/engines.py            # full sizes (~8 min) -> bench/results/engines.txt
    python bench/engines.py --quick    # small sizes, CI smoke (~1 min); prints only
    python bench/engines.py --profile dask|parsl|attempt [--n 1000]  # where Kale's time goes

Two sides, each in a fresh process of its own (its own TMPDIR, its session killed at the
end, so nothing one leaves running disturbs the other):

``dask``   one ``distributed.LocalCluster`` (worker processes, one per core, one thread
           each) in a process of its own, as a cluster named by address is (its scheduler
           does not share Kale's GIL), used by both rows: *Dask alone* is ``client.map``
           of the no-op (a chain: ``client.submit(noop, previous)``), then gather; *Kale
           on Dask* is ``Workflow.run()`` (the embedded engine) with ``executor: {kind:
           dask, address: <that cluster's scheduler>, security: ...}`` (both rows over
           TLS), so each Kale attempt is one Dask future of ``run_on_dask`` on the same
           workers.
``parsl``  *Parsl alone* is a ``HighThroughputExecutor`` with a ``LocalProvider`` (one
           block, a worker per core) loaded with ``parsl.load``, a ``python_app`` of the
           no-op, a list of futures; *Kale on Parsl* is ``executor: {kind: parsl, config:
           "cfg:config"}``, where ``cfg.config()`` returns the same configuration.

Every system runs the same function, ``mod:noop`` (a module written into a temporary
folder on every worker's ``PYTHONPATH``). Workloads: ``noop`` (N independent tasks, the
issue's goal: Kale within 1.5x of the engine alone at 1,000), ``chain`` (N dependent
tasks, per-hop latency) and ``scale`` (one 10,000-task run).

What is timed: the engine alone from submitting the first task to the last result, on an
engine already started and warmed with one task (its start-up and first task are listed
apart); Kale from ``wf.run()`` to ``wait()`` returning, in a fresh Kale home each time (no
reuse), so its times *include* the run's setup (the store, the Dask client's connection,
the Parsl app) and teardown. Neither side's timed runs start the engine: the engine alone
is started once, before; Kale runs on Dask by address, and on Parsl keeps the
DataFlowKernel (interchange and workers) its first run started for the next runs of the
same config in the process (``kale.executors.engines.kept``), as a notebook session or
the manager does. That first run (one task) is listed apart, against the engine alone's
start-up. *in-run* is Kale's first task start to last task end (the run's task records).
Runs of the engine alone and of Kale alternate, so a drift of the machine's load hits both
alike. No timing is asserted.

``--profile`` says where Kale's time goes, ``n`` no-op tasks: ``dask`` the CPU seconds of
each process (this one, the scheduler, the Dask workers, Kale's warm Python processes) for
Dask alone and for Kale, the time per task on the workers (Dask's task stream), Dask alone
with futures submitted one by one, with a ``TaskContext`` argument and with a worker event
(what a Kale attempt adds), a chain driven from the client, then Kale's process under
cProfile (per thread); ``parsl`` Kale's process under cProfile; ``attempt`` the part that
runs on the engine's worker (``run_attempt``) in a loop, without an engine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profile_kale import profile_threads  # (bench/dynamic.py takes it from here too)

BENCH = Path(__file__).resolve().parent
MARKER = "@@RESULT "
WORKERS = os.cpu_count() or 1
GOAL = 1.5  # Kale at most 1.5x the engine alone's time, 1,000 no-op tasks

MODULE = '''"""The task every system runs (and, for --profile, two of what Kale adds)."""


def noop(*_args):
    return None


def started(*_args):
    """A no-op that tells the client it started, as Kale's run_on_dask does."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event("bench-started", {"run": "r", "task": "t", "attempt": 1,
                                       "worker": worker.address})
'''
CFG = f'''"""Both Parsl rows' configuration: HTEX, a LocalProvider, a worker per core."""

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider


def config(run_dir="runinfo"):
    return Config(
        executors=[HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node={WORKERS},
            cores_per_worker=1,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, strategy="none", strategy_period=0.5)
'''


@dataclass(frozen=True)
class Sizes:
    """Tasks per workload and how many timed runs of each (a run of Kale and one of the
    engine alone per round)."""

    noop: int
    chain: int
    scale: int
    rounds: int

    def plan(self) -> list[tuple[str, int, int]]:
        plan = [("noop", self.noop, self.rounds), ("chain", self.chain, self.rounds),
                ("scale", self.scale, 1)]
        only = [w for w in os.environ.get("KALE_BENCH_ONLY", "").split(",") if w]
        return [row for row in plan if not only or row[0] in only]


FULL = Sizes(noop=1000, chain=200, scale=10_000, rounds=3)
QUICK = Sizes(noop=50, chain=10, scale=200, rounds=1)


# -- one side, in its own process -----------------------------------------------------------
def project() -> Path:
    """The temporary folder with ``mod.py`` and ``cfg.py``, on the workers' path."""
    folder = Path(tempfile.mkdtemp(prefix="kale-bench-engines-"))
    (folder / "mod.py").write_text(MODULE)
    (folder / "cfg.py").write_text(CFG)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)
    sys.path.insert(0, str(folder))
    os.environ["KALE_HOME"] = str(folder / "home")
    return folder


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class KaleRows:
    """Kale runs of ``mod:noop`` workflows on one executor spec, each in a fresh home."""

    def __init__(self, folder: Path, executor: dict[str, Any]) -> None:
        self.folder, self.executor = folder, executor
        self.homes = 0
        #: tasks of the last run that SUCCEEDED without a start time
        self.unstarted = 0

    def workflow(self, kind: str, n: int) -> Any:
        from kale import Workflow

        wf = Workflow(f"bench-engines-{kind}", base_dir=self.folder, executor=self.executor)
        for i in range(n):
            after = [f"t{i - 1}"] if kind == "chain" and i else []
            wf.python("mod:noop", name=f"t{i}", after=after)
        return wf

    def run(self, wf: Any) -> tuple[float, float]:
        """Seconds from ``run()`` to ``wait()`` returning, and the run's in-run seconds
        (NaN if no task has a start time); counts the tasks without one in
        :attr:`unstarted`."""
        self.homes += 1
        home = self.folder / f"home-{self.homes}"
        t0 = time.perf_counter()
        run = wf.run(home=home).wait()
        took = time.perf_counter() - t0
        tasks = run.tasks
        if run.state.value != "SUCCEEDED":
            bad = [t for t in tasks if t.state.value != "SUCCEEDED"][:1]
            why = f": {bad[0].name} {bad[0].state.value} {bad[0].error}" if bad else ""
            raise RuntimeError(f"Kale run {run.state.value}{why}")
        starts = [t.started_at for t in tasks if t.started_at is not None]
        self.unstarted = len(tasks) - len(starts)
        if not starts:
            return took, math.nan
        return took, float(max(t.ended_at for t in tasks) - min(starts))


def alternate(plan: list[tuple[str, int, int]], engine: Callable[[str, int], None],
              kale: KaleRows) -> dict[str, Any]:
    """Each workload: rounds of the engine alone then Kale, timed."""
    out: dict[str, Any] = {}
    for kind, n, rounds in plan:
        wf = kale.workflow(kind, n)
        row: dict[str, Any] = {"n": n, "engine": [], "kale": [], "in_run": [],
                               "unstarted": 0}
        for r in range(rounds):
            row["engine"].append(timed(lambda kind=kind, n=n: engine(kind, n)))
            took, in_run = kale.run(wf)
            row["kale"].append(took)
            row["in_run"].append(in_run)
            row["unstarted"] = max(row["unstarted"], kale.unstarted)
            print(f"  {kind} n={n} round {r + 1}: engine {row['engine'][-1]:.3f} s, "
                  f"Kale {took:.3f} s", file=sys.stderr, flush=True)
        out[kind] = row
    return out


@dataclass
class DaskAt:
    """The bench's running Dask cluster: its scheduler's address (TLS, as Kale reaches a
    running cluster only over TLS), the process it runs in, and the TLS files (CA, client
    certificate and key) that reach it."""

    address: str
    pid: int
    files: dict[str, str]

    def spec(self) -> dict[str, Any]:
        """Kale's executor spec for it."""
        return {"kind": "dask", "address": self.address, "security": self.files}

    def client(self) -> Any:
        """A Dask client of it (the engine alone's side), over the same TLS."""
        from distributed import Client, Security

        make: Any = Security
        return Client(self.address, security=make(
            require_encryption=True, tls_ca_file=self.files["ca"],
            tls_client_cert=self.files["cert"], tls_client_key=self.files["key"]))


@contextlib.contextmanager
def dask_cluster() -> Iterator[DaskAt]:
    """A LocalCluster (a worker process per core, one thread each) in a process of its
    own, as a cluster Kale is given by address is: its scheduler does not share this
    process's GIL with Kale's engine. Closed when the block ends."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_cluster"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        said = proc.stdout.readline().strip()
        if not said:
            raise RuntimeError(f"the Dask cluster did not start (exit {proc.wait()})")
        doc = json.loads(said)
        yield DaskAt(doc["address"], proc.pid, doc["files"])
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the cluster's process closes it and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_cluster() -> None:
    """``_cluster`` mode: start the LocalCluster over TLS (a throw-away certificate, its
    files in a private temporary folder), print its address and files, close it when
    stdin closes."""
    from distributed import LocalCluster, Security

    security = Security.temporary()
    folder = Path(tempfile.mkdtemp(prefix="kale-bench-tls-"))
    files = {}
    for name, pem in (("ca", security.tls_ca_file), ("cert", security.tls_client_cert),
                      ("key", security.tls_client_key)):
        files[name] = str(folder / f"{name}.pem")
        Path(files[name]).write_text(pem)
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      security=security, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        print(json.dumps({"address": cluster.scheduler_address, "files": files}), flush=True)
        sys.stdin.read()
    for name in files.values():
        Path(name).unlink()
    folder.rmdir()


def dask_alone(client: Any, noop: Any, kind: str, n: int) -> None:
    """``n`` no-op tasks on Dask alone: independent (``client.map``, then gather), or a
    chain (``client.submit(noop, previous)``: Dask resolves each link itself)."""
    from distributed import wait

    if kind == "chain":
        f = client.submit(noop, pure=False)
        for _ in range(n - 1):
            f = client.submit(noop, f, pure=False)
        f.result()
        return
    futures = client.map(noop, range(n), pure=False)
    wait(futures)
    bad = [f for f in futures if f.status != "finished"]
    if bad:
        raise RuntimeError(f"{len(bad)} Dask tasks ended {bad[0].status}")
    client.gather(futures)


def side_dask(sizes: Sizes) -> dict[str, Any]:
    folder = project()
    t0 = time.perf_counter()
    with dask_cluster() as at:
        cluster = time.perf_counter() - t0
        return {"cluster": cluster, **dask_rows(folder, at, sizes)}


def dask_rows(folder: Path, at: DaskAt, sizes: Sizes) -> dict[str, Any]:
    import mod  # type: ignore[import-not-found]

    t0 = time.perf_counter()
    client = at.client()
    connect = time.perf_counter() - t0

    def engine(kind: str, n: int) -> None:
        dask_alone(client, mod.noop, kind, n)

    try:
        first = timed(lambda: client.submit(mod.noop, pure=False).result())
        kale = KaleRows(folder, at.spec())
        kale_first, _ = kale.run(kale.workflow("noop", 1))
        rows = alternate(sizes.plan(), engine, kale)
    finally:
        cleanup = timed(client.close)
    return {"startup": connect, "first": first, "cleanup": cleanup, "kale_first": kale_first,
            "rows": rows}


def side_parsl(sizes: Sizes) -> dict[str, Any]:
    folder = project()
    import cfg  # type: ignore[import-not-found]
    import mod
    import parsl

    t0 = time.perf_counter()
    dfk = parsl.load(cfg.config(str(folder / "parsl-alone")))
    startup = time.perf_counter() - t0
    app = parsl.python_app(mod.noop, data_flow_kernel=dfk)

    def engine(kind: str, n: int) -> None:
        if kind == "chain":
            f = app()
            for _ in range(n - 1):
                f = app(f)
            f.result()
            return
        futures = [app() for _ in range(n)]
        for f in futures:
            f.result()

    try:
        first = timed(lambda: app().result())
        kale = KaleRows(folder, {"kind": "parsl", "config": "cfg:config"})
        kale_first, _ = kale.run(kale.workflow("noop", 1))
        rows = alternate(sizes.plan(), engine, kale)
    finally:
        cleanup = timed(dfk.cleanup)
    return {"startup": startup, "first": first, "cleanup": cleanup, "kale_first": kale_first,
            "rows": rows}


def side(engine: str, quick: bool) -> None:
    sizes = QUICK if quick else FULL
    if os.environ.get("KALE_BENCH_ROUNDS"):
        sizes = dataclasses.replace(sizes, rounds=int(os.environ["KALE_BENCH_ROUNDS"]))
    try:
        doc = (side_dask if engine == "dask" else side_parsl)(sizes)
    except Exception as e:
        import traceback

        traceback.print_exc()
        doc = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.flush()
    print(MARKER + json.dumps(doc), flush=True)


# -- where the time goes -------------------------------------------------------------------
def print_profiles(profiles: list[tuple[str, Any]], top: int) -> None:
    import io
    import pstats

    by_name: dict[str, pstats.Stats] = {}
    for name, prof in profiles:
        group = name.rstrip("0123456789-_")
        if group in by_name:
            by_name[group].add(prof)
        else:
            by_name[group] = pstats.Stats(prof, stream=io.StringIO())
    for group, stats in sorted(by_name.items()):
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        order = os.environ.get("KALE_PROFILE_SORT", "tottime")  # or cumtime
        stats.strip_dirs().sort_stats(order).print_stats(top)
        print(f"===== thread {group} (by {order}) =====\n{buf.getvalue()}")


def worker_side(stream: list[dict[str, Any]], what: str) -> None:
    """Per-task times on the Dask workers, from the client's task stream."""
    spans = [(s["startstops"], s["key"]) for s in stream]
    compute = [ss["stop"] - ss["start"] for sss, _ in spans for ss in sss
               if ss["action"] == "compute"]
    moves = [ss["stop"] - ss["start"] for sss, _ in spans for ss in sss
             if ss["action"] != "compute"]
    if compute:
        print(f"{what}: {len(compute)} tasks; on the worker, compute median "
              f"{statistics.median(compute) * 1000:.2f} ms, total {sum(compute):.2f} s over "
              f"{WORKERS} workers; transfers/other {sum(moves):.2f} s")


class CpuMeter:
    """CPU seconds used by each part of a Dask setup between :meth:`start` and
    :meth:`stop`: this process (Kale's engine and the Dask client), the cluster's process
    (the scheduler), its Dask worker processes (and nannies), and Kale's warm Python
    processes under them. A process that ended in between is not counted."""

    ROLES = ("this process (Kale engine, Dask client)", "Dask scheduler",
             "Dask workers and nannies", "Kale's warm Python processes")

    def __init__(self, cluster_pid: int) -> None:
        import psutil

        self.me, self.cluster = psutil.Process(), psutil.Process(cluster_pid)
        self.before: dict[int, float] = {}

    def _sample(self) -> dict[int, tuple[str, float]]:
        import psutil

        found = {self.me.pid: (self.ROLES[0], self.me), self.cluster.pid:
                 (self.ROLES[1], self.cluster)}
        for child in self.cluster.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                role = 3 if "_pyworker" in " ".join(child.cmdline()) else 2
                found[child.pid] = (self.ROLES[role], child)
        out = {}
        for pid, (role, proc) in found.items():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                out[pid] = (role, t.user + t.system)
        return out

    def start(self) -> None:
        self.before = {pid: cpu for pid, (_, cpu) in self._sample().items()}

    def stop(self) -> dict[str, float]:
        used = dict.fromkeys(self.ROLES, 0.0)
        for pid, (role, cpu) in self._sample().items():
            used[role] += cpu - self.before.get(pid, 0.0)
        return used


def print_cpu(what: str, n: int, took: float, used: dict[str, float]) -> None:
    total = sum(used.values())
    print(f"{what}: {took:.3f} s wall, {total:.2f} CPU-s ({total / n * 1000:.2f} ms per "
          f"task; {WORKERS} cores: at most {WORKERS * took:.2f} CPU-s)")
    for role, cpu in used.items():
        print(f"    {role:42s} {cpu:6.2f} CPU-s  {cpu / n * 1000:6.2f} ms/task")


def profile(engine: str, n: int, top: int) -> None:
    """Where Kale's time goes on ``engine``: see :func:`profile_dask`; on Parsl, Kale's
    process under cProfile (per thread) during an ``n``-task run on the DataFlowKernel a
    first one-task run started and kept (as the timed runs do)."""
    folder = project()
    if engine == "dask":
        with dask_cluster() as at:
            profile_dask(folder, at, n, top)
        return
    if engine == "attempt":
        profile_attempts(folder, n, top)
        return
    kale = KaleRows(folder, {"kind": "parsl", "config": "cfg:config"})
    first, _ = kale.run(kale.workflow("noop", 1))  # starts the DataFlowKernel it keeps
    print(f"first one-task run (starts the DataFlowKernel): {first:.3f} s")
    profiled(kale, kale.workflow("noop", n), top)


def profiled(kale: KaleRows, wf: Any, top: int) -> float:
    """One Kale run under cProfile, every thread apart; prints the profiles."""
    import cProfile

    profiles: list[tuple[str, Any]] = []
    undo = profile_threads(profiles)
    main_prof = cProfile.Profile()
    main_prof.enable()
    try:
        took, in_run = kale.run(wf)
    finally:
        main_prof.disable()
        undo()
    print(f"under cProfile: {took:.3f} s (in-run {in_run:.3f} s)")
    print_profiles([*profiles, ("main", main_prof)], top)
    return took


def context(folder: Path, name: str, run_dir: Path) -> Any:
    """A :class:`TaskContext` of ``mod:noop`` as the engine makes one."""
    from kale import Workflow
    from kale.tasks.base import TaskContext

    task = Workflow("ctx", base_dir=folder).python("mod:noop", name=name)
    run_id = "20261203-000000-abcd"
    return TaskContext(run_id=run_id, task=task, attempt=1, workdir=run_dir / name,
                       stdout_path=run_dir / f"{name}.1.out",
                       stderr_path=run_dir / f"{name}.1.err", base_dir=folder, inputs={},
                       env={"KALE_RUN_ID": run_id, "KALE_TASK": name, "KALE_ATTEMPT": "1"})


def profile_attempts(folder: Path, n: int, top: int) -> None:
    """What a Kale attempt costs on an engine's worker without the engine:
    :func:`run_attempt` called ``n`` times in a row in this process (which drives its
    host's loop) under cProfile, each with a directory of its own, after one warm-up."""
    import cProfile

    from kale.executors.engines.attempt import run_attempt

    profiles: list[tuple[str, Any]] = []
    undo = profile_threads(profiles)
    run_dir = folder / "attempts"
    run_dir.mkdir()
    assert run_attempt(context(folder, "warm", run_dir)).ok
    ctxs = [context(folder, f"t{i}", run_dir) for i in range(n)]
    main_prof = cProfile.Profile()
    main_prof.enable()
    t0 = time.perf_counter()
    for ctx in ctxs:
        run_attempt(ctx)
    took = time.perf_counter() - t0
    main_prof.disable()
    undo()
    print(f"{n} attempts in a row, no engine: {took / n * 1000:.2f} ms each (under "
          "cProfile)")
    print_profiles([*profiles, ("main", main_prof)], top)


def parts(client: Any, mod: Any, kale: KaleRows, n: int) -> None:
    """Dask alone with two of what a Kale attempt adds, one at a time: the attempt's
    :class:`TaskContext` as the no-op's argument (pickled, sent, unpickled), and the
    ``kale-started`` event (a worker event the client subscribes to)."""
    import pickle

    ctx = context(kale.folder, "t0", kale.folder / "ctx-run")

    size = len(pickle.dumps(ctx))
    with_ctx = timed(lambda: client.gather(
        [client.submit(mod.noop, ctx, pure=False) for _ in range(n)]))
    one_by_one = timed(lambda: client.gather(
        [client.submit(mod.noop, pure=False) for _ in range(n)]))
    seen: list[Any] = []
    client.subscribe_topic("bench-started", seen.append)
    with_event = timed(lambda: client.gather(
        [client.submit(mod.started, pure=False) for _ in range(n)]))
    client.unsubscribe_topic("bench-started")
    print(f"Dask alone, {n} no-ops submitted one by one: {one_by_one:.3f} s; with a "
          f"TaskContext argument ({size} bytes pickled): {with_ctx:.3f} s; each with a "
          f"worker event to a subscribed client: {with_event:.3f} s")


def profile_dask(folder: Path, at: DaskAt, n: int, top: int) -> None:
    """Dask alone and Kale on Dask, ``n`` no-op tasks each: the CPU each process used,
    the per-task time on the workers (Dask's task stream); a 200-hop chain driven from
    the client (one round trip per hop, as Kale drives its DAG) against Dask's own and
    Kale's; then Kale's process under cProfile."""
    import mod
    from distributed import get_task_stream

    client = at.client()
    meter = CpuMeter(at.pid)
    try:
        kale = KaleRows(folder, at.spec())
        kale.run(kale.workflow("noop", 1))
        client.submit(mod.noop, pure=False).result()
        meter.start()
        with get_task_stream(client) as alone:
            took = timed(lambda: client.gather(client.map(mod.noop, range(n), pure=False)))
        print_cpu(f"Dask alone, {n} no-op tasks", n, took, meter.stop())
        worker_side(alone.data, "    on the workers")
        wf = kale.workflow("noop", n)
        meter.start()
        with get_task_stream(client) as stream:
            took, in_run = kale.run(wf)
        print_cpu(f"Kale on Dask, {n} no-op tasks (in-run {in_run:.3f} s)", n, took,
                  meter.stop())
        worker_side([s for s in stream.data if str(s["key"]).startswith("kale-")],
                    "    on the workers")

        parts(client, mod, kale, n)

        def driven(hops: int) -> None:
            for _ in range(hops):
                client.submit(mod.noop, pure=False).result()

        hops = 200
        own = timed(lambda: dask_alone(client, mod.noop, "chain", hops))
        by_client = timed(lambda: driven(hops))
        by_kale = kale.run(kale.workflow("chain", hops))[0]
        print(f"chain of {hops}, ms/hop: Dask's own {own / hops * 1000:.2f}; driven from the "
              f"client {by_client / hops * 1000:.2f}; Kale {by_kale / hops * 1000:.2f}")
        profiled(kale, wf, top)
    finally:
        client.close()


# -- the driver -----------------------------------------------------------------------------
def run_side(engine: str, quick: bool, timeout: float) -> dict[str, Any]:
    """One side in a fresh process (its own session and TMPDIR); its progress goes to our
    stderr; whatever it leaves running is killed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_side", engine,
           *(["--quick"] if quick else [])]
    with tempfile.TemporaryDirectory(prefix="kale-bench-", ignore_cleanup_errors=True) as tmp:
        proc = subprocess.Popen(cmd, cwd=tmp, env={**os.environ, "TMPDIR": tmp},
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout:g} s"}
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            doc: dict[str, Any] = json.loads(line[len(MARKER):])
            return doc
    return {"error": f"exit code {proc.returncode}, no result"}


LABELS = {"dask": ("Dask alone", "Kale on Dask"), "parsl": ("Parsl alone", "Kale on Parsl")}
WHAT = {"noop": "independent no-op tasks", "chain": "a chain of dependent no-op tasks",
        "scale": "independent no-op tasks (scaling)"}


def rate(kind: str, n: int, seconds: float) -> str:
    if kind == "chain":
        return f"{seconds / n * 1000:.2f} ms/hop"
    return f"{n / seconds:,.0f} tasks/s"


def workload_table(kind: str, sides: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| system | n | runs (s) | median (s) | rate | Kale in-run (s) | Kale / engine |",
            "|---|---:|---|---:|---:|---:|---:|"]
    for engine, doc in sides.items():
        alone, kale = LABELS[engine]
        if "error" in doc:
            rows.append(f"| {alone} / {kale} | | {doc['error']} | | | | |")
            continue
        if kind not in doc["rows"]:
            continue
        row = doc["rows"][kind]
        n, med = row["n"], {k: statistics.median(row[k]) for k in ("engine", "kale")}
        ratio = statistics.median(k / e for k, e in zip(row["kale"], row["engine"],
                                                        strict=True))
        for label, key in ((alone, "engine"), (kale, "kale")):
            runs = ", ".join(f"{t:.3f}" for t in row[key])
            in_run = f"{statistics.median(row['in_run']):.3f}" if key == "kale" else ""
            if key == "kale" and row.get("unstarted"):
                in_run += f" ({row['unstarted']:,} tasks without a start time)"
            rows.append(f"| {label} | {n:,} | {runs} | {med[key]:.3f} | "
                        f"{rate(kind, n, med[key])} | {in_run} | "
                        f"{f'**{ratio:.2f}x**' if key == 'kale' else ''} |")
    return rows


def startup_table(sides: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| engine | start-up (s) | first task (s) | clean-up (s) | "
            "Kale's first one-task run (s) |", "|---|---|---:|---:|---:|"]
    for engine, doc in sides.items():
        if "error" in doc:
            continue
        start = (f"{doc['cluster']:.3f} (the cluster's process); {doc['startup']:.3f} (a "
                 "client connecting)" if engine == "dask" else
                 f"{doc['startup']:.3f} (`parsl.load`)")
        rows.append(f"| {engine} | {start} | {doc['first']:.3f} | {doc['cleanup']:.3f} | "
                    f"{doc['kale_first']:.3f} |")
    return rows


def goal_lines(sides: dict[str, dict[str, Any]], quick: bool) -> list[str]:
    lines = []
    for engine, doc in sides.items():
        if "error" in doc:
            lines.append(f"- {LABELS[engine][1]}: no result ({doc['error']})")
            continue
        if "noop" not in doc["rows"]:
            continue
        row = doc["rows"]["noop"]
        ratio = statistics.median(k / e for k, e in zip(row["kale"], row["engine"],
                                                        strict=True))
        met = "met" if ratio <= GOAL else "NOT met"
        lines.append(f"- {LABELS[engine][1]}, {row['n']:,} no-op tasks: {ratio:.2f}x the "
                     f"engine alone's time: goal (at most {GOAL}x) **{met}**"
                     + (" (quick sizes: start-up weighs more; the goal is for 1,000)"
                        if quick else ""))
    return lines


def report(sides: dict[str, dict[str, Any]], quick: bool, wall: float) -> str:
    from environment import describe, load_average

    head = [f"### Kale on Dask and Parsl vs the engines alone "
            f"({'quick' if quick else 'full'} sizes)", ""]
    head += [f"- {k}: {v}" for k, v in describe(BENCH.parent)]
    head += [f"- load average at the end: {load_average()}",
             f"- workers: {WORKERS} (one per core) on every system",
             "- command: " + " ".join(["python bench/engines.py", *sys.argv[1:]]),
             f"- bench wall time: {wall:.0f} s", ""]
    body = ["Goal (issue 16): Kale within 1.5x of the engine alone for 1,000 no-op tasks.",
            "", *goal_lines(sides, quick), "", "Start-up (in no timed run: the engine alone "
            "is started once; Kale's first one-task run starts what its later runs use, a "
            "Dask client each run, the Parsl DataFlowKernel once):", "",
            *startup_table(sides)]
    kinds = {kind for doc in sides.values() for kind in doc.get("rows", {})}
    for kind in [k for k in ("noop", "chain", "scale") if k in kinds]:
        body += ["", f"{WHAT[kind]}; Kale / engine: the median of each round's ratio", "",
                 *workload_table(kind, sides)]
    return "\n".join(head + body) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["_cluster"]:
        serve_cluster()
        return
    if sys.argv[1:2] == ["_side"]:
        side(sys.argv[2], "--quick" in sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    p.add_argument("--profile", choices=["dask", "parsl", "attempt"],
                   help="instead: Kale on this engine under cProfile, per thread")
    p.add_argument("--n", type=int, default=1000, help="tasks of the --profile run")
    p.add_argument("--top", type=int, default=25, help="functions per thread (--profile)")
    p.add_argument("--only", default="", help="workloads to run, comma-separated (noop, "
                   "chain, scale; default all); results are then printed, not written")
    p.add_argument("--engines", default="dask,parsl", help="sides to run (default both)")
    p.add_argument("--rounds", type=int, help="timed rounds per workload (default 3, "
                   "quick 1)")
    args = p.parse_args()
    os.environ["KALE_BENCH_ONLY"] = args.only
    if args.rounds:
        os.environ["KALE_BENCH_ROUNDS"] = str(args.rounds)
    if args.profile:
        profile(args.profile, args.n, args.top)
        return
    t0 = time.perf_counter()
    sides = {}
    for engine in [e for e in args.engines.split(",") if e]:
        print(f"[{engine}]", file=sys.stderr, flush=True)
        sides[engine] = run_side(engine, args.quick, 120 if args.quick else 1800)
    text = report(sides, args.quick, time.perf_counter() - t0)
    print(text)
    if not args.quick and not args.only and args.engines == "dask,parsl":
        (BENCH / "results").mkdir(exist_ok=True)
        (BENCH / "results" / "engines.txt").write_text(text)
        print(f"written to {BENCH / 'results' / 'engines.txt'}", file=sys.stderr)
    if any("error" in doc for doc in sides.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()

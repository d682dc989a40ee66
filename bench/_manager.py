"""Kale's manager service: ``python bench/_manager.py CASE --n N --root DIR [options]``.

Every case runs real processes: ``kale manager start`` (the CLI, in a subprocess) in a fresh
Kale home under ``DIR`` (tmpfs when the machine has one), the local ``kale worker``
processes it starts, and clients talking HTTP to it. The manager is always stopped (``kale
manager stop``) and every process left with that home (workers the manager no longer
knows, their task processes) killed at the end; ``bench/run.py`` calls :func:`reap` again
on ``DIR`` after the script exits, whatever happened to it.

Cases:

``throughput``  N independent no-op Python tasks (``noops:noop``, as in scenario 1) through
                the manager and 2 workers, submitted with ``kale.Client``; meanwhile
                ``--pollers`` threads (own ``httpx.Client`` each) poll
                ``GET /api/runs/{id}?tasks=false`` every 50 ms and time each request.
``memory``      one run of N no-op tasks; the manager's RSS (psutil) before the submit
                (after a 100-task warm-up run), at the end of the run, at its peak, and
                a few seconds later.
``lost``        one ``sleep 30`` task with ``retries=1`` on ``--workers 2 --worker-slots 1
                --heartbeat-timeout T``; its worker is SIGKILLed once it runs: seconds from
                the kill until the task's second attempt is dispatched.
``resume``      N ``sleep 1`` shell tasks on 2 workers; the manager is SIGKILLed a third of
                the way in and started again on the same port: seconds until ``/health``
                answers, until a task succeeds again, until the run has succeeded; and
                whether any task ran twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
POLL_EVERY = 0.05  # seconds between a poller's response and its next request
POLL_NONE = 0.1  # how often the one client polls in a "no pollers" run


# -- processes ---------------------------------------------------------------------------
def reap(root: str | Path) -> list[int]:
    """SIGKILL every process of this user whose Kale home lies under ``root`` (by its
    ``KALE_HOME`` environment or its command line): the manager, its workers, their task
    processes. Returns the pids killed."""
    import psutil

    root = str(root)
    me = os.getpid()
    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.info["pid"] == me:
            continue
        try:
            home = proc.environ().get("KALE_HOME", "")
            cmd = " ".join(proc.info["cmdline"] or ())
        except (psutil.Error, OSError):
            continue
        if home.startswith(root) or root in cmd:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(proc.info["pid"])
    return killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def kale_cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``kale ARGS`` (``python -m kale.cli.main``) with ``KALE_HOME=home``."""
    return subprocess.run([sys.executable, "-m", "kale.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, check=True,
                          env={**os.environ, "KALE_HOME": str(home)})


def start_args(port: int, workers: int = 2, slots: int | None = None,
               heartbeat: float | None = None) -> list[str]:
    args = ["manager", "start", "--port", str(port), "--workers", str(workers)]
    if slots:
        args += ["--worker-slots", str(slots)]
    if heartbeat is not None:
        args += ["--heartbeat-timeout", f"{heartbeat:g}"]
    return args


class Manager:
    """One manager in its own home: started by the CLI, always stopped and reaped."""

    def __init__(self, root: Path, *, workers: int = 2, slots: int | None = None,
                 heartbeat: float | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="home-", dir=root))
        self.port = free_port()
        self.args = start_args(self.port, workers, slots, heartbeat)
        self.url = f"https://127.0.0.1:{self.port}"
        self.startup = 0.0

    def start(self) -> Manager:
        t0 = time.perf_counter()
        kale_cli(self.home, *self.args)
        self.startup = time.perf_counter() - t0
        return self

    @property
    def pid(self) -> int:
        pid: int = json.loads((self.home / "manager.json").read_text())["pid"]
        return pid

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def http(self, timeout: float = 30.0, socket: str = "manager.sock") -> Any:
        """A client of one of the manager's Unix sockets (what local clients use: no TLS):
        ``manager.sock``, or ``status.sock``, its status line."""
        import httpx

        transport = httpx.HTTPTransport(uds=str(self.home / socket))
        return httpx.Client(base_url="http://kale", timeout=timeout, transport=transport,
                            headers={"Authorization": f"Bearer {self.token}"})

    def client(self) -> Any:
        import kale

        return kale.Client(home=self.home, timeout=120)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            kale_cli(self.home, "manager", "stop", timeout=30)
        reap(self.home)


@contextlib.contextmanager
def manager(root: Path, **options: Any) -> Iterator[Manager]:
    m = Manager(root, **options)
    try:
        yield m.start()
    finally:
        m.stop()


# -- workflows -----------------------------------------------------------------------------
def noop_wf(n: int, name: str = "bench-manager") -> Any:
    """N independent no-op Python tasks, built exactly as scenario 1 builds them."""
    from kale import Workflow
    from noops import noop

    wf = Workflow(name, base_dir=BENCH)
    for i in range(n):
        wf.python(noop, name=f"t{i}")
    return wf


def counts(http: Any, run_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = http.get(f"/api/runs/{run_id}", params={"tasks": "false"}).json()
    return doc


def wait_until(what: str, check: Callable[[], Any], timeout: float,
               every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something true; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


def wait_run(m: Manager, run_id: str, timeout: float, every: float = 0.05) -> dict[str, Any]:
    with m.http() as http:
        doc: dict[str, Any] = wait_until(
            f"run {run_id}", lambda: (d := counts(http, run_id))["run"]["state"] in TERMINAL
            and d, timeout, every)
    if doc["run"]["state"] != "SUCCEEDED":
        raise RuntimeError(f"run {run_id} {doc['run']['state']}: {doc['run'].get('message')}")
    return doc


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# -- cases ---------------------------------------------------------------------------------
class Pollers:
    """``n`` threads, each with its own HTTP client, polling a run's counts every 50 ms
    until they see it end; every request's latency is kept. They poll the manager's
    status line, ``status.sock``, as ``kale.Client`` does on the manager's host; with
    ``sockets``, poller ``i`` polls ``sockets[i % len(sockets)]`` (``manager.sock``: the
    server's own loop, as before the status line)."""

    def __init__(self, m: Manager, run_id: str, n: int, deadline: float,
                 sockets: tuple[str, ...] = ("status.sock",)) -> None:
        self.m, self.run_id, self.deadline, self.sockets = m, run_id, deadline, sockets
        self.latencies: list[list[float]] = [[] for _ in range(n)]
        self.errors: list[str] = []
        self.ended = threading.Event()
        self.ended_at: float | None = None   # perf_counter when a poller first saw the end
        self.threads = [threading.Thread(target=self._poll, args=(i,), daemon=True)
                        for i in range(n)]

    def start(self) -> Pollers:
        for t in self.threads:
            t.start()
        return self

    def _poll(self, i: int) -> None:
        time.sleep(POLL_EVERY * i / max(1, len(self.threads)))  # spread them out
        lat = self.latencies[i]
        with self.m.http(timeout=10, socket=self.sockets[i % len(self.sockets)]) as http:
            while not self.ended.is_set() and time.monotonic() < self.deadline:
                t0 = time.perf_counter()
                try:
                    r = http.get(f"/api/runs/{self.run_id}", params={"tasks": "false"})
                    state = r.json()["run"]["state"]
                except Exception as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                    time.sleep(POLL_EVERY)
                    continue
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                if state in TERMINAL:
                    if self.ended_at is None or t1 < self.ended_at:
                        self.ended_at = t1
                    self.ended.set()
                    return
                time.sleep(POLL_EVERY)

    def join(self) -> None:
        for t in self.threads:
            t.join(max(0.1, self.deadline - time.monotonic() + 15))

    def wait_end(self, since: float) -> float:
        """Seconds from ``since`` (a perf_counter) until a poller first saw the run end;
        the pollers are joined. TimeoutError if the deadline passes first."""
        if not self.ended.wait(max(0.0, self.deadline - time.monotonic())):
            raise TimeoutError(f"run {self.run_id}: not over by the deadline")
        assert self.ended_at is not None
        self.join()
        return self.ended_at - since

    def figures(self) -> dict[str, Any]:
        """The pollers' requests: how many, errors, latency p50 and p99 in ms; with more
        than one socket, the same per socket (``by_socket``)."""
        def of(lat: list[float]) -> dict[str, Any]:
            return {"requests": len(lat), "p50_ms": 1000 * pct(lat, 50),
                    "p99_ms": 1000 * pct(lat, 99)}

        out = {**of([x for per in self.latencies for x in per]), "errors": len(self.errors)}
        k = len(self.sockets)
        if k > 1:
            out["by_socket"] = {sock: of([x for per in self.latencies[j::k] for x in per])
                                for j, sock in enumerate(self.sockets)}
        return out


class ProcPollers(Pollers):
    """:class:`Pollers` in processes of their own (``_poller.py``), as separate clients
    are (a progress bar, a dashboard, ``kale status``): none waits for another's
    interpreter. Started before the run is submitted (so that their start-up is not
    counted in it), told its id by :meth:`begin`."""

    def __init__(self, m: Manager, n: int, deadline: float,
                 sockets: tuple[str, ...] = ("status.sock",)) -> None:
        super().__init__(m, "", 0, deadline, sockets)
        self.latencies = [[] for _ in range(n)]
        env = {**os.environ, "KALE_TOKEN": m.token}
        self.procs = [subprocess.Popen(
            [sys.executable, str(BENCH / "_poller.py"), str(m.home / sockets[i % len(sockets)]),
             str(POLL_EVERY), str(deadline), str(POLL_EVERY * i / n)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
            for i in range(n)]
        for p in self.procs:  # started up: their imports are not counted in the run
            assert p.stdout is not None
            p.stdout.readline()

    def begin(self, run_id: str) -> ProcPollers:
        self.run_id = run_id
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(run_id + "\n")
            p.stdin.close()
        return self

    def wait_end(self, since: float) -> float:
        ends = []
        for i, p in enumerate(self.procs):
            assert p.stdout is not None
            doc = json.loads(p.stdout.read())  # the poller ends at the run's end or deadline
            p.wait()
            self.latencies[i] = doc["latencies"]
            self.errors += doc["errors"]
            if doc["ended_at"] is not None:
                ends.append(doc["ended_at"])
        if not ends:
            raise TimeoutError(f"run {self.run_id}: not over by the deadline")
        return min(ends) - since

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def throughput(root: Path, n: int, slots: int | None, pollers: int,
               timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with manager(root, workers=2, slots=slots) as m:
        client = m.client()
        # Warm-up: the manager starts its workers on the first submit.
        t0 = time.perf_counter()
        wait_run(m, client.submit(noop_wf(100, "warm-up")).id, timeout / 4)
        warmup = time.perf_counter() - t0
        wf = noop_wf(n)
        wall0, t0 = time.time(), time.perf_counter()
        run = client.submit(wf)
        submitted = time.perf_counter() - t0
        polls = Pollers(m, run.id, pollers, deadline).start() if pollers else None
        if polls is not None:
            elapsed = polls.wait_end(t0)
            doc = wait_run(m, run.id, 10)
        else:
            doc = wait_run(m, run.id, max(1.0, deadline - time.monotonic()), every=POLL_NONE)
            elapsed = time.perf_counter() - t0
        rec = doc["run"]
        out: dict[str, Any] = {
            "n": n, "slots": slots, "pollers": pollers, "seconds": elapsed,
            "tasks_per_s": n / elapsed, "submit_s": submitted,
            "to_ended_at_s": rec["ended_at"] - wall0, "warmup_s": warmup,
            "manager_start_s": m.startup, "workers": client.workers()}
        if polls is not None:
            lat = [x for per in polls.latencies for x in per]
            out.update(polls.figures(), error_sample=polls.errors[:3], max_ms=1000 * max(lat),
                       mean_ms=1000 * statistics.fmean(lat),
                       requests_per_s=len(lat) / elapsed)
        client.close()
        return out


def memory(root: Path, n: int, timeout: float) -> dict[str, Any]:
    import psutil

    deadline = time.monotonic() + timeout
    with manager(root, workers=2) as m:
        client = m.client()
        proc = psutil.Process(m.pid)
        start_rss = proc.memory_info().rss
        wait_run(m, client.submit(noop_wf(100, "warm-up")).id, 60)
        t0 = time.perf_counter()
        wf = noop_wf(n)
        build = time.perf_counter() - t0
        samples = []
        for _ in range(5):
            time.sleep(0.2)
            samples.append(proc.memory_info().rss)
        before = min(samples)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        run = client.submit(wf)
        submitted = time.perf_counter() - t0
        with m.http() as http:
            while True:
                doc = counts(http, run.id)
                if doc["run"]["state"] in TERMINAL:
                    end = proc.memory_info().rss
                    elapsed = time.perf_counter() - t0
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run.id}: not over within {timeout:g} s "
                                       f"({doc['counts']})")
                # Not too often: each status request of a big run costs the manager
                # ~5 ms of CPU per 10,000 tasks (it decodes the run's whole spec).
                time.sleep(0.25)
        done.set()
        sampler.join()
        if doc["run"]["state"] != "SUCCEEDED":
            raise RuntimeError(f"run {run.id} {doc['run']['state']}")
        peak[0] = max(peak[0], end)
        time.sleep(3.0)
        later = proc.memory_info().rss
        workers = [w for w in client.workers() if w.get("pid")]
        worker_rss = []
        for w in workers:
            with contextlib.suppress(psutil.Error):
                worker_rss.append(psutil.Process(w["pid"]).memory_info().rss)
        client.close()
        kb = 1024
        return {"n": n, "seconds": elapsed, "tasks_per_s": n / elapsed, "submit_s": submitted,
                "build_s": build, "rss_start_mb": start_rss / kb**2,
                "rss_before_mb": before / kb**2, "rss_end_mb": end / kb**2,
                "rss_peak_mb": peak[0] / kb**2, "rss_later_mb": later / kb**2,
                "kb_per_task_end": (end - before) / kb / n,
                "kb_per_task_peak": (peak[0] - before) / kb / n,
                "kb_per_task_later": (later - before) / kb / n,
                "worker_rss_mb": [r / kb**2 for r in worker_rss]}


def lost(root: Path, heartbeat: float, timeout: float) -> dict[str, Any]:
    from kale import Workflow

    wf = Workflow("bench-lost", base_dir=BENCH)
    # retry_delay=0: the time measured is the detection, not the task's retry policy.
    wf.shell("sleeper", "sleep 30", retries=1, retry_delay=0)
    with manager(root, workers=2, slots=1, heartbeat=heartbeat) as m, m.http() as http:
        client = m.client()
        run = client.submit(wf)

        def task() -> dict[str, Any]:
            doc: dict[str, Any] = http.get(f"/api/runs/{run.id}").json()["tasks"][0]
            return doc

        wait_until("task RUNNING", lambda: task()["state"] == "RUNNING", 30)
        info = json.loads(kale_cli(m.home, "status", run.id, "sleeper", "--json").stdout)
        wid = info["attempts"][-1]["worker"]
        workers = {w["id"]: w for w in client.workers()}
        pid = workers[wid]["pid"]
        wall_kill, t_kill = time.time(), time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        t = wait_until("second attempt", lambda: (d := task())["attempts"] >= 2 and d,
                       heartbeat + timeout, every=0.02)
        detected = time.perf_counter() - t_kill
        attempts = json.loads(kale_cli(m.home, "status", run.id, "sleeper",
                                       "--json").stdout)["attempts"]
        first_end = attempts[0].get("ended_at")
        with contextlib.suppress(Exception):
            client.cancel(run.id)
        client.close()
        return {"heartbeat": heartbeat, "seconds": detected, "state": t["state"],
                "attempt1_ended_after_s": first_end - wall_kill if first_end else None,
                "attempt1_error": attempts[0].get("error"),
                "attempt2_worker": attempts[-1].get("worker"), "killed_worker": wid}


def resume(root: Path, n: int, timeout: float) -> dict[str, Any]:
    import httpx

    from kale import Workflow

    wf = Workflow("bench-resume", base_dir=BENCH)
    for i in range(n):
        wf.shell(f"s{i}", "sleep 1")
    deadline = time.monotonic() + timeout
    with manager(root, workers=2) as m, m.http() as http:
        client = m.client()
        t_submit = time.perf_counter()
        run = client.submit(wf)
        client.close()
        wait_until("a third of the tasks done", lambda: counts(http, run.id)["counts"].get(
            "SUCCEEDED", 0) >= n // 3, timeout / 2, every=0.05)
        pid = m.pid
        t_kill = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        kill_at = t_kill - t_submit
        with contextlib.suppress(TimeoutError):
            wait_until("the manager to die", lambda: not _alive(pid), 10, every=0.005)
        done_before = _store_counts(m.home, run.id).get("SUCCEEDED", 0)
        # Straight away: start it again on the same port (the CLI returns once healthy).
        starter = subprocess.Popen(
            [sys.executable, "-m", "kale.cli.main", *m.args], env={
                **os.environ, "KALE_HOME": str(m.home)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

        def healthy() -> bool:
            try:
                with m.http(timeout=0.5) as http:
                    return bool(http.get("/health").status_code == 200)
            except httpx.HTTPError:
                return False

        wait_until("/health", healthy, 60, every=0.01)
        t_health = time.perf_counter() - t_kill
        try:
            starter.wait(60)
        except subprocess.TimeoutExpired:
            starter.kill()
        t_cli = time.perf_counter() - t_kill
        if starter.returncode:
            raise RuntimeError(f"kale manager start: {starter.communicate()[1][-300:]}")
        with m.http() as http2:
            def progress() -> bool:
                try:
                    doc = counts(http2, run.id)
                    state, done = doc["run"]["state"], doc["counts"].get("SUCCEEDED", 0)
                except (httpx.HTTPError, KeyError, ValueError):
                    return False
                if state in TERMINAL and state != "SUCCEEDED":
                    raise RuntimeError(f"run {run.id} {state} after the restart: "
                                       f"{doc['run'].get('message')}")
                return bool(done > done_before)

            wait_until("progress after the restart", progress, 60, every=0.02)
            t_progress = time.perf_counter() - t_kill
            wait_run(m, run.id, max(1.0, deadline - time.monotonic()))
            t_done = time.perf_counter() - t_kill
            tasks = http2.get(f"/api/runs/{run.id}").json()["tasks"]
            workers = http2.get("/api/workers").json()
        attempts = [t["attempts"] for t in tasks]
        return {"n": n, "killed_after_s": kill_at, "succeeded_at_kill": done_before,
                "health_s": t_health, "cli_start_s": t_cli, "progress_s": t_progress,
                "done_s": t_done, "total_s": time.perf_counter() - t_submit,
                "max_attempts": max(attempts),
                "tasks_over_1_attempt": sum(1 for a in attempts if a > 1),
                "states": sorted({t["state"] for t in tasks}),
                "workers_after": [{k: w[k] for k in ("id", "state", "connected")}
                                  for w in workers]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][:1] != "Z"  # a zombie is dead
    return True


def _store_counts(home: Path, run_id: str) -> dict[str, int]:
    """The run's committed task counts, read from its store directly."""
    from kale.client.local import open_store

    store, _ = open_store(home)
    try:
        return store.task_counts(run_id)
    finally:
        with contextlib.suppress(Exception):
            store.close()


def run() -> dict[str, Any]:
    from _common import parse_args

    args = parse_args(["throughput", "memory", "lost", "resume"],
                      ("--root", {"required": True, "help": "folder for the Kale homes"}),
                      ("--slots", {"type": int, "default": None}),
                      ("--pollers", {"type": int, "default": 20}),
                      ("--heartbeat", {"type": float, "default": 15.0}),
                      ("--timeout", {"type": float, "default": 600.0,
                                     "help": "seconds this case may take"}))
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.scenario == "throughput":
            return throughput(root, args.n, args.slots, args.pollers, args.timeout)
        if args.scenario == "memory":
            return memory(root, args.n, args.timeout)
        if args.scenario == "lost":
            return lost(root, args.heartbeat, args.timeout)
        return resume(root, args.n, args.timeout)
    finally:
        reap(root)


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    from _common import main

    main(run)

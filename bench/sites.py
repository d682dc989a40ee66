"""Kale through an SSH site against Kale on the site itself, side by side in one run.

    python bench/sites.py            # full sizes (~10 min) -> bench/results/sites.txt
    python bench/sites.py --quick    # small sizes, CI smoke (~2 min); prints only

The site is the test site (``scripts/services/sshd.sh`` and ``users.sh``): the second OS
user ``kale-other`` over the local sshd, alias ``kale-site-test`` (the alias is read from
test-output/ssh-site.host). This side gets a fresh Kale home with the site ``hpc``; the
site gets a fresh Kale home ``~/kale-bench-XXXX``, whose manager is stopped and which is
removed at the end, as the master connection is closed.

``latency``  a one-task workflow (``sleep 2``), submitted and followed until it ends:
             - through the site: ``kale run wf.yaml --site hpc --detach --force``, then
               ``kale status RUN --site hpc --json`` until the run ends (CLI), or
               ``wf.run(site="hpc")`` and ``run.status()`` (Python);
             - on the site: the same done by the site's user at the site, against the same
               manager: ``kale run wf.yaml --detach --force --home H`` and ``kale status``
               (CLI), ``wf.run(home=H, manager=True)`` and ``run.status()`` (Python). This
               script ships itself over ssh and times these there (``agent`` mode), so no
               ssh time is counted on that side.
             Per round: seconds until the run's id is in hand (``submit``), until the task
             started (the manager's ``started_at``, same clock here), until a status poll saw
             it RUNNING (``seen``); every status call's seconds. Cold rounds start with the
             site's manager stopped (and, through the site, the master connection closed);
             at the site the CLI's cold round is ``kale manager start`` + ``kale run``.
``transfer`` many small files and a few big ones: ``Site.stage(dir)`` (the staging path:
             ``mkdir`` over the master, then ``rsync -a --delete`` with the staging
             excludes over it) vs plain ``rsync -a`` over a fresh ssh connection each time
             (no multiplexing) and over the same master; the first copy (nothing there) and
             the re-copy (nothing changed); ``sync`` at the site before each first copy.
             MiB/s are of the directory's size.
``breakdown`` the steps of a warm submit through the site, each timed alone.

No timing is asserted; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PYTHON = os.path.realpath(sys.executable)
WORKFLOW = 'name: bench-site\ntasks:\n  first:\n    shell: "sleep 2"\n'
LATER = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT")
ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT")
ROUND_TIMEOUT = 120.0
POLL = 0.05  # seconds between status calls, whatever a call takes


# -- one round, on either side ----------------------------------------------------------
def follow(status: Callable[[], dict[str, Any]], t0: float, p0: float,
           submit: float) -> dict[str, Any]:
    """Poll ``status`` until the run ends: the round's times (``t0``: wall clock at submit,
    ``p0``: perf_counter at submit, ``submit``: seconds until the id was in hand)."""
    seen, calls = None, []
    deadline = p0 + ROUND_TIMEOUT
    while True:
        c0 = time.perf_counter()
        doc = status()
        calls.append(time.perf_counter() - c0)
        task = doc["tasks"][0]
        if seen is None and task["state"] in LATER:
            seen = time.perf_counter() - p0
        if doc["run"]["state"] in ENDED:
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"run {doc['run']['id']} did not end: {doc['run']['state']}")
        time.sleep(POLL)
    if doc["run"]["state"] != "SUCCEEDED":
        raise RuntimeError(f"run {doc['run']['id']}: {doc['run']['state']}")
    return {"submit": submit, "started": task["started_at"] - t0, "seen": seen,
            "status": calls}


def kale_cli(args: list[str], env: dict[str, str] | None = None,
             cwd: str | None = None) -> str:
    """``kale ARGS`` in a fresh process (this Python); its stdout."""
    done = subprocess.run([PYTHON, "-m", "kale.cli.main", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=ROUND_TIMEOUT,
                          stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"kale {' '.join(args)}: exit {done.returncode}: "
                           f"{done.stderr[-800:]}")
    return done.stdout


def cli_round(run_args: list[str], status_args: list[str], *, pre: list[list[str]],
              env: dict[str, str] | None, cwd: str) -> dict[str, Any]:
    """``kale run ... --detach`` (after the ``pre`` commands, timed with it), then
    ``kale status RUN ... --json`` until the run ends."""
    t0, p0 = time.time(), time.perf_counter()
    for args in pre:
        kale_cli(args, env, cwd)
    run_id = kale_cli(run_args, env, cwd).strip().splitlines()[-1]
    submit = time.perf_counter() - p0
    return follow(lambda: json.loads(kale_cli(["status", run_id, *status_args], env, cwd)),
                  t0, p0, submit)


def api_round(start: Callable[[], Any]) -> dict[str, Any]:
    """``start()`` (a ``wf.run(...)``: a :class:`kale.Run`), then ``run.status()`` until
    the run ends."""
    t0, p0 = time.time(), time.perf_counter()
    run = start()
    submit = time.perf_counter() - p0
    try:
        return follow(run.status, t0, p0, submit)
    finally:
        run.close()


def agent(argv: list[str]) -> None:
    """At the site, as its user (``python - agent ...`` with this file on stdin): one
    round against the manager of ``--home``; prints the round's JSON."""
    p = argparse.ArgumentParser(prog="sites.py agent")
    p.add_argument("--home", required=True)
    p.add_argument("--mode", choices=("cli", "api"), required=True)
    p.add_argument("--cold", action="store_true")
    args = p.parse_args(argv)
    project = Path(args.home) / "bench-project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "wf.yaml").write_text(WORKFLOW)
    home = ["--home", args.home]
    if args.mode == "cli":
        pre = [["manager", "start", *home]] if args.cold else []
        doc = cli_round(["run", "wf.yaml", "--detach", "--force", *home], ["--json", *home],
                        pre=pre, env=None, cwd=str(project))
    else:
        from kale import Workflow

        wf = Workflow.from_yaml(project / "wf.yaml")
        doc = api_round(lambda: wf.run(home=args.home, manager=True, force=True))
    print(json.dumps(doc), flush=True)


# -- this side: the site, and what is run at it -----------------------------------------
class Bench:
    """The site ``hpc`` of a fresh local Kale home (``local``), with a fresh Kale home at
    the site (``remote``: its absolute path there). Invariant: :meth:`cleanup` stops the
    remote home's manager, removes it and closes the master, whatever happened."""

    def __init__(self, host: str, scratch: Path) -> None:
        from kale.sites import registry
        from kale.sites.registry import SiteConfig

        self.host, self.scratch = host, scratch
        self.local = scratch / "home"
        self.project = scratch / "project"
        self.project.mkdir(parents=True)
        (self.project / "wf.yaml").write_text(WORKFLOW)
        name = f"kale-bench-{secrets.token_hex(4)}"
        self.remote = self.plain(f"echo ~/{name}").strip()
        # An ssh option that changes nothing but the master's socket name: the master is
        # shared by every site (and Kale home) of this user with the same destination,
        # port and options, so a test run at the same time that closes or kills its
        # master would close ours mid-round.
        self.config = SiteConfig(name="hpc", url=f"ssh://{host}", home=self.remote,
                                 python=PYTHON, options=("ConnectionAttempts=1",))
        registry.save(self.config, self.local)
        self.env = {**os.environ, "KALE_HOME": str(self.local)}

    def plain(self, command: str, stdin: str | None = None, timeout: float = 300) -> str:
        """``command`` (shell text written here) at the site as its user, over a plain ssh
        connection of its own; its stdout."""
        done = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ControlMaster=no",
                               "-o", "ControlPath=none", self.host, command], input=stdin,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
        if done.returncode:
            raise RuntimeError(f"at the site: {command}: exit {done.returncode}: "
                               f"{done.stderr[-800:]}")
        return done.stdout

    def site(self) -> Any:
        from kale.sites.site import Site

        return Site(self.config)

    def stop_manager(self) -> None:
        self.plain(f"{PYTHON} -m kale.cli.main manager stop --home {self.remote}")

    def at_site(self, mode: str, cold: bool) -> dict[str, Any]:
        """One round measured at the site by this script's ``agent``."""
        script = Path(__file__).read_text()
        out = self.plain(f"{PYTHON} - agent --home {self.remote} --mode {mode}"
                         + (" --cold" if cold else ""), stdin=script)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def through_site(self, mode: str) -> dict[str, Any]:
        """One round from this side, through the site ``hpc``."""
        if mode == "cli":
            return cli_round(["run", "wf.yaml", "--site", "hpc", "--detach", "--force"],
                             ["--site", "hpc", "--json"], pre=[], env=self.env,
                             cwd=str(self.project))
        from kale import Workflow

        wf = Workflow.from_yaml(self.project / "wf.yaml")
        return api_round(lambda: wf.run(site="hpc", home=self.local, force=True))

    def cleanup(self) -> None:
        try:
            self.plain(f"{PYTHON} -m kale.cli.main manager stop --home {self.remote}; "
                       f"rm -rf {self.remote}", timeout=120)
        finally:
            self.site().close()


# -- latency ----------------------------------------------------------------------------
PATHS = [("cli", "through"), ("cli", "at"), ("api", "through"), ("api", "at")]


def latency(bench: Bench, cold_rounds: int, warm_rounds: int) -> dict[str, Any]:
    """Every path's rounds, cold then warm, the paths' order rotated round by round."""
    results: dict[str, list[dict[str, Any]]] = {}

    def one(mode: str, side: str, cold: bool, record: bool = True) -> None:
        if cold:
            bench.stop_manager()
            if side == "through":
                bench.site().close()
        doc = bench.through_site(mode) if side == "through" else bench.at_site(mode, cold)
        if record:
            key = f"{mode}-{side}-{'cold' if cold else 'warm'}"
            results.setdefault(key, []).append(doc)
            print(f"  {key}: submit {doc['submit']:.3f} s, started {doc['started']:.3f} s, "
                  f"status {statistics.median(doc['status']):.3f} s", flush=True)

    for r in range(cold_rounds):
        for mode, side in PATHS[r % 4:] + PATHS[:r % 4]:
            one(mode, side, cold=True)
    for mode, side in PATHS:  # warm-up: master up, manager up, first imports done
        one(mode, side, cold=False, record=False)
    for r in range(warm_rounds):
        for mode, side in PATHS[r % 4:] + PATHS[:r % 4]:
            one(mode, side, cold=False)
    return results


# -- where a warm submit through the site spends its time ------------------------------
def breakdown(bench: Bench, rounds: int) -> dict[str, list[float]]:
    """Seconds of each step a warm ``open_site`` + submit takes (master and manager up),
    and of what they are made of, timed one by one."""
    site = bench.site()
    info = site.connect()
    remote_socket = str(info.manager["socket"])
    steps: dict[str, Callable[[], Any]] = {
        "ssh -O check (is the master up)": site.link.alive,
        "probe: python -m kale.sites.here --start --token":
            lambda: site.probe(start=True, token=True),
        "ssh -O forward (the manager's socket)":
            lambda: site.link.forward(site.socket, remote_socket),
        "stage, nothing changed (mkdir + rsync)": lambda: site.stage(bench.project),
        "a command over the master (true)": lambda: site.link.run(["true"]),
        "python -c 'import kale.cli.main', over the master":
            lambda: site.link.run([PYTHON, "-c", "import kale.cli.main"]),
        "a command over plain ssh (true)": lambda: bench.plain("true"),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(timed(step))
    return times


# -- transfer ---------------------------------------------------------------------------
def make_files(root: Path, count: int, size: int) -> int:
    """``count`` files of ``size`` random bytes under ``root`` (100 per folder); bytes."""
    for i in range(count):
        path = root / f"d{i // 100:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return count * size


def rsync(src: Path, dest: str, rsh: str) -> None:
    subprocess.run(["rsync", "-a", "-e", rsh, f"{src}/", dest], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=1800)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def transfer(bench: Bench, sets: dict[str, tuple[int, int]], rounds: int,
             ) -> dict[str, Any]:
    """Per file set and method: seconds of each first copy and re-copy."""
    site = bench.site()
    site.connect()
    bench.plain(f"mkdir -p {bench.remote}/plain {bench.remote}/master")
    results: dict[str, Any] = {}
    for name, (count, size) in sets.items():
        src = bench.scratch / name
        total = make_files(src, count, size)
        times = transfer_set(bench, site, src, rounds)
        results[name] = {"files": count, "bytes": total, "times": times}
        shutil.rmtree(src)
    return results


def transfer_set(bench: Bench, site: Any, src: Path, rounds: int,
                 ) -> dict[str, dict[str, list[float]]]:
    """The three methods' rounds for the directory ``src``, their order rotated."""
    plain_rsh = "ssh -o BatchMode=yes -o ControlMaster=no -o ControlPath=none"
    staged: list[str] = []

    def stage() -> None:
        staged[:] = [site.stage(src).path]

    def plain() -> None:
        rsync(src, f"{bench.host}:{bench.remote}/plain/{src.name}", plain_rsh)

    def master() -> None:
        rsync(src, f"{bench.host}:{bench.remote}/master/{src.name}", site.link.rsh())

    methods: dict[str, tuple[Callable[[], None], list[str]]] = {
        "stage": (stage, staged),
        "plain": (plain, [f"{bench.remote}/plain/{src.name}"]),
        "master": (master, [f"{bench.remote}/master/{src.name}"])}
    times: dict[str, dict[str, list[float]]] = {m: {"first": [], "again": []}
                                                for m in methods}
    order = list(methods)
    for r in range(rounds):
        for method in order[r % 3:] + order[:r % 3]:
            copy, where = methods[method]
            if where:  # the first copy goes into an empty directory
                bench.plain(f"rm -rf {where[0]}")
            # and starts with no writes pending (the removal's, the previous copy's)
            bench.plain("sync")
            times[method]["first"].append(timed(copy))
            times[method]["again"].append(timed(copy))
            print(f"  {src.name} {method}: first {times[method]['first'][-1]:.3f} s, "
                  f"again {times[method]['again'][-1]:.3f} s", flush=True)
    return times


# -- the report -------------------------------------------------------------------------
def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile (the maximum below 20 values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def paired(a: list[float], b: list[float], how: Callable[[float, float], float]) -> float:
    """The median over rounds of ``how(a[i], b[i])``: the two sides of a round ran one
    after the other, so a drift of the machine's load hits both alike."""
    return statistics.median(how(x, y) for x, y in zip(a, b, strict=True))


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} / {p95(values):.3f}"


def latency_table(lat: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| path | what | through the site (median / p95 s) | on the site "
            "(median / p95 s) | ratio | through adds |",
            "|---|---|---:|---:|---:|---:|"]
    for mode in ("cli", "api"):
        for phase in ("cold", "warm"):
            through, at = lat[f"{mode}-through-{phase}"], lat[f"{mode}-at-{phase}"]
            metrics = ["submit", "started"] + (["seen"] if phase == "warm" else [])
            for metric in metrics:
                a = [d[metric] for d in through]
                b = [d[metric] for d in at]
                rows.append(f"| {mode} {phase} | {LABELS[metric]} | {cell(a)} | {cell(b)} "
                            f"| {paired(a, b, lambda x, y: x / y):.1f}x "
                            f"| {paired(a, b, lambda x, y: x - y):+.3f} s |")
        a = [s for d in lat[f"{mode}-through-warm"] for s in d["status"]]
        b = [s for d in lat[f"{mode}-at-warm"] for s in d["status"]]
        rows.append(f"| {mode} warm | {LABELS['status']} (n={len(a)} / {len(b)}) | {cell(a)} "
                    f"| {cell(b)} | {statistics.median(a) / statistics.median(b):.1f}x "
                    f"| {statistics.median(a) - statistics.median(b):+.3f} s |")
    return rows


LABELS = {"submit": "submit -> run id", "started": "submit -> task started",
          "seen": "submit -> seen RUNNING", "status": "one status call"}


def transfer_table(tr: dict[str, Any]) -> list[str]:
    rows = ["| files | copy | `Site.stage` | rsync, plain ssh | rsync, same master "
            "| stage / plain | stage / master |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for doc in tr.values():
        mb = doc["bytes"] / (1 << 20)
        what = f"{doc['files']} x {size(doc['bytes'] // doc['files'])} ({size(doc['bytes'])})"
        for copy in ("first", "again"):
            runs = {m: doc["times"][m][copy] for m in ("stage", "plain", "master")}
            med = {m: statistics.median(values) for m, values in runs.items()}
            cells = [f"{med[m]:.3f} s ({mb / med[m]:.0f} MiB/s)" if copy == "first"
                     else f"{med[m]:.3f} s" for m in runs]
            ratios = [paired(runs["stage"], runs[m], lambda x, y: x / y)
                      for m in ("plain", "master")]
            rows.append(f"| {what} | {'first' if copy == 'first' else 'no change'} | "
                        + " | ".join(cells)
                        + f" | {ratios[0]:.2f}x | {ratios[1]:.2f}x |")
    return rows


def size(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.0f} {unit}"
    return f"{n} B"


def breakdown_table(steps: dict[str, list[float]]) -> list[str]:
    rows = ["| step (warm: master and manager up) | median / p95 s |", "|---|---:|"]
    rows += [f"| {name} | {cell(values)} |" for name, values in steps.items()]
    return rows


def report(doc: dict[str, Any]) -> str:
    from environment import describe, load_average

    root = Path(__file__).resolve().parent.parent
    head = [f"### Sites: through an SSH site vs on the site itself "
            f"({'quick' if doc['quick'] else 'full'} sizes)", ""]
    head += [f"- {k}: {v}" for k, v in describe(root)]
    head += [f"- load average at the end: {load_average()}",
             f"- site: {doc['host']} (the local sshd, user kale-other: same machine)",
             f"- latency: {doc['cold']} cold and {doc['warm']} warm rounds per path; "
             "ratio and difference: the median over rounds of each round's (the paths "
             "of a round ran one after the other); of one status call: of the medians "
             "of all calls", ""]
    tail = ["", f"transfer: median of {doc['rounds']} rounds per method; the first copy "
            "into an empty directory, then the same again with nothing changed; the "
            "ratios (of seconds: below 1 is faster) are the median of each round's", ""]
    steps = ["", f"where a warm submit through the site goes: each step alone, "
             f"{doc['warm']} rounds", ""]
    return "\n".join(head + latency_table(doc["latency"]) + steps
                     + breakdown_table(doc["breakdown"]) + tail
                     + transfer_table(doc["transfer"])) + "\n"


# -- main -------------------------------------------------------------------------------
def site_host() -> str:
    path = Path(__file__).resolve().parent.parent / "test-output" / "ssh-site.host"
    host = path.read_text().strip() if path.is_file() else ""
    if not host:
        sys.exit(f"no SSH site: {path} is missing (run scripts/services/sshd.sh, then "
                 "scripts/services/users.sh, as root)")
    return host


@contextmanager
def bench_site(host: str) -> Iterator[Bench]:
    scratch = Path(tempfile.mkdtemp(prefix="kale-bench-sites-"))
    try:
        bench = Bench(host, scratch)
        try:
            yield bench
        finally:
            bench.cleanup()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        agent(sys.argv[2:])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    cold, warm, rounds = (1, 3, 1) if args.quick else (5, 20, 5)
    sets = {"small": (300, 4096), "big": (3, 10 << 20)} if args.quick else \
        {"small": (2000, 4096), "big": (3, 100 << 20)}
    host = site_host()
    with bench_site(host) as bench:
        print(f"latency ({cold} cold, {warm} warm rounds per path)", flush=True)
        lat = latency(bench, cold, warm)
        print(f"transfer ({rounds} rounds per method)", flush=True)
        tr = transfer(bench, sets, rounds)
        steps = breakdown(bench, warm)
    doc = {"breakdown": steps, "quick": args.quick, "host": host, "cold": cold, "warm": warm,
           "rounds": rounds, "latency": lat, "transfer": tr}
    text = report(doc)
    print(text)
    if not args.quick:
        results = Path(__file__).resolve().parent / "results"
        results.mkdir(exist_ok=True)
        (results / "sites.txt").write_text(text)


if __name__ == "__main__":
    main()

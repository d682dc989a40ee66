"""Tasks on a real Dask cluster (issue 16): a ``distributed.LocalCluster`` Kale starts, one
the test runs and names by address, and a dask-jobqueue ``SLURMCluster`` on the test
Slurm. Kale keeps the state, reuse and logs; Dask runs, places and re-runs the tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, process_alive, wait_until
from engine_kit import (
    MODULE,
    TlsCluster,
    check_bad_settings,
    kill_orphans,
    project,
    resume_and_check,
    run_cli,
    start_and_kill,
    states,
    status,
)
from kale import Workflow
from kale.model.states import RunState

pytestmark = pytest.mark.timeout(300)

@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """A LocalCluster of one worker process (with its nanny, which restarts it when it
    dies), run by the test, over TLS; Kale reaches it by its address and CA."""
    from distributed import LocalCluster, Security

    security = Security.temporary()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, security=security,
                      host="127.0.0.1", dashboard_address="127.0.0.1:0") as c:
        yield TlsCluster(c, security, tmp_path_factory.mktemp("dask-tls"))


def test_a_cluster_kale_starts_runs_python_shell_and_notebook_tasks(
        kale: Kale, tmp_path: Path) -> None:
    wf = project(tmp_path, "{kind: dask, options: {n_workers: 1, threads_per_worker: 2, "
                           "dashboard_address: '127.0.0.1:0'}}")  # its dashboard asked for
    first = run_cli(kale, str(wf))
    tasks = status(kale, first)
    assert {t["state"] for t in tasks.values()} == {"SUCCEEDED"}, tasks
    # the three tasks without an executor of their own ran on the cluster's worker, over
    # TLS (a cluster Kale starts gets a throw-away certificate); `consume` ran here
    for name in ("produce", "shout", "square"):
        assert kale.attempts(first, name)[0]["worker"].startswith("dask:tls://127.0.0.1:")
    assert kale.attempts(first, "consume")[0]["worker"] == "local"
    # results, records and files cross from Dask's worker to this process's task
    produced = tasks["produce"]["result"]
    assert produced["n"] == 5 and produced["pid"] != os.getpid()
    assert tasks["consume"]["result"] == {"sum": 10, "text": "hello"}
    assert tasks["square"]["result"]["squared"] == 25
    said = Path(tasks["shout"]["result"]["said.txt"]).read_text()
    assert said == "hello from dask\n"
    assert "said it" in kale("logs", first, "shout").stdout
    assert "producing 5" in kale("logs", first, "produce").stdout
    detail = json.loads(kale("status", first, "produce", "--json").stdout)
    assert detail["task"]["details"]["dask_dashboard"].startswith("http://127.0.0.1:")
    # the same again: every task reuses its own result; nothing reaches Dask
    second = run_cli(kale, str(wf))
    again = status(kale, second)
    assert {n: t["reused_from"] for n, t in again.items()} == dict.fromkeys(tasks, first)


def test_cancel_and_timeout_stop_the_task_on_its_dask_worker(
        cluster: TlsCluster, home: Path, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    gate = tmp_path / "never"
    wf = Workflow("stop-on-dask", base_dir=tmp_path,
                  executor=cluster.spec)
    wf.python("steps:wait_for", name="cancelled",
              parameters={"gate": str(gate), "note": str(tmp_path / "c.note")})
    wf.python("steps:wait_for", name="slow", timeout=1,
              parameters={"gate": str(gate), "note": str(tmp_path / "s.note")})
    run = wf.run()
    notes = wait_until(lambda: all((tmp_path / f).is_file() and (tmp_path / f).read_text()
                                   for f in ("c.note", "s.note")) and
                       [int((tmp_path / f).read_text().split()[0])
                        for f in ("c.note", "s.note")],
                       what="both tasks started on the Dask worker")
    wait_until(lambda: states(run)["slow"] == "TIMEOUT", what="the slow task timed out")
    assert run.cancel() is RunState.CANCELLED
    # both Python processes on the Dask worker are gone: cancel and timeout reach them
    for pid in notes:
        wait_until(lambda pid=pid: not process_alive(pid), what=f"process {pid} stopped")
    assert states(run) == {"cancelled": "CANCELLED", "slow": "TIMEOUT"}


def test_a_dask_worker_killed_mid_task_is_replaced_and_nothing_runs_twice_after_success(
        cluster: TlsCluster, home: Path, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    gate, note = tmp_path / "gate", tmp_path / "starts.txt"
    wf = Workflow("kill-a-worker", base_dir=tmp_path,
                  executor=cluster.spec)
    wf.python("steps:wait_for", name="long", parameters={"gate": str(gate),
                                                       "note": str(note)})
    run = wf.run()
    first = wait_until(lambda: note.is_file() and note.read_text().split(),
                       what="the task started")
    dask_worker = int(first[1])  # the Dask worker process that started the task's process
    os.kill(dask_worker, signal.SIGKILL)
    # Dask's nanny starts a new worker and Dask runs the task again there
    second = wait_until(lambda: len(note.read_text().split("\n")) > 2
                        and note.read_text().split("\n")[1].split(),
                        what="the task started again on a new worker")
    assert int(second[1]) != dask_worker
    assert not process_alive(int(first[0]))  # the first attempt died with its worker
    gate.touch()
    assert run.wait().state is RunState.SUCCEEDED
    assert run.result("long") == "opened"
    # succeeded once: another run reuses it and nothing starts
    again = wf.run()
    assert again.wait().state is RunState.SUCCEEDED
    assert {t["name"]: t["reused_from"] for t in again.status()["tasks"]} == {"long": run.id}
    assert len(note.read_text().splitlines()) == 2


def test_resume_after_kale_is_sigkilled_mid_run_on_dask(kale: Kale, tmp_path: Path) -> None:
    run_id = start_and_kill(kale, tmp_path, "{kind: dask, options: {n_workers: 1}}")
    resume_and_check(kale, tmp_path, run_id)
    kill_orphans(tmp_path)


def test_a_slurm_cluster_of_dask_jobqueue_runs_tasks_in_slurm_jobs(
        slurm: str, kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "steps.py").write_text(MODULE)
    wf = tmp_path / "wf.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: dask-on-slurm
        executor:
          kind: dask
          cluster: dask_jobqueue:SLURMCluster
          options: {{cores: 1, memory: 1GB, processes: 1, walltime: "00:10:00",
                     log_directory: {str(tmp_path / 'dask-logs')!r},
                     scheduler_options: {{host: 127.0.0.1}}}}
          scale: 1
        tasks:
          where: {{python: "steps:where"}}
        """))
    run_id = run_cli(kale, str(wf))
    task = status(kale, run_id)["where"]
    assert task["state"] == "SUCCEEDED", task
    job = task["result"]["job"]
    assert job.isdigit()
    # the cluster's job ends with the run
    wait_until(lambda: job not in subprocess.run(["squeue", "-h", "-o", "%i"],
                                                 capture_output=True, text=True).stdout,
               what=f"Slurm job {job} ended")


def test_bad_dask_settings_say_what_and_where(kale: Kale, tmp_path: Path) -> None:
    said = check_bad_settings(
        kale, tmp_path, "{kind: dask, address: nowhere, config: x:y}",
        ["bad.yaml:2: executor.address: must be a scheduler address",
         "executor.config: not a setting of 'dask'"],
        "{kind: dask, cluster: 'nosuch:Cluster'}",
        "executor dask: cluster 'nosuch:Cluster': cannot load it: ModuleNotFoundError")
    run_id = said.split()[0]
    assert status(kale, run_id)["a"]["state"] == "PENDING"  # nothing lost: resumable


# -- on a shared host: whom Kale talks to, what it shows -----------------------------------
def test_a_dask_address_must_be_tls_with_a_ca_that_proves_the_scheduler(
        kale: Kale, tmp_path: Path) -> None:
    """Over plain tcp:// whoever answers at the address (another user of the host who
    took the port) would receive the tasks and send back what Kale unpickles."""
    (tmp_path / "steps.py").write_text(MODULE)
    wf = tmp_path / "plain.yaml"
    wf.write_text("name: plain\nexecutor: {kind: dask, address: 'tcp://127.0.0.1:8786'}\n"
                  "tasks:\n  a: {python: 'steps:where'}\n")
    out = kale("validate", str(wf))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "plain.yaml:2: executor.address: 'tcp://127.0.0.1:8786': only a tls:// address" \
        in out.stderr, out.stderr
    wf.write_text("name: plain\nexecutor: {kind: dask, address: 'tls://127.0.0.1:8786',\n"
                  "           security: {ca: nosuch.pem, pin: x}}\n"
                  "tasks:\n  a: {python: 'steps:where'}\n")
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert "executor.security.pin: not a TLS file Kale takes; allowed: ca, cert, key" \
        in out.stderr, out.stderr
    assert "executor.security: give cert, key too" in out.stderr, out.stderr
    wf.write_text("name: plain\nexecutor: {kind: dask, address: 'tls://127.0.0.1:8786',\n"
                  "           security: {ca: nosuch.pem, cert: c.pem, key: k.pem}}\n"
                  "tasks:\n  a: {python: 'steps:where'}\n")
    out = kale("run", str(wf))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"executor dask: security.ca: no file {tmp_path / 'nosuch.pem'}" in out.stderr
    assert "Traceback" not in out.stderr
    # nothing given, and nothing in Dask's configuration
    wf.write_text("name: plain\nexecutor: {kind: dask, address: 'tls://127.0.0.1:8786'}\n"
                  "tasks:\n  a: {python: 'steps:where'}\n")
    out = kale("run", str(wf))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "the TLS files that reach the scheduler at tls://127.0.0.1:8786 are not known" \
        in out.stderr, out.stderr


def test_a_scheduler_our_ca_did_not_sign_gets_no_task(
        kale: Kale, cluster: TlsCluster, tmp_path: Path) -> None:
    """Another user's TLS scheduler at the address (its own certificate): Kale will not
    talk to it, the run stops saying so, and that scheduler never sees a task."""
    from distributed import Client, LocalCluster, Security

    (tmp_path / "steps.py").write_text(MODULE)
    theirs = Security.temporary()
    with LocalCluster(n_workers=0, security=theirs, host="127.0.0.1",
                      dashboard_address=None) as other, Client(other, security=theirs) as c:
        spec = dict(cluster.spec, address=other.scheduler_address)
        wf = tmp_path / "squat.yaml"
        wf.write_text(f"name: squat\nexecutor: {json.dumps(spec)}\n"
                      "tasks:\n  a: {python: 'steps:where'}\n")
        out = kale("run", str(wf), timeout=120)
        assert out.returncode == 1, out.stdout + out.stderr  # its task failed
        assert f"cannot reach the scheduler at {other.scheduler_address}: TLS certificate " \
            "does not match" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert c.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


@pytest.mark.parametrize("cls, asked", [
    ("distributed:LocalCluster", {"dashboard_address": "127.0.0.1:0"}),
    ("dask_jobqueue:SLURMCluster", {"cores": 1, "memory": "1GB", "scheduler_options": {
        "dashboard_address": "127.0.0.1:0"}})])
def test_a_cluster_kale_starts_serves_no_dashboard_unless_asked_and_only_here(
        cls: str, asked: dict[str, Any], tmp_path: Path) -> None:
    """Dask's dashboard lists the tasks and shows the workers' logs to anyone who reaches
    it (no login; dask-jobqueue's default is port 8787 on every interface): the
    scheduler of a cluster Kale starts serves HTTP on 127.0.0.1 only, with no dashboard
    nor info pages unless the workflow asks for the dashboard."""
    import asyncio
    import gc
    import urllib.error
    import urllib.request
    import warnings

    from kale.executors.engines.dask import DaskExecutor
    from kale.model.executor import ExecutorSpec

    def get(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code

    async def served(options: dict[str, Any]) -> tuple[set[str], dict[str, int], bool]:
        spec = ExecutorSpec.parse({"kind": "dask", "cluster": cls, "options": options,
                                   "scale": 0})[0]
        executor = DaskExecutor(spec, tmp_path, tmp_path / "run")
        await executor.start({})
        try:
            http = executor.cluster.scheduler.http_server
            hosts = {s.getsockname()[0] for s in http._sockets.values()}
            port = executor.cluster.scheduler.http_server.port
            codes = {p: await asyncio.to_thread(get, port, p)
                     for p in ("/health", "/status", "/info/main/workers.html")}
            return hosts, codes, bool(executor.dashboard)
        finally:
            await executor.close()

    def serve(options: dict[str, Any]) -> tuple[set[str], dict[str, int], bool]:
        with warnings.catch_warnings():  # dask-jobqueue leaves its certificate's files
            warnings.simplefilter("ignore", ResourceWarning)  # open until collected
            try:
                return asyncio.run(served(options))
            finally:
                gc.collect()

    plain = {k: v for k, v in asked.items() if k in ("cores", "memory")}
    hosts, codes, linked = serve(plain)
    assert hosts == {"127.0.0.1"}
    assert codes == {"/health": 200, "/status": 404, "/info/main/workers.html": 404}
    assert not linked  # no link to a dashboard in the task's details
    hosts, codes, linked = serve(asked)
    assert hosts == {"127.0.0.1"}
    assert codes == {"/health": 200, "/status": 200, "/info/main/workers.html": 200}
    assert linked

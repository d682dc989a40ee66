"""Faults of a shared login node, as real faults: a worker SIGKILLed while its task (and a
process the task started) runs, and local workers that cannot start because the disk
their home lives on is full."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, Manager, gate_sh, process_alive, service_missing, wait_until
from kale import Workflow

pytestmark = pytest.mark.slow


def _state(pid: int) -> str:
    """What /proc says of ``pid``: its state letter, or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_a_sigkilled_workers_task_processes_are_dead_before_its_retry_starts(
        kale: Kale, home: Path, managers: Callable[..., Manager], tmp_path: Path) -> None:
    """The first attempt's shell starts a process of its own (a grandchild of the worker)
    that would run for minutes, and blocks; its worker is SIGKILLed. The retry, on the
    other worker and in the same directory, looks at both processes as it starts: they
    must be gone (or dead, waiting to be reaped), and only the retry writes output."""
    m = managers("--workers", "2", "--worker-slots", "1", "--heartbeat-timeout", "3")
    marker, gate, never = tmp_path / "first-attempt", tmp_path / "gate", tmp_path / "never"
    pids, seen, out = tmp_path / "pids", tmp_path / "seen", tmp_path / "out"
    # The grandchild waits for a file nobody creates (giving up after 300 s, so a failed
    # test leaves nothing running for long); the shell waits for the test's gate.
    first = (f"touch {marker}; sh -c {shlex.quote(gate_sh(never))} & echo $$ $! > {pids}.tmp; "
             f"mv {pids}.tmp {pids}; {gate_sh(gate)}; echo first >> {out}")
    retry = (f"for p in $(cat {pids}); do "
             f"if [ -e /proc/$p/stat ]; then cut -d' ' -f3 /proc/$p/stat; else echo gone; fi;"
             f" done > {seen}; echo retry >> {out}; echo retry")
    wf = Workflow("orphans")
    wf.shell("long", f"if [ -e {marker} ]; then {retry}; exit 0; fi; {first}", retries=1)
    try:
        with m.client() as client:
            run = client.submit(wf)
            victim_id = kale.sigkill_worker_of(client, run.id, "long", pids.exists)
            shell, grandchild = map(int, pids.read_text().split())
            assert run.wait(120).state.value == "SUCCEEDED"
            tries = kale.attempts(run.id, "long")
            logs = client.logs(run.id, "long").split()
    finally:
        gate.touch()  # a first attempt that outlived its worker would end now
        never.touch()
    assert [a["state"] for a in tries] == ["LOST", "SUCCEEDED"], tries
    assert tries[1]["worker"] != victim_id
    # When the retry started, both processes of the first attempt were already dead.
    assert seen.read_text().split() in (["gone", "gone"], ["gone", "Z"], ["Z", "gone"],
                                        ["Z", "Z"]), seen.read_text()
    assert out.read_text().split() == ["retry"]
    assert logs == ["retry"]
    assert not process_alive(shell) and not process_alive(grandchild)
    assert not list(home.rglob(".kale-group.json"))  # the retry ended cleanly: no record


# -- local workers that cannot start ---------------------------------------------------------


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[Path]:
    """A small tmpfs mounted at ``folder`` and filled up: the disk of a login node full
    (root only: it mounts). Yields the file that fills it; removing it frees the space."""
    if os.geteuid() != 0:
        service_missing("a full disk is a tmpfs this test mounts: it needs root")
    folder.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "kale-full",
                          str(folder)], capture_output=True, text=True)
    if out.returncode != 0:
        service_missing(f"cannot mount a tmpfs: {out.stderr.strip()}")
    try:
        filler = folder / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        finally:
            os.close(fd)
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _warnings(home: Path, text: str) -> list[str]:
    try:
        lines = (home / "manager.log").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line for line in lines if text in line]


def test_local_workers_that_cannot_start_are_reported_and_retried_until_one_can(
        kale: Kale, home: Path, managers: Callable[..., Manager]) -> None:
    """The disk the workers' logs are on is full: every local worker dies before it
    connects. The manager says so in its log, with the exit code, at growing intervals,
    and once the space is freed a worker starts, connects and the run completes."""
    m = managers("--workers", "1")
    wf = Workflow("full-disk")
    wf.shell("hello", "echo hello")
    with full_disk(home / "workers") as filler, m.client() as client:
        run = client.submit(wf)
        failed = wait_until(lambda: _warnings(home, "failure 2 in a row"),
                            what="two failed starts in the manager log")
        assert "before it connected" in failed[0] and "exited with code" in failed[0]
        assert "KB free on the file system of" in failed[0], failed[0]
        first = _warnings(home, "failure 1 in a row")[0]
        assert "trying again in 1 s" in first and "trying again in 2 s" in failed[0]
        assert client.status(run.id)["tasks"][0]["state"] != "SUCCEEDED"
        # the run's status says why it does not go on, and so does `kale status`
        said = client.status(run.id).get("problems") or []
        assert any("local workers cannot start" in p for p in said), said
        shown = kale("status", run.id)
        assert "local workers cannot start" in shown.stdout, shown.stdout
        filler.unlink()  # space again
        assert run.wait(120).state.value == "SUCCEEDED"
        assert client.logs(run.id, "hello").split() == ["hello"]
    # The watch notices the connection within a moment (maybe after the run's end).
    wait_until(lambda: _warnings(home, "connected: local workers start again"),
               what="the manager to say workers start again")


def test_a_failed_local_worker_start_is_kept_for_the_manager_to_show(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What :meth:`LocalWorkers.problem` says while workers cannot start (a real worker
    process, dying on a full disk), and that no worker is started during the backoff."""
    from kale.manager import provider
    from kale.manager.broker import Broker
    from kale.store.store import Store

    monkeypatch.setattr(provider, "BACKOFF_FIRST", 600.0)  # the retry stays far away
    home = tmp_path / "home"
    home.mkdir()
    broker = Broker(Store(f"sqlite:///{tmp_path / 'kale.db'}"))
    local = provider.LocalWorkers(broker, home, f"unix:{tmp_path / 'nothing.sock'}", "token",
                                  count=1, slots=1)
    try:
        with full_disk(home / "workers"):
            assert local.problem() is None
            assert local.ensure() == 1
            problem = wait_until(local.problem, what="the failed start reported")
            assert local.ensure() == 0  # backing off: nothing started
    finally:
        local.stop()
    assert problem["failures"] == 1 and problem["exit_code"] not in (None, 0)
    assert f"exited with code {problem['exit_code']} before it connected" in problem["error"]
    assert "KB free on the file system of" in problem["error"]
    assert problem["log"].startswith(str(home / "workers"))
    assert 0 < problem["retry_in"] <= 600


def _context(workdir: Path) -> Any:
    from kale.tasks.base import TaskContext

    return TaskContext(run_id="r1", task=Workflow("w").shell("t", "true"), attempt=2,
                       workdir=workdir, stdout_path=workdir / "out",
                       stderr_path=workdir / "err", base_dir=workdir, inputs={})


def test_an_earlier_attempts_group_is_killed_by_make_workdir_and_a_reused_pid_is_not(
        tmp_path: Path) -> None:
    """What the worker does before an attempt, on its own: the recorded group of an
    attempt whose runner is gone is SIGKILLed (all of it, a child of the leader too), and a
    record whose leader's start time does not match (the pid was reused) kills nothing."""
    from kale.tasks import groups, procs

    workdir = tmp_path / "t"
    workdir.mkdir()
    env = {**os.environ, "KALE_RUN_ID": "r1", "KALE_TASK": "t"}
    child = tmp_path / "child"
    script = f"sleep 300 & echo $! > {child}.tmp; mv {child}.tmp {child}; wait"
    proc = procs.spawn(["/bin/sh", "-c", script], cwd=workdir, env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        groups.record(workdir, proc.pid, env, 1)
        grandchild = int(wait_until(lambda: child.exists() and child.read_text().strip(),
                                    what="the shell's child"))
        _context(workdir).make_workdir()
        assert proc.wait(60) == -signal.SIGKILL
        assert _state(grandchild) in ("gone", "Z")
        assert not (workdir / groups.GROUP_FILE).exists()
    finally:
        procs.kill_group(proc)
        proc.wait()
    # A record naming a live process that is not the one recorded (another start time):
    # the pid was reused by something else, which must live on.
    other = subprocess.Popen(["sleep", "300"], start_new_session=True,
                             env={k: v for k, v in os.environ.items() if k != "KALE_TASK"})
    try:
        groups.record(workdir, other.pid, env, 1)
        doc = json.loads((workdir / groups.GROUP_FILE).read_text())
        doc["start"] -= 1
        (workdir / groups.GROUP_FILE).write_text(json.dumps(doc))
        _context(workdir).make_workdir()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()

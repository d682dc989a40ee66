"""A Kale home on a disk that fills up mid-run (issue 13): the store refuses a write, and
Kale stops starting tasks at once, says why in one message, and loses nothing it
recorded; once there is space again, `kale resume` finishes the run and no task recorded
as succeeded runs twice. A real full disk: a small tmpfs the tasks themselves fill."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Kale, service_missing


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (mounting needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        service_missing("mounting a small tmpfs to fill needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        service_missing(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _ledger(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_full_disk_stops_the_run_with_a_message_and_resume_runs_nothing_twice(
        small_disk: Path, tmp_path: Path) -> None:
    home = small_disk / "kale-home"
    filler, ledger = small_disk / "filler", tmp_path / "ran.txt"
    once = tmp_path / "filled-once"
    # `fill` fills the disk the store is on (once: it may run again on resume); the 20
    # tasks after it each write their name to a ledger (on another disk) when they run,
    # so the test sees what ran.
    lines = ["name: disk-full", "tasks:",
             "  fill:", f"    shell: if [ ! -e {once} ]; then touch {once}; "
                        f"head -c 64M /dev/zero > {filler}; fi; true"]
    for i in range(20):
        lines += [f"  t{i}:", f"    shell: echo t{i} >> {ledger}", "    after: [fill]"]
    spec = tmp_path / "wf.yaml"
    spec.write_text("\n".join(lines) + "\n")
    kale = Kale(home, tmp_path)

    out = kale("run", str(spec), "--embedded")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "cannot record the run's progress in" in out.stderr
    assert "disk is full" in out.stderr and "kale resume" in out.stderr
    assert "Traceback" not in out.stderr
    before = _ledger(ledger)
    assert len(before) < 20  # it stopped starting tasks: not all of them ran

    filler.unlink()  # space again
    status = kale("status", "latest", "--json")
    assert status.returncode == 0, status.stderr
    import json

    recorded = {t["name"] for t in json.loads(status.stdout)["tasks"]
                if t["state"] == "SUCCEEDED"}
    out = kale("resume", "latest")
    assert out.returncode == 0, out.stderr
    final = json.loads(kale("status", "latest", "--json").stdout)
    assert final["run"]["state"] == "SUCCEEDED"
    after = _ledger(ledger)
    assert sorted(set(after)) == sorted(f"t{i}" for i in range(20))
    for name in recorded - {"fill"}:  # what was recorded as succeeded never ran again
        assert after.count(name) == 1, (name, after)


def test_a_full_disk_under_a_manager_fails_the_run_with_the_reason_and_restart_resumes_it(
        small_disk: Path, tmp_path: Path) -> None:
    """The same through a manager: the run's status turns FAILED with the store's reason
    (the store itself cannot record it), so a waiting client returns; the next manager
    resumes the run from what was recorded."""
    import json

    from conftest import Manager

    home = small_disk / "kale-home"
    home.mkdir(mode=0o700)
    filler, ledger = small_disk / "filler", tmp_path / "ran.txt"
    once = tmp_path / "filled-once"
    from kale import Workflow

    wf = Workflow("disk-full-managed")
    wf.shell("fill", f"if [ ! -e {once} ]; then touch {once}; "
                     f"head -c 64M /dev/zero > {filler}; fi; true")
    for i in range(20):
        wf.shell(f"t{i}", f"echo t{i} >> {ledger}", after=["fill"])
    kale = Kale(home, tmp_path)
    m = Manager(kale, home, "--workers", "1")
    try:
        with m.client() as client:
            run = client.submit(wf)
            assert run.wait(120).state.value == "FAILED"
            doc = client.status(run.id, tasks=False)
            assert "cannot record the run's progress" in doc["run"]["message"]
            assert "disk is full" in doc["run"]["message"]
        filler.unlink()  # space again
        recorded = {t["name"] for t in json.loads(kale("status", run.id, "--json").stdout)[
            "tasks"] if t["state"] == "SUCCEEDED"}
        assert kale("manager", "stop").returncode == 0
        m.start()  # resumes the unfinished run
        with m.client() as client:
            assert client.run(run.id).wait(120).state.value == "SUCCEEDED", \
                client.status(run.id, tasks=False)
    finally:
        kale("manager", "stop")
    after = _ledger(ledger)
    assert sorted(set(after)) == sorted(f"t{i}" for i in range(20))
    for name in recorded - {"fill"}:
        assert after.count(name) == 1, (name, after)

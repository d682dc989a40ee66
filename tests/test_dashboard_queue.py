"""A batch scheduler that does not answer never holds up a view: the queue view shows at
once, says what it waits for, and fills in when the answer comes; the dashboard's other
views and the kernel go on meanwhile.

Slurm's commands wait (about 10 s each) for a controller that is down; the real Slurm
cannot be made to do that on demand, so these tests put a fake ``squeue`` and ``sinfo``
first on PATH (a fault injection) that answer only once the test opens their gate."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kale.widgets as kw
from conftest import Manager, wait_until
from kale import Workflow

SQUEUE = "4242|PENDING|Priority|debug|1|someone|2026-01-01T10:00:00|N/A|1:00:00|stuck-job\n"
SINFO = "debug*|up|1|0/1|0/4/0/4|1:00:00\n"


class FakeSlurm:
    """``squeue`` and ``sinfo`` that block until :meth:`open` (or 60 s, so a failed test
    leaves nothing behind), each leaving a file when it starts."""

    def __init__(self, root: Path) -> None:
        self.bin, self.gate = root / "bin", root / "gate"
        self.bin.mkdir(parents=True)
        for name, output in (("squeue", SQUEUE), ("sinfo", SINFO)):
            (root / f"{name}.out").write_text(output)
            script = self.bin / name
            script.write_text(
                "#!/bin/sh\n"
                f"touch '{root}/{name}.started'\n"
                f"i=0; until [ -e '{self.gate}' ]; do [ $i -lt 1200 ] || exit 99; "
                "i=$((i+1)); sleep 0.05; done\n"
                f"cat '{root}/{name}.out'\n")
            script.chmod(0o755)
        self.root = root

    def started(self) -> bool:
        return all((self.root / f"{n}.started").exists() for n in ("squeue", "sinfo"))

    def open(self) -> None:
        self.gate.touch()


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlurm]:
    fake = FakeSlurm(tmp_path / "fake-slurm")
    monkeypatch.setenv("PATH", f"{fake.bin}{os.pathsep}{os.environ['PATH']}")
    yield fake
    fake.open()  # whatever happened, no fake command keeps waiting


def test_the_queue_view_shows_at_once_and_fills_in_when_slurm_answers(
        fake_slurm: FakeSlurm, home: Path) -> None:
    view = kw.QueueView()  # no manager: this machine's scheduler, through the store source
    wait_until(fake_slurm.started, 60, "the view to ask squeue and sinfo")
    # constructed while both commands wait for the gate: the view says so, lists nothing
    assert view.waiting == "waiting for slurm..." and view.scheduler == "slurm"
    assert view.jobs == [] and view.partitions == [] and view.updated == 0
    assert not view.error and not view.problems
    view._on_custom(view, {"action": "refresh"}, [])  # the Refresh button: no wait either
    assert view.waiting == "waiting for slurm..." and not view.problems
    fake_slurm.open()
    wait_until(lambda: view.updated, 60, "the answer to fill the view in")
    assert [j["id"] for j in view.jobs] == ["4242"] and view.jobs[0]["state"] == "PENDING"
    assert [p["name"] for p in view.partitions] == ["debug"] and view.waiting == ""
    view.close()


def test_the_dashboard_is_not_held_up_by_a_scheduler_that_does_not_answer(
        fake_slurm: FakeSlurm, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")  # its squeue and sinfo are the fake ones too
    wf = Workflow("quick", base_dir=tmp_path)
    wf.shell("hello", "echo hello")
    with m.client() as client:
        run = client.submit(wf)
        dash = run.dashboard()
        wait_until(fake_slurm.started, 60, "the manager to ask squeue and sinfo")
        titles = [dash.tabs.get_title(i) for i in range(len(dash.tabs.children))]
        assert titles == ["Log", "Resources", "Queue", "Workers", "Runs", "Connect"]
        assert dash.queue.waiting == "waiting for slurm..." and dash.queue.jobs == []
        # the other views go on while the queue waits
        wait_until(lambda: dash.dag.run_state == "SUCCEEDED", 60, "the run's end in the graph")
        assert dash.dag.states == {"hello": "SUCCEEDED"}
        assert run.id in [r["id"] for r in dash.runs.runs]
        dash.runs._on_custom(dash.runs, {"action": "refresh"}, [])
        assert not dash.runs.error
        assert dash.queue.waiting == "waiting for slurm..." and not dash.queue.problems
        fake_slurm.open()
        wait_until(lambda: dash.queue.jobs, 60, "the queue view to fill in")
        assert dash.queue.jobs[0]["name"] == "stuck-job" and dash.queue.waiting == ""
        assert [p["name"] for p in dash.queue.partitions] == ["debug"]
        dash.close()

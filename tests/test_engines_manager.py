"""Engines through the manager (issue 16): one run mixes Kale's workers, a Slurm job, Dask
and Parsl, with results flowing between them; a notebook task on a Dask worker is attached
to and steered from Python, as on Kale's own workers."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, Manager, busy_py, wait_until
from kale import Workflow
from test_attach import steer, submit_loop
from test_engine_dask import cluster  # noqa: F401 - a fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

STEPS = '''
import os, socket

def value(n):
    return {"n": n, "job": os.environ.get("SLURM_JOB_ID", ""), "pid": os.getpid()}

def total(w, s, d, p):
    return w["n"] + s["n"] + d["n"] + p["n"]
'''


def test_one_manager_run_mixes_workers_a_slurm_job_dask_and_parsl(
        slurm: str, kale: Kale, tmp_path: Path, managers: Callable[..., Manager],
        cluster: Any) -> None:  # noqa: F811 - the fixture
    (tmp_path / "steps.py").write_text(STEPS)
    wf = tmp_path / "mixed.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: mixed
        tasks:
          w: {{python: steps:value, parameters: {{n: 1}}}}
          s: {{python: steps:value, parameters: {{n: 20}}, executor: slurm}}
          d:
            python: steps:value
            parameters: {{n: 300}}
            executor: {cluster.yaml()}
          p: {{python: steps:value, parameters: {{n: 4000}}, executor: parsl}}
          sum:
            python: steps:total
            parameters: {{w: "${{w}}", s: "${{s}}", d: "${{d}}", p: "${{p}}"}}
        """))
    m = managers("--workers", "1")
    out = kale("run", str(wf), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stdout.split()[0]
    with m.client() as client:
        run = client.run(run_id)
        assert run.result("sum") == 4321
        assert run.result("s")["job"].isdigit()  # in a Slurm job of its own
        workers = {t: kale.attempts(run_id, t)[0]["worker"] for t in "wsdp"}
    assert workers["d"].startswith("dask:tls://127.0.0.1:")
    assert workers["p"] == f"parsl:{socket.gethostname()}"
    assert not workers["w"].startswith(("dask", "parsl"))


def test_a_notebook_task_on_a_dask_worker_is_attached_to_and_steered(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager],
        cluster: Any) -> None:  # noqa: F811 - the fixture
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "steer-on-dask", wait=False,
                          executor=cluster.spec)
        read = steer(client, run, tmp_path)
        assert read > 0
        assert run.wait(120).state.value == "SUCCEEDED"
        total = run.result("loop")["total"]
    assert kale.attempts(run.id, "loop")[0]["worker"].startswith("dask:")
    assert total > 1000 and total % 1000 != 0, total  # the person's change steered it


@pytest.mark.parametrize("engine", ["dask", "parsl"])
def test_tasks_on_an_engine_are_sampled_where_they_run(
        engine: str, kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """Kale's own resource sampling (CPU, memory of the task's process tree) works on the
    engine's workers: the samples reach the store and the run's event stream."""
    gate = tmp_path / "gate"
    wf = Workflow(f"sampled-on-{engine}", base_dir=tmp_path, executor={"kind": engine})
    wf.shell("burn", [sys.executable, "-c",
                      f"x = bytearray(60_000_000)\n{busy_py(gate)}print('burnt')"])
    m = managers("--workers", "1")
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: any(s["cpu"] > 30 and s["rss"] > 50_000_000
                               for s in client.resources(run.id, "burn")),
                   what=f"a sample of the busy task on {engine}, busy and holding its 60 MB")
        gate.touch()
        assert run.wait(120).state.value == "SUCCEEDED", client.status(run.id)
        samples = client.resources(run.id, "burn")
        streamed = [d for e, d in client.events(run.id)
                    if e == "resources" and d["task"] == "burn"]
    assert [s["id"] for s in streamed] == [s["id"] for s in samples]
    assert all(s["procs"] >= 1 and s["attempt"] == 1 for s in samples)
    assert kale.attempts(run.id, "burn")[0]["worker"].startswith(f"{engine}:")

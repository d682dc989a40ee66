"""Attaching to a running task's kernel, with real kernels on real workers: read a
variable while the task runs, change one that steers the rest of the task, see it in the
result. From Python, from `kale attach` (a Jupyter console), locally and in a Slurm job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest

from conftest import Kale, Manager, wait_until
from kale import Workflow
from test_workers import task

# Each wait below is a safety net of a minute or two; together they may exceed the
# default 120 s per test on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


# The loop tasks below go round until the test opens their gate, so they are still running
# whenever the test attaches, however slow the machine; and each says when it has started.
def gate(tmp_path: Path) -> Path:
    return tmp_path / "gate"


def started(tmp_path: Path) -> Path:
    return tmp_path / "started"


def loop_notebook(tmp_path: Path, gate_at: str | None = None, started_at: str | None = None,
                  record: str = "kale.record('rounds', rounds)") -> Path:
    """``tmp_path/loop.ipynb``: a loop that adds ``step`` to ``total`` every 0.1 s until the
    test creates the gate (``gate_at``, by default ``gate(tmp_path)``), then records
    ``total`` and runs ``record`` (``kale`` and ``getpass`` imported: a test that attaches
    may ask who the kernel runs as). After its first round it creates
    ``started_at`` (by default ``started(tmp_path)``): from then on, ``total`` is there to
    read."""
    gate_at = gate_at or str(gate(tmp_path))
    started_at = started_at or str(started(tmp_path))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("step = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import getpass, os, time\n"
            f"gate, started = {gate_at!r}, {started_at!r}\n"
            "total = rounds = 0\n"
            "while True:\n"
            # The gate is looked at before the step is added: the round that sees it open
            # adds the step as it was when the test opened it.
            "    released = os.path.exists(gate)\n"
            "    total += step\n"
            "    rounds += 1\n"
            "    if rounds == 1:\n"
            "        open(started, 'w').close()\n"
            "    if released:\n"
            "        break\n"
            "    assert rounds < 3000, 'the test never opened the gate'\n"
            "    time.sleep(0.1)"),
        nbformat.v4.new_code_cell(f"import kale\nkale.record('total', total)\n{record}"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "loop.ipynb"
    nbformat.write(nb, path)
    return path


def run_code(kc: Any, code: str) -> str:
    """Execute ``code`` on the kernel's main shell; return what it printed."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=60, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def steer(client: Any, run: Any, tmp_path: Path) -> int:
    """Attach once the loop runs (``run["loop"].kernel()``, as in a notebook), read
    ``total``, set ``step`` to 1000, then let the loop end; returns what was read."""
    wait_until(started(tmp_path).exists, what="the loop to start")
    wait_until(lambda: _has_kernel(client, run.id), what="the kernel to be announced")
    kc = run["loop"].kernel(timeout=60)
    try:
        first = run_code(kc, "print(total)")
        run_code(kc, "step = 1000")
    finally:
        kc.stop_channels()
    gate(tmp_path).touch()
    return int(first)


def _has_kernel(client: Any, run_id: str, name: str = "loop") -> bool:
    try:
        client.kernel_info(run_id, name)
    except Exception:
        return False
    return True


def submit_loop(client: Any, tmp_path: Path, name: str, *,
                executor: str | dict[str, Any] | None = None,
                wait: bool = True) -> Any:
    """Submit a workflow whose one task, ``loop``, is :func:`loop_notebook`; with
    ``wait``, return once the loop has started and its kernel is announced."""
    wf = Workflow(name, base_dir=tmp_path, executor=executor)
    wf.notebook("loop", str(loop_notebook(tmp_path)))
    run = client.submit(wf)
    if wait:
        wait_until(started(tmp_path).exists, what="the loop to start")
        wait_until(lambda: _has_kernel(client, run.id), what="the kernel to be announced")
    return run


def test_attach_reads_and_steers_a_running_notebook_task(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "steer", wait=False)
        read = steer(client, run, tmp_path)
        assert read > 0  # the loop was part way through
        assert run.wait(120).state.value == "SUCCEEDED"
        total = run.result("loop")["total"]
    # The rounds after the change added 1000 each: the person's change steered it.
    assert total > 1000 and total % 1000 != 0, total


def test_kernel_info_only_for_the_owner_and_only_while_it_runs(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "who")
        url = f"{m.url}/api/runs/{run.id}/tasks/loop/kernel"
        assert httpx.get(url, verify=m.tls).status_code == 401
        assert httpx.get(url, headers=m.headers("worker-token"), verify=m.tls).status_code == 401
        info = httpx.get(url, headers=m.headers(), verify=m.tls).json()
        assert info["ip"] == "127.0.0.1" and info["key"] and info["signature_scheme"]
        gate(tmp_path).touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        gone = httpx.get(url, headers=m.headers(), verify=m.tls)
        assert gone.status_code == 404 and "no running kernel" in gone.json()["detail"]


def test_kale_attach_opens_a_console_on_the_task(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "console")
        console = subprocess.run(
            [sys.executable, "-m", "kale.cli.main", "attach", run.id, "loop"],
            input="print('seen', total > 0)\nstep = 1000\nexit\n", capture_output=True,
            text=True, timeout=120, env={**kale.env(), "TERM": "dumb"})
        gate(tmp_path).touch()
        assert console.returncode == 0, console.stderr
        assert "seen True" in console.stdout, console.stdout
        assert "attached to loop" in console.stderr
        assert run.wait(120).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000
    assert not list((home / "attach").glob("*.json"))  # the key is not left behind


def test_attach_errors_are_clear(kale: Kale, home: Path, tmp_path: Path,
                                 managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("plain", base_dir=tmp_path)
    wf.shell("quick", "true")
    with m.client() as client:
        run = client.submit(wf).wait(120)
    out = kale("attach", run.id, "quick")
    assert out.returncode == 2 and "has no running kernel" in out.stderr, out.stderr
    out = kale("attach", "nosuchrun", "quick")
    assert out.returncode == 2 and "no run 'nosuchrun'" in out.stderr, out.stderr


@pytest.mark.timeout(400)
def test_attach_to_a_notebook_task_in_a_slurm_job(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "steer-slurm", executor="slurm", wait=False)
        assert steer(client, run, tmp_path) > 0
        assert run.wait(120).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000
    doc = json.loads(kale("status", run.id, "loop", "--json").stdout)
    assert doc["attempts"][0]["worker"]  # ran on the worker inside the job


def test_a_shutdown_request_from_outside_leaves_the_task_running(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """The kernel is the task's: a person's "shut down kernel" (or a server that stops)
    is answered, not obeyed, and the task goes on to its end."""
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "shutdown")
        kc = run["loop"].kernel(timeout=60)
        try:
            kc.shutdown()
            reply = kc.get_control_msg(timeout=60)
            assert reply["msg_type"] == "shutdown_reply"
            assert run_code(kc, "print(total > 0)").strip() == "True"  # still there
        finally:
            kc.stop_channels()
        gate(tmp_path).touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        result = run.result("loop")
        assert result["total"] == result["rounds"] > 0  # every round ran, undisturbed


def test_a_failed_tasks_kernel_is_kept_for_debugging(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """``debug_for``: the failing notebook's kernel stays up, with the failure's state in
    its namespace, for a person to attach to; then it goes."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("data = [1, 2, 3]\nfactor = 7"),
                nbformat.v4.new_code_cell("scaled = [x * factor for x in data]\ndata[10]")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    m = managers("--workers", "1")
    wf = Workflow("debug", base_dir=tmp_path)
    # The kernel goes debug_for seconds after the failure, by the clock (nothing ends it
    # sooner): long enough for this test to attach on a loaded machine, which takes a few
    # seconds at most. Then the test waits for it to go.
    wf.notebook("broken", "broken.ipynb", debug_for=30)
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(120).state.value == "FAILED"
        doc = task(client, run.id, "broken")
        assert doc["error"].startswith("cell 1: IndexError: list index out of range")
        assert f"kale attach {run.id} broken" in doc["error"]
        kc = run["broken"].kernel(timeout=60)
        try:
            assert run_code(kc, "print(scaled)").strip() == "[7, 14, 21]"
        finally:
            kc.stop_channels()
        wait_until(lambda: not _has_kernel(client, run.id, "broken"), what="the kernel to go")


step = 1  # read by crunch() below through its globals: a person attached changes it


def test_a_python_task_in_a_kernel_is_attached_to_and_steered(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """``kernel:`` on a Python task runs the function in a kernel; its module-level names
    are the kernel's, so a person reads ``progress`` and changes ``step``."""
    def crunch(gate: str, started: str) -> int:
        """Adds ``step`` every 0.1 s until the test opens the gate (as loop_notebook)."""
        import os

        global progress
        progress = rounds = 0
        while True:
            released = os.path.exists(gate)  # before the step is added: see loop_notebook
            progress += step
            rounds += 1
            if rounds == 1:
                open(started, "w").close()
            if released:
                return progress
            assert rounds < 3000, "the test never opened the gate"
            time.sleep(0.1)

    m = managers("--workers", "1")
    wf = Workflow("py-kernel", base_dir=tmp_path)
    wf.python(crunch, name="loop", kernel="python3",
              parameters={"gate": str(gate(tmp_path)), "started": str(started(tmp_path))})
    with m.client() as client:
        run = client.submit(wf)
        wait_until(started(tmp_path).exists, what="the function to start")
        wait_until(lambda: _has_kernel(client, run.id), what="the kernel to be announced")
        kc = run["loop"].kernel(timeout=60)
        try:
            assert int(run_code(kc, "print(progress)")) > 0
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        gate(tmp_path).touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        total = run.result("loop")
    assert total > 1000 and total % 1000 != 0, total


def test_python_tasks_in_a_kernel_return_values_and_word_errors_as_python_tasks(
        home: Path, tmp_path: Path) -> None:
    """Embedded too (no manager): the return value comes back, a failure reads like a
    Python task's, with the user's traceback."""
    def double(x: int) -> dict[str, int]:
        return {"twice": 2 * x}

    def broken() -> None:
        values: list[int] = []
        values[3]

    wf = Workflow("py-kernel-local", base_dir=tmp_path)
    wf.python(double, kernel="python3", parameters={"x": 21})
    wf.python(broken, kernel="python3")
    run = wf.run().wait(120)
    assert run.result("double") == {"twice": 42}
    rec = run["broken"].record
    assert rec.error == "IndexError: list index out of range"
    assert "values[3]" in (rec.traceback or "")


def test_a_kernel_on_another_host_is_reached_through_an_ssh_tunnel(
        ssh_host: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    """What a client on a login node does for a kernel on a compute node: the kernel's
    host (here an ssh alias for this machine, through a real sshd) is not this one, so
    the client forwards the kernel's ports over SSH and talks to it through them."""
    from kale.kernels.attach import connect

    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "tunnel")
        info = {**client.kernel_info(run.id, "loop"), "host": ssh_host}
        kc = connect(info, timeout=60)
        try:
            assert kc.shell_port != info["shell_port"]  # a forwarded port, not the kernel's
            assert int(run_code(kc, "print(total)")) > 0
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        gate(tmp_path).touch()
        assert run.wait(120).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000

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

pytestmark = pytest.mark.slow


def loop_notebook(path: Path, n: int = 80) -> Path:
    """A loop that adds ``step`` to ``total`` every 0.1 s, then records ``total``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f"n = {n}\nstep = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("import time\ntotal = 0\nfor i in range(n):\n"
                                  "    total += step\n    time.sleep(0.1)"),
        nbformat.v4.new_code_cell("import kale\nkale.record('total', total)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def run_code(kc: Any, code: str) -> str:
    """Execute ``code`` on the kernel's main shell; return what it printed."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(code, timeout=10, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def steer(client: Any, run: Any) -> tuple[int, float]:
    """Attach once the loop runs (``run["loop"].kernel()``, as in a notebook), read
    ``total``, set ``step`` to 1000; returns what was read and how long attaching took."""
    wait_until(lambda: task(client, run.id, "loop")["state"] == "RUNNING", 60, "RUNNING")
    wait_until(lambda: _has_kernel(client, run.id), 30, "the kernel to be announced")
    time.sleep(1.0)  # the loop has gone round a few times
    t0 = time.perf_counter()
    kc = run["loop"].kernel()
    first = run_code(kc, "print(total)")
    took = time.perf_counter() - t0
    try:
        run_code(kc, "step = 1000")
    finally:
        kc.stop_channels()
    return int(first), took


def _has_kernel(client: Any, run_id: str, name: str = "loop") -> bool:
    try:
        client.kernel_info(run_id, name)
    except Exception:
        return False
    return True


def submit_loop(client: Any, tmp_path: Path, name: str, *, n: int = 80,
                executor: str | None = None, wait: bool = True) -> Any:
    """Submit a workflow whose one task, ``loop``, is :func:`loop_notebook`; with
    ``wait``, return once its kernel is announced."""
    wf = Workflow(name, base_dir=tmp_path, executor=executor)
    wf.notebook("loop", str(loop_notebook(tmp_path / "loop.ipynb", n=n)))
    run = client.submit(wf)
    if wait:
        wait_until(lambda: _has_kernel(client, run.id), 60, "the kernel to be announced")
    return run


def test_attach_reads_and_steers_a_running_notebook_task(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "steer", wait=False)
        read, took = steer(client, run)
        assert 0 < read < 80  # the loop was part way through
        assert run.wait(60).state.value == "SUCCEEDED"
        total = run.result("loop")["total"]
    # Each of the steps after the change added 1000: the person's change steered it.
    assert total > 1000 and total % 1000 != 0, total
    assert took < 5


def test_kernel_info_only_for_the_owner_and_only_while_it_runs(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "who", n=30)
        url = f"{m.url}/api/runs/{run.id}/tasks/loop/kernel"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=m.headers("worker-token")).status_code == 401
        info = httpx.get(url, headers=m.headers()).json()
        assert info["ip"] == "127.0.0.1" and info["key"] and info["signature_scheme"]
        run.wait(60)
        gone = httpx.get(url, headers=m.headers())
        assert gone.status_code == 404 and "no running kernel" in gone.json()["detail"]


def test_kale_attach_opens_a_console_on_the_task(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "console")
        console = subprocess.run(
            [sys.executable, "-m", "kale.cli.main", "attach", run.id, "loop"],
            input="print('seen', total > 0)\nstep = 1000\nexit\n", capture_output=True,
            text=True, timeout=60, env={**kale.env(), "TERM": "dumb"})
        assert console.returncode == 0, console.stderr
        assert "seen True" in console.stdout, console.stdout
        assert "attached to loop" in console.stderr
        assert run.wait(60).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000
    assert not list((home / "attach").glob("*.json"))  # the key is not left behind


def test_attach_errors_are_clear(kale: Kale, home: Path, tmp_path: Path,
                                 managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "1")
    wf = Workflow("plain", base_dir=tmp_path)
    wf.shell("quick", "true")
    with m.client() as client:
        run = client.submit(wf).wait(30)
    out = kale("attach", run.id, "quick")
    assert out.returncode == 2 and "has no running kernel" in out.stderr, out.stderr
    out = kale("attach", "nosuchrun", "quick")
    assert out.returncode == 2 and "no run 'nosuchrun'" in out.stderr, out.stderr


def test_attach_to_a_notebook_task_in_a_slurm_job(
        slurm: str, kale: Kale, home: Path, tmp_path: Path,
        managers: Callable[..., Manager]) -> None:
    m = managers("--workers", "0")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "steer-slurm", executor="slurm", wait=False)
        read, _took = steer(client, run)
        assert 0 < read < 80
        assert run.wait(90).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000
    doc = json.loads(kale("status", run.id, "loop", "--json").stdout)
    assert doc["attempts"][0]["worker"]  # ran on the worker inside the job


def test_a_shutdown_request_from_outside_leaves_the_task_running(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """The kernel is the task's: a person's "shut down kernel" (or a server that stops)
    is answered, not obeyed, and the task goes on to its end."""
    m = managers("--workers", "1")
    with m.client() as client:
        run = submit_loop(client, tmp_path, "shutdown", n=40)
        kc = run["loop"].kernel()
        try:
            kc.shutdown()
            reply = kc.get_control_msg(timeout=10)
            assert reply["msg_type"] == "shutdown_reply"
            assert run_code(kc, "print(total > 0)").strip() == "True"  # still there
        finally:
            kc.stop_channels()
        assert run.wait(60).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] == 40


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
    wf.notebook("broken", "broken.ipynb", debug_for=4)
    with m.client() as client:
        run = client.submit(wf)
        assert run.wait(60).state.value == "FAILED"
        doc = task(client, run.id, "broken")
        assert doc["error"].startswith("cell 1: IndexError: list index out of range")
        assert f"kale attach {run.id} broken" in doc["error"]
        kc = run["broken"].kernel()
        try:
            assert run_code(kc, "print(scaled)").strip() == "[7, 14, 21]"
        finally:
            kc.stop_channels()
        wait_until(lambda: not _has_kernel(client, run.id, "broken"), 30, "the kernel to go")


step = 1  # read by crunch() below through its globals: a person attached changes it


def test_a_python_task_in_a_kernel_is_attached_to_and_steered(
        kale: Kale, home: Path, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """``kernel:`` on a Python task runs the function in a kernel; its module-level names
    are the kernel's, so a person reads ``progress`` and changes ``step``."""
    def crunch(n: int) -> int:
        global progress
        progress = 0
        for _ in range(n):
            progress += step
            time.sleep(0.1)
        return progress

    m = managers("--workers", "1")
    wf = Workflow("py-kernel", base_dir=tmp_path)
    wf.python(crunch, name="loop", kernel="python3", parameters={"n": 60})
    with m.client() as client:
        run = client.submit(wf)
        wait_until(lambda: _has_kernel(client, run.id), 60, "the kernel to be announced")
        time.sleep(1.0)
        kc = run["loop"].kernel()
        try:
            assert 0 < int(run_code(kc, "print(progress)")) < 60
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        assert run.wait(60).state.value == "SUCCEEDED"
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
    run = wf.run().wait(60)
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
        kc = connect(info, timeout=30)
        try:
            assert kc.shell_port != info["shell_port"]  # a forwarded port, not the kernel's
            assert int(run_code(kc, "print(total)")) > 0
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        assert run.wait(60).state.value == "SUCCEEDED"
        assert run.result("loop")["total"] > 1000

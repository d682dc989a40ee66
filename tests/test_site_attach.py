"""Attaching to a running task's kernel at an SSH site: the kernel's ports as the site's
host sees them, forwarded here by the site's one SSH master connection, never reached
directly (the test site is this machine, so a direct connection would work too: the tests
prove it did not happen). Read a variable of the running task, set one that steers it,
open its gate, see the change in its result; the same after the SSH master is SIGKILLed
mid-attach; and `kale attach --site` as a person would use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, process_alive, wait_until
from sitekit import (  # noqa: F401 (the fixtures site and site_host)
    SiteUnderTest,
    site_fixture,
    site_host_fixture,
)
from test_attach import loop_notebook, run_code

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def loop_project(tmp_path: Path, site: SiteUnderTest) -> Path:
    """A workflow directory with one notebook task, ``loop``: it adds ``step`` to
    ``total`` every 0.1 s until the test creates the gate at the site, then records
    ``total`` and ``who`` (the user it ran as). After its first round it creates the
    ``started`` file at the site."""
    d = tmp_path / "project"
    d.mkdir()
    loop_notebook(d, f"{site.abs_home}/gate", f"{site.abs_home}/started",
                  record="kale.record('who', getpass.getuser())")
    (d / "wf.yaml").write_text("name: site-loop\ntasks:\n  loop:\n    notebook: loop.ipynb\n")
    return d


def start_loop(kale: Kale, site: SiteUnderTest, tmp_path: Path) -> Any:
    """The loop, run at the site from Python; once it runs and its kernel is announced."""
    import kale as k

    run = k.Workflow.from_yaml(loop_project(tmp_path, site) / "wf.yaml").run(
        site="hpc", home=kale.home)
    wait_until(lambda: site.sh(f"test -e {site.abs_home}/started").returncode == 0,
               what="the loop to start at the site")
    wait_until(lambda: _has_kernel(run), what="the kernel to be announced")
    return run


def _has_kernel(run: Any) -> bool:
    try:
        run.source.client.kernel_info(run.id, "loop")
    except Exception:
        return False
    return True


def listener(port: int) -> int | None:
    """The pid of the process listening on 127.0.0.1:``port`` (None: nothing listens)."""
    done = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True,
                          text=True, timeout=30, check=True)
    if "pid=" not in done.stdout:
        return None
    return int(done.stdout.split("pid=", 1)[1].split(",", 1)[0])


def ports(kc: Any) -> dict[str, int]:
    return {name: int(getattr(kc, name)) for name in
            ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")}


def finish(run: Any, site: SiteUnderTest) -> dict[str, Any]:
    assert site.sh(f"touch {site.abs_home}/gate").returncode == 0
    assert run.wait(120).state.value == "SUCCEEDED"
    return dict(run.result("loop"))


def test_attach_to_a_kernel_at_a_site_goes_through_its_ssh(
        kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:

    run = start_loop(kale, site, tmp_path)
    try:
        source = run.source
        info = source.client.kernel_info(run.id, "loop")
        kc = run["loop"].kernel(timeout=60)  # the handle's own way, as a notebook does
        try:
            # The client talks to local ports that the site's SSH master listens on
            # (forwards to the kernel's ports at the site), not to the kernel's own ports.
            here = ports(kc)
            assert kc.ip == "127.0.0.1" and here == kc.forwards.local
            assert not set(here.values()) & {int(info[n]) for n in here}
            master = source.site.link.master_pid()
            assert master is not None
            assert {listener(p) for p in here.values()} == {master}
            title = Path(f"/proc/{master}/cmdline").read_bytes()
            assert title.startswith(b"ssh: ") and b"[mux]" in title  # ssh's master
            # the task's variables, in the site user's kernel; a change steers it
            assert int(run_code(kc, "print(total)")) > 0
            assert run_code(kc, "print(getpass.getuser())").strip() == "kale-other"
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        # stopping the client removed the forwards; the master connection stays
        assert all(listener(p) is None for p in here.values())
        assert source.site.link.master_pid() == master
        result = finish(run, site)
    finally:
        run.close()
    assert result["who"] == "kale-other"
    assert result["total"] > 1000 and result["total"] % 1000 != 0, result


def test_an_attached_client_survives_the_ssh_master_killed(
        kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    """The SSH master dies while a person is attached: the run goes on at the site, the
    forwards come back on a new master at the same local ports, and the same client
    goes on reading and steering the task."""
    from kale.sites.kernels import site_kernel

    run = start_loop(kale, site, tmp_path)
    try:
        source = run.source
        kc = site_kernel(source.site, source.client, run.id, "loop", timeout=60)
        try:
            before = int(run_code(kc, "print(total)"))
            here = ports(kc)
            old = source.site.link.master_pid()
            assert old is not None
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: not process_alive(old), what="the SSH master gone")
            new = wait_until(lambda: {listener(p) for p in here.values()} - {None, old},
                             what="the kernel's ports forwarded by a new master")
            assert new == {source.site.link.master_pid()}
            assert int(run_code(kc, "print(total)")) > before
            run_code(kc, "step = 1000")
        finally:
            kc.stop_channels()
        result = finish(run, site)
    finally:
        run.close()
    assert result["total"] > 1000 and result["total"] % 1000 != 0, result


def test_kale_attach_at_a_site(kale: Kale, site: SiteUnderTest, tmp_path: Path) -> None:
    run = start_loop(kale, site, tmp_path)
    try:
        console = subprocess.run(
            [sys.executable, "-m", "kale.cli.main", "attach", run.id, "loop", "--site", "hpc"],
            input="print('seen', total > 0, getpass.getuser())\nstep = 1000\nexit\n",
            capture_output=True, text=True, timeout=120, env={**kale.env(), "TERM": "dumb"})
        assert console.returncode == 0, console.stderr
        assert "seen True kale-other" in console.stdout, console.stdout
        assert "attached to loop" in console.stderr
        result = finish(run, site)
    finally:
        run.close()
    assert result["total"] > 1000 and result["total"] % 1000 != 0, result
    assert not list((kale.home / "attach").glob("*.json"))  # the key is not left behind
    listed = json.loads(kale("runs", "--site", "hpc", "--json").stdout)
    assert [r["id"] for r in listed] == [run.id]

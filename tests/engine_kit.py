"""What the tests of the engine executors (Dask, Parsl) share: the task module and
notebook they run, a workflow mixing them, the CLI helpers, and the two tests that differ
only by executor: resume after the Kale process is SIGKILLed mid-run, and bad settings."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

from conftest import Kale, wait_until


class TlsCluster:
    """A running Dask cluster of the test's, over TLS with a throw-away certificate (as
    a site's would be): its scheduler's address, and the executor spec that reaches it
    (the CA and client files written, private, to ``folder``)."""

    def __init__(self, cluster: Any, security: Any, folder: Path) -> None:
        self.cluster = cluster
        self.scheduler_address: str = cluster.scheduler_address
        files = {}
        for name, pem in (("ca", security.tls_ca_file), ("cert", security.tls_client_cert),
                          ("key", security.tls_client_key)):
            path = files[name] = folder / f"{name}.pem"
            path.touch(mode=0o600)
            path.write_text(pem)
        self.security = {k: str(v) for k, v in files.items()}
        self.spec: dict[str, Any] = {"kind": "dask", "address": self.scheduler_address,
                                     "security": self.security}

    def yaml(self) -> str:
        """The spec as a YAML flow mapping."""
        return json.dumps(self.spec)

MODULE = '''
import os, time
from pathlib import Path

def produce(n):
    print("producing", n)
    import kale
    kale.record("half", n / 2)
    return {"n": n, "pid": os.getpid()}

def consume(produced, text):
    return {"sum": produced["n"] + len(text), "text": text}

def where():
    return {"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID", "")}

def wait_for(gate, note):
    """Note this start (pid, and the pid of the process that started it), then wait."""
    with open(note, "a") as f:
        f.write(f"{os.getpid()} {os.getppid()}\\n")
    end = time.monotonic() + 240
    while not os.path.exists(gate) and time.monotonic() < end:
        time.sleep(0.05)
    return "opened" if os.path.exists(gate) else "gave up"
'''

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "n = 0",
         "outputs": [], "execution_count": None},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "import kale\nkale.record('squared', n * n)\nprint('squared', n * n)"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def project(tmp_path: Path, executor: str) -> Path:
    """A workflow of a Python, a shell and a notebook task on ``executor``, and a local
    Python task using their results; returns its YAML file."""
    (tmp_path / "steps.py").write_text(MODULE)
    (tmp_path / "square.ipynb").write_text(json.dumps(NOTEBOOK))
    wf = tmp_path / "wf.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: on-dask
        executor: {executor}
        tasks:
          produce:
            python: steps:produce
            parameters: {{n: 5}}
          shout:
            shell: "echo hello from dask > said.txt; echo said it"
            outputs: [said.txt]
          square:
            notebook: square.ipynb
            parameters: {{n: "${{produce.n}}"}}
          consume:
            python: steps:consume
            executor: local
            after: [shout]
            parameters: {{produced: "${{produce}}", text: "hello"}}
        """))
    return wf


def status(kale: Kale, run_id: str) -> dict[str, dict[str, Any]]:
    """``kale status RUN --json``'s tasks, by name."""
    out = kale("status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return {t["name"]: t for t in json.loads(out.stdout)["tasks"]}


def states(run: Any) -> dict[str, str]:
    """The states of an in-process run's tasks, by name."""
    return {t["name"]: t["state"] for t in run.status()["tasks"]}


def run_cli(kale: Kale, *args: str) -> str:
    """``kale run ARGS``, which must succeed; returns the run's id."""
    out = kale("run", *args, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()[0]


def start_and_kill(kale: Kale, tmp_path: Path, executor: str) -> str:
    """Run two chained tasks on ``executor`` with ``kale run --embedded`` and SIGKILL it
    once the second has started (the first has succeeded); returns the run's id."""
    (tmp_path / "steps.py").write_text(MODULE)
    (tmp_path / "open").touch()
    wf = tmp_path / "wf.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: resume-on-engine
        executor: {executor}
        tasks:
          first:
            python: steps:wait_for
            parameters: {{gate: {str(tmp_path / 'open')!r}, note: {str(tmp_path / 'f')!r}}}
          second:
            python: steps:wait_for
            after: [first]
            parameters: {{gate: {str(tmp_path / 'gate')!r}, note: {str(tmp_path / 's')!r}}}
        """))
    proc = kale.popen("run", str(wf), "--embedded")
    wait_until(lambda: (tmp_path / "s").is_file(), what="the second task started")
    run_id: str = json.loads(kale("runs", "--json").stdout)[0]["id"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()  # (the engine's processes it started may hold its pipes open)
    for pipe in (proc.stdout, proc.stderr):
        assert pipe is not None
        pipe.close()
    assert status(kale, run_id)["first"]["state"] == "SUCCEEDED"
    return run_id


def resume_and_check(kale: Kale, tmp_path: Path, run_id: str) -> None:
    """Let the second task of :func:`start_and_kill`'s run end and resume the run: the
    second task succeeds, and the first, which had succeeded, never ran again."""
    (tmp_path / "gate").touch()
    out = kale("resume", run_id, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert status(kale, run_id)["second"]["state"] == "SUCCEEDED"
    assert len((tmp_path / "f").read_text().splitlines()) == 1


def check_bad_settings(kale: Kale, tmp_path: Path, invalid: str, problems: list[str],
                       unloadable: str, error: str) -> str:
    """``kale validate`` of a workflow whose executor is ``invalid`` names each of
    ``problems``; ``kale run`` of one whose executor is ``unloadable`` stops at once with
    ``error`` and no traceback (exit 2). Returns what that run printed."""
    (tmp_path / "steps.py").write_text(MODULE)
    wf = tmp_path / "bad.yaml"
    wf.write_text(f"name: bad\nexecutor: {invalid}\ntasks:\n  a: {{python: 'steps:where'}}\n")
    out = kale("validate", str(wf))
    assert out.returncode == 2
    for problem in problems:
        assert problem in out.stderr
    wf.write_text(f"name: bad\nexecutor: {unloadable}\n"
                  "tasks:\n  a: {python: 'steps:where'}\n")
    out = kale("run", str(wf))
    assert out.returncode == 2
    assert error in out.stderr
    assert "Traceback" not in out.stderr
    return out.stdout


def kill_orphans(tmp_path: Path) -> None:
    """What the engine of a killed `kale run` left running (its cluster's or Parsl's
    processes and their children), found by their working directory: the test's folder."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(tmp_path) or cwd.startswith(f"{tmp_path}/"):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)

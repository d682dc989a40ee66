"""Docs examples are tests: the example notebook and the README quickstart run for real."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, Kale, Manager, wait_until

# The examples run whole workflows through real commands, kernels and managers; each
# command's timeout is a safety net of a minute or more, and together they may exceed the
# default 120 s per test on a loaded machine.
pytestmark = pytest.mark.timeout(400)


def test_quickstart_notebook_executes(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", work)
    nb = nbformat.read(work / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", {}) for o in outputs])
    assert "SUCCEEDED" in text and "1807" in text  # the run's table and its summary


def readme_commands() -> list[list[str]]:
    """The `$ kale ...` lines of the README's quickstart block."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(m) for m in re.findall(r"^\$ (kale .+)$", block, re.M)]


def test_readme_quickstart_commands_work(kale: Kale, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    commands = readme_commands()
    assert commands and commands[0][:2] == ["kale", "run"]
    for argv in commands:
        out = kale(*argv[1:])
        assert out.returncode == 0, (argv, out.stderr)
    last = json.loads(kale("status", "--json").stdout)
    assert last["run"]["state"] == "SUCCEEDED"


def test_readme_manager_section_works(kale: Kale, home: Path, tmp_path: Path) -> None:
    """Start the manager, submit from one Python process that then exits (a notebook
    closed), re-attach from another: the README's manager section, run as written."""
    import socket
    import subprocess
    import sys

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    text = (ROOT / "README.md").read_text()
    section = text.split("## The manager and workers", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(m) for m in re.findall(r"^\$ (kale .+?)(?:\s+#.*)?$", section,
                                                   re.M)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert [c[:2] for c in commands] == [["kale", "manager"], ["kale", "run"]]
    assert len(blocks) == 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    try:
        for argv in commands:
            extra = ["--port", port] if argv[1] == "manager" else []
            out = kale(*argv[1:], *extra)
            assert out.returncode == 0, (argv, out.stderr)
        env = kale.env()
        submit = ("from kale import Workflow\n"
                  "wf = Workflow.from_yaml('examples/quickstart/workflow.yaml')\n"
                  + blocks[0] + "\nprint(run.id)\n")
        first = subprocess.run([sys.executable, "-c", submit], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        run_id = first.stdout.split()[-1]
        attach = re.sub(r'"\d{8}-\d{6}-[0-9a-f]+"', repr(run_id), blocks[1])
        second = subprocess.run([sys.executable, "-c", attach + "\nprint(run.result("
                                 "'summarize'))\n"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert "1807" in second.stdout  # the quickstart's summary
    finally:
        kale("manager", "stop")


@pytest.mark.slow
def test_readme_batch_section_works(slurm: str, kale: Kale, home: Path,
                                    tmp_path: Path) -> None:
    """The README's batch queue commands, as written, against the test Slurm cluster (the
    `sudo` lines start and stop a cluster, which the test suite has done already)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    text = (ROOT / "README.md").read_text()
    section = text.split("## Batch queues", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(m) for m in re.findall(r"^\$ (kale .+?)(?:\s+#.*)?$", section,
                                                   re.M)]
    assert [c[:2] for c in commands] == [["kale", "run"], ["kale", "queue"]]
    try:
        run = kale(*commands[0][1:], timeout=300)  # Slurm jobs, a manager
        assert run.returncode == 0, run.stderr
        queue = kale(*commands[1][1:])
        assert queue.returncode == 0 and "partitions" in queue.stdout, queue.stderr
        doc = json.loads(kale("status", run.stdout.strip(), "--json").stdout)
        assert {t["name"]: t["state"] for t in doc["tasks"]} == dict.fromkeys(
            ("simulate", "measure_a", "measure_b", "report"), "SUCCEEDED")
        report = kale("logs", run.stdout.strip(), "report").stdout.split("\n")
        assert sorted(r for r in report if r) == ["rank 0 of 2", "rank 1 of 2"]
    finally:
        kale("manager", "stop")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_readme_engines_section_works(kale: Kale, tmp_path: Path) -> None:
    """The README's Dask and Parsl examples, as written: each runs to the end, its ensemble
    members on the engine and its summary here, and the YAML shown is the example's own."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    text = (ROOT / "README.md").read_text()
    section = text.split("## Existing engines", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"```yaml\n(.*?)```", section, re.S)[0].splitlines()
    example = (ROOT / "examples" / "engines" / "dask.yaml").read_text().splitlines()
    assert set(shown) <= set(example)  # the README shows a part of the file, unchanged
    commands = [shlex.split(m) for m in re.findall(r"^\$ (kale .+?)(?:\s+#.*)?$", section,
                                                   re.M)]
    assert [c[:3] for c in commands] == [["kale", "run", "examples/engines/dask.yaml"],
                                         ["kale", "run", "examples/engines/parsl.yaml"]]
    for command, engine in zip(commands, ("dask:", "parsl:"), strict=True):
        run = kale(*command[1:], timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        run_id = run.stdout.split()[0]
        doc = json.loads(kale("status", run_id, "--json").stdout)
        assert {t["state"] for t in doc["tasks"]} == {"SUCCEEDED"}
        assert kale.attempts(run_id, "member_1")[0]["worker"].startswith(engine)
        summary = next(t for t in doc["tasks"] if t["name"] == "summary")["result"]
        assert summary["members"] == 4 and summary["max_peak"] >= summary["mean_peak"] > 0


def test_every_yaml_block_of_the_readme_is_a_valid_workflow_or_fragment() -> None:
    """The README's YAML snippets are what users copy: each is a workflow, its task list,
    or one task, and each must validate as written (fragments inside a minimal workflow)."""
    import yaml

    from kale import Workflow

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for text in blocks:
        data = yaml.safe_load(text)
        if "tasks" not in data:  # one or more tasks, as under `tasks:`
            data = {"tasks": data}
        data.setdefault("name", "readme")
        for t in list(data["tasks"].values()):  # names they refer to, left out of the snippet
            for dep in t.get("after", []):
                data["tasks"].setdefault(dep, {"shell": "true"})
        Workflow.from_dict(data)


def test_readme_dashboard_section_works(home: Path, tmp_path: Path,
                                        managers: Callable[..., Manager],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's dashboard snippets, as written (outside a browser: the widgets'
    Python side; tests/test_dashboard_lab.py shows them in JupyterLab)."""
    from kale import Workflow

    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    managers("--workers", "1")
    text = (ROOT / "README.md").read_text()
    section = text.split("## Dashboard", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    ns: dict[str, Any] = {"wf": Workflow.from_yaml("examples/quickstart/workflow.yaml")}
    exec(blocks[0], ns)
    dash = ns["dash"]
    wait_until(lambda: dash.dag.run_state == "SUCCEEDED", 120, "the run, in the dashboard")
    assert set(dash.dag.states.values()) == {"SUCCEEDED"}
    exec(blocks[1], ns)
    assert (tmp_path / "plan.svg").read_text().count('class="kale-node"') == 3
    dash.close()
    from ipywidgets.widgets.widget import _instances

    from kale.widgets.base import KaleWidget

    shown = [w for w in list(_instances.values()) if isinstance(w, KaleWidget)]
    assert {type(w).__name__ for w in shown} >= {"QueueView", "WorkersView", "RunsView"}
    for w in shown:  # what a closed notebook would close: their refresh threads end
        w.close()


def test_readme_maps_section_and_its_notebook_work(kale: Kale, home: Path,
                                                   tmp_path: Path) -> None:
    """The README's maps section as written (its YAML is the example's file, its commands
    run), and the example notebook executed: a map, a condition, a task adding tasks, and
    one new file running one new member."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    text = (ROOT / "README.md").read_text()
    section = text.split("## Workflows that grow while they run", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"```yaml\n(.*?)```", section, re.S)[0]
    assert shown == (ROOT / "examples" / "maps" / "maps.yaml").read_text()
    commands = [shlex.split(m) for m in re.findall(r"^\$ (kale .+?)(?:\s+#.*)?$", section,
                                                   re.M)]
    assert len(commands) == 2
    states = []
    for command in commands:
        run = kale(*command[1:])
        assert run.returncode == 0, run.stdout + run.stderr
        doc = json.loads(kale("status", run.stdout.split()[0], "--json").stdout)
        states.append({t["name"]: t["state"] for t in doc["tasks"]})
    assert states[0]["refine"] == "SUCCEEDED" and states[0]["refine[2]"] == "SUCCEEDED"
    assert states[1]["refine"] == states[1]["report"] == "SKIPPED"

    work = tmp_path / "examples" / "maps"
    nb = nbformat.read(work / "maps.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, startup_timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(work)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown_text = json.dumps([o.get("data", {}) for o in outputs])
    assert "follow_up[check_5]" in shown_text and "['analyse[8]']" in shown_text
    assert "condition false: 0 > 0" in shown_text

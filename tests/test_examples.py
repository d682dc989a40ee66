"""Docs examples are tests: the example notebook and the README quickstart run for real."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from conftest import ROOT, Kale


def test_quickstart_notebook_executes(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", work)
    nb = nbformat.read(work / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
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

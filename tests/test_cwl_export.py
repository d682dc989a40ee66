"""CWL export (`kale export --format cwl`, :func:`kale.cwl.export.dump_cwl`): the real
cwltool validates each exported document and runs it, and what it leaves equals what
`kale run` of the same workflow leaves (output files by content, results by value)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, Kale
from kale.cwl.export import dump_cwl, to_cwl
from kale.cwl.export_plan import make_plan
from kale.spec import load_workflow

EXAMPLES = ROOT / "examples"
DATA = ROOT / "tests" / "data" / "cwl_export"


def copy_workflow(src: Path, tmp_path: Path) -> Path:
    """The folder of a workflow copied under the test's directory; its YAML file."""
    dest = tmp_path / src.parent.name
    shutil.copytree(src.parent, dest, ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    return dest / src.name


def export(wf_yaml: Path, tmp_path: Path) -> Path:
    out = tmp_path / "wf.cwl"
    out.write_text(dump_cwl(load_workflow(wf_yaml)))
    return out


def cwltool(tmp_path: Path, *args: str, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    tmp = tmp_path / "cwltool-tmp"
    tmp.mkdir(exist_ok=True)
    return subprocess.run(
        ["cwltool", "--tmpdir-prefix", f"{tmp}/t", "--tmp-outdir-prefix", f"{tmp}/o", *args],
        capture_output=True, text=True, timeout=timeout)


def validate(cwl: Path, tmp_path: Path) -> None:
    out = cwltool(tmp_path, "--validate", str(cwl))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "is valid CWL" in out.stdout + out.stderr


def run_cwl(cwl: Path, tmp_path: Path, *args: str) -> dict[str, Any]:
    """cwltool's output object (each workflow output: a File/Directory, or a list)."""
    outdir = tmp_path / "cwl-out"
    out = cwltool(tmp_path, "--outdir", str(outdir), str(cwl), *args)
    assert out.returncode == 0, out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run_kale(kale: Kale, wf_yaml: Path, *args: str) -> dict[str, dict[str, Any]]:
    """`kale run`'s tasks, by name (state, result...), from `kale status --json`."""
    out = kale("run", str(wf_yaml), *args, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(kale("status", out.stdout.strip(), "--json").stdout)
    assert status["run"]["state"] == "SUCCEEDED"
    return {t["name"]: t for t in status["tasks"]}


def contents(value: Any) -> Any:
    """The text of a cwltool output (a file, or a list of them), or a Kale output path
    (or comma-joined paths)."""
    if isinstance(value, list):
        return sorted(contents(v) for v in value)
    if isinstance(value, dict):
        return Path(value["path"]).read_text()
    paths = str(value).split(",")
    if len(paths) > 1:
        return sorted(Path(p).read_text() for p in paths)
    return Path(paths[0]).read_text()


def cwl_result(outputs: dict[str, Any], task: str) -> Any:
    return json.loads(Path(outputs[f"{task}__kale_result"]["path"]).read_text())["result"]


def assert_same_outputs(wf_yaml: Path, kale_tasks: dict[str, dict[str, Any]],
                        outputs: dict[str, Any]) -> None:
    """Every declared output of every shell and notebook task has the same content both
    ways, every Python task's result is the same value, and so are the values a notebook
    recorded."""
    wf = load_workflow(wf_yaml)
    sources = {spec["outputSource"]: out_id
               for out_id, spec in to_cwl(wf)["$graph"][0]["outputs"].items()}
    plan = make_plan(wf, "python3")
    for name, task in wf.tasks.items():
        result = kale_tasks[name]["result"]
        if task.kind == "python":
            assert cwl_result(outputs, name) == result, name
            continue
        for pattern, port in plan.outs[name].items():
            assert contents(outputs[sources[f"{name}/{port}"]]) == contents(result[pattern]), \
                (name, pattern)
        if task.kind == "notebook":
            values = {k: v for k, v in (cwl_result(outputs, name) or {}).items()
                      if k not in task.outputs}
            assert values == {k: v for k, v in (result or {}).items() if k not in task.outputs}


@pytest.mark.slow
def test_quickstart_exports_validates_and_runs_as_kale_runs(kale: Kale, tmp_path: Path
                                                            ) -> None:
    wf_yaml = copy_workflow(EXAMPLES / "quickstart" / "workflow.yaml", tmp_path)
    cwl = export(wf_yaml, tmp_path)
    validate(cwl, tmp_path)
    outputs = run_cwl(cwl, tmp_path)
    assert cwl_result(outputs, "summarize") == {"count": 3, "total": 1 + 42 + 42**2,
                                                "largest": 42**2}
    assert_same_outputs(wf_yaml, run_kale(kale, wf_yaml), outputs)

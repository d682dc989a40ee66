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
from kale.errors import UsageError
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


def run_cwl(cwl: Path, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """cwltool's output object (each workflow output: a File/Directory, or a list), and
    its log."""
    outdir = tmp_path / "cwl-out"
    out = cwltool(tmp_path, "--outdir", str(outdir), str(cwl), *args)
    assert out.returncode == 0 and out.stdout.startswith("{"), out.stdout + out.stderr[-4000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result, out.stderr


def run_kale(kale: Kale, wf_yaml: Path, *args: str) -> dict[str, dict[str, Any]]:
    """`kale run`'s tasks, by name (state, result...), from `kale status --json`."""
    out = kale("run", str(wf_yaml), *args, timeout=300)
    assert out.returncode == 0, out.stderr
    shown = kale("status", out.stdout.strip(), "--json")
    assert shown.stdout.startswith("{"), shown.stdout + shown.stderr
    status = json.loads(shown.stdout)
    assert status["run"]["state"] == "SUCCEEDED"
    return {t["name"]: t for t in status["tasks"]}


def contents(value: Any) -> Any:
    """The text of a cwltool output (a file, or a list of them), or a Kale output path
    (or comma-joined paths)."""
    if isinstance(value, list):
        return sorted(contents(v) for v in value)
    if isinstance(value, dict):
        return contents(value["path"])
    paths = str(value).split(",")
    if len(paths) > 1:
        return sorted(contents(p) for p in paths)
    path = Path(paths[0])
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_text() for p in path.rglob("*") if p.is_file()}
    return path.read_text()


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
def test_quickstart_exported_by_the_cli_validates_and_runs_as_kale_runs(
        kale: Kale, tmp_path: Path) -> None:
    """`kale export --format cwl > wf.cwl`, `cwltool --validate wf.cwl`, `cwltool wf.cwl`
    (no job file): what it leaves is what `kale run` leaves."""
    wf_yaml = copy_workflow(EXAMPLES / "quickstart" / "workflow.yaml", tmp_path)
    out = kale("export", str(wf_yaml), "--format", "cwl")
    assert out.returncode == 0, out.stderr
    cwl = tmp_path / "wf.cwl"
    cwl.write_text(out.stdout)
    validate(cwl, tmp_path)
    outputs, _ = run_cwl(cwl, tmp_path)
    assert cwl_result(outputs, "summarize") == {"count": 3, "total": 1 + 42 + 42**2,
                                                "largest": 42**2}
    # the executed notebook is kept, as with a Kale run
    executed = json.loads(Path(outputs["analyse__kale_notebook"]["path"]).read_text())
    assert any("value=42" in "".join(o.get("text", "")) for c in executed["cells"]
               for o in c.get("outputs", []))
    assert_same_outputs(wf_yaml, run_kale(kale, wf_yaml), outputs)


def test_the_cli_refuses_what_has_no_cwl_form_with_exit_2(kale: Kale, tmp_path: Path) -> None:
    wf_yaml = write(tmp_path, "name: refused\ntasks:\n  look: {notebook: step.ipynb, "
                    "interactive: true}\n")
    out = kale("export", str(wf_yaml), "--format", "cwl")
    assert out.returncode == 2 and not out.stdout
    assert "task 'look' cannot be written as CWL: it is an interactive step" in out.stderr


@pytest.mark.slow
def test_pipeline_of_shell_python_and_notebook_tasks_runs_as_kale_runs(
        kale: Kale, tmp_path: Path) -> None:
    """Files and values flow downstream: a command line and an argv list reading workflow
    parameters (a string with two spaces, an int, a bool, a float) and an upstream file,
    a glob's files, a Python task whose result a shell command and a notebook read, and a
    last Python task given every kind of result. A parameter set on both command lines."""
    wf_yaml = copy_workflow(DATA / "pipeline" / "workflow.yaml", tmp_path)
    cwl = export(wf_yaml, tmp_path)
    validate(cwl, tmp_path)
    job = tmp_path / "job.yml"
    job.write_text("n: 6\n")
    outputs, log = run_cwl(cwl, tmp_path, str(job))
    kale_tasks = run_kale(kale, wf_yaml, "-p", "n=6")
    assert cwl_result(outputs, "final") == {
        "above": [4, 5, 6], "count": 6,
        "total": ["21", "flag=true", "ratio=0.5", "n=n=6", "$(literal)", "\\", "${x}"],
        "report": "mean=3.5 parts=2 word=hello  world cost: $(none) ${none}", "sum": 21}
    assert_same_outputs(wf_yaml, kale_tasks, outputs)
    # what a task wrote on stdout reaches cwltool's log, as it reaches Kale's
    assert "task make: 6 numbers" in log
    assert "task make: 6 numbers" in kale("logs", "latest", "make").stdout


@pytest.mark.parametrize("example", sorted(p.parent.name
                                           for p in EXAMPLES.glob("*/workflow.yaml")))
def test_every_example_exports_to_valid_cwl(example: str, tmp_path: Path) -> None:
    wf_yaml = copy_workflow(EXAMPLES / example / "workflow.yaml", tmp_path)
    validate(export(wf_yaml, tmp_path), tmp_path)


def test_what_cwl_does_not_carry_is_listed_at_the_top(tmp_path: Path) -> None:
    """The batch example's executors and retries have no CWL form: the document says so;
    its srun launcher starts the command as in Kale, its resources are a hint."""
    wf = load_workflow(copy_workflow(EXAMPLES / "batch" / "workflow.yaml", tmp_path))
    text = dump_cwl(wf)
    header = text[:text.index("cwlVersion:")]
    assert "Not carried into CWL" in header
    assert "the workflow's executor ('slurm')" in header
    assert "task 'measure_a': executor" in header
    assert "task 'simulate': retries 1" in header
    tools = {t["id"]: t for t in to_cwl(wf)["$graph"][1:]}
    assert tools["tool_report"]["baseCommand"][:3] == ["srun", "--nodes=1", "--ntasks=2"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf" / "workflow.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    (path.parent / "mod.py").write_text("def f():\n    return {'x': 1}\n")
    (path.parent / "step.ipynb").write_text(json.dumps({
        "cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


REFUSED = {
    "interactive": ("tasks:\n  look: {notebook: step.ipynb, interactive: true}\n",
                    "task 'look' cannot be written as CWL: it is an interactive step"),
    "site": ("tasks:\n  far: {shell: 'true', site: hpc}\n",
             "task 'far' cannot be written as CWL: it runs at site 'hpc'"),
    "shell record": ("tasks:\n  a: {shell: kale record x 1}\n  b: {shell: 'echo ${a.x}'}\n",
                     "task 'b' cannot be written as CWL: it refers to ${a.x}, a value a "
                     "shell task records"),
    "glob": ("tasks:\n  a: {shell: touch x.txt, outputs: ['*.txt']}\n"
             "  b: {shell: 'cat ${a.*.txt}'}\n",
             "it refers to ${a.*.txt}, the files of a glob"),
    "whole result": ("tasks:\n  a: {python: 'mod:f'}\n  b: {shell: 'echo $v', "
                     "parameters: {v: '${a}'}}\n",
                     "task 'b' cannot be written as CWL: it refers to ${a}, a whole result"),
    "all parameters": ("parameters: {n: 1}\ntasks:\n  b: {shell: 'echo $v', "
                       "parameters: {v: '${params}'}}\n",
                       "task 'b' cannot be written as CWL: it refers to ${params}, every "
                       "workflow parameter at once"),
    "nested": ("tasks:\n  a: {python: 'mod:f'}\n  b: {shell: 'echo $v', "
               "parameters: {v: ['${a.x}']}}\n",
               "task 'b' cannot be written as CWL: its parameter 'v' holds references "
               "inside a list"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_has_no_cwl_form_is_refused_naming_task_and_feature(case: str, tmp_path: Path
                                                                 ) -> None:
    text, message = REFUSED[case]
    wf = load_workflow(write(tmp_path, "name: refused\n" + text))
    with pytest.raises(UsageError) as e:
        dump_cwl(wf)
    assert message in str(e.value)


MODULE = '''
def pair():
    return {"pair": (1, 2), "n": 3}  # a tuple: JSON would change it, so it is pickled


def use(pair):
    return [*pair["pair"], pair["n"]]


def boom():
    raise ValueError("boom")
'''


@pytest.mark.slow
def test_a_result_json_cannot_hold_reaches_the_tasks_below_as_in_kale(kale: Kale,
                                                                      tmp_path: Path) -> None:
    wf_yaml = write(tmp_path, "name: pickled\ntasks:\n  pair: {python: 'mod:pair'}\n"
                    "  use: {python: 'mod:use', after: [pair]}\n"
                    "  show: {shell: 'echo ${pair.n} > n.txt', outputs: [n.txt]}\n")
    (wf_yaml.parent / "mod.py").write_text(MODULE)
    cwl = export(wf_yaml, tmp_path)
    outputs, _ = run_cwl(cwl, tmp_path)
    assert outputs["pair__kale_result"]["basename"] == "kale_result_pair.pkl"
    assert cwl_result(outputs, "use") == [1, 2, 3]
    tasks = run_kale(kale, wf_yaml)
    assert tasks["use"]["result"] == [1, 2, 3]
    assert contents(outputs["show__n_txt"]) == contents(tasks["show"]["result"]["n.txt"]) \
        == "3\n"


def test_a_failing_task_fails_the_cwl_run_saying_why(tmp_path: Path) -> None:
    wf_yaml = write(tmp_path, "name: failing\ntasks:\n  bad: {python: 'mod:boom'}\n"
                    "  never: {shell: 'touch x', after: [bad], outputs: [x]}\n")
    (wf_yaml.parent / "mod.py").write_text(MODULE)
    out = cwltool(tmp_path, "--outdir", str(tmp_path / "out"), str(export(wf_yaml, tmp_path)))
    assert out.returncode != 0
    assert "kale: task 'bad' failed: ValueError: boom" in out.stderr
    assert not (tmp_path / "out" / "x").exists()


@pytest.mark.slow
def test_parameters_whose_names_cwl_cannot_take_are_renamed_and_labelled(
        kale: Kale, tmp_path: Path) -> None:
    wf_yaml = write(tmp_path, "name: names\nparameters: {my-param: 'a  b', kale_base: 7}\n"
                    "tasks:\n  say: {shell: 'echo \"${params.my-param}\" ${params.kale_base}"
                    " > out.txt', outputs: [out.txt]}\n")
    cwl = export(wf_yaml, tmp_path)
    inputs = to_cwl(load_workflow(wf_yaml))["$graph"][0]["inputs"]
    assert inputs["my_param"] == {"type": "string", "default": "a  b", "label": "my-param"}
    assert inputs["kale_base_2"]["label"] == "kale_base"
    job = tmp_path / "job.yml"
    job.write_text("my_param: 'c  d'\n")
    outputs, _ = run_cwl(cwl, tmp_path, str(job))
    tasks = run_kale(kale, wf_yaml, "-p", "my-param=c  d")
    assert contents(outputs["say__out_txt"]) == contents(tasks["say"]["result"]["out.txt"]) \
        == "c  d 7\n"

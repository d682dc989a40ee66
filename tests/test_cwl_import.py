"""CWL in: `kale run wf.cwl job.yml`, `kale validate`, `kale cwl-runner`, as a user types
them (the real `kale` command in a subprocess, real tools run). The documents are in
tests/data/cwl_import/: a two-step pipeline whose first step's File flows into the
second, a scatter over a list of files, a shell pipe (ShellCommandRequirement), and
documents Kale refuses. The official conformance tests are test_cwl_conformance.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import Kale

DATA = Path(__file__).resolve().parent / "data" / "cwl_import"


def _result(kale: Kale, run_id: str, task: str) -> dict:
    done = kale("status", run_id, task, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["task"]["state"] == "SUCCEEDED"
    return doc["task"]


def test_pipeline_runs_with_files_flowing_between_steps(kale: Kale) -> None:
    done = kale("run", str(DATA / "pipeline.cwl"), str(DATA / "job.yml"))
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    out = _result(kale, run_id, "outputs")["result"]
    upper, count = out["upper"], out["count"]
    assert Path(upper["path"]).read_text() == "THE QUICK BROWN FOX\n"
    assert upper["basename"] == "shouted.txt"  # the step's default for its input 'label'
    assert Path(count["path"]).read_text().strip() == "4"
    assert count["basename"] == "shouted.count"
    data = Path(count["path"]).read_bytes()
    assert count["checksum"] == "sha1$" + hashlib.sha1(data).hexdigest()
    assert count["size"] == len(data)


def test_a_sub_workflow_runs_as_tasks_of_the_run(kale: Kale) -> None:
    """A step that runs a Workflow: its steps are tasks of the one run (named after the
    step), and the step below reads the sub-workflow's output."""
    done = kale("run", str(DATA / "nested.cwl"), str(DATA / "job.yml"))
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    status = json.loads(kale("status", run_id, "--json").stdout)
    assert {t["name"] for t in status["tasks"]} == {
        "inner-in", "inner-shout", "inner-count", "inner", "recount", "outputs"}
    again = _result(kale, run_id, "outputs")["result"]["again"]
    assert again["basename"] == "shouted.count"
    assert Path(again["path"]).read_text().strip() == "4"


def test_a_second_run_reuses_the_steps(kale: Kale) -> None:
    args = ("run", str(DATA / "pipeline.cwl"), str(DATA / "job.yml"))
    first = kale(*args)
    second = kale(*args)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    reused = _result(kale, second.stdout.strip(), "count")
    assert reused["reused_from"] == first.stdout.strip()


def test_a_changed_input_file_runs_its_steps_again(kale: Kale, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("one two\n")
    args = ("run", str(DATA / "count.cwl"), "-p", f"text={text}")
    first, second = kale(*args), kale(*args)
    assert _result(kale, second.stdout.strip(), "count")["reused_from"] == first.stdout.strip()
    text.write_text("one two three\n")
    third = kale(*args)
    assert third.returncode == 0, third.stderr
    done = _result(kale, third.stdout.strip(), "count")
    assert done["reused_from"] is None
    assert Path(done["result"]["count"]["path"]).read_text().strip() == "3"


def test_scatter_through_cwl_runner(kale: Kale, tmp_path: Path) -> None:
    """`kale cwl-runner` prints the output object and copies the files into --outdir."""
    done = kale("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"),
                str(DATA / "scatter.cwl"), str(DATA / "scatter-job.yml"))
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert [c["basename"] for c in counts] == ["a.count", "b.count"]
    assert [Path(c["path"]).parent for c in counts] == [tmp_path / "out"] * 2
    assert [Path(c["path"]).read_text().strip() for c in counts] == ["4", "6"]


def test_scatter_over_a_sub_workflow(kale: Kale, tmp_path: Path) -> None:
    done = kale("cwl-runner", "--quiet", "--outdir", str(tmp_path / "out"),
                str(DATA / "scatter-nested.cwl"), str(DATA / "scatter-job.yml"))
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert [c["basename"] for c in counts] == ["shouted.count", "shouted_2.count"]
    assert [Path(c["path"]).read_text().strip() for c in counts] == ["4", "6"]


def test_an_input_given_with_p(kale: Kale) -> None:
    """-p NAME=PATH gives a File input (a path read from the current directory)."""
    kale.cwd = DATA
    done = kale("run", str(DATA / "count.cwl"), "-p", "text=b.txt")
    assert done.returncode == 0, done.stderr
    out = _result(kale, done.stdout.strip(), "count")["result"]
    assert Path(out["count"]["path"]).read_text().strip() == "6"


def test_kale_runs_the_cwl_kale_exports(kale: Kale, tmp_path: Path) -> None:
    """Round trip: the quickstart (shell, Python and notebook tasks) exported as CWL and
    run as CWL by Kale gives the result `kale run workflow.yaml` gives."""
    import shutil

    here = tmp_path / "quickstart"
    shutil.copytree(Path(__file__).resolve().parents[1] / "examples" / "quickstart", here)
    exported = kale("export", str(here / "workflow.yaml"), "--format", "cwl")
    assert exported.returncode == 0, exported.stderr
    (here / "wf.cwl").write_text(exported.stdout)
    as_yaml = kale("run", str(here / "workflow.yaml"))
    as_cwl = kale("run", str(here / "wf.cwl"))
    assert as_yaml.returncode == 0 and as_cwl.returncode == 0, as_cwl.stderr
    expected = _result(kale, as_yaml.stdout.strip(), "summarize")["result"]
    outputs = _result(kale, as_cwl.stdout.strip(), "outputs")["result"]
    made = [json.loads(Path(f["path"]).read_text()) for f in outputs.values()
            if isinstance(f, dict) and f.get("basename", "").endswith(".json")]
    assert any(m.get("result") == expected for m in made if isinstance(m, dict)), made


def test_a_base_command_is_literal(kale: Kale, tmp_path: Path) -> None:
    """CWL never interpolates ``baseCommand``: the exported pipeline (whose shell steps
    run ``/bin/sh -c 'seq 1 "$count" ... "${KALE_REF_1}"'``) is valid and runs, rather
    than being refused as JavaScript."""
    import shutil

    here = tmp_path / "pipeline"
    shutil.copytree(Path(__file__).resolve().parent / "data" / "cwl_export" / "pipeline", here)
    exported = kale("export", str(here / "workflow.yaml"), "--format", "cwl")
    assert exported.returncode == 0, exported.stderr
    assert '"${KALE_REF_1}"' in exported.stdout
    (here / "wf.cwl").write_text(exported.stdout)
    checked = kale("validate", str(here / "wf.cwl"))
    assert checked.returncode == 0, checked.stderr
    done = kale("run", str(here / "wf.cwl"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_validate(kale: Kale) -> None:
    done = kale("validate", str(DATA / "pipeline.cwl"))
    assert done.returncode == 0, done.stderr
    assert "CWL Workflow 'pipeline' is valid (2 steps)" in done.stdout
    assert kale("validate", str(DATA / "pipeline.cwl"), str(DATA / "job.yml")).returncode == 0


def test_unsupported_requirement_refused_by_name(kale: Kale) -> None:
    for command in ("run", "validate"):
        done = kale(command, str(DATA / "docker.cwl"))
        assert done.returncode == 2
        assert "docker.cwl: requirement DockerRequirement is not supported" in done.stderr
        assert "Traceback" not in done.stderr


def test_javascript_refused_by_name(kale: Kale) -> None:
    done = kale("validate", str(DATA / "javascript.cwl"))
    assert done.returncode == 2
    assert "javascript.cwl" in done.stderr and "InlineJavascriptRequirement" in done.stderr
    assert "$(inputs.n + 1)" in done.stderr
    # a cwl-runner says "unsupported feature" with cwltest's code
    assert kale("cwl-runner", str(DATA / "javascript.cwl")).returncode == 33


def test_missing_input_named(kale: Kale) -> None:
    done = kale("run", str(DATA / "pipeline.cwl"))
    assert done.returncode == 2
    assert "required input 'text'" in done.stderr and "pipeline.cwl" in done.stderr
    assert "Traceback" not in done.stderr
    gone = kale("run", str(DATA / "count.cwl"), "-p", "text=/no/such/file.txt")
    assert gone.returncode == 2
    assert "input 'text': no such file: /no/such/file.txt" in gone.stderr


def test_bad_documents_named(kale: Kale, tmp_path: Path) -> None:
    cases = {
        "syntax.cwl": "class: CommandLineTool\ninputs: [\n",
        "noclass.cwl": "cwlVersion: v1.2\ninputs: []\n",
        "version.cwl": "cwlVersion: v0.9\nclass: CommandLineTool\ninputs: []\noutputs: []\n",
        "source.cwl": ("cwlVersion: v1.2\nclass: Workflow\ninputs: {}\noutputs: {}\n"
                       "steps:\n  s:\n    run: missing.cwl\n    in: {}\n    out: []\n"),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        done = kale("validate", str(tmp_path / name))
        assert done.returncode == 2, name
        assert name in done.stderr or "missing.cwl" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr, done.stderr


def test_a_failing_tool_fails_its_task(kale: Kale) -> None:
    done = kale("run", str(DATA / "fails.cwl"))
    assert done.returncode == 1
    run_id = done.stdout.strip()
    assert "the command exited with 3" in done.stderr
    logs = kale("logs", run_id, "fails", "--stderr")
    assert "going wrong" in logs.stdout
    runner = kale("cwl-runner", str(DATA / "fails.cwl"))
    assert runner.returncode == 1 and "the command exited with 3" in runner.stderr


def test_job_without_cwl_is_a_usage_error(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text("name: w\ntasks:\n  a:\n    shell: 'true'\n")
    done = kale("run", str(tmp_path / "wf.yaml"), str(DATA / "job.yml"))
    assert done.returncode == 2
    assert "goes with a CWL document" in done.stderr

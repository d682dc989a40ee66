"""The `kale` command, run as a real subprocess: exit codes, JSON output, logs, selection,
validation errors that name file and line, cancel and detach."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, Kale, gate_sh

QUICKSTART = ROOT / "examples" / "quickstart"


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    dest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, dest, ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    return dest / "workflow.yaml"


def test_quickstart_runs_and_reports(kale: Kale, quickstart: Path) -> None:
    out = kale("run", str(quickstart))
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    assert run_id and "\n" not in run_id
    status = json.loads(kale("status", run_id, "--json").stdout)
    assert status["run"]["id"] == run_id and status["run"]["workflow"] == "quickstart"
    assert status["run"]["state"] == "SUCCEEDED"
    tasks = {t["name"]: t for t in status["tasks"]}
    assert list(tasks) == ["fetch", "analyse", "summarize"]
    assert all(t["state"] == "SUCCEEDED" and t["attempts"] == 1 and t["exit_code"] == 0
               for t in tasks.values())
    assert tasks["summarize"]["result"] == {"count": 3, "total": 1 + 42 + 42**2,
                                            "largest": 42**2}
    assert "value=42" in kale("logs", run_id, "analyse").stdout
    # the executed notebook is kept with the run
    executed = Path(tasks["analyse"]["artifacts"]["notebook"])
    assert executed.is_file() and executed.parent.name == "analyse"
    runs = json.loads(kale("runs", "--json").stdout)
    assert [r["id"] for r in runs] == [run_id] and runs[0]["state"] == "SUCCEEDED"
    # plain progress lines when stderr is not a terminal
    assert "summarize SUCCEEDED" in out.stderr


def test_second_run_reuses_and_parameter_override_reruns(kale: Kale, quickstart: Path) -> None:
    first = kale("run", str(quickstart)).stdout.strip()
    again = kale("run", str(quickstart))
    assert again.returncode == 0
    status = json.loads(kale("status", again.stdout.strip(), "--json").stdout)
    assert {t["reused_from"] for t in status["tasks"]} == {first}
    five = kale("run", str(quickstart), "-p", "n=5")
    assert five.returncode == 0, five.stderr
    status = json.loads(kale("status", five.stdout.strip(), "--json").stdout)
    tasks = {t["name"]: t for t in status["tasks"]}
    assert tasks["fetch"]["reused_from"] == first
    assert tasks["analyse"]["reused_from"] is None
    assert tasks["summarize"]["result"]["count"] == 5


def test_failure_exit_code_and_status(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "fail.yaml"
    wf.write_text("name: fail\ntasks:\n  boom:\n    shell: echo bad >&2; exit 4\n"
                  "  after-boom:\n    shell: 'true'\n    after: [boom]\n"
                  "  fine:\n    shell: 'true'\n")
    out = kale("run", str(wf))
    assert out.returncode == 1
    assert "boom: FAILED: command failed (exit code 4)" in out.stderr
    status = json.loads(kale("status", "--json").stdout)
    states = {t["name"]: (t["state"], t["exit_code"]) for t in status["tasks"]}
    assert states == {"boom": ("FAILED", 4), "after-boom": ("SKIPPED", None),
                      "fine": ("SUCCEEDED", 0)}
    assert kale("logs", "latest", "boom", "--stderr").stdout == "bad\n"
    # rerun only what failed, after fixing it
    wf.write_text(wf.read_text().replace("exit 4", "exit 0"))
    rerun = kale("run", str(wf), "--rerun-failed", status["run"]["id"])
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(kale("status", "--json").stdout)
    tasks = {t["name"]: t for t in again["tasks"]}
    assert tasks["fine"]["reused_from"] == status["run"]["id"]
    assert tasks["boom"]["reused_from"] is None and tasks["boom"]["state"] == "SUCCEEDED"


@pytest.mark.parametrize(("text", "line", "message"), [
    ("name: x\ntasks:\n  a:\n    shell: [unclosed\n", 5, "flow sequence that starts on line 4"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n  a:\n    shell: 'false'\n", 5, "duplicate"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n    retires: 2\n", 5, "unknown key 'retires'"),
    ("name: x\ntasks:\n  a:\n    description: nothing to run\n", 3, "needs one of"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n    python: m:f\n", 3, "a task has exactly one"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n    after: [b]\n  b:\n    shell: 'true'\n"
     "    after: [a]\n", None, "dependency cycle"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n    after: [ghost]\n", 5, "unknown task 'ghost'"),
    ("name: x\ntasks:\n  a:\n    shell: 'true'\n    retries: many\n", 5, "retries"),
])
def test_bad_yaml_names_file_line_and_problem(kale: Kale, tmp_path: Path, text: str,
                                               line: int | None, message: str) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text(text)
    for command in ("validate", "run"):
        out = kale(command, str(wf))
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert str(wf) in out.stderr
        if line is not None:
            assert f"{wf}:{line}" in out.stderr, out.stderr
        assert message in out.stderr
    # nothing was recorded for an invalid workflow
    assert json.loads(kale("runs", "--json").stdout) == []


def test_usage_errors_exit_2(kale: Kale, quickstart: Path) -> None:
    assert kale("run", str(quickstart), "--only", "nope").returncode == 2
    out = kale("run", str(quickstart), "--only", "fetc")
    assert out.returncode == 2 and "did you mean 'fetch'" in out.stderr
    out = kale("run", str(quickstart), "-p", "m=1")
    assert out.returncode == 2 and "unknown workflow parameter 'm'" in out.stderr
    assert kale("run", str(quickstart), "-p", "novalue").returncode == 2
    out = kale("run", str(quickstart), "--executor", "warp-drive")
    assert out.returncode == 2 and "unknown executor 'warp-drive'" in out.stderr
    assert kale("status", "no-such-run").returncode == 2
    assert kale("run", "missing.yaml").returncode == 2
    assert kale("frobnicate").returncode == 2


def test_selection_from_cli(kale: Kale, quickstart: Path) -> None:
    out = kale("run", str(quickstart), "--until", "analyse")
    assert out.returncode == 0, out.stderr
    states = {t["name"]: t["state"] for t in json.loads(kale("status", "--json").stdout)["tasks"]}
    assert states == {"fetch": "SUCCEEDED", "analyse": "SUCCEEDED", "summarize": "SKIPPED"}
    out = kale("run", str(quickstart), "--tag", "post")
    assert out.returncode == 0, out.stderr
    tasks = {t["name"]: t for t in json.loads(kale("status", "--json").stdout)["tasks"]}
    assert tasks["summarize"]["state"] == "SUCCEEDED" and tasks["summarize"]["reused_from"] is None
    assert tasks["analyse"]["reused_from"] is not None


def test_export_round_trips_and_validate(kale: Kale, quickstart: Path, tmp_path: Path) -> None:
    text = kale("export", str(quickstart)).stdout
    again = quickstart.parent / "again.yaml"  # beside the notebook and module it names
    again.write_text(text)
    assert kale("export", str(again)).stdout == text
    assert kale("validate", str(quickstart)).returncode == 0
    run_id = kale("run", str(quickstart), "--only", "fetch").stdout.strip()
    assert kale("export", run_id).stdout == text


def test_detach_cancel_and_follow_logs(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "slow.yaml"
    wf.write_text("name: slow\ntasks:\n  talk:\n    shell: "
                  "'for i in 1 2 3; do echo line $i; sleep 0.3; done'\n"
                  "  nap:\n    shell: sleep 600\n")  # until cancelled
    out = kale("run", str(wf), "--detach")
    assert out.returncode == 0
    run_id = out.stdout.strip()
    follow = kale("logs", run_id, "talk", "-f", timeout=120)
    assert follow.stdout == "line 1\nline 2\nline 3\n"
    cancel = kale("cancel", run_id)
    assert cancel.returncode == 0 and "CANCELLED" in cancel.stdout
    status = json.loads(kale("status", run_id, "--json").stdout)
    assert status["run"]["state"] == "CANCELLED"
    assert {t["name"]: t["state"] for t in status["tasks"]}["nap"] == "CANCELLED"


@pytest.mark.timeout(300)
def test_live_table_on_a_terminal(kale: Kale, tmp_path: Path) -> None:
    """On a TTY, `kale run` draws a live task table with a progress bar. The first task
    runs until the test has seen it RUNNING on the screen."""
    gate = tmp_path / "seen-running"
    wf = tmp_path / "tty.yaml"
    wf.write_text("name: tty\ntasks:\n  first:\n    shell: " + json.dumps(gate_sh(gate, 200))
                  + "\n  second:\n    shell: 'true'\n    after: [first]\n")
    code, screen = kale.on_terminal(
        "run", str(wf), on_output=lambda seen: gate.touch() if b"RUNNING" in seen else None)
    assert code == 0
    assert "\x1b[" in screen  # drawn, not printed line by line
    assert "RUNNING" in screen and "SUCCEEDED" in screen
    assert "2/2" in screen  # the progress bar's count

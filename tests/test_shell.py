"""Shell tasks as a user sees them: references in commands, `kale record` from a shell,
and what a failed command says."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from conftest import Kale
from kale import TaskState, Workflow

#: a PATH without the Python environment Kale is installed in
BARE_PATH = "/usr/bin:/bin"
#: values a shell would run if they were pasted into the command line
NASTY = "a b; touch PWNED $(touch PWNED2) `touch PWNED3` 'q' \"dq\" * $HOME"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


class BareKale(Kale):
    """`kale` run with a PATH that does not have the Python environment Kale is in (the
    command itself is started by its full path): so are the tasks it runs."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "PATH": BARE_PATH}


def run_json(kale: Kale, *args: str) -> tuple[Any, dict[str, Any]]:
    """Run ``kale run ARGS`` and return what it printed, and its tasks (from ``kale status
    --json``) by name."""
    out = kale("run", *args)
    status = json.loads(kale("status", out.stdout.strip(), "--json").stdout)
    return out, {t["name"]: t for t in status["tasks"]}


def log(task: dict[str, Any]) -> str:
    return Path(task["stdout"]).read_text()


# -- references in shell commands ----------------------------------------------------------


def test_references_in_a_command_line(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", f"""\
        name: refs
        parameters: {{n: 3, text: {json.dumps(NASTY)}}}
        tasks:
          fetch:
            shell: echo 42 > value.txt; kale record answer 42
            outputs: [value.txt]
          use:
            shell: >-
              echo "n=${{params.n}} answer=${{fetch.answer}}";
              cat "${{fetch.value.txt}}";
              echo $(( ${{params.n}} + 1 )) ${{params.n}};
              printf '%s|' "${{params.text}}" "${{ params.text }}"
        """)
    out, tasks = run_json(kale, str(wf))
    assert out.returncode == 0, out.stderr
    # `use` names fetch only through references: that alone made it wait for fetch
    assert log(tasks["use"]) == f"n=3 answer=42\n42\n4 3\n{NASTY}|{NASTY}|"
    assert not any(tmp_path.glob("**/PWNED*")) and not any(kale.home.glob("**/PWNED*"))


def test_references_in_an_argv_list(home: Path) -> None:
    wf = Workflow("argv", parameters={"text": NASTY, "n": 2})
    fetch = wf.shell("fetch", "kale record word 'hello world'; kale record n 7")
    wf.shell("use", ["printf", "%s|", "${params.text}", "--n=${params.n}", "${fetch.word}",
                     "${fetch.n}${fetch.n}"])
    run = wf.run().wait()
    assert run["use"].state is TaskState.SUCCEEDED, run["use"].record.error
    assert run.logs("use") == f"{NASTY}|--n=2|hello world|77|"
    assert wf["use"].upstream == [fetch.name]


def test_a_missing_key_fails_the_task_and_says_what_there_is(home: Path) -> None:
    wf = Workflow("missing")
    wf.shell("fetch", "kale record answer 42")
    wf.shell("use", 'echo "${fetch.anwser}"')
    run = wf.run().wait()
    rec = run["use"].record
    assert rec.state is TaskState.FAILED
    assert rec.error == "result of task 'fetch' has no key 'anwser' (it has: answer)"


def test_a_command_reference_counts_for_reuse(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: reuse
        parameters: {n: 1}
        tasks:
          fetch:
            shell: kale record answer 42
          use:
            shell: echo "${fetch.answer}"
        """)
    _, first = run_json(kale, str(wf))
    _, second = run_json(kale, str(wf))
    assert second["use"]["reused_from"] is not None  # same command, same upstream result
    wf.write_text(wf.read_text().replace("answer 42", "answer 43"))
    _, third = run_json(kale, str(wf))
    assert third["fetch"]["reused_from"] is None
    assert third["use"]["reused_from"] is None and log(third["use"]) == "43\n"
    assert first["use"]["state"] == "SUCCEEDED"


def test_a_parameter_in_a_command_counts_for_reuse(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: reuse
        parameters: {n: 1}
        tasks:
          use:
            shell: echo "${params.n}"
        """)
    run_json(kale, str(wf), "-p", "n=1")
    _, again = run_json(kale, str(wf), "-p", "n=2")
    assert again["use"]["reused_from"] is None and log(again["use"]) == "2\n"


# -- kale record -------------------------------------------------------------------------


def test_kale_record_without_kale_on_the_path(kale: Kale, tmp_path: Path) -> None:
    python = shlex.quote(sys.executable)
    wf = write(tmp_path, "wf.yaml", f"""\
        name: record
        tasks:
          values:
            shell: >-
              kale record n 3 && kale record ratio 2.5 && kale record flag true &&
              kale record none None && kale record word hello && kale record empty "" &&
              kale record phrase "a b  c" && kale record list '[1, "x"]' &&
              kale record quoted '"007"' && kale record negative -4 &&
              {python} -c "import kale; kale.record('from_python', {{'a': [1, 2]}})" &&
              kale record later 1 && kale record n 4
          own-path:
            shell: kale record where "$(command -v kale)" && kale --help > help.txt
            env: {{PATH: {BARE_PATH}}}
          bad-json:
            shell: kale record broken '[1,'
        """)
    out, tasks = run_json(BareKale(kale.home, kale.cwd), str(wf))
    assert out.returncode == 1  # bad-json, only
    assert tasks["values"]["result"] == {
        "n": 4, "ratio": 2.5, "flag": True, "none": None, "word": "hello", "empty": "",
        "phrase": "a b  c", "list": [1, "x"], "quoted": "007", "negative": -4,
        "from_python": {"a": [1, 2]}, "later": 1}
    own = tasks["own-path"]
    assert own["state"] == "SUCCEEDED", own["error"]
    assert Path(own["result"]["where"]).name == "kale"
    assert "Usage: kale" in (Path(own["stdout"]).parent.parent / "own-path" / "help.txt"
                             ).read_text()
    bad = tasks["bad-json"]
    assert bad["state"] == "FAILED" and bad["exit_code"] == 2
    assert "'[1,' starts like a JSON list or map but is not valid JSON" in bad["error"]


# -- what a failed command says -------------------------------------------------------------


def test_a_failed_command_says_why(home: Path) -> None:
    wf = Workflow("fails")
    lines = "; ".join(f"echo 'line {i}' >&2" for i in range(1, 31))
    wf.shell("many-lines", f"{lines}; cat nope.txt; exit 3")
    wf.shell("long-line", "printf 'x%.0s' $(seq 1 6000) >&2; exit 1")
    wf.shell("silent", "exit 5")
    wf.shell("progress", r"printf 'working 10%%\rworking 90%%\r\033[1mfailed: disk full"
                         r"\033[0m\n' >&2; echo '──────' >&2; exit 1")
    run = wf.run().wait()
    many = run["many-lines"].record
    assert many.error == "command failed (exit code 3): cat: nope.txt: No such file or directory"
    assert many.traceback is not None
    assert many.traceback.split("\n") == [f"line {i}" for i in range(12, 31)] + [
        "cat: nope.txt: No such file or directory"]
    long = run["long-line"].record
    assert long.error is not None and long.traceback is not None
    assert long.error == "command failed (exit code 1): " + "x" * 199 + "…"
    assert len(long.traceback.encode()) <= 4096 and set(long.traceback) == {"x"}
    silent = run["silent"].record
    assert (silent.error, silent.traceback) == ("command failed (exit code 5)", None)
    assert run["progress"].record.error == "command failed (exit code 1): failed: disk full"

"""What a new user trips over in the first hour of `kale` (run as a real subprocess): how
typed values are read, what `--help`, `--version` and `kale runs` show, what Ctrl-C does to
a run driven by the manager, and why a failed task failed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Kale, Manager, gate_sh, process_alive, wait_until


def run_with(kale: Kale, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`kale ARGS` with ``env`` on top of the test's environment."""
    return subprocess.run([sys.executable, "-m", "kale.cli.main", *args], cwd=kale.cwd,
                          env={**kale.env(), **env}, capture_output=True, text=True,
                          timeout=120)

# -- 1. values typed on the command line ----------------------------------------------------
TYPES_WF = """\
name: types
parameters: {b: false, n: 0, x: 0, name: z, xs: [], m: {}, q: "", e: "", low: false}
tasks:
  show:
    python: probe:show
  record:
    shell: >-
      kale record b True && kale record n None && kale record x 007 &&
      kale record name abc && kale record xs '[1, "a"]' && kale record q '"007"' &&
      kale record low false
"""
PROBE = """\
def show(b, n, x, name, xs, m, q, e, low):
    return {k: [type(v).__name__, v] for k, v in locals().items()}
"""


def test_typed_values_read_the_same_in_run_p_and_record(kale: Kale, tmp_path: Path) -> None:
    """`-p b=True` is a bool, `-p n=None` None, `-p x=007` the int 7 (as papermill's `-p`
    and the workflow YAML read them); `-p name=abc` stays a string; `kale record` reads
    its VALUE by the same rule."""
    (tmp_path / "probe.py").write_text(PROBE)
    wf = tmp_path / "types.yaml"
    wf.write_text(TYPES_WF)
    out = kale("run", str(wf), "-p", "b=True", "-p", "n=None", "-p", "x=007", "-p",
               "name=abc", "-p", 'xs=[1, "a"]', "-p", "m={\"k\": 2.5}", "-p", 'q="007"',
               "-p", "e=", "-p", "low=false")
    assert out.returncode == 0, out.stderr
    tasks = {t["name"]: t for t in json.loads(kale("status", "--json").stdout)["tasks"]}
    assert tasks["show"]["result"] == {
        "b": ["bool", True], "n": ["NoneType", None], "x": ["int", 7], "name": ["str", "abc"],
        "xs": ["list", [1, "a"]], "m": ["dict", {"k": 2.5}], "q": ["str", "007"],
        "e": ["str", ""], "low": ["bool", False]}
    assert tasks["record"]["result"] == {"b": True, "n": None, "x": 7, "name": "abc",
                                         "xs": [1, "a"], "q": "007", "low": False}
    # the same values spelled another way are the same values: reused, not run again
    again = kale("run", str(wf), "--only", "show", "-p", "b=true", "-p", "n=null", "-p",
                 "x=7", "-p", "name=abc", "-p", 'xs=[1,"a"]', "-p", "m={\"k\":2.5}", "-p",
                 'q="007"', "-p", "e=", "-p", "low=False")
    assert again.returncode == 0, again.stderr
    show = json.loads(kale("status", "--json").stdout)["tasks"][0]
    assert show["name"] == "show" and show["reused_from"] == out.stdout.strip()


def test_a_bad_typed_value_says_what_and_where(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    wf = tmp_path / "types.yaml"
    wf.write_text(TYPES_WF)
    out = kale("run", str(wf), "-p", "xs=[1, 2")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "-p" in out.stderr and "xs" in out.stderr and "not valid JSON" in out.stderr
    assert json.loads(kale("runs", "--json").stdout) == []
    help_text = " ".join(kale("run", "--help").stdout.split())
    assert "NAME=VALUE" in help_text and "007" in help_text and "None" in help_text


# -- 2. what --help, --version and `kale runs` show -----------------------------------------
def commands(kale: Kale) -> list[list[str]]:
    """Every command `kale --help` lists (and the manager's subcommands)."""
    def listed(*group: str) -> list[str]:
        text = kale(*group, "--help").stdout
        section = text.split("Commands:", 1)[1]
        return [line.split()[0] for line in section.splitlines() if line.startswith("  ")
                and not line.startswith("   ")]

    found = [[name] for name in listed() if name != "manager"]
    return found + [["manager", name] for name in listed("manager")]


def test_every_option_has_a_metavar_and_every_run_argument_says_latest(kale: Kale) -> None:
    cmds = commands(kale)
    assert ["run"] in cmds and ["manager", "start"] in cmds and len(cmds) > 15
    for cmd in cmds:
        out = kale(*cmd, "--help")
        assert out.returncode == 0, (cmd, out.stderr)
        options = out.stdout.split("Options:", 1)[1]
        assert "<" not in options, f"kale {' '.join(cmd)} --help: a placeholder\n{options}"
        usage = out.stdout.splitlines()[0]
        assert usage.startswith(f"Usage: kale {' '.join(cmd)} ") and "[[" not in usage, usage
        if "RUN" in usage or cmd == ["run"]:
            assert "'latest'" in out.stdout, f"kale {' '.join(cmd)} --help: no 'latest'"
    assert "'latest'" in kale("export", "--help").stdout


def test_version(kale: Kale) -> None:
    from importlib.metadata import version

    out = kale("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"kale {version('kale-workflows')}"
    assert "--version" in kale("--help").stdout


def test_runs_at_80_columns_never_cuts_a_run_id(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "long.yaml"
    wf.write_text("name: calibration-of-the-detector-array-for-the-second-beam-time\n"
                  "tasks:\n  a: {shell: 'true'}\n  b: {shell: 'exit 1'}\n"
                  "  c: {shell: 'true', after: [b]}\n")
    ids = [kale("run", str(wf)).stdout.strip() for _ in range(2)]
    for columns in ("80", "60"):
        out = run_with(kale, {"COLUMNS": columns}, "runs")
        assert out.returncode == 0, out.stderr
        assert max(map(len, out.stdout.splitlines())) <= int(columns)
        for run_id in ids:
            assert re.search(rf"(^|\s){run_id}(\s|$)", out.stdout), (run_id, out.stdout)
        out = run_with(kale, {"COLUMNS": columns}, "status", "latest")
        assert ids[-1] in out.stdout and re.search(r"^\s*b\s", out.stdout, re.M)
    # 'latest' is the newest run, wherever a command takes RUN
    status = json.loads(kale("status", "latest", "--json").stdout)
    assert status["run"]["id"] == ids[-1]


# -- 3. Ctrl-C on a run the manager drives --------------------------------------------------
def nap_pid(tmp_path: Path) -> int | None:
    """The pid the `nap` task's shell wrote, once it has written it."""
    for pidfile in tmp_path.glob("kale-home/runs/*/nap/nap.pid"):
        text = pidfile.read_text()
        if text.endswith("\n"):  # echo's whole line
            return int(text)
    return None


def test_ctrl_c_cancels_a_run_submitted_to_the_manager(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    """As for a run driven by `kale run` itself: Ctrl-C cancels the run (its running task
    is killed), says so, and exits 130. (`--detach` is how a run is left running.)"""
    managers("--workers", "1")
    wf = tmp_path / "nap.yaml"
    never = tmp_path / "never-opened"
    wf.write_text("name: nap\ntasks:\n  nap:\n    shell: " + json.dumps(
        f"echo $$ > nap.pid; {gate_sh(never)}") + "\n  after:\n    shell: 'true'\n"
        "    after: [nap]\n")
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        run_id = proc.stdout.readline().strip()
        seen = []
        for line in proc.stderr:  # the progress lines, as the task starts on a worker
            seen.append(line)
            if "nap RUNNING" in line:
                break
        assert any("nap RUNNING" in line for line in seen), seen
        # RUNNING is reported when the shell starts; its first command may not have run yet
        wait_until(lambda: nap_pid(tmp_path) is not None, 60, "the task's shell to write its pid")
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=60) == 130, rest
    assert f"cancelling run {run_id}" in rest and "--detach" in rest
    assert "Traceback" not in rest
    status = json.loads(kale("status", run_id, "--json").stdout)
    assert status["run"]["state"] == "CANCELLED"
    assert {t["name"]: t["state"] for t in status["tasks"]} == {"nap": "CANCELLED",
                                                                "after": "CANCELLED"}
    pid = nap_pid(tmp_path)
    assert pid is not None
    wait_until(lambda: not process_alive(pid), 30, "the cancelled task's process to end")


# -- 4. why a task failed -------------------------------------------------------------------
FAILING = """\
name: failing
tasks:
  boom:
    shell: >-
      for i in $(seq 1 30); do echo "noise $i" >&2; done;
      echo "error: input.dat: no such file" >&2; exit 4
  fine:
    shell: echo fine
"""


def tail_after(text: str, marker: str) -> list[str]:
    """The indented `| ...` lines that follow the line containing ``marker``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    found = []
    for line in lines[start + 1:]:
        if not line.startswith("    | "):
            break
        found.append(line[6:])
    return found


EXPECTED_TAIL = [f"noise {i}" for i in range(22, 31)] + ["error: input.dat: no such file"]


def test_a_failed_task_shows_the_end_of_its_stderr(kale: Kale, tmp_path: Path) -> None:
    """Not just "exit code 4": the last lines the task wrote to stderr, under the line
    that says it failed, and in `kale status RUN TASK`."""
    wf = tmp_path / "failing.yaml"
    wf.write_text(FAILING)
    out = kale("run", str(wf))
    assert out.returncode == 1
    assert tail_after(out.stderr, "boom FAILED") == EXPECTED_TAIL, out.stderr
    detail = kale("status", "latest", "boom")
    assert detail.returncode == 0
    assert tail_after(detail.stdout, "the end of its stderr") == [  # the last 20 lines
        *(f"noise {i}" for i in range(12, 31)), "error: input.dat: no such file"]
    doc = json.loads(kale("status", "latest", "boom", "--json").stdout)
    assert doc["stderr_tail"][-1] == "error: input.dat: no such file"
    fine = kale("status", "latest", "fine")
    assert "stderr" in fine.stdout and "the end of its stderr" not in fine.stdout


def test_the_live_table_shows_the_end_of_a_failed_tasks_stderr(kale: Kale,
                                                               tmp_path: Path) -> None:
    wf = tmp_path / "failing.yaml"
    wf.write_text(FAILING)
    code, drawn = kale.on_terminal("run", str(wf))
    assert code == 1
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert "boom failed; the end of its stderr:" in screen
    assert "| error: input.dat: no such file" in screen and "| noise 22" in screen
    assert "| noise 21" not in screen  # the last lines, not the whole log


def test_a_failed_task_run_by_the_manager_shows_the_end_of_its_stderr(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    managers("--workers", "1")
    wf = tmp_path / "failing.yaml"
    wf.write_text(FAILING)
    out = kale("run", str(wf))
    assert out.returncode == 1
    assert "boom FAILED" in out.stderr and "on worker" in out.stderr  # the manager ran it
    assert tail_after(out.stderr, "boom FAILED") == EXPECTED_TAIL, out.stderr


# -- a big run's status --------------------------------------------------------------------
def test_status_of_a_big_run_shows_counts_and_what_needs_a_look(
        kale: Kale, tmp_path: Path) -> None:
    """A run of more tasks than a screen holds: `kale status` says how many are in each
    state and lists the tasks that did not succeed; `--all` lists every task."""
    (tmp_path / "nothing.py").write_text("def noop():\n    return None\n")
    wf = tmp_path / "big.yaml"
    wf.write_text("name: big\ntasks:\n" + "".join(
        f"  t{i}: {{python: 'nothing:noop'}}\n" for i in range(130))
        + "  broken: {shell: 'exit 3'}\n")
    assert kale("run", str(wf)).returncode != 0
    out = kale("status", "latest")
    assert "131 tasks: 130 succeeded, 1 failed" in out.stdout, out.stdout
    assert re.search(r"^\s*broken\s+shell\s+FAILED", out.stdout, re.M), out.stdout
    assert not re.search(r"^\s*t7\s", out.stdout, re.M)
    every = kale("status", "latest", "--all")
    for name in ("t0", "t7", "t129", "broken"):
        assert re.search(rf"^\s*{name}\s", every.stdout, re.M), every.stdout
    tasks = json.loads(kale("status", "latest", "--json").stdout)["tasks"]
    assert len(tasks) == 131


def test_status_of_a_big_run_still_running_lists_what_is_under_way(
        kale: Kale, tmp_path: Path) -> None:
    """While a big run runs, `kale status` gives its counts per state and lists its tasks
    under way and those that did not succeed (the first 20, then how many more), not the
    ones that succeeded or wait."""
    gate = tmp_path / "gate"
    (tmp_path / "nothing.py").write_text("def noop():\n    return None\n")
    wf = tmp_path / "big.yaml"
    fan = [f"t{i}" for i in range(130)]
    wf.write_text("name: big\ntasks:\n" + "".join(
        f"  {t}: {{python: 'nothing:noop'}}\n" for t in fan)
        + "".join(f"  {held}:\n    shell: {json.dumps(gate_sh(gate))}\n"
                  f"    after: [{', '.join(fan)}]\n" for held in ("held_a", "held_b"))
        + "".join(f"  broken{i}: {{shell: 'exit 3'}}\n" for i in range(24))
        + "  last: {shell: 'true', after: [held_a, held_b]}\n")
    run_id = kale("run", str(wf), "--detach").stdout.strip()

    def states() -> dict[str, str]:
        doc = json.loads(kale("status", run_id, "--json").stdout)
        return {t["name"]: t["state"] for t in doc["tasks"]}

    try:
        seen = wait_until(lambda: (s := states())["held_a"] == s["held_b"] == "RUNNING"
                          and s["broken23"] == "FAILED" and s, what="held_a, held_b running")
        assert {seen[t] for t in fan} == {"SUCCEEDED"} and seen["last"] == "PENDING"
        out = kale("status", run_id)
        assert out.returncode == 0, out.stderr
        assert "RUNNING" in out.stdout.splitlines()[0], out.stdout
        assert "157 tasks: 130 succeeded, 24 failed, 2 running, 1 pending" in out.stdout, \
            out.stdout
        for name, state in (("held_a", "RUNNING"), ("held_b", "RUNNING"),
                            ("broken0", "FAILED"), ("broken17", "FAILED")):
            assert re.search(rf"^\s*{name}\s+shell\s+{state}\s", out.stdout, re.M), out.stdout
        assert re.search(r"^\s*\.\.\. 6 more \(--all lists every task\)", out.stdout, re.M)
        for name in ("t0", "t7", "t129", "broken18", "broken23", "last"):
            assert not re.search(rf"^\s*{name}\s", out.stdout, re.M), out.stdout
        every = kale("status", run_id, "--all")
        for name in ("t0", "t129", "held_a", "broken23", "last"):
            assert re.search(rf"^\s*{name}\s", every.stdout, re.M), every.stdout
    finally:
        gate.touch()
    wait_until(lambda: states()["last"] == "SUCCEEDED", what="the run to finish")

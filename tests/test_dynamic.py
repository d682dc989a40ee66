"""Workflows that grow while they run (issue 18): a task mapped over what an upstream task
returned or left, conditions decided from results, and everything Kale promises still
holding for the members a map adds: their own state, retries and results; reuse by
element; partial runs; resume after a SIGKILL."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Kale, Manager, gate_sh, wait_until

ANALYSE = '''\
import os


def analyse(path):
    """One file: its number; the files whose number is in BAD fail until FIXED exists."""
    with open(os.environ["LEDGER"], "a") as ledger:
        ledger.write(os.path.basename(path) + "\\n")
    value = int(open(path).read())
    if str(value) in os.environ.get("BAD", "").split(",") \\
            and not os.path.exists(os.environ["FIXED"]):
        raise ValueError(f"cannot read {path}")
    return value


def total(analyse):
    return {"n": len(analyse), "sum": sum(analyse), "first": analyse[:3]}
'''


def _status(kale: Kale, run_id: str) -> dict[str, Any]:
    out = kale("status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _tasks(kale: Kale, run_id: str) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _status(kale, run_id)["tasks"]}


def _run(kale: Kale, *args: str, ok: bool = True) -> str:
    out = kale("run", *args)
    assert (out.returncode == 0) == ok, out.stdout + out.stderr
    return out.stdout.split()[0]


def _files_workflow(tmp_path: Path, n: int, *, bad: str = "") -> Path:
    """A simulation that writes ``n`` numbered files, and a map over them."""
    (tmp_path / "ana.py").write_text(ANALYSE)
    wf = tmp_path / "files.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: files
        tasks:
          simulate:
            shell: >-
              mkdir -p runs; for i in $(seq 1 "$n");
              do echo $i > runs/f$(printf %04d $i).txt; done
            parameters: {{n: {n}}}
            outputs: [runs]
          analyse:
            python: ana:analyse
            map: {{path: "${{simulate.files('runs/*.txt')}}"}}
            retries: 1
            retry_delay: 0
            env: {{LEDGER: "{tmp_path}/ledger", FIXED: "{tmp_path}/fixed", BAD: "{bad}"}}
          summary:
            python: ana:total
            after: [analyse]
        """))
    return wf


def _ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger"
    return path.read_text().split() if path.exists() else []


def test_the_status_of_a_big_running_map_shows_its_counts_and_what_is_under_way(
        kale: Kale, tmp_path: Path) -> None:
    """A run of over 100 tasks that is still running: `kale status` reads only its tasks
    under way or that did not succeed, and the map's line still counts every member."""
    gate = tmp_path / "gate"
    (tmp_path / "wide.yaml").write_text(textwrap.dedent(f"""\
        name: wide
        parameters: {{xs: {list(range(150))}}}
        tasks:
          each:
            shell: 'if [ "$x" = 0 ]; then {gate_sh(gate)}; elif [ "$x" = 7 ]; then exit 3; fi'
            map: {{x: "${{params.xs}}"}}
        """))
    run_id = _run(kale, "wide.yaml", "--detach")

    def shown() -> str:
        return kale("status", run_id).stdout

    try:
        wait_until(lambda: "150 elements: 1 failed, 1 running, 148 succeeded" in shown(),
                   what="every member but the gated one ended")
        text = shown()
        assert "151 tasks: 148 succeeded, 2 running, 1 failed" in text, text
        assert "  each[0] " in text and "  each[7] " in text  # running, failed
        assert "each[1] " not in text  # a member that succeeded is counted, not listed
    finally:
        gate.touch()
    wait_until(lambda: "FAILED" in shown().splitlines()[0], what="the run ended")


# -- map over files -----------------------------------------------------------------------
def test_a_map_over_1000_files_retries_its_failing_members_and_reruns_only_those(
        kale: Kale, tmp_path: Path) -> None:
    wf = _files_workflow(tmp_path, 1000, bad="13,500,998")
    first = _run(kale, str(wf), ok=False)
    tasks = _tasks(kale, first)
    members = [f"analyse[{i}]" for i in range(1000)]
    assert [n for n in tasks if n.startswith("analyse[")] == members
    failed = sorted(n for n in members if tasks[n]["state"] == "FAILED")
    # analyse[i] is file number i + 1, in order
    assert failed == ["analyse[12]", "analyse[499]", "analyse[997]"], failed
    for name in failed:
        assert tasks[name]["attempts"] == 2  # retried once, as the map's `retries` says
        assert "cannot read" in tasks[name]["error"]
    assert all(tasks[n]["state"] == "SUCCEEDED" for n in members if n not in failed)
    group = tasks["analyse"]
    assert group["state"] == "FAILED"
    assert "3 of 1000 elements did not succeed: analyse[12] failed" in group["error"]
    assert tasks["summary"]["state"] == "SKIPPED"
    ledger = _ledger(tmp_path)
    assert len(ledger) == 1000 + 3  # every file once, the three failing ones twice
    # `kale status` folds the map: its counts, then the members that did not succeed
    text = kale("status", first).stdout
    assert "1000 elements: 3 failed, 997 succeeded" in text
    assert all(f"  {name} " in text for name in failed) and "analyse[0] " not in text
    assert "analyse[999] " in kale("status", first, "--all").stdout

    (tmp_path / "fixed").touch()
    again = _run(kale, str(wf), "--rerun-failed", first)
    tasks = _tasks(kale, again)
    ran = _ledger(tmp_path)[len(ledger):]
    assert sorted(ran) == ["f0013.txt", "f0500.txt", "f0998.txt"]  # only those
    assert sum(1 for n in members if tasks[n]["reused_from"] == first) == 997
    assert tasks["analyse"]["state"] == tasks["summary"]["state"] == "SUCCEEDED"
    assert tasks["summary"]["result"] == {"n": 1000, "sum": 500500, "first": [1, 2, 3]}


def test_an_unchanged_run_reuses_every_member_and_one_new_file_runs_one_member(
        kale: Kale, tmp_path: Path) -> None:
    wf = _files_workflow(tmp_path, 4)
    first = _run(kale, str(wf))
    assert sorted(_ledger(tmp_path)) == [f"f000{i}.txt" for i in range(1, 5)]
    # unchanged: nothing runs, every member reuses its own result
    second = _run(kale, str(wf))
    tasks = _tasks(kale, second)
    assert len(_ledger(tmp_path)) == 4
    assert all(tasks[f"analyse[{i}]"]["reused_from"] == first for i in range(4))
    assert tasks["summary"]["result"]["sum"] == 10
    # one more file: the simulation runs again, then only the new file's member
    _files_workflow(tmp_path, 5)
    third = _run(kale, str(wf))
    tasks = _tasks(kale, third)
    assert _ledger(tmp_path)[4:] == ["f0005.txt"]
    assert [tasks[f"analyse[{i}]"]["reused_from"] for i in range(5)] == [first] * 4 + [None]
    assert tasks["summary"]["result"] == {"n": 5, "sum": 15, "first": [1, 2, 3]}
    assert tasks["analyse[4]"]["result"] == 5
    # its detail says which element it got
    detail = json.loads(kale("status", third, "analyse[4]", "--json").stdout)["task"]
    assert detail["element"]["path"].endswith("/simulate/runs/f0005.txt")
    assert detail["member_of"] == "analyse" and detail["index"] == 4


def test_only_a_map_runs_the_whole_map(kale: Kale, tmp_path: Path) -> None:
    wf = _files_workflow(tmp_path, 4)
    first = _run(kale, str(wf))
    again = _run(kale, str(wf), "--only", "analyse", "--force")
    tasks = _tasks(kale, again)
    assert tasks["simulate"]["reused_from"] == first  # needed, not selected: reused
    assert [tasks[f"analyse[{i}]"]["reused_from"] for i in range(4)] == [None] * 4
    assert sorted(_ledger(tmp_path)[4:]) == [f"f000{i}.txt" for i in range(1, 5)]
    assert tasks["analyse"]["result"] == [1, 2, 3, 4]
    assert tasks["summary"]["state"] == "SKIPPED" and tasks["summary"]["reason"] == \
        "not selected"


def test_a_changed_file_runs_its_member_again(kale: Kale, tmp_path: Path) -> None:
    wf = _files_workflow(tmp_path, 3)
    _run(kale, str(wf))
    # the simulation now writes a different second file (same name, other content)
    text = wf.read_text().replace("echo $i >", 'echo $((i * (i == 2 ? 7 : 1))) >')
    wf.write_text(text)
    again = _run(kale, str(wf))
    assert _ledger(tmp_path)[3:] == ["f0002.txt"]
    assert _tasks(kale, again)["summary"]["result"]["sum"] == 1 + 14 + 3


def test_a_map_over_a_parameter_runs_only_the_changed_element(
        kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "stages.py").write_text(STAGES)
    wf = tmp_path / "params.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: params
        parameters: {{xs: [1, 2, 3, 4], label: run}}
        tasks:
          echo:
            shell: echo "$x" >> {tmp_path}/ledger; echo "$x" > out.txt
            map: {{x: "${{params.xs}}"}}
            outputs: [out.txt]
          pair:
            python: stages:pair
            map: {{x: "${{params.xs}}"}}
        """))
    first = _run(kale, str(wf))
    again = _run(kale, str(wf), "-p", "xs=[1, 2, 30, 4]")
    tasks = _tasks(kale, again)
    assert _ledger(tmp_path)[4:] == ["30"]  # only the changed element's shell member
    for group in ("echo", "pair"):
        reused = [tasks[f"{group}[{i}]"]["reused_from"] for i in range(4)]
        assert reused == [first, first, None, first], (group, reused)
    assert tasks["pair"]["result"] == [[1, 10], [2, 20], [30, 300], [4, 40]]
    # a parameter the map does not go over still counts for a Python member (it may
    # take it by name), and not for the shell member (it does not name it)
    third = _run(kale, str(wf), "-p", "xs=[1, 2, 30, 4]", "-p", "label=other")
    tasks = _tasks(kale, third)
    assert all(tasks[f"echo[{i}]"]["reused_from"] for i in range(4))
    assert not any(tasks[f"pair[{i}]"]["reused_from"] for i in range(4))


# -- maps of maps, lists, conditions ------------------------------------------------------
STAGES = '''\
def pair(x):
    return [x, 10 * x]


def add(xs):
    return sum(xs)


def pick(add):
    return {"n": sum(1 for v in add if v > 40), "best": [v for v in add if v > 40]}
'''


def test_a_map_over_a_maps_results(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "stages.py").write_text(STAGES)
    wf = tmp_path / "stages.yaml"
    wf.write_text(textwrap.dedent("""\
        name: stages
        parameters: {xs: [1, 2, 3, 4, 5]}
        tasks:
          pair:
            python: stages:pair
            map: {x: "${params.xs}"}
          add:
            python: stages:add
            map: {xs: "${pair}"}
          pick:
            python: stages:pick
            after: [add]
          refine:
            shell: echo "refining $c" > refined.txt
            map: {c: "${pick.best}"}
            outputs: [refined.txt]
        """))
    run_id = _run(kale, str(wf))
    tasks = _tasks(kale, run_id)
    assert tasks["pair"]["result"] == [[x, 10 * x] for x in range(1, 6)]
    assert tasks["add"]["result"] == [11, 22, 33, 44, 55]
    assert tasks["pick"]["result"] == {"n": 2, "best": [44, 55]}
    assert [n for n in tasks if n.startswith("refine[")] == ["refine[0]", "refine[1]"]
    made = [Path(r["refined.txt"]).read_text() for r in tasks["refine"]["result"]]
    assert made == ["refining 44\n", "refining 55\n"]


def test_a_false_condition_skips_its_branch_and_the_run_succeeds(
        kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "stages.py").write_text(STAGES)
    wf = tmp_path / "cond.yaml"
    wf.write_text(textwrap.dedent("""\
        name: cond
        parameters: {groups: [[1, 2], [3]]}
        tasks:
          add:
            python: stages:add
            map: {xs: "${params.groups}"}
          pick:
            python: stages:pick
            after: [add]
          refine:
            shell: echo refine
            map: {c: "${pick.best}"}
            when: "${pick.n} > 0"
          report:
            shell: echo "report on $best"
            parameters: {best: "${refine}"}
          cheap:
            shell: echo cheap
            after: [pick]
          join:
            shell: echo join
            after: [refine, cheap]
        """))
    out = kale("run", str(wf))
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.split()[0]
    status = _status(kale, run_id)
    assert status["run"]["state"] == "SUCCEEDED"
    tasks = {t["name"]: t for t in status["tasks"]}
    assert tasks["refine"]["state"] == "SKIPPED"
    assert tasks["refine"]["reason"] == "condition false: 0 > 0"
    # what needs its result is skipped; what also waits for another branch runs
    assert tasks["report"]["state"] == "SKIPPED"
    assert "skipped by a condition" in tasks["report"]["reason"]
    assert tasks["cheap"]["state"] == tasks["join"]["state"] == "SUCCEEDED"
    assert not any(n.startswith("refine[") for n in tasks)
    # with a list that passes the condition, the branch runs
    again = kale("run", str(wf), "-p", "groups=[[30, 20], [40, 5]]")
    tasks = _tasks(kale, again.stdout.split()[0])
    assert tasks["refine"]["state"] == "SUCCEEDED" and "refine[0]" in tasks
    assert tasks["report"]["state"] == "SUCCEEDED"


def test_python_api_maps_with_a_bare_reference_and_exports_the_map(
        home: Path, tmp_path: Path) -> None:
    from kale import Workflow

    (tmp_path / "stages.py").write_text(STAGES)
    import importlib
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        stages = importlib.import_module("stages")
        wf = Workflow("api", base_dir=tmp_path, parameters={"xs": [3, 4]})
        pair = wf.python(stages.pair, map="${params.xs}")
        wf.python(stages.add, map=pair.result)
        text = wf.to_yaml()
        assert 'map: {x: "${params.xs}"}' in text and 'map: {xs: "${pair}"}' in text
        run = wf.run()
        assert run.wait().state.value == "SUCCEEDED"
        assert run.result("add") == [33, 44]
        assert Workflow.from_yaml(text).to_yaml() == text
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("stages", None)


# -- crash safety -------------------------------------------------------------------------
def test_sigkill_during_a_map_then_resume_runs_no_succeeded_member_again(
        kale: Kale, tmp_path: Path) -> None:
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    wf = tmp_path / "crashy.yaml"
    # members 0 and 1 finish at once; the others wait for the gate
    wf.write_text(textwrap.dedent(f"""\
        name: crashy
        parameters: {{xs: [0, 1, 2, 3, 4, 5]}}
        tasks:
          work:
            shell: >-
              echo "$x" >> {ledger}; if [ "$x" -gt 1 ];
              then while [ ! -e {gate} ]; do sleep 0.05; done; fi
            map: {{x: "${{params.xs}}"}}
          after:
            shell: echo done
            after: [work]
        """))
    with kale.popen("run", str(wf), "--jobs", "2") as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()

        def states() -> dict[str, str]:
            return {t["name"]: t["state"] for t in _status(kale, run_id)["tasks"]}

        def two_done_two_running() -> bool:
            now = states()
            return now.get("work[0]") == now.get("work[1]") == "SUCCEEDED" \
                and sum(1 for n, s in now.items() if n.startswith("work[") and s == "RUNNING") == 2

        wait_until(two_done_two_running, 120, "two members done and two running")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    before = states()
    assert before["work"] == "RUNNING" and before["work[0]"] == "SUCCEEDED"
    gate.touch()
    out = kale("resume", run_id)
    assert out.returncode == 0, out.stderr
    after = states()
    assert set(after.values()) == {"SUCCEEDED"}, after
    runs = ledger.read_text().split()
    assert runs.count("0") == runs.count("1") == 1, runs
    assert sorted(set(runs)) == ["0", "1", "2", "3", "4", "5"]


# -- bad input ----------------------------------------------------------------------------
def test_bad_maps_and_conditions_are_refused_with_where_and_why(
        kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "bad.yaml"
    wf.write_text(textwrap.dedent("""\
        name: bad
        tasks:
          a:
            shell: echo a
          b:
            shell: echo b
            map: {x: 3}
          c:
            shell: echo c
            when: "__import__('os').system('true')"
          d:
            shell: echo d
            map: {x: "${nope.list}"}
          e:
            shell: echo e
            map: {x: "${a.files('/etc/*')}"}
        """))
    out = kale("validate", str(wf))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    err = out.stderr
    assert "tasks.b.map.x" in err and "must be a reference" in err
    assert "tasks.c.when" in err and "only len, min" in err
    assert "tasks.d.map.x" in err and "unknown task 'nope'" in err
    assert "tasks.e.map.x" in err and "relative" in err


# -- tasks that add tasks -----------------------------------------------------------------
PLAN = '''\
import os

import kale


def plan(n, fail=-1):
    """A chain of n steps (each reads the one before), then a step that reads the last."""
    sub = kale.Workflow("refine")
    for i in range(n):
        cmd = f"echo {i} >> {os.environ['LEDGER']}; "
        cmd += "exit 3" if i == fail else f"echo {i} > out.txt"
        if i == 1 and os.environ.get("GATE"):
            cmd = f"while [ ! -e {os.environ['GATE']} ]; do sleep 0.05; done; " + cmd
        sub.shell(f"step{i}", cmd, outputs=["out.txt"] if i != fail else [],
                  after=[f"step{i - 1}"] if i else [])
    sub.python(read, name="last", parameters={"path": f"${{step{n - 1}.out.txt}}"})
    kale.add_tasks(sub)
    return {"planned": n}


def read(path):
    return int(open(path).read())


def report(plan):
    return plan["planned"]


def bad():
    sub = kale.Workflow("bad")
    sub.shell("x", "echo ${nowhere.out}")
    kale.add_tasks(sub)
'''


def _plan_workflow(tmp_path: Path, n: int = 3, fail: int = -1, gate: str = "") -> Path:
    (tmp_path / "plan.py").write_text(PLAN)
    wf = tmp_path / "plan.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: planner
        tasks:
          plan:
            python: plan:plan
            parameters: {{n: {n}, fail: {fail}}}
            env: {{LEDGER: "{tmp_path}/ledger", GATE: "{gate}"}}
          report:
            python: plan:report
            after: [plan]
        """))
    return wf


def test_a_task_adds_a_sub_workflow_and_what_waits_for_it_waits_for_them(
        kale: Kale, tmp_path: Path) -> None:
    run_id = _run(kale, str(_plan_workflow(tmp_path, 3)))
    status = _status(kale, run_id)
    tasks = {t["name"]: t for t in status["tasks"]}
    added = ["plan[step0]", "plan[step1]", "plan[step2]", "plan[last]"]
    assert [n for n in tasks if n.startswith("plan[")] == added
    assert all(tasks[n]["state"] == "SUCCEEDED" and tasks[n]["member_of"] == "plan"
               for n in added)
    assert tasks["plan[last]"]["result"] == 2  # it read step2's file
    assert tasks["plan"]["result"] == {"planned": 3} and tasks["report"]["result"] == 3
    # report started only after every added task ended
    assert tasks["report"]["started_at"] >= max(tasks[n]["ended_at"] for n in added)
    assert _ledger(tmp_path) == ["0", "1", "2"]
    assert "4 added tasks: 4 succeeded" in kale("status", run_id).stdout


def test_a_failing_added_task_fails_its_parent_and_skips_what_is_below(
        kale: Kale, tmp_path: Path) -> None:
    run_id = _run(kale, str(_plan_workflow(tmp_path, 3, fail=1)), ok=False)
    tasks = _tasks(kale, run_id)
    assert tasks["plan[step1]"]["state"] == "FAILED"
    assert tasks["plan[step2]"]["state"] == tasks["plan[last]"]["state"] == "SKIPPED"
    assert tasks["plan"]["state"] == "FAILED"
    assert "3 of 4 tasks it added did not succeed: plan[step1] failed" in tasks["plan"]["error"]
    assert tasks["report"]["state"] == "SKIPPED"


def test_added_tasks_are_validated_before_they_are_accepted(
        kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "plan.py").write_text(PLAN)
    wf = tmp_path / "bad.yaml"
    wf.write_text("name: bad\ntasks:\n  bad:\n    python: plan:bad\n")
    run_id = _run(kale, str(wf), ok=False)
    tasks = _tasks(kale, run_id)
    assert tasks["bad"]["state"] == "FAILED"
    assert "the tasks it added are not valid" in tasks["bad"]["error"]
    assert "unknown task 'nowhere'" in tasks["bad"]["error"]
    assert list(tasks) == ["bad"]  # nothing was added


def test_sigkill_while_added_tasks_run_then_resume_does_not_run_the_parent_again(
        kale: Kale, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = _plan_workflow(tmp_path, 3, gate=str(gate))
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        wait_until(lambda: _tasks(kale, run_id).get("plan[step1]", {}).get("state")
                   == "RUNNING", 120, "the second added step to run")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    gate.touch()
    out = kale("resume", run_id)
    assert out.returncode == 0, out.stderr
    tasks = _tasks(kale, run_id)
    assert {t["state"] for t in tasks.values()} == {"SUCCEEDED"}, tasks
    assert tasks["plan"]["attempts"] == 1  # the parent did not run again
    assert _ledger(tmp_path).count("0") == 1  # nor did the step that had succeeded
    assert tasks["report"]["result"] == 3



SIBLING = """\
import os
import time

import kale


def base():
    return {"n": 5}


def use(base):
    gate = os.environ.get("GATE")
    if gate:
        open(gate + ".waiting", "w").close()
        while not os.path.exists(gate):
            time.sleep(0.01)
    return ["got", base]


def plan():
    sub = kale.Workflow("more")
    sub.python(use, name="use", after=["base"], env={"GATE": os.environ["GATE"]})
    sub.shell("show", "echo n=${base.n}")
    kale.add_tasks(sub)
    return "planned"
"""


def _sibling_workflow(tmp_path: Path, gate: str = "") -> Path:
    """`plan` adds tasks that read `base`, a task beside it with nothing below it in the
    workflow (so the engine had no reason to keep its result in memory); run with one
    task at a time, `base` ends before `plan` starts."""
    (tmp_path / "sib.py").write_text(SIBLING)
    wf = tmp_path / "sib.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: siblings
        tasks:
          base: {{python: "sib:base"}}
          plan: {{python: "sib:plan", env: {{GATE: "{gate}"}}}}
        """))
    return wf


def test_added_tasks_get_the_result_of_a_task_beside_their_parent(
        kale: Kale, tmp_path: Path) -> None:
    run_id = _run(kale, str(_sibling_workflow(tmp_path)), "--jobs", "1")
    tasks = _tasks(kale, run_id)
    assert tasks["plan[use]"]["result"] == ["got", {"n": 5}]
    assert tasks["plan[show]"]["state"] == "SUCCEEDED"
    assert "n=5" in kale("logs", run_id, "plan[show]").stdout


def test_a_resumed_added_task_gets_the_result_of_a_task_beside_its_parent(
        kale: Kale, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wf = _sibling_workflow(tmp_path, str(gate))
    with kale.popen("run", str(wf), "--jobs", "1") as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        wait_until(lambda: Path(f"{gate}.waiting").exists(), what="plan[use] to start")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    gate.touch()
    out = kale("resume", run_id)
    assert out.returncode == 0, out.stderr
    assert _tasks(kale, run_id)["plan[use]"]["result"] == ["got", {"n": 5}]

# -- through the manager, and Slurm pilots ------------------------------------------------
def _check_files_run(kale: Kale, tmp_path: Path, run_id: str, n: int) -> dict[str, Any]:
    tasks = _tasks(kale, run_id)
    assert [t for t in tasks if t.startswith("analyse[")] == [f"analyse[{i}]" for i in range(n)]
    assert {t["state"] for t in tasks.values()} == {"SUCCEEDED"}, tasks
    assert tasks["summary"]["result"]["sum"] == n * (n + 1) // 2
    return tasks


def test_a_map_through_the_manager_with_a_retried_member_and_a_rerun(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    managers("--workers", "2")
    wf = _files_workflow(tmp_path, 20, bad="7")
    first = _run(kale, str(wf), ok=False)
    tasks = _tasks(kale, first)
    assert tasks["analyse[6]"]["state"] == "FAILED" and tasks["analyse[6]"]["attempts"] == 2
    assert kale.attempts(first, "analyse[0]")[0]["worker"]  # it ran on a manager's worker
    (tmp_path / "fixed").touch()
    again = _run(kale, str(wf), "--rerun-failed", first)
    tasks = _check_files_run(kale, tmp_path, again, 20)
    assert sum(1 for i in range(20) if tasks[f"analyse[{i}]"]["reused_from"] == first) == 19
    assert _ledger(tmp_path).count("f0007.txt") == 3  # twice in the first run, once now


def test_a_map_and_added_tasks_on_slurm_pilots(
        slurm: str, kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    managers("--workers", "0")
    wf = _files_workflow(tmp_path, 12)
    run_id = _run(kale, str(wf), "--executor", "slurm", "--pilot")
    _check_files_run(kale, tmp_path, run_id, 12)
    worker = kale.attempts(run_id, "analyse[3]")[0]["worker"]
    assert worker, "the member ran on a pilot's worker"
    run_id = _run(kale, str(_plan_workflow(tmp_path, 2)), "--executor", "slurm", "--pilot")
    tasks = _tasks(kale, run_id)
    assert tasks["plan[last]"]["result"] == 1 and tasks["report"]["result"] == 2


# -- on a workflow engine -----------------------------------------------------------------
ENGINE_PLAN = '''\
import kale


def plan():
    sub = kale.Workflow("more")
    sub.python(square, name="sq", parameters={"x": 7})
    kale.add_tasks(sub)
    return "planned"


def plan_on_dask():
    sub = kale.Workflow("more")
    sub.python(square, name="sq", parameters={"x": 7}, executor="dask")
    kale.add_tasks(sub)


def square(x):
    return x * x
'''


def test_a_map_and_the_tasks_a_task_adds_run_on_dask(kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "eng.py").write_text(ENGINE_PLAN)
    wf = tmp_path / "dask.yaml"
    wf.write_text(textwrap.dedent("""\
        name: on-dask
        executor: dask
        tasks:
          squares:
            python: eng:square
            map: {x: [1, 2, 3]}
          plan:
            python: eng:plan
        """))
    run_id = _run(kale, str(wf))
    tasks = _tasks(kale, run_id)
    assert tasks["squares"]["result"] == [1, 4, 9]
    assert tasks["plan[sq]"]["result"] == 49
    for name in ("squares[2]", "plan[sq]"):  # where their map (or parent) runs: on Dask
        assert kale.attempts(run_id, name)[0]["worker"].startswith("dask:")
    # a run that uses no engine refuses a task added on one, saying why
    local = tmp_path / "local.yaml"
    local.write_text("name: local\ntasks:\n  plan:\n    python: eng:plan_on_dask\n")
    failed = _tasks(kale, _run(kale, str(local), ok=False))["plan"]
    assert "names the engine dask (plan[sq])" in failed["error"]
    assert "uses no engine" in failed["error"]


def test_a_notebook_adds_tasks(kale: Kale, tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(metadata={"kernelspec": {"display_name": "Python 3",
                                               "language": "python", "name": "python3"}})
    params = new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(
        "import kale\nsub = kale.Workflow('more')\nfor i in range(n):\n"
        "    sub.shell(f'echo{i}', f'echo {i} > out.txt', outputs=['out.txt'])\n"
        "kale.add_tasks(sub)\nkale.record('n', n)")]
    nbformat.write(nb, tmp_path / "gen.ipynb")
    wf = tmp_path / "nb.yaml"
    wf.write_text("name: nbadd\ntasks:\n  gen:\n    notebook: gen.ipynb\n"
                  "    parameters: {n: 3}\n")
    tasks = _tasks(kale, _run(kale, str(wf)))
    assert tasks["gen"]["result"] == {"n": 3}  # what it added is not part of its result
    assert [n for n in tasks if n.startswith("gen[")] == ["gen[echo0]", "gen[echo1]",
                                                         "gen[echo2]"]
    assert Path(tasks["gen[echo2]"]["result"]["out.txt"]).read_text() == "2\n"


def test_a_cancelled_map_resumes_without_running_a_succeeded_member_again(
        kale: Kale, tmp_path: Path) -> None:
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    wf = tmp_path / "cancel.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: cancelled
        parameters: {{xs: [0, 1, 2, 3]}}
        tasks:
          work:
            shell: >-
              echo "$x" >> {ledger}; if [ "$x" -gt 0 ];
              then while [ ! -e {gate} ]; do sleep 0.05; done; fi
            map: {{x: "${{params.xs}}"}}
          after:
            shell: echo done
            after: [work]
        """))
    with kale.popen("run", str(wf), "--jobs", "2") as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        wait_until(lambda: _tasks(kale, run_id).get("work[0]", {}).get("state")
                   == "SUCCEEDED" and _tasks(kale, run_id)["work[1]"]["state"] == "RUNNING",
                   120, "a member done and one running")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the run is cancelled
        assert proc.wait(timeout=60) == 130
    states = {n: t["state"] for n, t in _tasks(kale, run_id).items()}
    assert states["work"] == "CANCELLED" and states["work[0]"] == "SUCCEEDED"
    assert states["work[1]"] == "CANCELLED"
    gate.touch()
    out = kale("resume", run_id)
    assert out.returncode == 0, out.stderr
    tasks = _tasks(kale, run_id)
    assert {t["state"] for t in tasks.values()} == {"SUCCEEDED"}, tasks
    assert [n for n in tasks if n.startswith("work[")] == [f"work[{i}]" for i in range(4)]
    assert _ledger(tmp_path).count("0") == 1  # the member that had succeeded did not rerun

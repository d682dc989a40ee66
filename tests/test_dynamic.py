"""Workflows that grow while they run (issue 18): a task mapped over what an upstream task
returned or left, conditions decided from results, and everything Kale promises still
holding for the members a map adds: their own state, retries and results; reuse by
element; partial runs; resume after a SIGKILL."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path
from typing import Any

from conftest import Kale, wait_until

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


def test_a_changed_file_runs_its_member_again(kale: Kale, tmp_path: Path) -> None:
    wf = _files_workflow(tmp_path, 3)
    _run(kale, str(wf))
    # the simulation now writes a different second file (same name, other content)
    text = wf.read_text().replace("echo $i >", 'echo $((i * (i == 2 ? 7 : 1))) >')
    wf.write_text(text)
    again = _run(kale, str(wf))
    assert _ledger(tmp_path)[3:] == ["f0002.txt"]
    assert _tasks(kale, again)["summary"]["result"]["sum"] == 1 + 14 + 3


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

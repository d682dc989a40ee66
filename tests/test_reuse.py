"""Result reuse is a promise about results: a task reuses only its own earlier result, made
from the code on disk now and the inputs it claims. Each test here is a wrong result Kale
once gave (issue 12), run for real: shell commands, Python workers, a manager."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Kale, Manager, gate_sh, wait_until
from kale import Workflow
from kale.model.states import RunState


def _status(kale: Kale, run_id: str) -> dict[str, Any]:
    out = kale("status", run_id, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _tasks(kale: Kale, run_id: str) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in _status(kale, run_id)["tasks"]}


def _run(kale: Kale, *args: str) -> str:
    out = kale("run", *args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()[0]


# -- 1. a task reuses its own result, never another task's ------------------------------------
def test_identical_replicas_each_reuse_their_own_result(kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "replicas.yaml"
    wf.write_text("name: replicas\ntasks:\n" + "".join(
        f"  r{i}:\n    shell: 'echo $$ > out.txt'\n    outputs: [out.txt]\n" for i in (1, 2)))
    first = _run(kale, str(wf))
    second = _run(kale, str(wf))
    one, two = _tasks(kale, first), _tasks(kale, second)
    for name in ("r1", "r2"):
        assert two[name]["reused_from"] == first
        # the reused result is this task's own file, from its own directory
        assert two[name]["result"] == one[name]["result"]
        assert f"/{name}/out.txt" in two[name]["result"]["out.txt"]
    assert (Path(two["r1"]["result"]["out.txt"]).read_text()
            != Path(two["r2"]["result"]["out.txt"]).read_text())


def test_five_simulation_replicas_keep_five_values(home: Path, tmp_path: Path) -> None:
    def simulate() -> float:  # the same function five times: identical replicas
        import random

        return random.random()

    wf = Workflow("ensemble", base_dir=tmp_path)
    for i in range(5):
        wf.python(simulate, name=f"sim{i}")
    first = wf.run().wait()
    values = [first.result(f"sim{i}") for i in range(5)]
    assert len(set(values)) == 5
    again = wf.run().wait()
    assert [again.result(f"sim{i}") for i in range(5)] == values
    assert all(t.reused_from == first.id for t in again.tasks)


# -- 2. warm workers never run stale code; the key covers the code a task ran -----------------
STEPS = """\
from helper import VERSION


def value():
    return VERSION + "{suffix}"
"""


def _code_workflow(folder: Path) -> Path:
    (folder / "steps.py").write_text(STEPS.format(suffix=""))
    (folder / "helper.py").write_text('VERSION = "v1"\n')
    wf = folder / "wf.yaml"
    wf.write_text("name: code\ntasks:\n  value:\n    python: steps:value\n")
    return wf


def test_a_warm_worker_runs_the_code_on_disk_and_records_it(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    wf = _code_workflow(tmp_path)
    managers("--workers", "1")
    first = _run(kale, str(wf))
    assert _tasks(kale, first)["value"]["result"] == "v1"

    # the function's own module changes: the worker that imported it must not run it
    (tmp_path / "steps.py").write_text(STEPS.format(suffix="-edited"))
    second = _run(kale, str(wf))
    assert _tasks(kale, second)["value"]["result"] == "v1-edited"
    assert _tasks(kale, second)["value"]["reused_from"] is None

    # a module it imports changes (not the file the workflow names): same promise
    (tmp_path / "helper.py").write_text('VERSION = "v2"\n')
    third = _run(kale, str(wf))
    assert _tasks(kale, third)["value"]["result"] == "v2-edited"
    assert _tasks(kale, third)["value"]["reused_from"] is None

    # unchanged now: reused, through the manager and without it
    assert _tasks(kale, _run(kale, str(wf)))["value"]["reused_from"] == third
    assert kale("manager", "stop").returncode == 0
    fifth = _tasks(kale, _run(kale, str(wf)))["value"]
    assert (fifth["result"], fifth["reused_from"]) == ("v2-edited", third)


def test_editing_an_imported_module_reruns_the_task_without_a_manager(
        kale: Kale, tmp_path: Path) -> None:
    wf = _code_workflow(tmp_path)
    first = _run(kale, str(wf))
    (tmp_path / "helper.py").write_text('VERSION = "v2"\n')
    second = _run(kale, str(wf))
    assert _tasks(kale, first)["value"]["result"] == "v1"
    assert _tasks(kale, second)["value"]["result"] == "v2"
    assert _tasks(kale, second)["value"]["reused_from"] is None
    # and putting the old code back finds the old result again
    (tmp_path / "helper.py").write_text('VERSION = "v1"\n')
    third = _run(kale, str(wf))
    assert _tasks(kale, third)["value"]["reused_from"] == first


def test_a_warm_worker_runs_a_module_from_its_own_workflows_folder(
        kale: Kale, tmp_path: Path, managers: Callable[..., Manager]) -> None:
    # Two workflows in two folders, each with its own steps.py: one worker serves both,
    # and a task never runs the other folder's module of the same name.
    files = []
    for label in ("alpha", "beta"):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "steps.py").write_text(f"def value():\n    return {label!r}\n")
        wf = folder / "wf.yaml"
        wf.write_text(f"name: {label}\ntasks:\n  value:\n    python: steps:value\n")
        files.append(wf)
    managers("--workers", "1")
    for wf, label in ((files[0], "alpha"), (files[1], "beta"), (files[0], "alpha")):
        run_id = _run(kale, str(wf))
        assert _tasks(kale, run_id)["value"]["result"] == label


# -- 7. a selected task never gets an upstream result made from other inputs ------------------
def test_only_with_a_changed_parameter_runs_the_stale_upstream(kale: Kale,
                                                                tmp_path: Path) -> None:
    wf = tmp_path / "params.yaml"
    wf.write_text(textwrap.dedent("""\
        name: params
        parameters: {n: 3}
        tasks:
          make:
            shell: 'echo "$n" > n.txt'
            parameters: {n: "${params.n}"}
            outputs: [n.txt]
          use:
            shell: 'cat "$f"'
            parameters: {f: "${make.n.txt}"}
        """))
    _run(kale, str(wf))
    run = _run(kale, str(wf), "--only", "use", "-p", "n=5")
    tasks = _tasks(kale, run)
    assert tasks["make"]["state"] == "SUCCEEDED" and tasks["make"]["reused_from"] is None
    assert any(
        "not selected, but use needs it" in (e.get("reason") or "")
        for e in _events(kale, run, "make"))
    logs = kale("logs", run, "use")
    assert logs.stdout.strip() == "5"


def _events(kale: Kale, run_id: str, task: str) -> list[dict[str, Any]]:
    from kale.store.store import Store

    store = Store(f"sqlite:///{kale.home / 'kale.db'}")
    try:
        return [e for e in store.events(run_id) if e["task"] == task]
    finally:
        store.close()


# -- 8. resume after Ctrl-C runs what did not succeed --------------------------------------
def test_resume_after_ctrl_c_runs_what_was_cancelled(kale: Kale, tmp_path: Path) -> None:
    gate, ledger = tmp_path / "gate", tmp_path / "ledger"
    wf = tmp_path / "stop.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: stop
        tasks:
          first:
            shell: echo first >> {ledger}
          second:
            shell: '{gate_sh(gate)}; echo second >> {ledger}'
            after: [first]
          third:
            shell: echo third >> {ledger}
            after: [second]
        """))
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        wait_until(lambda: _tasks(kale, run_id)["second"]["state"] == "RUNNING",
                   what="second to run")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    assert _status(kale, run_id)["run"]["state"] == "CANCELLED"
    gate.touch()
    resumed = kale("resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = _status(kale, run_id)
    assert status["run"]["state"] == "SUCCEEDED"
    assert {t["name"]: t["state"] for t in status["tasks"]} == dict.fromkeys(
        ("first", "second", "third"), "SUCCEEDED")
    assert ledger.read_text().split() == ["first", "second", "third"]


# -- 9. reuse follows what changed: an upstream's result -------------------------------------
def test_an_upstream_that_reran_with_the_same_output_leaves_downstream_reused(
        kale: Kale, tmp_path: Path) -> None:
    wf = tmp_path / "follow.yaml"

    def write(make: str, side: str) -> None:
        wf.write_text(textwrap.dedent(f"""\
            name: follow
            tasks:
              make:
                shell: {make}
                outputs: [data.txt]
              use:
                shell: 'wc -c < "$f"'
                parameters: {{f: "${{make.data.txt}}"}}
              side:
                shell: {side}
              after_side:
                shell: cat ../side/side.txt
                after: [side]
            """))

    write("'echo 42 > data.txt'", "'echo a > side.txt'")
    first = _run(kale, str(wf))
    # the same data made by another command; a side-effect task changed
    write("'printf \"42\\n\" > data.txt'", "'echo b > side.txt'")
    second = _run(kale, str(wf))
    tasks = _tasks(kale, second)
    assert tasks["make"]["reused_from"] is None  # its command changed: it ran
    assert tasks["use"]["reused_from"] == first  # its input's content did not
    # a task whose result says nothing (no outputs, no records) may work by side effects:
    # what is below it runs again when it changed
    assert tasks["side"]["reused_from"] is None and tasks["after_side"]["reused_from"] is None
    # the data changes: what uses it runs again
    write("'echo 43 > data.txt; echo more >> data.txt'", "'echo b > side.txt'")
    third = _run(kale, str(wf))
    assert _tasks(kale, third)["use"]["reused_from"] is None
    assert kale("logs", third, "use").stdout.strip() == "8"
    assert _status(kale, third)["run"]["state"] == RunState.SUCCEEDED.value


def test_a_script_a_shell_command_names_is_part_of_its_code(kale: Kale, tmp_path: Path) -> None:
    import sys

    script = tmp_path / "analyse.py"
    script.write_text("print('first version')\n")
    wf = tmp_path / "script.yaml"
    wf.write_text(f"name: script\ntasks:\n  analyse:\n    shell: {sys.executable} {script}\n")
    first = _run(kale, str(wf))
    assert _tasks(kale, _run(kale, str(wf)))["analyse"]["reused_from"] == first
    script.write_text("print('second version')\n")
    third = _run(kale, str(wf))
    assert _tasks(kale, third)["analyse"]["reused_from"] is None
    assert kale("logs", third, "analyse").stdout == "second version\n"



def test_a_script_edited_while_its_shell_task_runs_is_not_taken_for_the_code_that_ran(
        kale: Kale, tmp_path: Path) -> None:
    """The command runs the script as it was when it started (v1) and the user edits it
    while it runs (v2): the result is v1's; a run of v2 runs it again, and putting v1 back
    finds v1's result. A file the command appends to (`>> ledger`) is its output, not its
    code: it does not stop the command's reuse."""
    script, gate, ledger = tmp_path / "analyse.py", tmp_path / "gate", tmp_path / "ledger"
    script.write_text(f"import os, time\nopen({str(tmp_path / 'started')!r}, 'w').close()\n"
                      f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)\n"
                      "print('v1')\n")
    wf = tmp_path / "script.yaml"
    wf.write_text(f"name: script\ntasks:\n  analyse:\n"
                  f"    shell: {sys.executable} {script} >> {ledger}\n")
    v1 = script.read_text()
    with kale.popen("run", str(wf)) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        wait_until(lambda: (tmp_path / "started").exists(), what="the script to start")
        script.write_text(v1.replace("print('v1')", "print('v2')"))
        gate.touch()
        assert proc.wait(timeout=120) == 0
    assert ledger.read_text() == "v1\n"  # Python had compiled the script as it started
    second = _run(kale, str(wf))
    assert _tasks(kale, second)["analyse"]["reused_from"] is None
    assert ledger.read_text() == "v1\nv2\n"
    script.write_text(v1)
    assert _tasks(kale, _run(kale, str(wf)))["analyse"]["reused_from"] == first
    assert ledger.read_text() == "v1\nv2\n"  # reused: not run, though the ledger grew


def test_a_copy_of_the_folder_with_an_edited_helper_does_not_reuse_the_originals_result(
        home: Path, tmp_path: Path) -> None:
    # The same workflow name and steps.py in two folders; the copy's helper differs. The
    # original's result was made with the original's (unchanged) helper: not the copy's.
    import shutil

    original = tmp_path / "proj"
    original.mkdir()
    (original / "steps.py").write_text(
        "from helper import VALUE\n\n\ndef value():\n    return VALUE\n")
    (original / "helper.py").write_text("VALUE = 'v1'\n")
    copy = tmp_path / "proj-v2"
    shutil.copytree(original, copy)
    (copy / "helper.py").write_text("VALUE = 'v2, in the copy'\n")
    got = []
    for folder in (original, copy, original):
        wf = Workflow("demo", base_dir=folder)
        wf.python("steps:value", name="value")
        run = wf.run().wait()
        got.append((run.result("value"), run.tasks[0].reused_from is not None))
    assert got == [("v1", False), ("v2, in the copy", False), ("v1", True)]


def test_a_helper_edited_while_its_task_runs_is_not_taken_for_the_code_that_ran(
        home: Path, tmp_path: Path) -> None:
    # The task imported helper.py (v1) and is still running when the user edits it (v2):
    # its result is v1's; the next run must not reuse it as if made with v2.
    gate = tmp_path / "gate"
    (tmp_path / "steps.py").write_text(textwrap.dedent(f"""\
        import os, time


        def value():
            from helper import VALUE
            open({str(tmp_path / 'started')!r}, "w").close()
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.01)
            return VALUE
        """))
    (tmp_path / "helper.py").write_text("VALUE = 'v1'\n")
    wf = Workflow("edited-while-running", base_dir=tmp_path)
    wf.python("steps:value", name="value")
    handle = wf.run()
    wait_until(lambda: (tmp_path / "started").exists(), what="the task to import helper")
    (tmp_path / "helper.py").write_text("VALUE = 'v2, edited'\n")
    gate.touch()
    assert handle.wait().result("value") == "v1"
    again = wf.run().wait()
    assert again.result("value") == "v2, edited"
    assert again.tasks[0].reused_from is None


def test_a_notebook_whose_kernel_cannot_import_kale_is_not_reused_unchecked(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernelspec of another environment, where Kale is not importable (here an empty
    # package named kale shadows it): the kernel cannot tell which user code it loaded,
    # so its result is never reused, even when an edited helper would change it.
    import json as json_

    import nbformat

    from kale.tasks import kernels

    shadow = tmp_path / "env"
    (shadow / "kale").mkdir(parents=True)
    (shadow / "kale" / "__init__.py").write_text("")
    spec = tmp_path / "jupyter" / "kernels" / "nokale"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json_.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python without Kale", "language": "python",
        "env": {"PYTHONPATH": str(shadow)}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    kernels.installed_kernels(refresh=True)
    try:
        project = tmp_path / "proj"
        project.mkdir()
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(
            "from helper import VALUE\nopen('out.txt', 'w').write(VALUE)")]
        nb.metadata["kernelspec"] = {"name": "nokale", "display_name": "nokale",
                                     "language": "python"}
        nbformat.write(nb, str(project / "analyse.ipynb"))
        said = []
        for value in ("v1", "v2"):
            (project / "helper.py").write_text(f"VALUE = {value!r}\n")
            wf = Workflow("nokale", base_dir=project)
            wf.notebook("analyse", "analyse.ipynb", outputs=["out.txt"])
            run = wf.run().wait()
            assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
            said.append(Path(run.result("analyse")["out.txt"]).read_text())
        assert said == ["v1", "v2"]
    finally:
        monkeypatch.undo()
        kernels.installed_kernels(refresh=True)


def test_an_edited_script_of_a_side_effect_task_runs_what_is_below_it_again(
        home: Path, tmp_path: Path) -> None:
    # `prepare` names a script and declares no outputs (it works by side effects): its
    # result is None, so what is below sees its key and the code it ran. Edit the script:
    # both run again; change nothing: both are reused.
    data = tmp_path / "prepared.txt"
    script = tmp_path / "prepare.py"
    (tmp_path / "steps.py").write_text(
        f"def train():\n    return 'trained on ' + open({str(data)!r}).read()\n")
    said = []
    for version in ("v1", "v2", "v2"):
        script.write_text(f"open({str(data)!r}, 'w').write({version!r})\n")
        wf = Workflow("side-effects", base_dir=tmp_path)
        wf.shell("prepare", [sys.executable, str(script)])
        wf.python("steps:train", name="train", after=["prepare"])
        run = wf.run().wait()
        assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
        said.append((run.result("train"), sorted(t.name for t in run.tasks if t.reused_from)))
    assert said == [("trained on v1", []), ("trained on v2", []),
                    ("trained on v2", ["prepare", "train"])]


def test_members_of_equal_elements_each_reuse_their_own_result(
        home: Path, tmp_path: Path) -> None:
    # A map over [1, 1, 2] of a random draw: the two members of 1 are replicas, and each
    # reuses its own earlier draw, never the other's.
    def build(items: list[int]) -> Workflow:
        wf = Workflow("replica-map", base_dir=tmp_path, parameters={"items": items})

        def src(items: list[int]) -> list[int]:
            return items

        def draw(seed: int) -> tuple[int, str]:
            import uuid

            return seed, uuid.uuid4().hex

        source = wf.python(src, name="src")
        wf.python(draw, name="draw", map=source.result)
        return wf

    def draws(items: list[int]) -> list[tuple[int, str]]:
        run = build(items).run().wait()
        assert run.state is RunState.SUCCEEDED, [t.error for t in run.tasks]
        return [tuple(d) for d in run.result("draw")]  # type: ignore[misc]

    first = draws([1, 1, 2])
    assert len({d for _, d in first}) == 3
    assert draws([1, 1, 2]) == first


ORDER = """
def keys(d):
    return list(d)
"""


def _order_workflow(folder: Path, task_param: str, cfg: str) -> Path:
    (folder / "order.py").write_text(ORDER)
    wf = folder / "order.yaml"
    wf.write_text(textwrap.dedent(f"""\
        name: order
        parameters:
          cfg: {cfg}
        tasks:
          own: {{python: "order:keys", parameters: {{d: {task_param}}}}}
          wide: {{python: "order:keys", parameters: {{d: "${{params.cfg}}"}}}}
        """))
    return wf


def test_a_dict_whose_keys_come_in_another_order_is_another_input(
        kale: Kale, tmp_path: Path) -> None:
    """A task that iterates a dict sees its order: a task parameter and a workflow
    parameter that differ only in the order of their keys are new inputs (each was reused
    with the other order's result). (An upstream's *result* is the same result when
    equal, as Python's == says: a dict built from a set comes in another order in each
    process.)"""
    first = _run(kale, str(_order_workflow(tmp_path, "{b: 1, a: 2}", "{y: 1, x: 2}")))
    got = {n: t["result"] for n, t in _tasks(kale, first).items()}
    assert got == {"own": ["b", "a"], "wide": ["y", "x"]}
    second = _run(kale, str(_order_workflow(tmp_path, "{a: 2, b: 1}", "{x: 2, y: 1}")))
    tasks = _tasks(kale, second)
    assert {n: t["result"] for n, t in tasks.items()} == {"own": ["a", "b"],
                                                          "wide": ["x", "y"]}
    assert {n: t["reused_from"] for n, t in tasks.items()} == dict.fromkeys(tasks)
    # the same order again: each reuses its own
    third = _tasks(kale, _run(kale, str(tmp_path / "order.yaml")))
    assert {n: t["reused_from"] for n, t in third.items()} == dict.fromkeys(tasks, second)


def test_an_output_edited_in_place_after_its_task_is_not_reused(
        kale: Kale, tmp_path: Path) -> None:
    """A task below appends to its upstream's declared output: the next run makes the
    upstream's file again (it was reused, edited, as the upstream's own). A file written
    again with what the task made is that task's result still."""
    wf = tmp_path / "edit.yaml"
    wf.write_text(textwrap.dedent("""\
        name: edit
        tasks:
          up: {shell: "echo made > out.txt", outputs: [out.txt]}
          down: {shell: "wc -l < ${up.out.txt} > n.txt; echo edited >> ${up.out.txt}",
                 outputs: [n.txt]}
        """))
    first = _run(kale, str(wf))
    made = Path(_tasks(kale, first)["up"]["result"]["out.txt"])
    assert made.read_text() == "made\nedited\n"  # what `down` did to it
    second_id = _run(kale, str(wf))
    second = _tasks(kale, second_id)
    assert second["up"]["reused_from"] is None  # made again
    again = Path(second["up"]["result"]["out.txt"])
    assert again.read_text() == "made\n"
    # `down` reads the same content as in the first run: its result stands
    assert second["down"]["reused_from"] == first
    # written again, unchanged: still `up`'s own result (its content is checked)
    again.write_text("made\n")
    third = _tasks(kale, _run(kale, str(wf)))
    assert third["up"]["reused_from"] == second_id


@pytest.mark.parametrize("line, code", [
    ("python {a} > {b}", "a"),
    ("python {a} >> {b} 2> {c}", "a"),
    ("python {a} --config={b} &> {c}", "ab"),
    ("python {a} | tee -a {b} {c}", "a"),
    ("python {a} | tee {b}; cat {c}", "ac"),
    ("python {a} && python {b}", "ab"),
    ("echo start | tee -a {b}\npython3 {a} > out.txt\ncat {c}", "ac"),
    ("grep tee {a} 2>&1 | tee {b}", "a"),
])
def test_the_files_a_command_line_writes_are_its_outputs_not_its_code(
        tmp_path: Path, line: str, code: str) -> None:
    from kale.tasks.usercode import named_files

    files = {}
    for name in "abc":
        files[name] = tmp_path / f"{name}.txt"
        files[name].write_text(name)
    named = named_files(line.format(**files))
    assert sorted(named) == sorted(str(files[n]) for n in code)


def test_a_notebook_edited_after_its_run_was_made_is_recorded_as_it_ran(
        home: Path, tmp_path: Path) -> None:
    """The run is made with the notebook as v1; it is edited to v2 before its task starts
    (the task runs v2), then put back to v1: the next run must not reuse v2's result as
    v1's."""
    import nbformat

    def write(value: str) -> None:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"open('out.txt', 'w').write({value!r})")]
        nbformat.write(nb, str(tmp_path / "analyse.ipynb"))

    gate = tmp_path / "gate"
    write("v1")
    v1 = (tmp_path / "analyse.ipynb").read_bytes()  # (a new cell has a new id: kept)
    wf = Workflow("edited-before-start", base_dir=tmp_path)
    wf.shell("first", gate_sh(gate))
    wf.notebook("analyse", "analyse.ipynb", outputs=["out.txt"], after=["first"])
    handle = wf.run()  # its definition (the notebook's hash) is taken now
    write("v2")
    gate.touch()
    run = handle.wait()
    assert Path(run.result("analyse")["out.txt"]).read_text() == "v2"
    (tmp_path / "analyse.ipynb").write_bytes(v1)
    again = wf.run().wait()
    assert Path(again.result("analyse")["out.txt"]).read_text() == "v1"
    assert {t.name: t.reused_from for t in again.tasks}["analyse"] is None


GROUPS = '''
import kale
from helper import VALUE


def member(x):
    return f"{x}:{VALUE}"


def below(xs):
    return list(xs)


def plan():
    sub = kale.Workflow("more")
    sub.python(member, name="added", parameters={"x": 0})
    kale.add_tasks(sub)
    return "planned"
'''


def test_a_map_and_an_adding_task_are_not_reused_once_their_members_code_changed(
        kale: Kale, tmp_path: Path) -> None:
    """The code a map's members or a task's added tasks ran is the group's code too: a
    helper they import edited, a run of what is below the map alone (the map reused as
    an input) and a run of the whole workflow make both again (both were reused whole,
    with the members' old results)."""
    (tmp_path / "groups.py").write_text(GROUPS)
    (tmp_path / "helper.py").write_text("VALUE = 'v1'\n")
    wf = tmp_path / "groups.yaml"
    wf.write_text(textwrap.dedent("""\
        name: groups
        tasks:
          each: {python: "groups:member", map: {x: [1, 2]}}
          below: {python: "groups:below", parameters: {xs: "${each}"}}
          plan: {python: "groups:plan"}
        """))
    first = _tasks(kale, _run(kale, str(wf)))
    assert first["below"]["result"] == ["1:v1", "2:v1"]
    assert first["plan[added]"]["result"] == "0:v1"
    (tmp_path / "helper.py").write_text("VALUE = 'v2'\n")
    alone = _tasks(kale, _run(kale, str(wf), "--only", "below"))
    assert alone["below"]["result"] == ["1:v2", "2:v2"]
    assert alone["each"]["reused_from"] is None
    whole = _tasks(kale, _run(kale, str(wf)))
    assert whole["plan"]["reused_from"] is None
    assert whole["plan[added]"]["result"] == "0:v2"
    # nothing changed since: all reused (the map gathers its members' reused results)
    again = _tasks(kale, _run(kale, str(wf)))
    assert {n: bool(t["reused_from"]) for n, t in again.items()} == {
        **dict.fromkeys(again, True), "each": False}


@pytest.mark.parametrize("clock", ["same", "file server behind"])
def test_a_map_whose_members_outputs_were_edited_is_not_reused_whole(
        kale: Kale, tmp_path: Path, clock: str) -> None:
    """A member's output edited in place: a run of the task below the map alone does not
    take the map whole (it was, with the edited file); the map's members run again. Also
    when the file server's clock is an hour behind the one Kale records end times with
    (the edited file's time then comes before its member's end)."""
    (tmp_path / "mapread.py").write_text(
        "def cat(xs):\n    return ''.join(open(x['out.txt']).read() for x in xs)\n")
    wf = tmp_path / "mapout.yaml"
    wf.write_text(textwrap.dedent("""\
        name: mapout
        tasks:
          each: {shell: "echo value $x > out.txt", map: {x: [1, 2]}, outputs: [out.txt]}
          below: {python: "mapread:cat", parameters: {xs: "${each}"}}
        """))
    first_id = _run(kale, str(wf))
    first = _tasks(kale, first_id)
    if clock != "same":
        _clock_ahead(kale, first_id, 3600)
    Path(first["each[0]"]["result"]["out.txt"]).write_text("tampered\n")
    alone = _tasks(kale, _run(kale, str(wf), "--only", "below", "--force"))
    assert alone["below"]["result"] == "value 1\nvalue 2\n"
    assert alone["each[0]"]["reused_from"] is None


def _clock_ahead(kale: Kale, run_id: str, seconds: float) -> None:
    """As if the run's engine had kept a clock ``seconds`` ahead of the file system's
    (a cluster's shared file system, whose server sets the files' times): its tasks' end
    times, as it recorded them, that much later than the times the files carry."""
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{kale.home / 'kale.db'}")
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE tasks SET ended_at = ended_at + :s WHERE run_id = :r"),
                      {"s": seconds, "r": run_id})
    finally:
        engine.dispose()


def test_an_output_edited_on_a_file_system_whose_clock_is_behind_is_not_reused(
        kale: Kale, tmp_path: Path) -> None:
    """The files' times come from the file system, the end times Kale records from its
    own host's clock: with the file server an hour behind, an output edited after its
    task ended carries a time before that end. It must still count as changed (its
    content is read again), never be reused as the task's own."""
    wf = tmp_path / "skew.yaml"
    wf.write_text('name: skew\ntasks:\n  up: {shell: "echo made > out.txt", outputs: [out.txt]}\n')
    first_id = _run(kale, str(wf))
    _clock_ahead(kale, first_id, 3600)
    Path(_tasks(kale, first_id)["up"]["result"]["out.txt"]).write_text("edit\n")  # same size
    second = _tasks(kale, _run(kale, str(wf)))
    assert second["up"]["reused_from"] is None  # made again
    assert Path(second["up"]["result"]["out.txt"]).read_text() == "made\n"
    # untouched since: reused, whatever the clocks say
    third = _tasks(kale, _run(kale, str(wf)))
    assert third["up"]["reused_from"] is not None


def test_a_file_a_command_writes_through_an_argument_does_not_stop_its_reuse(
        kale: Kale, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--log=/abs/ledger` names a file the task writes: an output, not code (it changed
    while the task ran, and it is no program), so the next runs reuse the task. The
    user a run records is the OS user's id, not $LOGNAME or $USER."""
    step, ledger = tmp_path / "step.py", tmp_path / "ledger.log"
    step.write_text("import sys\nopen(sys.argv[1].split('=')[1], 'a').write('ran\\n')\n")
    ledger.write_text("")
    wf = tmp_path / "ledger.yaml"
    wf.write_text(f"name: ledger\ntasks:\n  t:\n"
                  f"    shell: {sys.executable} {step} --log={ledger} > out.txt\n"
                  "    outputs: [out.txt]\n")
    first = _run(kale, str(wf))
    monkeypatch.setenv("LOGNAME", "someone-else")
    monkeypatch.setenv("USER", "someone-else")
    for _ in range(2):
        assert _tasks(kale, _run(kale, str(wf)))["t"]["reused_from"] == first
    assert ledger.read_text() == "ran\n"


MIXED = '''
from pathlib import Path

from helper import VALUE


def member(x):
    if x == 1:  # the helper is edited between the map's two members
        (Path(__file__).parent / "helper.py").write_text("VALUE = 'v2'\\n")
    return f"{x}:{VALUE}"


def below(xs):
    return list(xs)
'''


def test_a_map_whose_members_ran_different_versions_of_a_helper_is_not_reused_whole(
        kale: Kale, tmp_path: Path) -> None:
    (tmp_path / "mixed.py").write_text(MIXED)
    (tmp_path / "helper.py").write_text("VALUE = 'v1'\n")
    wf = tmp_path / "mixed.yaml"
    wf.write_text(textwrap.dedent("""\
        name: mixed
        tasks:
          each: {python: "mixed:member", map: {x: [1, 2]}}
          below: {python: "mixed:below", parameters: {xs: "${each}"}}
        """))
    first = _tasks(kale, _run(kale, str(wf), "--jobs", "1"))
    assert first["below"]["result"] == ["1:v1", "2:v2"]
    alone = _tasks(kale, _run(kale, str(wf), "--only", "below", "--force"))
    assert alone["each"]["reused_from"] is None
    assert alone["below"]["result"] == ["1:v2", "2:v2"]


def test_a_configuration_or_script_edited_while_a_launched_task_runs_is_not_reused(
        kale: Kale, tmp_path: Path) -> None:
    """`timeout 600 python3 /abs/step.py --config=/abs/run.toml --log=/abs/ledger`: while
    it runs the configuration is edited and a line is added at the end of the script. The
    task ran the versions it started with, so the next run runs again; the ledger, which
    only grew, is its output and stops nothing."""
    step, cfg, ledger = tmp_path / "step.py", tmp_path / "run.toml", tmp_path / "ledger"
    started, gate = tmp_path / "started", tmp_path / "gate"
    step.write_text(
        "import os, sys, time\n"
        "args = dict(a.lstrip('-').split('=') for a in sys.argv[1:])\n"
        f"open({str(started)!r}, 'w').close()\n"
        f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.01)\n"
        "open(args['log'], 'a').write('ran\\n')\n"
        "print(open(args['config']).read().strip())\n")
    cfg.write_text("n = 1\n")
    ledger.write_text("")
    wf = tmp_path / "launched.yaml"
    wf.write_text(f"name: launched\ntasks:\n  t:\n    shell: timeout 600 {sys.executable} "
                  f"{step} --config={cfg} --log={ledger}\n")
    with kale.popen("run", str(wf)) as proc:
        wait_until(started.exists, what="the step to start")
        cfg.write_text("n = 2\n")
        with step.open("a") as f:
            f.write("print('added')\n")
        gate.touch()
        assert proc.wait(timeout=120) == 0
    second = _tasks(kale, _run(kale, str(wf)))["t"]
    assert second["reused_from"] is None
    assert ledger.read_text() == "ran\nran\n"
    # nothing edited since: reused, though the ledger grew
    assert _tasks(kale, _run(kale, str(wf)))["t"]["reused_from"] is not None
    assert ledger.read_text() == "ran\nran\n"


def test_only_a_grown_file_that_is_no_code_or_configuration_is_taken_for_an_output(
        tmp_path: Path) -> None:
    from kale.tasks.usercode import file_hash, grown_output

    cases = {"ledger": (b"a\n", b"a\nb\n", True), "rewritten": (b"a\n", b"b\nc\n", False),
             "shrunk": (b"a\nb\n", b"a\n", False), "run.toml": (b"n=1\n", b"n=1\nm=2\n", False),
             "step.py": (b"x=1\n", b"x=1\nprint(x)\n", False)}
    got = {}
    for name, (before, after, _) in cases.items():
        path = tmp_path / name
        path.write_bytes(before)
        was = file_hash(str(path))
        assert was is not None
        path.write_bytes(after)
        got[name] = grown_output(str(path), was, len(before))
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\n")
    was = file_hash(str(tmp_path / "tool"))
    assert was is not None
    (tmp_path / "tool").chmod(0o755)
    (tmp_path / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    assert grown_output(str(tmp_path / "tool"), was, len(b"#!/bin/sh\n")) is False
    assert got == {name: want for name, (_, _, want) in cases.items()}


def test_an_output_whose_time_is_a_clock_tick_before_its_task_ended_is_read_again(
        tmp_path: Path) -> None:
    """File times come from the kernel's coarse clock, up to a tick behind the engine's
    ``time.time()``: a task below that edits an output moments after its task ended may
    leave a time just *before* that end. Such a file must be read again (compared by its
    content), never taken as untouched. (The times are set by hand: no race to win.)"""
    import os
    import time

    from kale.store import results

    out = tmp_path / "out.txt"
    out.write_text("made\n")
    ended = time.time() + 100  # the file's ctime (now) is well before this "end"
    os.utime(out, (ended - 0.004, ended - 0.004))  # edited: a 4 ms tick behind
    assert results._changed_since([str(out)], ended)
    os.utime(out, (ended - 50, ended - 50))  # written by the task itself, long before
    assert not results._changed_since([str(out)], ended)


def test_an_output_path_that_cannot_be_listed_reads_as_missing_and_never_raises(
        tmp_path: Path) -> None:
    """A recorded output the system refuses to look at (here a name too long for it; a
    directory removed while it is read is another) is a missing file to the reuse check
    and to the result's hash, not an error that stops the engine."""
    import time

    from kale.store import results

    refused = str(tmp_path / ("x" * 300))  # ENAMETOOLONG: is_dir() raises, not False
    (tmp_path / "empty").mkdir()
    assert results.fingerprints([refused]) == {refused: []}
    assert results._changed_since([refused], ended=time.time() - 60,
                                  made={refused: [0, 0, 0, 0]})
    missing = results.content_hash(str(tmp_path / "not-there"))
    assert results.content_hash(refused) == missing
    assert results.content_hash(str(tmp_path / "empty")) != missing

"""The model layer: validation, references, the DAG, selection, the state machine, and the
public API surface."""

from __future__ import annotations

from typing import Any

import pytest

import kale
from kale import Ref, TaskState, Workflow
from kale.errors import IllegalTransition, SelectionError, ValidationError
from kale.model import dag
from kale.model.selection import Selection
from kale.model.states import TRANSITIONS, is_legal
from kale.store import Change, Store


def test_public_api_exports_what_it_says() -> None:
    for name in kale.__all__:
        assert getattr(kale, name) is not None, name
    assert {"Workflow", "Run", "record", "KaleError", "TaskState", "get_run"} <= set(kale.__all__)
    with pytest.raises(AttributeError):
        kale.nonexistent  # noqa: B018


def test_kale_spec_exports_what_it_says_when_asked() -> None:
    import kale.spec

    for name in kale.spec.__all__:
        assert callable(getattr(kale.spec, name)), name
    with pytest.raises(AttributeError):
        kale.spec.nonexistent  # noqa: B018


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    assert kale.__version__ == version("kale-workflows")
    assert "__version__" in dir(kale)


def test_importing_kale_does_not_load_the_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, kale; kale.record; "
            "print(sorted(m for m in sys.modules if m.startswith(('sqlalchemy', 'kale.engine'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_starts_without_the_workflow_readers() -> None:
    """Commands that read no workflow (``kale status``) do not pay for the readers or the
    workflow model: the store needs only the states."""
    import subprocess
    import sys

    code = ("import sys, kale.cli.main, kale.store.store; print(sorted(m for m in sys.modules "
            "if m.startswith(('kale.spec.', 'kale.model.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['kale.model.states', 'kale.spec.values']"


def test_references_build_dependencies_and_print_as_yaml_syntax() -> None:
    wf = Workflow("refs", parameters={"n": 2})
    a = wf.shell("a", "true")
    b = wf.shell("b", "true", parameters={"x": a["value"], "whole": a.result, "n": "${params.n}"})
    assert b.upstream == ["a"]
    assert str(a["value"]) == "${a.value}" and str(a.result) == "${a}"
    assert Ref.parse("${a.file.txt}") == Ref("a", "file.txt")
    assert b.to_dict()["parameters"] == {"x": "${a.value}", "whole": "${a}", "n": "${params.n}"}


def test_references_in_shell_commands_are_references() -> None:
    wf = Workflow("cmd", parameters={"n": 2})
    wf.shell("a", "true")
    b = wf.shell("b", 'echo "${a.out}" ${params.n} ${HOME} ${n} ${a}')
    c = wf.shell("c", ["cat", "--n=${params.n}", "${b.x}${a.y}"])
    assert b.upstream == ["a"] and c.upstream == ["b", "a"]
    assert b.refs() == [Ref("a", "out"), Ref("params", "n")]  # ${HOME}, ${n}, ${a}: the shell's
    assert c.refs() == [Ref("params", "n"), Ref("b", "x"), Ref("a", "y")]
    assert wf.order() == ["a", "b", "c"]
    assert b.to_dict()["shell"] == 'echo "${a.out}" ${params.n} ${HOME} ${n} ${a}'


def test_cycle_is_named() -> None:
    wf = Workflow("cyc")
    wf.shell("a", "true", after=["c"])
    wf.shell("b", "true", after=["a"])
    wf.shell("c", "true", after=["b"])
    with pytest.raises(ValidationError, match=r"dependency cycle: (a -> c -> b -> a|"
                                              r"c -> b -> a -> c|b -> a -> c -> b)"):
        wf.validate()


def test_unknown_dependency_and_reference_are_reported() -> None:
    wf = Workflow("unknown")
    wf.shell("a", "true", after=["ghost"], parameters={"x": "${phantom.y}", "n": "${params.m}"})
    with pytest.raises(ValidationError) as e:
        wf.validate()
    text = str(e.value)
    assert "unknown task 'ghost'" in text
    assert "unknown task 'phantom'" in text
    assert "${params.m} names no workflow parameter" in text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"retries": -1}, "retries: must be an integer >= 0"),
    ({"timeout": "soon"}, "timeout: must be a number of seconds"),
    ({"resources": {"walltime": "ten minutes"}}, "walltime 'ten minutes'"),
    ({"resources": {"memory": "lots"}}, "memory: must look like"),
    ({"env": {"X": 1}}, "env: must be a mapping"),
    ({"colour": "red"}, "unknown key 'colour'"),
])
def test_bad_task_options_are_refused_with_their_path(kwargs: dict, message: str) -> None:
    wf = Workflow("bad")
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")) as e:
        wf.shell("t", "true", **kwargs)
    assert "t" not in wf
    assert e.value.problems[0].path[:2] == ("tasks", "t")


def test_duplicate_task_name_and_bad_name() -> None:
    wf = Workflow("dup")
    wf.shell("a", "true")
    with pytest.raises(ValidationError, match="already exists"):
        wf.shell("a", "false")
    with pytest.raises(ValidationError, match="task names are letters"):
        wf.shell("no spaces", "true")
    with pytest.raises(ValidationError, match="'params' is reserved"):
        wf.shell("params", "true")


@pytest.mark.parametrize("bad", ["params", "t" * 201, "no spaces", "a\nb", "\n", "é", "1a"])
def test_one_bad_name_among_many_is_found(bad: str) -> None:
    tasks = {f"t{i}": {"shell": "true"} for i in range(50)} | {bad: {"shell": "true"}}
    _, problems = Workflow.parse({"name": "w", "tasks": tasks})
    assert [p.path for p in problems] == [("tasks", bad)]
    assert problems[0].message.startswith("task names are")


def test_tasks_like_the_ones_before_them_are_still_checked() -> None:
    """Most tasks of a generated file run a function an earlier task ran, with 'after'
    lists: those are made without the general path, but never when something is wrong."""
    tasks: dict[str, Any] = {f"t{i}": {"python": "m:f", "after": [f"t{i - 1}"] if i else []}
                             for i in range(10)}
    tasks |= {"self": {"python": "m:f", "after": ["self"]},
              "num": {"python": "m:f", "after": [1]},
              "empty": {"python": "m:f", "after": [""]},
              "unknown": {"python": "m:f", "after": ["nope"]},
              "tagged": {"python": "m:f", "tags": [""]},
              "sealed": {"python": {"pickle": "x"}},
              "two": {"python": "m:f", "shell": "true"},
              "ok": {"python": "m:f"}}
    wf, problems = Workflow.parse({"name": "w", "tasks": tasks})
    found = {p.path[:2]: p.message for p in problems}
    assert set(found) == {("tasks", n) for n in
                          ("self", "num", "empty", "unknown", "tagged", "sealed", "two")}
    assert "cannot depend on itself" in found[("tasks", "self")]
    assert found[("tasks", "num")] == found[("tasks", "empty")] == "must be a list of names"
    assert "unknown task 'nope'" in found[("tasks", "unknown")]
    assert sorted(wf.tasks) == sorted([f"t{i}" for i in range(10)] + ["ok", "unknown"])
    assert wf["t3"].after == ["t2"] and wf["t3"].target == "m:f" and wf["ok"].after == []


def test_from_dict_reports_every_problem_at_once() -> None:
    with pytest.raises(ValidationError) as e:
        Workflow.from_dict({"name": "x", "tasks": {
            "none": {"description": "no kind"},
            "two": {"shell": "true", "python": "m:f"},
            "typo": {"shell": "true", "aftr": ["none"]},
        }})
    msgs = [(p.path, p.message) for p in e.value.problems]
    assert (("tasks", "none"), "needs one of: shell, python, notebook") in msgs
    assert any(path == ("tasks", "two") and "has 2 kinds" in m for path, m in msgs)
    assert any(path == ("tasks", "typo", "aftr") and "did you mean 'after'" in m
               for path, m in msgs)


def test_dag_order_and_cycle_helpers() -> None:
    up = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    order = dag.topological(up)
    assert order.index("a") < order.index("b") < order.index("d")
    assert dag.find_cycle(up) is None
    assert dag.find_cycle(dict(reversed(up.items()))) is None  # listed after their users
    assert dag.find_cycle({"a": ["x"], "b": ["a", "b"]}) == ["b", "b"]  # x: unknown
    assert dag.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) == ["a", "c", "b", "a"]
    assert dag.descendants(up, ["b"]) == {"d"}
    assert dag.ancestors(up, ["d"]) == {"a", "b", "c"}


def test_selection_rules() -> None:
    wf = Workflow("sel")
    a = wf.shell("a", "true", tags=["x"])
    b = wf.shell("b", "true", after=[a])
    wf.shell("c", "true", after=[b])
    assert Selection(from_=["b"]).apply(wf) == {"b", "c"}
    assert Selection(until=["b"]).apply(wf) == {"a", "b"}
    assert Selection(from_=["b"], until=["b"]).apply(wf) == {"b"}
    assert Selection(tags=["x"]).apply(wf) == {"a"}
    with pytest.raises(SelectionError, match="did you mean 'b'"):
        Selection(only=["bb"]).apply(wf)
    with pytest.raises(SelectionError, match="no task has tag 'y'"):
        Selection(tags=["y"]).apply(wf)


def test_state_machine_table_is_complete_and_terminal_flags() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    assert {s for s in TaskState if s.terminal} == {
        TaskState.SUCCEEDED, TaskState.FAILED, TaskState.TIMEOUT, TaskState.CANCELLED,
        TaskState.SKIPPED}
    assert is_legal(TaskState.RUNNING, TaskState.SUCCEEDED)
    assert not is_legal(TaskState.SUCCEEDED, TaskState.RUNNING)
    assert not is_legal(TaskState.PENDING, TaskState.RUNNING)


def test_store_refuses_illegal_transition_and_keeps_state(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    store.create_run("r1", "wf", {"name": "wf", "tasks": {}}, base_dir="/", run_dir="/",
                     params={}, options={}, tasks=[("t", "shell", "h")])
    with pytest.raises(IllegalTransition, match="cannot go from PENDING to RUNNING"):
        store.apply([Change("r1", "t", TaskState.RUNNING)])
    store.apply([Change("r1", "t", TaskState.READY), Change("r1", "t", TaskState.RUNNING)])
    with pytest.raises(IllegalTransition):
        store.apply([Change("r1", "t", TaskState.SUCCEEDED),
                     Change("r1", "t", TaskState.RUNNING)])
    # the refused group left nothing behind
    assert store.task("r1", "t").state is TaskState.RUNNING
    # a fresh store (another process) sees the same
    other = Store(f"sqlite:///{tmp_path / 'k.db'}")
    assert other.task("r1", "t").state is TaskState.RUNNING
    assert [e["new"] for e in other.events("r1") if e["task"] == "t"] == ["READY", "RUNNING"]


def test_rich_display_of_workflow_and_task() -> None:
    wf = Workflow("shown", description="# Title\nWhy it exists.")
    a = wf.shell("fetch", "echo 1", description="Get **data**", outputs=["x.txt"])
    wf.python("mod:fn", name="use", after=[a], retries=2)
    md = wf._repr_markdown_()
    assert "# Title" in md and "| `fetch` | shell | `echo 1` |  | Get **data** |" in md
    assert "| `use` | python | `mod:fn` | fetch |" in md
    tmd = a._repr_markdown_()
    assert "Get **data**" in tmd and "outputs: x.txt" in tmd


def test_a_deep_copy_of_a_workflow_is_equal_and_shares_nothing_mutable() -> None:
    """The engine drives its own copy of a run's workflow (the notebook may go on editing
    the original): every field is copied, and editing the copy leaves the original alone."""
    import copy

    wf = Workflow.from_dict({"name": "every-field", "executor": "local", "tasks": {
        "fetch": {"shell": ["echo", "${params.n}"], "description": "d", "outputs": ["o.txt"],
                  "retries": 2, "retry_delay": 0.5, "timeout": 9, "tags": ["t"],
                  "env": {"A": "1"}, "launcher": "srun", "site": "far",
                  "resources": {"cpus": 2, "options": ["--x"]}},
        "fit": {"python": "m:f", "kernel": "python3", "debug_for": 5,
                "parameters": {"x": "${fetch.value}", "deep": {"a": [1, 2]}},
                "after": ["fetch"], "executor": {"kind": "local"}, "when": "${fetch.ok}"},
        "each": {"python": "m:g", "map": {"v": "${fetch.values}"}},
        "look": {"notebook": "a.ipynb", "interactive": {"timeout": 5}},
    }, "parameters": {"n": 3}})
    again = copy.deepcopy(wf)
    assert again.to_dict() == wf.to_dict()
    fit, fetch = again.tasks["fit"], again.tasks["fetch"]
    fit.parameters["deep"]["a"].append(3)
    fit.after.append("each")
    fetch.target.append("more")
    fetch.resources.options.append("--y")
    fetch.env["B"] = "2"
    again.tasks["look"].interactive["timeout"] = 6  # type: ignore[index]
    assert wf.tasks["fit"].parameters["deep"] == {"a": [1, 2]}
    assert wf.tasks["fit"].after == ["fetch"]
    assert wf.tasks["fetch"].target == ["echo", "${params.n}"]
    assert wf.tasks["fetch"].resources.options == ["--x"]
    assert wf.tasks["fetch"].env == {"A": "1"}
    assert wf.tasks["look"].interactive == {"timeout": 5}

"""The packaged JSON Schema describes exactly what Workflow.from_dict accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kale.errors import ValidationError
from kale.model.workflow import Workflow
from kale.spec import load_yaml_text, schema

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for ext in ("yaml", "yml") for p in (ROOT / "examples").rglob(f"*.{ext}"))
VALIDATOR = jsonschema.Draft202012Validator(schema())


def model_accepts(doc: Any) -> bool:
    try:
        Workflow.from_dict(copy.deepcopy(doc))
    except ValidationError:
        return False
    return True


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema() is not schema()  # callers may change their copy


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_follow_the_schema(path: Path) -> None:
    VALIDATOR.validate(load_yaml_text(path.read_text()))


GOOD = [
    """
    name: demo
    description: |
      # Demo
    parameters: {n: 3}
    tasks:
      fetch:
        shell: echo 42 > value.txt
        outputs: [value.txt]
      double:
        python: demo.steps:double
        parameters: {x: "${fetch}", n: "${params.n}"}
        after: [fetch]
        retries: 2
        retry_delay: 0.5
        timeout: 60
        tags: [math]
        env: {OMP_NUM_THREADS: "4"}
        resources: {nodes: 1, cpus: 4, gpus: 1, memory: 4G, walltime: "01:30:00",
                    queue: short, account: proj, options: [--exclusive]}
      report:
        notebook: report.ipynb
        kernel: python3
        after: [double]
    """,
    """
    name: minimal
    tasks:
      argv: {shell: [ls, -l]}
    """,
    """
    name: nulls are allowed where the model takes them as empty
    parameters:
    tasks:
      t:
        shell: echo
        parameters:
        after:
        outputs:
        tags:
        env:
        resources:
        timeout:
        kernel:
        description: ""
    """,
    """
    name: walltime in minutes
    tasks:
      t: {shell: echo, resources: {walltime: 90, memory: 1.5 GiB}}
    """,
]

BAD = [
    ("unknown top key", "name: x\ncolour: blue\ntasks: {t: {shell: echo}}"),
    ("unknown task key", "name: x\ntasks: {t: {shell: echo, aftr: []}}"),
    ("unknown resource", "name: x\ntasks: {t: {shell: echo, resources: {ram: 4G}}}"),
    ("two kinds", "name: x\ntasks: {t: {shell: echo, python: 'm:f'}}"),
    ("zero kinds", "name: x\ntasks: {t: {description: nothing}}"),
    ("no name", "tasks: {t: {shell: echo}}"),
    ("blank name", "name: ' '\ntasks: {t: {shell: echo}}"),
    ("no tasks", "name: x\ntasks: {}"),
    ("bad task name", "name: x\ntasks: {1st: {shell: echo}}"),
    ("reserved task name", "name: x\ntasks: {params: {shell: echo}}"),
    ("task not a mapping", "name: x\ntasks: {t: echo}"),
    ("blank shell", "name: x\ntasks: {t: {shell: ' '}}"),
    ("empty argv", "name: x\ntasks: {t: {shell: []}}"),
    ("argv of numbers", "name: x\ntasks: {t: {shell: [ls, 3]}}"),
    ("python without function", "name: x\ntasks: {t: {python: mod}}"),
    ("not a notebook", "name: x\ntasks: {t: {notebook: a.py}}"),
    ("retries as text", "name: x\ntasks: {t: {shell: echo, retries: three}}"),
    ("negative retries", "name: x\ntasks: {t: {shell: echo, retries: -1}}"),
    ("boolean retries", "name: x\ntasks: {t: {shell: echo, retries: true}}"),
    ("timeout as text", "name: x\ntasks: {t: {shell: echo, timeout: '10'}}"),
    ("null retry_delay", "name: x\ntasks: {t: {shell: echo, retry_delay: null}}"),
    ("after not a list", "name: x\ntasks: {t: {shell: echo, after: other}}"),
    ("empty output", "name: x\ntasks: {t: {shell: echo, outputs: ['']}}"),
    ("parameters a list", "name: x\ntasks: {t: {shell: echo, parameters: [1]}}"),
    ("env not strings", "name: x\ntasks: {t: {shell: echo, env: {A: 1}}}"),
    ("kernel on shell", "name: x\ntasks: {t: {shell: echo, kernel: python3}}"),
    ("zero cpus", "name: x\ntasks: {t: {shell: echo, resources: {cpus: 0}}}"),
    ("bad memory", "name: x\ntasks: {t: {shell: echo, resources: {memory: lots}}}"),
    ("bad walltime", "name: x\ntasks: {t: {shell: echo, resources: {walltime: '1:61:00'}}}"),
    ("options not a list", "name: x\ntasks: {t: {shell: echo, resources: {options: -x}}}"),
    ("description not text", "name: x\ndescription: 3\ntasks: {t: {shell: echo}}"),
]


@pytest.mark.parametrize("text", GOOD)
def test_good_documents_pass_both(text: str) -> None:
    doc = load_yaml_text(text.replace("\n    ", "\n"))
    VALIDATOR.validate(doc)
    assert model_accepts(doc)


@pytest.mark.parametrize(("why", "text"), BAD, ids=[why for why, _ in BAD])
def test_bad_documents_fail_both(why: str, text: str) -> None:
    doc = load_yaml_text(text + "\n")
    assert not VALIDATOR.is_valid(doc), why
    assert not model_accepts(doc), why


# Each field's values, good and bad. Left out on purpose, where JSON Schema cannot follow
# the model: integral floats for integers (1.0), falsy non-null values such as '' or 0 for
# fields the model reads with `or` (see the report), and graph checks (cycles, unknown tasks).
FIELDS: dict[str, list[Any]] = {
    "description": ["text", "", 3, None],
    "parameters": [None, {}, {"a": 1, "b": [1, {"c": None}]}, [1], "x"],
    "after": [None, [], ["other"], [""], [3], "other"],
    "outputs": [None, [], ["out.txt"], ["d/out.txt"], [""], [1], "out.txt", ["/etc/x"],
                ["../x"], ["a/../../x"], ["..a/b.txt"]],
    "tags": [None, ["t"], [""], "t"],
    "retries": [0, 2, -1, "1", True, None, 1.5],
    "retry_delay": [0, 1.5, -1, "1", True, None],
    "timeout": [None, 10, 0.5, -1, "10", False],
    "resources": [None, {}, {"cpus": 4}, {"cpus": 0}, {"nodes": True}, {"gpus": 0},
                  {"memory": "4G"}, {"memory": "4 gigs"}, {"memory": None},
                  {"walltime": "01:30:00"}, {"walltime": 90}, {"walltime": "1:61:00"},
                  {"walltime": -5}, {"walltime": True}, {"queue": "q"}, {"queue": 3},
                  {"options": ["--x"]}, {"options": "x"}, {"options": None}, {"colour": 1},
                  [1]],
    "env": [None, {}, {"A": "1"}, {"A": 1}, ["A"]],
    "kernel": [None, "python3", 3],
    "site": [None, "hpc", "hpc-2", "HPC", "", "a b", 3, "x" * 33],
    "aftr": [[]],
}
TARGETS: dict[str, list[Any]] = {
    "shell": ["echo hi", " ", ["ls"], [], ["ls", 3], 3, None],
    "python": ["m:f", "pkg.mod:Cls.meth", "m", "m:f:g", "1m:f", 3],
    "notebook": ["a.ipynb", "dir/b.ipynb", "a.py", "", 3],
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(st.lists(st.sampled_from(list(TARGETS)), max_size=2, unique=True))
    task = {kind: draw(st.sampled_from(TARGETS[kind])) for kind in kinds}
    for key in draw(st.lists(st.sampled_from(list(FIELDS)), max_size=4, unique=True)):
        task[key] = draw(st.sampled_from(FIELDS[key]))
    doc: dict[str, Any] = {
        "name": draw(st.sampled_from(["x", "x", " ", 3])),
        "parameters": draw(st.sampled_from([{"n": 1}, None, [1]])),
        "tasks": {draw(st.sampled_from(["t", "t", "1t", "params"])): task,
                  "other": {"shell": "echo"}},
    }
    if draw(st.booleans()):
        doc["description"] = draw(st.sampled_from(["d", 3]))
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_schema_and_model_agree(doc: dict[str, Any]) -> None:
    assert VALIDATOR.is_valid(doc) == model_accepts(doc)

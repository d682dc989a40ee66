"""The YAML side: loading with located errors, writing, and lossless round trips."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kale.errors import ValidationError
from kale.model.refs import Ref, text_refs
from kale.model.workflow import Workflow
from kale.spec import dump_yaml, load_workflow, load_yaml_text
from kale.spec.composer import parse_full
from kale.spec.document import Document
from kale.spec.fastparse import AVOID, parse_fast
from kale.spec.flow import Unsupported
from kale.spec.jsonparse import parse_json
from kale.spec.loader import MAX_DEPTH

EXAMPLE = """\
name: demo
description: |
  # Demo
  markdown...
parameters: {n: 3}
tasks:
  fetch:
    shell: echo 42 > value.txt
    description: Get the data

  analyse:
    notebook: analyse.ipynb
    parameters: {n: 3, x: "${fetch.value}"}
    after: [fetch]
    outputs: [result.json]
"""


NOTEBOOK = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


def write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(source: str | Path, **kwargs: Any) -> list[tuple[str | None, int | None, str]]:
    with pytest.raises(ValidationError) as info:
        load_workflow(source, **kwargs)
    return [(p.file, p.line, str(p)) for p in info.value.problems]


def only_problem(path: Path, **kwargs: Any) -> tuple[int | None, str]:
    [(file, line, message)] = problems(path, **kwargs)
    assert file == str(path)
    assert message.startswith(f"{path}:{line}: ")
    return line, message


# -- errors name the file, the line and the problem ----------------------------------------


def test_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: [echo, hi
            after: []
        """)
    line, message = only_problem(path)
    assert line == 5
    assert "YAML syntax error" in message and "flow sequence that starts on line 4" in message


def test_syntax_error_in_text_has_no_file() -> None:
    [(file, line, message)] = problems("name: x\ntasks: a: b\n")
    assert (file, line) == (None, 2)
    assert "mapping values are not allowed" in message


def test_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo
          b:
            shell: echo
          a:
            python: m:f
        """)
    line, message = only_problem(path)
    assert line == 7
    assert "duplicate key 'a' (first at line 3)" in message


def test_duplicate_key_inside_a_flow_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo
            parameters: {n: 1, n: 2}
        """)
    line, message = only_problem(path)
    assert line == 5 and "duplicate key 'n'" in message


def test_unknown_key_at_top(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        colour: blue
        tasks:
          a: {shell: echo}
        """)
    line, message = only_problem(path)
    assert line == 2 and "unknown key 'colour'" in message


def test_unknown_key_in_a_task(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo

            aftr: [b]
        """)
    line, message = only_problem(path)
    assert line == 6 and "unknown key 'aftr' (did you mean 'after'?)" in message


def test_zero_and_two_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            description: nothing to run
          b:
            shell: echo
            python: m:f
        """)
    found = problems(path)
    assert [(f, line) for f, line, _ in found] == [(str(path), 3), (str(path), 5)]
    assert "needs one of: shell, python, notebook" in found[0][2]
    assert "has 2 kinds (shell, python)" in found[1][2]


def test_cycle_names_the_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo
            after: [b]
          b:
            shell: echo
            after: [c]
          c:
            shell: echo
            after: [a]
        """)
    line, message = only_problem(path)
    assert line == 5 and "dependency cycle: a -> b -> c -> a" in message


def test_unknown_dependency(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo
          b:
            shell: echo
            after: [a, nope]
        """)
    line, message = only_problem(path)
    assert line == 7 and "unknown task 'nope'" in message


def test_bad_types_are_all_reported(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        tasks:
          a:
            shell: echo
            retries: three
            timeout: "10"
            resources:
              cpus: many
        """)
    found = problems(path)
    assert [line for _, line, _ in found] == [5, 6, 8]
    assert "tasks.a.retries: must be an integer >= 0, got 'three'" in found[0][2]
    assert "tasks.a.timeout: must be a number of seconds" in found[1][2]
    assert "tasks.a.resources.cpus: must be an integer >= 1" in found[2][2]


BAD_FIELDS = [
    "retries: -1", "retry_delay: soon", "timeout: [1]", "description: [a]",
    "parameters: [a]", "after: [a, 3]", "outputs: [/etc/x]", "tags: {a: 1}",
    "env: {A: 1}", "resources: {cpus: many}", "kernel: [python3]", "launcher: srun",
    "interactive: true", "debug_for: 5", "site: ' bad'", "map: {x: 3}", "when: '('",
    "executor: {kind: nowhere}",
]


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_a_bad_field_among_many_tasks_is_reported_with_its_path(
        tmp_path: Path, field: str) -> None:
    """A file of thousands of tasks is checked as thoroughly as a file of one: the bad
    field of one task deep in it gets the same message, at its line."""
    (tmp_path / "m.py").write_text("def f():\n    pass\n")
    alone = write(tmp_path, f"name: x\ntasks:\n  bad:\n    python: m:f\n    {field}\n",
                  "alone.yaml")
    many = ["name: x", "tasks:"]
    for i in range(5000):
        many += [f"  t{i}:", "    python: m:f",
                 f"    after: [t{i - 1}]" if i else "    tags: [a]"]
    many += ["  bad:", "    python: m:f", f"    {field}"]
    big = write(tmp_path, "\n".join(many) + "\n", "big.yaml")
    expected = problems(alone)
    assert expected  # the field is bad on its own
    found = problems(big)
    assert [(line, msg.split(": ", 1)[1]) for _, line, msg in found] == [
        (line + len(many) - 5, msg.split(": ", 1)[1]) for _, line, msg in expected]
    assert all(msg.split(": ", 2)[1].startswith("tasks.bad") for _, _, msg in found)


def test_a_missing_key_points_at_the_document(tmp_path: Path) -> None:
    path = write(tmp_path, "# a comment\n\ntasks:\n  a: {shell: echo}\n")
    line, message = only_problem(path)
    assert line == 3 and "'name' is required" in message


@pytest.mark.parametrize(("text", "got"), [("- a\n- b\n", "a list"), ("", "an empty document"),
                                           ("just text\n", "a str")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    line, message = only_problem(write(tmp_path, text))
    assert line == 1 and f"must be a mapping with 'name' and 'tasks', got {got}" in message


def test_unreadable_file(tmp_path: Path) -> None:
    [(file, _, message)] = problems(tmp_path / "missing.yaml")
    assert file == str(tmp_path / "missing.yaml") and "cannot read" in message


def test_control_character(tmp_path: Path) -> None:
    line, message = only_problem(write(tmp_path, 'name: x\ntasks:\n  a: {shell: "\x01"}\n'))
    assert line == 3 and "U+0001" in message


# -- paths and parameters ------------------------------------------------------------------


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path, NOTEBOOK, "sub/nb.ipynb")
    path = write(tmp_path, "name: x\ntasks:\n  nb: {notebook: nb.ipynb}\n", "sub/wf.yaml")
    wf = load_workflow(path)
    assert wf.base_dir == (tmp_path / "sub").resolve()
    assert wf["nb"].target == "nb.ipynb"
    assert load_workflow(str(path)).base_dir == wf.base_dir


def test_text_resolves_against_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, NOTEBOOK, "nb.ipynb")
    wf = load_workflow("name: x\ntasks:\n  nb: {notebook: nb.ipynb}\n")
    assert wf.base_dir == tmp_path.resolve()


def test_params_override(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        name: x
        parameters: {a: 1, b: two}
        tasks:
          t: {shell: echo, parameters: {a: "${params.a}"}}
        """)
    wf = load_workflow(path, params_override={"a": 5, "b": [1, 2]})
    assert wf.parameters == {"a": 5, "b": [1, 2]}
    assert wf["t"].parameters == {"a": Ref("params", "a")}


def test_params_override_unknown_name(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nparameters: {a: 1, b: 2}\ntasks:\n  t: {shell: echo}\n")
    line, message = only_problem(path, params_override={"x": 1})
    assert line == 2 and "unknown workflow parameter 'x' (parameters: a, b)" in message
    no_params = write(tmp_path, "name: x\ntasks:\n  t: {shell: echo}\n", "other.yaml")
    _, message = only_problem(no_params, params_override={"x": 1})
    assert "unknown workflow parameter 'x' (parameters: none)" in message


def test_yaml_1_2_scalars() -> None:
    data = load_yaml_text(textwrap.dedent("""\
        a: [yes, no, on, 1:30, 0o17, 0x1F, 017, 1_000, .5, 1., -.inf, ~, Null, TRUE, 2024-01-01]
        b: !!str 3
        c:
        """))
    assert data["a"] == ["yes", "no", "on", "1:30", 15, 31, 17, "1_000", 0.5, 1.0,
                         -math.inf, None, None, True, "2024-01-01"]
    assert data["b"] == "3" and data["c"] is None


# -- writing -------------------------------------------------------------------------------


def test_dump_matches_the_house_style() -> None:
    assert dump_yaml(load_workflow(EXAMPLE, check_files=False).to_dict()) == EXAMPLE


def test_dump_quotes_what_would_read_back_as_something_else() -> None:
    data = {"a": ["3", "true", "null", "1e3", "", "yes", "*x", "a: b"],
            "b": ["a #b", "${t.k}", "-", "-x", " pad", "é", "{x}", "x]"],
            "c": [1.5, 10**20, -0.0, 1e16],
            "d": "two\nlines", "e": "kept\n\n", "f": "  indented\nfirst line",
            "g": "tab\there\n", "h": "\x85 odd \u2028 breaks\n", "i": "x]"}
    text = dump_yaml(data)
    assert text == textwrap.dedent('''\
        a: ["3", "true", "null", "1e3", "", "yes", "*x", "a: b"]
        b: ["a #b", "${t.k}", "-", -x, " pad", é, "{x}", "x]"]
        c: [1.5, 100000000000000000000, -0.0, 1.0e+16]
        d: |-
          two
          lines
        e: |+
          kept

        f: "  indented\\nfirst line"
        g: "tab\\there\\n"
        h: "\\u0085 odd \\u2028 breaks\\n"
        i: x]
        ''')
    assert repr(load_yaml_text(text)) == repr(data)


def test_dump_long_lists_in_block_style() -> None:
    names = [f"task_{i}" for i in range(20)]
    text = dump_yaml({"after": names, "short": ["a"]})
    assert text.startswith("after:\n  - task_0\n  - task_1\n")
    assert text.endswith("short: [a]\n")
    assert load_yaml_text(text) == {"after": names, "short": ["a"]}


def test_blank_line_between_tasks_never_changes_a_kept_block() -> None:
    data = {"name": "x", "tasks": {"a": {"shell": "echo\n\n"}, "b": {"shell": "ls"}}}
    text = dump_yaml(data)
    assert "\n\n  b:" not in text.replace("echo\n\n  b", "")
    assert load_yaml_text(text) == data


def test_dump_refuses_what_yaml_cannot_hold() -> None:
    from kale.errors import ExportError

    with pytest.raises(ExportError):
        dump_yaml({"a": object()})
    with pytest.raises(ExportError):
        dump_yaml({"a": {1: "x"}})


# -- round trips ---------------------------------------------------------------------------

AWKWARD = ["", " ", "3", "-3", "1e3", "0x1F", "0o7", ".inf", "1_000", "1:30", "2024-01-01",
           "true", "True", "yes", "no", "on", "null", "~", "a: b", "a #b", "#x", "- x", "-",
           "--flag", "?x", ":x", "@x", "%x", "!x", "&x", "*x", "|", ">", "...", "---", "{a}",
           "[a]", "a, b", "'q'", '"q"', "\\", "\n", "a\n", "a\n\n", "\na", " a\nb", "a \nb",
           "a\n b", "\tx", "x\ty", "\x85", "\u2028", "\ufeff", "\x7f", "é", "日本", "a\r\nb",
           "${params.n}", "echo $HOME > out.txt", "# Title\n\nText *markdown*.\n"]
# no NUL: no workflow may hold one anywhere (test_security checks it is refused)
texts = st.one_of(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"),
                          max_size=12),
                  st.sampled_from(AWKWARD))
plain_texts = texts.filter(lambda s: Ref.parse(s) is None)  # not a ${...} reference
scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                    st.floats(allow_nan=False), plain_texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,6}", fullmatch=True).filter(
    lambda s: s != "params")
nonblank = texts.filter(lambda s: bool(s.strip()))
nonempty = texts.filter(bool)
no_nul = texts.filter(lambda s: "\0" not in s)  # commands, env and paths cannot hold one
commands = no_nul.filter(lambda s: not text_refs(s))  # ${task.key} in a command is a reference
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    task_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    tasks: dict[str, Any] = {}
    for i, name in enumerate(task_names):
        kind = draw(st.sampled_from(["shell", "python", "notebook"]))
        target = {
            "shell": draw(st.one_of(commands.filter(lambda s: bool(s.strip())),
                                    st.lists(commands, min_size=1, max_size=3))),
            "python": draw(st.sampled_from(["mod:func", "pkg.mod:Class.method"])),
            "notebook": draw(st.sampled_from(["a.ipynb", "dir/b c.ipynb", "ü #1.ipynb"])),
        }[kind]
        task: dict[str, Any] = {kind: target, "description": draw(texts)}
        parameters = draw(st.dictionaries(texts, values, max_size=3))
        if kind == "shell":  # exported to its environment
            parameters = {k: v for k, v in parameters.items()
                          if not (isinstance(v, str) and "\0" in v)}
        earlier = task_names[:i]
        if earlier and draw(st.booleans()):
            parameters["upstream"] = "${" + draw(st.sampled_from(earlier)) + ".key}"
        task["parameters"] = parameters
        task["after"] = draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        task["outputs"] = draw(st.lists(nonempty.filter(_inside).filter(lambda s: "\0" not in s),
                                        max_size=2))
        task["tags"] = draw(st.lists(nonempty, max_size=2))
        task["retries"] = draw(st.integers(0, 3))
        task["retry_delay"] = draw(st.floats(0, 1e6))
        task["timeout"] = draw(st.none() | st.floats(0, 1e9) | st.integers(0, 100))
        task["resources"] = draw(st.fixed_dictionaries({}, optional={
            "cpus": st.integers(1, 64), "memory": st.sampled_from(["512M", "4G", "1.5GB"]),
            "walltime": st.sampled_from(["01:30:00", "2-00:00:00", "90"]),
            "queue": nonempty, "options": st.lists(texts, max_size=2)}))
        task["env"] = draw(st.dictionaries(env_names, no_nul, max_size=2))
        if kind == "notebook":
            task["kernel"] = draw(st.none() | nonempty)
        tasks[name] = task
    return Workflow.from_dict({
        "name": draw(nonblank), "description": draw(texts),
        "parameters": draw(st.dictionaries(texts, values, max_size=3)), "tasks": tasks})


def all_paths(data: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) \
        if isinstance(data, list) else []
    for key, value in items:
        yield from all_paths(value, (*path, key))


def same_document(fast: Document, full: Document) -> None:
    assert repr(fast.data) == repr(full.data)  # values, types, order of keys; nan == nan
    for path in all_paths(full.data):
        assert fast.line(path) == full.line(path), path


ROUND_TRIP = settings(max_examples=150, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(workflows())
def test_workflow_round_trip(wf: Workflow) -> None:
    data = wf.to_dict()
    text = dump_yaml(data)
    loaded = load_workflow(text, check_files=False)  # the format, not the files it names
    assert loaded.to_dict() == data
    assert dump_yaml(loaded.to_dict()) == text
    # The dumper writes only what the fast reader reads, and both readers agree on it.
    same_document(parse_fast(text), parse_full(text))


@ROUND_TRIP
@given(st.dictionaries(texts, values, max_size=4))
def test_any_data_round_trip(data: dict[str, Any]) -> None:
    text = dump_yaml(data)
    assert load_yaml_text(text) == data
    if data:  # "{}" is left to the complete reader
        same_document(parse_fast(text), parse_full(text))


def test_round_trip_of_special_floats() -> None:
    data = {"a": [math.inf, -math.inf, 1e16, 5e-324, 0.1, -0.0, 1.7976931348623157e308]}
    back = load_yaml_text(dump_yaml(data))
    assert repr(back) == repr(data)
    assert math.isnan(load_yaml_text(dump_yaml({"n": math.nan}))["n"])


# -- the fast reader agrees with the complete one -------------------------------------------

SUBSET = [
    EXAMPLE,
    "a: 1\r\nb: [x, y]\r\n",
    "# head\n\nk: v # comment\nl:\n- 1\n- two\nm:\n  - [a, {b: c}]\n  - {}\n",
    "'quoted key': 1\n\"dq key\": \"v\\n\\u00e9\"\nsq: 'it''s'\n",
    "a: |\n  x\n\n    y\n\nb: |-\n  z\nc: |+\n  w\n\n\nd: |\n\ne: 1\n",
    "s:\n  - a: 1\n    b:\n      - - x\n        - y\n  -\n    c: 2\n  - |\n    lit\n",
    "f: [0x1F, 0o7, .inf, -.Inf, .NaN, ~, True, 007, +1, 1., .5, 1e3, -0, null]\n",
    "g: [a b, -x, 'q', \"d\", \"a#b\"] # c\nh: {a: null, b: [1]}\n",
    "u: http://example.com/a#b\nv: a:b\nw: 'x' # c\nx: \"y\"\n",
    "no newline at end: [1]",
    "k: v\nlist:\n- a\n-\n- b\n",
    "after: [a, b]\nnone: []\nconst: [a, true]\nnull: [Null, x]\nc: [x] # c\nu: [é_1.b-c]\n",
]
NOT_YAML = ["a: b: c\n", "a: [1, 2\n", "a:\n  - x\n  y: 1\n", "a: 'x\n", "- a\nb: 1\n",
            "a: 1\n  b: 2\n", "a:\n\tb: 1\n", "key: - x\n", "a: {b: 1, b: 2}\n",
            "a: 1\na: 2\n", "a: |\n   x\n  y\n", "a: |\n    \n   x\n", "a: [b]]\n",
            "a: {b: 1}}\n", "a: [b] c\n", "a: x\n  y: 1\n", "[a] : 1\n"]
# Valid YAML outside the fast reader's subset: the complete reader reads it.
HANDED_OVER = ["lit at end: |\n  text", "a: [x#y]\n", "a: {b: }\n", "a: >\n  folded\n",
               "a: &anchor 1\nb: *anchor\n", "a: plain\n  continued\n", "a: \"two\n  lines\"\n",
               "{a: 1}\n", "--- \na: 1\n", "a: [1,\n  2]\n", "? a\n: 1\n", "a: {1: x}\n",
               # U+2028 and U+2029 break lines in YAML (a task after one is not in a comment)
               "x: 1\n# note\u2028y: 2\n", "a: 1 # c\u2029b: 2\n", "a: x\u2028\n",
               "a: \"x \u2028y\"\n"]


@pytest.mark.parametrize("text", SUBSET)
def test_fast_reader_covers_the_common_subset(text: str) -> None:
    same_document(parse_fast(text), parse_full(text))


@pytest.mark.parametrize("text", HANDED_OVER)
def test_fast_reader_hands_over_the_rest_of_yaml(text: str) -> None:
    with pytest.raises(Unsupported):
        parse_fast(text)
    assert load_yaml_text(text) == parse_full(text).data


def test_a_task_after_a_unicode_line_separator_is_read() -> None:
    # A comment ends at U+2028 as at a newline: the task after it is a task.
    text = "name: w\ntasks:\n  a: {shell: echo a}  # note\u2028  b: {shell: echo b}\n"
    assert list(load_yaml_text(text)["tasks"]) == ["a", "b"]
    json_text = '{"name": "w", "tasks": {"a": {"shell": "x \u2028y"}}}'
    assert load_yaml_text(json_text)["tasks"]["a"]["shell"] == parse_full(json_text).data[
        "tasks"]["a"]["shell"]


@pytest.mark.parametrize("text", NOT_YAML)
def test_fast_reader_hands_over_what_is_wrong(text: str) -> None:
    with pytest.raises(Unsupported):
        parse_fast(text)
    with pytest.raises(ValidationError):
        parse_full(text)


PIECES = ["a", "b c", "1", "-1", "0x1F", "1.5", ".5", "~", "True", "a:b", "a#b", "a #c",
          "'q'", '"d"', '"e\\n"', "[]", "{}", "[a, 1]", "[a,b]", "[a, b]", "[x, True]",
          "[é, a.b-c, _1]", "[a, b] # c", "[null]", "{a: 1}", "{a:1}", "[a, ]",
          "[-1, -x]", "|", "|-", "|+", ">", "&x a", "*x", "-", "- x", "? x", "é", "a ]",
          '[a "b"]', "[a\"b]", "{1: a}", "[a] #c", "[a]#c", "[007, -0]"]
KEYS = ["k", "a b", "'q k'", '"d k"', "1", "-k", "k:x", "k ", "[k]"]
LINES = st.one_of(
    st.builds(lambda i, k, v: " " * i + k + ": " + v, st.sampled_from([0, 1, 2, 4]),
              st.sampled_from(KEYS), st.sampled_from(PIECES)),
    st.builds(lambda i, k: " " * i + k + ":", st.sampled_from([0, 2, 4]), st.sampled_from(KEYS)),
    st.builds(lambda i, v: " " * i + "- " + v, st.sampled_from([0, 2, 4]),
              st.sampled_from(PIECES)),
    st.sampled_from(["", "  ", "# c", "  # c", "-", "  -", "\t", "  x y", "    text", "---"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, max_size=8), st.booleans())
def test_fast_reader_agrees_or_hands_over(lines: list[str], newline: bool) -> None:
    text = "\n".join(lines) + ("\n" if newline else "")
    try:
        fast = parse_fast(text)
    except Unsupported:
        return
    same_document(fast, parse_full(text))


@pytest.mark.parametrize("flow", [False, True])
def test_nesting_deeper_than_the_limit_is_refused_by_either_reader(flow: bool) -> None:
    def nested(depth: int) -> str:  # `depth` collections, in blocks or in one flow
        if flow:
            return "k: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"
        return "".join(" " * 2 * i + f"k{i}:\n" for i in range(depth - 1)) + " " * 2 * (
            depth - 1) + "k: 1\n"

    for text in (nested(MAX_DEPTH), "# c\n" + nested(MAX_DEPTH)):
        assert load_yaml_text(text) is not None
    with pytest.raises(ValidationError, match=f"nested more than {MAX_DEPTH} levels"):
        load_yaml_text(nested(MAX_DEPTH + 1))


def test_a_nul_given_as_a_parameter_value_is_refused() -> None:
    text = "name: p\nparameters: {p: x}\ntasks:\n  t: {shell: echo}\n"  # no NUL, no escape
    with pytest.raises(ValidationError, match=r"parameters\.p: cannot hold a NUL character"):
        load_workflow(text, params_override={"p": "a\x00b"})


# -- JSON files: the JSON decoder reads what the YAML reader would -----------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(texts, values, min_size=1, max_size=4),
       st.sampled_from([None, 0, 2, "\t"]), st.booleans())
def test_json_is_read_as_yaml_reads_it(data: dict[str, Any], indent: Any, ascii_: bool) -> None:
    text = json.dumps(data, indent=indent, ensure_ascii=ascii_)
    try:
        fast = parse_json(text, AVOID)
    except Unsupported:  # escaped surrogates, characters YAML 1.1 reads otherwise
        return
    try:
        full = parse_full(text)
    except ValidationError:  # JSON that libyaml refuses (a raw U+2028 in a key) is JSON
        return
    assert repr(fast.data) == repr(full.data)


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', '{"a": NaN}', '{"a": Infinity}',
                                  '["a"]', '{"a": 1} x', '{"a": [1,]}', '{"\\ud83d\\ude00": 1}'])
def test_json_the_yaml_reader_must_judge_is_handed_over(text: str) -> None:
    with pytest.raises(Unsupported):
        parse_json(text, AVOID)


def test_a_json_workflow_is_loaded_and_its_problems_have_lines(tmp_path: Path) -> None:
    tasks = {f"t{i}": {"shell": f"echo {i}", "after": [f"t{i - 1}"] if i else []}
             for i in range(100)}
    good = tmp_path / "wf.json"
    good.write_text(json.dumps({"name": "j", "tasks": tasks}, indent=2))
    wf = load_workflow(good)
    assert len(wf) == 100 and wf["t5"].after == ["t4"] and wf["t5"].target == "echo 5"
    tasks["t50"]["after"] = ["nope"]
    tasks["t70"]["retries"] = -1
    bad = tmp_path / "bad.json"
    text = json.dumps({"name": "j", "tasks": tasks}, indent=2)
    bad.write_text(text)
    with pytest.raises(ValidationError) as e:
        load_workflow(bad)
    lines = text.splitlines()
    got = {(p.line, p.message) for p in e.value.problems}
    assert got == {(lines.index('    "t50": {') + 3, "unknown task 'nope' in 'after'"),
                   (lines.index('    "t70": {') + 6, "must be an integer >= 0, got -1")}


def test_many_flows_in_one_file_are_read_together() -> None:
    lines = ["name: big", "tasks:"]
    for i in range(300):
        lines += [f"  t{i}:", f"    shell: echo {i}",
                  f'    parameters: {{n: {i}, x: "${{params.n}}", y: [1, 2.5, three, 0x{i}]}}',
                  f"    after: [t{i - 1}]" if i else "    after: []"]
    text = "\n".join(lines).replace("name: big", "name: big\nparameters: {n: 1}") + "\n"
    same_document(parse_fast(text), parse_full(text))
    wf = load_workflow(text)
    assert len(wf) == 300 and wf["t10"].parameters["y"] == [1, 2.5, "three", 16]


def _inside(path: str) -> bool:
    """Outputs are relative paths without '..' (the model refuses others)."""
    from pathlib import PurePosixPath

    return not path.startswith("/") and ".." not in PurePosixPath(path).parts

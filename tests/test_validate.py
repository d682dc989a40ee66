"""`kale validate` (and every run) catches what would otherwise fail at run time: files,
modules, functions and kernels a workflow names, references in shell commands, task names
that cannot be file names, NUL characters; and it reports every problem of a file at once,
each with its file and line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest

from conftest import Kale
from kale import ValidationError, Workflow
from kale.spec import load_yaml_text, schema

NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def notebook(folder: Path, name: str, kernel: str | None = None) -> Path:
    nb = json.loads(json.dumps(NOTEBOOK))
    if kernel:
        nb["metadata"]["kernelspec"] = {"name": kernel, "display_name": kernel}
    return write(folder, name, json.dumps(nb))


def errors(out: object) -> list[str]:
    """The problems `kale validate` printed, one per line, without the 'error: ' label."""
    stderr: str = out.stderr  # type: ignore[attr-defined]
    return [line.removeprefix("error: ") for line in stderr.splitlines() if line.strip()]


def test_what_a_workflow_names_on_disk_is_checked(kale: Kale, tmp_path: Path) -> None:
    notebook(tmp_path, "julia.ipynb", kernel="julia-1.9")
    notebook(tmp_path, "plain.ipynb")
    notebook(tmp_path, "step.ipynb", kernel="kale-task")  # runs on the default kernel
    write(tmp_path, "stats.py", """\
        import json as codec
        from os.path import join

        def summarize(data):
            return data

        class Model:
            pass

        try:
            from fast import speedy
        except ImportError:
            def speedy():
                pass

        if True:
            shortcut = summarize
        """)
    write(tmp_path, "lazy.py", "def __getattr__(name):\n    return print\n")
    write(tmp_path, "star.py", "from os.path import *\n")
    write(tmp_path, "broken.py", "def f(:\n")
    # a package whose import has a side effect: validating must not import it
    write(tmp_path, "pkg/__init__.py", "open('IMPORTED', 'w').close()\n")
    write(tmp_path, "pkg/steps.py", "def run():\n    pass\n")
    wf = write(tmp_path, "wf.yaml", """\
        name: files
        tasks:
          missing-notebook:
            notebook: nowhere.ipynb
          unknown-kernelspec:
            notebook: julia.ipynb
          unknown-kernel:
            notebook: plain.ipynb
            kernel: no-such-kernel
          default-kernel:
            notebook: plain.ipynb
          missing-function:
            python: stats:summarise
          missing-module:
            python: nomodule:run
          missing-submodule:
            python: pkg.nothere:run
          syntax-error:
            python: broken:f
          def: {python: "stats:summarize"}
          class: {python: "stats:Model.fit"}
          imported: {python: "stats:join"}
          import-as: {python: "stats:codec"}
          in-try: {python: "stats:speedy"}
          in-if: {python: "stats:shortcut"}
          module-getattr: {python: "lazy:anything"}
          star-import: {python: "star:anything"}
          in-a-package: {python: "pkg.steps:run"}
          installed: {python: "json:dumps"}
          installed-missing: {python: "json:dumpss"}
          python-in-kernel: {python: "stats:summarize", kernel: no-such-kernel}
          saved-on-a-step-kernel: {notebook: step.ipynb}
        """)
    out = kale("validate", str(wf))
    assert out.returncode == 2, out.stdout
    assert errors(out) == [
        f"{wf}:4: tasks.missing-notebook.notebook: notebook not found: "
        f"{tmp_path / 'nowhere.ipynb'}",
        f"{wf}:6: tasks.unknown-kernelspec.notebook: no such kernel: julia-1.9 (the "
        "notebook's kernelspec; installed: python3)",
        f"{wf}:9: tasks.unknown-kernel.kernel: no such kernel: no-such-kernel (the task's "
        "kernel; installed: python3)",
        f"{wf}:13: tasks.missing-function.python: module stats ({tmp_path / 'stats.py'}) "
        "has no 'summarise' (did you mean 'summarize'?)",
        f"{wf}:15: tasks.missing-module.python: no module named 'nomodule' (looked in "
        f"{tmp_path} and on the Python path)",
        f"{wf}:17: tasks.missing-submodule.python: no module named 'pkg.nothere' (looked in "
        f"{tmp_path / 'pkg'})",
        f"{wf}:19: tasks.syntax-error.python: cannot import broken: SyntaxError in "
        f"{tmp_path / 'broken.py'}, line 1: invalid syntax",
        f"{wf}:30: tasks.installed-missing.python: module json "
        f"({Path(json.__file__)}) has no 'dumpss' (did you mean 'dumps'?)",
        f"{wf}:31: tasks.python-in-kernel.kernel: no such kernel: no-such-kernel (the task's "
        "kernel; installed: python3)",
    ]
    assert not (tmp_path / "IMPORTED").exists()  # nothing was imported
    assert not (kale.cwd / "IMPORTED").exists()


def test_a_run_fails_fast_with_the_same_message_and_records_nothing(
        kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: early
        tasks:
          first:
            shell: echo first > first.txt
          analyse:
            notebook: analyse.ipynb
            after: [first]
        """)
    validate = kale("validate", str(wf))
    run = kale("run", str(wf))
    assert validate.returncode == run.returncode == 2
    message = (f"{wf}:6: tasks.analyse.notebook: notebook not found: "
               f"{tmp_path / 'analyse.ipynb'}")
    assert errors(validate) == errors(run) == [message]
    assert json.loads(kale("runs", "--json").stdout) == []


def test_a_python_api_run_fails_before_anything_is_recorded(home: Path, tmp_path: Path) -> None:
    wf = Workflow("api", base_dir=tmp_path)
    wf.shell("first", "true")
    wf.notebook("analyse", "analyse.ipynb", after=["first"])
    wf.python("helpers:clean", name="clean")
    with pytest.raises(ValidationError) as e:
        wf.run()
    assert [str(p) for p in e.value.problems] == [
        f"tasks.analyse.notebook: notebook not found: {tmp_path / 'analyse.ipynb'}",
        f"tasks.clean.python: no module named 'helpers' (looked in {tmp_path} and on the "
        "Python path)"]
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())

    def local(x: int) -> int:  # a function object: nothing on disk to check
        return x

    ok = Workflow("api-ok", base_dir=tmp_path)
    ok.python(local, parameters={"x": 1})
    assert ok.run().wait().result("local") == 1


def test_tasks_written_as_a_list(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: listed
        tasks:
          - fetch:
              shell: echo 42
        """)
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert errors(out) == [
        f"{wf}:2: tasks: 'tasks' must be a mapping of task name -> task, got a list (write "
        "each task as `name:` with its fields indented below it, not as a `- ` list item)"]



@pytest.mark.parametrize("suffix", ["yaml", "json"])
def test_an_integer_longer_than_python_reads_is_a_problem_with_its_line(
        kale: Kale, tmp_path: Path, suffix: str) -> None:
    digits = "9" * 5000  # Python reads at most 4,300 digits from text
    text = (f"name: big\nparameters:\n  n: {digits}\ntasks:\n  a: {{shell: echo}}\n"
            if suffix == "yaml" else
            f'{{"name": "big", "parameters": {{"n": {digits}}}, "tasks": {{"a": {{"shell": '
            '"echo"}}}')
    wf = tmp_path / f"wf.{suffix}"
    wf.write_text(text)
    out = kale("validate", str(wf))
    assert out.returncode == 2
    line = 3 if suffix == "yaml" else 1
    assert errors(out) == [f"{wf}:{line}: parameters.n: an integer of 5000 digits is more "
                           "than 4300 digits; quote it to keep it as text"]

def test_every_problem_of_a_file_is_reported_in_its_order(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: many
        parameters: {n: 1}
        tasks:
          a:
            shell: echo a
            retries: -1
            after: [c]
          b:
            shell: echo b
            after: [ghost]
            timeout: soon
          c:
            shell: echo "${params.m}"
            after: [a]
          d:
            shell: cat "${phantom.out}"
            colour: red
        """)
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert errors(out) == [
        f"{wf}:6: tasks.a.retries: must be an integer >= 0, got -1",
        f"{wf}:7: tasks.a.after: dependency cycle: a -> c -> a",
        f"{wf}:10: tasks.b.after: unknown task 'ghost' in 'after'",
        f"{wf}:11: tasks.b.timeout: must be a number of seconds >= 0, got 'soon'",
        f"{wf}:13: tasks.c.shell: ${{params.m}} names no workflow parameter (parameters: n)",
        f"{wf}:16: tasks.d.shell: ${{phantom.out}} refers to unknown task 'phantom'",
        f"{wf}:17: tasks.d.colour: unknown key 'colour'; allowed: " + ", ".join(
            ["shell", "python", "notebook", "description", "parameters", "after", "outputs",
             "retries", "retry_delay", "timeout", "resources", "tags", "env", "kernel",
             "executor", "launcher", "interactive", "debug_for", "site", "map", "when"]),
    ]


def test_references_in_commands_are_checked(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", """\
        name: refs
        parameters: {n: 2}
        tasks:
          fetch:
            shell: echo 42
          quoted:
            shell: awk '{print $1 * ${params.n}}' data.txt
          doubled:
            shell: echo "it's ${params.n}" '$HOME' ${fetch.answer}   # don't
          default:
            shell: cat ${INPUT-input.txt}
          argv:
            shell: [cat, "${fetch.out}", "${nothing.out}"]
          itself:
            shell: echo ${itself.out}
          heredoc:
            shell: "cat <<'EOF'\\n${params.n}\\nEOF"
        """)
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert errors(out) == [
        f"{wf}:7: tasks.quoted.shell: ${{params.n}} is inside single quotes, where the shell "
        "expands nothing: put it in double quotes (\"${params.n}\"), or hand it to the "
        "program another way (awk -v n=\"${params.n}\" '...')",
        f"{wf}:11: tasks.default.shell: ${{INPUT-input.txt}} refers to unknown task "
        "'INPUT-input'; if you meant the shell's own default value, write ${INPUT:-input.txt}",
        f"{wf}:13: tasks.argv.shell.2: ${{nothing.out}} refers to unknown task 'nothing'",
        f"{wf}:15: tasks.itself.shell: ${{itself.out}}: a task cannot use its own result",
    ]


@pytest.mark.parametrize(("task", "message"), [
    ("t" * 201 + ": {shell: echo}",
     "tasks." + "t" * 201 + ": task names are at most 200 characters, this one has 201 "
     "(the name is a file name in the run directory)"),
    ("'..': {shell: echo}",
     "tasks...: task names are letters, digits, '_' and '-', starting with a letter or '_'"),
    ("'.': {shell: echo}",
     "tasks..: task names are letters, digits, '_' and '-', starting with a letter or '_'"),
    ("a/b: {shell: echo}",
     "tasks.a/b: task names are letters, digits, '_' and '-', starting with a letter or '_'"),
    ('t: {shell: "echo a\\0b"}', "tasks.t.shell: a command cannot hold a NUL character"),
    ('t: {shell: [echo, "a\\0b"]}',
     "tasks.t.shell.1: a command argument cannot hold a NUL character"),
    ('t: {shell: echo, env: {X: "a\\0b"}}',
     "tasks.t.env.X: an environment variable cannot hold a NUL character"),
    ('t: {shell: echo, env: {"A=B": "x"}}',
     "tasks.t.env: 'A=B' cannot be an environment variable's name (it is empty, or holds "
     "'=' or a NUL character)"),
    ('t: {shell: echo, parameters: {x: "a\\0b"}}',
     "tasks.t.parameters.x: a shell task's parameters are environment variables, which "
     "cannot hold a NUL character"),
])
def test_what_cannot_run_is_refused(kale: Kale, tmp_path: Path, task: str, message: str) -> None:
    text = f"name: x\ntasks:\n  {task}\n"
    wf = write(tmp_path, "wf.yaml", text)
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert errors(out) == [f"{wf}:3: {message}"]
    # the JSON Schema refuses it too
    assert not jsonschema.Draft202012Validator(schema()).is_valid(load_yaml_text(text))


def test_a_nul_in_any_text_of_a_file_is_refused(kale: Kale, tmp_path: Path) -> None:
    wf = write(tmp_path, "wf.yaml", 'name: x\ntasks:\n  t: {shell: echo, description: "a\\x00b"}\n')
    out = kale("validate", str(wf))
    assert out.returncode == 2
    assert errors(out) == [f"{wf}:3: tasks.t.description: cannot hold a NUL character"]


def test_the_longest_name_runs(home: Path) -> None:
    wf = Workflow("long")
    long = wf.shell("t" * 200, "kale record x 1")
    wf.shell("after", 'echo "$x"', parameters={"x": long["x"]})
    run = wf.run().wait()
    assert run.result("after") is None and run.logs("after") == "1\n"
    assert run.logs(long.name) == ""


def test_a_kernel_installed_where_jupyter_looks_is_found(kale: Kale, tmp_path: Path) -> None:
    notebook(tmp_path, "julia.ipynb", kernel="Julia-1.9")
    wf = write(tmp_path, "wf.yaml", "name: k\ntasks:\n  nb: {notebook: julia.ipynb}\n")
    assert kale("validate", str(wf)).returncode == 2
    spec = Path(kale.env()["JUPYTER_DATA_DIR"]) / "kernels" / "julia-1.9" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["julia", "{connection_file}"], "language": "julia",
                                "display_name": "Julia 1.9"}))
    out = kale("validate", str(wf))
    assert out.returncode == 0, out.stderr

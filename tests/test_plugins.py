"""Task kinds and batch schedulers are plug-ins, and their registries are the only lists of
their names. A package made here and installed the way pip installs one (its code and a
``.dist-info`` with its entry points, on the interpreter's path) adds a task kind that the
real ``kale`` command validates, runs and records, and a scheduler that validation accepts
and ``kale queue`` finds on PATH and lists. The JSON Schema, the dashboard and the error
messages follow the registries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest

from conftest import Kale
from kale import plugins
from kale.batch.schedulers import scheduler
from kale.errors import ValidationError
from kale.model.executor import executor_kinds
from kale.model.workflow import Task, Workflow, task_kinds
from kale.spec import load_workflow, schema
from kale.tasks.registry import runner_class

PLUGIN = '''\
"""A third-party plug-in: the task kind 'echo' and the batch scheduler 'toy'."""

from kale.batch.schedulers.base import Partition, QueueJob, Scheduler
from kale.tasks.base import Outcome, TaskContext, TaskRunner


class EchoRunner(TaskRunner):
    """Says its target, with the task's parameters filled in; records what it said."""

    kind = "echo"

    async def run(self, ctx: TaskContext) -> Outcome:
        said = str(ctx.task.target).format(**ctx.inputs)
        (ctx.workdir / "said.txt").write_text(said)
        return Outcome(ok=True, exit_code=0, records={"said": said})


class ToyScheduler(Scheduler):
    """A queue listed by the `toyq` command: one job per line, `ID NAME`."""

    name = "toy"
    psij_name = "toy"

    def queue_argv(self, user):
        return ["toyq", *([user] if user else [])]

    def parse_queue(self, text):
        return [QueueJob(id=i, name=n, state="PENDING", reason="Priority", partition="debug",
                         nodes=1, user=None, submitted=None, start=None, walltime=None,
                         native_state="Q")
                for i, n in (line.split() for line in text.splitlines() if line.strip())]

    def partitions_argv(self):
        return ["toyq", "--partitions"]

    def parse_partitions(self, text):
        return [Partition(name=n, available=True, default=True, nodes=2, idle_nodes=1,
                          cpus=None, idle_cpus=None, max_walltime=3600)
                for n in text.split()]
'''

ENTRY_POINTS = """\
[kale.task_kinds]
echo = kaleplug:EchoRunner
shell = kaleplug:EchoRunner
Not-A-Name = kaleplug:EchoRunner

[kale.schedulers]
toy = kaleplug:ToyScheduler
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A directory holding the installed plug-in ``kaleplug`` (a module and its
    dist-info); put it on PYTHONPATH to install it. Besides 'echo' and 'toy' it registers
    a name Kale owns ('shell') and a name that is not one, both of which are ignored."""
    site = tmp_path / "site"
    (site / "kaleplug-1.0.dist-info").mkdir(parents=True)
    (site / "kaleplug.py").write_text(PLUGIN)
    (site / "kaleplug-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kaleplug\nVersion: 1.0\n")
    (site / "kaleplug-1.0.dist-info" / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def installed(kale: Kale, site: Path) -> Kale:
    """``kale`` with the plug-in installed."""
    env = kale.env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    kale.env = lambda: env  # type: ignore[method-assign]
    return kale


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.removeprefix("error: ") for line in done.stderr.splitlines()
            if line.startswith("error: ")]


def test_a_plugin_task_kind_validates_runs_and_is_recorded(kale: Kale, plugin: Path,
                                                          tmp_path: Path) -> None:
    wf = write(tmp_path, """\
        name: greetings
        tasks:
          hello:
            echo: hello
          again:
            echo: "{who} again"
            parameters: {who: "${hello.said}"}
          listed:
            shell: echo "$who" > who.txt
            parameters: {who: "${again.said}"}
            outputs: [who.txt]
        """)
    kale = installed(kale, plugin)
    done = kale("validate", str(wf))
    assert done.returncode == 0, done.stderr
    assert "is valid (3 tasks)" in done.stdout
    # what the plug-in registered and Kale ignored is said once, and why
    assert "ignored shell = kaleplug:EchoRunner (from kaleplug): 'shell' is already" \
        in done.stderr
    assert "ignored Not-A-Name = kaleplug:EchoRunner" in done.stderr

    done = kale("run", str(wf))
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(kale("status", "--json").stdout)
    tasks = {t["name"]: t for t in status["tasks"]}
    assert {n: (t["kind"], t["state"]) for n, t in tasks.items()} == {
        "hello": ("echo", "SUCCEEDED"), "again": ("echo", "SUCCEEDED"),
        "listed": ("shell", "SUCCEEDED")}
    assert tasks["hello"]["result"] == {"said": "hello"}
    assert tasks["again"]["result"] == {"said": "hello again"}
    # Kale's own 'shell' ran the shell task, not the plug-in's entry of that name
    who = Path(tasks["listed"]["result"]["who.txt"])
    assert who.read_text() == "hello again\n"


def test_a_plugin_scheduler_is_accepted_and_listed(kale: Kale, plugin: Path,
                                                   tmp_path: Path) -> None:
    wf = write(tmp_path, """\
        name: on the toy scheduler
        executor: toy
        tasks:
          a: {shell: "true", executor: {kind: toy, mode: pilot, max_jobs: 1}}
        """)
    kale = installed(kale, plugin)
    done = kale("validate", str(wf))
    assert done.returncode == 0, done.stderr

    # `kale queue` probes the registered schedulers' commands on PATH: only toyq is there
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    toyq = bin_dir / "toyq"
    toyq.write_text('#!/bin/sh\nif [ "$1" = --partitions ]; then echo debug; '
                    'else echo "42 toyjob"; fi\n')
    toyq.chmod(0o755)
    env = kale.env()
    env["PATH"] = str(bin_dir)
    kale.env = lambda: env  # type: ignore[method-assign]
    done = kale("queue", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["scheduler"] == "toy" and doc["errors"] == []
    assert [(j["id"], j["name"], j["state"]) for j in doc["jobs"]] == [("42", "toyjob",
                                                                       "PENDING")]
    assert [p["name"] for p in doc["partitions"]] == ["debug"]

    toyq.unlink()  # none found: the message names every command looked for
    done = kale("queue")
    assert done.returncode == 2
    assert "no batch scheduler found on PATH (looked for squeue, qstat, bjobs, flux, toyq)" \
        in done.stderr


def test_unknown_kinds_and_schedulers_say_what_is_known(kale: Kale, plugin: Path,
                                                        tmp_path: Path) -> None:
    wf = write(tmp_path, """\
        name: typos
        executor: toi
        tasks:
          a:
            ech: hello
          b:
            echo: hello
        """)
    without = kale("validate", str(wf))
    assert without.returncode == 2
    assert errors(without) == [
        f"{wf}:2: executor.kind: unknown executor 'toi'; known: local, slurm, pbs, lsf, "
        "flux, cobalt, dask, parsl",
        f"{wf}:5: tasks.a.ech: unknown task kind 'ech'; known: shell, python, notebook (a "
        "kind from a plug-in needs its package installed)",
        f"{wf}:7: tasks.b.echo: unknown task kind 'echo'; known: shell, python, notebook (a "
        "kind from a plug-in needs its package installed)",
    ]
    done = installed(kale, plugin)("validate", str(wf))
    assert done.returncode == 2
    assert errors(done) == [
        f"{wf}:2: executor.kind: unknown executor 'toi'; known: local, slurm, pbs, lsf, "
        "flux, cobalt, toy, dask, parsl",
        f"{wf}:5: tasks.a.ech: unknown task kind 'ech' (did you mean 'echo'?); known: shell, "
        "python, notebook, echo (a kind from a plug-in needs its package installed)",
    ]


def test_the_python_api_takes_registered_kinds_only() -> None:
    wf = Workflow("w")
    with pytest.raises(ValidationError) as e:
        wf.add(Task("t", "echo", "hello"))
    assert [p.message for p in e.value.problems] == [
        "unknown task kind 'echo' (known: shell, python, notebook)"]
    assert "t" not in wf


def test_the_schema_follows_the_registries(plugin: Path, tmp_path: Path) -> None:
    """``kale.spec.schema()`` adds the installed plug-ins to the packaged file."""
    code = "import json; from kale.spec import schema; print(json.dumps(schema()))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(plugin), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    validator = jsonschema.Draft202012Validator(json.loads(done.stdout))
    good = {"name": "w", "executor": "toy",
            "tasks": {"a": {"echo": "hi", "executor": {"kind": "toy", "mode": "pilot"}},
                      "b": {"shell": "true"}}}
    assert validator.is_valid(good)
    assert not validator.is_valid({"name": "w", "tasks": {"a": {"ech": "hi"}}})
    assert not validator.is_valid({"name": "w", "tasks": {"a": {"echo": "hi", "shell": "x"}}})
    assert not jsonschema.Draft202012Validator(schema()).is_valid(good)  # not installed here


def test_kales_own_names_are_listed_once_and_everything_follows_them() -> None:
    """The entry points in pyproject.toml list Kale's own kinds, schedulers and engines;
    the packaged schema documents exactly those, and the runners, adapters, executors and
    dashboard form follow them."""
    kinds, schedulers, engines = (plugins.builtins(plugins.TASK_KINDS),
                                  plugins.builtins(plugins.SCHEDULERS),
                                  plugins.builtins(plugins.ENGINES))
    assert kinds == ("shell", "python", "notebook")
    assert schedulers == ("slurm", "pbs", "lsf", "flux", "cobalt")
    assert engines == ("dask", "parsl")
    # only an order, of those names
    assert set(plugins._ORDER) == {*kinds, *schedulers, *engines}
    assert task_kinds()[:len(kinds)] == kinds
    assert executor_kinds() == ("local", *schedulers, *engines)
    for name in engines:
        assert plugins.load(plugins.entries(plugins.ENGINES)[name]).name == name

    for kind in kinds:
        assert runner_class(kind).kind == kind
    for name in schedulers:
        assert scheduler(name).name == name

    packaged = json.loads((Path(__file__).parents[1] / "src" / "kale" / "spec"
                           / "workflow.schema.json").read_text())
    task = packaged["$defs"]["task"]
    assert [o["required"][0] for o in task["oneOf"]] == list(kinds)
    assert set(kinds) <= set(task["properties"])
    by_name, mapping = packaged["$defs"]["executor"]["oneOf"][1:]
    assert by_name["enum"] == mapping["properties"]["kind"]["enum"] == [
        "local", *schedulers, *engines]


def test_a_workflow_of_a_plugin_kind_loads_in_python(plugin: Path, tmp_path: Path) -> None:
    """In Python, ``Workflow.from_dict`` and ``wf.add(Task(...))`` take a plug-in's kind."""
    wf = write(tmp_path, "name: w\ntasks:\n  a: {echo: hi}\n")
    code = textwrap.dedent(f"""\
        from kale.model.workflow import Task, Workflow
        from kale.spec import load_workflow
        wf = load_workflow({str(wf)!r})
        wf.add(Task("b", "echo", "there", after=["a"]))
        print(wf.to_dict()["tasks"])
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(plugin), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'a': {'echo': 'hi'}, 'b': {'echo': 'there', " \
        "'after': ['a']}}"
    with pytest.raises(ValidationError, match="unknown task kind 'echo'"):
        load_workflow(wf)

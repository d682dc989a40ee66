"""Workflow and Task: the model every other layer works from. No I/O here.

A workflow converts to and from a plain *canonical dict* (the shape of the YAML file);
:meth:`Workflow.from_dict` is the one place a definition is validated, whether it came
from YAML, the Python API or the store.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gc
import hashlib
import importlib
import json
import re
import sys
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, overload

from kale import plugins
from kale.errors import ExportError, Problem, ValidationError
from kale.model import dag
from kale.model.canonical import canonical_json
from kale.model.dynamic import condition_refs, dynamic_problems, files_key, map_option
from kale.model.executor import ExecutorSpec
from kale.model.refs import (
    PARAMS,
    Ref,
    command_refs,
    iter_refs,
    single_quoted,
    text_refs,
    to_refs,
    to_text,
)
from kale.model.resources import Resources
from kale.model.sealed import SealedFunction

#: a task kind: a name of the ``kale.task_kinds`` registry (:func:`task_kinds`)
Kind = str
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: a task's name is a file name in the run directory (``runs/RUN/NAME/``, and
#: ``logs/NAME.ATTEMPT.out``), which file systems limit to 255 bytes
MAX_NAME = 200

WORKFLOW_KEYS = ("name", "description", "parameters", "executor", "tasks")
#: a task's keys besides its kind (whose key is the kind's name: ``shell: make``)
TASK_FIELDS = (
    "description", "parameters", "after", "outputs", "retries", "retry_delay", "timeout",
    "resources", "tags", "env", "kernel", "executor", "launcher", "interactive", "debug_for",
    "site", "map", "when",
)
#: a site's name (``kale site add NAME``)
SITE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: what an interactive step does when nobody decided within its timeout
ON_TIMEOUT = ("continue", "reject")
LAUNCHERS = ("srun", "mpiexec", "mpirun")
F = TypeVar("F", bound=Callable[..., Any])


@cache
def task_kinds() -> tuple[Kind, ...]:
    """The task kinds: the ``kale.task_kinds`` registry (:mod:`kale.plugins`), Kale's own
    first. A registered name that is also a task field cannot be a kind and is left out."""
    return tuple(k for k in plugins.names(plugins.TASK_KINDS) if k not in TASK_FIELDS)


@cache
def task_keys() -> tuple[str, ...]:
    """Every key a task may have: a kind, then the fields."""
    return (*task_kinds(), *TASK_FIELDS)


def _callable_path(func: Callable[..., Any]) -> str | None:
    """``module:qualname`` if ``func`` can be imported back by that name, else None."""
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if obj is func else None


@dataclass(eq=False, slots=True)  # slots: a workflow may hold 100,000 of them
class Task:
    """One step of a workflow. Build tasks with :meth:`Workflow.shell`, :meth:`Workflow.python`
    and :meth:`Workflow.notebook`; ``task["key"]`` is a reference to a key of its result."""

    name: str
    kind: Kind
    target: Any  # shell: str | list[str]; python: "mod:func" | callable; notebook: path str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    resources: Resources = field(default_factory=Resources)
    tags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    kernel: str | None = None
    #: where it runs; None: the workflow's executor
    executor: ExecutorSpec | None = None
    #: how a multi-rank shell task starts its ranks across its allocation
    launcher: str | None = None
    #: a notebook step a person works through: ``{}``, or ``{"timeout": seconds,
    #: "on_timeout": "continue" | "reject"}``; None for an ordinary task
    interactive: dict[str, Any] | None = None
    #: when the task fails in its kernel, keep the kernel up this many seconds so a person
    #: can attach and look at the failure (``kale attach RUN TASK``)
    debug_for: float | None = None
    #: the site it runs at (``kale site add``), over SSH; None: where the run is driven
    site: str | None = None
    #: run once per element: parameter name -> what to map over (a reference to a list an
    #: upstream task returns or records, ``${task.files('glob')}``, or a list); several
    #: names go element by element together. See :mod:`kale.model.dynamic`.
    map: dict[str, Any] | None = None
    #: run only when this is true (``"${pick.n} > 0"``), decided when the task is due;
    #: else the task is SKIPPED with the reason, and so is what depends only on it
    when: str | None = None

    # -- references ----------------------------------------------------------------------
    def __getitem__(self, key: str) -> Ref:
        return Ref(self.name, key)

    def files(self, pattern: str) -> Ref:
        """A reference to the files matching ``pattern`` (a glob, relative to this task's
        directory) once this task has run: a sorted list of paths, to ``map`` over."""
        return Ref(self.name, files_key(pattern))

    @property
    def result(self) -> Ref:
        """A reference to this task's whole result, for another task's parameters."""
        return Ref(self.name)

    @property
    def upstream(self) -> list[str]:
        """Tasks this one waits for: ``after`` plus every task it references (in its
        parameters, and in its shell command)."""
        deps = list(self.after)
        for ref in self.refs():
            if not ref.is_param and ref.task not in deps:
                deps.append(ref.task)
        return deps

    def refs(self) -> list[Ref]:
        """Every reference this task makes: in its parameters, and in its shell command
        (``${task.key}``, ``${params.name}``). What it uses of the workflow parameters is
        the ``is_param`` ones."""
        out = list(iter_refs(self.parameters))
        if self.kind == "shell":
            out += [ref for _, ref in command_refs(self.target)]
        if isinstance(self.map, dict):
            out += iter_refs(self.map)
        if isinstance(self.when, str):
            out += [ref for _, _, ref in condition_refs(self.when)]
        return out

    def __deepcopy__(self, memo: dict[int, Any]) -> Task:
        """A copy sharing nothing mutable (the engine's own copy of a run's workflow),
        made field by field: copy.deepcopy's generic walk took ~150 us a task."""
        def deep(v: Any) -> Any:
            if v is None or v.__class__ is str:
                return v
            if v.__class__ is list and all(x.__class__ is str for x in v):
                return v[:]
            return copy.deepcopy(v, memo)

        return Task(self.name, self.kind, deep(self.target), self.description,
                    deep(self.parameters) if self.parameters else {}, deep(self.after),
                    deep(self.outputs), self.retries, self.retry_delay, self.timeout,
                    self.resources.copy() if isinstance(self.resources, Resources)
                    else deep(self.resources), deep(self.tags),
                    dict(self.env) if type(self.env) is dict else deep(self.env),
                    self.kernel, deep(self.executor), self.launcher, deep(self.interactive),
                    self.debug_for, self.site, deep(self.map), self.when)

    def _repr_markdown_(self) -> str:
        from kale.model.display import task_markdown

        return task_markdown(self)

    def __repr__(self) -> str:
        return f"<Task {self.name!r} ({self.kind})>"

    # -- canonical form ------------------------------------------------------------------
    def to_dict(self, *, for_store: bool = False, memo: Memo | None = None) -> dict[str, Any]:
        """The canonical dict. ``for_store`` also accepts functions that only exist in
        this process (pickled by value); ``memo`` shares work between the tasks of one
        call (a function often backs thousands of tasks)."""
        d: dict[str, Any] = {self.kind: self._target_dict(for_store, memo)}
        if self.description:
            d["description"] = self.description
        if self.parameters:
            d["parameters"] = to_text(self.parameters)
        if self.after:
            d["after"] = list(self.after)
        if self.outputs:
            d["outputs"] = list(self.outputs)
        if self.retries:
            d["retries"] = self.retries
        if self.retry_delay != 1.0:
            d["retry_delay"] = self.retry_delay
        if self.timeout is not None:
            d["timeout"] = self.timeout
        res = self.resources.to_dict()
        if res:
            d["resources"] = res
        if self.tags:
            d["tags"] = list(self.tags)
        if self.env:
            d["env"] = dict(self.env)
        if self.kernel is not None:
            d["kernel"] = self.kernel
        if self.executor is not None:
            d["executor"] = self.executor.to_value()
        if self.launcher is not None:
            d["launcher"] = self.launcher
        if self.interactive is not None:
            d["interactive"] = dict(self.interactive) or True
        if self.debug_for is not None:
            d["debug_for"] = self.debug_for
        if self.site is not None:
            d["site"] = self.site
        if self.map is not None:
            d["map"] = to_text(self.map)
        if self.when is not None:
            d["when"] = self.when
        return d

    def _target_dict(self, for_store: bool, memo: Memo | None = None) -> Any:
        if self.kind == "shell" and isinstance(self.target, list | tuple):
            return list(self.target)
        if self.kind != "python" or isinstance(self.target, str):
            return self.target
        if isinstance(self.target, SealedFunction):
            if for_store:
                return self.target.to_dict()
            raise ExportError(
                f"task {self.name!r} runs {self.target.name}(), a function defined in a "
                "notebook or script; move it into a module and refer to it as "
                "'module:function' to write the workflow as YAML")
        path = _memo(memo, ("path", self.target), _callable_path, self.target)
        if path:
            return path
        if for_store:
            out = {"pickle": _memo(memo, ("pickle", self.target), _pickle, self.target),
                   "name": self.target.__name__}
            code = getattr(self.target, "__code__", None)
            if code is not None:  # cloudpickle >= 3.1.3 drops it; tracebacks want it
                out["file"] = code.co_filename
            return out
        raise ExportError(
            f"task {self.name!r} runs {self.target.__qualname__}(), a function defined in a "
            "notebook or script; move it into a module and refer to it as 'module:function' "
            "to write the workflow as YAML"
        )

    def definition_hash(self, base_dir: Path | None = None, memo: Memo | None = None,
                        canonical: dict[str, Any] | None = None) -> str:
        """Hash of everything that decides what this task computes (for result reuse):
        its definition, the notebook file, the module file of its function (a function
        defined in a notebook is pickled by value, with the globals it uses).
        ``canonical``: this task's ``to_dict(for_store=True)``, if the caller has it."""
        whole = self.to_dict(for_store=True, memo=memo) if canonical is None else canonical
        d = {k: v for k, v in whole.items() if k not in _NOT_WHAT_IT_COMPUTES}
        if isinstance(d.get("python"), dict):  # where it was defined is not what it does
            d["python"] = {k: v for k, v in d["python"].items() if k != "file"}
        text = canonical_json(d, names=("parameters", "env"), default=str)
        # Tasks of equal definitions (replicas: thousands in a big workflow) read their
        # notebook or module file once per call.
        digest: str = _memo(memo, ("definition", self.kind, text, base_dir),
                            lambda t: self._files_hash(t, base_dir, memo), text)
        return digest

    def _files_hash(self, text: str, base_dir: Path | None, memo: Memo | None) -> str:
        """:meth:`definition_hash` from its canonical ``text``: with the notebook file, or
        the module file of its function."""
        h = hashlib.sha256(text.encode())
        if self.kind == "notebook" and base_dir is not None:
            path = base_dir / str(self.target)
            if path.is_file():
                h.update(path.read_bytes())
        elif self.kind == "python":  # most tasks of a big workflow share a few functions
            module = _memo(memo, ("module", self.target, base_dir),
                           lambda t: _module_file(t, base_dir), self.target)
            if module is not None:
                h.update(_memo(memo, ("file", module), Path.read_bytes, module))
        return h.hexdigest()[:32]


#: the fields of a task's definition that do not change what it computes
_NOT_WHAT_IT_COMPUTES = frozenset(("description", "retries", "retry_delay", "timeout", "tags",
                                   "executor", "debug_for"))


class Workflow:
    """A named set of tasks with dependencies.

    >>> wf = Workflow("demo", description="# Demo")
    >>> fetch = wf.shell("fetch", "echo 42 > value.txt", outputs=["value.txt"])
    >>> @wf.python(after=[fetch])
    ... def double(fetch):
    ...     return 2 * int(open(fetch["value.txt"]).read())
    """

    def __init__(self, name: str, description: str = "", *,
                 parameters: Mapping[str, Any] | None = None,
                 base_dir: str | Path | None = None,
                 executor: str | dict[str, Any] | ExecutorSpec | None = None) -> None:
        self.name = name
        self.description = description
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.base_dir = Path(base_dir).resolve() if base_dir else Path.cwd()
        self.tasks: dict[str, Task] = {}
        #: where tasks without an ``executor`` of their own run (None: local)
        self.executor: ExecutorSpec | None = None
        if executor is not None:
            spec, problems = ExecutorSpec.parse(executor)
            if problems:
                raise ValidationError([Problem(m, ("executor", *p)) for p, m in problems])
            self.executor = spec

    # -- building ------------------------------------------------------------------------
    def add(self, task: Task) -> Task:
        if task.name in self.tasks:
            raise ValidationError([Problem(f"a task named {task.name!r} already exists",
                                           ("tasks", task.name))])
        problems = _task_problems(task, ("tasks", task.name))
        if problems:
            raise ValidationError(problems)
        self.tasks[task.name] = task
        return task

    def shell(self, name: str, command: str | list[str], **options: Any) -> Task:
        """A shell task. A string runs through ``/bin/sh -c`` (pipes, redirection); a list is
        executed as an argv list without a shell. Task parameters are exported to the
        command's environment, so ``echo "$n"`` works; ``${task.key}`` and
        ``${params.name}`` in the command are references (the task waits for ``task``), whose
        values reach the command as shell variables, never pasted into its text."""
        return self.add(_make(name, "shell", command, options))

    def notebook(self, name: str, path: str | Path, **options: Any) -> Task:
        """A notebook task, executed papermill-style: ``parameters`` are injected after the
        cell tagged ``parameters``; values recorded with :func:`kale.record` form its result."""
        return self.add(_make(name, "notebook", str(path), options))

    @overload
    def python(self, func: F, /, **options: Any) -> Task: ...
    @overload
    def python(self, func: str, /, *, name: str, **options: Any) -> Task: ...
    @overload
    def python(self, func: None = None, /, **options: Any) -> Callable[[F], Task]: ...

    def python(self, func: Any = None, /, **options: Any) -> Any:
        """A Python task: ``wf.python(fn)``, ``wf.python("pkg.mod:fn", name=...)`` or as a
        decorator ``@wf.python(after=[...])``. Parameters whose names match upstream tasks
        receive those tasks' results."""
        if func is None:
            return lambda f: self.python(f, **options)
        name = options.pop("name", None)
        if name is None:
            if isinstance(func, str):
                raise ValidationError([Problem("wf.python('module:function') needs name=...")])
            name = func.__name__
        return self.add(_make(name, "python", func, options))

    def __getitem__(self, name: str) -> Task:
        return self.tasks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tasks

    def __len__(self) -> int:
        return len(self.tasks)

    # -- checks --------------------------------------------------------------------------
    def problems(self) -> list[Problem]:
        """Graph-level problems: unknown dependencies and references, cycles."""
        return _graph_problems(self.tasks.values(), set(self.tasks), self.parameters)

    def validate(self, *, check_files: bool = True) -> Workflow:
        """Raise :class:`ValidationError` listing every problem: the graph's, and (with
        ``check_files``) what the tasks name outside the workflow that is not there: a
        notebook file, a module or its function, a kernel (:mod:`kale.model.checks`;
        nothing is imported or run)."""
        problems = self.problems()
        if check_files:
            from kale.model.checks import target_problems

            problems += target_problems(self)
        if problems:
            raise ValidationError(problems)
        return self

    def uses_batch(self, executor: str | dict[str, Any] | ExecutorSpec | None = None) -> bool:
        """Whether some task runs on a batch scheduler (``executor`` overrides the
        workflow's own default, as ``kale run --executor`` does)."""
        default = ExecutorSpec.parse(executor)[0] if executor is not None else self.executor
        return bool((default is not None and default.batch)
                    or any(t.executor is not None and t.executor.batch
                           for t in self.tasks.values()))

    def uses_sites(self) -> bool:
        """Whether some task names a site of its own (a run across sites, driven from
        this side: :mod:`kale.sites.across`)."""
        return any(t.site for t in self.tasks.values())

    def needs_manager(self, executor: str | dict[str, Any] | ExecutorSpec | None = None
                      ) -> bool:
        """Whether a run must go through the manager: batch jobs, or steps that wait for a
        person (both outlive the process that started the run)."""
        return self.uses_batch(executor) or any(
            t.interactive is not None for t in self.tasks.values())

    def order(self) -> list[str]:
        """Task names in a dependency-respecting order."""
        return dag.topological({n: t.upstream for n, t in self.tasks.items()})

    # -- canonical dict ------------------------------------------------------------------
    def to_dict(self, *, for_store: bool = False, memo: Memo | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.description:
            d["description"] = self.description
        if self.parameters:
            d["parameters"] = dict(self.parameters)
        if self.executor is not None:
            d["executor"] = self.executor.to_value()
        memo = {} if memo is None else memo
        d["tasks"] = {n: t.to_dict(for_store=for_store, memo=memo) for n, t in self.tasks.items()}
        return d

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: str | Path | None = None,
                  trusted: bool = False) -> Workflow:
        """Build and validate a workflow from its canonical dict. Every problem found is
        reported at once, each with its path in the document. ``trusted`` accepts
        Python functions pickled by value (as Kale itself stores them); they stay sealed
        (:class:`~kale.model.sealed.SealedFunction`): nothing here unpickles them, only
        the process that runs the task does. Files the workflow names are not looked at
        (see :meth:`validate`)."""
        wf, problems = cls.parse(data, base_dir=base_dir, trusted=trusted)
        if problems:
            raise ValidationError(problems)
        return wf

    @classmethod
    def parse(cls, data: Any, *, base_dir: str | Path | None = None,
              trusted: bool = False, no_nul: bool = False) -> tuple[Workflow, list[Problem]]:
        """:meth:`from_dict` without raising: the workflow made of the tasks that are
        valid on their own, and every problem found (in the tasks, and in the graph of
        all of them: unknown names, references, cycles). ``no_nul``: the caller knows
        that no text in ``data`` holds a NUL character (it was read from a file without
        NULs or backslashes), so it is not looked for."""
        with gc_paused():
            return cls._parse(data, base_dir, trusted, no_nul)

    @classmethod
    def _parse(cls, data: Any, base_dir: str | Path | None, trusted: bool, no_nul: bool
               ) -> tuple[Workflow, list[Problem]]:
        problems: list[Problem] = []
        if not isinstance(data, dict):
            raise ValidationError([Problem("a workflow must be a mapping with 'name' and 'tasks'")])
        for key in data:
            if key not in WORKFLOW_KEYS:
                problems.append(Problem(_unknown(key, WORKFLOW_KEYS), (key,)))
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem("'name' is required and must be a non-empty string", ("name",)))
            name = "workflow"
        description = data.get("description", "")
        if not isinstance(description, str):
            problems.append(Problem("must be a string (markdown)", ("description",)))
            description = ""
        params = _given(data, "parameters", {})
        if not isinstance(params, dict):
            problems.append(Problem("must be a mapping of name: value", ("parameters",)))
            params = {}
        wf = cls(name, description, parameters=params, base_dir=base_dir)
        if data.get("executor") is not None:
            spec, eprobs = ExecutorSpec.parse(data["executor"])
            problems += [Problem(m, ("executor", *p)) for p, m in eprobs]
            wf.executor = spec
        tasks = data.get("tasks")
        if not isinstance(tasks, dict) or not tasks:
            problems.append(Problem(_tasks_problem(tasks), ("tasks",)))
            tasks = {}
        parsed: list[Task] = []
        seen = _Seen(names=_valid_names(tasks))
        for tname, tdata in tasks.items():
            task = _known_task(tname, tdata, seen)
            if task is not None:
                parsed.append(task)
                wf.tasks[tname] = task
                continue
            task, tprobs = _task_from_dict(tname, tdata, trusted, seen)
            problems.extend(tprobs)
            if task is not None:
                parsed.append(task)
                if not tprobs:
                    wf.tasks[task.name] = task
        problems += _graph_problems(parsed, set(map(str, tasks)), params)
        if not no_nul:
            told = {pr.path for pr in problems}
            problems += [pr for pr in _nul_problems(data) if pr.path not in told]
        return wf, problems

    # -- display -------------------------------------------------------------------------
    def _repr_markdown_(self) -> str:
        from kale.model.display import workflow_markdown

        return workflow_markdown(self)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self.tasks)} tasks>"


# -- helpers ------------------------------------------------------------------------------

@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside (nested or not): building a workflow of many
    tasks makes millions of objects and no cycles, and each collection that allocation
    sets off walks them all again (a million tasks load in half the time without)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


Memo = dict[Any, Any]


def _memo(memo: Memo | None, key: Any, compute: Callable[[Any], Any], arg: Any) -> Any:
    if memo is None:
        return compute(arg)
    try:
        return memo[key]
    except KeyError:
        got = memo[key] = compute(arg)
        return got
    except TypeError:  # an unhashable callable object: computed each time
        return compute(arg)


def _pickle(func: Any) -> str:
    import cloudpickle

    return base64.b64encode(cloudpickle.dumps(func)).decode()


def _module_file(target: Any, base_dir: Path | None) -> Path | None:
    """The file of the module a Python task's function lives in, when it is a module
    beside the workflow or an importable module; None for installed-package builtins."""
    if isinstance(target, str):
        if base_dir is None:
            return None
        rel = Path(*target.partition(":")[0].split("."))
        for path in (base_dir / rel.with_suffix(".py"), base_dir / rel / "__init__.py"):
            if path.is_file():
                return path
        return None
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    return Path(file) if file and module is not None and module.__name__ != "__main__" \
        else None


def _tasks_problem(tasks: Any) -> str:
    if tasks is None:
        return "'tasks' is required: a mapping of task name -> task"
    if isinstance(tasks, dict):
        return "'tasks' is empty: a workflow needs at least one task (task name -> task)"
    what = ("a list" if isinstance(tasks, list) else "a string" if isinstance(tasks, str)
            else f"a {type(tasks).__name__}")
    hint = (" (write each task as `name:` with its fields indented below it, not as a "
            "`- ` list item)") if isinstance(tasks, list) else ""
    return f"'tasks' must be a mapping of task name -> task, got {what}{hint}"


def _graph_problems(tasks: Iterable[Task], names: Collection[str],
                    params: Mapping[str, Any]) -> list[Problem]:
    """Unknown tasks in ``after`` and in references, unknown workflow parameters,
    references a shell would not expand, and a cycle. ``tasks`` may include tasks with
    problems of their own (what they name is still checked); ``names`` are all the task
    names in the workflow, valid or not."""
    out: list[Problem] = []
    graph: dict[str, list[str]] = {}
    names_have = (names if isinstance(names, set | frozenset) else set(names)).issuperset
    for t in tasks:
        after, refers = t.after, _may_refer(t)
        if not refers and after.__class__ is list and t.name not in graph and \
                t.name not in after and "" not in after and names_have(after):
            graph[t.name] = after  # the common task: known names in 'after', no references
            continue
        path = ("tasks", t.name)
        deps = graph.setdefault(t.name, [])
        for dep in after if isinstance(after, list) else ():
            if not isinstance(dep, str) or not dep or dep == t.name:
                continue  # reported with the task itself
            if dep not in names:
                out.append(Problem(f"unknown task {dep!r} in 'after'", (*path, "after")))
            deps.append(dep)
        for sub, ref in _located_refs(t) if refers else ():
            if ref.is_param:
                if ref.key is not None and ref.key not in params:
                    known = ", ".join(map(str, params)) or "none declared"
                    out.append(Problem(f"{ref} names no workflow parameter "
                                       f"(parameters: {known})", (*path, *sub)))
            elif ref.task == t.name:
                out.append(Problem(f"{ref}: a task cannot use its own result", (*path, *sub)))
            elif ref.task not in names:
                hint = ""
                if sub[0] == "shell" and "-" in ref.task:
                    var, _, word = str(ref)[2:-1].partition("-")
                    hint = (f"; if you meant the shell's own default value, write "
                            f"${{{var}:-{word}}}")
                out.append(Problem(f"{ref} refers to unknown task {ref.task!r}{hint}",
                                   (*path, *sub)))
            else:
                deps.append(ref.task)
        if t.kind == "shell" and isinstance(t.target, str):
            out += _quoted_refs(t.target, (*path, "shell"))
    cycle = dag.find_cycle(graph)
    if cycle:
        out.append(Problem("dependency cycle: " + " -> ".join(cycle),
                           ("tasks", cycle[0], "after")))
    return out


def _may_refer(t: Task) -> bool:
    """Whether the task can hold references at all (most tasks of a big file hold none)."""
    return bool(t.parameters or t.kind == "shell" or t.map or t.when)


def _located_refs(t: Task) -> Iterator[tuple[tuple[str | int, ...], Ref]]:
    """The task's references, each with its path below the task."""
    if isinstance(t.parameters, dict):
        for key, value in t.parameters.items():
            for ref in iter_refs(value):
                yield ("parameters", str(key)), ref
    if t.kind == "shell":
        for i, ref in command_refs(t.target):
            yield ("shell",) if i is None else ("shell", i), ref
    if isinstance(t.map, dict):
        for key, value in t.map.items():
            for ref in iter_refs(value):
                yield ("map", str(key)), ref
    if isinstance(t.when, str):
        for _, _, ref in condition_refs(t.when):
            yield ("when",), ref


def _quoted_refs(command: str, path: tuple[str | int, ...]) -> list[Problem]:
    """References a command line puts inside single quotes, where the shell expands
    nothing (they would reach the program as ``${KALE_REF_1}``)."""
    refs = text_refs(command)
    spans = single_quoted(command) if refs else None
    if not spans:
        return []
    return [Problem(f"{ref} is inside single quotes, where the shell expands nothing: put "
                    f"it in double quotes (\"{command[start:end]}\"), or hand it to the "
                    f"program another way (awk -v n=\"{command[start:end]}\" '...')", path)
            for start, end, ref in refs if any(a <= start < b for a, b in spans)]


def _given(data: dict[str, Any], key: str, default: Any) -> Any:
    """``data[key]``, or ``default`` when absent or null (a wrong type stays wrong)."""
    value = data.get(key)
    return default if value is None else value


def _unknown(key: Any, allowed: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}"


def _unknown_kind(key: Any) -> str:
    """A key of a task that has no kind: most likely the kind, misspelt or not installed."""
    import difflib

    close = difflib.get_close_matches(str(key), list(task_keys()), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"unknown task kind {key!r}{hint}; known: {', '.join(task_kinds())} (a kind "
            "from a plug-in needs its package installed)")


def _interactive(value: Any) -> Any:
    """``interactive: true`` -> ``{}``; false or absent -> None; a mapping as it is."""
    if value is True:
        return {}
    if value is None or value is False:
        return None
    return value


def _make(name: str, kind: Kind, target: Any, options: dict[str, Any]) -> Task:
    after = options.pop("after", None) or []
    if isinstance(after, (str, Task)):  # one upstream task, not a list of them
        after = [after]
    after = [a.name if isinstance(a, Task) else a for a in after]
    resources = options.pop("resources", None)
    if isinstance(resources, dict):
        resources = Resources(**resources)
    params = to_refs(options.pop("parameters", {}) or {})
    executor = options.pop("executor", None)
    if executor is not None:
        spec, problems = ExecutorSpec.parse(executor)
        if problems:
            raise ValidationError([Problem(m, ("tasks", name, "executor", *p))
                                   for p, m in problems])
        options["executor"] = spec
    if "interactive" in options:
        options["interactive"] = _interactive(options["interactive"])
    unknown = set(options) - set(TASK_FIELDS)
    if unknown:
        raise ValidationError([Problem(_unknown(k, TASK_FIELDS), ("tasks", name))
                               for k in sorted(unknown)])
    if isinstance(target, tuple):
        target = list(target)
    if "map" in options:
        options["map"] = map_option(name, kind, target, options["map"], params, after)
    if isinstance(options.get("when"), Ref):  # when=pick["ok"]: its truth
        options["when"] = str(options["when"])
    return Task(name, kind, target, parameters=params, after=after,
                resources=resources or Resources(), **options)


@dataclass(slots=True)
class _Seen:
    """What checking the tasks of one file found so far: most of a big file's tasks run
    the same few functions, and its names can be checked all at once."""

    #: Python targets (``module:function``) found valid
    targets: set[str] = field(default_factory=set)
    #: every task name in the file is valid (see :func:`_valid_names`)
    names: bool = False


def _known_task(name: str, data: Any, seen: _Seen) -> Task | None:
    """The task of the commonest shape in a generated file, made without the general path
    when nothing in it needs checking beyond what is known valid: a Python function
    another task of the file already ran (``seen.targets``), with at most an ``after``
    list of names besides (the graph checks that they exist). None: the general path."""
    if not seen.names or data.__class__ is not dict or len(data) > 2:
        return None
    target = data.get("python")
    if target.__class__ is not str or target not in seen.targets:
        return None
    if len(data) == 1:
        return Task(name, "python", target)
    after = data.get("after")
    if after.__class__ is not list or not _names(after) or name in after:
        return None
    return Task(name, "python", target, after=after)


def _valid_names(names: Collection[Any]) -> bool:
    """Whether every one of ``names`` is a valid task name, with one regex over them all
    (what :func:`_name_problems` checks one by one)."""
    try:
        joined = "\n".join(names)
    except TypeError:  # not all strings
        return False
    return (joined.count("\n") == len(names) - 1 and PARAMS not in names
            and max(map(len, names), default=0) <= MAX_NAME
            and _NAME_LINES.fullmatch(joined) is not None)


_NAME_LINES = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\n[A-Za-z_][A-Za-z0-9_-]*)*")


def _task_problems(t: Task, path: tuple[str | int, ...],
                   given: Collection[str] | None = None,
                   seen: _Seen | None = None) -> list[Problem]:
    """Every problem of one task on its own (the graph's are :func:`_graph_problems`).
    ``given``: the fields the task's document has (the others hold their defaults, which
    are valid, so they are not checked: a file of a million tasks is read in seconds);
    None checks them all. ``seen``: see :func:`_task_from_dict`."""
    out: list[Problem] = []

    def bad(msg: str, *sub: str | int) -> None:
        out.append(Problem(msg, path + sub))

    if seen is None or not seen.names:
        _name_problems(t, bad)
    memo = seen is not None and t.kind == "python" and t.target.__class__ is str
    if not memo or t.target not in seen.targets:  # type: ignore[union-attr]
        found = len(out)
        _target_problems(t, bad)
        if memo and len(out) == found:
            seen.targets.add(t.target)  # type: ignore[union-attr]
    _field_problems(t, bad, TASK_FIELDS if given is None else given)
    if given is None or not _OPTIONAL.isdisjoint(given):
        _kind_option_problems(t, bad)
        _dynamic_problems(t, bad)
    return out


#: the fields :func:`_kind_option_problems` and :func:`_dynamic_problems` look at
_OPTIONAL = frozenset(("kernel", "executor", "launcher", "interactive", "debug_for", "site",
                       "map", "when"))


Bad = Callable[..., None]
_FUNCTION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _name_problems(t: Task, bad: Bad) -> None:
    if not isinstance(t.name, str) or not NAME.fullmatch(t.name) or t.name == PARAMS:
        bad("task names are letters, digits, '_' and '-', starting with a letter or '_'"
            + (f"; {PARAMS!r} is reserved" if t.name == PARAMS else ""))
    elif len(t.name) > MAX_NAME:
        bad(f"task names are at most {MAX_NAME} characters, this one has {len(t.name)} "
            "(the name is a file name in the run directory)")


def _target_problems(t: Task, bad: Bad) -> None:
    """What the task runs, checked by its kind."""
    tgt = t.target
    if t.kind not in task_kinds():
        bad(f"unknown task kind {t.kind!r} (known: {', '.join(task_kinds())})")
    elif t.kind == "shell":
        ok = (isinstance(tgt, str) and tgt.strip()) or (
            isinstance(tgt, list) and tgt and all(isinstance(a, str) for a in tgt))
        if not ok:
            bad("must be a command line (string) or a non-empty argv list of strings", "shell")
        elif isinstance(tgt, str) and "\0" in tgt:
            bad("a command cannot hold a NUL character", "shell")
        elif isinstance(tgt, list):
            for i, arg in enumerate(tgt):
                if "\0" in arg:
                    bad("a command argument cannot hold a NUL character", "shell", i)
    elif t.kind == "python":
        if isinstance(tgt, str):
            if not _FUNCTION.fullmatch(tgt):
                bad(f"must be 'module:function', got {tgt!r}", "python")
        elif not callable(tgt) and not isinstance(tgt, SealedFunction):
            bad("must be 'module:function' or a callable", "python")
    elif t.kind == "notebook" and (not isinstance(tgt, str) or not tgt.endswith(".ipynb")
                                   or "\0" in tgt):
        bad(f"must be a path to an .ipynb file, got {tgt!r}", "notebook")


def _field_problems(t: Task, bad: Bad, given: Container[str]) -> None:
    """The fields every kind has (those ``given``): description, parameters, lists,
    retries, times, resources, environment."""
    if "description" in given and not isinstance(t.description, str):
        bad("must be a string (markdown)", "description")
    if "parameters" in given:
        _parameters_problems(t, bad)
    for key in ("after", "outputs", "tags"):
        if key in given:
            _list_problems(t, key, bad)
    if "after" in given and isinstance(t.after, list) and t.name in t.after:
        bad("a task cannot depend on itself", "after")
    if "retries" in given and (not isinstance(t.retries, int) or isinstance(t.retries, bool)
                               or t.retries < 0):
        bad(f"must be an integer >= 0, got {t.retries!r}", "retries")
    for key in ("retry_delay", "timeout"):
        v = getattr(t, key)
        if key not in given or (v is None and key == "timeout"):
            continue
        if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
            bad(f"must be a number of seconds >= 0, got {v!r}", key)
    if "resources" in given:
        if not isinstance(t.resources, Resources):
            bad("must be a mapping", "resources")
        else:
            for fname, msg in t.resources.problems():
                bad(msg, "resources", fname)
    if "env" in given:
        _env_problems(t, bad)


def _parameters_problems(t: Task, bad: Bad) -> None:
    if not isinstance(t.parameters, dict) or not all(isinstance(k, str) for k in t.parameters):
        bad("must be a mapping of name: value", "parameters")
    elif t.kind == "shell":  # exported to the command's environment
        for k, v in t.parameters.items():
            if isinstance(v, str) and "\0" in v:
                bad("a shell task's parameters are environment variables, which cannot hold "
                    "a NUL character", "parameters", k)


def _list_problems(t: Task, key: str, bad: Bad) -> None:
    v = getattr(t, key)
    if not isinstance(v, list) or not _names(v):
        bad("must be a list of names" if key != "outputs" else "must be a list of paths", key)
    elif key == "outputs":
        for output in v:
            if output.startswith("/") or ".." in Path(output).parts or "\0" in output:
                bad(f"{output!r}: outputs are paths inside the task's directory "
                    "(relative, without '..')", key)


def _names(values: list[Any]) -> bool:
    """Whether every value is a non-empty string (at C speed: a long 'after' list)."""
    try:
        return all(map(str.__len__, values))
    except TypeError:  # not a str
        return False


def _env_problems(t: Task, bad: Bad) -> None:
    if not isinstance(t.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in t.env.items()):
        bad("must be a mapping of NAME: \"string\"", "env")
        return
    for k, v in t.env.items():
        if not k or "=" in k or "\0" in k:
            bad(f"{k!r} cannot be an environment variable's name (it is empty, or holds "
                "'=' or a NUL character)", "env")
        elif "\0" in v:
            bad("an environment variable cannot hold a NUL character", "env", k)


def _kind_option_problems(t: Task, bad: Bad) -> None:
    """Fields only some kinds take: kernel, launcher, interactive, debug_for, executor."""
    if t.kernel is not None and (t.kind not in ("notebook", "python")
                                 or not isinstance(t.kernel, str)):
        bad("only notebook and Python tasks take a kernel name (a string)", "kernel")
    if t.launcher is not None:
        if t.launcher not in LAUNCHERS:
            bad(f"must be one of {', '.join(LAUNCHERS)}, got {t.launcher!r}", "launcher")
        elif t.kind != "shell":
            bad("only shell tasks take a launcher (run Python under MPI as a shell "
                "command, e.g. 'python script.py')", "launcher")
    if t.interactive is not None:
        if t.kind != "notebook":
            bad("only notebook tasks can be interactive steps", "interactive")
        elif not isinstance(t.interactive, dict):
            bad("must be true or a mapping with timeout and on_timeout", "interactive")
        else:
            for k in t.interactive:
                if k not in ("timeout", "on_timeout"):
                    bad(_unknown(k, ("timeout", "on_timeout")), "interactive", str(k))
            tmo = t.interactive.get("timeout")
            if tmo is not None and (not isinstance(tmo, int | float) or isinstance(tmo, bool)
                                    or tmo <= 0):
                bad(f"must be a number of seconds > 0, got {tmo!r}", "interactive", "timeout")
            act = t.interactive.get("on_timeout", "reject")
            if act not in ON_TIMEOUT:
                bad(f"must be continue or reject, got {act!r}", "interactive", "on_timeout")
    if t.debug_for is not None:
        if t.kind != "notebook" and not (t.kind == "python" and t.kernel):
            bad("only tasks that run in a kernel (notebook tasks, Python tasks with a "
                "kernel) can keep it for debugging", "debug_for")
        elif not isinstance(t.debug_for, int | float) or isinstance(t.debug_for, bool) \
                or t.debug_for <= 0:
            bad(f"must be a number of seconds > 0, got {t.debug_for!r}", "debug_for")
    if t.executor is not None and not isinstance(t.executor, ExecutorSpec):
        bad("must be an executor name or a mapping", "executor")
    if t.site is not None and (not isinstance(t.site, str) or not SITE_NAME.match(t.site)):
        bad(f"must be a site's name (`kale site list`), got {t.site!r}", "site")


def _dynamic_problems(t: Task, bad: Bad) -> None:
    dynamic_problems(t.map, t.when, t.parameters, bad)


def _task_from_dict(name: Any, data: Any, trusted: bool, seen: _Seen | None = None
                    ) -> tuple[Task | None, list[Problem]]:
    """A task from its document, and its problems on its own. ``seen``: what the tasks
    of one file found so far, shared between them."""
    path: tuple[str | int, ...] = ("tasks", str(name))
    if not isinstance(data, dict):
        known = ", ".join(task_kinds())
        return None, [Problem(f"a task must be a mapping with one of: {known}", path)]
    kinds = list(_kind_set().intersection(data))
    problems = [] if _key_set().issuperset(data) else [
        Problem(_unknown(k, task_keys()) if kinds else _unknown_kind(k), (*path, str(k)))
        for k in data if k not in task_keys()]
    if len(kinds) != 1:
        if kinds:
            kinds.sort(key=task_kinds().index)
            problems.append(Problem(f"has {len(kinds)} kinds ({', '.join(kinds)}); a task "
                                    "has exactly one", path))
        elif not problems:  # else the unknown key is taken for the kind and says it
            problems.append(Problem(f"needs one of: {', '.join(task_kinds())}", path))
        return None, problems
    kind = kinds[0]
    target = data[kind]
    if kind == "python" and isinstance(target, dict) and trusted and "pickle" in target:
        # Kept sealed: only the process that runs the task opens it (kale.model.sealed).
        file = target.get("file")
        target = SealedFunction(str(target["pickle"]), str(target.get("name", "function")),
                                file if isinstance(file, str) else None)
    task = Task(str(name), kind, target)
    if len(data) > 1:
        problems += _fields_from_dict(task, data, path)
    problems += _task_problems(task, path, data, seen)
    return task, problems


@cache
def _kind_set() -> frozenset[str]:
    return frozenset(task_kinds())


@cache
def _key_set() -> frozenset[str]:
    return frozenset(task_keys())


def _fields_from_dict(task: Task, data: dict[str, Any], path: tuple[str | int, ...]
                      ) -> list[Problem]:
    """Set the task's fields that ``data`` gives (the others keep their defaults); the
    problems of ``resources``' and ``executor``'s keys."""
    problems: list[Problem] = []
    res_data = data.get("resources")
    if isinstance(res_data, dict):
        unknown_res = [k for k in res_data if k not in Resources.FIELDS]
        problems += [Problem(_unknown(k, Resources.FIELDS), (*path, "resources", str(k)))
                     for k in unknown_res]
        task.resources = Resources(**{k: v for k, v in res_data.items()
                                      if k in Resources.FIELDS})
    elif res_data is not None:
        task.resources = res_data
    if data.get("executor") is not None:
        task.executor, eprobs = ExecutorSpec.parse(data["executor"])
        problems += [Problem(m, (*path, "executor", *p)) for p, m in eprobs]
    for key, value in data.items():
        if key in _PLAIN_FIELDS:  # as given, null included
            setattr(task, key, value)
        elif key in _COLLECTION_FIELDS and value is not None:  # null: the default (empty)
            setattr(task, key, to_refs(value) if key == "parameters" else value)
    if "interactive" in data:
        task.interactive = _interactive(data["interactive"])
    if "map" in data:
        task.map = to_refs(data["map"]) if isinstance(data["map"], dict) else data["map"]
    return problems


_PLAIN_FIELDS = frozenset(("description", "retries", "retry_delay", "timeout", "kernel",
                           "launcher", "debug_for", "site", "when"))
_COLLECTION_FIELDS = frozenset(("parameters", "after", "outputs", "tags", "env"))


def _nul_problems(data: Any) -> list[Problem]:
    """A NUL character in any name or text of the document (no store, file system or
    process argument can hold one), with its path; iterative, so any depth will do."""
    try:  # the common case at C speed: no NUL anywhere (JSON writes it \u0000)
        if "\\u0000" not in json.dumps(data, check_circular=False, default=repr):
            return []
    except (TypeError, ValueError, RecursionError):
        pass  # keys JSON cannot write, or too deep for it: walk
    out: list[Problem] = []
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while todo:
        value, path = todo.pop()
        if isinstance(value, str):
            if "\x00" in value:
                out.append(Problem("cannot hold a NUL character", path))
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and "\x00" in k:
                    out.append(Problem("a name cannot hold a NUL character", (*path, k)))
                todo.append((v, (*path, str(k))))
        elif isinstance(value, list | tuple):
            todo.extend((v, (*path, i)) for i, v in enumerate(value))
    return sorted(out, key=lambda pr: [str(x) for x in pr.path])

"""Shell tasks: a command line run by ``/bin/sh -c``, or an argv list run directly.

No value is ever pasted into shell text:

- Task parameters are exported as environment variables (strings as they are, anything
  else as JSON), so a command refers to them the shell's own way (``echo "$n"``).
- References in the command (``${task.key}``, ``${params.name}``) are resolved where the
  task runs. In a command line, each one becomes an environment variable
  (``KALE_REF_1``, ``KALE_REF_2``, ... in order of appearance) and its text becomes
  ``${KALE_REF_1}``, which the shell expands like any variable: quoted (``"${fetch.out}"``)
  it is one word, whatever it holds. In an argv list the values are put into the arguments
  themselves: no shell reads them. Values are written as parameters are.

Every task finds Kale's ``kale`` first on its ``PATH`` (:func:`kale.tasks.record.task_path`),
so ``kale record NAME VALUE`` works without the virtualenv on ``PATH``, in about a
millisecond.

A command that fails is reported with the last line it wrote to stderr in the one-line
error, and its last lines (up to 20, 4 KB) as the failure's detail (``Outcome.traceback``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from typing import Any

from kale.model.refs import MissingResult, Ref, resolve, substitute
from kale.tasks import groups, procs
from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.launchers import launch_prefix
from kale.tasks.record import task_path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the failure's detail: at most this many of the last lines of stderr...
TAIL_LINES = 20
#: ...and at most this many bytes
TAIL_BYTES = 4096
#: the last stderr line, in the one-line error, is cut to this many characters
ERROR_LINE = 200
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def task_env(ctx: TaskContext) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: env_value(v) for k, v in ctx.inputs.items() if _ENV_NAME.match(k)})
    env.update(ctx.env)
    path = task_path(ctx.workdir.parent, env.get("PATH"))
    if path is not None:
        env["PATH"] = path
    return env


def ref_values(ctx: TaskContext) -> Callable[[Ref], str]:
    """The text each reference of the task's command stands for (each resolved once):
    a string as it is, anything else as JSON. Raises :class:`MissingResult` for a
    reference without a value."""
    values: dict[Ref, str] = {}

    def value(ref: Ref) -> str:
        if ref not in values:
            values[ref] = env_value(resolve(ref, ctx.upstream, ctx.params))
        return values[ref]

    return value


def command(ctx: TaskContext) -> tuple[list[str], dict[str, str]]:
    """The argv to run and the environment variables that carry the references in the
    command. Raises :class:`MissingResult` for a reference without a value."""
    target = ctx.task.target
    value = ref_values(ctx)

    if not isinstance(target, str):
        return [substitute(arg, value) for arg in target], {}
    names: dict[Ref, str] = {}

    def variable(ref: Ref) -> str:
        value(ref)
        return "${" + names.setdefault(ref, f"KALE_REF_{len(names) + 1}") + "}"

    text = substitute(target, variable)
    return ["/bin/sh", "-c", text], {names[ref]: value(ref) for ref in names}


class ShellRunner(TaskRunner):
    """Runs shell tasks: each attempt one process, the leader of its own session, with the
    task's environment and logs (see the module's text). It keeps nothing between tasks.

    Promises: a cancelled or timed-out attempt's whole process group is terminated before
    the cancellation leaves :meth:`run`; when the command ends, whatever it left running in
    its group is killed; the group is noted in the task's directory while it runs, so the
    next attempt kills it first if this one's worker died.

    Threads: called on one event loop (the engine's, or the worker's)."""

    kind = "shell"

    async def run(self, ctx: TaskContext) -> Outcome:
        try:
            argv, refs = command(ctx)
        except MissingResult as e:
            return Outcome(ok=False, error=str(e))
        env = {**task_env(ctx), **refs}
        nul = _nul(argv, env)
        if nul:
            return Outcome(ok=False, error=f"cannot start the command: {nul} holds a NUL "
                                           "character, which a command cannot be given")
        if ctx.task.launcher:
            argv = launch_prefix(ctx.task.launcher, ctx.task.resources) + argv
        with open(ctx.stdout_path, "ab") as out, open(ctx.stderr_path, "ab") as err:
            start = err.tell()
            try:
                proc = procs.spawn(argv, cwd=ctx.workdir, env=env, stdout=out, stderr=err)
            except OSError as e:
                return Outcome(ok=False, exit_code=127, error=f"cannot start {argv[0]!r}: "
                               f"{e.strerror or e}")
        # What the next attempt kills first if this one's worker dies with it running.
        groups.record(ctx.workdir, proc.pid, env, ctx.attempt)
        ctx.pids.append(proc.pid)
        try:
            code = await procs.wait(proc)
        except asyncio.CancelledError:
            await procs.terminate(proc)
            groups.forget(ctx.workdir)
            raise
        procs.kill_group(proc)  # nothing the command left behind outlives the task
        groups.forget(ctx.workdir)
        if code == 0:
            return Outcome(ok=True, exit_code=0)
        what = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        tail = stderr_tail(ctx.stderr_path, start)
        last = _last_line(tail)
        return Outcome(ok=False, exit_code=code,
                       error=f"command failed ({what})" + (f": {last}" if last else ""),
                       traceback=tail or None)


def stderr_tail(path: str | os.PathLike[str], start: int = 0) -> str:
    """The last lines the command wrote to stderr (from byte ``start`` of the file): at
    most :data:`TAIL_LINES` lines and :data:`TAIL_BYTES` bytes, decoded with errors
    replaced."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            begin = max(start, end - TAIL_BYTES)
            f.seek(begin)
            data = f.read(TAIL_BYTES)
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if begin > start and "\n" in text.rstrip():  # cut: drop the partial first line
        text = text.partition("\n")[2]
    return "\n".join(text.rstrip().split("\n")[-TAIL_LINES:])


def _last_line(tail: str) -> str:
    """The last line of ``tail`` that says something (not blank, not a border), as the
    terminal showed it (colours gone, what a carriage return wrote over gone)."""
    for line in reversed(tail.split("\n")):
        line = _ANSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1].strip()
        if any(c.isalnum() for c in line):
            return line if len(line) <= ERROR_LINE else line[:ERROR_LINE - 1] + "…"
    return ""


def _nul(argv: list[str], env: dict[str, str]) -> str:
    for name, value in env.items():
        if "\0" in value:
            return f"environment variable {name}"
    for i, arg in enumerate(argv):
        if "\0" in arg:
            return f"argument {i}"
    return ""

"""Shell tasks: a command line run by ``/bin/sh -c``, or an argv list run directly.

Task parameters are exported as environment variables (strings as they are, anything
else as JSON), so a command refers to them the shell's own way (``echo "$n"``) and no
parameter value is ever pasted into shell text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

from kale.tasks import procs
from kale.tasks.base import Outcome, TaskContext, TaskRunner
from kale.tasks.launchers import launch_prefix

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def task_env(ctx: TaskContext) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: env_value(v) for k, v in ctx.inputs.items() if _ENV_NAME.match(k)})
    env.update(ctx.env)
    return env


class ShellRunner(TaskRunner):
    kind = "shell"

    async def run(self, ctx: TaskContext) -> Outcome:
        target = ctx.task.target
        argv = ["/bin/sh", "-c", target] if isinstance(target, str) else list(target)
        if ctx.task.launcher:
            argv = launch_prefix(ctx.task.launcher, ctx.task.resources) + argv
        with open(ctx.stdout_path, "ab") as out, open(ctx.stderr_path, "ab") as err:
            try:
                proc = procs.spawn(argv, cwd=ctx.workdir, env=task_env(ctx), stdout=out,
                                   stderr=err)
            except OSError as e:
                return Outcome(ok=False, exit_code=127, error=f"cannot start {argv[0]!r}: "
                               f"{e.strerror or e}")
        ctx.pids.append(proc.pid)
        try:
            code = await procs.wait(proc)
        except asyncio.CancelledError:
            await procs.terminate(proc)
            raise
        procs.kill_group(proc)  # nothing the command left behind outlives the task
        if code == 0:
            return Outcome(ok=True, exit_code=0)
        what = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Outcome(ok=False, exit_code=code, error=f"command failed ({what})")

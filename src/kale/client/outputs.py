"""A task's declared outputs, wherever its run ran: which files they are
(:func:`output_paths`, from the run interface's documents) and copying them here
(:func:`copy_outputs`, when they are on this machine's file system; a site copies them
over SSH instead).

Invariants: only what the task declared (``outputs:``) is copied, from the directory of
the attempt that made it (a reused task's files are in the run it reused); a file at the
destination is replaced whole (copied to a temporary name, then renamed), never left half
written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kale.errors import KaleError


def output_paths(source: Any, run_id: str, task: str) -> tuple[str, list[str]]:
    """``(task_dir, patterns)``: where the task's files are (as the run's host sees them)
    and its declared outputs (paths or globs inside that directory)."""
    run = source.status(run_id, tasks=False)["run"]
    detail = source.task(run["id"], task)
    spec = (source.workflow(run["id"]).get("tasks") or {}).get(task) or {}
    patterns = list(spec.get("outputs") or [])
    if not patterns:
        raise KaleError(f"task {task} of run {run['id']} declares no outputs (give it "
                        "`outputs:`; its logs are `kale logs`)")
    if detail["state"] != "SUCCEEDED":
        raise KaleError(f"task {task} of run {run['id']} is {detail['state']}: its outputs "
                        "are those of a task that succeeded")
    made_in = detail.get("reused_from") or run["id"]
    run_dir = str(run["run_dir"]).rstrip("/")
    if made_in != run["id"]:
        run_dir = f"{run_dir.rsplit('/', 1)[0]}/{made_in}"
    return f"{run_dir}/{task}", patterns


def copy_outputs(task_dir: str, patterns: list[str], dest: Path) -> list[Path]:
    """Copy the outputs ``patterns`` of ``task_dir`` (on this machine) into ``dest``;
    the paths made there (a directory output lands with its content)."""
    base = Path(task_dir)
    if not base.is_dir():
        raise KaleError(f"{base} is not on this machine (the run ran elsewhere: fetch "
                        "through its site, `--site NAME`)")
    dest.mkdir(parents=True, exist_ok=True)
    made = []
    for pattern in patterns:
        matches = sorted(base.glob(pattern.rstrip("/"))) if any(c in pattern for c in "*?[") \
            else [base / pattern.rstrip("/")]
        for path in matches:
            if not path.exists():
                raise KaleError(f"output {pattern!r} of {base} is gone")
            target = dest / path.name
            _copy_whole(path, target)
            made.append(target)
    return made


def _copy_whole(path: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.kale-tmp{os.getpid()}")
    if path.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(path, tmp, symlinks=True)
        if target.is_dir():
            shutil.rmtree(target)
    else:
        shutil.copy2(path, tmp)
    os.replace(tmp, target)

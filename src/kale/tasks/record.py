"""``kale.record(name, value)``: a task publishes a named value to downstream tasks.

Inside a task, records are appended to the file named by ``$KALE_RECORD_FILE`` (set by
Kale for every task kind, notebook kernels included). Outside a task, ``record`` keeps the
value in memory and returns it, so a notebook runs unchanged when opened by hand.

The file holds one frame per record, in the order they were made:

- from Python, a pickle of ``(name, value)`` (it starts with the pickle protocol byte,
  ``0x80``);
- from a shell, ``kale record NAME VALUE``: ``S`` NAME ``\\0`` VALUE ``\\0``, the text as
  typed. It is written by a small POSIX sh script that Kale puts first on every task's
  ``PATH`` (:func:`task_path`), so recording costs about a millisecond and needs no
  Python. VALUE is read when the records are read, by the rule of every value typed on
  the command line (:func:`kale.spec.values.parse_value`: ``3`` a number, ``true`` a bool,
  ``abc`` a string...). Values that look like JSON (``[``, ``{``, ``"``) and anything but
  ``kale record NAME VALUE`` go to the ``kale`` command itself, which checks them at once.
  Nothing a shell writes is ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import Any

from kale import serial

ENV = "KALE_RECORD_FILE"
_local: dict[str, Any] = {}
_SHELL = 0x53  # "S": a frame written by the kale shim
#: the folders holding the shim, per run directory, made by this process
_shims: dict[str, Path | None] = {}


def record(name: str, value: Any) -> Any:
    """Record ``value`` under ``name`` as part of the current task's result."""
    if not isinstance(name, str) or not name:
        raise ValueError("record(name, value): name must be a non-empty string")
    path = os.environ.get(ENV)
    if not path:
        _local[name] = value
        return value
    blob = serial.dumps((name, value))
    with open(path, "ab") as f:
        f.write(blob)
    return value


def add_tasks(workflow: Any) -> dict[str, Any]:
    """Add tasks to the run this task is part of: ``workflow`` is a :class:`kale.Workflow`
    (or its canonical dict) whose tasks may depend on each other and on tasks of the run
    that succeeded. Once this task succeeds, Kale validates them as any workflow (a
    problem fails this task, saying what) and runs them as ``THIS[name]``; this task
    ends when they have, and what waits for it waits for them too."""
    from kale.model.dynamic import ADDED

    data = workflow.to_dict(for_store=True) if hasattr(workflow, "to_dict") else workflow
    tasks = data.get("tasks", data) if isinstance(data, dict) else data
    record(ADDED, tasks)
    return dict(tasks) if isinstance(tasks, dict) else {}


def read_records(path: str | Path, base_dir: str | Path | None = None) -> dict[str, Any]:
    """All values recorded to ``path``; a later record of a name wins. Values whose
    classes live in modules beside the workflow are found through ``base_dir``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    return serial.importing_from(base_dir, lambda: _read_all(data))


def _read_all(data: bytes) -> dict[str, Any]:
    import io

    out: dict[str, Any] = {}
    f = io.BytesIO(data)
    pos = 0
    while pos < len(data):
        if data[pos] == _SHELL:
            name_end = data.find(b"\0", pos + 1)
            value_end = data.find(b"\0", name_end + 1) if name_end >= 0 else -1
            if value_end < 0:
                raise ValueError("the last `kale record` of the task was cut short")
            name = data[pos + 1:name_end].decode(errors="replace")
            text = data[name_end + 1:value_end].decode(errors="replace")
            out[name] = _shell_value(name, text)
            pos = value_end + 1
        else:
            f.seek(pos)
            name, value = pickle.load(f)
            out[name] = value
            pos = f.tell()
    return out


def _shell_value(name: str, text: str) -> Any:
    from kale.spec.values import parse_value

    try:
        return parse_value(text)
    except ValueError as e:
        raise ValueError(f"kale record {name}: {e}") from None


# -- `kale` on every task's PATH ----------------------------------------------------------

_SHIM = """#!/bin/sh
# Kale's `kale` command inside tasks, written by kale.tasks.record. `kale record NAME VALUE`
# appends to $KALE_RECORD_FILE right here, without starting Python; anything else (and
# values that look like JSON, which Kale checks at once) goes to Kale itself.
if [ "$#" -eq 3 ] && [ "$1" = record ] && [ -n "${KALE_RECORD_FILE:-}" ]; then
  case $2 in
    ''|-*) ;;
    *) case $3 in
         '['*|'{'*|'"'*) ;;
         *) printf 'S%s\\0%s\\0' "$2" "$3" >> "$KALE_RECORD_FILE" || exit 1
            exit 0 ;;
       esac ;;
  esac
fi
exec @KALE@ "$@"
"""


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def _kale_command() -> str:
    """How the shim runs Kale itself: the ``kale`` script installed with this Python (so
    usage messages name ``kale``), else this Python with ``-m kale.cli.main``."""
    import sysconfig

    schemes = [sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")]
    for scheme in dict.fromkeys(schemes):
        script = Path(sysconfig.get_path("scripts", scheme)) / "kale"
        if script.is_file() and os.access(script, os.X_OK):
            return _quote(str(script))
    return f"{_quote(sys.executable)} -m kale.cli.main"


def shim_text() -> str:
    """The ``kale`` script tasks find on their ``PATH``."""
    return _SHIM.replace("@KALE@", _kale_command())


def kale_bin(run_dir: str | Path) -> Path | None:
    """The folder of the ``kale`` shim for tasks of the run in ``run_dir`` (written on
    first use, once per process; named after its content, so processes running different
    Pythons on a shared file system each get their own). None if it cannot be written."""
    key = run_dir if isinstance(run_dir, str) else str(run_dir)
    if key in _shims:  # the common case, once per task: no Path made
        return _shims[key]
    run_dir = Path(key)
    if os.pathsep in key:  # it cannot be a PATH entry
        _shims[key] = None
        return None
    import hashlib

    text = shim_text()
    folder = run_dir / f".kale-bin-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    shim = folder / "kale"
    try:
        if not shim.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".kale.{os.getpid()}"
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, shim)  # whole, or not at all, for the tasks starting now
    except OSError as e:
        import logging

        logging.getLogger(__name__).warning("cannot write the kale command for tasks in "
                                            "%s: %s", folder, e)
        _shims[key] = None
        return None
    _shims[key] = folder
    return folder


def task_path(run_dir: str | Path, path: str | None) -> str | None:
    """``path`` (a ``PATH`` value) with the folder of Kale's ``kale`` command first, for a
    task of the run in ``run_dir``; None when that folder cannot be made."""
    folder = kale_bin(run_dir)
    if folder is None:
        return None
    return str(folder) + (os.pathsep + path if path else "")

"""Running an imported CWL document to its output object, as a ``cwl-runner`` does
(``kale cwl-runner``, and the conformance tests): a Kale run in this process (a home's
store, the local executor), then the output object read from the run's result and its
Files and Directories copied into an output directory.

The copy keeps the run's own files where Kale put them (a later run may reuse them);
the output object handed back names the copies.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from kale.cwl import files
from kale.cwl.importer import Imported
from kale.engine.runs import create_run, drive, make_engine
from kale.model.options import RunOptions
from kale.store import results
from kale.store.store import Store


class RunFailed(Exception):
    """The run did not succeed: ``message`` says which step and why."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


def execute(store: Store, home: Path, imported: Imported, *, force: bool = False,
            jobs: int | None = None) -> tuple[str, dict[str, Any]]:
    """Run the workflow in this process; its run id and output object. Raises
    :class:`RunFailed` when a step failed."""
    wf = imported.workflow
    rec = create_run(store, home, wf, RunOptions.of(force=force, jobs=jobs))
    state = drive(make_engine(store, rec, wf))
    if state.value != "SUCCEEDED":
        why = [f"{t.name}: {t.state.value}: {t.error or t.reason or ''}".rstrip(": ")
               for t in store.tasks(rec.id) if t.state.value != "SUCCEEDED"]
        raise RunFailed(rec.id, f"run {rec.id} {state.value}: " + "; ".join(why))
    out = results.decode(store.task(rec.id, imported.outputs_task), rec.base_dir)
    return rec.id, out if isinstance(out, dict) else {}


def copy_outputs(value: Any, outdir: Path) -> Any:
    """``value`` with every File and Directory copied into ``outdir`` (names kept; a
    second one of the same name gets ``_2`` before its extension)."""
    outdir.mkdir(parents=True, exist_ok=True)
    return _copy(value, outdir, set())


def _copy(value: Any, outdir: Path, used: set[str]) -> Any:
    if isinstance(value, list):
        return [_copy(v, outdir, used) for v in value]
    if not isinstance(value, dict):
        return value
    if not files.is_file_like(value) or "path" not in value:
        return {k: _copy(v, outdir, used) for k, v in value.items()}
    source = Path(value["path"])
    name = value.get("basename") or source.name
    (stem, ext), n = os.path.splitext(name), 2
    while name in used or ((outdir / name).exists()
                           and (outdir / name).resolve() != source.resolve()):
        name, n = f"{stem}_{n}{ext}", n + 1
    used.add(name)
    target = outdir / name
    if target.resolve() != source.resolve():
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copyfile(source, target)
    if value["class"] == "Directory":
        return {**value, "location": files.uri(target), "path": str(target),
                "basename": name, "listing": files.listing(target, deep=True)}
    out = {**value, "location": files.uri(target), "path": str(target), "basename": name,
           "dirname": str(outdir)}
    if value.get("secondaryFiles"):
        out["secondaryFiles"] = [_copy(s, outdir, used) for s in value["secondaryFiles"]]
    return out

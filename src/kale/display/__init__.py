"""Rich display of workflows and runs in Jupyter (markdown and HTML). Pure functions."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kale.model.sealed import SealedFunction

if TYPE_CHECKING:
    from kale.model.workflow import Task, Workflow
    from kale.store.store import RunRecord, TaskRecord

COLORS = {
    "PENDING": "#9e9e9e", "READY": "#64b5f6", "SUBMITTED": "#7986cb", "RUNNING": "#1e88e5",
    "SUSPENDED": "#90a4ae",
    "WAITING": "#ffb300", "RETRYING": "#fb8c00", "SUCCEEDED": "#43a047", "FAILED": "#e53935",
    "TIMEOUT": "#8e24aa", "CANCELLED": "#6d4c41", "SKIPPED": "#bdbdbd",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _target(t: Task) -> str:
    target = t.target
    if isinstance(target, list):
        return " ".join(target)
    if isinstance(target, SealedFunction):
        return f"{target.name}()"
    if callable(target):
        return f"{getattr(target, '__qualname__', target)}()"
    return str(target)


def workflow_markdown(wf: Workflow) -> str:
    lines = [f"**Workflow `{wf.name}`** — {len(wf.tasks)} tasks", ""]
    if wf.description:
        lines += [wf.description.strip(), ""]
    if wf.parameters:
        lines += ["Parameters: " + ", ".join(f"`{k}={v!r}`" for k, v in wf.parameters.items()),
                  ""]
    lines += ["| task | kind | runs | after | description |", "|---|---|---|---|---|"]
    for t in wf.tasks.values():
        desc = t.description.strip().splitlines()[0] if t.description.strip() else ""
        lines.append(f"| `{t.name}` | {t.kind} | `{_cell(_target(t))}` | "
                     f"{', '.join(t.upstream)} | {_cell(desc)} |")
    return "\n".join(lines)


def task_markdown(t: Task) -> str:
    lines = [f"**Task `{t.name}`** ({t.kind}): `{_cell(_target(t))}`", ""]
    if t.description:
        lines += [t.description.strip(), ""]
    facts = [("after", ", ".join(t.upstream)), ("parameters", ", ".join(
        f"`{k}={v}`" for k, v in t.parameters.items())), ("outputs", ", ".join(t.outputs)),
             ("retries", str(t.retries) if t.retries else ""),
             ("timeout", f"{t.timeout:g} s" if t.timeout else ""), ("tags", ", ".join(t.tags))]
    lines += [f"- {k}: {v}" for k, v in facts if v]
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _counts(tasks: Sequence[TaskRecord]) -> str:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items())


def run_markdown(run: RunRecord, tasks: Sequence[TaskRecord]) -> str:
    desc = run.spec.get("description", "")
    lines = [f"**Run `{run.id}`** of `{run.workflow}`: **{run.state.value}** "
             f"({_counts(tasks)})", ""]
    if desc:
        lines += [desc.strip(), ""]
    lines += ["| task | kind | state | attempts | duration | after | note |",
              "|---|---|---|---|---|---|---|"]
    specs = run.spec.get("tasks", {})
    for t in tasks:
        after = ", ".join(specs.get(t.name, {}).get("after", []))
        note = t.error or t.reason or ""
        lines.append(f"| `{t.name}` | {t.kind} | {t.state.value} | {t.attempts} | "
                     f"{duration(t.duration)} | {after} | {_cell(note)} |")
    return "\n".join(lines)


def run_html(run: RunRecord, tasks: Sequence[TaskRecord]) -> str:
    esc = html.escape
    specs = run.spec.get("tasks", {})
    rows = []
    for t in tasks:
        color = COLORS.get(t.state.value, "#000")
        after = ", ".join(specs.get(t.name, {}).get("after", []))
        note = t.error or t.reason or ""
        rows.append(
            f"<tr><td><code>{esc(t.name)}</code></td><td>{esc(t.kind)}</td>"
            f"<td><span style='color:{color};font-weight:bold'>{t.state.value}</span></td>"
            f"<td>{t.attempts}</td><td>{duration(t.duration)}</td><td>{esc(after)}</td>"
            f"<td>{esc(note)}</td></tr>")
    desc = run.spec.get("description", "")
    color = COLORS.get(run.state.value, "#000")
    return (
        f"<div class='kale-run'><b>Run <code>{esc(run.id)}</code></b> of "
        f"<code>{esc(run.workflow)}</code>: <b style='color:{color}'>{run.state.value}</b>"
        f" ({esc(_counts(tasks))})"
        + (f"<pre style='white-space:pre-wrap'>{esc(desc.strip())}</pre>" if desc else "")
        + "<table><thead><tr><th>task</th><th>kind</th><th>state</th><th>attempts</th>"
          "<th>duration</th><th>after</th><th>note</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>")

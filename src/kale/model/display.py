"""Rich display of workflows and runs in Jupyter (markdown and HTML), and the state colours
every view shares. Pure functions: a run is shown from its status document (the one
``kale status RUN --json`` prints) and its workflow's canonical dict."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kale.model.sealed import SealedFunction

if TYPE_CHECKING:
    from kale.model.workflow import Task, Workflow

Doc = Mapping[str, Any]

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


def _counts(tasks: Sequence[Doc]) -> str:
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t["state"]] = counts.get(t["state"], 0) + 1
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items())


def _after(spec: Doc, task: str) -> str:
    after = (spec.get("tasks") or {}).get(task, {}).get("after") or []
    return ", ".join([after] if isinstance(after, str) else after)


def run_markdown(status: Doc, spec: Doc) -> str:
    """A run as markdown, from its status document and its workflow's dict."""
    run, tasks = status["run"], status.get("tasks") or []
    desc = spec.get("description", "")
    lines = [f"**Run `{run['id']}`** of `{run['workflow']}`: **{run['state']}** "
             f"({_counts(tasks)})", ""]
    if desc:
        lines += [desc.strip(), ""]
    lines += ["| task | kind | state | attempts | duration | after | note |",
              "|---|---|---|---|---|---|---|"]
    for t in tasks:
        note = t.get("error") or t.get("reason") or ""
        lines.append(f"| `{t['name']}` | {t['kind']} | {t['state']} | {t['attempts']} | "
                     f"{duration(t.get('duration'))} | {_after(spec, t['name'])} | "
                     f"{_cell(note)} |")
    return "\n".join(lines)


def run_html(status: Doc, spec: Doc) -> str:
    """A run as HTML (a notebook's rich display), from the same documents."""
    esc = html.escape
    run, tasks = status["run"], status.get("tasks") or []
    rows = []
    for t in tasks:
        color = COLORS.get(t["state"], "#000")
        note = t.get("error") or t.get("reason") or ""
        rows.append(
            f"<tr><td><code>{esc(t['name'])}</code></td><td>{esc(t['kind'])}</td>"
            f"<td><span style='color:{color};font-weight:bold'>{t['state']}</span></td>"
            f"<td>{t['attempts']}</td><td>{duration(t.get('duration'))}</td>"
            f"<td>{esc(_after(spec, t['name']))}</td><td>{esc(note)}</td></tr>")
    desc = spec.get("description", "")
    color = COLORS.get(run["state"], "#000")
    return (
        f"<div class='kale-run'><b>Run <code>{esc(run['id'])}</code></b> of "
        f"<code>{esc(run['workflow'])}</code>: <b style='color:{color}'>{run['state']}</b>"
        f" ({esc(_counts(tasks))})"
        + (f"<pre style='white-space:pre-wrap'>{esc(desc.strip())}</pre>" if desc else "")
        + "<table><thead><tr><th>task</th><th>kind</th><th>state</th><th>attempts</th>"
          "<th>duration</th><th>after</th><th>note</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></div>")

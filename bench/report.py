"""Turning peer results into markdown tables (printed, and written to bench/results/).

A result is the JSON a peer printed: ``{"times": [...], "median": s, ...}``, or
``{"error": "..."}`` / ``{"skipped": "..."}``. The speed-up column is always
*peer time / Kale time*, so above 1 means Kale is faster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenarios import KALE, Peer, Scenario


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table with padded columns, readable as plain text too."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def sec(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def speedup(kale: dict[str, Any], peer: dict[str, Any], label: str, key: str = "median") -> str:
    if label == KALE:
        return "1 (ref)"
    if key not in kale or key not in peer or not kale[key]:
        return "—"
    return f"{peer[key] / kale[key]:.2f}x"


def failed(res: dict[str, Any]) -> str | None:
    if "error" in res:
        return f"error: {res['error']}"
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    return None


def runs(res: dict[str, Any]) -> str:
    return ", ".join(sec(t) for t in res["times"])


def _peer_rows(sc: Scenario, results: dict[str, dict[str, Any]], width: int,
               cells: Callable[[Peer, dict[str, Any]], list[str]]) -> list[list[str]]:
    """One row per peer: ``cells(peer, result)``, or the peer's error across the row."""
    rows = []
    for peer in sc.peers:
        res = results[peer.label]
        bad = failed(res)
        rows.append([peer.label, bad, *[""] * (width - 3), peer.note] if bad
                    else cells(peer, res))
    return rows


def _rate_rows(sc: Scenario, n: int, results: dict[str, dict[str, Any]]) -> str:
    per_hop = sc.layout == "hop"
    header = ["System", "median s", "ms/hop" if per_hop else "tasks/s", "Kale speed-up",
              "in-run s", "startup s", "first task s", "runs s", "notes"]
    kale = results.get(KALE, {})

    def cells(peer: Peer, res: dict[str, Any]) -> list[str]:
        med = res["median"]
        metric = f"{1000 * med / n:.3f}" if per_hop else f"{n / med:,.0f}"
        return [peer.label, sec(med), metric, speedup(kale, res, peer.label),
                sec(res.get("in_run")), sec(res.get("startup")),
                sec(res.get("first_task")), runs(res), peer.note]

    return table(header, _peer_rows(sc, results, len(header), cells))


def _notebook_rows(sc: Scenario, n: int, results: dict[str, dict[str, Any]]) -> str:
    header = ["System", "total s", "notebooks/s", "Kale speed-up", "per notebook median s",
              "per notebook max s", "first notebook s", "notes"]
    kale = results.get(KALE, {})

    def cells(peer: Peer, res: dict[str, Any]) -> list[str]:
        return [peer.label, sec(res["median"]), f"{n / res['median']:.1f}",
                speedup(kale, res, peer.label), sec(res["per_task_median"]),
                sec(res["per_task_max"]), sec(res.get("first_task")), peer.note]

    return table(header, _peer_rows(sc, results, len(header), cells))


STEP_TITLES = {
    "generate": "generate the YAML text (f-strings)",
    "load": "`kale.spec.load_workflow(path)` (parse + validate)",
    "build": "build in memory (`wf.python(...)` x n)",
    "validate": "`Workflow.validate()` + `order()`",
}


def _step_rows(sc: Scenario, n: int, results: dict[str, dict[str, Any]]) -> str:
    res = results[KALE]
    bad = failed(res)
    if bad:
        return table(["Step", "median s"], [["all", bad]])
    rows = []
    for key, title in STEP_TITLES.items():
        step = res["steps"][key]
        rows.append([title, failed(step) or sec(step["median"]),
                     "" if failed(step) else runs(step), step.get("note", "")])
    return table(["Step", "median s", "runs s", "notes"], rows)


LAYOUTS = {"rate": _rate_rows, "hop": _rate_rows, "notebook": _notebook_rows,
           "steps": _step_rows}


def section(index: int, sc: Scenario, n: int, repeat: int,
            results: dict[str, dict[str, Any]]) -> str:
    reps = f"median of {repeat} runs" if sc.repeat and repeat > 1 else "one run"
    parts = [f"### {index}. {sc.title}", "",
             sc.what.format(n=f"{n:,}") + f" {sc.timing}; {reps}.", "",
             LAYOUTS[sc.layout](sc, n, results)]
    if sc.target is not None:
        parts += ["", sc.target.verdict(results, n)]
    return "\n".join(parts)

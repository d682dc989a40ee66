"""Turning peer results into markdown tables (printed, and written to bench/results/).

A result is the JSON a peer printed: ``{"times": [...], "median": s, ...}``, or
``{"error": "..."}`` / ``{"skipped": "..."}``. The speed-up column is always
*peer time / Kale time*, so above 1 means Kale is faster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scenarios import KALE, ManagerScenario, Peer, Scenario


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


def cpu(res: dict[str, Any]) -> str:
    """CPU per task in the timed runs: the peer's own process + the processes below it."""
    if "cpu_own_us" not in res:
        return "—"
    return f"{res['cpu_own_us']:,.0f} + {res['cpu_below_us']:,.0f}"


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
              "in-run s", "startup s", "first task s", "CPU µs/task", "runs s", "notes"]
    kale = results.get(KALE, {})

    def cells(peer: Peer, res: dict[str, Any]) -> list[str]:
        med = res["median"]
        metric = f"{1000 * med / n:.3f}" if per_hop else f"{n / med:,.0f}"
        return [peer.label, sec(med), metric, speedup(kale, res, peer.label),
                sec(res.get("in_run")), sec(res.get("startup")),
                sec(res.get("first_task")), cpu(res), runs(res), peer.note]

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


# -- the manager service (bench/_manager.py) -----------------------------------------------
def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _manager_rows(sc: ManagerScenario, results: dict[str, dict[str, Any]], width: int,
                  cells: Callable[[dict[str, Any]], list[str]]) -> list[list[str]]:
    """One row per case that ran: label, ``cells(result)``, note; or its error."""
    rows = []
    for case in sc.cases:
        if case.label not in results:
            continue
        res = results[case.label]
        bad = failed(res)
        rows.append([case.label, bad, *[""] * (width - 3), case.note] if bad
                    else [case.label, *cells(res), case.note])
    return rows


def _verdict(sc: ManagerScenario, ok: bool, measured: str) -> str:
    return f"Target: {sc.target}: **{'met' if ok else 'NOT met'}** (measured {measured})"


def _throughput(sc: ManagerScenario, results: dict[str, dict[str, Any]],
                htex_rate: float | None) -> str:
    header = ["Setup", "s", "tasks/s", "vs Parsl HTEX", "status p50 ms", "p99 ms", "max ms",
              "requests", "submit s", "warm-up s", "notes"]

    def cells(res: dict[str, Any]) -> list[str]:
        vs = f"{res['tasks_per_s'] / htex_rate:.2f}x" if htex_rate else "—"
        return [sec(res["seconds"]), f"{res['tasks_per_s']:,.0f}", vs, ms(res.get("p50_ms")),
                ms(res.get("p99_ms")), ms(res.get("max_ms")),
                f"{res['requests']:,}" if "requests" in res else "—",
                sec(res["submit_s"]), sec(res["warmup_s"])]

    parts = [table(header, _manager_rows(sc, results, len(header), cells))]
    parts.append(f"Parsl HTEX in scenario 1 of this run: {htex_rate:,.0f} tasks/s." if htex_rate
                 else "Parsl HTEX: not measured in this run (scenario 1 did not run).")
    first = results.get(sc.cases[0].label, {})
    if first and not failed(first) and "p99_ms" in first:
        parts.append(_verdict(sc, first["tasks_per_s"] >= 1000 and first["p99_ms"] <= 50,
                              f"{first['tasks_per_s']:,.0f} tasks/s, p99 "
                              f"{first['p99_ms']:.1f} ms"))
    return "\n\n".join(parts)


def _memory(sc: ManagerScenario, results: dict[str, dict[str, Any]],
            _htex: float | None) -> str:
    header = ["System", "tasks", "run s", "tasks/s", "RSS before MB", "at end MB", "peak MB",
              "3 s later MB", "KB/task at end", "KB/task peak", "notes"]

    def cells(res: dict[str, Any]) -> list[str]:
        return [f"{res['n']:,}", sec(res["seconds"]), f"{res['tasks_per_s']:,.0f}",
                f"{res['rss_before_mb']:.1f}", f"{res['rss_end_mb']:.1f}",
                f"{res['rss_peak_mb']:.1f}", f"{res['rss_later_mb']:.1f}",
                f"{res['kb_per_task_end']:.2f}", f"{res['kb_per_task_peak']:.2f}"]

    rows = _manager_rows(sc, results, len(header), cells)
    for label, kb in (("Parsl HTEX interchange", "~2.6"), ("Dask scheduler", "~6.2")):
        rows.append([label, "", "", "", "", "", "", "", kb, "",
                     "the issue's figure; not measured in this run"])
    parts = [table(header, rows)]
    res = results.get(sc.cases[0].label, {})
    if res and not failed(res):
        parts.append(_verdict(sc, res["kb_per_task_end"] <= 3,
                              f"{res['kb_per_task_end']:.2f} KB/task"))
    return "\n\n".join(parts)


def _lost(sc: ManagerScenario, results: dict[str, dict[str, Any]],
          _htex: float | None) -> str:
    header = ["Setup", "kill to 2nd attempt s", "minus the timeout s",
              "1st attempt ended (lost) after s", "notes"]

    def cells(res: dict[str, Any]) -> list[str]:
        return [sec(res["seconds"]), f"{res['seconds'] - res['heartbeat']:+.2f}",
                sec(res.get("attempt1_ended_after_s"))]

    return table(header, _manager_rows(sc, results, len(header), cells))


def _resume(sc: ManagerScenario, results: dict[str, dict[str, Any]],
            _htex: float | None) -> str:
    header = ["System", "tasks", "killed at s", "succeeded at kill", "/health s",
              "`manager start` returns s", "progress s", "run SUCCEEDED s",
              "tasks with > 1 attempt", "notes"]

    def cells(res: dict[str, Any]) -> list[str]:
        return [f"{res['n']:,}", sec(res["killed_after_s"]), str(res["succeeded_at_kill"]),
                sec(res["health_s"]), sec(res["cli_start_s"]), sec(res["progress_s"]),
                sec(res["done_s"]), f"{res['tasks_over_1_attempt']} (max attempts "
                f"{res['max_attempts']})"]

    return table(header, _manager_rows(sc, results, len(header), cells))


MANAGER_LAYOUTS: dict[str, Callable[[ManagerScenario, dict[str, dict[str, Any]],
                                     float | None], str]] = {
    "throughput": _throughput, "memory": _memory, "lost": _lost, "resume": _resume}


def manager_section(index: int, sc: ManagerScenario, n: int | None,
                    results: dict[str, dict[str, Any]], htex_rate: float | None) -> str:
    what = sc.what.format(n=f"{n:,}" if n is not None else "N")
    return "\n".join([f"### {index}. {sc.title}", "", what, "",
                      MANAGER_LAYOUTS[sc.layout](sc, results, htex_rate)])

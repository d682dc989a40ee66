"""Groups of similar tasks, so a graph of 100,000 tasks is a few boxes. Pure functions.

The rule (what a scientist who wrote ``for i in range(10000): wf.shell(f"sim-{i}", ...)``
expects): tasks are *similar* when their names are the same text around different
numbers (``sim-0`` ... ``sim-9999``; ``c0-5`` ... ``c999-5``, the sixth step of 1,000
chains), they are of the same kind (shell, python, notebook, ...), sit in the same layer
of the graph, and wait for the same things, counting each group as one (``post-3`` after
``sim-3`` and ``post-4`` after ``sim-4`` both wait for "a sim"). At least
:data:`MIN_GROUP` of them make a group, drawn as one box named like shell brace
expansion, ``sim-{0..9999}`` (a number all members share stays as it is:
``c{0..999}-5``); fewer stay boxes of their own. Maps are groups already (their
members), so never part of one. The graph of groups is the workflow's graph with each
group as one task: 1,000 chains of 100 steps are a chain of 100 boxes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from kale.widgets.layout import layers

MIN_GROUP = 10  # similar tasks that make a group (fewer stay boxes of their own)
_DIGITS = re.compile(r"(\d+)")


def template(name: str) -> tuple[tuple[str, ...], tuple[int, ...]] | None:
    """The text around a name's numbers, and the numbers: ``(("c", "-", ""), (3, 5))`` for
    ``c3-5``; None for a name without a number."""
    parts = _DIGITS.split(name)
    if len(parts) == 1:
        return None
    return tuple(parts[0::2]), tuple(map(int, parts[1::2]))


def sort_key(name: str) -> tuple[tuple[int, ...], str]:
    """How the members of a group sort: by their numbers (``sim-2`` before ``sim-10``)."""
    t = template(name)
    return (t[1] if t else (), name)


def _label(text: tuple[str, ...], numbers: list[tuple[int, ...]]) -> str:
    """``c{0..999}-5``: each number the members share as it is, else its range."""
    out = [text[0]]
    for i, after in enumerate(text[1:]):
        low, high = min(n[i] for n in numbers), max(n[i] for n in numbers)
        out.append(str(low) if low == high else f"{{{low}..{high}}}")
        out.append(after)
    return "".join(out)


def similar(upstream: Mapping[str, Sequence[str]], kinds: Mapping[str, str] | None = None,
            exclude: set[str] | frozenset[str] = frozenset(),
            least: int = MIN_GROUP) -> dict[str, str]:
    """task -> the name of its group, for the tasks that are in one (see the module).
    Linear in tasks and edges: one pass, layer by layer (a task's upstream groups are
    known before its own layer is grouped)."""
    kinds = kinds or {}
    group: dict[str, str] = {}
    used: set[str] = set(upstream)
    for row in layers(upstream):
        keyed: dict[tuple[tuple[str, ...], str, tuple[str, ...]],
                   list[tuple[tuple[int, ...], str]]] = {}
        for name in row:
            t = template(name)
            if t is None or name in exclude:
                continue
            before = upstream[name]
            ups = (group.get(before[0], before[0]),) if len(before) == 1 else tuple(
                sorted({group.get(u, u) for u in before if u in upstream}))
            keyed.setdefault((t[0], kinds.get(name, ""), ups), []).append((t[1], name))
        for key, members in keyed.items():
            if len(members) < least:
                continue
            label = base = _label(key[0], [n for n, _ in members])
            k = 2
            while label in used:  # two groups of one name (other kinds, or a task's name)
                label, k = f"{base}#{k}", k + 1
            used.add(label)
            for _, name in members:
                group[name] = label
    return group


def collapse(upstream: Mapping[str, Sequence[str]],
             group: Mapping[str, str]) -> dict[str, list[str]]:
    """The graph with each group as one task: what each box waits for (each once)."""
    out: dict[str, dict[str, None]] = {}  # (a dict: an ordered set)
    for name, ups in upstream.items():
        box = group.get(name, name)
        if box != name and box in out:
            continue  # a group's members all wait for the same boxes: the first says it
        mine = out.setdefault(box, {})
        for u in ups:
            if u in upstream:
                mine[group.get(u, u)] = None
    return {box: list(ups) for box, ups in out.items()}


def members_of(group: Mapping[str, str]) -> dict[str, list[str]]:
    """group -> its tasks, in the workflow's order."""
    out: dict[str, list[str]] = {}
    for name, g in group.items():
        out.setdefault(g, []).append(name)
    return out

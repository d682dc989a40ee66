"""Lay a workflow out top-down and draw it as SVG. Pure functions: the live
:class:`~kale.widgets.DagView` shows this same drawing and recolours its nodes as states
change; :func:`dag_svg` alone is the static picture for a report."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kale.model.dag import topological
from kale.model.display import COLORS

NODE_W, NODE_H = 150, 32        # a node's box
GAP_X, GAP_Y = 18, 46           # between boxes side by side, between layers
MARGIN = 12
MAX_ROW = 40                    # a layer wider than this wraps onto more rows


@dataclass
class Layout:
    """Where each task's box goes (its top-left corner), and the drawing's size."""

    pos: dict[str, tuple[int, int]] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    width: int = 0
    height: int = 0


def layers(upstream: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tasks by depth: a task sits one layer below the deepest task it waits for."""
    depth: dict[str, int] = {}
    for name, ups in upstream.items():  # declared after what they wait for: one pass
        d = -1
        for u in ups:
            du = depth.get(u)
            if du is None:
                if u in upstream:
                    break  # (declared before it: sort them first)
            elif du > d:
                d = du
        else:
            depth[name] = d + 1
            continue
        depth = {}
        break
    if len(depth) != len(upstream):
        for name in topological(upstream):
            depth[name] = 1 + max((depth[u] for u in upstream[name] if u in depth), default=-1)
    out: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for name in upstream:  # the workflow's own order within a layer, to start with
        out[depth[name]].append(name)
    return out


def layout(upstream: Mapping[str, Sequence[str]]) -> Layout:
    """A layered (Sugiyama-style) layout: layers by depth, then each layer ordered by
    the mean position of the tasks it waits for, so edges cross less."""
    rows = layers(upstream)
    rank: dict[str, float] = {}
    for i, row in enumerate(rows):
        if i:
            row.sort(key=lambda n: (sum(rank[u] for u in upstream[n] if u in rank)
                                    / max(1, sum(1 for u in upstream[n] if u in rank))))
        for j, n in enumerate(row):
            rank[n] = j / max(1, len(row) - 1) if len(row) > 1 else 0.5
    wrapped = [row[k:k + MAX_ROW] for row in rows for k in range(0, max(1, len(row)), MAX_ROW)]
    widest = max((len(r) for r in wrapped), default=0)
    width = 2 * MARGIN + widest * NODE_W + max(0, widest - 1) * GAP_X
    out = Layout(width=width, height=2 * MARGIN + len(wrapped) * NODE_H
                 + max(0, len(wrapped) - 1) * GAP_Y)
    for i, row in enumerate(wrapped):
        span = len(row) * NODE_W + max(0, len(row) - 1) * GAP_X
        x0 = (width - span) // 2
        for j, n in enumerate(row):
            out.pos[n] = (x0 + j * (NODE_W + GAP_X), MARGIN + i * (NODE_H + GAP_Y))
    out.edges = [(u, n) for n, ups in upstream.items() for u in ups if u in out.pos]
    return out


def _label(name: str, limit: int = 20) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


#: the order of a map's states in its bar: done first, then what is going on, then waiting
BAR_ORDER = ("SUCCEEDED", "FAILED", "TIMEOUT", "CANCELLED", "SKIPPED", "RUNNING", "SUBMITTED",
             "RETRYING", "WAITING", "SUSPENDED", "READY", "PENDING")
BAR_X, BAR_Y, BAR_H = 6, 25, 4  # a map's bar inside its box, along its bottom
DARK_TEXT = ("PENDING", "SKIPPED", "READY")  # states whose fill takes dark text
TIMES, EN_DASH = "\u00d7", "\u2013"  # a map's size ("analyse x1000"), its skipped members


def map_summary(counts: Mapping[str, int]) -> str:
    """A map's counts in a few characters: ``997 ✓ 3 ✗ 0 ▶`` (succeeded; failed, timed out
    or cancelled; running or submitted), then ``n …`` waiting and ``n`` and an en dash
    skipped, if any.
    (``static/dag.js`` says the same in the browser.)"""
    done = counts.get("SUCCEEDED", 0)
    bad = sum(counts.get(s, 0) for s in ("FAILED", "TIMEOUT", "CANCELLED"))
    active = sum(counts.get(s, 0) for s in ("RUNNING", "SUBMITTED"))
    skipped = counts.get("SKIPPED", 0)
    waiting = sum(counts.values()) - done - bad - active - skipped
    text = f"{done} ✓ {bad} ✗ {active} ▶"
    text += f" {waiting} …" if waiting else ""
    return text + (f" {skipped} {EN_DASH}" if skipped else "")


def map_label(name: str, total: int | None, kind: str = "map") -> str:
    """A map's box says it is one: ``analyse x1000`` (with a multiplication sign; ``x…``
    before it has members), and so does a group of similar tasks (``sim-{0..99} x100``);
    a task that added tasks, how many: ``plan +3``."""
    sign = "+" if kind == "added" else TIMES  # (a map, or a group of similar tasks)
    return f"{_label(name, 14)} {sign}{'…' if total is None else total}"


def bar_segments(counts: Mapping[str, int], width: float,
                 least: float = 2.0) -> list[tuple[str, float, float]]:
    """``(state, x, width)`` of each state's part of a map's bar, in :data:`BAR_ORDER`;
    a state any member is in is at least ``least`` wide (one failure in 10,000 shows),
    what that takes coming off the widest part."""
    total = sum(counts.values())
    order = sorted((s for s in counts if counts[s] > 0), key=lambda s: (*BAR_ORDER, s).index(s))
    if not total:
        return []
    widths = {s: max(least, width * counts[s] / total) for s in order}
    widest = max(order, key=lambda s: widths[s])
    widths[widest] = max(least, widths[widest] - (sum(widths.values()) - width))
    out, x = [], 0.0
    for state in order:
        out.append((state, x, widths[state]))
        x += widths[state]
    return out


def dag_svg(upstream: Mapping[str, Sequence[str]], states: Mapping[str, str] | None = None,
            *, kinds: Mapping[str, str] | None = None, title: str = "",
            colors: Mapping[str, str] = COLORS,
            maps: Mapping[str, Mapping[str, Any]] | None = None,
            conditions: Mapping[str, str] | None = None) -> str:
    """The workflow as an SVG document: one box per task, filled with its state's colour
    (PENDING when it has none), with an arrow from each task to those that wait for it.
    Each box is a ``<g class="kale-node" data-task=NAME data-state=STATE>`` whose
    ``rect.kale-box`` is the box and ``text.kale-label`` its name.

    A map (a name in ``maps``, with ``{"total": members or None, "counts": {state: n}}``)
    is one box, drawn as a stack, saying ``NAME xTOTAL``, with a bar of its members'
    states (``g.kale-map-bar``) and their counts (``text.kale-map-count``): never a box
    per member. (A task that added tasks, ``"kind": "added"``, is drawn so too, saying
    ``NAME +TOTAL``.) A task in ``conditions`` (skipped because a condition was false: no
    failure) has a dashed, paler box, and the reason in its tooltip."""
    states, kinds, maps = states or {}, kinds or {}, maps or {}
    lay = layout(upstream)
    top = 22 if title else 0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="kale-dag-svg" '
             f'width="{lay.width}" height="{lay.height + top}" '
             f'viewBox="0 0 {lay.width} {lay.height + top}" font-family="sans-serif">',
             '<defs><marker id="kale-arrow" viewBox="0 0 8 8" refX="8" refY="4" '
             'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z" '
             'fill="#888"/></marker></defs>',
             '<rect width="100%" height="100%" fill="white"/>']
    if title:
        parts.append(f'<text x="{MARGIN}" y="16" font-size="13" font-weight="bold">'
                     f'{html.escape(title)}</text>')
    parts.append('<g class="kale-edges" fill="none" stroke="#888" stroke-width="1.2">')
    for u, d in lay.edges:
        (x1, y1), (x2, y2) = lay.pos[u], lay.pos[d]
        ax, ay, bx, by = x1 + NODE_W / 2, y1 + NODE_H + top, x2 + NODE_W / 2, y2 + top
        mid = (ay + by) / 2
        parts.append(f'<path d="M{ax:g},{ay:g}C{ax:g},{mid:g} {bx:g},{mid:g} {bx:g},{by:g}" '
                     'marker-end="url(#kale-arrow)"/>')
    parts.append("</g>")
    for name, (x, y) in lay.pos.items():
        parts.append(_node(name, x, y + top, states.get(name, "PENDING"), kinds.get(name, ""),
                           colors, maps.get(name) if name in maps else None,
                           (conditions or {}).get(name)))
    parts.append("</svg>")
    return "".join(parts)


def _node(name: str, x: int, y: int, state: str, kind: str, colors: Mapping[str, str],
          group: Mapping[str, Any] | None, condition: str | None) -> str:
    """One task's box, where it goes."""
    cls = "kale-node" + (" kale-map" if group is not None else "") \
        + (" kale-cond" if condition else "")
    return (f'<g class="{cls}" data-task="{html.escape(name, quote=True)}" '
            f'data-state="{state}" transform="translate({x},{y})">'
            f'{node_inner(name, state, kind, colors, group, condition)}</g>')


def node_inner(name: str, state: str, kind: str, colors: Mapping[str, str] = COLORS,
               group: Mapping[str, Any] | None = None, condition: str | None = None) -> str:
    """What is inside a task's ``<g>``: its tooltip, box and label; a map's also its
    stack, bar and counts (the live view replaces a map's with this as they change)."""
    fill = colors.get(state, "#9e9e9e")
    text = "#222" if state in DARK_TEXT else "#fff"
    tip = f"{name} ({kind}) {state}" + (f": {condition}" if condition else "")
    dash = ' stroke-dasharray="4 3" fill-opacity="0.45"' if condition else ""
    box = (f'<rect class="kale-box" width="{NODE_W}" height="{NODE_H}" rx="6" '
           f'fill="{fill}" stroke="#555" stroke-width="1"{dash}/>')
    if group is None:
        return (f'<title>{html.escape(tip)}</title>{box}'
                f'<text class="kale-label" x="{NODE_W / 2:g}" y="{NODE_H / 2 + 4:g}" '
                f'text-anchor="middle" font-size="12" fill="{text}">'
                f'{html.escape(_label(name))}</text>')
    counts: Mapping[str, int] = group.get("counts") or {}
    total = group.get("total")
    kind = str(group.get("kind") or "map")
    size = total if total is not None else "…"
    tip += {"map": f" · a map of {size}: ", "similar": f" · {size} similar tasks: "}.get(
        kind, f" · added {size} tasks: ") + (
        ", ".join(f"{n} {s}" for s, n in counts.items()) or "no members yet")
    out = [f'<rect class="kale-stack" x="{off}" y="{off}" width="{NODE_W}" height="{NODE_H}" '
           'rx="6" fill="#fff" stroke="#777" stroke-width="1"/>' for off in (4, 2)]
    out.append(f'<title>{html.escape(tip)}</title>{box}'
               f'<text class="kale-label" x="{NODE_W / 2:g}" y="11.5" text-anchor="middle" '
               f'font-size="11" fill="{text}">{html.escape(map_label(name, total, kind))}</text>')
    width = NODE_W - 2 * BAR_X
    out.append(f'<g class="kale-map-bar" transform="translate({BAR_X},{BAR_Y})">'
               f'<rect class="kale-map-track" width="{width}" height="{BAR_H}" stroke="#555" '
               'stroke-width="0.5" fill="#fff"/>')
    for s, sx, sw in bar_segments(counts, width):
        out.append(f'<rect data-state="{s}" data-count="{counts[s]}" x="{sx:.2f}" '
                   f'width="{sw:.2f}" height="{BAR_H}" fill="{colors.get(s, "#9e9e9e")}"/>')
    out.append(f'</g><text class="kale-map-count" x="{NODE_W / 2:g}" y="22" '
               f'text-anchor="middle" font-size="9.5" fill="{text}">'
               f'{html.escape(map_summary(counts)) if total is not None else ""}</text>')
    return "".join(out)


def svg_to_png(svg: str, path: str, scale: float = 2.0) -> None:
    """Rasterise an SVG document to a PNG file (needs CairoSVG: ``pip install cairosvg``)."""
    try:
        import cairosvg
    except ImportError as e:
        from kale.errors import KaleError

        raise KaleError("PNG output needs CairoSVG (pip install cairosvg) and the cairo "
                        "library; SVG output needs nothing") from e
    cairosvg.svg2png(bytestring=svg.encode(), write_to=path, scale=scale)

"""Lay a workflow out top-down and draw it as SVG. Pure functions: the live
:class:`~kale.widgets.DagView` shows this same drawing and recolours its nodes as states
change; :func:`dag_svg` alone is the static picture for a report."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


def dag_svg(upstream: Mapping[str, Sequence[str]], states: Mapping[str, str] | None = None,
            *, kinds: Mapping[str, str] | None = None, title: str = "",
            colors: Mapping[str, str] = COLORS) -> str:
    """The workflow as an SVG document: one box per task, filled with its state's colour
    (PENDING when it has none), with an arrow from each task to those that wait for it.
    Each box is a ``<g class="kale-node" data-task=NAME data-state=STATE>``."""
    states, kinds = states or {}, kinds or {}
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
        state = states.get(name, "PENDING")
        fill = colors.get(state, "#9e9e9e")
        text = "#fff" if state not in ("PENDING", "SKIPPED", "READY") else "#222"
        esc = html.escape(name, quote=True)
        kind = html.escape(kinds.get(name, ""))
        parts.append(
            f'<g class="kale-node" data-task="{esc}" data-state="{state}" '
            f'transform="translate({x},{y + top})"><title>{esc} ({kind}) {state}</title>'
            f'<rect width="{NODE_W}" height="{NODE_H}" rx="6" fill="{fill}" '
            f'stroke="#555" stroke-width="1"/>'
            f'<text x="{NODE_W / 2:g}" y="{NODE_H / 2 + 4:g}" text-anchor="middle" '
            f'font-size="12" fill="{text}">{html.escape(_label(name))}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def svg_to_png(svg: str, path: str, scale: float = 2.0) -> None:
    """Rasterise an SVG document to a PNG file (needs CairoSVG: ``pip install cairosvg``)."""
    try:
        import cairosvg
    except ImportError as e:
        from kale.errors import KaleError

        raise KaleError("PNG output needs CairoSVG (pip install cairosvg) and the cairo "
                        "library; SVG output needs nothing") from e
    cairosvg.svg2png(bytestring=svg.encode(), write_to=path, scale=scale)

"""Graph helpers over ``{task: [upstream tasks]}`` mappings. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def topological(upstream: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn's algorithm; keeps declaration order among independent tasks.
    Raises ValueError on a cycle (use :func:`find_cycle` to name it)."""
    deps = {n: [d for d in ds if d in upstream] for n, ds in upstream.items()}
    remaining = {n: len(ds) for n, ds in deps.items()}
    down = downstream_map(deps)
    ready = [n for n in deps if remaining[n] == 0]
    out: list[str] = []
    i = 0
    while i < len(ready):
        n = ready[i]
        i += 1
        out.append(n)
        for m in down[n]:
            remaining[m] -= 1
            if remaining[m] == 0:
                ready.append(m)
    if len(out) != len(deps):
        raise ValueError("dependency cycle")
    return out


def downstream_map(upstream: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    down: dict[str, list[str]] = {n: [] for n in upstream}
    for n, ds in upstream.items():
        for d in ds:
            if d in down:
                down[d].append(n)
    return down


def find_cycle(upstream: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as ``[a, b, c, a]`` (a waits for b ... waits for a), or None."""
    if _in_order(upstream):
        return None
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(upstream, WHITE)
    for root in upstream:
        if color[root] != WHITE:
            continue
        stack: list[tuple[str, list[str]]] = [(root, [d for d in upstream[root] if d in color])]
        path = [root]
        color[root] = GREY
        while stack:
            node, todo = stack[-1]
            if todo:
                nxt = todo.pop()
                if color[nxt] == GREY:
                    i = path.index(nxt)
                    return [*path[i:], nxt]
                if color[nxt] == WHITE:
                    color[nxt] = GREY
                    path.append(nxt)
                    stack.append((nxt, [d for d in upstream[nxt] if d in color]))
            else:
                color[node] = BLACK
                stack.pop()
                path.pop()
    return None


def _in_order(upstream: Mapping[str, Iterable[str]]) -> bool:
    """Whether every node comes after what it waits for (then there is no cycle): how
    most files and programs list their tasks, checked at the speed of set operations."""
    seen: set[str] = set()
    for n, ds in upstream.items():
        if not seen.issuperset(ds) and any(d in upstream and d not in seen for d in ds):
            return False
        seen.add(n)
    return True


def ancestors(upstream: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        n = todo.pop()
        for d in upstream.get(n, ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def descendants(upstream: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    return ancestors(downstream_map(upstream), start)

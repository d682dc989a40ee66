"""The layers of docs/architecture.md, checked against the code: every ``import`` of a Kale
module (at module level, inside functions, under TYPE_CHECKING) goes from a layer to the
same layer or one above it in the table, except the crossings listed in ``KNOWN`` below,
each with why it is there. A new crossing, or a known one that is gone (then take it off
the list), fails this test; so does any import cycle among modules outside ``KNOWN``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: docs/architecture.md's table, top (imported by everything) to bottom
LAYERS = [
    ("base", ("kale.errors", "kale.config", "kale.tls", "kale.serial", "kale.procfs",
              "kale.plugins", "kale._lazy")),
    ("model", ("kale.model",)),
    ("spec", ("kale.spec",)),
    ("store", ("kale.store",)),
    ("transfers", ("kale.transfers",)),  # copies between sites: base layer and stdlib only
    ("tasks", ("kale.tasks",)),
    ("executors", ("kale.executors",)),
    ("batch", ("kale.batch",)),
    ("engine", ("kale.engine",)),
    ("cwl", ("kale.cwl",)),  # CWL in and out: model, spec, and the task runners for export
    ("client", ("kale.client.local", "kale.client.run", "kale.client")),
    ("kernels", ("kale.kernels",)),
    ("worker", ("kale.worker",)),
    ("manager", ("kale.manager",)),
    ("client (remote)", ("kale.client.remote",)),
    ("sites", ("kale.sites",)),  # other systems over SSH: a third source of runs
    # the faces: every process's entry point (the CLI, `python -m kale.worker`, the
    # provisioner JupyterLab loads to attach a notebook to a task's kernel)
    ("faces", ("kale.cli", "kale.worker.__main__", "kale.kernels.provisioner")),
    ("widgets", ("kale.widgets",)),
    ("facade", ("kale",)),  # `import kale`: names every layer lazily
]

#: crossings that are known and not yet cut (issue 14 cuts them): importer -> imported
KNOWN: dict[tuple[str, str], str] = {
}

#: imports within one layer that close a cycle, known and not yet cut
KNOWN_CYCLES: dict[tuple[str, str], str] = {
}


def _layer(module: str) -> int:
    best, where = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, where = len(p), i
    assert where >= 0, f"{module} is in no layer of the table"
    return where


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "kale").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path, known: set[str], typing: bool = True) -> set[str]:
    """The Kale modules ``module`` imports, anywhere in its file (``typing``: also those
    imported only for type checking, under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    skip: set[int] = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for b in node.body for n in ast.walk(b))

    def add(name: str) -> None:
        while name and name not in known:  # `from kale.x import y`: y may be a name
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "kale" or alias.name.startswith("kale."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "kale" and not target.startswith("kale."):
                continue
            for alias in node.names:
                add(f"{target}.{alias.name}")
    return found


def _graph(typing: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules), typing) for m, p in modules.items()}


def test_every_import_goes_up_the_table_or_is_a_known_crossing() -> None:
    graph = _graph()
    crossings = {(a, b) for a, targets in graph.items() for b in targets
                 if _layer(b) > _layer(a)}
    new = sorted(crossings - set(KNOWN))
    assert not new, "imports against the layers of docs/architecture.md:\n" + "\n".join(
        f"  {a} ({LAYERS[_layer(a)][0]}) -> {b} ({LAYERS[_layer(b)][0]})" for a, b in new)
    gone = sorted(set(KNOWN) - crossings)
    assert not gone, f"crossings cut (take them off KNOWN): {gone}"


def test_no_import_cycle_outside_the_known_crossings() -> None:
    """Imports that run (type-checking-only ones cannot make a cycle at run time)."""
    graph = _graph(typing=False)
    for a, b in [*KNOWN, *KNOWN_CYCLES]:
        graph[a].discard(b)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"

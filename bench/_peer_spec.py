"""Large definitions: ``python bench/_peer_spec.py spec --n N``.

A workflow of N Python tasks in 100 independent chains (task i waits for task i-100):
the time to generate it as YAML text, to load and validate that file with
``kale.spec.load_workflow``, to build it in memory, and to ``validate()`` + ``order()`` it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from _common import main, parse_args, result, timed
from kale import Workflow

WIDTH = 100


def yaml_text(n: int) -> str:
    lines = ["name: bench-spec", "tasks:"]
    for i in range(n):
        lines.append(f"  t{i}:")
        lines.append("    python: noops:noop")
        if i >= WIDTH:
            lines.append(f"    after: [t{i - WIDTH}]")
    return "\n".join(lines) + "\n"


def build(n: int) -> Workflow:
    wf = Workflow("bench-spec", base_dir=Path(__file__).parent)
    for i in range(n):
        wf.python("noops:noop", name=f"t{i}", after=[f"t{i - WIDTH}"] if i >= WIDTH else [])
    return wf


def load(path: Path, n: int, repeat: int) -> dict[str, Any]:
    try:
        from kale.spec import load_workflow
    except ImportError:
        return {"skipped": "kale.spec.load_workflow is not available yet"}

    def once() -> None:
        wf = load_workflow(path)
        if len(wf) != n:
            raise RuntimeError(f"loaded {len(wf)} tasks, expected {n}")

    return result([timed(once) for _ in range(repeat)])


def run() -> dict[str, Any]:
    args = parse_args(["spec"])
    n, repeat = args.n, args.repeat
    generate = [timed(lambda: yaml_text(n)) for _ in range(repeat)]
    path = Path(tempfile.mkdtemp(prefix="kale-spec-")) / "wf.yaml"
    path.write_text(yaml_text(n))
    built = [timed(lambda: build(n)) for _ in range(repeat)]
    wf = build(n)
    check = [timed(lambda: (wf.validate(), wf.order())) for _ in range(repeat)]
    if len(wf.order()) != n:
        raise RuntimeError("order() lost tasks")
    return {"steps": {
        "generate": result(generate, note=f"{path.stat().st_size // 1024} KiB of YAML"),
        "load": load(path, n, repeat),
        "build": result(built),
        "validate": result(check),
    }}


if __name__ == "__main__":
    main(run)

"""Time loading and validating a large workflow file (default: 10,000 tasks, ~50,000 lines).

    python bench/bench_spec_load.py [--tasks N] [--repeat R]

Prints the best of R runs for: reading the YAML (fast reader), the complete reader
(libyaml through PyYAML) for comparison, Workflow.from_dict, and load_workflow in total.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kale.model.workflow import Workflow
from kale.spec import load_workflow
from kale.spec.composer import parse_full
from kale.spec.fastparse import parse_fast


def generate(tasks: int) -> str:
    lines = ["name: big", "description: |", "  # Big", "  A generated workflow.",
             "parameters: {n: 3, scale: 1.5}", "tasks:"]
    for i in range(tasks):
        lines.append(f"  t{i}:")
        if i % 2:
            lines.append(f"    shell: echo {i} > out{i}.txt")
        else:
            lines.append(f"    python: mymod.sub:func{i % 7}")
        lines.append(f'    parameters: {{n: {i}, x: "${{params.n}}", y: [1, 2.5, three]}}')
        if i:
            lines.append(f"    after: [t{i - 1}" + (f", t{i // 2}]" if i > 2 else "]"))
        lines.append(f"    outputs: [out{i}.txt]")
    return "\n".join(lines) + "\n"


def best(repeat: int, func: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text = generate(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(text)
        data = parse_fast(text).data
        wf = load_workflow(path)
        assert len(wf) == args.tasks
        print(f"{args.tasks} tasks, {text.count(chr(10))} lines, {len(text) / 1e6:.1f} MB")
        print(f"  fast reader          {best(args.repeat, lambda: parse_fast(text)):.3f} s")
        print(f"  complete reader      {best(1, lambda: parse_full(text)):.3f} s (libyaml)")
        print(f"  Workflow.from_dict   {best(args.repeat, lambda: Workflow.from_dict(data)):.3f} s")
        print(f"  load_workflow total  {best(args.repeat, lambda: load_workflow(path)):.3f} s")


if __name__ == "__main__":
    main()

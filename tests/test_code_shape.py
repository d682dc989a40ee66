"""The shape of the code (CONTRIBUTING.md, "The shape of the code"), checked over the
source of ``src/kale`` with :mod:`ast` (nothing of Kale is imported):

- every module has a docstring (its job);
- every public class (a name without a leading underscore, nested ones included) has a
  docstring: what it is for, what it promises, which thread or event loop calls it;
- no function or method is longer than :data:`MAX_LINES` lines, from its ``def`` to its
  last line (decorators not counted), unless the line just above it (above its first
  decorator, if any) is a comment ``# long: WHY`` saying why it is better whole.

Each failure names ``file:line`` and the module, class or function, so it can be fixed
where it is.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kale"
MAX_LINES = 80
LONG = "# long:"

Function = ast.FunctionDef | ast.AsyncFunctionDef


@functools.cache
def _modules() -> tuple[tuple[str, ast.Module, tuple[str, ...]], ...]:
    """``(path relative to the repository, tree, lines)`` of every module of src/kale."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        out.append((path.relative_to(ROOT).as_posix(), ast.parse(text, str(path)),
                    tuple(text.splitlines())))
    return tuple(out)


def _qualified(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    """Every class and function of ``tree`` with its dotted name (``Outer.inner``)."""
    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, child
                yield from walk(child, name + ".")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def missing_module_docstrings() -> list[str]:
    return [f"{path}:1 module {path} has no docstring"
            for path, tree, _ in _modules() if ast.get_docstring(tree) is None]


def missing_class_docstrings() -> list[str]:
    return [f"{path}:{node.lineno} class {name} has no docstring"
            for path, tree, _ in _modules() for name, node in _qualified(tree)
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
            and ast.get_docstring(node) is None]


def long_functions(path: str, tree: ast.Module, lines: tuple[str, ...]) -> list[str]:
    """The functions of one module over :data:`MAX_LINES` lines without a ``# long:``
    comment (with a reason) on the line above them."""
    out = []
    for name, node in _qualified(tree):
        if not isinstance(node, Function):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_LINES:
            continue
        first = min([d.lineno for d in node.decorator_list] + [node.lineno])
        above = lines[first - 2].strip() if first >= 2 else ""
        if above.startswith(LONG) and above[len(LONG):].strip():
            continue
        out.append(f"{path}:{node.lineno} {name} is {length} lines (at most {MAX_LINES}): "
                   f"split it, or say why it is better whole in a '{LONG} ...' comment on "
                   "the line above it")
    return out


def test_every_module_has_a_docstring() -> None:
    missing = missing_module_docstrings()
    assert not missing, ("modules without a docstring (say what the module is for):\n"
                         + "\n".join(missing))


def test_every_public_class_has_a_docstring() -> None:
    missing = missing_class_docstrings()
    assert not missing, (
        "public classes without a docstring (say what the class is for, what it promises, "
        "and which thread or event loop calls it):\n" + "\n".join(missing))


def test_no_function_is_too_long() -> None:
    found = [line for module in _modules() for line in long_functions(*module)]
    assert not found, "functions too long:\n" + "\n".join(found)


def test_the_length_rule_itself() -> None:
    """The rule as it reads: decorators do not count, ``# long:`` needs a reason and must be
    right above the function (or its first decorator)."""
    body = "\n".join(f"    x = {i}" for i in range(MAX_LINES))

    def source(above: str, decorated: bool = False) -> tuple[ast.Module, tuple[str, ...]]:
        text = f"{above}\n" + ("@decorator\n" if decorated else "") + f"def f():\n{body}\n"
        return ast.parse(text), tuple(text.splitlines())

    fits = "\n".join(f"    x = {i}" for i in range(MAX_LINES - 1))
    short = f"@a\n@b\ndef f():\n{fits}\n"  # 80 lines from def: fine, decorators aside
    assert long_functions("m.py", ast.parse(short), tuple(short.splitlines())) == []
    assert long_functions("m.py", *source("# long: one table, read top to bottom")) == []
    assert long_functions("m.py", *source("# long: a reason", decorated=True)) == []
    for above in ("", "# long:", "# a comment", "# long: reason\n"):
        found = long_functions("m.py", *source(above))
        assert len(found) == 1 and found[0].startswith("m.py:") and " f is 81 lines" in found[0]
    nested = "class C:\n    def g(self):\n" + "\n".join(
        f"        y = {i}" for i in range(MAX_LINES)) + "\n"
    found = long_functions("m.py", ast.parse(nested), tuple(nested.splitlines()))
    assert found and found[0].startswith("m.py:2 C.g is 81 lines")

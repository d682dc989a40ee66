"""What a workflow names outside itself, checked before it runs: notebook files, the
modules and functions of Python tasks, kernels. ``kale validate`` and every run
(:meth:`Workflow.validate`) use these checks, so a mistake is reported with its line before
anything is recorded, instead of failing the task at run time.

Nothing here imports or runs user code. A module is found on disk the way a Python task
would import it (the workflow's folder first, then ``sys.path``), and its function is looked
for in the module's syntax tree: a ``def``, ``async def``, ``class``, an assignment or an
import of that name. A module whose names cannot be known without running it (a
module-level ``__getattr__``, a star import, ``globals()``, a compiled extension) is
accepted. The kernel a notebook task runs on (the task's ``kernel``, else the notebook's
kernelspec, else ``python3``: the notebook runner's own rule) must be an installed
kernelspec.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kale.errors import Problem

if TYPE_CHECKING:
    from kale.model.workflow import Task, Workflow

#: larger notebooks are not parsed for their kernelspec (the check is skipped)
MAX_NOTEBOOK_BYTES = 50 * 2**20
#: the files a module can be, in the order the import system looks for them
_SUFFIXES = (*importlib.machinery.EXTENSION_SUFFIXES, ".py", ".pyc")


def target_problems(wf: Workflow) -> list[Problem]:
    """Problems with what the workflow's tasks name on disk (or in the installed Jupyter
    kernels), each located at the task's key that names it."""
    checker = _Checker(wf.base_dir)
    out: list[Problem] = []
    fine: set[str] = set()  # Python targets found, of tasks without a kernel of their own
    for task in wf.tasks.values():
        if task.kind == "python" and task.kernel is None and task.target.__class__ is str:
            if task.target not in fine:
                found = checker.task(task)
                out += found
                if not found:
                    fine.add(task.target)
        else:
            out += checker.task(task)
    return out


@dataclass
class _Module:
    """Where a module was found: ``source`` is its .py file; ``opaque`` when it exists but
    its names cannot be read (an extension, a namespace package, a built-in)."""

    name: str
    source: Path | None = None
    opaque: bool = False
    error: str | None = None  # why it cannot be found


@dataclass
class _Checker:
    """One check of one workflow: files and kernelspecs are looked at once each."""

    base_dir: Path
    modules: dict[str, _Module] = field(default_factory=dict)
    defined: dict[Path, tuple[set[str] | None, str | None]] = field(default_factory=dict)
    notebooks: dict[Path, tuple[dict[str, Any] | None, str | None]] = field(
        default_factory=dict)
    kernels: list[str] | None = None

    def task(self, task: Task) -> list[Problem]:
        path: tuple[str | int, ...] = ("tasks", task.name)
        if task.kind == "notebook" and isinstance(task.target, str):
            return self.notebook(task, path)
        if task.kind == "python":
            out = self.python(task.target, (*path, "python")) \
                if isinstance(task.target, str) else []
            if isinstance(task.kernel, str) and task.kernel:
                out += self.kernel(task.kernel, None, (*path, "kernel"))
            return out
        return []

    # -- notebooks -----------------------------------------------------------------------
    def notebook(self, task: Task, path: tuple[str | int, ...]) -> list[Problem]:
        file = self.base_dir / task.target
        if file not in self.notebooks:
            self.notebooks[file] = _notebook_kernel(file)
        metadata, error = self.notebooks[file]
        if error:
            return [Problem(error, (*path, "notebook"))]
        if isinstance(task.kernel, str) and task.kernel:
            return self.kernel(task.kernel, None, (*path, "kernel"))
        return [] if metadata is None else self.kernel(None, metadata, (*path, "notebook"))

    def kernel(self, task_kernel: str | None, metadata: dict[str, Any] | None,
               path: tuple[str | int, ...]) -> list[Problem]:
        """The kernel the task runs on must be installed (the notebook runner's rule,
        :func:`kale.model.kernels.choose_kernel`, and its message)."""
        from kale.model.kernels import UnknownKernel, choose_kernel

        name, source = choose_kernel(task_kernel, metadata)
        if self.kernels is None:
            self.kernels = installed_kernels()
        if name.lower() in self.kernels:
            return []
        return [Problem(str(UnknownKernel(name, self.kernels, source)), path)]

    # -- Python functions ----------------------------------------------------------------
    def python(self, target: str, path: tuple[str | int, ...]) -> list[Problem]:
        module_name, _, qualname = target.partition(":")
        if module_name not in self.modules:
            self.modules[module_name] = _find_module(module_name, self.base_dir)
        module = self.modules[module_name]
        if module.error:
            return [Problem(module.error, path)]
        if module.opaque or module.source is None:
            return []
        if module.source not in self.defined:
            self.defined[module.source] = _defined_names(module.source)
        names, error = self.defined[module.source]
        if error:
            return [Problem(f"cannot import {module_name}: {error}", path)]
        attr = qualname.split(".")[0]
        if names is None or attr in names:
            return []
        close = difflib.get_close_matches(attr, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return [Problem(f"module {module_name} ({module.source}) has no {attr!r}{hint}", path)]


def installed_kernels() -> list[str]:
    """The names of the installed kernelspecs, as Jupyter finds them. (The folders are
    given, to spare the half second of importing IPython that jupyter_client spends on
    finding IPython's own folder, ``$IPYTHONDIR/kernels``.)"""
    import os

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_path

    ipython = Path(os.environ.get("IPYTHONDIR") or Path.home() / ".ipython").expanduser()
    folders = [*jupyter_path("kernels"), str(ipython / "kernels")]
    return sorted(KernelSpecManager(kernel_dirs=folders).find_kernel_specs())


def _notebook_kernel(file: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The notebook's metadata (None: not read, the file is too large), or why it cannot
    be run."""
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        return None, f"notebook not found: {file}"
    except OSError as e:
        return None, f"cannot read the notebook {file}: {e.strerror or e}"
    if not file.is_file():
        return None, f"not a notebook file: {file}"
    if size > MAX_NOTEBOOK_BYTES:
        return None, None
    try:
        data = json.loads(file.read_bytes())
    except OSError as e:
        return None, f"cannot read the notebook {file}: {e.strerror or e}"
    except ValueError as e:
        return None, f"not a notebook (invalid JSON): {file}: {e}"
    if not isinstance(data, dict) or not isinstance(data.get("cells", []), list):
        return None, f"not a notebook (no cells): {file}"
    meta = data.get("metadata")
    return (meta if isinstance(meta, dict) else {}), None


def _find_module(name: str, base_dir: Path) -> _Module:
    """Find module ``name`` as a Python task would import it, without importing it (nor
    its parent packages): the workflow's folder first, then the top-level name through the
    import system's finders (which imports nothing), then the files below it."""
    parts = name.split(".")
    top = parts[0]
    here = base_dir / top
    module = next((base_dir / (top + suffix) for suffix in _SUFFIXES
                   if (base_dir / (top + suffix)).is_file()), None)
    if (here / "__init__.py").is_file():  # a package beside the workflow
        if len(parts) == 1:
            return _Module(name, source=here / "__init__.py")
        locations = [here]
    elif module is not None:  # a module beside the workflow
        if len(parts) > 1:
            return _Module(name, error=f"{top} ({module}) is a module, not a package: no "
                                       f"module named {name!r}")
        return _Module(name, source=module) if module.suffix == ".py" \
            else _Module(name, opaque=True)
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):  # in sys.modules without a spec: cannot tell
            return _Module(name, opaque=True)
        locations = [here] if here.is_dir() else []  # a namespace package's portion
        if spec is None and not locations:
            return _Module(name, error=f"no module named {top!r} (looked in {base_dir} and "
                                       "on the Python path)")
        if len(parts) == 1:
            if spec is not None and spec.origin and spec.origin.endswith(".py"):
                return _Module(name, source=Path(spec.origin))
            return _Module(name, opaque=True)
        if spec is not None:
            if spec.submodule_search_locations is None:
                return _Module(name, error=f"{top} is a module, not a package: no module "
                                           f"named {name!r}")
            locations += [Path(loc) for loc in spec.submodule_search_locations]
    for location in locations:
        found = _walk(location, parts[1:])
        if found is not None:
            return _Module(name, *found)
    if not all(loc.is_dir() for loc in locations):  # a zip, or a custom loader
        return _Module(name, opaque=True)
    return _Module(name, error=f"no module named {name!r} (looked in "
                               f"{', '.join(str(loc) for loc in dict.fromkeys(locations))})")


def _walk(root: Path, parts: list[str]) -> tuple[Path | None, bool] | None:
    """``(source file, opaque)`` for the module ``parts`` below directory ``root``, or
    None when it is not there. A namespace package (a folder without ``__init__.py``) is
    opaque."""
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if not folder.is_dir():
            return None
    last = parts[-1]
    if (folder / last / "__init__.py").is_file():
        return folder / last / "__init__.py", False
    for suffix in _SUFFIXES:
        if (folder / (last + suffix)).is_file():
            return (folder / (last + suffix), False) if suffix == ".py" else (None, True)
    if (folder / last).is_dir():
        return None, True
    return None


def _defined_names(source: Path) -> tuple[set[str] | None, str | None]:
    """The names a module defines at its top level, read from its syntax tree; None when
    that cannot be known without running it. Or why it cannot be imported at all."""
    try:
        text = source.read_bytes()
    except OSError as e:
        return None, f"cannot read {source}: {e.strerror or e}"
    try:
        tree = ast.parse(text, filename=str(source))
    except SyntaxError as e:
        return None, f"SyntaxError in {source}, line {e.lineno}: {e.msg}"
    except ValueError as e:  # NUL bytes, bad encoding
        return None, f"{source} is not Python source: {e}"
    if b"globals()" in text or b"sys.modules" in text or b"setattr(" in text:
        return None, None  # names made at run time
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):  # a function may assign the module's names
            names.update(node.names)
    if not _collect(tree.body, names):
        return None, None
    return names, None


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _collect(body: list[ast.stmt], names: set[str]) -> bool:
    """Add the names ``body`` binds at module level (into ``if``, ``try``, ``with`` and
    loop bodies, not into functions and classes); False if some cannot be known."""
    for node in body:
        if isinstance(node, _DEFS):
            if node.name == "__getattr__":
                return False
            names.add(node.name)
            continue
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return False
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
            targets = [node.target]
        elif isinstance(node, ast.With | ast.AsyncWith):
            targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
        for expr in ast.walk(node):  # walrus assignments count too
            if isinstance(expr, ast.NamedExpr):
                targets.append(expr.target)
        for target in targets:
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        inner = [getattr(node, a, None) or [] for a in ("body", "orelse", "finalbody")]
        for handler in getattr(node, "handlers", ()):
            if handler.name:
                names.add(handler.name)
            inner.append(handler.body)
        inner += [case.body for case in getattr(node, "cases", ())]
        if not all(_collect(b, names) for b in inner):
            return False
    return True

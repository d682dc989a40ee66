"""Workflows that grow while they run: what ``map`` and ``when`` mean, without I/O.

``map: {path: "${simulate.files('runs/*.h5')}"}`` runs a task once per element of what it
maps over, decided when the task is due: a list an upstream task returns or records
(``${pick.candidates}``), the files an upstream task left (``${task.files('glob')}``,
sorted paths relative to that task's directory), a workflow parameter, or a list written
in the workflow. Several names go element by element together (same length). Each element
becomes a *member* task, ``analyse[0]``, ``analyse[1]``, ... (:func:`member_name`): its own
state, directory, logs, retries and result. The mapped task itself is the *group*: it runs
while its members run, and its result is the list of theirs, in order.

``when: "${pick.n} > 0"`` is a condition: an expression over references, evaluated by
:func:`evaluate` (a small, safe subset of Python expressions: comparisons, ``and``/``or``/
``not``, arithmetic, ``in``, literals, ``len``/``min``/``max``/``abs``/``any``/``all``,
indexing; nothing is imported or called beyond those). False: the task is SKIPPED with the
reason, and a task below it is skipped too when it needs its result or depends on nothing
else (see :mod:`kale.engine.planner`).
"""

from __future__ import annotations

import ast
import inspect
import keyword
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from kale.errors import Problem, ValidationError
from kale.model.refs import Ref, iter_refs, to_refs

#: a reference in a condition: ``${task}``, ``${task.key}``, ``${params.name}``
_COND_REF = re.compile(r"\$\{\s*([A-Za-z_][\w-]*(?:\[[\w-]+\])*)(?:\.([^}\s]+))?\s*\}")
_MEMBER = re.compile(r"^(.+)\[([\w-]+)\]$")
#: the record under which a task hands Kale the tasks it adds (:func:`add_tasks`)
ADDED = "kale.tasks"


def files_key(pattern: str) -> str:
    """The key of a files reference: ``files('runs/*.h5')``."""
    quote = '"' if "'" in pattern else "'"
    return f"files({quote}{pattern}{quote})"


def files_pattern(ref: Ref) -> str | None:
    """The glob of a files reference (``${task.files('glob')}``), else None."""
    return ref.files


def member_name(group: str, index: int) -> str:
    """The name of a map's member: ``analyse[3]``."""
    return f"{group}[{index}]"


def group_of(name: str) -> str | None:
    """The map (or the task) a member belongs to (``analyse[3]`` -> ``analyse``,
    ``plan[refine]`` -> ``plan``), else None. Declared task names never hold ``[``, so
    this cannot mistake one for a member."""
    m = _MEMBER.match(name)
    return m.group(1) if m else None


# -- map ----------------------------------------------------------------------------------
def map_option(name: str, kind: str, target: Any, value: Any, params: Mapping[str, Any],
               after: list[str]) -> Any:
    """``map=`` as the Python API takes it: a mapping of parameter name -> values, or (for
    a Python function) just the values, bound to the function's one parameter that
    nothing else gives."""
    if isinstance(value, dict) or value is None:
        return to_refs(value)
    if kind == "python" and callable(target):
        taken = set(params) | set(after) | {r.task for r in iter_refs(value)}
        try:
            names = [p for p in inspect.signature(target).parameters if p not in taken]
        except (TypeError, ValueError):
            names = []
        if names:
            return {names[0]: to_refs(value)}
        why = "its function takes no parameter that nothing else gives"
    else:
        why = f"a {kind} task has no function whose parameter it could name"
    raise ValidationError([Problem(
        f"map= needs a mapping of parameter name -> what to map over ({why}), e.g. "
        "map={'path': sim.files('*.h5')}", ("tasks", name, "map"))])


def dynamic_problems(map_: Any, when: Any, parameters: Any, bad: Callable[..., None]) -> None:
    """What is wrong with a task's ``map`` and ``when`` on their own."""
    if map_ is not None:
        if not isinstance(map_, dict) or not map_:
            bad("must be a mapping of parameter name -> what to map over: a reference "
                "(${task.key}, ${task.files('glob')}, ${params.name}) or a list", "map")
        else:
            for key, value in map_.items():
                _map_entry_problems(parameters, key, value, bad)
    if when is not None:
        if not isinstance(when, str) or not when.strip():
            bad("must be a condition, e.g. \"${pick.n} > 0\"", "when")
        else:
            try:
                _Condition(when)
            except ValueError as e:
                bad(str(e), "when")


def _map_entry_problems(parameters: Any, key: Any, value: Any,
                        bad: Callable[..., None]) -> None:
    if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
        bad(f"{key!r}: a parameter name is an identifier", "map", str(key))
    elif isinstance(parameters, dict) and key in parameters:
        bad(f"{key!r} is also a parameter; a mapped name takes its values from the map",
            "map", key)
    if isinstance(value, Ref):
        pattern = files_pattern(value)
        if value.key is not None and value.key.startswith("files(") and pattern is None:
            bad(f"{value}: write files('glob') with the glob in quotes", "map", str(key))
        elif pattern is not None and (not pattern or pattern.startswith("/")
                                      or ".." in pattern.split("/")):
            bad(f"{value}: the glob is relative to the task's directory (no '/' first, "
                "no '..')", "map", str(key))
    elif not isinstance(value, list):
        bad(f"must be a reference (${{task.key}}, ${{task.files('glob')}}, "
            f"${{params.name}}) or a list, got {value!r}", "map", str(key))


def zip_elements(name: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One binding (parameter -> element) per member, from each mapped name's resolved
    list. Raises ValueError with what is wrong (not a list, lengths differ)."""
    lengths: dict[str, int] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            raise ValueError(f"{name}: map {key!r} got a mapping; map over a list (of its "
                             "keys: return list(d), or of its items)")
        if isinstance(value, str | bytes) or not hasattr(value, "__len__") \
                or not hasattr(value, "__getitem__"):
            raise ValueError(f"{name}: map {key!r} needs a list, got "
                             f"{type(value).__name__} {value!r:.80}")
        lengths[key] = len(value)
    if len(set(lengths.values())) > 1:
        told = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"{name}: the mapped lists differ in length ({told}); they go "
                         "element by element together")
    n = next(iter(lengths.values()), 0)
    return [{k: values[k][i] for k in values} for i in range(n)]


# -- when ---------------------------------------------------------------------------------
def condition_refs(text: str) -> list[tuple[int, int, Ref]]:
    """The references in a condition (``${task}`` too, unlike a command's text)."""
    return [(m.start(), m.end(), Ref(m.group(1), m.group(2)))
            for m in _COND_REF.finditer(text)]


def evaluate(text: str, value: Callable[[Ref], Any]) -> tuple[bool, str]:
    """A condition's truth, with its text as evaluated (references replaced by their
    values, shortened) for the reason a task is skipped. ``value`` resolves a reference
    (raising :class:`kale.model.refs.MissingResult` when it cannot). Raises ValueError
    when the expression cannot be evaluated (a type error, say)."""
    cond = _Condition(text)
    values = [value(ref) for _, _, ref in cond.refs]
    shown = cond.shown(values)
    try:
        result = cond.eval(values)
        return bool(result), shown
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"cannot evaluate {shown!r}: {type(e).__name__}: {e}") from None


_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
    ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
}
_FUNCS: dict[str, Callable[..., Any]] = {
    "len": len, "min": min, "max": max, "abs": abs, "any": any, "all": all, "bool": bool,
    "int": int, "float": float, "str": str, "round": round, "sum": sum,
}


class _Condition:
    """A parsed condition: references become the names ``_r0``, ``_r1``, ...; the rest
    must be the safe subset (checked when parsed, so a workflow is refused before it
    runs)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.refs = condition_refs(text)
        parts, last = [], 0
        for i, (start, end, _) in enumerate(self.refs):
            parts += [text[last:start], f" _r{i} "]
            last = end
        parts.append(text[last:])
        source = "".join(parts).strip()
        try:
            self.tree = ast.parse(source, mode="eval").body
        except SyntaxError as e:
            raise ValueError(f"not a condition Kale can read: {text!r} ({e.msg})") from None
        for node in ast.walk(self.tree):
            self._check(node)

    def _check(self, node: ast.AST) -> None:
        allowed = (ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Constant, ast.List,
                   ast.Tuple, ast.Subscript, ast.Load, ast.And, ast.Or, ast.Call, ast.Name,
                   *_OPS)
        if not isinstance(node, allowed):
            raise ValueError(f"{self.text!r}: {type(node).__name__} is not allowed in a "
                             "condition (comparisons, and/or/not, arithmetic, in, literals, "
                             f"indexing and {', '.join(_FUNCS)})")
        if isinstance(node, ast.Name) and not (re.fullmatch(r"_r\d+", node.id)
                                               or node.id in _FUNCS):
            raise ValueError(f"{self.text!r}: unknown name {node.id!r} (write references "
                             "as ${task.key})")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name)
                                               and node.func.id in _FUNCS and not node.keywords):
            raise ValueError(f"{self.text!r}: only {', '.join(_FUNCS)} can be called")

    def shown(self, values: list[Any]) -> str:
        out, last = [], 0
        for (start, end, _), v in zip(self.refs, values, strict=True):
            text = repr(v)
            out += [self.text[last:start], text if len(text) <= 40 else text[:37] + "..."]
            last = end
        out.append(self.text[last:])
        return "".join(out)

    def eval(self, values: list[Any]) -> Any:
        return self._eval(self.tree, values)

    def _eval(self, node: ast.AST, v: list[Any]) -> Any:
        ev = self._eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return _FUNCS[node.id] if node.id in _FUNCS else v[int(node.id[2:])]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for item in node.values:
                    result = ev(item, v)
                    if not result:
                        return result
                return result
            result = False
            for item in node.values:
                result = ev(item, v)
                if result:
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            return _OPS[type(node.op)](ev(node.operand, v))
        if isinstance(node, ast.BinOp):
            return _OPS[type(node.op)](ev(node.left, v), ev(node.right, v))
        if isinstance(node, ast.Compare):
            left = ev(node.left, v)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = ev(right_node, v)
                if not _OPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.List | ast.Tuple):
            return [ev(e, v) for e in node.elts]
        if isinstance(node, ast.Subscript):
            return ev(node.value, v)[ev(node.slice, v)]
        assert isinstance(node, ast.Call)
        return ev(node.func, v)(*[ev(a, v) for a in node.args])

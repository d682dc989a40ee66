"""CWL types against values: which member of a union a value is, and whether a value
fits its declared type (an input object checked before anything runs, an output object
before it is handed on). Types are in the expanded form of :mod:`kale.cwl.document`."""

from __future__ import annotations

from typing import Any

from kale.cwl.document import CwlError

_SCALARS: dict[str, tuple[type, ...]] = {
    "boolean": (bool,), "int": (int,), "long": (int,), "float": (int, float),
    "double": (int, float), "string": (str,),
}


def allows_null(type_: Any) -> bool:
    if isinstance(type_, list):
        return any(allows_null(t) for t in type_)
    return bool(type_ == "null")


def fits(type_: Any, value: Any) -> bool:
    """Whether ``value`` is of ``type_``."""
    if isinstance(type_, list):
        return any(fits(t, value) for t in type_)
    if type_ == "Any":
        return value is not None
    if type_ == "null":
        return value is None
    if isinstance(type_, str):
        if type_ in ("File", "Directory"):
            return isinstance(value, dict) and value.get("class") == type_
        kinds = _SCALARS.get(type_)
        if kinds is None:
            return True  # a name we did not expand: do not second-guess it
        return isinstance(value, kinds) and not (isinstance(value, bool) and type_ != "boolean")
    if isinstance(type_, dict):
        kind = type_.get("type")
        if kind == "array":
            return isinstance(value, list) and all(fits(type_.get("items"), v) for v in value)
        if kind == "enum":
            return isinstance(value, str) and value.split("/")[-1] in type_.get("symbols", [])
        if kind == "record":
            return isinstance(value, dict) and "class" not in value and all(
                fits(f.get("type"), value.get(f["name"])) for f in type_.get("fields") or [])
        return fits(kind, value)
    return True


def choose(type_: Any, value: Any) -> Any:
    """The member of a union ``value`` is (the first that fits), else ``type_``."""
    if isinstance(type_, list):
        for t in type_:
            if t != "null" and fits(t, value):
                return t
        return next((t for t in type_ if t != "null"), type_)
    return type_


def check(type_: Any, value: Any, what: str) -> None:
    if not fits(type_, value):
        shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
        raise CwlError(f"{what}: {shown} is not of type {describe(type_)}")


def describe(type_: Any) -> str:
    if isinstance(type_, list):
        return " or ".join(describe(t) for t in type_)
    if isinstance(type_, dict):
        kind = type_.get("type")
        if kind == "array":
            return f"array of {describe(type_.get('items'))}"
        return str(kind)
    return str(type_)

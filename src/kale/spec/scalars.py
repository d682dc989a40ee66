"""YAML 1.2 core-schema scalars: what a plain (unquoted) scalar means, and explicit tags."""

from __future__ import annotations

import re
import sys
from typing import Any

TAG = "tag:yaml.org,2002:"
#: the plain scalars that are null or a boolean
CONST: dict[str, Any] = {
    "": None, "~": None, "null": None, "Null": None, "NULL": None,
    "true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
}
_MAYBE = frozenset("0123456789+-.~nNtTfF")
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")


def resolve_plain(text: str) -> Any:
    """The value of a plain scalar: null, bool, int, float, or else the string itself;
    ValueError for an integer of more digits than Python reads."""
    if text[:1] not in _MAYBE and text:
        return text
    if text in CONST:
        return CONST[text]
    if text[0] in "nNtTfF~":  # not a constant, and no number starts so ("noops:noop")
        return text
    if _INT.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # Python's limit on the digits of an int read from text
            raise ValueError(f"an integer of {len(text.lstrip('+-'))} digits is more than "
                             f"{sys.get_int_max_str_digits()} digits; quote it to keep it "
                             "as text") from None
    if _FLOAT.fullmatch(text):
        return float(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _INF.fullmatch(text):
        return float(text.replace(".", ""))
    if _NAN.fullmatch(text):
        return float("nan")
    return text


def resolve_tagged(tag: str, text: str) -> Any:
    """The value of a scalar with an explicit core tag (``!!str 3``); ValueError otherwise."""
    kind = tag.removeprefix(TAG)
    if kind == "str":
        return text
    value = resolve_plain(text)
    wanted = {"null": type(None), "bool": bool, "int": int, "float": float}.get(kind)
    if wanted is None:
        raise ValueError(f"unsupported tag {tag!r}; use plain values or quotes")
    if wanted is float and type(value) is int:
        return float(value)
    if type(value) is not wanted:
        raise ValueError(f"{text!r} is not a valid !!{kind}")
    return value

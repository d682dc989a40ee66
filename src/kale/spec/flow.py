"""One-line YAML flow collections (``[a, 1]``, ``{n: 3, x: "s"}``) read by rewriting them
as JSON for the C JSON decoder. Scalars follow the YAML 1.2 core schema.

Most flows of a file are rewritten together with a few regex passes and no Python call per
scalar; a flow that does not fit (single quotes, backslashes, ``0x1F``-style numbers) is
rewritten alone, scalar by scalar. Anything else raises :class:`Unsupported`."""

from __future__ import annotations

import json
import re
from typing import Any

from kale.spec.scalars import resolve_plain


class Unsupported(Exception):
    """The text is outside the YAML subset read here (or not valid YAML)."""


_SEP = "\x00"  # between the flows of a batch: never valid inside a JSON value
_GAP = "\x01"  # between the pieces of a batch outside double quotes
_DQ = r'"(?:[^"\\]|\\.)*"'
_SQ = r"'(?:[^']|'')*'"
_PLAIN = (r"""(?:[^ \t\-?:,\[\]{}#&*!|>'"%@`\x00\x01]|-(?=[^ ,\[\]{}\x00\x01]))"""
          r"(?:[^,\[\]{}:#?\x00\x01]*[^ ,\[\]{}:#?\x00\x01])?")
_START = r"(?<![^\[{,: ])"  # a token starts after one of these (or at the start)
_END = r"[ ]*(?=[,\]}:\x00]|\Z)"
_CORE = (r"(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE|0o[0-7]+|0x[0-9a-fA-F]+"
         r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))")

LEX = re.compile(rf"(?:[ ]*(?:{_DQ}|{_SQ}|[\[\]{{}},\x00]|:(?=[ ])|{_PLAIN}))*")
_DQ_SPLIT = re.compile(f"({_DQ})")
# A plain scalar that is a string. Other plain scalars are left as they are: JSON reads
# true/false/null and JSON numbers alike, and fails on the rest (``0x1F``), which are then
# read alone, scalar by scalar.
_STRING = re.compile(f"{_START}(?!{_CORE}{_END})({_PLAIN})")
_BAD_COLON = re.compile(":(?! )")
_SCALAR = re.compile(f"({_DQ})|'((?:[^']|'')*)'|({_PLAIN})")
_JSON_ESCAPES = re.compile(r'(?:[^\\]|\\["\\bfnrt]|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4})*')


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise Unsupported
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys)


def read_flows(texts: list[str]) -> list[Any]:
    """The value of each flow text (a whole flow collection, comments removed)."""
    out: list[Any] = [None] * len(texts)
    batch = [i for i, t in enumerate(texts) if "'" not in t and "\\" not in t]
    alone = sorted(set(range(len(texts))) - set(batch))
    parts = _DQ_SPLIT.split(_SEP.join(texts[i] for i in batch))
    outside = _GAP.join(parts[0::2])
    if _BAD_COLON.search(outside):
        batch, alone = [], list(range(len(texts)))
    # Quote the string scalars outside double quotes: split around them, join with '"'.
    parts[0::2] = '"'.join(_STRING.split(outside)).split(_GAP)
    text = "".join(parts)
    decode, pos = _DECODER.raw_decode, 0
    for i in batch:
        try:
            out[i], end = decode(text, pos)
        except (ValueError, Unsupported):
            end = -1
        if end < 0 or text[end:end + 1] not in (_SEP, ""):
            alone.append(i)
            end = text.find(_SEP, pos)
        pos = end + 1
    for i in alone:
        out[i] = read_flow(texts[i])
    return out


def read_flow(text: str) -> Any:
    """The value of one flow text, rewritten scalar by scalar."""
    if not LEX.fullmatch(text):
        raise Unsupported
    try:
        return json.loads(_SCALAR.sub(_json_scalar, text), object_pairs_hook=unique_keys)
    except ValueError:
        raise Unsupported from None


def _json_scalar(m: re.Match[str]) -> str:
    dq, sq, plain = m.groups()
    if dq is not None:
        if "\\" in dq and not _JSON_ESCAPES.fullmatch(dq, 1, len(dq) - 1):
            raise Unsupported
        return dq
    value = resolve_plain(plain) if plain is not None else sq.replace("''", "'")
    return json.dumps(value, ensure_ascii=False)


def read_double_quoted(raw: str) -> str:
    """The value of a one-line double-quoted scalar, given without its quotes."""
    if "\\" not in raw:
        return raw
    if not _JSON_ESCAPES.fullmatch(raw):
        raise Unsupported
    value: str = json.loads(f'"{raw}"')
    return value

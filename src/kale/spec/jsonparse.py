"""Workflow files written as JSON (a JSON document is YAML 1.2), read by the C JSON decoder:
programs that generate a big workflow tend to write JSON, and the decoder reads a million
tasks in about a second. Lines are not kept while reading; when a problem needs one, the
complete YAML reader (:mod:`kale.spec.composer`) reads the text again for them.
What both this and the YAML reader read, they read alike (the tests check it); what they
could read differently (escaped surrogates, characters YAML 1.1 reads as line breaks,
``NaN``) raises :class:`Unsupported`, and the caller hands the text to the YAML readers.
JSON that libyaml refuses (a raw U+2028 in a key) is read as the JSON it is."""

from __future__ import annotations

import json
import re
from typing import NoReturn

from kale.errors import ValidationError
from kale.spec.composer import parse_full
from kale.spec.document import Document
from kale.spec.flow import Unsupported, unique_keys


def _no_constant(name: str) -> NoReturn:
    raise Unsupported  # NaN, Infinity: JSON's decoder takes them, YAML reads strings


#: a surrogate written as an escape, which YAML refuses (and alone, no file can hold)
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
_DECODER = json.JSONDecoder(object_pairs_hook=unique_keys, parse_constant=_no_constant)


def parse_json(text: str, avoid: re.Pattern[str]) -> Document:
    """The document in JSON ``text`` (a mapping at the top: a workflow is one).
    ``avoid``: a compiled pattern of the characters YAML refuses or reads as line breaks."""
    if text.lstrip(" \t\r\n")[:1] != "{" or avoid.search(text) or (
            "\\u" in text and _SURROGATE.search(text)):
        raise Unsupported
    try:
        data = _DECODER.decode(text)
    except (ValueError, RecursionError):
        raise Unsupported from None
    return Document(data, lines_from=lambda: _lines(text))


def _lines(text: str) -> Document:
    try:
        return parse_full(text)
    except ValidationError:  # valid JSON that libyaml cannot read (a key over 1,024 chars)
        return Document(None)

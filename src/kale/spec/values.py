"""How a value typed on the command line is read: ``kale run -p NAME=VALUE`` and
``kale record NAME VALUE`` follow the same rule.

The rule: VALUE reads as it would in the workflow's YAML file (``parameters: {n: VALUE}``),
as a YAML 1.2 core scalar, plus Python's spellings ``True``, ``False`` and ``None``:

- ``true``/``True``/``TRUE``, ``false``/``False``/``FALSE``: a bool;
- ``null``, ``~``, ``None``: None;
- an integer (``5``, ``-3``, ``007``, ``0x1F``, ``0o17``) or a float (``2.5``, ``1e3``,
  ``.inf``, ``.nan``): a number;
- ``[...]`` or ``{...}``: a list or a mapping, written as JSON;
- ``"..."``: the JSON string inside the quotes (``-p 'x="007"'`` is the string ``007``);
- anything else, and the empty value: the string as typed (``-p name=abc``).

papermill's ``-p`` reads True/False/None and numbers the same way; unlike papermill,
lowercase ``true``/``false`` are bools here too (as in YAML), and ``nan``/``inf`` stay
strings (YAML spells them ``.nan``/``.inf``)."""

from __future__ import annotations

import json
from typing import Any

RULE = ("VALUE reads as in the workflow YAML: true/false/True/False a bool, null/None a "
        "null, 5 or 007 or 2.5 a number, [..] and {..} JSON lists and maps, \"..\" a "
        "JSON string, anything else a string (name=abc stays 'abc').")

_PYTHON = {"None": None, "True": True, "False": False}


def parse_value(text: str) -> Any:
    """The value ``text`` (typed on the command line) stands for; ValueError with the
    reason when it starts like JSON but is not valid JSON."""
    if text in _PYTHON:
        return _PYTHON[text]
    if text[:1] in ("[", "{", '"'):
        try:
            return json.loads(text)
        except ValueError as e:
            what = "a JSON string" if text[0] == '"' else "a JSON list or map"
            raise ValueError(f"{text!r} starts like {what} but is not valid JSON ({e}); "
                             "to pass it as a string, quote it as JSON: "
                             f"{json.dumps(text)}") from None
    if not text:
        return ""
    from kale.spec.scalars import resolve_plain  # (kale.spec costs 50 ms: only when used)

    return resolve_plain(text)

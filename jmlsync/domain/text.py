"""What text the store accepts: no U+0000 and no lone surrogate, in any string.

PostgreSQL refuses both (``text`` cannot hold U+0000, ``jsonb`` refuses ``\\u0000``, and a lone
surrogate cannot be encoded as UTF-8), and SQLite would keep them silently: the SCIM layer
rejects them on every backend, and ``db copy`` refuses rows that hold them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

#: U+0000 or any UTF-16 surrogate code point (only a lone one can be in a Python str).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

#: How deep arrays and objects may nest in a request body (a SCIM body needs 5 or 6 levels).
MAX_JSON_DEPTH = 32


def unstorable(text: str) -> bool:
    """True when ``text`` holds U+0000 or a lone surrogate."""
    return _UNSTORABLE.search(text) is not None


def too_deep(value: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when a parsed JSON ``value`` nests arrays and objects deeper than ``max_depth``.

    Level by level, never recursive, so a hostile value cannot exhaust the interpreter's stack.
    """
    level = [value]
    depth = 0
    while level:
        below: list[Any] = []
        for item in level:
            if type(item) is dict:
                below.extend(item.values())
            elif type(item) is list:
                below.extend(item)
        if not below and all(type(item) not in (dict, list) for item in level):
            return False
        depth += 1
        if depth > max_depth:
            return True
        level = below
    return False


def bad_string(value: Any) -> str | None:
    """The first unstorable string (key or value) in a parsed JSON ``value``, else None."""
    level = [value]
    while level:
        below: list[Any] = []
        for item in level:
            if type(item) is str:
                if unstorable(item):
                    return item
            elif type(item) is dict:
                below.extend(item)
                below.extend(item.values())
            elif type(item) is list:
                below.extend(item)
        level = below
    return None


def printable(text: str, limit: int) -> str:
    """``text`` fit for one log field: control characters escaped (they must not forge a line
    or move a terminal's cursor) and at most ``limit`` characters, marked ``...`` when cut."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def compact_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, as ``json.dumps(value, ensure_ascii=False,
    separators=(",", ":"))`` writes it, by orjson (several times faster on the request path).

    A float may be written in another of its shortest forms (``1e-7`` for ``1e-07``: the same
    number). What orjson refuses (integers beyond 64 bits, keys that are not strings, lone
    surrogates) or would write otherwise (NaN and infinities, which it turns into ``null``)
    goes through the standard library, so no value changes on its way to the store or a client.
    """
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        pass
    else:
        if b"null" not in encoded or not _non_finite(value):
            return encoded
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


def _non_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is anywhere in ``value`` (level by level)."""
    level = [value]
    while level:
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, float) and not math.isfinite(item):
                return True
            if isinstance(item, dict):
                deeper.extend(item.values())
            elif isinstance(item, list | tuple):
                deeper.extend(item)
        level = deeper
    return False

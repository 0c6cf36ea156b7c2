"""What text the store accepts: no U+0000 and no lone surrogate, in any string.

PostgreSQL refuses both (``text`` cannot hold U+0000, ``jsonb`` refuses ``\\u0000``, and a lone
surrogate cannot be encoded as UTF-8), and SQLite would keep them silently: the SCIM layer
rejects them on every backend, and ``db copy`` refuses rows that hold them.
"""

from __future__ import annotations

import re
from typing import Any

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

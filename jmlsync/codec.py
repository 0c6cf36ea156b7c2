"""Compact JSON for the request path and the store, by orjson where it writes the same bytes
as the standard library (a leaf module: the one place that imports orjson)."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


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

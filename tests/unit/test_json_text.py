"""compact_json writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jmlsync.codec import compact_json

_SCALARS = st.none() | st.booleans() | st.integers() | st.text()
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _standard(value: Any) -> bytes:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", "backslashreplace")


@given(_VALUES)
def test_the_same_bytes_as_the_standard_library(value: Any) -> None:
    assert compact_json(value) == _standard(value)


def test_what_orjson_would_refuse_or_change_is_written_as_before() -> None:
    for value in (
        {"big": 2**70},
        {1: "key not a string"},
        ["\ud800"],
        {"a": [None, float("nan")]},
        {"a": float("inf"), "b": None},
    ):
        assert compact_json(value) == _standard(value)


def test_floats_keep_their_value() -> None:
    for number in (0.1, 1.5e-7, 1e-5, 1e22, 5e-324, 123456789.123):
        assert json.loads(compact_json({"n": number})) == {"n": number}

"""SCIM filter expressions (RFC 7644 §3.4.2.2) as plain values, and their evaluation.

The SCIM adapter parses filter text into these nodes, resolving every attribute against the
schema, so each :class:`Attr` already carries its canonical spelling, type and case rule.
Evaluation here needs nothing else; the store compiles the same nodes to SQL.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

Scalar: TypeAlias = str | bool | int | float | None


@dataclass(frozen=True)
class Attr:
    """A resolved attribute reference: ``[uri:]name[.sub]``.

    ``uri`` is None for the core schema and common attributes. ``type`` and ``case_exact``
    describe the leaf (the sub-attribute when there is one); ``multi_valued`` the top attribute.
    """

    name: str
    sub: str | None = None
    uri: str | None = None
    type: str = "string"
    case_exact: bool = False
    multi_valued: bool = False


@dataclass(frozen=True)
class Compare:
    """``attr op value`` with op one of eq ne co sw ew gt ge lt le."""

    attr: Attr
    op: str
    value: Scalar


@dataclass(frozen=True)
class Present:
    """``attr pr``."""

    attr: Attr


@dataclass(frozen=True)
class And:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Or:
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    expr: Expr


@dataclass(frozen=True)
class ValuePath:
    """``attr[filter]``: ``filter`` applies to each value of the multi-valued ``attr``.

    Inside ``filter`` every :class:`Attr` names a sub-attribute as ``Attr(name=sub)``.
    """

    attr: Attr
    filter: Expr


Expr: TypeAlias = Compare | Present | And | Or | Not | ValuePath


def parse_datetime(text: str) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones taken as UTC), else None."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def matches(expr: Expr, resource: Mapping[str, Any]) -> bool:
    """Whether the full SCIM resource JSON ``resource`` satisfies ``expr``.

    Missing attributes match nothing, except through ``ne`` and ``not``; a multi-valued
    attribute matches when any of its values does.
    """
    if isinstance(expr, And):
        return matches(expr.left, resource) and matches(expr.right, resource)
    if isinstance(expr, Or):
        return matches(expr.left, resource) or matches(expr.right, resource)
    if isinstance(expr, Not):
        return not matches(expr.expr, resource)
    if isinstance(expr, Present):
        return any(_is_present(v) for v in _values(expr.attr, resource))
    if isinstance(expr, ValuePath):
        items = _values(expr.attr, resource)
        return any(isinstance(item, Mapping) and matches(expr.filter, item) for item in items)
    return _matches_compare(expr, resource)


def _get(mapping: Mapping[str, Any], key: str) -> Any:
    # Canonical spelling first; clients' own documents may spell keys differently.
    if key in mapping:
        return mapping[key]
    lowered = key.lower()
    return next((v for k, v in mapping.items() if k.lower() == lowered), None)


def _values(attr: Attr, resource: Mapping[str, Any]) -> list[Any]:
    """The non-null values ``attr`` denotes in ``resource``, one per item when multi-valued."""
    container = resource if attr.uri is None else _get(resource, attr.uri)
    if not isinstance(container, Mapping):
        return []
    top = _get(container, attr.name)
    items = top if isinstance(top, list) and attr.multi_valued else [top]
    if attr.sub is not None:
        items = [_get(item, attr.sub) if isinstance(item, Mapping) else None for item in items]
    return [item for item in items if item is not None]


def _is_present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _matches_compare(expr: Compare, resource: Mapping[str, Any]) -> bool:
    values = _values(expr.attr, resource)
    if expr.value is None:
        # "eq null" asks for absence, "ne null" for presence.
        present = any(_is_present(v) for v in values)
        return present if expr.op == "ne" else not present
    op = "eq" if expr.op == "ne" else expr.op
    hit = any(_compare(v, op, expr.value, expr.attr) for v in values)
    return not hit if expr.op == "ne" else hit


_TEXT_OPS = frozenset({"co", "sw", "ew"})
_NUMERIC_OPS = frozenset({"eq", "gt", "ge", "lt", "le"})
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "co": lambda actual, wanted: wanted in actual,
    "sw": lambda actual, wanted: actual.startswith(wanted),
    "ew": lambda actual, wanted: actual.endswith(wanted),
}


def _compare(actual: Any, op: str, wanted: Scalar, attr: Attr) -> bool:
    """``actual op wanted`` by the rules of ``attr``'s type; values of another type never match."""
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return op == "eq" and actual is wanted
    if isinstance(wanted, int | float):
        return isinstance(actual, int | float) and op in _NUMERIC_OPS and _OPS[op](actual, wanted)
    if not isinstance(wanted, str) or not isinstance(actual, str):
        return False
    if attr.type == "dateTime" and op not in _TEXT_OPS:
        when, limit = parse_datetime(actual), parse_datetime(wanted)
        return when is not None and limit is not None and _OPS[op](when, limit)
    if not attr.case_exact:
        actual, wanted = actual.casefold(), wanted.casefold()
    return _OPS[op](actual, wanted)

"""Filter nodes compiled to parameterised SQLite ``WHERE`` fragments over the directory tables.

A fragment is written for ``SELECT ... FROM users WHERE <fragment>`` (or ``groups``): it names
the table by its own name, so the query must not alias it. It selects exactly the rows whose
full SCIM resource :func:`jmlsync.domain.filters.matches` accepts.

Case-insensitive comparisons call the SQL function ``fold(x)``, which the store must register
on every connection as Python's :meth:`str.casefold`, passing other values through::

    conn.create_function(
        "fold", 1, lambda s: s.casefold() if isinstance(s, str) else s, deterministic=True
    )

Every value travels as a ``?`` parameter. The only text spliced into SQL is the table
definitions (:mod:`.columns`) and JSON paths built from the schema's canonical attribute names.

Limits: dateTime values inside ``doc`` (none in the served schemas) compare as text against the
normalised storage format ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; ``password``, ``meta`` as a whole,
``meta.location`` and the ``$ref``/``type`` of memberships cannot be filtered on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmlsync.domain.errors import InvalidFilterError
from jmlsync.domain.filters import Attr, Expr, Scalar, ValuePath
from jmlsync.store.filters.columns import Membership, Table
from jmlsync.store.filters.walker import FilterWalker, attr_key, storage_datetime


def compile_filter(expr: Expr, table: Table) -> tuple[str, list[Any]]:
    """``expr`` as a ``WHERE`` fragment over ``table`` and its parameters, in order."""
    compiler = _Compiler(table)
    return compiler.expr(expr), compiler.params


def sort_expression(attr: Attr, table: Table) -> str:
    """An SQL expression, without parameters, to ``ORDER BY`` ``attr`` (RFC 7644 §3.4.2.3).

    Case-insensitive strings sort by their folded form; a multi-valued attribute sorts by its
    primary value, else its first; an attribute nobody may filter on sorts as NULL.
    """
    key, doc = attr_key(attr), f"{table.name}.{table.doc}"
    column = table.columns.get(key)
    if column is not None:
        return _sort_key(column.sql, attr, folded=column.folded)
    membership = table.memberships.get(attr.name) if attr.uri is None else None
    sub = attr.sub or ("value" if attr.type == "complex" and attr.multi_valued else None)
    if key in table.unfilterable or attr.name in table.unfilterable:
        return "NULL"
    if membership is not None:
        held = membership.subs.get(sub or "value")
        if held is None:
            return "NULL"
        owner = f"m.{membership.owner} = {table.name}.id"
        value = _sort_key(held.sql, attr, folded=held.folded)
        return f"(SELECT min({value}) FROM memberships AS m WHERE {owner})"
    keys = (attr.name,) if attr.uri is None else (attr.uri, attr.name)
    if not attr.multi_valued:
        return _sort_key(_json(doc, *keys, *((sub,) if sub else ())).sql, attr)
    primary = (
        f"CASE WHEN {_ITEM}.type = 'object' THEN json_extract({_ITEM}.value, '$.\"primary\"') END"
    )
    return (
        f"(SELECT {_sort_key(_item(sub).sql, attr)} FROM json_each({doc}, {_json_path(*keys)})"
        f" AS {_ITEM} ORDER BY {primary} IS 1 DESC, {_ITEM}.key LIMIT 1)"
    )


def _sort_key(sql: str, attr: Attr, *, folded: bool = False) -> str:
    text = attr.type in ("string", "reference", "complex")
    return f"fold({sql})" if text and not attr.case_exact and not folded else sql


@dataclass(frozen=True)
class _Operand:
    """One value to test: its SQL, and the SQL of its JSON type when it comes from JSON."""

    sql: str
    json_type: str | None = None
    folded: bool = False


_SAFE_KEY = re.compile(r"[A-Za-z0-9$_:.-]+")
_ITEM = "item"
_SYMBOLS = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_JSON_TYPES = {
    bool: "('true', 'false')",
    int: "('integer', 'real')",
    float: "('integer', 'real')",
    str: "('text')",
}


def _json_path(*keys: str) -> str:
    """A quoted SQL literal for the JSON path of ``keys``; they come from the schema."""
    for key in keys:
        if not _SAFE_KEY.fullmatch(key):
            raise InvalidFilterError(f"cannot filter on the attribute {key!r}")
    return "'$" + "".join(f'."{key}"' for key in keys) + "'"


def _json(doc: str, *keys: str) -> _Operand:
    path = _json_path(*keys)
    return _Operand(f"json_extract({doc}, {path})", f"json_type({doc}, {path})")


def _item(sub: str | None) -> _Operand:
    """A value of the ``json_each`` row ``item``, or its sub-attribute ``sub``."""
    if sub is None:
        return _Operand(f"{_ITEM}.value", f"{_ITEM}.type")
    path = _json_path(sub)
    # CASE, because json_extract on a non-object item would raise, and AND may not short-cut.
    guard = f"CASE WHEN {_ITEM}.type = 'object' THEN"
    return _Operand(
        f"{guard} json_extract({_ITEM}.value, {path}) END",
        f"{guard} json_type({_ITEM}.value, {path}) END",
    )


class _Compiler(FilterWalker["_Operand"]):
    """Walks one filter, collecting the parameters in the order their ``?`` appear."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.params: list[Any] = []
        self.inner: Callable[[Attr], _Operand] | None = None
        self.doc = f"{table.name}.{table.doc}"

    def _leaf(self, attr: Attr, build: Callable[[_Operand], str]) -> str:
        """``build``'s test applied to ``attr``, true when any of its values passes."""
        if self.inner is not None:
            return build(self.inner(attr))
        table, key = self.table, attr_key(attr)
        column = table.columns.get(key)
        if column is not None:
            return build(_Operand(column.sql, folded=column.folded))
        if key in table.unfilterable or attr.name in table.unfilterable:
            raise InvalidFilterError(f"cannot filter on {key!r}")
        membership = table.memberships.get(attr.name) if attr.uri is None else None
        if membership is not None:
            test = build(self._membership_operand(membership, attr.sub or "value"))
            return f"EXISTS ({self._membership_rows(membership)} AND ({test}))"
        keys = (attr.name,) if attr.uri is None else (attr.uri, attr.name)
        if not attr.multi_valued:
            return build(_json(self.doc, *keys, *((attr.sub,) if attr.sub else ())))
        return f"EXISTS ({self._json_rows(keys)} WHERE {build(_item(attr.sub))})"

    def _value_path(self, expr: ValuePath) -> str:
        if self.inner is not None:
            raise InvalidFilterError("nested value filters are not supported")
        attr, table = expr.attr, self.table
        membership = table.memberships.get(attr.name) if attr.uri is None else None
        keys = (attr.name,) if attr.uri is None else (attr.uri, attr.name)
        if membership is not None:
            rows = self._membership_rows(membership) + " AND"
            self.inner = lambda a: self._membership_operand(membership, a.name)
        elif attr.multi_valued:
            rows = f"{self._json_rows(keys)} WHERE {_ITEM}.type = 'object' AND"
            self.inner = lambda a: _item(a.name)
        else:
            rows = ""
            self.inner = lambda a: _json(self.doc, *keys, a.name)
        try:
            test = self.expr(expr.filter)
        finally:
            self.inner = None
        if rows:
            return f"EXISTS ({rows} ({test}))"
        return f"json_type({self.doc}, {_json_path(*keys)}) = 'object' AND ({test})"

    def _json_rows(self, keys: tuple[str, ...]) -> str:
        return f"SELECT 1 FROM json_each({self.doc}, {_json_path(*keys)}) AS {_ITEM}"

    def _membership_rows(self, membership: Membership) -> str:
        return f"SELECT 1 FROM memberships AS m WHERE m.{membership.owner} = {self.table.name}.id"

    @staticmethod
    def _membership_operand(membership: Membership, sub: str) -> _Operand:
        column = membership.subs.get(sub)
        if column is None:
            raise InvalidFilterError(f"cannot filter on the membership attribute {sub!r}")
        return _Operand(column.sql, folded=column.folded)

    @staticmethod
    def _present(operand: _Operand) -> str:
        value, kind = operand.sql, operand.json_type
        if kind is None:
            return f"({value} IS NOT NULL AND {value} <> '')"
        return (
            f"COALESCE({kind} IN ('integer', 'real', 'true', 'false')"
            f" OR ({kind} = 'text' AND {value} <> '')"
            f" OR ({kind} = 'object' AND {value} <> '{{}}')"
            f" OR ({kind} = 'array' AND {value} <> '[]'), 0)"
        )

    def _test(self, operand: _Operand, op: str, value: Scalar, attr: Attr) -> str:
        """``operand op value``, the value as parameters, for a non-null ``value``."""
        sql, param = self._comparand(operand, value, attr)
        if op in _SYMBOLS:
            test, params = f"{sql} {_SYMBOLS[op]} ?", [param]
        elif op == "co":
            test, params = f"instr({sql}, ?) > 0", [param]
        elif op == "sw":
            test, params = f"substr({sql}, 1, length(?)) = ?", [param, param]
        elif op == "ew":
            test, params = f"substr({sql}, length({sql}) - length(?) + 1) = ?", [param, param]
        else:
            raise InvalidFilterError(f"unknown operator {op!r}")
        self.params.extend(params)
        if operand.json_type is None:
            return test
        # JSON may hold a value of another type; matches() never lets those compare equal.
        return f"{operand.json_type} IN {_JSON_TYPES[type(value)]} AND {test}"

    @staticmethod
    def _comparand(operand: _Operand, value: Scalar, attr: Attr) -> tuple[str, Any]:
        if isinstance(value, bool):
            return operand.sql, int(value)
        if not isinstance(value, str):
            return operand.sql, value
        if attr.type == "dateTime":
            return operand.sql, storage_datetime(value)
        if attr.case_exact:
            return operand.sql, value
        folded = operand.sql if operand.folded else f"fold({operand.sql})"
        return folded, value.casefold()

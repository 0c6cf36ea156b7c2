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
definitions below and JSON paths built from the schema's canonical attribute names.

Limits: dateTime values inside ``doc`` (none in the served schemas) compare as text against the
normalised storage format ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; ``password``, ``meta`` as a whole,
``meta.location`` and the ``$ref``/``type`` of memberships cannot be filtered on.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Generic, TypeVar

from jmlsync.domain.filters import (
    And,
    Attr,
    Compare,
    Expr,
    Not,
    Or,
    Present,
    Scalar,
    ValuePath,
    parse_datetime,
)
from jmlsync.scim.errors import InvalidFilter


@dataclass(frozen=True)
class Column:
    """An SQL expression that holds one attribute's value for the current row."""

    sql: str
    folded: bool = False
    """The column holds ``str.casefold()`` of the value, so operands are folded in Python."""


@dataclass(frozen=True)
class Membership:
    """A multi-valued attribute kept as ``memberships`` rows (alias ``m``), not in ``doc``."""

    owner: str
    """The ``memberships`` column naming the current row: ``user_id`` or ``group_id``."""
    subs: Mapping[str, Column]
    """Sub-attribute name to an expression over ``m``."""


@dataclass(frozen=True)
class Table:
    """How one resource table stores its attributes."""

    name: str
    columns: Mapping[str, Column]
    """Attribute key (``userName``, ``meta.created``) to the column that holds it."""
    memberships: Mapping[str, Membership] = field(default_factory=dict)
    """Top-level attribute name (``groups``, ``members``) to its ``memberships`` rows."""
    unfilterable: frozenset[str] = frozenset()
    """Attribute keys neither a column nor in ``doc``: filtering on them is refused."""
    doc: str = "doc"
    """The JSON column holding every other attribute under its canonical name."""


def _meta_columns(table: str, resource_type: str) -> dict[str, Column]:
    return {
        "id": Column(f"{table}.id"),
        "externalId": Column(f"{table}.external_id"),
        "meta.created": Column(f"{table}.created"),
        "meta.lastModified": Column(f"{table}.last_modified"),
        "meta.resourceType": Column(f"'{resource_type}'"),
        "meta.version": Column(f"'W/\"' || {table}.version || '\"'"),
    }


_UNFILTERABLE = frozenset({"meta", "meta.location"})

USERS_TABLE = Table(
    name="users",
    columns={
        **_meta_columns("users", "User"),
        "userName": Column("users.user_name_key", folded=True),
        "displayName": Column("users.display_name"),
        "active": Column("users.active"),
    },
    memberships={
        "groups": Membership(
            owner="user_id",
            subs={
                "value": Column("m.group_id"),
                "display": Column(
                    "(SELECT g.display_name FROM groups AS g WHERE g.id = m.group_id)"
                ),
            },
        )
    },
    unfilterable=_UNFILTERABLE | {"password"},
)
GROUPS_TABLE = Table(
    name="groups",
    columns={
        **_meta_columns("groups", "Group"),
        "displayName": Column("groups.display_name_key", folded=True),
    },
    memberships={
        "members": Membership(
            owner="group_id", subs={"value": Column("m.user_id"), "display": Column("m.display")}
        )
    },
    unfilterable=_UNFILTERABLE,
)


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
            raise InvalidFilter(f"cannot filter on the attribute {key!r}")
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


def negate(sql: str) -> str:
    """NOT of a test where SQL NULL means "no match": COALESCE keeps NOT from turning it into
    another NULL. (``false`` is a keyword in both SQLite and PostgreSQL.)"""
    return f"NOT COALESCE(({sql}), false)"


def attr_key(attr: Attr) -> str:
    """The key of ``attr`` in a table's column and unfilterable maps."""
    key = attr.name if attr.sub is None else f"{attr.name}.{attr.sub}"
    return key if attr.uri is None else f"{attr.uri}:{key}"


def storage_datetime(value: str) -> str:
    """A dateTime comparand in the stores' fixed-width UTC text form."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise InvalidFilter(f"{value!r} is not a valid dateTime")
    naive = parsed.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="microseconds") + "Z"


def _chain(expr: And | Or) -> list[Expr]:
    """The operands of a chain of ``expr``'s operator, left to right, however it nests."""
    operands: list[Expr] = []
    pending: list[Expr] = [expr]
    while pending:
        node = pending.pop()
        if type(node) is type(expr):
            assert isinstance(node, And | Or)
            pending += [node.right, node.left]
        else:
            operands.append(node)
    return operands


#: How a dialect represents one value under test.
Operand = TypeVar("Operand")


class FilterWalker(ABC, Generic[Operand]):
    """The walk over a filter that both SQL dialects share: logic, ``ne``, ``eq null``.

    A dialect says how one attribute reaches its values (``_leaf``), how presence and a
    comparison read in SQL (``_present``, ``_test``), and how ``attr[...]`` is written.
    """

    def expr(self, expr: Expr) -> str:
        """The SQL for ``expr``, a boolean; NULL counts as false."""
        if isinstance(expr, And | Or):
            # A chain of one operator is written flat: SQLite's parser stack (about 100
            # entries) overflows on a hundred nested parentheses.
            word = " AND " if isinstance(expr, And) else " OR "
            return word.join(f"({self.expr(operand)})" for operand in _chain(expr))
        if isinstance(expr, Not):
            return negate(self.expr(expr.expr))
        if isinstance(expr, Present):
            return self._leaf(expr.attr, self._present)
        if isinstance(expr, ValuePath):
            return self._value_path(expr)
        return self._compare(expr)

    def _compare(self, expr: Compare) -> str:
        attr, value = expr.attr, expr.value
        if value is None:
            present = self._leaf(attr, self._present)
            return present if expr.op == "ne" else negate(present)
        if expr.op == "ne":
            # Negating eq as a whole: a missing attribute, or no equal value, matches.
            return negate(self._leaf(attr, lambda o: self._test(o, "eq", value, attr)))
        return self._leaf(attr, lambda o: self._test(o, expr.op, value, attr))

    @abstractmethod
    def _leaf(self, attr: Attr, build: Callable[[Operand], str]) -> str:
        """``build``'s test applied to ``attr``, true when any of its values passes."""

    @abstractmethod
    def _present(self, operand: Operand) -> str: ...

    @abstractmethod
    def _test(self, operand: Operand, op: str, value: Scalar, attr: Attr) -> str: ...

    @abstractmethod
    def _value_path(self, expr: ValuePath) -> str: ...


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
            raise InvalidFilter(f"cannot filter on {key!r}")
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
            raise InvalidFilter("nested value filters are not supported")
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
            raise InvalidFilter(f"cannot filter on the membership attribute {sub!r}")
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
            raise InvalidFilter(f"unknown operator {op!r}")
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

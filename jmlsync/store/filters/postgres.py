"""Filter nodes compiled to parameterised PostgreSQL ``WHERE`` fragments over the directory tables.

The PostgreSQL twin of :mod:`jmlsync.store.filters.sqlite`, over the same :class:`Table`
definitions: a fragment is written for ``SELECT ... FROM users WHERE <fragment>`` (or
``groups``), names the table by its own name, so the query must not alias it, and selects
exactly the rows whose full SCIM resource :func:`jmlsync.domain.filters.matches` accepts.

The tables are those of SQLite but for three types: ``doc`` is ``jsonb``, ``users.active`` is
``boolean`` (see :data:`BOOLEAN_COLUMNS`), and timestamps stay ``text`` in the fixed-width
format ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. Case-insensitive comparisons call ``fold(text)``, which
the schema defines as ``lower()``::

    CREATE FUNCTION fold(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower($1)'

``lower()`` folds by the collation of its argument: the database's ``LC_CTYPE`` (or ICU
locale) must be a Unicode one such as ``C.UTF-8``, and the text columns must keep the default
collation, or only ASCII letters fold. Values from ``doc`` are folded on both sides in SQL,
so ``fold()`` decides what case-insensitive means for them; columns holding Python's
``str.casefold()`` (``Column.folded``) are compared with the operand casefolded in Python.

Every value travels as a ``$n`` parameter with an explicit cast (``::text``, ``::boolean``,
``::numeric``), numbered from ``start``; a parameter used twice keeps its number. The only text
spliced into SQL is the table definitions and JSON paths built from the schema's canonical
attribute names.

How ``matches`` is kept:

* ordering operators compare under ``COLLATE "C"`` (code point order, as Python does), and sort
  keys on text carry it too, whatever the database's default collation;
* a value of ``doc`` compares only with an operand of its own JSON type: strings as text,
  booleans as ``jsonb`` (``eq`` only), numbers as ``numeric``;
* a multi-valued attribute holding a single value rather than an array is that one value;
* a string operand holding NUL, which PostgreSQL text cannot store, equals, contains, starts
  and ends no stored value, and orders after its part before the NUL.

Limits, as in SQLite: dateTime values inside ``doc`` compare as text against the storage
format; ``password``, ``meta`` as a whole, ``meta.location`` and the ``$ref``/``type`` of
memberships cannot be filtered on. Numbers compare as exact decimals, so a document number
with more digits than a double holds may compare unlike the float Python reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeAlias

from jmlsync.domain.errors import InvalidFilterError
from jmlsync.domain.filters import (
    Attr,
    Expr,
    Scalar,
    ValuePath,
)
from jmlsync.store.filters.columns import (
    BOOLEAN_COLUMNS,
    Column,
    Membership,
    Table,
)
from jmlsync.store.filters.walker import FilterWalker, attr_key, storage_datetime


def compile_filter_pg(expr: Expr, table: Table, start: int = 1) -> tuple[str, list[Any]]:
    """``expr`` as a ``WHERE`` fragment over ``table`` and its parameters, ``$start`` first."""
    if start < 1:
        raise ValueError(f"parameters are numbered from 1, not {start}")
    compiler = _Compiler(table, start)
    return compiler.expr(expr), compiler.params


def sort_expression_pg(attr: Attr, table: Table) -> str:
    """An SQL expression, without parameters, to ``ORDER BY`` ``attr`` (RFC 7644 §3.4.2.3).

    Case-insensitive strings sort by their folded form, text in code point order; a
    multi-valued attribute sorts by its primary value, else its first; an attribute nobody may
    filter on sorts as NULL.
    """
    key, doc = attr_key(attr), f"{table.name}.{table.doc}"
    column = table.columns.get(key)
    if column is not None:
        if column.sql in BOOLEAN_COLUMNS:
            return column.sql
        return _text_sort_key(column.sql, attr, folded=column.folded)
    if key in table.unfilterable or attr.name in table.unfilterable:
        return _NO_SORT_KEY
    membership = table.memberships.get(attr.name) if attr.uri is None else None
    sub = attr.sub or ("value" if attr.type == "complex" and attr.multi_valued else None)
    if membership is not None:
        held = membership.subs.get(sub or "value")
        if held is None:
            return _NO_SORT_KEY
        owner = f"m.{membership.owner} = {table.name}.id"
        value = _text_sort_key(held.sql, attr, folded=held.folded)
        return f"(SELECT min({value}) FROM memberships AS m WHERE {owner})"
    keys = _doc_keys(attr)
    if not attr.multi_valued:
        return _json_sort_key(f"{doc} #> {_path(*keys, *((sub,) if sub else ()))}", attr)
    item = "e.value" if sub is None else f"e.value -> {_key_literal(sub)}"
    primary = "COALESCE(e.value -> 'primary' = 'true'::jsonb, false)"
    return (
        f"(SELECT {_json_sort_key(item, attr)}"
        f" FROM jsonb_array_elements({_as_array(f'{doc} #> {_path(*keys)}')})"
        f" WITH ORDINALITY AS e(value, n) ORDER BY {primary} DESC, e.n LIMIT 1)"
    )


# A bare NULL in ORDER BY is refused as a "non-integer constant"; a typed one is not.
_NO_SORT_KEY = "NULL::text"


def _text_sort_key(sql: str, attr: Attr, *, folded: bool = False) -> str:
    text = attr.type in ("string", "reference", "complex")
    key = f"fold({sql})" if text and not attr.case_exact and not folded else sql
    return f'({key}) COLLATE "C"'


def _json_sort_key(jsonb: str, attr: Attr) -> str:
    if attr.type in ("integer", "decimal"):
        return f"CASE WHEN jsonb_typeof({jsonb}) = 'number' THEN ({jsonb})::numeric END"
    if attr.type == "boolean":
        return f"CASE WHEN jsonb_typeof({jsonb}) = 'boolean' THEN ({jsonb})::boolean END"
    return _text_sort_key(f"({jsonb}) #>> '{{}}'", attr)


@dataclass(frozen=True)
class _Operand:
    """One value to test: its SQL as text (or boolean), and as ``jsonb`` when from ``doc``."""

    sql: str
    jsonb: str | None = None
    folded: bool = False
    boolean: bool = False


_Build: TypeAlias = Callable[[_Operand], str]
"""The test one leaf applies to each value of its attribute."""

_SAFE_KEY = re.compile(r"[A-Za-z0-9$_:.-]+")
_INDEX_LIKE = re.compile(r"-?[0-9]+")
_SYMBOLS = {"eq": "=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_ORDERING = frozenset({"gt", "ge", "lt", "le"})
_TEXT_OPS = frozenset({"co", "sw", "ew"})
# An operand cut at its NUL: no stored string holds NUL, so none equals the cut part's
# continuation; ``s >= "ab\0c"`` is ``s > "ab"``, ``s < "ab\0c"`` is ``s <= "ab"``.
_BEFORE_NUL = {"gt": "gt", "ge": "gt", "lt": "le", "le": "le"}


def _checked(key: str) -> str:
    """``key``, a schema's canonical name, once known safe to splice into SQL literals."""
    # Integer-like keys would index arrays in a jsonb path rather than name a member.
    if not _SAFE_KEY.fullmatch(key) or _INDEX_LIKE.fullmatch(key):
        raise InvalidFilterError(f"cannot filter on the attribute {key!r}")
    return key


def _path(*keys: str) -> str:
    """A ``text[]`` literal for ``#>`` / ``#>>``, each key double-quoted."""
    return "'{" + ",".join(f'"{_checked(key)}"' for key in keys) + "}'"


def _key_literal(key: str) -> str:
    return f"'{_checked(key)}'"


def _as_array(jsonb: str) -> str:
    """``jsonb`` as an array to expand: itself when it is one, else a one-item array."""
    return (
        f"CASE WHEN jsonb_typeof({jsonb}) = 'array' THEN {jsonb}"
        f" ELSE jsonb_build_array({jsonb}) END"
    )


def _doc_keys(attr: Attr) -> tuple[str, ...]:
    return (attr.name,) if attr.uri is None else (attr.uri, attr.name)


class _Compiler(FilterWalker[_Operand]):
    """Walks one filter, collecting the parameters in the order of their numbers."""

    def __init__(self, table: Table, start: int) -> None:
        self.table = table
        self.start = start
        self.params: list[Any] = []
        self.doc = f"{table.name}.{table.doc}"
        self.aliases = 0
        # Inside ``attr[...]``: the memberships, or the jsonb object, its names refer to.
        self.inner_membership: Membership | None = None
        self.inner_object: str | None = None

    @property
    def in_value_path(self) -> bool:
        return self.inner_membership is not None or self.inner_object is not None

    def param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${self.start + len(self.params) - 1}::{cast}"

    def alias(self) -> str:
        self.aliases += 1
        return "e" if self.aliases == 1 else f"e{self.aliases}"

    def _leaf(self, attr: Attr, build: _Build) -> str:
        """``build``'s test applied to ``attr``, true when any of its values passes."""
        if self.inner_membership is not None:
            return build(self._membership_operand(self.inner_membership, attr.name))
        if self.inner_object is not None:
            return self._json_leaf(self.inner_object, (attr.name,), attr, build)
        table, key = self.table, attr_key(attr)
        column = table.columns.get(key)
        if column is not None:
            return build(_column_operand(column))
        if key in table.unfilterable or attr.name in table.unfilterable:
            raise InvalidFilterError(f"cannot filter on {key!r}")
        membership = table.memberships.get(attr.name) if attr.uri is None else None
        if membership is not None:
            test = build(self._membership_operand(membership, attr.sub or "value"))
            return f"EXISTS ({self._membership_rows(membership)} AND ({test}))"
        return self._json_leaf(self.doc, _doc_keys(attr), attr, build)

    def _json_leaf(self, container: str, keys: tuple[str, ...], attr: Attr, build: _Build) -> str:
        """The test on ``attr``'s values, ``keys`` down from the jsonb ``container``."""
        sub = (attr.sub,) if attr.sub else ()
        if not attr.multi_valued:
            path = _path(*keys, *sub)
            return build(_Operand(f"{container} #>> {path}", f"{container} #> {path}"))
        alias = self.alias()
        rows = f"jsonb_array_elements({_as_array(f'{container} #> {_path(*keys)}')})"
        item = f"{alias}.value"
        if attr.sub:
            operand = _Operand(
                f"{item} ->> {_key_literal(attr.sub)}", f"{item} -> {_key_literal(attr.sub)}"
            )
        else:
            operand = _Operand(f"{item} #>> '{{}}'", item)
        return f"EXISTS (SELECT 1 FROM {rows} AS {alias}(value) WHERE {build(operand)})"

    def _value_path(self, expr: ValuePath) -> str:
        if self.in_value_path:
            raise InvalidFilterError("nested value filters are not supported")
        attr, table = expr.attr, self.table
        if attr.name in table.unfilterable or attr_key(attr) in table.unfilterable:
            raise InvalidFilterError(f"cannot filter on {attr_key(attr)!r}")
        membership = table.memberships.get(attr.name) if attr.uri is None else None
        keys = _doc_keys(attr)
        guard = ""
        if membership is not None:
            rows = self._membership_rows(membership) + " AND"
            self.inner_membership = membership
        elif attr.multi_valued:
            alias = self.alias()
            array = _as_array(f"{self.doc} #> {_path(*keys)}")
            rows = (
                f"SELECT 1 FROM jsonb_array_elements({array}) AS {alias}(value)"
                f" WHERE jsonb_typeof({alias}.value) = 'object' AND"
            )
            self.inner_object = f"{alias}.value"
        else:
            rows = ""
            self.inner_object = f"({self.doc} #> {_path(*keys)})"
            guard = f"jsonb_typeof({self.inner_object}) = 'object'"
        try:
            test = self.expr(expr.filter)
        finally:
            self.inner_membership = self.inner_object = None
        if rows:
            return f"EXISTS ({rows} ({test}))"
        return f"{guard} AND ({test})"

    def _membership_rows(self, membership: Membership) -> str:
        return f"SELECT 1 FROM memberships AS m WHERE m.{membership.owner} = {self.table.name}.id"

    @staticmethod
    def _membership_operand(membership: Membership, sub: str) -> _Operand:
        column = membership.subs.get(sub)
        if column is None:
            raise InvalidFilterError(f"cannot filter on the membership attribute {sub!r}")
        return _column_operand(column)

    @staticmethod
    def _present(operand: _Operand) -> str:
        if operand.jsonb is not None:
            empty = "'null'::jsonb, '\"\"'::jsonb, '[]'::jsonb, '{}'::jsonb"
            return f"COALESCE({operand.jsonb} NOT IN ({empty}), false)"
        if operand.boolean:
            return f"({operand.sql} IS NOT NULL)"
        return f"({operand.sql} IS NOT NULL AND {operand.sql} <> '')"

    def _test(self, operand: _Operand, op: str, value: Scalar, attr: Attr) -> str:
        """``operand op value`` for a non-null ``value``; values of another type never match."""
        if op not in _SYMBOLS and op not in _TEXT_OPS:
            raise InvalidFilterError(f"unknown operator {op!r}")
        if isinstance(value, bool):
            if op != "eq":
                return "FALSE"
            if operand.jsonb is not None:
                return f"{operand.jsonb} = to_jsonb({self.param(value, 'boolean')})"
            return f"{operand.sql} = {self.param(value, 'boolean')}" if operand.boolean else "FALSE"
        if isinstance(value, int | float):
            if op not in _SYMBOLS or operand.jsonb is None:
                return "FALSE"
            number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
            actual = f"CASE WHEN jsonb_typeof({operand.jsonb}) = 'number'"
            actual += f" THEN ({operand.jsonb})::numeric END"
            return f"{actual} {_SYMBOLS[op]} {self.param(number, 'numeric')}"
        if not isinstance(value, str):
            raise InvalidFilterError(f"cannot compare with {value!r}")
        if operand.boolean:
            return "FALSE"
        test = self._text_test(operand, op, value, attr)
        if operand.jsonb is None or test == "FALSE":
            return test
        return f"jsonb_typeof({operand.jsonb}) = 'string' AND {test}"

    def _text_test(self, operand: _Operand, op: str, value: str, attr: Attr) -> str:
        actual, fold_wanted = operand.sql, False
        if attr.type == "dateTime" and op not in _TEXT_OPS:
            value = storage_datetime(value)
        elif operand.folded:
            value = value.casefold()
        elif not attr.case_exact:
            actual, fold_wanted = f"fold({actual})", True
        if "\x00" in value:
            if op not in _BEFORE_NUL:
                return "FALSE"
            value, op = value[: value.index("\x00")], _BEFORE_NUL[op]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidFilterError(f"{value!r} is not valid Unicode text") from None
        wanted = self.param(value, "text")
        if fold_wanted:
            wanted = f"fold({wanted})"
        if op in _ORDERING:
            return f'({actual}) COLLATE "C" {_SYMBOLS[op]} {wanted}'
        if op == "eq":
            return f"{actual} = {wanted}"
        if op == "co":
            return f"strpos({actual}, {wanted}) > 0"
        side = "left" if op == "sw" else "right"
        return f"{side}({actual}, length({wanted})) = {wanted}"


def _column_operand(column: Column) -> _Operand:
    return _Operand(column.sql, folded=column.folded, boolean=column.sql in BOOLEAN_COLUMNS)

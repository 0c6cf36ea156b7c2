"""The walk over a filter that both SQL compilers share, and the helpers they both use."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC
from typing import Generic, TypeVar

from jmlsync.domain.errors import InvalidFilterError
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
        raise InvalidFilterError(f"{value!r} is not a valid dateTime")
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

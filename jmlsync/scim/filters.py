"""SCIM filter text (RFC 7644 §3.4.2.2) to :mod:`jmlsync.domain.filters` nodes.

scim2-filter-parser tokenises and parses; this module works around its known bugs and resolves
every attribute against the schema, so the nodes it returns carry canonical names and types:

* its lexer reads one-digit numbers only, rejects escaped quotes and cannot tell ``"true"``
  from ``true``: :class:`_Lexer` redefines the value tokens so each arrives as a typed value;
* its parser gives ``and`` and ``or`` the same precedence, left to right: :func:`_logical`
  re-associates unparenthesised chains so that ``and`` binds tighter, as the RFC requires;
* it accepts ``emails[type eq "work"].value eq "x"``, which is not in the RFC grammar but is
  what Entra sends to match on a work email: read as ``emails[type eq "work" and value eq "x"]``
  (:func:`_filtered_compare`), so the evaluator and both SQL compilers take it unchanged.

Every problem is answered with :class:`~jmlsync.scim.errors.InvalidFilter`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import reduce
from types import SimpleNamespace
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser, SCIMParserError

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
from jmlsync.domain.text import unstorable
from jmlsync.scim.errors import InvalidFilter, InvalidValue
from jmlsync.scim.schema import Attribute, ResourceType

_ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
_TEXT_OPS = frozenset({"co", "sw", "ew"})
_TEXT_TYPES = frozenset({"string", "reference", "binary"})


def parse_filter(text: str, resource_type: ResourceType) -> Expr:
    """Parse a ``filter`` query parameter for ``resource_type``'s resources."""
    return _parse(text, _Scope(resource_type=resource_type))


def parse_value_filter(text: str, attribute: Attribute) -> Expr:
    """Parse the inside of ``attribute[...]``: names in it are ``attribute``'s sub-attributes."""
    if not attribute.is_complex:
        raise InvalidFilter(f"Invalid filter {text!r}: {attribute.name!r} has no sub-attributes")
    return _parse(text, _Scope(parent=attribute))


class _Problem(Exception):
    """What is wrong with the filter; :func:`_parse` adds the filter text."""


#: Nested parentheses and brackets a filter may have. SQLite's parser stack holds about 100
#: entries: ``not (a and not (b and ...`` overflows it at 12 levels, so 8 leaves a margin.
MAX_FILTER_DEPTH = 8
#: ``and``/``or`` operators a filter may have: they bound the recursion of every filter walk.
MAX_FILTER_TERMS = 100


class _Unstorable(Exception):
    """A string in the filter holds U+0000 or a lone surrogate."""


def _parse(text: str, scope: _Scope) -> Expr:
    if unstorable(text):
        raise InvalidValue("the filter holds U+0000 or a lone surrogate")
    try:
        return _convert(_syntax_tree(text), scope)
    except _Problem as problem:
        shown = repr(text) if len(text) <= 200 else repr(text[:200]) + "..."
        raise InvalidFilter(f"Invalid filter {shown}: {problem}") from None
    except _Unstorable:
        raise InvalidValue("a string in the filter holds U+0000 or a lone surrogate") from None
    except RecursionError:  # a backstop: the limits below should keep it from happening
        raise InvalidFilter("Invalid filter: nested too deep") from None


def _bounded(tokens: Iterator[Any]) -> Iterator[Any]:
    """``tokens``, refused past :data:`MAX_FILTER_DEPTH` nested brackets or parentheses, or
    :data:`MAX_FILTER_TERMS` ``and``/``or`` operators."""
    depth = terms = 0
    for token in tokens:
        if token.type in ("LPAREN", "LBRACKET"):
            depth += 1
            if depth > MAX_FILTER_DEPTH:
                raise _Problem(f"nests deeper than {MAX_FILTER_DEPTH} levels")
        elif token.type in ("RPAREN", "RBRACKET"):
            depth -= 1
        elif token.type in ("AND", "OR"):
            terms += 1
            if terms > MAX_FILTER_TERMS:
                raise _Problem(f"has more than {MAX_FILTER_TERMS} 'and'/'or' operators")
        yield token


class _Lexer(SCIMLexer):  # type: ignore[misc]
    """SCIMLexer with JSON value tokens (RFC 7644 compValue is JSON, RFC 7159)."""

    tokens = SCIMLexer.tokens

    @_(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # type: ignore[name-defined,untyped-decorator]  # noqa: F821
    def NUMBER(self, t: Any) -> Any:
        t.value = json.loads(t.value)
        return t

    @_(r'"(?:[^"\\]|\\.)*"')  # type: ignore[name-defined,untyped-decorator]  # noqa: F821
    def COMP_VALUE(self, t: Any) -> Any:
        try:
            t.value = json.loads(t.value, strict=False)
        except ValueError:
            raise ValueError(f"bad escape in the string at position {t.index}") from None
        if unstorable(t.value):
            raise _Unstorable
        return t

    # \b keeps attributes such as "nullable" or "trueName" from lexing as literals.
    @_(r"true\b")  # type: ignore[name-defined,untyped-decorator]  # noqa: F821
    def TRUE(self, t: Any) -> Any:
        t.value = True
        return t

    @_(r"false\b")  # type: ignore[name-defined,untyped-decorator]  # noqa: F821
    def FALSE(self, t: Any) -> Any:
        t.value = False
        return t

    @_(r"null\b")  # type: ignore[name-defined,untyped-decorator]  # noqa: F821
    def NULL(self, t: Any) -> Any:
        t.value = None
        return t

    def error(self, t: Any) -> None:
        char = t.value[0]
        problem = "unterminated string" if char == '"' else f"unexpected character {char!r}"
        raise ValueError(f"{problem} at position {t.index}")


def _syntax_tree(text: str) -> Any:
    """The parser's tree for ``text``, its errors turned into a :class:`_Problem`."""
    seen: list[Any] = []
    ended = False

    def tokens() -> Iterator[Any]:
        nonlocal ended
        for token in _bounded(_Lexer().tokenize(text)):
            seen[:] = [token]
            yield token
        ended = True

    try:
        tree = SCIMParser().parse(tokens())
    except (_Problem, _Unstorable):
        raise
    except ValueError as exc:
        raise _Problem(str(exc)) from None
    except SCIMParserError:
        # The parser fails on the token it pulled last, or after it pulled them all.
        if ended or not seen:
            raise _Problem("unexpected end of filter") from None
        token = seen[0]
        unexpected = text[token.index : token.end]
        raise _Problem(f"unexpected {unexpected!r} at position {token.index}") from None
    except Exception as exc:  # the library has no other documented failure, but be safe
        raise _Problem(f"cannot be parsed ({type(exc).__name__})") from None
    if tree is None:
        raise _Problem("empty filter")
    return tree


@dataclass(frozen=True)
class _Scope:
    """Where names resolve: a resource type, or inside ``attr[...]`` its sub-attributes."""

    resource_type: ResourceType | None = None
    parent: Attribute | None = None

    def resolve(self, path: Any) -> tuple[Attr, Attribute]:
        """The :class:`Attr` for an ``ast.AttrPath`` and the top attribute's definition."""
        if not isinstance(path.attr_name, str):
            raise _Problem("a value filter cannot be followed by a sub-attribute or a comparison")
        if self.parent is not None:
            return _resolve_sub(path, self.parent)
        assert self.resource_type is not None
        return _resolve_top(path, self.resource_type)


def _spelling(path: Any) -> str:
    uri = f"{path.uri}:" if path.uri else ""
    sub = f".{path.sub_attr.value}" if path.sub_attr is not None else ""
    return f"{uri}{path.attr_name}{sub}"


def _resolve_top(path: Any, resource_type: ResourceType) -> tuple[Attr, Attribute]:
    urn, name = (None, path.attr_name)
    if path.uri:
        urn, name = resource_type.split_urn(f"{path.uri}:{path.attr_name}")
    definition = resource_type.attribute(name, urn)
    if definition is None:
        raise _Problem(f"unknown attribute {_spelling(path)!r}")
    top = Attr(
        definition.name,
        uri=urn,
        type=definition.type,
        case_exact=definition.case_exact,
        multi_valued=definition.multi_valued,
    )
    if path.sub_attr is None:
        return top, definition
    sub = definition.sub(path.sub_attr.value)
    if sub is None:
        raise _Problem(f"unknown attribute {_spelling(path)!r}")
    return replace(top, sub=sub.name, type=sub.type, case_exact=sub.case_exact), definition


def _resolve_sub(path: Any, parent: Attribute) -> tuple[Attr, Attribute]:
    sub = None if path.uri or path.sub_attr is not None else parent.sub(path.attr_name)
    if sub is None:
        raise _Problem(f"{_spelling(path)!r} is not a sub-attribute of {parent.name!r}")
    attr = Attr(sub.name, type=sub.type, case_exact=sub.case_exact, multi_valued=sub.multi_valued)
    return attr, sub


def _convert(node: Any, scope: _Scope) -> Expr:
    """One ``ast.Filter`` as a domain node."""
    inner = node.expr
    expr: Expr
    if isinstance(inner, ast.Filter) and inner.namespace is not None:
        expr = _value_path(inner, scope)
    elif isinstance(inner, ast.Filter):
        # A parenthesised group: the parser wraps the group's own Filter once more.
        expr = _convert(inner, scope)
    elif isinstance(inner, ast.LogExpr):
        expr = _logical(inner, scope)
    elif isinstance(inner, ast.AttrExpr):
        expr = _attr_expr(inner, scope)
    else:
        raise _Problem(f"unsupported expression {type(inner).__name__}")
    return Not(expr) if node.negated else expr


def _logical(node: Any, scope: _Scope) -> Expr:
    """A chain of ``and``/``or`` with ``and`` binding tighter than ``or``."""
    operands: list[Expr] = []
    ops: list[str] = []
    _flatten(node, scope, operands, ops)
    terms = [operands[0]]
    for op, operand in zip(ops, operands[1:], strict=True):
        if op == "and":
            terms[-1] = And(terms[-1], operand)
        else:
            terms.append(operand)
    return reduce(Or, terms)


def _flatten(node: Any, scope: _Scope, operands: list[Expr], ops: list[str]) -> None:
    # The parser nests unparenthesised chains as Filter(LogExpr) directly; parenthesised ones
    # sit inside an extra Filter and so stay whole operands.
    for index, side in enumerate((node.expr1, node.expr2)):
        if index:
            ops.append(node.op.lower())
        if isinstance(side.expr, ast.LogExpr) and not side.negated:
            _flatten(side.expr, scope, operands, ops)
        else:
            operands.append(_convert(side, scope))


def _value_path(node: Any, scope: _Scope) -> ValuePath:
    if scope.parent is not None:
        raise _Problem("nested value filters are not supported")
    if node.namespace.sub_attr is not None:
        raise _Problem(f"a value filter needs an attribute, not {_spelling(node.namespace)!r}")
    attr, definition = scope.resolve(node.namespace)
    if not definition.is_complex:
        raise _Problem(f"{definition.name!r} has no sub-attributes to filter on")
    return ValuePath(attr, _convert(node.expr, _Scope(parent=definition)))


def _filtered_compare(node: Any, scope: _Scope) -> ValuePath:
    """``attr[filter].sub op value`` as ``attr[filter and sub op value]``."""
    filtered = node.attr_path.attr_name
    namespace = filtered.namespace
    if scope.parent is not None:
        raise _Problem("nested value filters are not supported")
    if namespace is None or namespace.sub_attr is None or node.attr_path.sub_attr is not None:
        raise _Problem("a value filter can only be followed by '.subAttribute' and a comparison")
    top = SimpleNamespace(attr_name=namespace.attr_name, uri=namespace.uri, sub_attr=None)
    attr, definition = scope.resolve(top)
    if not definition.is_complex:
        raise _Problem(f"{definition.name!r} has no sub-attributes to filter on")
    inner = _Scope(parent=definition)
    sub = SimpleNamespace(attr_name=namespace.sub_attr.value, uri=None, sub_attr=None)
    comparison = SimpleNamespace(value=node.value, attr_path=sub, comp_value=node.comp_value)
    return ValuePath(attr, And(_convert(filtered.expr, inner), _attr_expr(comparison, inner)))


def _attr_expr(node: Any, scope: _Scope) -> Expr:
    if not isinstance(node.attr_path.attr_name, str):
        return _filtered_compare(node, scope)
    op = str(node.value).lower()
    attr, definition = scope.resolve(node.attr_path)
    if node.comp_value is None:
        return Present(attr)
    value: Scalar = node.comp_value.value
    if attr.type == "complex":
        # RFC 7644 §3.4.2.2: a multi-valued complex attribute compares by its "value".
        sub = definition.sub("value")
        if sub is None:
            raise _Problem(f"complex attribute {attr.name!r} needs a sub-attribute to compare")
        attr = replace(attr, sub=sub.name, type=sub.type, case_exact=sub.case_exact)
    _check(attr, op, value)
    return Compare(attr, op, value)


def _check(attr: Attr, op: str, value: Scalar) -> None:
    """Reject comparisons the attribute's type does not allow (RFC 7644 §3.4.2.2)."""
    name = attr.name if attr.sub is None else f"{attr.name}.{attr.sub}"
    if value is None:
        if op not in ("eq", "ne"):
            raise _Problem(f"null can only be compared with eq or ne, not {op}")
        return
    if op in _ORDER_OPS and attr.type in ("boolean", "binary"):
        raise _Problem(f"{op} is not allowed on the {attr.type} attribute {name!r}")
    if op in _TEXT_OPS and attr.type not in _TEXT_TYPES:
        raise _Problem(f"{op} is not allowed on the {attr.type} attribute {name!r}")
    if not _value_fits(attr.type, value):
        raise _Problem(f"{json.dumps(value)} is not a valid {attr.type} for {name!r}")


def _value_fits(type_: str, value: Scalar) -> bool:
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ in ("integer", "decimal"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "dateTime":
        return isinstance(value, str) and parse_datetime(value) is not None
    return isinstance(value, str)

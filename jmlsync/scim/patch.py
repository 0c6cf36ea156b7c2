"""PATCH (RFC 7644 §3.5.2) as a pure function from a stored doc and a request body.

Every operation is checked before anything is answered: :func:`apply_patch` either returns the
complete new doc or raises a :class:`~jmlsync.scim.errors.ScimError`, so the store can apply the
result in one transaction without undo logic.

``Group.members`` never enters the doc (a group may have 100k members): operations on it become
:class:`~jmlsync.domain.directory.MemberOp` values the store applies in order, which is why member
filters are limited to ``value eq "<id>"`` (joined by ``or``): they name ids without reading rows.

What Okta and Entra send beyond the RFC is accepted on purpose (see docs/idp-compatibility.md):
capitalised ops, booleans as strings, path-less values repeating read-only ``id``, dotted and
filtered keys in path-less values, ``remove`` of ``members`` with a value list (removes those
members only), and a filtered ``replace`` that matches nothing (adds the value). Paths and
keys naming attributes no schema declares are refused, dropped or kept aside as the caller's
:class:`~jmlsync.scim.unknown.Unknowns` says (``[scim].unknown_attributes``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from jmlsync.domain.directory import Member, MemberOp
from jmlsync.domain.filters import And, Compare, Expr, Or, matches
from jmlsync.scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
)
from jmlsync.scim.paths import PatchPath, UnknownPath, parse_path
from jmlsync.scim.schema import PATCH_OP_SCHEMA, Attribute, ResourceType
from jmlsync.scim.unknown import Unknowns
from jmlsync.scim.validate import (
    check_primary,
    finalize_doc,
    is_membership,
    keep_unknown,
    normalize_attribute_value,
    normalize_members,
)

__all__ = ["MemberOp", "PatchResult", "apply_patch"]

Op = Literal["add", "remove", "replace"]
_OPS: dict[str, Op] = {"add": "add", "remove": "remove", "replace": "replace"}
_MISSING = object()


@dataclass(frozen=True)
class PatchResult:
    """A patched resource: the new doc and, for a Group, its membership changes in order."""

    doc: dict[str, Any]
    members: tuple[MemberOp, ...] = ()


def apply_patch(
    resource_type: ResourceType,
    doc: dict[str, Any],
    body: Any,
    unknowns: Unknowns | None = None,
) -> PatchResult:
    """Apply a PatchOp ``body`` to ``doc`` (left untouched) and answer the result.

    Raises InvalidSyntax for a malformed body, InvalidValue for a bad op or value, InvalidPath
    or InvalidFilter for a bad path, NoTarget for a path-less remove, Mutability for a write
    to a read-only attribute. Required attributes must still be present afterwards.

    Paths and keys naming attributes the schemas do not define are refused (InvalidPath),
    unless ``unknowns`` says to ignore them (the operation is dropped, everything else
    applies) or to store them; it records their names either way.
    """
    patcher = _Patcher(resource_type, copy.deepcopy(doc), unknowns or Unknowns())
    for index, raw in enumerate(_operations(body)):
        op, text, value = _operation(raw, f"Operations[{index}]")
        patcher.apply(op, text, value)
    finalize_doc(resource_type, patcher.doc)
    return PatchResult(doc=patcher.doc, members=tuple(patcher.members))


def _field(mapping: dict[str, Any], name: str) -> Any:
    """``mapping[name]`` with the key matched in any case (Entra and Okta differ), or _MISSING."""
    lowered = name.lower()
    return next((v for k, v in mapping.items() if k.lower() == lowered), _MISSING)


def _operations(body: Any) -> list[Any]:
    if not isinstance(body, dict):
        raise InvalidSyntax("the request body must be a JSON object")
    schemas = _field(body, "schemas")
    # Both Okta and Entra send `schemas`; a body without it is still unambiguous, so accept it.
    if schemas is not _MISSING and (
        not isinstance(schemas, list)
        or PATCH_OP_SCHEMA.lower() not in {s.lower() for s in schemas if isinstance(s, str)}
    ):
        raise InvalidValue(f"'schemas' must contain '{PATCH_OP_SCHEMA}'")
    operations = _field(body, "Operations")
    if not isinstance(operations, list):
        raise InvalidSyntax("a PATCH body needs an 'Operations' list")
    if not operations:
        raise InvalidValue("'Operations' must not be empty")
    return operations


def _operation(raw: Any, where: str) -> tuple[Op, str | None, Any]:
    if not isinstance(raw, dict):
        raise InvalidSyntax(f"'{where}' must be an object")
    name = _field(raw, "op")
    op = _OPS.get(name.lower()) if isinstance(name, str) else None
    if op is None:
        raise InvalidValue(f"'{where}.op' must be one of add, remove, replace")
    text = _field(raw, "path")
    if text is not _MISSING and text is not None and not isinstance(text, str):
        raise InvalidPath(f"'{where}.path' must be a string")
    value = _field(raw, "value")
    if value is _MISSING:
        if op != "remove":
            raise InvalidValue(f"'{where}' ({op}) needs a value")
        value = None
    return op, text if isinstance(text, str) and text.strip() else None, value


def _member_ids(expr: Expr) -> frozenset[str]:
    if isinstance(expr, Or):
        return _member_ids(expr.left) | _member_ids(expr.right)
    if (
        isinstance(expr, Compare)
        and expr.op.lower() == "eq"
        and expr.attr.name.lower() == "value"
        and expr.attr.sub is None
        and isinstance(expr.value, str)
    ):
        return frozenset({expr.value})
    raise InvalidFilter('members can only be selected by value eq "<id>", joined by or')


def _eq_terms(expr: Expr) -> dict[str, Any] | None:
    """The item an ``eq``-only conjunction describes, e.g. ``{"type": "work"}``; else None."""
    if isinstance(expr, And):
        left, right = _eq_terms(expr.left), _eq_terms(expr.right)
        if left is None or right is None or any(left[k] != right[k] for k in left.keys() & right):
            return None
        return {**left, **right}
    if isinstance(expr, Compare) and expr.op.lower() == "eq" and expr.attr.sub is None:
        return None if expr.value is None else {expr.attr.name: expr.value}
    return None


def _assign(holder: dict[str, Any], key: str, value: Any) -> None:
    """Set ``holder[key]``, or drop the key when ``value`` is empty (absent, in SCIM terms)."""
    if value is None or value == [] or value == {}:
        holder.pop(key, None)
    else:
        holder[key] = value


def _check_immutable(attribute: Attribute, old: Any, new: Any, path: str) -> None:
    if attribute.mutability == "immutable" and old is not None and old != new:
        raise Mutability(f"attribute '{path}' is immutable")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass
class _Patcher:
    """Applies operations one by one to its own copy of the doc, collecting member changes."""

    resource_type: ResourceType
    doc: dict[str, Any]
    unknowns: Unknowns
    members: list[MemberOp] = field(default_factory=list)

    def apply(self, op: Op, text: str | None, value: Any) -> None:
        if text is None:
            if op == "remove":
                raise NoTarget("remove needs a path")
            if not isinstance(value, dict):
                raise InvalidValue(f"{op} without a path needs an object value")
            self._apply_object(op, value, None)
            return
        path = self._parse(op, text, value)
        if path is None:
            return
        if path.read_only:
            raise Mutability(f"attribute '{path.text}' is read-only")
        else:
            self._apply_path(op, path, value, merge=False)

    def _apply_object(self, op: Op, value: dict[str, Any], urn: str | None) -> None:
        """Apply each key of a path-less value (or an extension object) as its own path."""
        for key, item in value.items():
            # scim2-models serialises an extension object with its own `schemas`: skip it too.
            if key.lower() == "schemas":
                continue
            path = self._parse(op, key if urn is None else f"{urn}:{key}", item)
            # Okta repeats the group's `id` in every membership update: ignore, don't fail.
            if path is not None and not path.read_only:
                self._apply_path(op, path, item, merge=True)

    def _normalize(self, attribute: Attribute, value: Any, path: PatchPath) -> Any:
        return normalize_attribute_value(attribute, value, path=path.text, unknowns=self.unknowns)

    def _parse(self, op: Op, text: str, value: Any) -> PatchPath | None:
        """The resolved path, or None when it names an undeclared attribute that
        :attr:`unknowns` lets through (stored aside in ``store`` mode)."""
        try:
            return parse_path(self.resource_type, text)
        except UnknownPath as unknown:
            name = text.strip()
            # Refused as the plain InvalidPath it always was.
            refusal = InvalidPath(unknown.detail)
            if self.unknowns.meet(name, refusal, storable=unknown.top_level):
                keep_unknown(self.resource_type, self.doc, name, value, remove=op == "remove")
            return None

    def _apply_path(self, op: Op, path: PatchPath, value: Any, *, merge: bool) -> None:
        attribute = path.attribute
        if attribute is None:
            self._extension(op, path, value, merge=merge)
        elif is_membership(attribute):
            self._members(op, path, value)
        elif op == "remove" or (op == "replace" and value is None):
            self._remove(attribute, path, value if op == "remove" else None)
        elif value is None:
            return
        elif attribute.multi_valued:
            self._set_multi(op, attribute, path, value)
        else:
            self._set_single(op, attribute, path, value, merge=merge)

    def _holder(self, urn: str | None) -> dict[str, Any]:
        if urn is None:
            return self.doc
        holder: dict[str, Any] = self.doc.setdefault(urn, {})
        return holder

    def _extension(self, op: Op, path: PatchPath, value: Any, *, merge: bool) -> None:
        assert path.urn is not None
        if op == "remove" or value is None:
            if op != "add":
                self.doc.pop(path.urn, None)
            return
        if not isinstance(value, dict):
            raise InvalidValue(f"'{path.text}' must be an object")
        if op == "replace" and not merge:
            self.doc.pop(path.urn, None)
        self._apply_object(op, value, path.urn)

    def _set_single(
        self, op: Op, attribute: Attribute, path: PatchPath, value: Any, *, merge: bool
    ) -> None:
        holder = self._holder(path.urn)
        old = holder.get(attribute.name)
        if path.sub is not None:
            new = self._normalize(path.sub, value, path)
            container = dict(old or {})
            _check_immutable(path.sub, container.get(path.sub.name), new, path.text)
            _assign(container, path.sub.name, new)
            _assign(holder, attribute.name, container)
            return
        new = self._normalize(attribute, value, path)
        if new is None and (op == "add" or merge):
            return
        # An explicit `replace` of a complex attribute replaces it; `add` and path-less values
        # merge sub-attributes, which Entra's dotted keys and partial objects rely on.
        if attribute.is_complex and (op == "add" or merge) and isinstance(old, dict):
            new = {**old, **new}
        _check_immutable(attribute, old, new, path.text)
        _assign(holder, attribute.name, new)

    def _set_multi(self, op: Op, attribute: Attribute, path: PatchPath, value: Any) -> None:
        holder = self._holder(path.urn)
        items: list[Any] = list(holder.get(attribute.name) or [])
        if path.filter is None and path.sub is None:
            given = self._normalize(attribute, _as_list(value), path) or []
            if op == "replace":
                items = []
            fresh = [item for i, item in enumerate(given) if item not in items + given[:i]]
            touched = set(range(len(items), len(items) + len(fresh)))
            items.extend(fresh)
        else:
            touched = self._set_matching(op, attribute, path, value, items)
        self._fix_primary(attribute, items, touched, path.text)
        _assign(holder, attribute.name, items)

    def _set_matching(
        self, op: Op, attribute: Attribute, path: PatchPath, value: Any, items: list[Any]
    ) -> set[int]:
        """Update the items ``path`` selects in place (all of them without a filter).

        When none matches, an item is added, built from the filter's ``eq`` terms: Entra
        expects ``replace emails[type eq "work"].value`` to create the work email.
        """
        if path.sub is not None:
            sub = self._normalize(path.sub, value, path)
            patch = {path.sub.name: sub}
        else:
            patch = self._one_item(attribute, path, value)
        touched = {
            index
            for index, item in enumerate(items)
            if path.filter is None or matches(path.filter, item)
        }
        for index in touched:
            whole = op == "replace" and path.sub is None
            items[index] = patch if whole else {**items[index], **patch}
        if not touched:
            terms = {} if path.filter is None else _eq_terms(path.filter)
            if terms is None:
                raise NoTarget(f"no value matches the filter in '{path.text}'")
            items.append(self._one_item(attribute, path, {**terms, **patch}))
            touched.add(len(items) - 1)
        return touched

    def _one_item(self, attribute: Attribute, path: PatchPath, value: Any) -> dict[str, Any]:
        given = self._normalize(attribute, _as_list(value), path) or []
        if len(given) != 1:
            raise InvalidValue(f"'{path.text}' needs exactly one value")
        item: dict[str, Any] = given[0]
        return item

    @staticmethod
    def _fix_primary(attribute: Attribute, items: list[Any], touched: set[int], path: str) -> None:
        """A value newly marked primary takes the flag from the others (RFC 7643 §2.4)."""
        if attribute.sub("primary") is None:
            return
        if any(items[i].get("primary") is True for i in touched):
            for index, item in enumerate(items):
                if index not in touched and item.get("primary") is True:
                    items[index] = {**item, "primary": False}
        check_primary(attribute, items, path=path)

    def _remove(self, attribute: Attribute, path: PatchPath, value: Any) -> None:
        if attribute.required and path.sub is None:
            raise InvalidValue(f"attribute '{attribute.name}' is required and cannot be removed")
        holder = self._holder(path.urn)
        old = holder.get(attribute.name)
        if old is None:
            return
        if not attribute.multi_valued:
            if path.sub is None:
                holder.pop(attribute.name)
            else:
                _assign(
                    holder, attribute.name, {k: v for k, v in old.items() if k != path.sub.name}
                )
            return
        _assign(holder, attribute.name, self._remaining(attribute, path, value, old))

    def _remaining(
        self, attribute: Attribute, path: PatchPath, value: Any, items: list[Any]
    ) -> list[Any]:
        """The items left after a remove; selecting nothing is not an error (idempotent)."""
        if path.filter is None and path.sub is None:
            if value is None:
                return []
            listed = self._normalize(attribute, _as_list(value), path) or []
            ids = {i.get("value") for i in listed if isinstance(i, dict) and "value" in i}
            return [
                item
                for item in items
                if item not in listed and not (isinstance(item, dict) and item.get("value") in ids)
            ]
        selected = [path.filter is None or matches(path.filter, item) for item in items]
        if path.sub is None:
            return [item for item, hit in zip(items, selected, strict=True) if not hit]
        sub = path.sub.name
        stripped = [
            {k: v for k, v in item.items() if k != sub} if hit else item
            for item, hit in zip(items, selected, strict=True)
        ]
        return [item for item in stripped if item]

    def _members(self, op: Op, path: PatchPath, value: Any) -> None:
        """Turn an operation on Group.members into MemberOps; the doc never holds members."""
        if path.sub is not None:
            raise InvalidPath(f"'{path.text}': members are added, removed or replaced whole")
        ids = _member_ids(path.filter) if path.filter is not None else None
        if op == "add" and ids is not None:
            raise InvalidPath(f"'{path.text}': add takes the path 'members' without a filter")
        items = () if value is None else self._member_items(path, value)
        if op == "remove":
            if ids is None and value is not None:
                # Entra's default removal: `path: members` with the members to remove as value.
                ids = frozenset(member.value for member in items)
            self._emit(MemberOp("clear") if ids is None else MemberOp("remove", ids=ids))
        elif op == "add":
            self._emit(MemberOp("add", items=items))
        elif ids is not None:
            self._emit(MemberOp("remove", ids=ids))
            self._emit(MemberOp("add", items=items))
        else:
            self._emit(MemberOp("replace", items=items) if items else MemberOp("clear"))

    def _member_items(self, path: PatchPath, value: Any) -> tuple[Member, ...]:
        listed = normalize_members(_as_list(value), path=path.text, unknowns=self.unknowns)
        return tuple(Member(value=m["value"], display=m.get("display")) for m in listed)

    def _emit(self, member_op: MemberOp) -> None:
        if member_op.action in ("add", "remove") and not (member_op.items or member_op.ids):
            return
        self.members.append(member_op)

"""Tests of jmlsync.scim.patch: RFC 7644 §3.5.2 PATCH, with what Okta and Entra really send."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jmlsync.domain.directory import Member, MemberOp
from jmlsync.scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    ScimError,
)
from jmlsync.scim.patch import PatchResult, apply_patch
from jmlsync.scim.paths import parse_path
from jmlsync.scim.schema import (
    ENTERPRISE_USER_SCHEMA,
    GROUP,
    GROUP_SCHEMA,
    PATCH_OP_SCHEMA,
    USER,
    USER_SCHEMA,
    Attribute,
    ResourceType,
    Schema,
)

ENT = ENTERPRISE_USER_SCHEMA
HOME = {"value": "alice@home.example", "type": "home", "primary": True}
WORK = {"value": "alice@work.example", "type": "work"}

USER_DOC: dict[str, Any] = {
    "schemas": [USER_SCHEMA],
    "userName": "alice",
    "displayName": "Alice Smith",
    "active": True,
    "name": {"givenName": "Alice", "familyName": "Smith"},
    "emails": [HOME],
}
USER_WITH_WORK: dict[str, Any] = {**USER_DOC, "emails": [HOME, WORK]}
USER_WITH_ENT: dict[str, Any] = {
    **USER_DOC,
    "schemas": [USER_SCHEMA, ENT],
    ENT: {"department": "Eng", "manager": {"value": "m0"}},
}
GROUP_DOC: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "displayName": "Engineering"}


def body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": list(operations)}


def run(resource_type: ResourceType, doc: dict[str, Any], patch: Any) -> PatchResult:
    """Apply ``patch`` and check the input doc came back untouched."""
    before = copy.deepcopy(doc)
    result = apply_patch(resource_type, doc, patch)
    assert doc == before
    return result


def user(**changes: Any) -> dict[str, Any]:
    """USER_DOC with ``changes`` (a None value deletes the key)."""
    doc = {**USER_DOC, **changes}
    return {k: v for k, v in doc.items() if v is not None}


USER_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # Okta
    (
        "okta deactivate: path-less replace",
        USER_DOC,
        body({"op": "replace", "value": {"active": False}}),
        user(active=False),
    ),
    (
        "okta reactivate",
        user(active=False),
        body({"op": "replace", "value": {"active": True}}),
        USER_DOC,
    ),
    # Entra
    (
        "entra deactivate: Replace active 'False'",
        USER_DOC,
        body({"op": "Replace", "path": "active", "value": "False"}),
        user(active=False),
    ),
    (
        "entra reactivate: Replace active 'True'",
        user(active=False),
        body({"op": "Replace", "path": "active", "value": "True"}),
        USER_DOC,
    ),
    (
        "entra deactivate with a boolean (aadOptscim062020)",
        USER_DOC,
        body({"op": "replace", "path": "active", "value": False}),
        user(active=False),
    ),
    (
        "entra work email replace, no work email yet: added",
        USER_DOC,
        body({"op": "Replace", "path": 'emails[type eq "work"].value', "value": "a@w.example"}),
        user(emails=[HOME, {"type": "work", "value": "a@w.example"}]),
    ),
    (
        "entra work email replace, work email present: updated",
        USER_WITH_WORK,
        body({"op": "Replace", "path": 'emails[type eq "work"].value', "value": "a@w.example"}),
        user(emails=[HOME, {**WORK, "value": "a@w.example"}]),
    ),
    (
        "entra work email add, no work email yet: added",
        USER_DOC,
        body({"op": "Add", "path": 'emails[type eq "work"].value', "value": "a@w.example"}),
        user(emails=[HOME, {"type": "work", "value": "a@w.example"}]),
    ),
    (
        "entra name.familyName",
        USER_DOC,
        body({"op": "Replace", "path": "name.familyName", "value": "Jones"}),
        user(name={"givenName": "Alice", "familyName": "Jones"}),
    ),
    (
        "entra path-less dotted keys merge into name",
        USER_DOC,
        body({"op": "replace", "value": {"displayName": "x", "name.givenName": "y"}}),
        user(displayName="x", name={"givenName": "y", "familyName": "Smith"}),
    ),
    (
        "entra manager by URN path with an object",
        USER_DOC,
        body({"op": "Add", "path": f"{ENT}:manager", "value": {"value": "m1"}}),
        user(schemas=[USER_SCHEMA, ENT], **{ENT: {"manager": {"value": "m1"}}}),
    ),
    (
        "entra manager, old form: short path and a one-item list",
        USER_DOC,
        body({"op": "Add", "path": "manager", "value": [{"$ref": "../Users/m1", "value": "m1"}]}),
        user(
            schemas=[USER_SCHEMA, ENT], **{ENT: {"manager": {"$ref": "../Users/m1", "value": "m1"}}}
        ),
    ),
    (
        "entra manager as a bare id replaces the old one",
        USER_WITH_ENT,
        body({"op": "Replace", "path": f"{ENT}:manager", "value": "m1"}),
        {**USER_WITH_ENT, ENT: {"department": "Eng", "manager": {"value": "m1"}}},
    ),
    (
        "entra filtered path-less key",
        USER_DOC,
        body({"op": "replace", "value": {'emails[type eq "work"].value': "a@w.example"}}),
        user(emails=[HOME, {"type": "work", "value": "a@w.example"}]),
    ),
    # add
    (
        "add a simple attribute",
        USER_DOC,
        body({"op": "add", "path": "nickName", "value": "Al"}),
        user(nickName="Al"),
    ),
    (
        "add to a complex attribute merges",
        USER_DOC,
        body({"op": "add", "path": "name", "value": {"middleName": "B"}}),
        user(name={"givenName": "Alice", "familyName": "Smith", "middleName": "B"}),
    ),
    (
        "add emails appends",
        USER_DOC,
        body({"op": "add", "path": "emails", "value": [WORK]}),
        USER_WITH_WORK,
    ),
    (
        "add a single email object",
        USER_DOC,
        body({"op": "add", "path": "emails", "value": WORK}),
        USER_WITH_WORK,
    ),
    (
        "add an email equal to an existing one is skipped",
        USER_WITH_WORK,
        body({"op": "add", "path": "emails", "value": [WORK, HOME]}),
        USER_WITH_WORK,
    ),
    (
        "add a primary email clears primary on the others",
        USER_DOC,
        body({"op": "add", "path": "emails", "value": [{**WORK, "primary": True}]}),
        user(emails=[{**HOME, "primary": False}, {**WORK, "primary": True}]),
    ),
    (
        "set primary through a filter clears it on the others",
        USER_WITH_WORK,
        body({"op": "replace", "path": 'emails[type eq "work"].primary', "value": True}),
        user(emails=[{**HOME, "primary": False}, {**WORK, "primary": True}]),
    ),
    (
        "path-less add merges keys",
        USER_DOC,
        body({"op": "add", "value": {"nickName": "Al", "emails": [WORK]}}),
        {**USER_WITH_WORK, "nickName": "Al"},
    ),
    (
        "add with a null value does nothing",
        USER_DOC,
        body({"op": "add", "path": "nickName", "value": None}),
        USER_DOC,
    ),
    (
        "attribute names in any case",
        USER_DOC,
        body({"op": "ADD", "path": "NAME.MIDDLENAME", "value": "B"}),
        user(name={"givenName": "Alice", "familyName": "Smith", "middleName": "B"}),
    ),
    (
        "core URN prefix on a path",
        USER_DOC,
        body({"op": "replace", "path": f"{USER_SCHEMA}:displayName", "value": "A"}),
        user(displayName="A"),
    ),
    (
        "filter with escaped quotes",
        user(emails=[{"value": 'a"]b', "type": "other"}]),
        body({"op": "remove", "path": 'emails[value eq "a\\"]b"]'}),
        user(emails=None),
    ),
    (
        "and-of-eq filter matching nothing adds an item with every term",
        USER_WITH_WORK,
        body(
            {
                "op": "replace",
                "path": 'emails[type eq "work" and primary eq true].value',
                "value": "p@w",
            }
        ),
        user(
            emails=[
                {**HOME, "primary": False},
                WORK,
                {"type": "work", "primary": True, "value": "p@w"},
            ]
        ),
    ),
    (
        "path-less replace with an empty object changes nothing",
        USER_DOC,
        body({"op": "replace", "value": {"name": {}}}),
        USER_DOC,
    ),
    # replace
    (
        "explicit replace of a complex attribute replaces it",
        USER_DOC,
        body({"op": "replace", "path": "name", "value": {"givenName": "Al"}}),
        user(name={"givenName": "Al"}),
    ),
    (
        "path-less replace of a complex attribute merges",
        USER_DOC,
        body({"op": "replace", "value": {"name": {"givenName": "Al"}}}),
        user(name={"givenName": "Al", "familyName": "Smith"}),
    ),
    (
        "replace emails replaces the list",
        USER_WITH_WORK,
        body({"op": "replace", "path": "emails", "value": [WORK]}),
        user(emails=[WORK]),
    ),
    (
        "replace a filtered item",
        USER_WITH_WORK,
        body(
            {
                "op": "replace",
                "path": 'emails[type eq "home"]',
                "value": {"value": "n@h", "type": "home"},
            }
        ),
        user(emails=[{"value": "n@h", "type": "home"}, WORK]),
    ),
    (
        "replace a filtered item that matches nothing adds it",
        USER_DOC,
        body(
            {"op": "replace", "path": 'emails[type eq "work"]', "value": {"value": "a@w.example"}}
        ),
        user(emails=[HOME, {"type": "work", "value": "a@w.example"}]),
    ),
    (
        "replace with null removes",
        user(nickName="Al"),
        body({"op": "replace", "path": "nickName", "value": None}),
        USER_DOC,
    ),
    (
        "path-less replace ignores read-only keys",
        USER_DOC,
        body(
            {
                "op": "replace",
                "value": {"id": "x", "meta": {}, "schemas": [], "groups": [], "title": "T"},
            }
        ),
        user(title="T"),
    ),
    # remove
    (
        "remove a simple attribute",
        USER_DOC,
        body({"op": "remove", "path": "displayName"}),
        user(displayName=None),
    ),
    (
        "remove a sub-attribute",
        USER_DOC,
        body({"op": "remove", "path": "name.givenName"}),
        user(name={"familyName": "Smith"}),
    ),
    (
        "remove the last sub-attribute removes the attribute",
        user(name={"givenName": "A"}),
        body({"op": "remove", "path": "name.givenName"}),
        user(name=None),
    ),
    (
        "remove all emails",
        USER_WITH_WORK,
        body({"op": "remove", "path": "emails"}),
        user(emails=None),
    ),
    (
        "remove filtered emails",
        USER_WITH_WORK,
        body({"op": "Remove", "path": 'emails[type eq "home"]'}),
        user(emails=[WORK]),
    ),
    (
        "remove a filter matching nothing is a no-op",
        USER_DOC,
        body({"op": "remove", "path": 'emails[type eq "work"]'}),
        USER_DOC,
    ),
    (
        "remove a sub-attribute of filtered items",
        USER_WITH_WORK,
        body({"op": "remove", "path": 'emails[type eq "home"].primary'}),
        user(emails=[{"value": "alice@home.example", "type": "home"}, WORK]),
    ),
    (
        "remove with a value list removes those items only",
        USER_WITH_WORK,
        body({"op": "remove", "path": "emails", "value": [{"value": "alice@home.example"}]}),
        user(emails=[WORK]),
    ),
    (
        "remove an absent attribute is a no-op",
        USER_DOC,
        body({"op": "remove", "path": "nickName"}),
        USER_DOC,
    ),
    # extension
    (
        "path-less URN key with an object",
        USER_DOC,
        body({"op": "add", "value": {ENT: {"department": "Ops"}}}),
        user(schemas=[USER_SCHEMA, ENT], **{ENT: {"department": "Ops"}}),
    ),
    (
        "path-less URN-prefixed key merges into the extension",
        USER_WITH_ENT,
        body({"op": "replace", "value": {f"{ENT}:department": "Ops"}}),
        {**USER_WITH_ENT, ENT: {"department": "Ops", "manager": {"value": "m0"}}},
    ),
    (
        "extension sub-attribute path",
        USER_WITH_ENT,
        body({"op": "replace", "path": f"{ENT}:manager.value", "value": "m2"}),
        {**USER_WITH_ENT, ENT: {"department": "Eng", "manager": {"value": "m2"}}},
    ),
    (
        "extension object carrying its own schemas (scim2-models)",
        USER_WITH_ENT,
        body({"op": "add", "path": ENT, "value": {"schemas": [ENT], "costCenter": "42"}}),
        {
            **USER_WITH_ENT,
            ENT: {"department": "Eng", "manager": {"value": "m0"}, "costCenter": "42"},
        },
    ),
    (
        "explicit replace of the extension replaces it",
        USER_WITH_ENT,
        body({"op": "replace", "path": ENT, "value": {"costCenter": "42"}}),
        {**USER_WITH_ENT, ENT: {"costCenter": "42"}},
    ),
    (
        "remove the last extension attribute drops the extension schema",
        {**USER_DOC, "schemas": [USER_SCHEMA, ENT], ENT: {"department": "Eng"}},
        body({"op": "remove", "path": f"{ENT}:department"}),
        USER_DOC,
    ),
    ("remove the whole extension", USER_WITH_ENT, body({"op": "remove", "path": ENT}), USER_DOC),
    # body leniency
    (
        "body without schemas",
        USER_DOC,
        {"Operations": [{"op": "replace", "value": {"active": False}}]},
        user(active=False),
    ),
    (
        "Operations key in another case, ops applied in order",
        USER_DOC,
        {
            "schemas": [PATCH_OP_SCHEMA],
            "operations": [
                {"op": "add", "path": "nickName", "value": "A"},
                {"op": "replace", "path": "nickName", "value": "B"},
            ],
        },
        user(nickName="B"),
    ),
]


@pytest.mark.parametrize(
    ("doc", "patch", "expected"), [c[1:] for c in USER_CASES], ids=[c[0] for c in USER_CASES]
)
def test_user_patch(doc: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    result = run(USER, doc, patch)
    assert result.doc == expected
    assert result.members == ()


U1 = Member(value="u1", display="A")
GROUP_CASES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[MemberOp, ...]]] = [
    (
        "okta path-less replace repeats the read-only id",
        body({"op": "replace", "value": {"id": "g1", "displayName": "Eng"}}),
        {**GROUP_DOC, "displayName": "Eng"},
        (),
    ),
    (
        "okta remove member by filter",
        body({"op": "remove", "path": 'members[value eq "u1"]'}),
        GROUP_DOC,
        (MemberOp("remove", ids=frozenset({"u1"})),),
    ),
    (
        "okta add members",
        body({"op": "add", "path": "members", "value": [{"value": "u1", "display": "A"}]}),
        GROUP_DOC,
        (MemberOp("add", items=(U1,)),),
    ),
    (
        "okta replace members with the full list",
        body(
            {
                "op": "replace",
                "path": "members",
                "value": [{"value": "u1", "display": "A"}, {"value": "u2"}],
            }
        ),
        GROUP_DOC,
        (MemberOp("replace", items=(U1, Member("u2"))),),
    ),
    (
        "entra Add member with a null $ref",
        body({"op": "Add", "path": "members", "value": [{"$ref": None, "value": "u1"}]}),
        GROUP_DOC,
        (MemberOp("add", items=(Member("u1"),)),),
    ),
    (
        "entra Remove member by value list removes only that member",
        body({"op": "Remove", "path": "members", "value": [{"$ref": None, "value": "u1"}]}),
        GROUP_DOC,
        (MemberOp("remove", ids=frozenset({"u1"})),),
    ),
    (
        "remove with an empty value list removes nothing",
        body({"op": "Remove", "path": "members", "value": []}),
        GROUP_DOC,
        (),
    ),
    (
        "remove members without a value clears",
        body({"op": "remove", "path": "members"}),
        GROUP_DOC,
        (MemberOp("clear"),),
    ),
    (
        "replace members with an empty list clears",
        body({"op": "replace", "path": "members", "value": []}),
        GROUP_DOC,
        (MemberOp("clear"),),
    ),
    (
        "add a single member object",
        body({"op": "add", "path": "members", "value": {"value": "u1", "display": "A"}}),
        GROUP_DOC,
        (MemberOp("add", items=(U1,)),),
    ),
    (
        "path-less add with members",
        body({"op": "add", "value": {"members": [{"value": "u1", "display": "A"}]}}),
        GROUP_DOC,
        (MemberOp("add", items=(U1,)),),
    ),
    (
        "path-less replace with members and displayName",
        body({"op": "replace", "value": {"displayName": "Eng", "members": [{"value": "u2"}]}}),
        {**GROUP_DOC, "displayName": "Eng"},
        (MemberOp("replace", items=(Member("u2"),)),),
    ),
    (
        "remove several members by an or filter",
        body({"op": "remove", "path": 'members[value eq "u1" or value eq "u2"]'}),
        GROUP_DOC,
        (MemberOp("remove", ids=frozenset({"u1", "u2"})),),
    ),
    (
        "replace a filtered member swaps it",
        body({"op": "replace", "path": 'members[value eq "u1"]', "value": [{"value": "u2"}]}),
        GROUP_DOC,
        (MemberOp("remove", ids=frozenset({"u1"})), MemberOp("add", items=(Member("u2"),))),
    ),
    (
        "membership operations keep their order",
        body(
            {"op": "add", "path": "members", "value": [{"value": "u1"}]},
            {"op": "remove", "path": 'members[value eq "u1"]'},
            {"op": "add", "path": "members", "value": [{"value": "u2"}]},
        ),
        GROUP_DOC,
        (
            MemberOp("add", items=(Member("u1"),)),
            MemberOp("remove", ids=frozenset({"u1"})),
            MemberOp("add", items=(Member("u2"),)),
        ),
    ),
    (
        "externalId",
        body({"op": "add", "path": "externalId", "value": "e1"}),
        {**GROUP_DOC, "externalId": "e1"},
        (),
    ),
]


@pytest.mark.parametrize(
    ("patch", "expected", "members"), [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES]
)
def test_group_patch(
    patch: dict[str, Any], expected: dict[str, Any], members: tuple[MemberOp, ...]
) -> None:
    result = run(GROUP, GROUP_DOC, patch)
    assert result.doc == expected
    assert result.members == members


ERRORS: list[tuple[str, ResourceType, dict[str, Any], Any, type[ScimError]]] = [
    ("body not an object", USER, USER_DOC, [{"op": "add"}], InvalidSyntax),
    ("missing Operations", USER, USER_DOC, {"schemas": [PATCH_OP_SCHEMA]}, InvalidSyntax),
    ("Operations not a list", USER, USER_DOC, {"Operations": {"op": "add"}}, InvalidSyntax),
    ("Operations empty", USER, USER_DOC, {"Operations": []}, InvalidValue),
    (
        "schemas without PatchOp",
        USER,
        USER_DOC,
        {"schemas": [USER_SCHEMA], "Operations": [{"op": "remove", "path": "title"}]},
        InvalidValue,
    ),
    ("operation not an object", USER, USER_DOC, body("remove"), InvalidSyntax),  # type: ignore[arg-type]
    ("bad op", USER, USER_DOC, body({"op": "move", "path": "title", "value": "x"}), InvalidValue),
    ("missing op", USER, USER_DOC, body({"path": "title", "value": "x"}), InvalidValue),
    ("add without value", USER, USER_DOC, body({"op": "add", "path": "title"}), InvalidValue),
    (
        "unknown path",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "shoeSize", "value": 1}),
        InvalidPath,
    ),
    (
        "unknown sub-attribute",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "name.nick", "value": "x"}),
        InvalidPath,
    ),
    (
        "sub-attribute of a simple attribute",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "title.x", "value": "x"}),
        InvalidPath,
    ),
    (
        "unknown key in a path-less value",
        USER,
        USER_DOC,
        body({"op": "replace", "value": {"shoeSize": 1}}),
        InvalidPath,
    ),
    (
        "members on a user",
        USER,
        USER_DOC,
        body({"op": "add", "path": "members", "value": []}),
        InvalidPath,
    ),
    ("path not a string", USER, USER_DOC, body({"op": "remove", "path": 7}), InvalidPath),
    (
        "filter on a singular attribute",
        USER,
        USER_DOC,
        body({"op": "remove", "path": 'name[givenName eq "A"]'}),
        InvalidPath,
    ),
    (
        "unclosed bracket",
        USER,
        USER_DOC,
        body({"op": "remove", "path": 'emails[type eq "]"'}),
        InvalidPath,
    ),
    (
        "text after the bracket",
        USER,
        USER_DOC,
        body({"op": "remove", "path": 'emails[type eq "w"]x'}),
        InvalidPath,
    ),
    (
        "bad filter syntax",
        USER,
        USER_DOC,
        body({"op": "remove", "path": "emails[type eq]"}),
        InvalidFilter,
    ),
    (
        "unknown attribute in a filter",
        USER,
        USER_DOC,
        body({"op": "remove", "path": 'emails[color eq "red"]'}),
        InvalidFilter,
    ),
    ("remove without path", USER, USER_DOC, body({"op": "remove"}), NoTarget),
    ("Remove with an empty path", USER, USER_DOC, body({"op": "Remove", "path": ""}), NoTarget),
    (
        "path-less add of a non-object",
        USER,
        USER_DOC,
        body({"op": "add", "value": "x"}),
        InvalidValue,
    ),
    (
        "active as 'yes'",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "active", "value": "yes"}),
        InvalidValue,
    ),
    (
        "path-less active as 'yes'",
        USER,
        USER_DOC,
        body({"op": "replace", "value": {"active": "yes"}}),
        InvalidValue,
    ),
    (
        "emails as a string",
        USER,
        USER_DOC,
        body({"op": "add", "path": "emails", "value": "a@x"}),
        InvalidValue,
    ),
    (
        "userName as a number",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "userName", "value": 5}),
        InvalidValue,
    ),
    ("remove userName", USER, USER_DOC, body({"op": "remove", "path": "userName"}), InvalidValue),
    (
        "replace userName with null",
        USER,
        USER_DOC,
        body({"op": "replace", "value": {"userName": None}}),
        InvalidValue,
    ),
    (
        "replace userName with blank",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "userName", "value": ""}),
        InvalidValue,
    ),
    (
        "remove group displayName",
        GROUP,
        GROUP_DOC,
        body({"op": "remove", "path": "displayName"}),
        InvalidValue,
    ),
    ("replace id", USER, USER_DOC, body({"op": "replace", "path": "id", "value": "x"}), Mutability),
    (
        "replace meta.created",
        USER,
        USER_DOC,
        body({"op": "replace", "path": "meta.created", "value": "2024-01-01T00:00:00Z"}),
        Mutability,
    ),
    (
        "add groups",
        USER,
        USER_DOC,
        body({"op": "add", "path": "groups", "value": [{"value": "g"}]}),
        Mutability,
    ),
    ("remove groups", USER, USER_DOC, body({"op": "remove", "path": "groups"}), Mutability),
    (
        "replace manager.displayName",
        USER,
        USER_WITH_ENT,
        body({"op": "replace", "path": f"{ENT}:manager.displayName", "value": "B"}),
        Mutability,
    ),
    (
        "two primary emails",
        USER,
        USER_DOC,
        body(
            {
                "op": "add",
                "path": "emails",
                "value": [{"value": "a", "primary": True}, {"value": "b", "primary": True}],
            }
        ),
        InvalidValue,
    ),
    (
        "filter matching nothing, not eq-only",
        USER,
        USER_DOC,
        body({"op": "replace", "path": 'emails[value co "zzz"].type', "value": "work"}),
        NoTarget,
    ),
    (
        "manager list of two",
        USER,
        USER_DOC,
        body({"op": "add", "path": "manager", "value": [{"value": "a"}, {"value": "b"}]}),
        InvalidValue,
    ),
    (
        "contradictory and filter matching nothing",
        USER,
        USER_DOC,
        body(
            {
                "op": "replace",
                "path": 'emails[type eq "work" and type eq "home"].value',
                "value": "x",
            }
        ),
        NoTarget,
    ),
    (
        "filtered replace with two items",
        USER,
        USER_WITH_WORK,
        body({"op": "replace", "path": 'emails[type eq "work"]', "value": [WORK, HOME]}),
        InvalidValue,
    ),
    (
        "extension value not an object",
        USER,
        USER_DOC,
        body({"op": "add", "path": ENT, "value": "x"}),
        InvalidValue,
    ),
    (
        "member filter on display",
        GROUP,
        GROUP_DOC,
        body({"op": "remove", "path": 'members[display eq "A"]'}),
        InvalidFilter,
    ),
    (
        "member filter with ne",
        GROUP,
        GROUP_DOC,
        body({"op": "remove", "path": 'members[value ne "u1"]'}),
        InvalidFilter,
    ),
    (
        "member filter with and",
        GROUP,
        GROUP_DOC,
        body({"op": "remove", "path": 'members[value eq "u1" and value eq "u2"]'}),
        InvalidFilter,
    ),
    (
        "member sub-attribute path",
        GROUP,
        GROUP_DOC,
        body({"op": "replace", "path": 'members[value eq "u1"].display', "value": "B"}),
        InvalidPath,
    ),
    (
        "add to a filtered member path",
        GROUP,
        GROUP_DOC,
        body({"op": "add", "path": 'members[value eq "u1"]', "value": [{"value": "u1"}]}),
        InvalidPath,
    ),
    (
        "member without value",
        GROUP,
        GROUP_DOC,
        body({"op": "add", "path": "members", "value": [{"display": "A"}]}),
        InvalidValue,
    ),
    (
        "member value not a string",
        GROUP,
        GROUP_DOC,
        body({"op": "Remove", "path": "members", "value": [{"value": 1}]}),
        InvalidValue,
    ),
    (
        "a valid op before an invalid one changes nothing",
        USER,
        USER_DOC,
        body(
            {"op": "replace", "path": "active", "value": False},
            {"op": "replace", "path": "shoeSize", "value": 1},
        ),
        InvalidPath,
    ),
]


@pytest.mark.parametrize(
    ("resource_type", "doc", "patch", "error"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_patch_errors(
    resource_type: ResourceType, doc: dict[str, Any], patch: Any, error: type[ScimError]
) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(error) as caught:
        apply_patch(resource_type, doc, patch)
    assert type(caught.value) is error
    assert doc == before


def test_password_never_echoed() -> None:
    patch = body({"op": "replace", "path": "password", "value": {"secret": "hunter2"}})
    with pytest.raises(InvalidValue) as caught:
        apply_patch(USER, USER_DOC, patch)
    assert "password" in caught.value.detail
    assert "hunter2" not in caught.value.detail


def test_password_replace_is_kept() -> None:
    result = run(USER, USER_DOC, body({"op": "replace", "path": "password", "value": "s3cret"}))
    assert result.doc["password"] == "s3cret"


def test_result_shares_nothing_with_the_input() -> None:
    result = run(USER, USER_WITH_ENT, body({"op": "add", "path": "nickName", "value": "A"}))
    result.doc["emails"][0]["value"] = "changed"
    result.doc[ENT]["manager"]["value"] = "changed"
    assert USER_WITH_ENT["emails"][0]["value"] == "alice@home.example"
    assert USER_WITH_ENT[ENT]["manager"]["value"] == "m0"


IMMUTABLE = ResourceType(
    name="Thing",
    endpoint="/Things",
    description="a resource type with an immutable attribute",
    schema=Schema(
        id="urn:example:Thing",
        name="Thing",
        attributes=(
            Attribute(name="badge", type="string", mutability="immutable"),
            Attribute(name="tags", type="string", multi_valued=True),
        ),
        document={},
    ),
)


@pytest.mark.parametrize(
    ("doc", "value", "error"),
    [
        ({"schemas": ["urn:example:Thing"]}, "b1", None),
        ({"schemas": ["urn:example:Thing"], "badge": "b1"}, "b1", None),
        ({"schemas": ["urn:example:Thing"], "badge": "b1"}, "b2", Mutability),
    ],
    ids=["set when absent", "same value", "different value"],
)
def test_immutable_attribute(
    doc: dict[str, Any], value: str, error: type[ScimError] | None
) -> None:
    patch = body({"op": "replace", "path": "badge", "value": value})
    if error is None:
        assert run(IMMUTABLE, doc, patch).doc == {"schemas": ["urn:example:Thing"], "badge": value}
    else:
        with pytest.raises(error):
            run(IMMUTABLE, doc, patch)


@pytest.mark.parametrize(
    ("text", "urn", "name", "sub", "filtered"),
    [
        ("name.familyName", None, "name", "familyName", False),
        ('emails[type eq "work"].value', None, "emails", "value", True),
        ('emails[value eq "a]b"]', None, "emails", None, True),
        (f"{ENT}:manager", ENT, "manager", None, False),
        (f"{ENT.upper()}:Manager.Value", ENT, "manager", "value", False),
        ("manager", ENT, "manager", None, False),
        (f"{USER_SCHEMA}:userName", None, "userName", None, False),
        (ENT, ENT, None, None, False),
    ],
)
def test_parse_path(
    text: str, urn: str | None, name: str | None, sub: str | None, filtered: bool
) -> None:
    path = parse_path(USER, text)
    assert path.urn == urn
    assert (path.attribute.name if path.attribute else None) == name
    assert (path.sub.name if path.sub else None) == sub
    assert (path.filter is not None) == filtered


THING = {"schemas": ["urn:example:Thing"], "tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("operation", "tags"),
    [
        ({"op": "add", "path": "tags", "value": ["b", "c"]}, ["a", "b", "c"]),
        ({"op": "add", "path": "tags", "value": "c"}, ["a", "b", "c"]),
        ({"op": "replace", "path": "tags", "value": ["c"]}, ["c"]),
        ({"op": "remove", "path": "tags", "value": ["a"]}, ["b"]),
        ({"op": "remove", "path": "tags"}, None),
    ],
    ids=["add list", "add one", "replace", "remove listed", "remove all"],
)
def test_multi_valued_simple_attribute(operation: dict[str, Any], tags: list[str] | None) -> None:
    expected = {"schemas": ["urn:example:Thing"], **({"tags": tags} if tags else {})}
    assert run(IMMUTABLE, THING, body(operation)).doc == expected

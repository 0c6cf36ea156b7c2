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
from tests.scim_samples import patch_cases

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


#: Okta's, Entra's and RFC 7644's PATCH bodies of a user, from tests/samples.
USER_CASES = patch_cases("user")


@pytest.mark.parametrize("case", [c for _, c in USER_CASES], ids=[n for n, _ in USER_CASES])
def test_user_patch(case: dict[str, Any]) -> None:
    result = run(USER, case["resource"], case["request"])
    assert result.doc == case["expected"]
    assert result.members == ()


#: Okta's, Entra's and RFC 7644's PATCH bodies of a group, from tests/samples.
GROUP_CASES = patch_cases("group")


def member_ops(recorded: list[dict[str, Any]]) -> tuple[MemberOp, ...]:
    """The membership operations a group case expects, as ``apply_patch`` returns them."""
    return tuple(
        MemberOp(
            op["action"],
            items=tuple(Member(**item) for item in op.get("items", ())),
            ids=frozenset(op.get("ids", ())),
        )
        for op in recorded
    )


@pytest.mark.parametrize("case", [c for _, c in GROUP_CASES], ids=[n for n, _ in GROUP_CASES])
def test_group_patch(case: dict[str, Any]) -> None:
    assert case["resource"] == GROUP_DOC
    result = run(GROUP, case["resource"], case["request"])
    assert result.doc == case["expected"]
    assert result.members == member_ops(case["members"])


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

"""Tests of jmlsync.scim.validate: POST/PUT bodies to docs, one attribute value at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jmlsync.scim.errors import InvalidSyntax, InvalidValue, ScimError
from jmlsync.scim.schema import (
    ENTERPRISE_USER_SCHEMA,
    GROUP,
    GROUP_SCHEMA,
    USER,
    USER_SCHEMA,
    Attribute,
    ResourceType,
)
from jmlsync.scim.validate import normalize_attribute_value, normalize_resource

ENT = ENTERPRISE_USER_SCHEMA

# What Okta sends on create (docs/idp-compatibility.md), password and read-only `groups` included.
OKTA_CREATE: dict[str, Any] = {
    "schemas": [USER_SCHEMA],
    "userName": "alice@example.com",
    "name": {"givenName": "Alice", "familyName": "Smith"},
    "emails": [{"primary": True, "value": "alice@example.com", "type": "work"}],
    "displayName": "Alice Smith",
    "locale": "en-US",
    "externalId": "00u1",
    "groups": [],
    "password": "hunter2-secret",
    "active": True,
}

# What Entra sends on create: core and enterprise schemas, capitalised booleans, empty roles.
ENTRA_CREATE: dict[str, Any] = {
    "schemas": [USER_SCHEMA, ENT],
    "externalId": "bob",
    "userName": "bob@example.com",
    "active": "True",
    "emails": [{"primary": True, "type": "work", "value": "bob@example.com"}],
    "meta": {"resourceType": "User"},
    "name": {"formatted": "Bob Jones", "familyName": "Jones", "givenName": "Bob"},
    "roles": [],
    ENT: {"department": "Eng", "manager": "m-1"},
}

VALID_USERS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "okta create: groups dropped, password kept",
        OKTA_CREATE,
        {**{k: v for k, v in OKTA_CREATE.items() if k != "groups"}, "schemas": [USER_SCHEMA]},
    ),
    (
        "entra create: string boolean, empty roles, bare manager id",
        ENTRA_CREATE,
        {
            "schemas": [USER_SCHEMA, ENT],
            "externalId": "bob",
            "userName": "bob@example.com",
            "active": True,
            "emails": [{"primary": True, "type": "work", "value": "bob@example.com"}],
            "name": {"formatted": "Bob Jones", "familyName": "Jones", "givenName": "Bob"},
            ENT: {"department": "Eng", "manager": {"value": "m-1"}},
        },
    ),
    (
        "schemas missing: core assumed",
        {"userName": "a"},
        {"schemas": [USER_SCHEMA], "userName": "a"},
    ),
    (
        "keys in any case become canonical",
        {"SCHEMAS": [USER_SCHEMA.upper()], "USERNAME": "a", "Name": {"GIVENNAME": "A"}},
        {"schemas": [USER_SCHEMA], "userName": "a", "name": {"givenName": "A"}},
    ),
    (
        "extension attribute as a top-level URN key",
        {"userName": "a", f"{ENT}:department": "Ops", f"{USER_SCHEMA}:title": "CTO"},
        {
            "schemas": [USER_SCHEMA, ENT],
            "userName": "a",
            "title": "CTO",
            ENT: {"department": "Ops"},
        },
    ),
    (
        "extension object under a URN in another case",
        {"userName": "a", ENT.upper(): {"DEPARTMENT": "Ops"}},
        {"schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: {"department": "Ops"}},
    ),
    (
        "read-only attributes and sub-attributes dropped",
        {
            "id": "x",
            "meta": {"created": "2024-01-01T00:00:00Z"},
            "userName": "a",
            "groups": [{"value": "g"}],
            ENT: {"manager": {"value": "m", "displayName": "Boss"}},
        },
        {"schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: {"manager": {"value": "m"}}},
    ),
    (
        "boolean strings in any case",
        {"userName": "a", "active": "FALSE", "emails": [{"value": "e", "primary": "true"}]},
        {
            "schemas": [USER_SCHEMA],
            "userName": "a",
            "active": False,
            "emails": [{"value": "e", "primary": True}],
        },
    ),
    (
        "nulls mean absent",
        {"userName": "a", "nickName": None, "emails": None, "name": {"givenName": None}, ENT: None},
        {"schemas": [USER_SCHEMA], "userName": "a"},
    ),
    (
        "schemas lists the extension but no extension data",
        {"schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: {}},
        {"schemas": [USER_SCHEMA], "userName": "a"},
    ),
    (
        "extension object carrying its own schemas (scim2-models)",
        {"userName": "a", ENT: {"schemas": [ENT], "department": "Ops"}},
        {"schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: {"department": "Ops"}},
    ),
    (
        "manager as Entra's old one-item list",
        {"userName": "a", ENT: {"manager": [{"$ref": "../Users/m", "value": "m"}]}},
        {
            "schemas": [USER_SCHEMA, ENT],
            "userName": "a",
            ENT: {"manager": {"$ref": "../Users/m", "value": "m"}},
        },
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in VALID_USERS], ids=[c[0] for c in VALID_USERS]
)
def test_valid_user_bodies(body: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(body)
    doc, members = normalize_resource(USER, body)
    assert doc == expected
    assert members is None
    assert body == before


GROUPS: list[tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]] | None]] = [
    (
        "okta group push with empty members",
        {"displayName": "Eng", "members": []},
        {"schemas": [GROUP_SCHEMA], "displayName": "Eng"},
        [],
    ),
    (
        "entra group: externalId, no members",
        {"schemas": [GROUP_SCHEMA], "externalId": "e1", "displayName": "Eng"},
        {"schemas": [GROUP_SCHEMA], "externalId": "e1", "displayName": "Eng"},
        None,
    ),
    (
        "members: $ref and type dropped, display kept, duplicates dropped",
        {
            "displayName": "Eng",
            "members": [
                {"value": "u1", "display": "A", "$ref": "https://x/Users/u1", "type": "User"},
                {"$ref": None, "value": "u2"},
                {"value": "u1"},
            ],
        },
        {"schemas": [GROUP_SCHEMA], "displayName": "Eng"},
        [{"value": "u1", "display": "A"}, {"value": "u2"}],
    ),
    (
        "members null",
        {"displayName": "Eng", "members": None},
        {"schemas": [GROUP_SCHEMA], "displayName": "Eng"},
        None,
    ),
]


@pytest.mark.parametrize(
    ("body", "expected", "expected_members"), [c[1:] for c in GROUPS], ids=[c[0] for c in GROUPS]
)
def test_valid_group_bodies(
    body: dict[str, Any], expected: dict[str, Any], expected_members: list[dict[str, Any]] | None
) -> None:
    doc, members = normalize_resource(GROUP, body)
    assert doc == expected
    assert members == expected_members


INVALID: list[tuple[str, ResourceType, Any, type[ScimError], str]] = [
    ("body is a list", USER, [{"userName": "a"}], InvalidSyntax, "object"),
    ("body is a string", USER, "userName=a", InvalidSyntax, "object"),
    (
        "schemas not a list",
        USER,
        {"schemas": USER_SCHEMA, "userName": "a"},
        InvalidValue,
        "schemas",
    ),
    ("schemas without core", USER, {"schemas": [ENT], "userName": "a"}, InvalidValue, USER_SCHEMA),
    (
        "schemas with unknown URN",
        USER,
        {"schemas": [USER_SCHEMA, "urn:x"], "userName": "a"},
        InvalidValue,
        "urn:x",
    ),
    (
        "group schema on a user",
        USER,
        {"schemas": [GROUP_SCHEMA], "userName": "a"},
        InvalidValue,
        GROUP_SCHEMA,
    ),
    ("unknown attribute", USER, {"userName": "a", "shoeSize": 42}, InvalidValue, "shoeSize"),
    (
        "unknown sub-attribute",
        USER,
        {"userName": "a", "name": {"nick": "x"}},
        InvalidValue,
        "name.nick",
    ),
    (
        "unknown extension attribute",
        USER,
        {"userName": "a", ENT: {"floor": "3"}},
        InvalidValue,
        "floor",
    ),
    (
        "dotted key in a body",
        USER,
        {"userName": "a", "name.givenName": "x"},
        InvalidValue,
        "name.givenName",
    ),
    ("userName not a string", USER, {"userName": 5}, InvalidValue, "userName"),
    ("active not a boolean", USER, {"userName": "a", "active": "yes"}, InvalidValue, "active"),
    ("active as a number", USER, {"userName": "a", "active": 1}, InvalidValue, "active"),
    (
        "emails not a list",
        USER,
        {"userName": "a", "emails": {"value": "e"}},
        InvalidValue,
        "emails",
    ),
    (
        "email item not an object",
        USER,
        {"userName": "a", "emails": ["e"]},
        InvalidValue,
        "emails[0]",
    ),
    ("name not an object", USER, {"userName": "a", "name": "Alice"}, InvalidValue, "name"),
    ("extension not an object", USER, {"userName": "a", ENT: "Eng"}, InvalidValue, ENT),
    (
        "manager list of two",
        USER,
        {"userName": "a", ENT: {"manager": [{"value": "m"}, {"value": "n"}]}},
        InvalidValue,
        "manager",
    ),
    (
        "two primary emails",
        USER,
        {
            "userName": "a",
            "emails": [{"value": "a", "primary": True}, {"value": "b", "primary": True}],
        },
        InvalidValue,
        "primary",
    ),
    ("userName missing", USER, {"displayName": "A"}, InvalidValue, "userName' is required"),
    ("userName empty", USER, {"userName": "  "}, InvalidValue, "userName' is required"),
    ("userName null", USER, {"userName": None}, InvalidValue, "userName' is required"),
    ("displayName missing", GROUP, {"members": []}, InvalidValue, "displayName' is required"),
    (
        "same sub-attribute twice",
        USER,
        {"userName": "a", "name": {"givenName": "A", "GIVENNAME": "B"}},
        InvalidValue,
        "name.givenName",
    ),
    ("same attribute twice", USER, {"userName": "a", "USERNAME": "b"}, InvalidValue, "userName"),
    (
        "member not an object",
        GROUP,
        {"displayName": "G", "members": ["u1"]},
        InvalidValue,
        "members[0]",
    ),
    (
        "member without value",
        GROUP,
        {"displayName": "G", "members": [{"display": "A"}]},
        InvalidValue,
        "members[0].value",
    ),
    (
        "member value not a string",
        GROUP,
        {"displayName": "G", "members": [{"value": 7}]},
        InvalidValue,
        "members[0].value",
    ),
    (
        "member unknown key",
        GROUP,
        {"displayName": "G", "members": [{"value": "u", "x": 1}]},
        InvalidValue,
        "members[0].x",
    ),
    (
        "members not a list",
        GROUP,
        {"displayName": "G", "members": {"value": "u"}},
        InvalidValue,
        "members",
    ),
    ("members on a user", USER, {"userName": "a", "members": []}, InvalidValue, "members"),
]


@pytest.mark.parametrize(
    ("resource_type", "body", "error", "detail"),
    [c[1:] for c in INVALID],
    ids=[c[0] for c in INVALID],
)
def test_invalid_bodies(
    resource_type: ResourceType, body: Any, error: type[ScimError], detail: str
) -> None:
    before = copy.deepcopy(body)
    with pytest.raises(error) as caught:
        normalize_resource(resource_type, body)
    assert type(caught.value) is error
    assert detail in caught.value.detail
    assert body == before


@pytest.mark.parametrize("password", [12345, {"secret": "hunter2"}, ["hunter2"], True])
def test_password_never_echoed(password: Any) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_resource(USER, {"userName": "a", "password": password})
    assert "password" in caught.value.detail
    assert "hunter2" not in caught.value.detail
    assert "12345" not in caught.value.detail


def _attr(type_: str, *, multi_valued: bool = False) -> Attribute:
    return Attribute(name="x", type=type_, multi_valued=multi_valued)


TYPES: list[tuple[str, Attribute, Any, Any]] = [
    ("string", _attr("string"), "a", "a"),
    ("boolean true", _attr("boolean"), True, True),
    ("boolean 'True' (Entra)", _attr("boolean"), "True", True),
    ("boolean 'False' (Entra)", _attr("boolean"), "False", False),
    ("integer", _attr("integer"), 3, 3),
    ("decimal from int", _attr("decimal"), 3, 3),
    ("decimal", _attr("decimal"), 2.5, 2.5),
    ("dateTime with Z", _attr("dateTime"), "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"),
    (
        "dateTime with offset",
        _attr("dateTime"),
        "2024-05-01T10:00:00+02:00",
        "2024-05-01T10:00:00+02:00",
    ),
    ("reference", _attr("reference"), "https://x/Users/1", "https://x/Users/1"),
    ("binary", _attr("binary"), "TUlJ", "TUlJ"),
    ("null", _attr("string"), None, None),
    ("multi-valued", _attr("string", multi_valued=True), ["a", None, "b"], ["a", "b"]),
    ("empty list is absent", _attr("string", multi_valued=True), [], None),
]


@pytest.mark.parametrize(
    ("attribute", "value", "expected"), [c[1:] for c in TYPES], ids=[c[0] for c in TYPES]
)
def test_attribute_types(attribute: Attribute, value: Any, expected: Any) -> None:
    assert normalize_attribute_value(attribute, value, path="x") == expected


BAD_TYPES: list[tuple[str, Attribute, Any]] = [
    ("string from int", _attr("string"), 1),
    ("boolean from 'yes'", _attr("boolean"), "yes"),
    ("boolean from 0", _attr("boolean"), 0),
    ("integer from bool", _attr("integer"), True),
    ("integer from float", _attr("integer"), 1.5),
    ("integer from string", _attr("integer"), "1"),
    ("decimal from bool", _attr("decimal"), False),
    ("decimal from string", _attr("decimal"), "1.5"),
    ("dateTime not parseable", _attr("dateTime"), "yesterday"),
    ("dateTime not a string", _attr("dateTime"), 1714557600),
    ("reference from int", _attr("reference"), 1),
    ("binary from list", _attr("binary"), [1]),
    ("multi-valued from scalar", _attr("string", multi_valued=True), "a"),
]


@pytest.mark.parametrize(
    ("attribute", "value"), [c[1:] for c in BAD_TYPES], ids=[c[0] for c in BAD_TYPES]
)
def test_attribute_bad_types(attribute: Attribute, value: Any) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_attribute_value(attribute, value, path="some.path")
    assert "some.path" in caught.value.detail


def test_user_profile_url_and_certificates() -> None:
    body = {
        "userName": "a",
        "profileUrl": "https://example.com/a",
        "x509Certificates": [{"value": "TUlJQ0lq"}],
    }
    doc, _ = normalize_resource(USER, body)
    assert doc["profileUrl"] == "https://example.com/a"
    assert doc["x509Certificates"] == [{"value": "TUlJQ0lq"}]

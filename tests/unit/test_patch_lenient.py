"""The PATCH engine with undeclared attributes: ignored, stored aside, or refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmlsync.domain.directory import Member, MemberOp
from jmlsync.scim.errors import InvalidPath, InvalidValue
from jmlsync.scim.patch import apply_patch
from jmlsync.scim.schema import (
    ENTERPRISE_USER_SCHEMA,
    GROUP,
    GROUP_SCHEMA,
    PATCH_OP_SCHEMA,
    USER,
    USER_SCHEMA,
)
from jmlsync.scim.unknown import UNRECOGNISED, Unknowns
from jmlsync.scim.validate import normalize_resource

ENT = ENTERPRISE_USER_SCHEMA
CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
USER_DOC: dict[str, Any] = {
    "schemas": [USER_SCHEMA, ENT],
    "userName": "alice",
    "displayName": "Alice",
    "active": True,
    "name": {"givenName": "Alice", "familyName": "Smith"},
    "emails": [{"value": "a@home.example", "type": "home", "primary": True}],
    ENT: {"department": "Eng"},
}


def body(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP_SCHEMA], "Operations": list(operations)}


# Operations on declared attributes, each valid on USER_DOC and on whatever the others leave.
KNOWN = st.sampled_from(
    [
        {"op": "replace", "path": "displayName", "value": "Ann"},
        {"op": "Replace", "path": "active", "value": "False"},
        {"op": "replace", "path": "active", "value": True},
        {"op": "add", "path": "title", "value": "Engineer"},
        {"op": "remove", "path": "title"},
        {"op": "replace", "path": "name.givenName", "value": "Ann"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@work.example"},
        {"op": "add", "path": f"{ENT}:department", "value": "Ops"},
        {"op": "remove", "path": f"{ENT}:department"},
    ]
)
# Operations on what no schema declares: unknown names, unknown sub-attributes, unknown URNs.
UNKNOWN_PATHS = st.sampled_from(
    [
        "extensionAttribute1",
        "shoeSize",
        "name.nickname",
        f"{CUSTOM}:costCenter",
        f"{ENT}:favouriteColour",
        CUSTOM,
    ]
)
UNKNOWN = st.builds(
    lambda op, path, value: {"op": op, "path": path, "value": value},
    st.sampled_from(["add", "replace", "Replace"]),
    UNKNOWN_PATHS,
    st.one_of(st.text(max_size=5), st.integers(), st.booleans()),
) | st.builds(lambda path: {"op": "remove", "path": path}, UNKNOWN_PATHS)
# A path-less value mixing declared and undeclared keys: only the declared part counts.
MIXED_VALUE = st.builds(
    lambda known, unknown: (known, unknown),
    st.dictionaries(
        st.sampled_from(["displayName", "name.familyName", "title"]),
        st.text(min_size=1, max_size=5),
        max_size=2,
    ),
    st.dictionaries(
        st.sampled_from(["extensionAttribute2", "buildingCode", f"{CUSTOM}:division"]),
        st.text(max_size=5),
        min_size=1,
        max_size=2,
    ),
)
STEP = st.one_of(
    KNOWN.map(lambda op: (op, op)),
    UNKNOWN.map(lambda op: (op, None)),
    MIXED_VALUE.map(
        lambda kv: (
            {"op": "replace", "value": {**kv[0], **kv[1]}},
            {"op": "replace", "value": kv[0]} if kv[0] else None,
        )
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=8))
def test_ignoring_unknown_paths_equals_applying_only_the_known_operations(
    steps: list[tuple[dict[str, Any], dict[str, Any] | None]],
) -> None:
    mixed = [sent for sent, _ in steps]
    known = [kept for _, kept in steps if kept is not None]
    before = copy.deepcopy(USER_DOC)
    unknowns = Unknowns("ignore")
    got = apply_patch(USER, USER_DOC, body(*mixed), unknowns)
    expected = apply_patch(USER, USER_DOC, body(*known)).doc if known else USER_DOC
    assert got.doc == expected
    assert before == USER_DOC
    # Every step but the declared ones carried something undeclared, and it was named.
    assert bool(unknowns.ignored) == any(kept is not sent for sent, kept in steps)


def test_reject_refuses_what_ignore_drops() -> None:
    operations = body(
        {"op": "replace", "path": "active", "value": False},
        {"op": "add", "path": f"{CUSTOM}:costCenter", "value": "7"},
    )
    with pytest.raises(InvalidPath):
        apply_patch(USER, USER_DOC, operations, Unknowns("reject"))
    unknowns = Unknowns("ignore")
    result = apply_patch(USER, USER_DOC, operations, unknowns)
    assert result.doc["active"] is False
    assert unknowns.ignored == [f"{CUSTOM}:costCenter"]
    assert unknowns.notes() == (f"ignored attributes: {CUSTOM}:costCenter",)


def test_store_keeps_names_verbatim_under_their_urn_or_in_the_bag() -> None:
    unknowns = Unknowns("store")
    result = apply_patch(
        USER,
        USER_DOC,
        body(
            {"op": "add", "path": f"{CUSTOM}:costCenter", "value": "7"},
            {"op": "replace", "value": {"extensionAttribute1": "x", "displayName": "Ann"}},
            {"op": "add", "path": f"{ENT}:favouriteColour", "value": "blue"},
            {"op": "add", "path": "name.nickname", "value": "Al"},
        ),
        unknowns,
    )
    assert result.doc[CUSTOM] == {"costCenter": "7"}
    assert result.doc[UNRECOGNISED] == {
        "extensionAttribute1": "x",
        f"{ENT}:favouriteColour": "blue",
    }
    assert result.doc["schemas"] == [USER_SCHEMA, ENT, CUSTOM]
    assert result.doc["displayName"] == "Ann"
    # A sub-attribute of a declared attribute cannot be kept aside: it is ignored.
    assert unknowns.ignored == ["name.nickname"]
    removed = apply_patch(
        USER,
        result.doc,
        body(
            {"op": "remove", "path": f"{CUSTOM}:costCenter"},
            {"op": "remove", "path": "extensionAttribute1"},
            {"op": "remove", "path": f"{ENT}:favouriteColour"},
        ),
        Unknowns("store"),
    )
    assert CUSTOM not in removed.doc
    assert UNRECOGNISED not in removed.doc
    assert removed.doc["schemas"] == [USER_SCHEMA, ENT]


def test_unknown_sub_attributes_and_member_keys_are_ignored() -> None:
    unknowns = Unknowns("ignore")
    result = apply_patch(
        GROUP,
        {"schemas": [GROUP_SCHEMA], "displayName": "G"},
        body({"op": "add", "path": "members", "value": [{"value": "u1", "color": "red"}]}),
        unknowns,
    )
    assert result.members == (MemberOp("add", items=(Member("u1"),)),)
    assert unknowns.ignored == ["members.color"]
    with pytest.raises(InvalidValue):
        apply_patch(
            GROUP,
            {"schemas": [GROUP_SCHEMA], "displayName": "G"},
            body({"op": "add", "path": "members", "value": [{"value": "u1", "color": "red"}]}),
        )


def test_create_with_undeclared_extension_and_names() -> None:
    sent = {
        "schemas": [USER_SCHEMA, CUSTOM],
        "userName": "bob",
        "costCenter": "7",
        CUSTOM: {"division": "R&D"},
        f"{CUSTOM}:site": "Paris",
        "name": {"givenName": "Bob", "nickname": "B"},
        "emails": [{"value": "b@x", "type": "work", "label": "x"}],
    }
    unknowns = Unknowns("ignore")
    doc, _ = normalize_resource(USER, sent, unknowns)
    assert doc == {
        "schemas": [USER_SCHEMA],
        "userName": "bob",
        "name": {"givenName": "Bob"},
        "emails": [{"value": "b@x", "type": "work"}],
    }
    assert sorted(unknowns.ignored) == sorted(
        [CUSTOM, "costCenter", CUSTOM, f"{CUSTOM}:site", "name.nickname", "emails.label"]
    )
    stored = Unknowns("store")
    doc, _ = normalize_resource(USER, sent, stored)
    assert doc[CUSTOM] == {"division": "R&D", "site": "Paris"}
    assert doc[UNRECOGNISED] == {"costCenter": "7"}
    assert doc["schemas"] == [USER_SCHEMA, CUSTOM]
    with pytest.raises(InvalidValue):
        normalize_resource(USER, sent)

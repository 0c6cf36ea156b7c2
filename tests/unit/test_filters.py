"""Filters: parsing against the schema, evaluation in Python, and compilation to SQLite."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmlsync.domain.errors import InvalidFilterError
from jmlsync.domain.filters import (
    And,
    Attr,
    Compare,
    Expr,
    Not,
    Or,
    Present,
    ValuePath,
    matches,
)
from jmlsync.scim.errors import InvalidFilter
from jmlsync.scim.filters import parse_filter, parse_value_filter
from jmlsync.scim.schema import ENTERPRISE_USER_SCHEMA, GROUP, USER, Attribute
from jmlsync.store.filters.columns import GROUPS_TABLE, USERS_TABLE, Table
from jmlsync.store.filters.sqlite import compile_filter, sort_expression

ENT = ENTERPRISE_USER_SCHEMA
USER_NAME = Attr("userName")
TITLE = Attr("title")
ACTIVE = Attr("active", type="boolean")


def _p(name: str) -> Present:
    return Present(Attr(name))


# --- parse_filter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # and binds tighter than or, whatever the order (the library has them equal).
        (
            "userName pr or title pr and nickName pr",
            Or(_p("userName"), And(_p("title"), _p("nickName"))),
        ),
        (
            "userName pr and title pr or nickName pr",
            Or(And(_p("userName"), _p("title")), _p("nickName")),
        ),
        (
            "userName pr or title pr and nickName pr or locale pr and timezone pr",
            Or(
                Or(_p("userName"), And(_p("title"), _p("nickName"))),
                And(_p("locale"), _p("timezone")),
            ),
        ),
        (
            "(userName pr or title pr) and nickName pr",
            And(Or(_p("userName"), _p("title")), _p("nickName")),
        ),
        (
            "userName pr and (title pr or nickName pr)",
            And(_p("userName"), Or(_p("title"), _p("nickName"))),
        ),
        (
            "not (userName pr or title pr) and nickName pr",
            And(Not(Or(_p("userName"), _p("title"))), _p("nickName")),
        ),
        # Typed values: JSON literals versus strings that spell them.
        ("active eq true", Compare(ACTIVE, "eq", True)),
        ("active ne false", Compare(ACTIVE, "ne", False)),
        ("title eq null", Compare(TITLE, "eq", None)),
        ('title eq "null"', Compare(TITLE, "eq", "null")),
        ('userName eq "true"', Compare(USER_NAME, "eq", "true")),
        # Escapes in strings.
        (r'userName eq "a\"b\\c"', Compare(USER_NAME, "eq", 'a"b\\c')),
        (r'userName eq "caf\u00e9"', Compare(USER_NAME, "eq", "café")),
        ('userName eq "a and b or (c)"', Compare(USER_NAME, "eq", "a and b or (c)")),
        # Names are case-insensitive and come back canonical.
        ('USERNAME eq "x"', Compare(USER_NAME, "eq", "x")),
        (
            'Emails.VALUE co "@x"',
            Compare(Attr("emails", "value", multi_valued=True), "co", "@x"),
        ),
        ('emails eq "a@x"', Compare(Attr("emails", "value", multi_valued=True), "eq", "a@x")),
        ("emails pr", Present(Attr("emails", type="complex", multi_valued=True))),
        (
            'meta.lastModified gt "2011-05-13T04:42:34Z"',
            Compare(
                Attr("meta", "lastModified", type="dateTime", case_exact=True),
                "gt",
                "2011-05-13T04:42:34Z",
            ),
        ),
        ('id eq "x"', Compare(Attr("id", case_exact=True), "eq", "x")),
        # URN prefixes.
        (
            f'{ENT}:department eq "Eng"',
            Compare(Attr("department", uri=ENT), "eq", "Eng"),
        ),
        (
            f'{ENT.upper()}:DEPARTMENT eq "Eng"',
            Compare(Attr("department", uri=ENT), "eq", "Eng"),
        ),
        (
            f'{ENT}:manager.value eq "u1"',
            Compare(Attr("manager", "value", uri=ENT, case_exact=True), "eq", "u1"),
        ),
        (
            'urn:ietf:params:scim:schemas:core:2.0:User:name.familyName sw "J"',
            Compare(Attr("name", "familyName"), "sw", "J"),
        ),
        # Value paths.
        (
            'emails[type eq "work" and value co "@x"]',
            ValuePath(
                Attr("emails", type="complex", multi_valued=True),
                And(Compare(Attr("type"), "eq", "work"), Compare(Attr("value"), "co", "@x")),
            ),
        ),
        (
            'emails[type eq "work"] or userName eq "x"',
            Or(
                ValuePath(
                    Attr("emails", type="complex", multi_valued=True),
                    Compare(Attr("type"), "eq", "work"),
                ),
                Compare(USER_NAME, "eq", "x"),
            ),
        ),
        (
            'emails[not (type eq "work")]',
            ValuePath(
                Attr("emails", type="complex", multi_valued=True),
                Not(Compare(Attr("type"), "eq", "work")),
            ),
        ),
        # Entra: `attr[filter].sub op value` is `attr[filter and sub op value]`.
        (
            'emails[type eq "work"].value eq "x"',
            ValuePath(
                Attr("emails", type="complex", multi_valued=True),
                And(Compare(Attr("type"), "eq", "work"), Compare(Attr("value"), "eq", "x")),
            ),
        ),
        (
            'emails[type eq "work"].value pr and userName eq "x"',
            And(
                ValuePath(
                    Attr("emails", type="complex", multi_valued=True),
                    And(Compare(Attr("type"), "eq", "work"), Present(Attr("value"))),
                ),
                Compare(USER_NAME, "eq", "x"),
            ),
        ),
    ],
)
def test_parse_filter(text: str, expected: Expr) -> None:
    assert parse_filter(text, USER) == expected


def test_operator_case_does_not_change_the_tree() -> None:
    assert parse_filter("userName PR Or title pr AND nickName pr", USER) == parse_filter(
        "userName pr or title pr and nickName pr", USER
    )


def test_group_attributes_resolve_against_the_group_schema() -> None:
    assert parse_filter('members[value eq "u1"]', GROUP) == ValuePath(
        Attr("members", type="complex", multi_valued=True),
        Compare(Attr("value", case_exact=True), "eq", "u1"),
    )
    with pytest.raises(InvalidFilter):
        parse_filter('userName eq "x"', GROUP)


STATS = Attribute(
    name="stats",
    type="complex",
    multi_valued=True,
    sub_attributes=(
        Attribute(name="count", type="integer"),
        Attribute(name="ratio", type="decimal"),
        Attribute(name="label", type="string", case_exact=True),
    ),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count gt 10", Compare(Attr("count", type="integer"), "gt", 10)),
        ("count ge 0", Compare(Attr("count", type="integer"), "ge", 0)),
        ("ratio le -1.5e2", Compare(Attr("ratio", type="decimal"), "le", -150.0)),
        ("ratio lt 0.25", Compare(Attr("ratio", type="decimal"), "lt", 0.25)),
        ('LABEL eq "A"', Compare(Attr("label", case_exact=True), "eq", "A")),
    ],
)
def test_parse_value_filter_numbers(text: str, expected: Expr) -> None:
    assert parse_value_filter(text, STATS) == expected


def test_parse_value_filter_for_patch_paths() -> None:
    members = GROUP.attribute("members")
    emails = USER.attribute("emails")
    assert members is not None
    assert emails is not None
    assert parse_value_filter('value eq "x"', members) == Compare(
        Attr("value", case_exact=True), "eq", "x"
    )
    assert parse_value_filter('type eq "work" or primary eq true', emails) == Or(
        Compare(Attr("type"), "eq", "work"), Compare(Attr("primary", type="boolean"), "eq", True)
    )


@pytest.mark.parametrize(
    ("attribute", "text", "problem"),
    [
        ("members", 'userName eq "x"', "not a sub-attribute"),
        ("members", 'value.x eq "x"', "not a sub-attribute"),
        ("members", 'value[type eq "x"]', "nested"),
        ("members", "value eq 1", "not a valid string"),
        ("displayName", 'value eq "x"', "no sub-attributes"),
    ],
)
def test_parse_value_filter_errors(attribute: str, text: str, problem: str) -> None:
    definition = GROUP.attribute(attribute)
    assert definition is not None
    with pytest.raises(InvalidFilter) as caught:
        parse_value_filter(text, definition)
    assert problem in caught.value.detail


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        # Syntax
        ("", "unexpected end"),
        ("   ", "unexpected end"),
        ("userName eq", "unexpected end"),
        ('userName eq "x" and', "unexpected end"),
        ("(userName pr", "unexpected end"),
        ("userName pr)", "unexpected ')' at position 11"),
        ('userName zz "x"', "unexpected"),
        ('userName eq "x', "unterminated string"),
        (r'userName eq "\q"', "bad escape"),
        ("userName eq x", "unexpected"),
        ('userName # "x"', "unexpected character '#'"),
        ("not userName pr", "unexpected"),
        # Unknown attributes
        ('foo eq "x"', "unknown attribute 'foo'"),
        ('name.foo eq "x"', "unknown attribute 'name.foo'"),
        ('urn:example:params:Foo:bar eq "x"', "unknown attribute"),
        (f'{ENT}:nope eq "x"', "unknown attribute"),
        # Types and operators (RFC 7644 §3.4.2.2)
        ("active gt true", "gt is not allowed on the boolean attribute 'active'"),
        ("emails.primary le false", "not allowed on the boolean"),
        ('x509Certificates.value lt "AAAA"', "not allowed on the binary"),
        ('active eq "true"', "not a valid boolean"),
        ("active eq 1", "not a valid boolean"),
        ('active co "t"', "co is not allowed"),
        ("userName eq 1", "not a valid string"),
        ("userName eq true", "not a valid string"),
        ("userName gt null", "null can only be compared with eq or ne"),
        ('meta.created gt "yesterday"', "not a valid dateTime"),
        ('meta.created sw "2011"', "sw is not allowed"),
        ('name eq "x"', "needs a sub-attribute"),
        # Value paths
        ('emails[type eq "work"] eq "x"', "value filter"),
        ('emails[type eq "work"].nope eq "x"', "'nope' is not a sub-attribute of 'emails'"),
        ('emails[type eq "work"].value.x eq "x"', "unexpected"),
        ('title[value eq "x"].value eq "x"', "no sub-attributes"),
        ('title[value eq "x"]', "no sub-attributes"),
        ('emails[foo eq "x"]', "'foo' is not a sub-attribute of 'emails'"),
        ('emails.value[type eq "x"]', "needs an attribute"),
    ],
)
def test_parse_filter_errors(text: str, problem: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        parse_filter(text, USER)
    assert problem in caught.value.detail
    assert repr(text) in caught.value.detail
    assert caught.value.scim_type == "invalidFilter"


# --- matches ------------------------------------------------------------------------------

RESOURCE: dict[str, Any] = {
    "id": "1",
    "userName": "BJensen",
    "active": False,
    "title": "",
    "nickName": "Babs",
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "emails": [
        {"value": "bjensen@Example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ],
    "tags": ["Red", "green"],
    "scores": [3, 7],
    "photos": [],
    "addresses": [{}],
    "meta": {"created": "2011-05-13T04:42:34Z", "lastModified": "not a date"},
    ENT: {"department": "Eng"},
}
TAGS = Attr("tags", multi_valued=True)
SCORES = Attr("scores", type="integer", multi_valued=True)
CREATED = Attr("meta", "created", type="dateTime", case_exact=True)
LAST_MODIFIED = Attr("meta", "lastModified", type="dateTime", case_exact=True)
EMAILS = Attr("emails", type="complex", multi_valued=True)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (Compare(USER_NAME, "eq", "bjensen"), True),
        (Compare(Attr("userName", case_exact=True), "eq", "bjensen"), False),
        (Compare(USER_NAME, "ne", "bjensen"), False),
        (Compare(Attr("displayName"), "ne", "x"), True),  # missing: ne matches
        (Compare(Attr("displayName"), "eq", "x"), False),
        (Compare(Attr("displayName"), "eq", None), True),
        (Compare(Attr("displayName"), "ne", None), False),
        (Compare(TITLE, "eq", None), True),  # "" is not a value
        (Present(TITLE), False),
        (Present(Attr("nickName")), True),
        (Present(Attr("photos", multi_valued=True)), False),
        (Present(Attr("addresses", type="complex", multi_valued=True)), False),
        (Present(Attr("name", type="complex")), True),
        (Present(ACTIVE), True),
        (Compare(ACTIVE, "eq", False), True),
        (Compare(ACTIVE, "eq", True), False),
        (Compare(Attr("emails", "value", multi_valued=True), "co", "EXAMPLE"), True),
        (Compare(Attr("emails", "value", multi_valued=True), "ew", ".ORG"), True),
        (Compare(Attr("emails", "value", multi_valued=True), "sw", "babs@"), True),
        (Compare(Attr("emails", "value", multi_valued=True), "ne", "babs@jensen.org"), False),
        (Compare(Attr("emails", "primary", type="boolean", multi_valued=True), "eq", True), True),
        (Compare(TAGS, "eq", "red"), True),
        (Compare(TAGS, "gt", "h"), True),
        (Compare(TAGS, "gt", "s"), False),
        (Compare(SCORES, "gt", 5), True),
        (Compare(SCORES, "lt", 3), False),
        (Compare(SCORES, "le", 3.0), True),
        (Compare(CREATED, "eq", "2011-05-13T06:42:34+02:00"), True),
        (Compare(CREATED, "gt", "2011-05-13T04:42:33.999Z"), True),
        (Compare(CREATED, "lt", "2011-05-13T04:42:34Z"), False),
        (Compare(LAST_MODIFIED, "gt", "2000-01-01T00:00:00Z"), False),  # unparseable
        (Compare(LAST_MODIFIED, "lt", "2100-01-01T00:00:00Z"), False),
        (Compare(Attr("department", uri=ENT), "eq", "ENG"), True),
        (Compare(Attr("department", uri=ENT.lower()), "eq", "ENG"), True),
        (Compare(Attr("organization", uri=ENT), "ne", "x"), True),
        (Not(Present(TITLE)), True),
        (Or(Present(TITLE), Compare(USER_NAME, "sw", "bj")), True),
        (And(Present(TITLE), Compare(USER_NAME, "sw", "bj")), False),
        (
            ValuePath(
                EMAILS,
                And(Compare(Attr("type"), "eq", "WORK"), Compare(Attr("value"), "co", "@example")),
            ),
            True,
        ),
        (
            ValuePath(
                EMAILS,
                And(Compare(Attr("type"), "eq", "home"), Compare(Attr("value"), "co", "@example")),
            ),
            False,
        ),
        (ValuePath(Attr("name", type="complex"), Compare(Attr("givenName"), "sw", "bar")), True),
        (ValuePath(Attr("x509Certificates", multi_valued=True), Not(Present(TITLE))), False),
    ],
)
def test_matches(expr: Expr, expected: bool) -> None:
    assert matches(expr, RESOURCE) is expected


def test_matches_against_a_value_path_item() -> None:
    # The PATCH engine evaluates value filters against each item of the attribute.
    item = {"value": "u1", "display": "Barbara"}
    assert matches(parse_value_filter('value eq "u1"', _members()), item)
    assert not matches(parse_value_filter('value eq "U1"', _members()), item)
    assert matches(parse_value_filter('display eq "BARBARA"', _members()), item)


def _members() -> Attribute:
    members = GROUP.attribute("members")
    assert members is not None
    return members


# --- compile_filter agrees with matches -----------------------------------------------------


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _storage(stamp: str) -> str:
    return stamp.replace("Z", ".000000Z")


USERS: dict[str, dict[str, Any]] = {
    "u1": {
        "userName": "BJensen",
        "externalId": "x",
        "displayName": "Babs Jensen",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": True},
            {"value": "babs@jensen.org", "type": "home", "display": "Home"},
        ],
        "title": "Tour Guide",
        "active": True,
        ENT: {"department": "Eng"},
        "_created": "2011-05-13T04:42:34Z",
        "_modified": "2011-05-13T04:42:34Z",
    },
    "u2": {
        "userName": "jsmith",
        "externalId": "X",
        "displayName": "John Smith",
        "name": {"givenName": "John", "familyName": "Smith"},
        "emails": [
            {"value": "john@example.com", "type": "home"},
            {"value": "js@work.org", "type": "work"},
        ],
        "title": "",
        "active": False,
        ENT: {"department": "eng", "manager": {"value": "u1"}},
        "_created": "2011-05-13T04:42:35Z",
        "_modified": "2011-05-13T04:42:35Z",
    },
    "u3": {
        "userName": "alice",
        "name": {"familyName": "Ensor"},
        "active": True,
        "_created": "2012-01-01T00:00:00Z",
        "_modified": "2011-05-13T04:42:34Z",
    },
    "u4": {
        "userName": "bob",
        "externalId": "b-1",
        "emails": [{"value": "Bob@EXAMPLE.COM", "type": "WORK", "primary": False}],
        "title": "Engineer",
        "active": False,
        ENT: {"department": "Sales"},
        "_created": "2010-12-31T23:59:59Z",
        "_modified": "2013-02-03T04:05:06Z",
    },
    "u5": {
        "userName": "Straße",
        "name": {"givenName": "Ünal", "familyName": "STRASSE"},
        "emails": [],
        "title": None,
        "active": True,
        ENT: {},
        "_created": "2014-01-01T00:00:00Z",
        "_modified": "2014-01-01T00:00:00Z",
    },
    "u6": {
        "userName": "zed",
        "displayName": "Zed",
        "emails": [{"value": "zed@example.com", "type": "work"}],
        "name": {},
        "active": True,
        "_created": "2015-01-01T00:00:00Z",
        "_modified": "2015-06-01T12:00:00Z",
    },
    "u7": {
        "userName": "carol",
        "emails": [{"value": "carol@example.org", "type": "other", "primary": True}],
        "title": "tour guide",
        "active": True,
        ENT: {"department": "Engineering", "manager": {"value": "u2"}},
        "_created": "2016-01-01T00:00:00Z",
        "_modified": "2016-01-01T00:00:00Z",
    },
    "u8": {
        "userName": "dave",
        "displayName": "",
        "active": False,
        "_created": "2017-01-01T00:00:00Z",
        "_modified": "2017-01-01T00:00:00Z",
    },
}
_STAMPS = {"_created": "2011-01-01T00:00:00Z", "_modified": "2011-01-01T00:00:00Z"}
GROUPS: dict[str, dict[str, Any]] = {
    "g1": {"displayName": "Admins", "externalId": "adm", "_members": ["u1", "u2"], **_STAMPS},
    "g2": {"displayName": "ADMINS", "_members": [], **_STAMPS},
    "g3": {"displayName": "Engineering", "_members": ["u4", "u1"], **_STAMPS},
}
DISPLAY = {"u1": "Barbara", "u2": "John", "u4": None}


def _doc(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if not k.startswith("_")}


def _meta(resource_type: str, raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "created": _storage(raw["_created"]),
        "lastModified": _storage(raw["_modified"]),
        "version": 'W/"1"',
    }


def _user_resource(uid: str) -> dict[str, Any]:
    raw = USERS[uid]
    groups = [
        {"value": gid, "display": group["displayName"]}
        for gid, group in GROUPS.items()
        if uid in group["_members"]
    ]
    return {**_doc(raw), "id": uid, "meta": _meta("User", raw), "groups": groups}


def _group_resource(gid: str) -> dict[str, Any]:
    raw = GROUPS[gid]
    members = [{"value": uid, "display": DISPLAY[uid]} for uid in raw["_members"]]
    return {**_doc(raw), "id": gid, "meta": _meta("Group", raw), "members": members}


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    """A SQLite database with the real schema, holding USERS and GROUPS."""
    path: Path = tmp_path_factory.mktemp("filters") / "directory.db"
    conn = sqlite3.connect(path)
    conn.create_function("fold", 1, _fold, deterministic=True)
    migration = resources.files("jmlsync.store").joinpath("migrations/0001_directory.sql")
    conn.executescript(migration.read_text("utf-8"))
    for uid, raw in USERS.items():
        doc = _doc(raw)
        conn.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                uid,
                doc["userName"],
                doc["userName"].casefold(),
                doc.get("externalId"),
                doc.get("displayName"),
                1 if doc["active"] else 0,
                json.dumps(doc),
                _storage(raw["_created"]),
                _storage(raw["_modified"]),
            ),
        )
    for gid, raw in GROUPS.items():
        doc = _doc(raw)
        conn.execute(
            "INSERT INTO groups VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            (
                gid,
                doc["displayName"],
                doc["displayName"].casefold(),
                doc.get("externalId"),
                json.dumps(doc),
                _storage(raw["_created"]),
                _storage(raw["_modified"]),
            ),
        )
        for uid in raw["_members"]:
            conn.execute("INSERT INTO memberships VALUES (?, ?, ?)", (gid, uid, DISPLAY[uid]))
    conn.commit()
    yield conn
    conn.close()


def _selected(conn: sqlite3.Connection, expr: Expr, table: Table) -> set[str]:
    where, params = compile_filter(expr, table)
    rows = conn.execute(f"SELECT id FROM {table.name} WHERE {where}", params).fetchall()
    return {row[0] for row in rows}


USER_CASES: list[tuple[str, set[str] | None]] = [
    ('userName eq "bjensen"', {"u1"}),
    ('userName eq "STRASSE"', {"u5"}),
    ('userName ew "SEN"', {"u1"}),
    ('userName co ""', set(USERS)),
    ('userName gt "bob"', {"u2", "u5", "u6", "u7", "u8"}),
    ('userName ne "bjensen"', set(USERS) - {"u1"}),
    ('name.familyName co "ens"', {"u1", "u3"}),
    ('name.familyName eq "strasse"', {"u5"}),
    ('name.givenName lt "c"', {"u1"}),
    ('name.givenName ge "ü"', {"u5"}),
    ('emails[type eq "work" and value co "@example.com"]', {"u1", "u4", "u6"}),
    ('emails[type eq "home" and value co "@example.com"]', {"u2"}),
    # Entra's `attr[filter].sub op value`, read as `attr[filter and sub op value]`.
    ('emails[type eq "work"].value eq "BJENSEN@example.com"', {"u1"}),
    ('emails[type eq "home"].value eq "bjensen@example.com"', set()),
    ('emails[type eq "work"].value co "@example.com"', {"u1", "u4", "u6"}),
    ('emails[type eq "work"].value pr', None),
    ('not (emails[type eq "work"].value ew ".org") and active eq true', None),
    ('emails.value ew ".org"', {"u1", "u2", "u7"}),
    ('emails eq "bob@example.com"', {"u4"}),
    ('emails.type sw "WO"', {"u1", "u2", "u4", "u6"}),
    ("emails.primary eq true", {"u1", "u7"}),
    ("emails.primary eq false", {"u4"}),
    ("emails.display pr", {"u1"}),
    ("emails pr", {"u1", "u2", "u4", "u6", "u7"}),
    ("not (emails pr)", {"u3", "u5", "u8"}),
    ('emails[type eq "work"] and not (emails[primary eq true])', {"u2", "u4", "u6"}),
    ('emails.value ne "zed@example.com"', set(USERS) - {"u6"}),
    ("title pr", {"u1", "u4", "u7"}),
    ("not (title pr)", {"u2", "u3", "u5", "u6", "u8"}),
    ("title eq null", {"u2", "u3", "u5", "u6", "u8"}),
    ("title ne null", {"u1", "u4", "u7"}),
    ('title eq "TOUR GUIDE"', {"u1", "u7"}),
    ('title ne "tour guide"', set(USERS) - {"u1", "u7"}),
    # Precedence: or/and differ from left-to-right evaluation.
    ('userName sw "b" or title pr and active eq true', {"u1", "u4", "u7"}),
    ('(userName sw "b" or title pr) and active eq true', {"u1", "u7"}),
    ('title pr and active eq false or userName eq "zed"', {"u4", "u6"}),
    ('meta.lastModified gt "2011-05-13T04:42:34Z"', {"u2", "u4", "u5", "u6", "u7", "u8"}),
    ('meta.lastModified ge "2011-05-13T06:42:34+02:00"', set(USERS)),
    ('meta.lastModified le "2011-05-13T04:42:34.5Z"', {"u1", "u3"}),
    ('meta.lastModified eq "2011-05-13T04:42:34Z"', {"u1", "u3"}),
    ('meta.created lt "2011-01-01T00:00:00Z"', {"u4"}),
    (f'{ENT}:department eq "Eng"', {"u1", "u2"}),
    (f'{ENT}:department sw "eng"', {"u1", "u2", "u7"}),
    (f"{ENT}:department pr", {"u1", "u2", "u4", "u7"}),
    (f'{ENT}:manager.value eq "u1"', {"u2"}),
    (f'{ENT}:manager.value eq "U1"', set()),  # case-exact
    ("active eq false", {"u2", "u4", "u8"}),
    ("active ne true", {"u2", "u4", "u8"}),
    ('groups.value eq "g1"', {"u1", "u2"}),
    ('groups[value eq "g3"]', {"u1", "u4"}),
    ('groups[value eq "g3" and display eq "engineering"]', {"u1", "u4"}),
    ('groups.display eq "admins"', {"u1", "u2"}),
    ("groups pr", {"u1", "u2", "u4"}),
    ("not (groups pr)", {"u3", "u5", "u6", "u7", "u8"}),
    ('groups.value ne "g1"', set(USERS) - {"u1", "u2"}),
    ('externalId eq "x"', {"u1"}),
    ('externalId ne "x"', set(USERS) - {"u1"}),
    ("externalId pr", {"u1", "u2", "u4"}),
    ('id eq "u3"', {"u3"}),
    ('displayName co "ze"', {"u6"}),
    ("displayName pr", {"u1", "u2", "u6"}),
    ('meta.resourceType eq "User"', set(USERS)),
    ('meta.version eq "W/\\"1\\""', set(USERS)),
    ('name[givenName sw "b"]', {"u1"}),
    ("name[not (familyName pr)]", {"u6"}),
    ("name pr", {"u1", "u2", "u3", "u5"}),
    ('nickName ne "x"', set(USERS)),
    ('userName eq "x\' OR 1=1 --"', set()),
]


@pytest.mark.parametrize(("text", "expected"), USER_CASES)
def test_sql_and_matches_agree_on_users(
    directory: sqlite3.Connection, text: str, expected: set[str] | None
) -> None:
    expr = parse_filter(text, USER)
    in_python = {uid for uid in USERS if matches(expr, _user_resource(uid))}
    in_sql = _selected(directory, expr, USERS_TABLE)
    assert in_sql == in_python
    if expected is not None:
        assert in_python == expected


GROUP_CASES: list[tuple[str, set[str]]] = [
    ('displayName eq "Admins"', {"g1", "g2"}),
    ('displayName sw "eng"', {"g3"}),
    ('members[value eq "u1"]', {"g1", "g3"}),
    ('members.value eq "u1"', {"g1", "g3"}),
    ('members eq "u2"', {"g1"}),
    ('members.value eq "U1"', set()),
    ('members.display co "BAR"', {"g1", "g3"}),
    ('members[value eq "u4" or display eq "john"]', {"g1", "g3"}),
    ('members[value eq "u1"].display co "BAR"', {"g1", "g3"}),
    ("members pr", {"g1", "g3"}),
    ("not (members pr)", {"g2"}),
    ("members.display pr", {"g1", "g3"}),
    ('members.value ne "u1"', {"g2"}),
    ('displayName eq "admins" and members pr or externalId eq "adm"', {"g1"}),
    ("externalId pr", {"g1"}),
    ('meta.resourceType eq "Group"', set(GROUPS)),
]


ATOMS = [parse_filter(text, USER) for text, _ in USER_CASES]


@st.composite
def _filters(draw: st.DrawFn, depth: int = 3) -> Expr:
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(ATOMS))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return Not(draw(_filters(depth - 1)))
    left, right = draw(_filters(depth - 1)), draw(_filters(depth - 1))
    return And(left, right) if kind == "and" else Or(left, right)


@settings(max_examples=150, deadline=None)
@given(expr=_filters())
def test_sql_and_matches_agree_on_combinations(directory: sqlite3.Connection, expr: Expr) -> None:
    in_python = {uid for uid in USERS if matches(expr, _user_resource(uid))}
    assert _selected(directory, expr, USERS_TABLE) == in_python


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES)
def test_sql_and_matches_agree_on_groups(
    directory: sqlite3.Connection, text: str, expected: set[str]
) -> None:
    expr = parse_filter(text, GROUP)
    in_python = {gid for gid in GROUPS if matches(expr, _group_resource(gid))}
    assert _selected(directory, expr, GROUPS_TABLE) == in_python == expected


def test_values_are_parameters() -> None:
    text = 'userName eq "x\' OR 1=1 --" or title co "\'; DROP TABLE users; --"'
    where, params = compile_filter(parse_filter(text, USER), USERS_TABLE)
    assert "OR 1=1" not in where
    assert "DROP" not in where
    assert params == ["x' or 1=1 --", "'; drop table users; --"]


@pytest.mark.parametrize(
    ("expr", "table"),
    [
        (Present(Attr("password")), USERS_TABLE),
        (Compare(Attr("meta", "location", type="reference"), "eq", "x"), USERS_TABLE),
        (Present(Attr("meta", type="complex")), GROUPS_TABLE),
        (Compare(Attr("members", "$ref", multi_valued=True), "eq", "x"), GROUPS_TABLE),
        (Compare(Attr("name", "bad'key"), "eq", "x"), USERS_TABLE),
        (
            ValuePath(EMAILS, ValuePath(Attr("value"), Present(Attr("x")))),
            USERS_TABLE,
        ),
    ],
)
def test_compile_refuses(expr: Expr, table: Table) -> None:
    with pytest.raises(InvalidFilterError):
        compile_filter(expr, table)


@pytest.mark.parametrize(
    ("attr", "descending", "expected"),
    [
        (USER_NAME, False, ["u3", "u1", "u4", "u7", "u8", "u2", "u5", "u6"]),
        (
            Attr("name", "familyName"),
            False,
            ["u3", "u1", "u2", "u5", "u4", "u6", "u7", "u8"],
        ),
        (LAST_MODIFIED, True, ["u8", "u7", "u6", "u5", "u4", "u2", "u1", "u3"]),
        (
            # The primary email when there is one, else the first.
            EMAILS,
            False,
            ["u1", "u4", "u7", "u2", "u6", "u3", "u5", "u8"],
        ),
        (Attr("groups", "value", multi_valued=True), False, ["u1", "u2", "u4"]),
    ],
)
def test_sort_expression(
    directory: sqlite3.Connection, attr: Attr, descending: bool, expected: list[str]
) -> None:
    order = f"{sort_expression(attr, USERS_TABLE)} {'DESC' if descending else 'ASC'} NULLS LAST"
    rows = directory.execute(f"SELECT id FROM users ORDER BY {order}, id").fetchall()
    assert [row[0] for row in rows][: len(expected)] == expected

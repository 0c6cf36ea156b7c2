"""Filters compiled to PostgreSQL select exactly what :func:`matches` accepts, on a real server.

The module makes a database of its own on the server at 127.0.0.1:5432 (user ``postgres``,
trust authentication), holding the users and groups of ``tests/unit/test_filters.py`` in the
PostgreSQL shape of the directory tables, plus a schema ``odd`` of documents with values of
unexpected JSON types. When it can, the database collates by ICU's root locale, which orders
text unlike code points, so the compiler's ``COLLATE "C"`` is exercised.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings

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
from jmlsync.scim.filters import parse_filter
from jmlsync.scim.schema import ENTERPRISE_USER_SCHEMA, GROUP, USER
from jmlsync.store.filters.columns import GROUPS_TABLE, USERS_TABLE, Table
from jmlsync.store.filters.postgres import compile_filter_pg, sort_expression_pg
from tests.postgres import ADMIN_DSN, HOST, PORT, UNREACHABLE, postgres_reachable
from tests.unit.test_filters import (
    DISPLAY,
    GROUP_CASES,
    GROUPS,
    USER_CASES,
    USERS,
    _doc,
    _filters,
    _group_resource,
    _storage,
    _user_resource,
)

# Module-scoped fixtures fill one database for all cases, so the module skips as a whole.
if not postgres_reachable():
    pytest.skip(UNREACHABLE, allow_module_level=True)

pytestmark = pytest.mark.postgresql

ENT = ENTERPRISE_USER_SCHEMA

SCHEMA = """
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL,
    user_name_key TEXT NOT NULL UNIQUE,
    external_id   TEXT,
    display_name  TEXT,
    active        BOOLEAN NOT NULL DEFAULT true,
    doc           JSONB NOT NULL,
    created       TEXT NOT NULL,
    last_modified TEXT NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE groups (
    id               TEXT PRIMARY KEY,
    display_name     TEXT NOT NULL,
    display_name_key TEXT NOT NULL,
    external_id      TEXT,
    doc              JSONB NOT NULL,
    created          TEXT NOT NULL,
    last_modified    TEXT NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE memberships (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display  TEXT,
    PRIMARY KEY (group_id, user_id)
);
"""
FOLD = "CREATE FUNCTION fold(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower($1)'"

# Users whose documents hold values of every JSON type where the schema expects another one.
ODD: dict[str, dict[str, Any]] = {
    "o1": {
        "userName": "o1",
        "active": True,
        "scores": [3, 7, 10, 2**70],
        "ratio": 0.1,
        "flag": True,
        "tags": ["Red", "green"],
        "emails": {"value": "single@x.org", "type": "work", "tags": ["a", "X"]},
        "nick": "zoe",
        "name": {"givenName": "Zoë"},
        ENT: {"department": ["Eng"]},
    },
    "o2": {
        "userName": "o2",
        "active": False,
        "scores": 10,
        "ratio": "0.1",
        "flag": "true",
        "tags": "red",
        "emails": ["plain@x.org", {"value": "A@X.ORG"}, [1], None],
        "nick": "Äpfel",
        "name": [],
        ENT: "Eng",
    },
    "o3": {
        "userName": "o3",
        "active": True,
        "scores": ["3", True, 2.5],
        "ratio": 1,
        "flag": False,
        "tags": [[], {}, ""],
        "emails": [],
        "nick": "abß",
        "name": "str",
        ENT: {"department": 7},
    },
    "o4": {
        "userName": "o4",
        "active": True,
        "scores": [],
        "ratio": None,
        "flag": None,
        "tags": None,
        "emails": None,
        "nick": "",
        "name": {"givenName": ""},
        ENT: {"department": None},
    },
    "o5": {"userName": "o5", "active": False},
    "o6": {
        "userName": "o6",
        "active": True,
        "scores": [100.0, -1],
        "ratio": 1e-3,
        "nick": "ab",
        "emails": [{"value": "x@y.org", "type": "WORK", "primary": True}, {"type": "home"}],
        "name": {"givenName": "Bob", "familyName": {"x": 1}},
    },
}
ODD_STAMP = "2020-02-02T02:02:02Z"


def _odd_resource(uid: str) -> dict[str, Any]:
    meta = {"resourceType": "User", "created": _storage(ODD_STAMP), "version": 'W/"1"'}
    return {**ODD[uid], "id": uid, "meta": {**meta, "lastModified": meta["created"]}}


class Directory:
    """Synchronous access to the test database, through a private event loop."""

    def __init__(self, runner: asyncio.Runner, main: Any, odd: Any, icu: bool) -> None:
        self.runner, self.main, self.odd, self.icu = runner, main, odd, icu

    def ids(self, expr: Expr, table: Table, *, odd: bool = False) -> set[str]:
        where, params = compile_filter_pg(expr, table)
        return self.select(f"SELECT id FROM {table.name} WHERE {where}", params, odd=odd)

    def select(self, sql: str, params: list[Any], *, odd: bool = False) -> set[str]:
        return set(self.ordered(sql, params, odd=odd))

    def ordered(self, sql: str, params: list[Any], *, odd: bool = False) -> list[str]:
        conn = self.odd if odd else self.main
        rows = self.runner.run(conn.fetch(sql, *params))
        return [row[0] for row in rows]


async def _create_database(admin: Any, name: str) -> bool:
    """Create ``name``, collated by ICU's root locale when the server has ICU; say which."""
    try:
        await admin.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
            " LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C.UTF-8'"
        )
        return True
    except asyncpg.PostgresError:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
        return False


async def _fill(main: Any, odd: Any) -> None:
    await main.execute(FOLD)
    await main.execute(SCHEMA)
    await main.execute("CREATE SCHEMA odd")
    await odd.execute(SCHEMA)  # its search_path puts odd first
    insert_user = "INSERT INTO users VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, 1)"
    for uid, raw in USERS.items():
        doc = _doc(raw)
        await main.execute(
            insert_user,
            uid,
            doc["userName"],
            doc["userName"].casefold(),
            doc.get("externalId"),
            doc.get("displayName"),
            doc["active"],
            json.dumps(doc),
            _storage(raw["_created"]),
            _storage(raw["_modified"]),
        )
    for gid, raw in GROUPS.items():
        doc = _doc(raw)
        await main.execute(
            "INSERT INTO groups VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, 1)",
            gid,
            doc["displayName"],
            doc["displayName"].casefold(),
            doc.get("externalId"),
            json.dumps(doc),
            _storage(raw["_created"]),
            _storage(raw["_modified"]),
        )
        for uid in raw["_members"]:
            await main.execute(
                "INSERT INTO memberships VALUES ($1, $2, $3)", gid, uid, DISPLAY[uid]
            )
    for uid, doc in ODD.items():
        stamp = _storage(ODD_STAMP)
        name = doc["userName"]
        await odd.execute(
            insert_user,
            uid,
            name,
            name.casefold(),
            None,
            None,
            doc["active"],
            json.dumps(doc),
            stamp,
            stamp,
        )


@pytest.fixture(scope="module")
def directory() -> Iterator[Directory]:
    """A fresh database holding the users and groups of test_filters, dropped afterwards."""
    name = f"jmlsync_test_{secrets.token_hex(6)}"
    dsn = f"postgresql://postgres@{HOST}:{PORT}/{name}"
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        admin = runner.run(asyncpg.connect(ADMIN_DSN))
        try:
            icu = runner.run(_create_database(admin, name))
            try:
                main = runner.run(asyncpg.connect(dsn))
                odd = runner.run(
                    asyncpg.connect(dsn, server_settings={"search_path": "odd, public"})
                )
                try:
                    runner.run(_fill(main, odd))
                    yield Directory(runner, main, odd, icu)
                finally:
                    runner.run(odd.close())
                    runner.run(main.close())
            finally:
                runner.run(admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        finally:
            runner.run(admin.close())


# --- the cases of test_filters.py -------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), USER_CASES)
def test_pg_and_matches_agree_on_users(
    directory: Directory, text: str, expected: set[str] | None
) -> None:
    expr = parse_filter(text, USER)
    in_python = {uid for uid in USERS if matches(expr, _user_resource(uid))}
    assert directory.ids(expr, USERS_TABLE) == in_python
    if expected is not None:
        assert in_python == expected


@pytest.mark.parametrize(("text", "expected"), GROUP_CASES)
def test_pg_and_matches_agree_on_groups(
    directory: Directory, text: str, expected: set[str]
) -> None:
    expr = parse_filter(text, GROUP)
    in_python = {gid for gid in GROUPS if matches(expr, _group_resource(gid))}
    assert directory.ids(expr, GROUPS_TABLE) == in_python == expected


@settings(max_examples=150, deadline=None)
@given(expr=_filters())
def test_pg_and_matches_agree_on_combinations(directory: Directory, expr: Expr) -> None:
    in_python = {uid for uid in USERS if matches(expr, _user_resource(uid))}
    assert directory.ids(expr, USERS_TABLE) == in_python


# --- values of unexpected types ----------------------------------------------------------------

SCORES = Attr("scores", type="integer", multi_valued=True)
RATIO = Attr("ratio", type="decimal")
FLAG = Attr("flag", type="boolean")
TAGS = Attr("tags", multi_valued=True)
NICK = Attr("nick")
EMAILS = Attr("emails", type="complex", multi_valued=True)
EMAIL_VALUE = Attr("emails", "value", multi_valued=True)
NAME = Attr("name", type="complex")
DEPARTMENT = Attr("department", uri=ENT)
ACTIVE = Attr("active", type="boolean")
CREATED = Attr("meta", "created", type="dateTime", case_exact=True)

ODD_CASES: list[Expr] = [
    Compare(SCORES, "gt", 5),
    Compare(SCORES, "eq", 3),
    Compare(SCORES, "le", 3.0),
    Compare(SCORES, "eq", 2.5),
    Compare(SCORES, "eq", 100),
    Compare(SCORES, "lt", 0),
    Compare(SCORES, "ne", 10),
    Compare(SCORES, "gt", 1e21),
    Compare(SCORES, "eq", True),
    Compare(SCORES, "eq", "3"),
    Compare(SCORES, "co", "3"),
    Compare(SCORES, "co", 3),
    Present(SCORES),
    Compare(RATIO, "eq", 0.1),
    Compare(RATIO, "lt", 0.5),
    Compare(RATIO, "ge", 1),
    Compare(RATIO, "eq", 0.001),
    Compare(RATIO, "eq", "0.1"),
    Compare(RATIO, "eq", None),
    Present(RATIO),
    Compare(FLAG, "eq", True),
    Compare(FLAG, "eq", False),
    Compare(FLAG, "ne", True),
    Compare(FLAG, "eq", "true"),
    Compare(FLAG, "gt", False),
    Present(FLAG),
    Compare(TAGS, "eq", "red"),
    Compare(TAGS, "gt", "h"),
    Compare(TAGS, "co", ""),
    Compare(TAGS, "eq", ""),
    Present(TAGS),
    Not(Present(TAGS)),
    Compare(EMAIL_VALUE, "ew", "X.org"),
    Compare(EMAIL_VALUE, "sw", "plain"),
    Compare(Attr("emails", "type", multi_valued=True), "eq", "work"),
    Compare(Attr("emails", "primary", type="boolean", multi_valued=True), "eq", True),
    Present(EMAILS),
    Present(EMAIL_VALUE),
    ValuePath(EMAILS, Compare(Attr("type"), "eq", "work")),
    ValuePath(EMAILS, Not(Present(Attr("type")))),
    ValuePath(EMAILS, Compare(Attr("tags", multi_valued=True), "eq", "x")),
    ValuePath(EMAILS, And(Present(Attr("value")), Compare(Attr("primary"), "ne", True))),
    Compare(NICK, "ge", "ü"),  # code points: "zoe" < "ü", though ICU puts u before z
    Compare(NICK, "lt", "b"),  # "äpfel" > "b" by code point
    Compare(NICK, "gt", "Z"),
    Compare(NICK, "eq", "ABß"),
    Compare(NICK, "sw", ""),
    Compare(NICK, "ew", "B"),
    Compare(NICK, "co", "P"),
    Compare(NICK, "eq", ""),
    Compare(NICK, "eq", "ab\x00"),
    Compare(NICK, "co", "\x00"),
    Compare(NICK, "ne", "ab\x00"),
    Compare(NICK, "gt", "ab\x00"),
    Compare(NICK, "ge", "ab\x00c"),
    Compare(NICK, "lt", "ab\x00"),
    Compare(NICK, "le", "AB\x00"),
    Compare(NICK, "eq", 1),
    Compare(NICK, "eq", False),
    Present(NICK),
    Present(NAME),
    Compare(Attr("name", "givenName"), "sw", "ZO"),
    Compare(Attr("name", "givenName"), "eq", None),
    Compare(Attr("name", "familyName"), "eq", None),
    Compare(Attr("name", "familyName"), "co", "x"),
    ValuePath(NAME, Present(Attr("givenName"))),
    ValuePath(NAME, Not(Present(Attr("givenName")))),
    Compare(DEPARTMENT, "eq", "Eng"),
    Compare(DEPARTMENT, "eq", 7),
    Present(DEPARTMENT),
    Compare(ACTIVE, "eq", True),
    Compare(ACTIVE, "ne", False),
    Compare(ACTIVE, "gt", False),
    Compare(Attr("active"), "eq", "true"),
    Compare(Attr("active"), "ne", "x"),
    Present(ACTIVE),
    Compare(Attr("displayName"), "eq", 1),
    Compare(Attr("displayName"), "ne", True),
    Compare(Attr("userName"), "eq", "O1"),
    Compare(CREATED, "eq", "2020-02-02T03:02:02+01:00"),
    Compare(CREATED, "ge", "2020-02-02T02:02:02.000001Z"),
    Or(Compare(FLAG, "eq", True), Not(Compare(SCORES, "gt", 5))),
    And(Not(Compare(TAGS, "eq", "red")), Present(NICK)),
]


@pytest.mark.parametrize("expr", ODD_CASES, ids=repr)
def test_pg_and_matches_agree_on_odd_values(directory: Directory, expr: Expr) -> None:
    in_python = {uid for uid in ODD if matches(expr, _odd_resource(uid))}
    assert directory.ids(expr, USERS_TABLE, odd=True) == in_python


def test_the_database_orders_text_unlike_code_points(directory: Directory) -> None:
    # Without this the code-point cases above would pass without COLLATE "C".
    if not directory.icu:
        pytest.skip("the server cannot make an ICU-collated database")
    rows = directory.ordered("SELECT 'zoe' > 'ü' AND 'äpfel' < 'b'", [])
    assert rows == [True]


# --- parameters, refusals, sorting -------------------------------------------------------------


def test_values_are_numbered_typed_parameters(directory: Directory) -> None:
    text = 'userName eq "x\' OR 1=1 --" or title sw "\'; DROP TABLE users; --" or active eq true'
    where, params = compile_filter_pg(parse_filter(text, USER), USERS_TABLE, start=3)
    assert "OR 1=1" not in where
    assert "DROP" not in where
    assert params == ["x' or 1=1 --", "'; DROP TABLE users; --", True]
    assert "$3::text" in where
    assert where.count("$4::text") == 2
    assert "$5::boolean" in where
    assert "$1" not in where
    assert "$2" not in where
    # Callers put their own parameters first.
    sql = f"SELECT id FROM users WHERE id <> $1 AND version = $2 AND ({where})"
    assert directory.select(sql, ["u1", 1, *params]) == {"u3", "u5", "u6", "u7"}


def test_numbers_are_decimal_parameters() -> None:
    where, params = compile_filter_pg(Compare(RATIO, "eq", 0.1), USERS_TABLE)
    assert "$1::numeric" in where
    assert [str(p) for p in params] == ["0.1"]


@pytest.mark.parametrize(
    ("expr", "table"),
    [
        (Present(Attr("password")), USERS_TABLE),
        (Compare(Attr("meta", "location", type="reference"), "eq", "x"), USERS_TABLE),
        (Present(Attr("meta", type="complex")), GROUPS_TABLE),
        (Compare(Attr("members", "$ref", multi_valued=True), "eq", "x"), GROUPS_TABLE),
        (Compare(Attr("name", "bad'key"), "eq", "x"), USERS_TABLE),
        (Compare(Attr("name", 'bad"key'), "eq", "x"), USERS_TABLE),
        (Compare(Attr("emails", "0", multi_valued=True), "eq", "x"), USERS_TABLE),
        (ValuePath(Attr("meta", type="complex"), Present(Attr("created"))), USERS_TABLE),
        (ValuePath(EMAILS, ValuePath(Attr("value"), Present(Attr("x")))), USERS_TABLE),
        (Compare(Attr("meta", "created", type="dateTime"), "gt", "yesterday"), USERS_TABLE),
        (Compare(NICK, "eq", "\ud800"), USERS_TABLE),
    ],
)
def test_compile_refuses(expr: Expr, table: Table) -> None:
    with pytest.raises(InvalidFilterError):
        compile_filter_pg(expr, table)


def test_start_must_be_positive() -> None:
    with pytest.raises(ValueError, match="numbered from 1"):
        compile_filter_pg(Present(NICK), USERS_TABLE, start=0)


LAST_MODIFIED = Attr("meta", "lastModified", type="dateTime", case_exact=True)


@pytest.mark.parametrize(
    ("attr", "descending", "expected"),
    [
        (Attr("userName"), False, ["u3", "u1", "u4", "u7", "u8", "u2", "u5", "u6"]),
        (Attr("name", "familyName"), False, ["u3", "u1", "u2", "u5", "u4", "u6", "u7", "u8"]),
        (LAST_MODIFIED, True, ["u8", "u7", "u6", "u5", "u4", "u2", "u1", "u3"]),
        # The primary email when there is one, else the first.
        (EMAILS, False, ["u1", "u4", "u7", "u2", "u6", "u3", "u5", "u8"]),
        (Attr("groups", "value", multi_valued=True), False, ["u1", "u2", "u4"]),
        (ACTIVE, True, ["u1", "u3", "u5", "u6", "u7", "u2", "u4", "u8"]),
        (Attr("password"), False, ["u1", "u2", "u3"]),
        (Attr("meta", "resourceType", case_exact=True), False, ["u1", "u2", "u3"]),
    ],
)
def test_sort_expression(
    directory: Directory, attr: Attr, descending: bool, expected: list[str]
) -> None:
    order = f"{sort_expression_pg(attr, USERS_TABLE)} {'DESC' if descending else 'ASC'}"
    rows = directory.ordered(f"SELECT id FROM users ORDER BY {order} NULLS LAST, id", [])
    assert rows[: len(expected)] == expected


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        # Numbers sort as numbers; a lone value counts as a one-item list.
        (SCORES, ["o1", "o2", "o6", "o3", "o4", "o5"]),
        # Code point order: "" < "ab" < "abß" < "zoe" < "äpfel".
        (NICK, ["o4", "o6", "o3", "o1", "o2", "o5"]),
        (FLAG, ["o3", "o1", "o2", "o4", "o5", "o6"]),
        # By value: o2's first email is a bare string, which has none.
        (EMAILS, ["o1", "o6", "o2", "o3", "o4", "o5"]),
    ],
)
def test_sort_expression_on_odd_values(
    directory: Directory, attr: Attr, expected: list[str]
) -> None:
    order = f"{sort_expression_pg(attr, USERS_TABLE)} ASC NULLS LAST"
    rows = directory.ordered(f"SELECT id FROM users ORDER BY {order}, id", [], odd=True)
    assert rows == expected

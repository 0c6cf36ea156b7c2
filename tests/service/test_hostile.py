"""Hostile input on both backends: a 400 with the right scimType, never a 500, and no change."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.domain.directory import Change
from jmlsync.scim.filters import MAX_FILTER_DEPTH, MAX_FILTER_TERMS
from jmlsync.scim.handlers import scim_response
from jmlsync.scim.throttle import AuthThrottle
from jmlsync.store.directory import SqlStore
from tests.conftest import BASE_PATH, TOKENS, ScimClient
from tests.postgres import fresh_database
from tests.scim_samples import PATCH_OP

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _user_with(fragment: str) -> bytes:
    return ('{"schemas":["' + USER + '"],"userName":"mallory@x.io",' + fragment + "}").encode()


#: (name, raw body of a POST /Users, scimType)
BODIES = [
    ("10000 levels", _user_with('"x":' + _deep(10_000)), "invalidSyntax"),
    ("100 levels", _user_with('"x":' + _deep(100)), "invalidSyntax"),
    ("deep object", _user_with('"x":' + '{"a":' * 5000 + "1" + "}" * 5000), "invalidSyntax"),
    ("surrogate value", _user_with('"displayName":"a\\ud800b"'), "invalidValue"),
    ("surrogate key", _user_with('"\\udfff":1'), "invalidValue"),
    (
        "encoded surrogate",
        _user_with('"displayName":"').rstrip(b"}") + b'\xed\xa0\x80"}',
        "invalidValue",
    ),
    (
        "nul in userName",
        ('{"schemas":["' + USER + '"],"userName":"a\\u0000b"}').encode(),
        "invalidValue",
    ),
    ("nul in complex", _user_with('"name":{"givenName":"a\\u0000"}'), "invalidValue"),
    ("nul in list", _user_with('"emails":[{"value":"a\\u0000@x.io"}]'), "invalidValue"),
]


def assert_error(reply: Any, status: int, scim_type: str | None) -> None:
    assert reply.status == status, reply.body
    assert reply.body["schemas"] == [ERROR]
    if scim_type is not None:
        assert reply.body.get("scimType") == scim_type, reply.body


async def snapshot(scim: ScimClient) -> Any:
    """Everything a hostile request could have changed: every user and group, in full."""
    users = await scim.get("/Users", params={"count": "1000"})
    groups = await scim.get("/Groups", params={"count": "1000"})
    assert users.status == groups.status == 200
    return users.body, groups.body


@pytest.mark.parametrize(("name", "raw", "scim_type"), BODIES, ids=[b[0] for b in BODIES])
async def test_hostile_bodies_answer_400_and_change_nothing(
    scim: ScimClient, name: str, raw: bytes, scim_type: str
) -> None:
    user = await scim.create_user("bea@x.io")
    group = await scim.create_group("eng", [user["id"]])
    before = await snapshot(scim)
    patch = (
        ('{"schemas":["' + PATCH_OP + '"],"Operations":[{"op":"replace","value":').encode()
        + raw
        + b"}]}"
    )
    search = ('{"schemas":["' + SEARCH + '"],"filter":"userName pr","x":').encode() + raw + b"}"
    for method, path, body in (
        ("POST", "/Users", raw),
        ("PUT", f"/Users/{user['id']}", raw),
        ("PATCH", f"/Users/{user['id']}", patch),
        ("PATCH", f"/Groups/{group['id']}", patch),
        ("POST", "/Groups", raw),
        ("POST", "/Users/.search", search),
        ("POST", "/.search", search),
    ):
        reply = await scim.request(method, path, raw=body)
        assert reply.status == 400, (method, path, reply.body)
        assert reply.body["schemas"] == [ERROR]
        assert reply.body.get("scimType") == scim_type, (method, path, reply.body)
    assert await snapshot(scim) == before


def _nested_not(times: int) -> str:
    return "not (" * times + 'userName eq "x"' + ")" * times


def _parenthesised(times: int) -> str:
    return "(" * times + 'userName eq "x"' + ")" * times


def _chain(terms: int) -> str:
    return " or ".join(f'userName eq "u{i}"' for i in range(terms))


FILTERS = [
    ("not x300", _nested_not(300), "invalidFilter"),
    ("not x1000", _nested_not(1000), "invalidFilter"),
    ("parens x3000", _parenthesised(3000), "invalidFilter"),
    ("unclosed x3000", "(" * 3000, "invalidFilter"),
    ("value filter x200", "emails[" * 200 + 'value eq "x"' + "]" * 200, "invalidFilter"),
    ("or x5000", _chain(5000), "invalidFilter"),
    ("nul escape", 'userName eq "a\\u0000"', "invalidValue"),
    ("surrogate escape", 'userName eq "\\ud800"', "invalidValue"),
    ("raw nul", 'userName eq "a\x00"', "invalidValue"),
]


@pytest.mark.parametrize(("name", "text", "scim_type"), FILTERS, ids=[f[0] for f in FILTERS])
async def test_hostile_filters_answer_400(
    scim: ScimClient, name: str, text: str, scim_type: str
) -> None:
    await scim.create_user("bea@x.io")
    before = await snapshot(scim)
    async with scim.session.get(scim.root + "/Users", params={"filter": text}) as response:
        answer = await response.text()
    assert response.status == 400, answer
    if len(text) < 1000:
        # Longer ones exceed the request line's 8190 bytes: aiohttp answers 400 itself.
        assert json.loads(answer)["scimType"] == scim_type
    body = {"schemas": [SEARCH], "filter": text}
    assert_error(await scim.post("/Users/.search", body), 400, scim_type)
    assert_error(await scim.post("/.search", body), 400, scim_type)
    assert await snapshot(scim) == before


async def test_filters_at_the_limits_still_work(scim: ScimClient) -> None:
    """The limits refuse only what no IdP sends: at the limit, the filter is answered."""
    await scim.create_user("u7", emails=[{"value": "b"}])
    # The costliest shapes in SQL: a NOT and an AND per level, a value filter around them.
    depth = MAX_FILTER_DEPTH
    deepest = 'not (userName eq "a" and ' * depth + 'userName eq "u7"' + ")" * depth
    inner = depth - 1
    in_emails = "emails[" + 'not (value eq "a" and ' * inner + 'value eq "b"' + ")" * inner + "]"
    for text, found in (
        (deepest, ["u7"]),  # "a and ..." is false at every level: each NOT is true
        (in_emails, ["u7"]),
        (_parenthesised(depth), []),
        (_chain(MAX_FILTER_TERMS + 1), ["u7"]),
        (" and ".join(['userName eq "u7"'] * (MAX_FILTER_TERMS + 1)), ["u7"]),
    ):
        reply = await scim.get("/Users", params={"filter": text})
        assert reply.status == 200, (text, reply.body)
        assert [r["userName"] for r in reply.body["Resources"]] == found, text
    assert_error(
        await scim.get("/Users", params={"filter": _parenthesised(MAX_FILTER_DEPTH + 1)}),
        400,
        "invalidFilter",
    )
    assert_error(
        await scim.get("/Users", params={"filter": _chain(MAX_FILTER_TERMS + 2)}),
        400,
        "invalidFilter",
    )


async def test_a_nul_in_the_path_or_query_is_invalid_value(scim: ScimClient) -> None:
    user = await scim.create_user("bea@x.io")
    before = await snapshot(scim)
    for method, path in (
        ("GET", "/Users/a%00b"),
        ("DELETE", f"/Users/{user['id']}%00"),
        ("GET", "/Users?attributes=userName%00"),
        ("GET", "/Users?count=1&x%00=1"),
    ):
        session = scim.session
        async with session.request(method, scim.root + path) as response:
            body = json.loads(await response.text())
        assert response.status == 400, (path, body)
        assert body["scimType"] == "invalidValue"
    assert await snapshot(scim) == before


async def _raw_exchange(url: str, request: bytes) -> bytes:
    """Send ``request`` as is on a fresh connection; the whole answer (the server closes)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe\xfd", b"\xc3\x28", b"Bearer t0-\xed\xa0\x80" + b"a" * 40]
)
async def test_undecodable_authorization_is_401(server_url: str, value: bytes) -> None:
    answer = await _raw_exchange(
        server_url,
        f"GET {BASE_PATH}/Users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + value
        + b"\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), answer
    assert json.loads(body)["status"] == "401"


async def test_metric_labels_come_only_from_known_routes(
    scim: ScimClient, anonymous: ScimClient, server_url: str
) -> None:
    root = server_url.rstrip("/")
    for index in range(60):
        async with anonymous.session.get(f"{root}/probe-{index}/x") as reply:
            assert reply.status in (401, 429)  # throttled after a few
        async with scim.session.get(f"{root}/random-{index}") as reply:
            assert reply.status == 404
        async with scim.session.get(f"{root}{BASE_PATH}/Nope{index}") as reply:
            assert reply.status == 404
    await scim.get("/Users")
    async with scim.session.get(f"{root}/metrics") as reply:
        text = await reply.text()
    labels = {
        line.split('resource="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("jmlsync_scim_requests_total{")
    }
    assert labels == {"other", "Users"}, labels


def test_throttle_counts_per_address_in_windows_and_forgets_the_oldest() -> None:
    now = [0.0]
    throttle = AuthThrottle(3, 60, max_addresses=100, clock=lambda: now[0])
    assert [throttle.refused("10.0.0.1") for _ in range(3)] == [None, None, None]
    assert throttle.refused("10.0.0.1") == 60
    assert throttle.refused("10.0.0.2") is None  # another address has its own allowance
    now[0] = 45.5
    assert throttle.refused("10.0.0.1") == 15
    now[0] = 60.0
    assert throttle.refused("10.0.0.1") is None  # a new window
    for index in range(1000):
        throttle.refused(f"192.0.2.{index}")
    assert len(throttle) == 100


@pytest.mark.postgresql
async def test_db_copy_refuses_unstorable_rows_naming_them(tmp_path: Path) -> None:
    """A store written before the rule may hold U+0000: a copy to PostgreSQL names the rows,
    writes nothing, and answers one line; a copy to SQLite, which can hold them, goes on."""
    source_path = tmp_path / "old.db"
    store = await SqlStore.open(source_path)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        bad = await store.create("User", Change(doc={"schemas": [USER], "userName": "a\x00b"}), now)
        await store.create("User", Change(doc={"schemas": [USER], "userName": "fine"}), now)
        in_doc = Change(doc={"schemas": [USER], "userName": "t", "title": "x\x00"})
        titled = await store.create("User", in_doc, now)
    finally:
        await store.close()

    def copy(destination: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(
            main, ["db", "copy", "--from", f"sqlite:///{source_path}", "--to", destination]
        )
        return result.exit_code, result.stdout, result.stderr

    async with fresh_database() as url:
        code, out, err = await asyncio.to_thread(copy, url)
        assert code == 1, out + err
        assert err.count("\n") == 1, err
        assert "Traceback" not in err
        assert "row(s) hold U+0000 or a lone surrogate, which PostgreSQL cannot store" in err
        assert "'fine'" not in err  # the clean user is not named
        assert f"users id={bad.id!r} user_name='a\\x00b'" in err
        assert f"users id={titled.id!r} user_name='t'" in err
        assert "audit" in err  # the audit row of the change holds the name too
        target = await SqlStore.open_postgres(url)
        try:
            rows = await target.db.reader.execute_fetchall("SELECT count(*) FROM users")
            assert int(rows[0][0]) == 0  # nothing written
        finally:
            await target.close()
    code, out, err = await asyncio.to_thread(copy, f"sqlite:///{tmp_path / 'new.db'}")
    assert code == 0, err
    assert re.search(r"^users +3$", out, re.MULTILINE), out


async def test_a_rotation_to_a_loose_tokens_file_keeps_the_previous_tokens(
    anonymous: ScimClient, config_path: Path
) -> None:
    tokens = config_path.parent / "tokens"
    fresh = "t9-" + "c" * 40
    tokens.write_text(f"{fresh}\n")
    tokens.chmod(0o644)
    later = time.time() + 5  # a changed mtime, whatever the clock's resolution
    os.utime(tokens, (later, later))
    reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {fresh}"})
    assert reply.status == 401
    reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {TOKENS[0]}"})
    assert reply.status == 200


@pytest.mark.parametrize(
    "header",
    [
        b'If-Match: W/"\xff\xfe"',
        b'If-None-Match: "\xed\xa0\x80"',
        b"X-Request-Id: \xff" + b"a" * 10,
        b"Content-Type: application/scim+json; charset=\xff",
        b"Accept: \xc3\x28",
    ],
)
async def test_undecodable_bytes_in_other_headers_are_no_5xx(
    scim: ScimClient, server_url: str, header: bytes
) -> None:
    user = await scim.create_user("bea@x.io")
    before = await snapshot(scim)
    body = json.dumps({"schemas": [USER], "userName": "bea@x.io", "title": "t"}).encode()
    for method, with_body in (("GET", False), ("PUT", True), ("DELETE", False)):
        answer = await _raw_exchange(
            server_url,
            f"{method} {BASE_PATH}/Users/{user['id']} HTTP/1.1\r\nHost: x\r\n".encode()
            + f"Authorization: Bearer {TOKENS[0]}\r\nConnection: close\r\n".encode()
            + header
            + b"\r\n"
            + (f"Content-Length: {len(body)}\r\n\r\n".encode() + body if with_body else b"\r\n"),
        )
        status = int(answer.split(b" ", 2)[1])
        assert status < 500, answer
        after = await snapshot(scim)
        if status >= 400:
            assert after == before
        before = after


#: Paths over the filter limits, each with the resource type that declares its attribute.
HOSTILE_PATHS = pytest.mark.parametrize(
    ("resource", "path"),
    [
        ("Users", "emails[" * 3000 + 'value eq "x"' + "]" * 3000),
        ("Users", 'emails[value eq "x"' + ' or value eq "y"' * 5000 + "]"),
        ("Groups", "members[" + "not (" * 1000 + 'value eq "x"' + ")" * 1000 + "]"),
        ("Users", 'emails[value eq "\\u0000"].value'),
    ],
    ids=["brackets", "or-chain", "nots", "nul"],
)


@HOSTILE_PATHS
async def test_hostile_patch_paths_answer_400(scim: ScimClient, resource: str, path: str) -> None:
    user = await scim.create_user("bea@x.io")
    group = await scim.create_group("eng", [user["id"]])
    before = await snapshot(scim)
    target = f"/Users/{user['id']}" if resource == "Users" else f"/Groups/{group['id']}"
    operation = {"op": "remove", "path": path}
    reply = await scim.patch(target, {"schemas": [PATCH_OP], "Operations": [operation]})
    assert reply.status == 400, reply.body
    assert reply.body["scimType"] in ("invalidPath", "invalidFilter", "invalidValue")
    assert await snapshot(scim) == before


@HOSTILE_PATHS
async def test_hostile_patch_paths_answer_400_on_both_types_in_reject_mode(
    strict_scim: ScimClient, resource: str, path: str
) -> None:
    del resource  # refused on either type: over the limits on one, undeclared on the other
    await _patch_paths_refused(strict_scim, path)


HUGE_UNKNOWN_PATHS = pytest.mark.parametrize(
    "path", ["name." * 5000 + "givenName", "x" * 100_000], ids=["dots", "long"]
)


def _without_meta(snapshot_: Any) -> Any:
    """A snapshot without ``meta``: a write that only ignored names still bumps the version."""
    return [
        [{k: v for k, v in r.items() if k != "meta"} for r in page["Resources"]]
        for page in snapshot_
    ]


@HUGE_UNKNOWN_PATHS
async def test_huge_unknown_patch_paths_are_ignored_and_change_nothing(
    scim: ScimClient, path: str
) -> None:
    # Under the default [scim].unknown_attributes = "ignore", an operation on a path no
    # schema declares is dropped, however long: success, and no attribute changes.
    user = await scim.create_user("bea@x.io")
    group = await scim.create_group("eng", [user["id"]])
    before = await snapshot(scim)
    operation = {"op": "remove", "path": path}
    for target in (f"/Users/{user['id']}", f"/Groups/{group['id']}"):
        reply = await scim.patch(target, {"schemas": [PATCH_OP], "Operations": [operation]})
        assert reply.status in (200, 204), reply.body
    assert _without_meta(await snapshot(scim)) == _without_meta(before)


@HUGE_UNKNOWN_PATHS
async def test_huge_unknown_patch_paths_answer_400_in_reject_mode(
    strict_scim: ScimClient, path: str
) -> None:
    await _patch_paths_refused(strict_scim, path)


async def _patch_paths_refused(scim: ScimClient, path: str) -> None:
    user = await scim.create_user("bea@x.io")
    group = await scim.create_group("eng", [user["id"]])
    before = await snapshot(scim)
    operation = {"op": "remove", "path": path}
    for target in (f"/Users/{user['id']}", f"/Groups/{group['id']}"):
        reply = await scim.patch(target, {"schemas": [PATCH_OP], "Operations": [operation]})
        assert reply.status == 400, reply.body
        assert reply.body["scimType"] in ("invalidPath", "invalidFilter", "invalidValue")
    assert await snapshot(scim) == before


def test_an_answer_never_fails_on_a_lone_surrogate() -> None:
    response = scim_response({"detail": "unknown attribute '\ud800'", "ok": "é"})
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"detail": "unknown attribute '\ud800'", "ok": "é"}

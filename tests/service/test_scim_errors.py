"""Bad input gets a SCIM Error with status, scimType and detail; nothing is half-applied."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from tests.conftest import TOKENS, ScimClient
from tests.scim_samples import PATCH_OP

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def assert_error(reply: object, status: int, scim_type: str | None = None) -> None:
    body = reply.body  # type: ignore[attr-defined]
    assert reply.status == status, body  # type: ignore[attr-defined]
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body["detail"]
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-wrong-token", "Basic dXNlcjpwYXNz", "Bearer"]
)
async def test_missing_or_wrong_token_is_401(anonymous: ScimClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    reply = await anonymous.get("/Users", headers=headers)
    assert_error(reply, 401)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert "wrong-token" not in reply.body["detail"]


async def test_two_tokens_are_valid_at_once(anonymous: ScimClient) -> None:
    for token in TOKENS:
        reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {token}"})
        assert reply.status == 200


async def test_health_is_open(anonymous: ScimClient, server_url: str) -> None:
    async with anonymous.session.get(server_url.rstrip("/") + "/healthz") as response:
        assert response.status == 200


async def test_writes_without_token_change_nothing(anonymous: ScimClient, scim: ScimClient) -> None:
    reply = await anonymous.post("/Users", {"schemas": [USER], "userName": "intruder"})
    assert_error(reply, 401)
    listed = await scim.get("/Users")
    assert listed.body["totalResults"] == 0


async def test_malformed_json_is_invalid_syntax(scim: ScimClient) -> None:
    reply = await scim.post("/Users", raw=b'{"userName": ')
    assert_error(reply, 400, "invalidSyntax")


async def test_non_object_body_is_rejected(scim: ScimClient) -> None:
    reply = await scim.post("/Users", [1, 2])
    assert_error(reply, 400)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"schemas": [USER]}, "userName"),
        ({"schemas": [USER], "userName": 42}, "userName"),
        ({"schemas": [USER], "userName": "x", "active": "maybe"}, "active"),
        ({"schemas": [USER], "userName": "x", "emails": {"value": "a@b"}}, "emails"),
        ({"schemas": [USER], "userName": "x", "name": "Not An Object"}, "name"),
    ],
)
async def test_wrong_types_and_missing_required_are_invalid_value(
    scim: ScimClient, body: dict[str, object], needle: str
) -> None:
    reply = await scim.post("/Users", body)
    assert_error(reply, 400, "invalidValue")
    assert needle.lower() in reply.body["detail"].lower()


async def test_undeclared_attribute_is_invalid_value_in_reject_mode(
    strict_scim: ScimClient,
) -> None:
    body = {"schemas": [USER], "userName": "x", "favouriteColour": "blue"}
    reply = await strict_scim.post("/Users", body)
    assert_error(reply, 400, "invalidValue")
    assert "favouritecolour" in reply.body["detail"].lower()
    assert (await strict_scim.get("/Users")).body["totalResults"] == 0


async def test_password_never_echoed_in_errors(scim: ScimClient) -> None:
    reply = await scim.post(
        "/Users",
        {"schemas": [USER], "userName": "x", "password": "S3cret-Value!", "active": "nope"},
    )
    assert reply.status == 400
    assert "S3cret-Value!" not in str(reply.body)


async def test_oversized_body_is_413(scim: ScimClient) -> None:
    reply = await scim.post(
        "/Users", {"schemas": [USER], "userName": "big", "displayName": "x" * (1024 * 1024 + 10)}
    )
    assert_error(reply, 413)
    listed = await scim.get("/Users")
    assert listed.body["totalResults"] == 0


@pytest.mark.parametrize(
    "filter_text",
    [
        "userName eq",
        'userName xx "a"',
        "((",
        'nosuchattr eq "x"',
        "active gt true",
        'userName eq "a" and',
    ],
)
async def test_bad_filters_are_invalid_filter(scim: ScimClient, filter_text: str) -> None:
    reply = await scim.get("/Users", params={"filter": filter_text})
    assert_error(reply, 400, "invalidFilter")


@pytest.mark.parametrize(
    ("filter_text", "detail"),
    [
        ("password pr", "cannot filter on 'password'"),
        ('meta.location eq "x"', "cannot filter on 'meta.location'"),
    ],
)
async def test_filters_the_store_refuses_are_invalid_filter(
    scim: ScimClient, filter_text: str, detail: str
) -> None:
    """The store's own refusal (a parsed filter it cannot run) is answered as any bad filter."""
    reply = await scim.get("/Users", params={"filter": filter_text})
    assert_error(reply, 400, "invalidFilter")
    assert reply.body["detail"] == detail


async def test_bad_paging_parameters(scim: ScimClient) -> None:
    reply = await scim.get("/Users", params={"count": "ten"})
    assert_error(reply, 400, "invalidValue")


async def test_unknown_resource_is_404(scim: ScimClient) -> None:
    assert_error(await scim.get("/Users/does-not-exist"), 404)
    assert_error(
        await scim.patch(
            "/Users/does-not-exist",
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            },
        ),
        404,
    )
    assert_error(await scim.delete("/Groups/does-not-exist"), 404)


async def test_unknown_path_is_scim_404(scim: ScimClient) -> None:
    assert_error(await scim.get("/Nope"), 404)


async def test_writes_to_discovery_are_405(scim: ScimClient) -> None:
    for path in ("/ServiceProviderConfig", "/Schemas", "/ResourceTypes"):
        assert_error(await scim.post(path, {}), 405)
        assert_error(await scim.put(path, {}), 405)


async def test_patch_is_all_or_nothing(strict_scim: ScimClient) -> None:
    scim = strict_scim
    user = await scim.create_user("olga@example.com", displayName="Olga")
    reply = await scim.patch(
        f"/Users/{user['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "path": "displayName", "value": "Changed"},
                {"op": "replace", "path": "nosuchattribute", "value": "x"},
            ],
        },
    )
    assert reply.status == 400
    assert reply.body["scimType"] in ("invalidPath", "invalidValue")
    after = await scim.get(f"/Users/{user['id']}")
    assert after.body["displayName"] == "Olga"
    assert after.body["meta"]["version"] == user["meta"]["version"]


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "explode", "path": "displayName", "value": "x"}],
        [{"op": "remove"}],
        [],
        "not-a-list",
    ],
)
async def test_bad_patch_requests_are_400(scim: ScimClient, operations: object) -> None:
    user = await scim.create_user("pat@example.com")
    reply = await scim.patch(
        f"/Users/{user['id']}", {"schemas": [PATCH_OP], "Operations": operations}
    )
    assert reply.status == 400, reply.body
    assert reply.body["scimType"]


async def test_member_naming_unknown_user_adds_nobody_in_reject_mode(
    strict_scim: ScimClient,
) -> None:
    scim = strict_scim
    quinn = await scim.create_user("quinn@example.com")
    rory = await scim.create_user("rory@example.com")
    group = await scim.create_group("Finance", members=[quinn["id"]])
    reply = await scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "add", "path": "members", "value": [{"value": rory["id"]}]},
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ],
        },
    )
    assert_error(reply, 400, "invalidValue")
    got = await scim.get(f"/Groups/{group['id']}")
    assert [m["value"] for m in got.body["members"]] == [quinn["id"]]
    assert got.body["meta"]["version"] == group["meta"]["version"]


async def test_refused_member_patch_still_removes_members(strict_scim: ScimClient) -> None:
    # A removal is part of an offboarding: it never waits on another operation's fate.
    scim = strict_scim
    quinn = await scim.create_user("quinn@example.com")
    group = await scim.create_group("Finance", members=[quinn["id"]])
    reply = await scim.patch(
        f"/Groups/{group['id']}",
        {
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "remove", "path": f'members[value eq "{quinn["id"]}"]'},
                {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]},
            ],
        },
    )
    assert_error(reply, 400, "invalidValue")
    got = await scim.get(f"/Groups/{group['id']}")
    assert got.body.get("members", []) == []


async def test_create_group_with_unknown_member_is_rejected(strict_scim: ScimClient) -> None:
    scim = strict_scim
    reply = await scim.post(
        "/Groups",
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "G",
            "members": [{"value": "ghost"}],
        },
    )
    assert reply.status in (400, 404)
    listed = await scim.get("/Groups")
    assert listed.body["totalResults"] == 0


async def _file_read_again(
    anonymous: ScimClient, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    """Wait until the service has looked at the tokens file again (once a second, on a
    request: here one with a token valid before and after, which no throttle counts)."""
    async with asyncio.timeout(10):
        while message not in caplog.text:
            reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {TOKENS[1]}"})
            assert reply.status == 200
            await asyncio.sleep(0.05)  # the file has nothing to await


async def test_tokens_rotate_without_restart(
    anonymous: ScimClient, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jmlsync.auth")
    fresh = "t2-" + "c" * 40
    tokens_file = config_path.parent / "tokens"
    tokens_file.write_text(f"{TOKENS[1]}\n{fresh}\n")
    os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    await _file_read_again(anonymous, caplog, "reloaded 2 token(s)")
    for token, status in ((TOKENS[0], 401), (TOKENS[1], 200), (fresh, 200)):
        reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {token}"})
        assert reply.status == status, token
    tokens_file.write_text("")
    os.utime(tokens_file, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    await _file_read_again(anonymous, caplog, "keeping the previous tokens")
    reply = await anonymous.get("/Users", headers={"Authorization": f"Bearer {fresh}"})
    assert reply.status == 200

"""The IdP forms that used to be refused, replayed against a real `jmlsync serve`: the leaver
is deactivated and loses its grants, the create is stored, the lookup finds, the real member
is added; `reject` mode answers as RFC 7644 permits, and still never loses a deactivation."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, ScimClient, ServiceProcess, start_service, stop_service
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.timeout(120)

PIPELINE = """
[pipeline]
workers = 2
poll_seconds = 0.05

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]
"""
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CUSTOM = "urn:ietf:params:scim:schemas:extension:CustomExtensionName:2.0:User"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


def holders(ledger: Path) -> set[str]:
    if not ledger.exists():
        return set()
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT user FROM grants WHERE role = 'developer'")}
        except sqlite3.OperationalError:  # the target has not created its tables yet
            return set()


async def until_holders(ledger: Path, wanted: set[str]) -> None:
    """Wait (bounded) until exactly ``wanted`` hold the role in the ledger."""
    async with asyncio.timeout(30):
        # The ledger is another process's file: there is no event to await across processes.
        while holders(ledger) != wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def audit_details(config: Path) -> list[str]:
    command = ["audit", "tail", "--config", str(config), "-n", "200", "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "jmlsync", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [json.loads(line)["detail"] or "" for line in done.stdout.splitlines()]


async def serve(config: Path, scim_section: str) -> ServiceProcess:
    with config.open("a") as file:
        file.write(PIPELINE + scim_section)
    return await start_service(config)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield session


async def joiner(scim: ScimClient, name: str, group_id: str) -> dict[str, Any]:
    user = await scim.create_user(name, active=True)
    reply = await scim.patch(
        f"/Groups/{group_id}",
        patch({"op": "add", "path": "members", "value": [{"value": user["id"]}]}),
    )
    assert reply.status == 204, reply.body
    return user


@pytest.mark.process
async def test_every_refused_form_applies_with_the_default_ignore(
    config_path: Path, client: aiohttp.ClientSession
) -> None:
    service = await serve(config_path, "")
    ledger = config_path.parent / "ledger.db"
    try:
        scim = ScimClient(client, service.url)
        group = await scim.create_group("engineering")
        ann = await joiner(scim, "ann@example.com", group["id"])
        bob = await joiner(scim, "bob@example.com", group["id"])
        await until_holders(ledger, {"ann@example.com", "bob@example.com"})

        # Entra: deactivate and set a custom extension attribute in the same PATCH.
        reply = await scim.patch(
            f"/Users/{ann['id']}",
            patch(
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": f"{CUSTOM}:costCenter", "value": "7"},
            ),
        )
        assert reply.status == 200, reply.body
        assert reply.body["active"] is False
        # Entra: deactivate and set an unknown core name, path-less.
        reply = await scim.patch(
            f"/Users/{bob['id']}",
            patch({"op": "replace", "value": {"active": False, "extensionAttribute1": "x"}}),
        )
        assert reply.status == 200, reply.body
        await until_holders(ledger, set())
        for user in (ann, bob):
            assert (await scim.get(f"/Users/{user['id']}")).body["active"] is False

        # POST whose `schemas` lists a custom extension: stored.
        reply = await scim.post(
            "/Users",
            {
                "schemas": [USER, ENTERPRISE, CUSTOM],
                "userName": "cyd@example.com",
                "emails": [{"value": "cyd@work.example", "type": "work", "primary": True}],
                ENTERPRISE: {"department": "Eng"},
                CUSTOM: {"costCenter": "7"},
            },
        )
        assert reply.status == 201, reply.body
        cyd = reply.body
        stored = await scim.get(f"/Users/{cyd['id']}")
        assert stored.body["userName"] == "cyd@example.com"
        assert stored.body[ENTERPRISE] == {"department": "Eng"}
        assert CUSTOM not in stored.body
        assert CUSTOM not in stored.body["schemas"]

        # Entra's matching query on the work email: found.
        found = await scim.get(
            "/Users", params={"filter": 'emails[type eq "work"].value eq "CYD@work.example"'}
        )
        assert found.status == 200, found.body
        assert [r["id"] for r in found.body["Resources"]] == [cyd["id"]]
        missed = await scim.get(
            "/Users", params={"filter": 'emails[type eq "home"].value eq "cyd@work.example"'}
        )
        assert missed.body["totalResults"] == 0

        # Okta: PUT with an app profile attribute (twice): the update applies.
        for _ in range(2):
            reply = await scim.put(
                f"/Users/{cyd['id']}",
                {
                    "schemas": [USER],
                    "userName": "cyd@example.com",
                    "displayName": "Cyd Renamed",
                    "costCenter": "7",
                    "active": True,
                },
            )
            assert reply.status == 200, reply.body
        got = await scim.get(f"/Users/{cyd['id']}")
        assert got.body["displayName"] == "Cyd Renamed"
        assert "costCenter" not in got.body

        # A group PATCH adding an unknown id and a real one: the real one is added.
        dee = await scim.create_user("dee@example.com")
        reply = await scim.patch(
            f"/Groups/{group['id']}",
            patch(
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": "no-such-user"}, {"value": dee["id"]}],
                }
            ),
        )
        assert reply.status == 204, reply.body
        members = (await scim.get(f"/Groups/{group['id']}")).body["members"]
        assert dee["id"] in {m["value"] for m in members}
        assert "no-such-user" not in {m["value"] for m in members}
        await until_holders(ledger, {"dee@example.com"})
        # Removing an unknown member is still a no-op success.
        reply = await scim.patch(
            f"/Groups/{group['id']}",
            patch({"op": "remove", "path": 'members[value eq "no-such-user"]'}),
        )
        assert reply.status == 204, reply.body

        async with client.get(service.url.rsplit("/scim", 1)[0] + "/metrics") as response:
            metrics = await response.text()
        assert (
            'jmlsync_scim_ignored_attributes_total{attribute="extensionAttribute1",'
            'resource="Users"} 1.0' in metrics
        )
        assert f'attribute="{CUSTOM}:costCenter"' in metrics
        assert '{attribute="costCenter",resource="Users"} 2.0' in metrics
        assert 'jmlsync_scim_skipped_members_total{resource="Groups"} 1.0' in metrics
    finally:
        assert await stop_service(service) == 0
    logged = "".join(service.log)
    # Logged once an hour per name, however often it comes.
    assert logged.count("ignored the undeclared attribute 'costCenter'") == 1
    details = audit_details(config_path)
    assert any("deactivated" in d and f"{CUSTOM}:costCenter" in d for d in details), details
    assert any("deactivated" in d and "extensionAttribute1" in d for d in details), details
    assert any("skipped unknown members: no-such-user" in d for d in details), details


@pytest.mark.process
async def test_reject_mode_answers_as_today_and_still_deactivates(
    config_path: Path, client: aiohttp.ClientSession
) -> None:
    section = '\n[scim]\nunknown_attributes = "reject"\nunknown_members = "reject"\n'
    service = await serve(config_path, section)
    ledger = config_path.parent / "ledger.db"
    try:
        scim = ScimClient(client, service.url)
        group = await scim.create_group("engineering")
        ann = await joiner(scim, "ann@example.com", group["id"])
        await until_holders(ledger, {"ann@example.com"})

        reply = await scim.post(
            "/Users", {"schemas": [USER, CUSTOM], "userName": "x@example.com", CUSTOM: {}}
        )
        assert reply.status == 400, reply.body
        assert reply.body["scimType"] == "invalidValue", reply.body
        reply = await scim.put(
            f"/Users/{ann['id']}",
            {"schemas": [USER], "userName": "ann@example.com", "costCenter": "7"},
        )
        assert reply.status == 400, reply.body
        assert reply.body["scimType"] == "invalidValue", reply.body
        dee = await scim.create_user("dee@example.com")
        reply = await scim.patch(
            f"/Groups/{group['id']}",
            patch(
                {
                    "op": "add",
                    "path": "members",
                    "value": [{"value": "no-such-user"}, {"value": dee["id"]}],
                }
            ),
        )
        assert reply.status == 400, reply.body
        assert reply.body["scimType"] == "invalidValue", reply.body
        members = (await scim.get(f"/Groups/{group['id']}")).body["members"]
        assert [m["value"] for m in members] == [ann["id"]]

        # Refused as today, yet the deactivation it carried is applied on its own.
        reply = await scim.patch(
            f"/Users/{ann['id']}",
            patch(
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": f"{CUSTOM}:costCenter", "value": "7"},
            ),
        )
        assert reply.status == 400, reply.body
        assert reply.body["scimType"] == "invalidPath", reply.body
        assert reply.body["schemas"] == [ERROR]
        await until_holders(ledger, set())
        assert (await scim.get(f"/Users/{ann['id']}")).body["active"] is False
    finally:
        assert await stop_service(service) == 0
    details = audit_details(config_path)
    assert any("deactivated" in d and "applied alone" in d for d in details), details


@pytest.mark.process
async def test_store_mode_keeps_undeclared_attributes_verbatim(
    config_path: Path, client: aiohttp.ClientSession
) -> None:
    service = await serve(config_path, '\n[scim]\nunknown_attributes = "store"\n')
    ledger = config_path.parent / "ledger.db"
    try:
        scim = ScimClient(client, service.url)
        group = await scim.create_group("engineering")
        reply = await scim.post(
            "/Users",
            {
                "schemas": [USER, CUSTOM],
                "userName": "eve@example.com",
                "costCenter": "7",
                CUSTOM: {"division": "R&D"},
            },
        )
        assert reply.status == 201, reply.body
        eve = reply.body
        assert eve["costCenter"] == "7"
        assert eve[CUSTOM] == {"division": "R&D"}
        assert CUSTOM in eve["schemas"]
        reply = await scim.patch(
            f"/Groups/{group['id']}",
            patch({"op": "add", "path": "members", "value": [{"value": eve["id"]}]}),
        )
        assert reply.status == 204
        await until_holders(ledger, {"eve@example.com"})
        reply = await scim.patch(
            f"/Users/{eve['id']}",
            patch(
                {"op": "replace", "path": "active", "value": False},
                {"op": "add", "path": f"{CUSTOM}:costCenter", "value": "9"},
                {"op": "replace", "path": "extensionAttribute1", "value": "x"},
            ),
        )
        assert reply.status == 200, reply.body
        got = (await scim.get(f"/Users/{eve['id']}")).body
        assert got[CUSTOM] == {"division": "R&D", "costCenter": "9"}
        assert got["extensionAttribute1"] == "x"
        assert got["costCenter"] == "7"
        assert got["active"] is False
        await until_holders(ledger, set())
        # Stored aside, never filterable: rules cannot match on them either.
        reply = await scim.get("/Users", params={"filter": 'costCenter eq "7"'})
        assert reply.status == 400
        assert reply.body["scimType"] == "invalidFilter"
    finally:
        assert await stop_service(service) == 0


@pytest.mark.process
async def test_paths_as_admins_type_them_and_allow_on_405(
    config_path: Path, client: aiohttp.ClientSession
) -> None:
    service = await start_service(config_path)
    root = service.url  # .../scim/v2
    try:

        async def call(method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, Any]:
            async with client.request(method, root + path, json=body, **kw) as reply:
                text = await reply.text()
                return reply.status, (json.loads(text) if text else None), reply.headers

        status, created, _ = await call("POST", "/users", {"schemas": [USER], "userName": "fi"})
        assert status == 201, created
        uid = created["id"]
        for path in ("/Users/", "//Users", "/users", "//users/", "/USERS"):
            status, listed, _ = await call("GET", path)
            assert status == 200, (path, listed)
            assert [r["id"] for r in listed["Resources"]] == [uid], path
        for path in (f"/users/{uid}/", f"//Users/{uid}"):
            status, got, _ = await call("GET", path)
            assert (status, got["id"]) == (200, uid), path
        status, got, _ = await call(
            "PATCH", f"/users/{uid}/", patch({"op": "replace", "path": "active", "value": False})
        )
        assert (status, got["active"]) == (200, False)
        status, found, _ = await call("POST", "/users/.search", {"filter": 'userName eq "FI"'})
        assert (status, found["totalResults"]) == (200, 1)
        status, group, _ = await call("POST", "//groups/", {"displayName": "g"})
        assert status == 201, group
        for path in ("/schemas/", "//ServiceProviderConfig", "/resourcetypes/User/", "/groups"):
            status, _body, _ = await call("GET", path)
            assert status == 200, path
        # Unknown paths stay 404; the query string survives the rewrite.
        assert (await call("GET", "/Nope/"))[0] == 404
        status, listed, _ = await call("GET", "/users/", params={"filter": 'userName eq "x"'})
        assert (status, listed["totalResults"]) == (200, 0)

        # Every 405 names what is allowed.
        for method, path, allowed in (
            ("POST", "/Schemas", "GET, HEAD"),
            ("PUT", "/serviceproviderconfig/", "GET, HEAD"),
            ("DELETE", "/Users", "GET, POST"),
            ("POST", f"/Users/{uid}", "DELETE, GET, PATCH, PUT"),
        ):
            status, error, headers = await call(method, path, {})
            assert (status, error["status"]) == (405, "405"), (method, path)
            assert headers["Allow"] == allowed, (method, path)

        # Authentication still applies on the tolerated forms.
        async with aiohttp.ClientSession() as anonymous:
            for path in ("/users", "//Users/", f"/users/{uid}/"):
                async with anonymous.get(root + path) as reply:
                    assert reply.status == 401, path
            async with anonymous.post(root + "/schemas/", json={}) as reply:
                assert reply.status == 401

        async with client.get(root.rsplit("/scim", 1)[0] + "/metrics") as response:
            metrics = await response.text()
        labels = {
            line.split('resource="')[1].split('"')[0]
            for line in metrics.splitlines()
            if line.startswith("jmlsync_scim_requests_total{")
        }
        assert labels <= {"Users", "Groups", "discovery", "search", "other"}, labels
        assert "Users" in labels
        assert "discovery" in labels
    finally:
        assert await stop_service(service) == 0


async def test_refused_put_still_deactivates(strict_scim: ScimClient) -> None:
    user = await strict_scim.create_user("gil@example.com", displayName="Gil")
    reply = await strict_scim.put(
        f"/Users/{user['id']}",
        {
            "schemas": [USER],
            "userName": "gil@example.com",
            "displayName": "Gil Left",
            "active": "False",
            "costCenter": "7",
        },
    )
    assert reply.status == 400, reply.body
    assert reply.body["scimType"] == "invalidValue", reply.body
    got = (await strict_scim.get(f"/Users/{user['id']}")).body
    # Only the deactivation applied: the rest of the refused PUT did not.
    assert (got["active"], got["displayName"]) == (False, "Gil")


async def test_a_bad_value_beside_a_deactivation_does_not_keep_the_user_active(
    scim: ScimClient,
) -> None:
    user = await scim.create_user("hal@example.com", displayName="Hal")
    reply = await scim.patch(
        f"/Users/{user['id']}",
        patch(
            {"op": "replace", "value": {"active": False, "displayName": 5}},
            {"op": "replace", "path": "title", "value": "Left"},
        ),
    )
    assert reply.status == 400, reply.body
    assert reply.body["scimType"] == "invalidValue", reply.body
    got = (await scim.get(f"/Users/{user['id']}")).body
    assert got["active"] is False
    assert "title" not in got
    assert got["displayName"] == "Hal"
    # A refusal that carries no deactivation changes nothing, as before.
    other = await scim.create_user("ida@example.com")
    reply = await scim.patch(
        f"/Users/{other['id']}", patch({"op": "replace", "path": "active", "value": "maybe"})
    )
    assert reply.status == 400
    after = (await scim.get(f"/Users/{other['id']}")).body
    assert after["meta"]["version"] == other["meta"]["version"]


async def test_a_refused_rename_still_deactivates(scim: ScimClient) -> None:
    await scim.create_user("jo@example.com")
    kim = await scim.create_user("kim@example.com")
    reply = await scim.put(
        f"/Users/{kim['id']}",
        {"schemas": [USER], "userName": "JO@example.com", "active": False},
    )
    assert reply.status == 409, reply.body
    assert reply.body["scimType"] == "uniqueness", reply.body
    got = (await scim.get(f"/Users/{kim['id']}")).body
    assert (got["userName"], got["active"]) == ("kim@example.com", False)

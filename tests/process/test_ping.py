"""PingFederate's SCIM provisioner (and PingOne's SCIM outbound connection) replayed against a
real `jmlsync serve` (SQLite and PostgreSQL), as Ping documents it (docs/connect-ping.md):
HTTP Basic; a user looked up by ``userName eq``, created by POST, every profile change and the
disable by PUT with the whole resource (never PATCH), deleted by DELETE; groups found by
paging through ``GET /Groups`` without a filter, their membership PATCHed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ScimClient, start_service, stop_service
from tests.process.test_credentials import basic, cli
from tests.process.test_evidence_service import _configure, _eventually, _roles, _true
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


def ping_user(user_name: str, given: str, family: str, *, active: bool = True) -> dict[str, Any]:
    """The whole resource, as PingFederate sends it on a create and on every update."""
    return {
        "schemas": [USER],
        "userName": user_name,
        "externalId": f"ping-{user_name}",
        "name": {"givenName": given, "familyName": family, "formatted": f"{given} {family}"},
        "displayName": f"{given} {family}",
        "emails": [{"value": user_name, "type": "work", "primary": True}],
        "active": active,
    }


async def all_groups(scim: ScimClient, page: int) -> tuple[dict[str, dict[str, Any]], int]:
    """How Ping finds a group: every page of ``GET /Groups``, no filter, then a match by
    displayName. (groups by name, pages read)"""
    start, pages, found = 1, 0, {}
    while True:
        reply = await scim.get("/Groups", params={"startIndex": str(start), "count": str(page)})
        assert reply.status == 200, reply.body
        pages += 1
        found.update({g["displayName"]: g for g in reply.body["Resources"]})
        start += len(reply.body["Resources"])
        if not reply.body["Resources"] or start > reply.body["totalResults"]:
            return found, pages


@pytest.mark.timeout(240)
async def test_ping_provisioning_replay(config_path: Path) -> None:
    _configure(config_path)
    code, credential, err = await cli(
        config_path, "token", "generate", "--basic", "--label", "pingfederate"
    )
    assert code == 0, err
    service = await start_service(config_path)
    try:
        async with aiohttp.ClientSession(headers=basic(credential.strip())) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            spc = await scim.get("/ServiceProviderConfig")
            assert "httpbasic" in {s["type"] for s in spc.body["authenticationSchemes"]}
            # Unique User Identifier = userName: look it up first, then create.
            query = {"filter": 'userName eq "ann@x.io"'}
            assert (await scim.get("/Users", params=query)).body["totalResults"] == 0
            created = await scim.post("/Users", ping_user("ann@x.io", "Ann", "Lee"))
            assert created.status == 201, created.body
            ann = created.body["id"]

            # The group: not found by listing, so created; membership by PATCH.
            groups, _ = await all_groups(scim, 100)
            assert "engineering" not in groups
            made = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "engineering"})
            assert made.status == 201, made.body
            add = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": ann}]}],
            }
            patched = await scim.patch(f"/Groups/{made.body['id']}", add)
            assert patched.status in (200, 204), patched.body
            await _eventually(lambda: _true(_roles(config_path, "ann@x.io") == {"developer"}))

            # A profile change: PUT with the whole resource.
            renamed = await scim.put(f"/Users/{ann}", ping_user("ann@x.io", "Ann", "Lee-Smith"))
            assert renamed.status == 200, renamed.body
            assert renamed.body["name"]["familyName"] == "Lee-Smith"
            assert renamed.body["active"] is True
            assert _roles(config_path, "ann@x.io") == {"developer"}

            # Remove User Action = Disable: PUT with active false is a leaver.
            disabled = await scim.put(
                f"/Users/{ann}", ping_user("ann@x.io", "Ann", "Lee-Smith", active=False)
            )
            assert disabled.status == 200, disabled.body
            assert disabled.body["active"] is False
            await _eventually(lambda: _true(_roles(config_path, "ann@x.io") == set()))

            async def verified() -> bool:
                _, out, _ = await cli(config_path, "sla-report", "--format", "json")
                leavers = [r for r in json.loads(out)["leavers"] if r["user"] == "ann@x.io"]
                return bool(leavers) and leavers[0]["verified_at"] is not None

            await _eventually(verified)

            # Remove User Action = Delete: DELETE, then the user is gone.
            bob = (await scim.post("/Users", ping_user("bob@x.io", "Bob", "Kay"))).body["id"]
            assert (await scim.delete(f"/Users/{bob}")).status == 204
            assert (await scim.get(f"/Users/{bob}")).status == 404
            assert (await scim.get(f"/Users/{ann}")).body["active"] is False
    finally:
        await stop_service(service)
    code, out, err = await cli(config_path, "audit", "tail", "-n", "50", "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    scim_rows = [r for r in rows if r["action"].startswith(("user.", "group."))]
    assert {r["actor"] for r in scim_rows} == {"scim:pingfederate"}
    deactivated = [r for r in scim_rows if r["detail"] == "deactivated"]
    assert [r["action"] for r in deactivated] == ["user.update"]


GROUPS = 2500
LARGE = 150


@pytest.mark.timeout(300)
async def test_group_discovery_by_listing_thousands_of_groups(config_path: Path) -> None:
    code, credential, err = await cli(
        config_path, "token", "generate", "--basic", "--label", "ping"
    )
    assert code == 0, err
    service = await start_service(config_path)
    try:
        async with aiohttp.ClientSession(headers=basic(credential.strip())) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            users = [
                (await scim.post("/Users", ping_user(f"u{i}@x.io", "U", str(i)))).body["id"]
                for i in range(LARGE)
            ]
            big = await scim.create_group("a-large-group", members=users)
            small = await scim.create_group("a-small-group", members=users[:3])
            gate = asyncio.Semaphore(8)

            async def one(i: int) -> None:
                async with gate:
                    await scim.create_group(f"team-{i:05d}")

            await asyncio.gather(*(one(i) for i in range(GROUPS)))

            # The default page (100): a group with more members than the page holds is
            # listed without them; a smaller one with them; GET by id has them all.
            first = await scim.get("/Groups", params={"filter": 'displayName sw "a-"'})
            listed = {g["displayName"]: g for g in first.body["Resources"]}
            assert "members" not in listed["a-large-group"]
            assert len(listed["a-small-group"]["members"]) == 3
            whole = await scim.get(f"/Groups/{big['id']}")
            assert len(whole.body["members"]) == LARGE
            asked = await scim.get(
                "/Groups",
                params={
                    "filter": 'displayName eq "a-large-group"',
                    "count": "10",
                    "attributes": "displayName,members",
                },
            )
            assert len(asked.body["Resources"][0]["members"]) == LARGE
            slim = await scim.get("/Groups", params={"excludedAttributes": "members"})
            assert all("members" not in g for g in slim.body["Resources"])

            # Ping's discovery: page through everything, no filter, to the last group.
            started = time.monotonic()
            found, pages = await all_groups(scim, 100)
            seconds = time.monotonic() - started
            assert len(found) == GROUPS + 2
            assert pages == -(-(GROUPS + 2) // 100)
            assert "members" not in found["a-large-group"]
            assert seconds < 20, f"{pages} pages took {seconds:.1f}s"
            assert small["id"]
    finally:
        await stop_service(service)

"""Replays of what Okta and Microsoft Entra ID send (see docs/idp-compatibility.md); the
larger request bodies are recorded in tests/samples/requests-<idp>.json."""

from __future__ import annotations

from tests.conftest import ScimClient
from tests.scim_samples import PATCH_OP, sample

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def patch_op(*operations: dict[str, object]) -> dict[str, object]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


async def test_okta_create_user_flow(scim: ScimClient) -> None:
    lookup = await scim.get(
        "/Users",
        params={"filter": 'userName eq "dave@example.com"', "startIndex": "1", "count": "100"},
    )
    assert lookup.status == 200
    assert lookup.body["totalResults"] == 0
    assert lookup.body["Resources"] == []
    created = await scim.post(
        "/Users",
        sample("requests-okta")["create user"],
        headers={"User-Agent": "Okta SCIM Client 1.0.0"},
    )
    assert created.status == 201, created.body
    assert created.body["userName"] == "dave@example.com"
    assert "password" not in created.body
    found = await scim.get(
        "/Users",
        params={"filter": 'userName eq "DAVE@example.com"', "startIndex": "1", "count": "100"},
    )
    assert found.body["totalResults"] == 1
    assert isinstance(found.body["startIndex"], int)
    assert isinstance(found.body["itemsPerPage"], int)
    duplicate = await scim.post("/Users", {"schemas": [USER], "userName": "Dave@Example.com"})
    assert duplicate.status == 409
    assert duplicate.body["scimType"] == "uniqueness"


async def test_okta_update_with_put(scim: ScimClient) -> None:
    user = await scim.create_user("erin@example.com", name={"givenName": "Erin"}, active=True)
    current = await scim.get(f"/Users/{user['id']}")
    body = dict(current.body)
    body["name"] = {"givenName": "Erin", "familyName": "Stone"}
    replaced = await scim.put(f"/Users/{user['id']}", body)
    assert replaced.status == 200, replaced.body
    assert replaced.body["name"]["familyName"] == "Stone"


async def test_okta_deactivate_and_reactivate_without_path(scim: ScimClient) -> None:
    user = await scim.create_user("frank@example.com", active=True)
    off = await scim.patch(
        f"/Users/{user['id']}", patch_op({"op": "replace", "value": {"active": False}})
    )
    assert off.status == 200, off.body
    assert off.body["active"] is False
    on = await scim.patch(
        f"/Users/{user['id']}", patch_op({"op": "replace", "value": {"active": True}})
    )
    assert on.body["active"] is True


async def test_okta_group_push(scim: ScimClient) -> None:
    alice = await scim.create_user("alice@example.com")
    bob = await scim.create_user("bob@example.com")
    group = await scim.post("/Groups", {"schemas": [GROUP], "displayName": "Eng", "members": []})
    assert group.status == 201
    gid = group.body["id"]
    rename = patch_op({"op": "replace", "value": {"id": gid, "displayName": "Engineering"}})
    for _ in range(2):  # Okta repeats it on every membership update: idempotent
        reply = await scim.patch(f"/Groups/{gid}", rename)
        assert reply.status in (200, 204), reply.body
    add = patch_op(
        {"op": "add", "path": "members", "value": [{"value": alice["id"], "display": "alice"}]},
        {"op": "add", "path": "members", "value": [{"value": bob["id"], "display": "bob"}]},
    )
    assert (await scim.patch(f"/Groups/{gid}", add)).status in (200, 204)
    remove = patch_op({"op": "remove", "path": f'members[value eq "{alice["id"]}"]'})
    assert (await scim.patch(f"/Groups/{gid}", remove)).status in (200, 204)
    got = await scim.get(f"/Groups/{gid}")
    assert got.body["displayName"] == "Engineering"
    assert [m["value"] for m in got.body["members"]] == [bob["id"]]
    replace_all = patch_op({"op": "replace", "path": "members", "value": [{"value": alice["id"]}]})
    assert (await scim.patch(f"/Groups/{gid}", replace_all)).status in (200, 204)
    got = await scim.get(f"/Groups/{gid}")
    assert [m["value"] for m in got.body["members"]] == [alice["id"]]
    assert (await scim.delete(f"/Groups/{gid}")).status == 204
    assert (await scim.get(f"/Groups/{gid}")).status == 404


async def test_entra_test_connection_gets_an_empty_list(scim: ScimClient) -> None:
    reply = await scim.get(
        "/Users", params={"filter": 'userName eq "5b9f1f3c-8b4e-4a55-9b51-0c8e3d3a9a11"'}
    )
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/scim+json")
    assert reply.body["totalResults"] == 0


async def test_entra_create_user_with_enterprise_extension(scim: ScimClient) -> None:
    reply = await scim.post(
        "/Users", sample("requests-entra")["create user with the enterprise extension"]
    )
    assert reply.status == 201, reply.body
    assert reply.body[ENTERPRISE]["department"] == "Engineering"
    assert ENTERPRISE in reply.body["schemas"]


async def test_entra_deactivates_with_string_booleans(scim: ScimClient) -> None:
    user = await scim.create_user("heidi@contoso.com", active=True)
    off = await scim.patch(
        f"/Users/{user['id']}", patch_op({"op": "Replace", "path": "active", "value": "False"})
    )
    assert off.status == 200, off.body
    assert off.body["active"] is False
    on = await scim.patch(
        f"/Users/{user['id']}", patch_op({"op": "Replace", "path": "active", "value": "True"})
    )
    assert on.body["active"] is True
    flagged = await scim.patch(
        f"/Users/{user['id']}", patch_op({"op": "replace", "path": "active", "value": False})
    )
    assert flagged.body["active"] is False


async def test_entra_attribute_updates(scim: ScimClient) -> None:
    user = await scim.create_user("ivan@contoso.com", name={"givenName": "Ivan"})
    manager = await scim.create_user("judy@contoso.com")
    reply = await scim.patch(
        f"/Users/{user['id']}",
        patch_op(
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ivan@contoso.com"},
            {"op": "Replace", "path": "name.familyName", "value": "Petrov"},
            {
                "op": "Add",
                "path": f"{ENTERPRISE}:manager",
                "value": [{"$ref": None, "value": manager["id"]}],
            },
            {"op": "replace", "value": {"displayName": "Ivan P", "name.givenName": "Iv"}},
        ),
    )
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["emails"] == [{"type": "work", "value": "ivan@contoso.com"}]
    assert body["name"] == {"givenName": "Iv", "familyName": "Petrov"}
    assert body["displayName"] == "Ivan P"
    assert body[ENTERPRISE]["manager"]["value"] == manager["id"]


async def test_entra_groups_and_members(scim: ScimClient) -> None:
    kim = await scim.create_user("kim@contoso.com")
    leo = await scim.create_user("leo@contoso.com")
    group = await scim.post(
        "/Groups", {"schemas": [GROUP], "externalId": "g-1", "displayName": "Ops"}
    )
    gid = group.body["id"]
    lookup = await scim.get(
        "/Groups", params={"excludedAttributes": "members", "filter": 'displayName eq "Ops"'}
    )
    assert lookup.body["totalResults"] == 1
    assert "members" not in lookup.body["Resources"][0]
    add = patch_op(
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": kim["id"]}]},
        {"op": "Add", "path": "members", "value": [{"$ref": None, "value": leo["id"]}]},
    )
    assert (await scim.patch(f"/Groups/{gid}", add)).status in (200, 204)
    remove = patch_op(
        {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": kim["id"]}]}
    )
    assert (await scim.patch(f"/Groups/{gid}", remove)).status in (200, 204)
    got = await scim.get(f"/Groups/{gid}")
    assert [m["value"] for m in got.body["members"]] == [leo["id"]]
    slim = await scim.get(f"/Groups/{gid}", params={"excludedAttributes": "members"})
    assert "members" not in slim.body
    assert slim.body["displayName"] == "Ops"


async def test_entra_hard_delete_removes_user_from_groups(scim: ScimClient) -> None:
    mia = await scim.create_user("mia@contoso.com")
    group = await scim.create_group("Sales", members=[mia["id"]])
    assert (await scim.delete(f"/Users/{mia['id']}")).status == 204
    got = await scim.get(f"/Groups/{group['id']}")
    assert got.body["members"] == []
    assert (await scim.get(f"/Users/{mia['id']}")).status == 404

"""Resource semantics over HTTP: meta and ETags, listing, projection, search, concurrency."""

from __future__ import annotations

import asyncio

from tests.conftest import ScimClient
from tests.scim_samples import PATCH_OP

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


async def test_meta_and_etag(scim: ScimClient) -> None:
    created = await scim.post("/Users", {"schemas": [USER], "userName": "rita"})
    body = created.body
    meta = body["meta"]
    assert meta["resourceType"] == "User"
    assert meta["created"] == meta["lastModified"]
    assert meta["location"].endswith(f"/scim/v2/Users/{body['id']}")
    assert created.headers["Location"] == meta["location"]
    assert created.headers["ETag"] == meta["version"]
    patched = await scim.patch(
        f"/Users/{body['id']}",
        {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": "Boss"}]},
    )
    assert patched.body["meta"]["version"] != meta["version"]
    assert patched.body["meta"]["lastModified"] >= meta["lastModified"]
    assert patched.body["meta"]["created"] == meta["created"]


async def test_if_match_mismatch_is_412(scim: ScimClient) -> None:
    user = await scim.create_user("sam")
    stale = user["meta"]["version"]
    op = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": "A"}]}
    ok = await scim.patch(f"/Users/{user['id']}", op, headers={"If-Match": stale})
    assert ok.status == 200
    again = await scim.patch(f"/Users/{user['id']}", op, headers={"If-Match": stale})
    assert again.status == 412
    assert again.body["status"] == "412"
    gone = await scim.delete(f"/Users/{user['id']}", headers={"If-Match": stale})
    assert gone.status == 412
    current = ok.headers["ETag"]
    assert (await scim.delete(f"/Users/{user['id']}", headers={"If-Match": current})).status == 204


async def test_if_none_match_answers_304(scim: ScimClient) -> None:
    user = await scim.create_user("tina")
    reply = await scim.get(
        f"/Users/{user['id']}", headers={"If-None-Match": user["meta"]["version"]}
    )
    assert reply.status == 304


async def test_paging_and_sorting(scim: ScimClient) -> None:
    for name in ("uma", "bea", "zoe", "abe", "kai"):
        await scim.create_user(name)
    first = await scim.get("/Users", params={"sortBy": "userName", "count": "2"})
    assert first.body["totalResults"] == 5
    assert first.body["itemsPerPage"] == 2
    assert [r["userName"] for r in first.body["Resources"]] == ["abe", "bea"]
    second = await scim.get(
        "/Users", params={"sortBy": "userName", "count": "2", "startIndex": "3"}
    )
    assert second.body["startIndex"] == 3
    assert [r["userName"] for r in second.body["Resources"]] == ["kai", "uma"]
    desc = await scim.get("/Users", params={"sortBy": "userName", "sortOrder": "descending"})
    assert desc.body["Resources"][0]["userName"] == "zoe"
    zero = await scim.get("/Users", params={"count": "0"})
    assert zero.body["totalResults"] == 5
    assert zero.body["Resources"] == []


async def test_page_size_is_capped(scim: ScimClient) -> None:
    reply = await scim.get("/Users", params={"count": "100000"})
    assert reply.status == 200
    assert reply.body["itemsPerPage"] <= 1000


async def test_complex_filters(scim: ScimClient) -> None:
    await scim.create_user(
        "vic",
        emails=[{"type": "work", "value": "vic@x.example"}, {"type": "home", "value": "v@home"}],
    )
    await scim.create_user("wes", emails=[{"type": "home", "value": "wes@x.example"}])
    reply = await scim.get("/Users", params={"filter": 'emails[type eq "work" and value co "@x."]'})
    assert [r["userName"] for r in reply.body["Resources"]] == ["vic"]
    either = await scim.get(
        "/Users", params={"filter": 'userName eq "VIC" or (userName sw "w" and not (title pr))'}
    )
    assert sorted(r["userName"] for r in either.body["Resources"]) == ["vic", "wes"]


async def test_attributes_and_excluded_attributes(scim: ScimClient) -> None:
    user = await scim.create_user(
        "xena", displayName="Xena", name={"givenName": "X", "familyName": "W"}, title="T"
    )
    only = await scim.get(
        f"/Users/{user['id']}", params={"attributes": "displayName,name.givenName"}
    )
    assert only.body["displayName"] == "Xena"
    assert only.body["name"] == {"givenName": "X"}
    assert "title" not in only.body
    assert only.body["id"] == user["id"]
    without = await scim.get(f"/Users/{user['id']}", params={"excludedAttributes": "title,name"})
    assert "title" not in without.body
    assert "name" not in without.body
    assert without.body["displayName"] == "Xena"
    listed = await scim.get("/Users", params={"attributes": "userName"})
    assert set(listed.body["Resources"][0]) <= {"id", "schemas", "userName"}


async def test_search_endpoints(scim: ScimClient) -> None:
    await scim.create_user("yuri")
    await scim.create_group("yuri-team")
    body = {"schemas": [SEARCH], "filter": 'userName eq "yuri"', "attributes": ["userName"]}
    per_type = await scim.post("/Users/.search", body)
    assert per_type.status == 200
    assert per_type.body["totalResults"] == 1
    root = await scim.post("/.search", {"schemas": [SEARCH], "filter": "meta.created pr"})
    assert root.status == 200
    assert root.body["totalResults"] == 2
    kinds = {r["meta"]["resourceType"] for r in root.body["Resources"]}
    assert kinds == {"User", "Group"}


async def test_user_groups_are_listed(scim: ScimClient) -> None:
    user = await scim.create_user("zack")
    group = await scim.create_group("Zack Fans", members=[user["id"]])
    got = await scim.get(f"/Users/{user['id']}")
    assert got.body["groups"][0]["value"] == group["id"]
    assert got.body["groups"][0]["display"] == "Zack Fans"


async def test_concurrent_member_adds_lose_no_member(scim: ScimClient) -> None:
    users = [await scim.create_user(f"member{i}") for i in range(40)]
    group = await scim.create_group("Busy")

    async def add(user_id: str) -> int:
        reply = await scim.patch(
            f"/Groups/{group['id']}",
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
            },
        )
        return reply.status

    statuses = await asyncio.gather(*(add(u["id"]) for u in users))
    assert set(statuses) <= {200, 204}
    got = await scim.get(f"/Groups/{group['id']}")
    assert len(got.body["members"]) == 40


async def test_racing_duplicate_user_names_yield_one_201(scim: ScimClient) -> None:
    async def create() -> int:
        reply = await scim.post("/Users", {"schemas": [USER], "userName": "Same.Name"})
        return reply.status

    statuses = await asyncio.gather(*(create() for _ in range(20)))
    assert statuses.count(201) == 1
    assert statuses.count(409) == 19


async def test_discovery_documents(scim: ScimClient) -> None:
    spc = await scim.get("/ServiceProviderConfig")
    assert spc.body["patch"]["supported"] is True
    assert spc.body["bulk"]["supported"] is False
    assert spc.body["filter"]["maxResults"] == 1000
    types = await scim.get("/ResourceTypes")
    assert {r["id"] for r in types.body["Resources"]} == {"User", "Group"}
    user_type = await scim.get("/ResourceTypes/User")
    assert user_type.body["schemaExtensions"][0]["schema"].endswith("enterprise:2.0:User")
    schema = await scim.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User")
    assert schema.body["id"] == "urn:ietf:params:scim:schemas:core:2.0:User"
    assert (await scim.get("/Schemas/urn:nope")).status == 404

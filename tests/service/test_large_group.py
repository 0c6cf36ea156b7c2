"""A group of 100,000 members: lookups skip the members, a PATCH touches only what it changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from benchmarks.group_scale import populate
from jmlsync.config import load_settings
from jmlsync.service import build_app
from tests.conftest import BASE_PATH, TOKENS, ScimClient, write_config
from tests.scim_samples import PATCH_OP

MEMBERS = 100_000


@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[tuple[ScimClient, str, list[str]]]:
    config = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    group_id, user_ids = await populate(tmp_path / "state" / "jmlsync.db", MEMBERS)
    server = TestServer(await build_app(load_settings(config)), host="127.0.0.1", port=0)
    await server.start_server()
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            yield ScimClient(session, str(server.make_url(BASE_PATH))), group_id, user_ids
    finally:
        await server.close()


@pytest.mark.timeout(120)
async def test_large_group_lookups_and_membership_patches(
    big: tuple[ScimClient, str, list[str]],
) -> None:
    scim, group_id, user_ids = big
    slim = await scim.get(f"/Groups/{group_id}", params={"excludedAttributes": "members"})
    assert slim.status == 200
    assert slim.body["displayName"] == "everyone"
    assert "members" not in slim.body

    listed = await scim.get(
        "/Groups", params={"excludedAttributes": "members", "filter": 'displayName eq "EVERYONE"'}
    )
    assert listed.body["totalResults"] == 1
    assert "members" not in listed.body["Resources"][0]

    leaver = user_ids[12345]
    removed = await scim.patch(
        f"/Groups/{group_id}",
        {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "remove", "path": f'members[value eq "{leaver}"]'}],
        },
    )
    assert removed.status == 204
    assert removed.headers["ETag"] == 'W/"2"'
    member_of = await scim.get(
        "/Groups",
        params={"filter": f'members.value eq "{leaver}"', "excludedAttributes": "members"},
    )
    assert member_of.body["totalResults"] == 0

    full = await scim.get(f"/Groups/{group_id}")
    values = {m["value"] for m in full.body["members"]}
    assert len(values) == MEMBERS - 1
    assert leaver not in values

"""End to end: SCIM pushes to a real ``jmlsync serve`` reach Alibaba Cloud RAM and CloudSSO (the
wire-contract fake of tests/alibaba_fake.py, which the child process calls over loopback with
the credentials of its environment): a joiner, a mover and a leaver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jmlsync.targets.alibaba_ram import ram_user_name
from tests.alibaba_fake import (  # noqa: F401 (fixtures)
    ACCOUNT,
    AlibabaFake,
    alibaba_env,
    alibaba_fixture,
    alibaba_server,
)
from tests.conftest import TOKENS, start_service, stop_service, write_config
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADA, BO = "ada@example.org", "bo@example.org"
OSS = "policy:System/AliyunOSSReadOnlyAccess"


def _config(tmp_path: Path, fake: AlibabaFake) -> Path:
    targets = f"""
[pipeline]
poll_seconds = 0.1

[reconcile]
schedule = ""

[targets.ram]
kind = "alibaba-ram"
endpoint = "{fake.endpoint}"
protocol = "http"
domain_alias = "example.org"

[targets.sso]
kind = "alibaba-cloudsso"
endpoint = "{fake.endpoint}"
protocol = "http"

[[rules]]
group = "engineering"
grants = [
  {{ target = "ram", role = "group:developers" }},
  {{ target = "sso", role = "{ACCOUNT}/Developer" }},
]

[[rules]]
group = "auditors"
grants = [{{ target = "ram", role = "{OSS}" }}]
"""
    return write_config(tmp_path, extra=targets)


def _state(fake: AlibabaFake) -> dict[str, Any]:
    """Who holds what, read straight from the fake."""
    with fake._lock:
        policies = {user for user, held in fake.ram_attached.items() if held}
        sso_status = {u["UserName"]: u["Status"] for u in fake.sso_users.values()}
    return {
        "developers": set(fake.group_members("developers")),
        "oss": policies,
        "sso": {user for user, _, _ in fake.held()},
        "sso_status": sso_status,
    }


async def _until(check: Callable[[], bool], limit: float = 30) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 (the fake runs in its own thread)
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_joiner_mover_leaver_reach_ram_and_cloudsso(
    tmp_path: Path, alibaba: AlibabaFake
) -> None:
    alibaba.make_groups("developers")
    alibaba.make_configurations("Developer")
    config = _config(tmp_path, alibaba)
    service = await start_service(config)
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            users = {}
            for name in (ADA, BO):
                body = {"schemas": [USER], "userName": name, "active": True}
                async with http.post(f"{service.url}/Users", json=body) as reply:
                    assert reply.status == 201
                    users[name] = (await reply.json())["id"]
            engineering = {
                "schemas": [GROUP],
                "displayName": "engineering",
                "members": [{"value": uid} for uid in users.values()],
            }
            async with http.post(f"{service.url}/Groups", json=engineering) as reply:
                assert reply.status == 201
                engineering_id = (await reply.json())["id"]
            # Joiners: RAM users made (ada by the domain alias), in the group; CloudSSO
            # users made and assigned.
            await _until(
                lambda: (
                    _state(alibaba)["developers"] == {"ada", "bo"}
                    and _state(alibaba)["sso"] == {ADA, BO}
                )
            )
            alibaba.give_credentials("ada", keys=1)

            # Mover: ada leaves engineering for auditors.
            auditors = {
                "schemas": [GROUP],
                "displayName": "auditors",
                "members": [{"value": users[ADA]}],
            }
            async with http.post(f"{service.url}/Groups", json=auditors) as reply:
                assert reply.status == 201
            remove = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "remove", "path": f'members[value eq "{users[ADA]}"]'}],
            }
            async with http.patch(f"{service.url}/Groups/{engineering_id}", json=remove) as reply:
                assert reply.status in (200, 204)
            await _until(
                lambda: (
                    _state(alibaba)["developers"] == {"bo"}
                    and _state(alibaba)["oss"] == {"ada"}
                    and _state(alibaba)["sso"] == {BO}
                )
            )

            # Leaver: ada deactivated.
            deactivate = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": "active", "value": False}],
            }
            async with http.patch(f"{service.url}/Users/{users[ADA]}", json=deactivate) as reply:
                assert reply.status == 200
            await _until(
                lambda: (
                    _state(alibaba)["oss"] == set()
                    and _state(alibaba)["sso_status"] == {ADA: "Disabled", BO: "Enabled"}
                    and "disabled" in alibaba.ram_users["ada"]["Comments"]
                )
            )
    finally:
        assert await stop_service(service) == 0
    assert "ada" not in alibaba.login_profiles
    assert [k["Status"] for k in alibaba.access_keys["ada"]] == ["Inactive"]
    assert ram_user_name(BO, "example.org") in alibaba.ram_users
    assert alibaba.rejected == {}, "the service's requests failed the signature check"
    assert max(alibaba.writes.values()) == 1
    print(f"joiner, mover and leaver in {time.perf_counter() - started:.2f}s")  # noqa: T201 - timings for the record (-s)

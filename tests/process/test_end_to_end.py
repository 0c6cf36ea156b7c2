"""End to end: SCIM pushes to a real `jmlsync serve` change access in AWS IAM Identity Center
and AWS IAM (moto in server mode) and in a downstream SCIM service (scim2-server)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from tests.conftest import TOKENS, start_service, stop_service, write_config
from tests.moto_server import ACCOUNT, REGION, Moto, aws_env, moto_fixture, moto_server  # noqa: F401
from tests.scim_samples import PATCH_OP
from tests.scim_server import TOKEN as PEER_TOKEN
from tests.scim_server import ScimPeer, scim_peer, scim_server  # noqa: F401

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


@pytest.fixture
def peer(scim_peer: ScimPeer) -> ScimPeer:  # noqa: F811
    """A fresh tenant of the session's scim2-server."""
    return scim_peer


def _config(tmp_path: Path, moto: Moto, peer: ScimPeer) -> Path:
    (tmp_path / "peer-token").write_text(PEER_TOKEN + "\n")
    targets = f"""
[pipeline]
poll_seconds = 0.1

[reconcile]
schedule = ""

[targets.sso]
kind = "aws-identity-center"
region = "{REGION}"
endpoint_url = "{moto.url}"

[targets.iam]
kind = "aws-iam"
region = "{REGION}"
endpoint_url = "{moto.url}"

[targets.downstream]
kind = "scim"
url = "{peer.url}"
token_file = "peer-token"

[[rules]]
group = "engineering"
grants = [
  {{ target = "sso", role = "{ACCOUNT}/Developer" }},
  {{ target = "iam", role = "developers" }},
  {{ target = "downstream", role = "devs" }},
]
"""
    return write_config(tmp_path, extra=targets)


class World:
    def __init__(self, moto: Moto, peer: ScimPeer, devs: str, developer_arn: str) -> None:
        self.moto, self.peer, self.devs, self.developer_arn = moto, peer, devs, developer_arn

    def holders(self) -> dict[str, set[str]]:
        """Who holds the mapped role in each target, read straight from the servers."""
        store_users = self.moto.identity_store_users()
        sso = {store_users.get(pid, pid) for _, pid in self.moto.assignments([self.developer_arn])}
        iam_client = self.moto.client("iam")
        group = iam_client.get_group(GroupName="developers")
        iam = set()
        for user in group["Users"]:
            tags = iam_client.list_user_tags(UserName=user["UserName"])["Tags"]
            original = {t["Key"]: t["Value"] for t in tags}.get("jmlsync:userName")
            iam.add(original or user["UserName"])
        names = self.peer.user_names()
        downstream = {names.get(uid, uid) for uid in self.peer.members(self.devs)}
        return {"sso": sso, "iam": iam, "downstream": downstream}


async def _until(check: Callable[[], bool], limit: float = 30) -> float:
    """Seconds until ``check`` holds (polling servers in other processes)."""
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        while not await asyncio.to_thread(check):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return time.perf_counter() - started


@pytest.mark.process
@pytest.mark.timeout(120)
async def test_joiner_and_leaver_reach_every_cloud(
    tmp_path: Path, moto: Moto, peer: ScimPeer
) -> None:
    developer_arn = moto.permission_sets(["Developer"])["Developer"]
    moto.iam_groups(["developers"])
    devs = peer.create_groups(["devs"])["devs"]
    world = World(moto, peer, devs, developer_arn)
    config = _config(tmp_path, moto, peer)
    service = await start_service(config)
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            users = {}
            for name in ("ada@x.io", "bo+ops@x.io"):
                body = {
                    "schemas": [USER],
                    "userName": name,
                    "active": True,
                    "name": {"givenName": "A", "familyName": "B"},
                }
                async with http.post(f"{service.url}/Users", json=body) as reply:
                    users[name] = (await reply.json())["id"]
            group = {
                "schemas": [GROUP],
                "displayName": "engineering",
                "members": [{"value": uid} for uid in users.values()],
            }
            async with http.post(f"{service.url}/Groups", json=group) as reply:
                assert reply.status == 201
            everyone = set(users)
            joiner = await _until(lambda: all(h == everyone for h in world.holders().values()))
            body = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
            }
            async with http.patch(f"{service.url}/Users/{users['ada@x.io']}", json=body) as reply:
                assert reply.status == 200
            leaver = await _until(
                lambda: all(h == {"bo+ops@x.io"} for h in world.holders().values())
            )
    finally:
        assert await stop_service(service) == 0
    iam_user = next(
        u for u in moto.client("iam").list_users()["Users"] if u["UserName"].startswith("ada")
    )
    tags = moto.client("iam").list_user_tags(UserName=iam_user["UserName"])["Tags"]
    assert {"Key": "jmlsync:disabled", "Value": "true"} in tags
    print(f"joiner {joiner:.2f}s, leaver {leaver:.2f}s")  # noqa: T201 - figures for the record (-s)


@pytest.mark.timeout(120)
async def test_drift_against_identity_center_is_found(
    tmp_path: Path, moto: Moto, peer: ScimPeer
) -> None:
    developer_arn = moto.permission_sets(["Developer"])["Developer"]
    moto.iam_groups(["developers"])
    peer.create_groups(["devs"])
    config = _config(tmp_path, moto, peer)
    instance, store = moto.instance()
    user_id = moto.client("identitystore").create_user(
        IdentityStoreId=store,
        UserName="mallory@x.io",
        DisplayName="Mallory",
        Name={"GivenName": "M", "FamilyName": "X"},
    )["UserId"]
    moto.client("sso-admin").create_account_assignment(
        InstanceArn=instance,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=developer_arn,
        PrincipalType="USER",
        PrincipalId=user_id,
    )

    def run() -> tuple[int, str]:
        result = CliRunner().invoke(
            main, ["reconcile", "--dry-run", "--format", "json", "--config", str(config)]
        )
        return result.exit_code, result.stdout

    code, out = await asyncio.to_thread(run)
    assert code == 0, out
    drift = json.loads(out)["drift"]
    assert {
        "kind": "unmanaged",
        "target": "sso",
        "user": "mallory@x.io",
        "role": f"{ACCOUNT}/Developer",
    } in [{k: d[k] for k in ("kind", "target", "user", "role")} for d in drift]


@pytest.mark.process
@pytest.mark.timeout(150)
async def test_a_privileged_assignment_made_by_hand_is_alerted_by_the_scheduled_run(
    tmp_path: Path, moto: Moto
) -> None:
    admin_arn = moto.permission_sets(["AdministratorAccess"])["AdministratorAccess"]
    config = write_config(
        tmp_path,
        extra=f"""
[reconcile]
schedule = "* * * * *"

[targets.sso]
kind = "aws-identity-center"
region = "{REGION}"
endpoint_url = "{moto.url}"

[[rules]]
group = "cloud-admins"
privileged = true
grants = [{{ target = "sso", role = "{ACCOUNT}/AdministratorAccess" }}]
""",
    )
    instance, store = moto.instance()
    user_id = moto.client("identitystore").create_user(
        IdentityStoreId=store,
        UserName="mallory@x.io",
        DisplayName="Mallory",
        Name={"GivenName": "M", "FamilyName": "X"},
    )["UserId"]
    # In the console, outside jmlsync: a privileged permission set for someone no rule names.
    moto.client("sso-admin").create_account_assignment(
        InstanceArn=instance,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=admin_arn,
        PrincipalType="USER",
        PrincipalId=user_id,
    )
    service = await start_service(config)
    try:
        # The schedule fires at the next minute: one run, at most 60 s away.
        async with asyncio.timeout(100):
            while not any("scheduled full-reconcile" in line for line in service.log):  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        alerts = [line for line in service.log if "ALERT privileged_drift" in line]
        assert len(alerts) == 1, "".join(service.log[-20:])
        assert "mallory@x.io" in alerts[0]
        assert f"{ACCOUNT}/AdministratorAccess" in alerts[0]
    finally:
        assert await stop_service(service) == 0
    assert "Traceback" not in "".join(service.log)

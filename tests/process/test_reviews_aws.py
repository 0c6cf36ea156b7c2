"""An access review end to end through a real `jmlsync serve` against AWS IAM Identity Center
(moto in server mode) and a ledger: a hand-made assignment and rule-given ones reviewed,
revocations read back from moto and the ledger, the review exception held and lifted, the
evidence verified, and the summary page read in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from tests.conftest import TOKENS, start_service, stop_service, write_config
from tests.moto_server import ACCOUNT, REGION, Moto, aws_env, moto_fixture, moto_server  # noqa: F401
from tests.process.test_reviews_service import Scim, acli, held, queue_empty, until, write

pytestmark = pytest.mark.process

ROLE = f"{ACCOUNT}/AdministratorAccess"


def _config(tmp_path: Path, moto: Moto) -> Path:
    return write_config(
        tmp_path,
        extra=f"""
[pipeline]
poll_seconds = 0.1

[reconcile]
schedule = ""

[sla]
verify_every_seconds = 0.2

[targets.sso]
kind = "aws-identity-center"
region = "{REGION}"
endpoint_url = "{moto.url}"

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "cloud-admins"
privileged = true
grants = [{{ target = "sso", role = "{ROLE}" }}, {{ target = "sandbox", role = "admin" }}]

[[reviews]]
name = "quarterly"
scope = "privileged"
reviewers = ["manager", "group:security"]
""",
    )


def _hand_made(moto: Moto, arn: str, user: str) -> None:
    instance, store = moto.instance()
    user_id = moto.client("identitystore").create_user(
        IdentityStoreId=store,
        UserName=user,
        DisplayName="Mallory",
        Name={"GivenName": "M", "FamilyName": "X"},
    )["UserId"]
    moto.client("sso-admin").create_account_assignment(
        InstanceArn=instance,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=arn,
        PrincipalType="USER",
        PrincipalId=user_id,
    )


def _holders(moto: Moto, arn: str) -> set[str]:
    names = moto.identity_store_users()
    return {names.get(pid, pid) for _, pid in moto.assignments([arn])}


@pytest.mark.timeout(180)
async def test_review_in_identity_center(tmp_path: Path, moto: Moto) -> None:
    arn = moto.permission_sets(["AdministratorAccess"])["AdministratorAccess"]
    config = _config(tmp_path, moto)
    _hand_made(moto, arn, "mallory@x.io")
    service = await start_service(config)
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            scim = Scim(http, service.url)
            boss = await scim.user("boss@x.io")
            sec = await scim.user("sec@x.io")
            alice = await scim.user("alice@x.io", manager=boss)
            bob = await scim.user("bob@x.io")
            await scim.group("security", [sec])
            admins = await scim.group("cloud-admins", [alice, bob])
            everyone = {"alice@x.io", "bob@x.io", "mallory@x.io"}

            async def holders_are(expected: set[str]) -> bool:
                return await asyncio.to_thread(_holders, moto, arn) == expected

            await until(lambda: holders_are(everyone))

            async def ledger_holders_are(expected: set[str]) -> bool:
                found = {user for user in everyone if "admin" in await held(config, user)}
                return found == expected

            await until(lambda: ledger_holders_are({"alice@x.io", "bob@x.io"}))

            code, out, err = await acli(config, "review", "start", "quarterly", "--format", "json")
            assert code == 0, err
            campaign = json.loads(out)["id"]
            code, out, err = await acli(config, "review", "export", campaign, "--format", "json")
            assert code == 0, err
            items = {(i["user"], i["target"]): i for i in json.loads(out)["items"]}
            assert set(items) == {
                ("alice@x.io", "sso"),
                ("alice@x.io", "sandbox"),
                ("bob@x.io", "sso"),
                ("bob@x.io", "sandbox"),
                ("mallory@x.io", "sso"),
            }
            assert items[("mallory@x.io", "sso")]["source"] == "unmanaged"
            assert items[("bob@x.io", "sso")]["source"] == "rule 1 (group cloud-admins)"
            assert items[("alice@x.io", "sso")]["reviewer"] == "boss@x.io"
            lines = []
            for (user, _target), item in sorted(items.items()):
                if user == "alice@x.io":
                    lines.append(f"{item['item_id']},keep,boss@x.io,on call\n")
                elif user == "bob@x.io":
                    lines.append(f"{item['item_id']},revoke,sec@x.io,moved teams\n")
                else:
                    lines.append(
                        f'{item["item_id"]},revoke,sec@x.io,"granted by hand, no ticket"\n'
                    )
            path = write(
                tmp_path / "decisions.csv", "item_id,decision,reviewer,comment\n" + "".join(lines)
            )
            code, out, err = await acli(config, "review", "decide", campaign, "--file", str(path))
            assert code == 0, err

            await until(lambda: holders_are({"alice@x.io"}))
            await until(lambda: ledger_holders_are({"alice@x.io"}))

            async def verified() -> bool:
                _code, out, _ = await acli(config, "review", "export", campaign, "--format", "json")
                revoked = [i for i in json.loads(out)["items"] if i["decision"] == "revoke"]
                return len(revoked) == 3 and all(i["verified_at"] for i in revoked)

            await until(verified)

            # bob is still in cloud-admins: a change to him re-plans him, and he stays out.
            await scim.members(admins, "add", bob)
            await until(lambda: queue_empty(config))
            assert await holders_are({"alice@x.io"})
            assert await ledger_holders_are({"alice@x.io"})
            code, out, err = await acli(config, "reconcile", "--dry-run", "--format", "json")
            assert code == 0, err
            plan = json.loads(out)
            assert plan["operations"] == []
            assert sorted((e["user"], e["target"]) for e in plan["exceptions"]) == [
                ("bob@x.io", "sandbox"),
                ("bob@x.io", "sso"),
            ]

            bundle = tmp_path / "evidence"
            code, out, err = await acli(
                config, "review", "evidence", campaign, "--output", str(bundle)
            )
            assert code == 0, err
            code, out, err = await acli(config, "review", "verify-evidence", str(bundle))
            assert code == 0, err
            result = await asyncio.to_thread(
                CliRunner().invoke,
                main,
                ["review", "verify-evidence", str(bundle), "--config", str(config)],
            )
            assert result.exit_code == 0, result.stderr
            decisions = (bundle / "decisions.csv").read_text()
            assert "granted by hand, no ticket" in decisions
            tampered = tmp_path / "tampered"
            shutil.copytree(bundle, tampered)
            raw = bytearray((tampered / "decisions.csv").read_bytes())
            raw[raw.index(b"moved")] = ord(b"M")
            (tampered / "decisions.csv").write_bytes(bytes(raw))
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["review", "verify-evidence", str(tampered)]
            )
            assert result.exit_code == 1
            assert "decisions.csv" in result.stderr

            # The IdP admin takes bob out of the group and back in: the rule gives it again.
            await scim.members(admins, "remove", bob)
            await scim.members(admins, "add", bob)
            await until(lambda: holders_are({"alice@x.io", "bob@x.io"}))
            await until(lambda: ledger_holders_are({"alice@x.io", "bob@x.io"}))
            assert "mallory@x.io" not in await asyncio.to_thread(_holders, moto, arn)
    finally:
        assert await stop_service(service) == 0
    _summary_in_chromium(bundle / "summary.html", campaign)


def _summary_in_chromium(page: Path, campaign: str) -> None:
    """The auditor's page as a browser renders it (its DOM after parsing), text checked."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert f"Access review {campaign}" in dom
    assert "<td>Revocations verified</td><td>3 of 3</td>" in dom
    assert "<td>Undecided</td><td>0</td>" in dom
    assert "group cloud-admins (rule 1)" in dom
    assert "mallory@x.io" in dom

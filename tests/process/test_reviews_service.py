"""Access reviews through a real `jmlsync serve` on each store backend, with ledger targets:
snapshot, decisions, revocations read back, exceptions, deadlines and the evidence bundle."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.domain.access import PrincipalSpec
from jmlsync.targets.ledger import LedgerTarget
from tests.conftest import TOKENS, ServiceProcess, start_service, stop_service
from tests.scim_samples import PATCH_OP

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

SETTINGS = """
[pipeline]
poll_seconds = 0.1

[reconcile]
schedule = ""

[sla]
verify_every_seconds = 0.2

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{{ target = "sandbox", role = "developer" }}]

[[rules]]
group = "cloud-admins"
privileged = true
grants = [{{ target = "sandbox", role = "admin" }}]

[[reviews]]
name = "privileged"
scope = "privileged"
reviewers = ["manager", "group:security"]
admins = ["auditor"]
duration = "{duration}"
remind_before = "{remind}"
on_no_decision = "{on_no_decision}"
"""


def configure(
    config: Path, duration: str = "PT1H", on_no_decision: str = "keep", remind: str = "PT0S"
) -> Path:
    text = config.read_text() + SETTINGS.format(
        duration=duration, on_no_decision=on_no_decision, remind=remind
    )
    config.write_text(text)
    return config


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


async def acli(config: Path, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(cli, config, *args)


async def held(config: Path, user: str) -> frozenset[str]:
    ledger = await LedgerTarget.open("sandbox", config.parent / "ledger.db")
    try:
        return await ledger.grants_of(user)
    finally:
        await ledger.close()


async def hand_grant(config: Path, user: str, role: str) -> None:
    ledger = await LedgerTarget.open("sandbox", config.parent / "ledger.db")
    try:
        await ledger.ensure_principal(PrincipalSpec(user=user))
        await ledger.grant(user, role)
    finally:
        await ledger.close()


async def until(check: Callable[[], Any], limit: float = 30) -> None:
    """Poll an async ``check`` until it is true (the service runs in another process)."""
    async with asyncio.timeout(limit):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class Scim:
    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url

    async def user(self, name: str, manager: str | None = None) -> str:
        body: dict[str, Any] = {"schemas": [USER], "userName": name, "active": True}
        if manager:
            body["schemas"].append(ENTERPRISE)
            body[ENTERPRISE] = {"manager": {"value": manager}}
        async with self.http.post(f"{self.url}/Users", json=body) as reply:
            assert reply.status == 201, await reply.text()
            return str((await reply.json())["id"])

    async def group(self, name: str, members: list[str]) -> str:
        body = {"schemas": [GROUP], "displayName": name, "members": [{"value": m} for m in members]}
        async with self.http.post(f"{self.url}/Groups", json=body) as reply:
            assert reply.status == 201, await reply.text()
            return str((await reply.json())["id"])

    async def members(self, group: str, op: str, user: str) -> None:
        operation: dict[str, Any] = (
            {"op": "add", "path": "members", "value": [{"value": user}]}
            if op == "add"
            else {"op": "remove", "path": f'members[value eq "{user}"]'}
        )
        body = {"schemas": [PATCH_OP], "Operations": [operation]}
        async with self.http.patch(f"{self.url}/Groups/{group}", json=body) as reply:
            assert reply.status in (200, 204), await reply.text()


async def world(
    service: ServiceProcess, config: Path
) -> tuple[Scim, aiohttp.ClientSession, dict[str, str]]:
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
    http = aiohttp.ClientSession(headers=headers)
    scim = Scim(http, service.url)
    ids = {"boss": await scim.user("boss@x.io"), "sec": await scim.user("sec@x.io")}
    ids["alice"] = await scim.user("alice@x.io", manager=ids["boss"])
    ids["bob"] = await scim.user("bob@x.io")
    ids["security"] = await scim.group("security", [ids["sec"]])
    ids["admins"] = await scim.group("cloud-admins", [ids["alice"], ids["bob"]])
    for user in ("alice@x.io", "bob@x.io"):
        await until(lambda user=user: _has(config, user, "admin"))
    await hand_grant(config, "mallory@x.io", "admin")
    return scim, http, ids


async def _has(config: Path, user: str, role: str) -> bool:
    return role in await held(config, user)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def items_of(config: Path, campaign: str) -> dict[str, dict[str, Any]]:
    code, out, err = await acli(config, "review", "export", campaign, "--format", "json")
    assert code == 0, err
    return {item["user"]: item for item in json.loads(out)["items"]}


@pytest.mark.process
@pytest.mark.timeout(180)
async def test_campaign_end_to_end(config_path: Path, tmp_path: Path) -> None:
    config = configure(config_path)
    service = await start_service(config)
    try:
        scim, http, ids = await world(service, config)
        async with http:
            code, out, err = await acli(config, "review", "start", "privileged", "--format", "json")
            assert code == 0, err
            campaign = json.loads(out)["id"]
            assert json.loads(out)["items"] == 3
            items = await items_of(config, campaign)
            assert set(items) == {"alice@x.io", "bob@x.io", "mallory@x.io"}
            assert items["alice@x.io"]["reviewer"] == "boss@x.io"
            assert items["alice@x.io"]["manager"] == "boss@x.io"
            assert items["alice@x.io"]["source"] == "rule 2 (group cloud-admins)"
            assert items["alice@x.io"]["granted_at"]
            assert items["bob@x.io"]["reviewer"] == "group:security"
            assert items["mallory@x.io"]["source"] == "unmanaged"
            assert items["mallory@x.io"]["granted_at"] is None
            assert all(item["privileged"] for item in items.values())
            alice, bob, mallory = (
                items[u]["item_id"] for u in ("alice@x.io", "bob@x.io", "mallory@x.io")
            )

            code, out, _ = await acli(config, "review", "list")
            assert campaign in out
            assert "0/3 decided" in out

            header = "item_id,decision,reviewer,comment\n"
            bad = {
                "unknown.csv": (
                    f"{header}{alice},keep,boss@x.io,ok\n999,keep,boss@x.io,x\n",
                    "row 3: unknown item_id 999",
                ),
                "notyours.csv": (
                    f"{header}{alice},keep,boss@x.io,ok\n{bob},revoke,boss@x.io,x\n",
                    "row 3: boss@x.io is not the reviewer",
                ),
                "malformed.csv": (f'{header}{alice},keep,boss@x.io,"ok\n', "row 2"),
                "fields.csv": (f"{header}{alice},keep\n", "row 2: 2 fields"),
                "value.csv": (f"{header}{alice},maybe,boss@x.io,\n", "row 2: decision 'maybe'"),
            }
            for name, (text, message) in bad.items():
                code, _, err = await acli(
                    config,
                    "review",
                    "decide",
                    campaign,
                    "--file",
                    str(write(tmp_path / name, text)),
                )
                assert code == 1, name
                assert message in err, err
                assert "nothing was recorded" in err, err
                assert "Traceback" not in err
            assert all(i["decision"] is None for i in (await items_of(config, campaign)).values())

            decisions = [
                {
                    "item_id": alice,
                    "decision": "keep",
                    "reviewer": "boss@x.io",
                    "comment": "needed",
                },
                {
                    "item_id": bob,
                    "decision": "revoke",
                    "reviewer": "sec@x.io",
                    "comment": "left the team",
                },
                {
                    "item_id": mallory,
                    "decision": "revoke",
                    "reviewer": "sec@x.io",
                    "comment": "hand-made",
                },
            ]
            path = write(tmp_path / "decisions.json", json.dumps(decisions))
            code, out, err = await acli(
                config, "review", "decide", campaign, "--file", str(path), "--by", "importer"
            )
            assert code == 0, err
            assert "recorded 3 decision(s); 2 revocation job(s) queued" in out

            async def verified() -> bool:
                found = await items_of(config, campaign)
                return all(found[u]["verified_at"] for u in ("bob@x.io", "mallory@x.io"))

            await until(verified)
            assert "admin" not in await held(config, "bob@x.io")
            assert "admin" not in await held(config, "mallory@x.io")
            assert "admin" in await held(config, "alice@x.io")
            found = await items_of(config, campaign)
            assert found["bob@x.io"]["revoked_at"]
            assert found["bob@x.io"]["job"]
            assert found["bob@x.io"]["remove_in_idp"] == "group cloud-admins (rule 2)"
            assert found["mallory@x.io"]["exception"] is None
            assert found["alice@x.io"]["imported_by"] == "importer"

            # The membership remains: the exception holds the grant back, and says so.
            code, out, err = await acli(config, "reconcile", "--dry-run", "--format", "json")
            assert code == 0, err
            plan = json.loads(out)
            assert plan["operations"] == []
            assert [(e["user"], e["role"]) for e in plan["exceptions"]] == [("bob@x.io", "admin")]
            assert plan["exceptions"][0]["memberships"][0]["group"] == "cloud-admins"
            code, out, _ = await acli(config, "explain", "--user", "bob@x.io")
            assert "review exceptions (1)" in out
            assert "remove group cloud-admins (rule 2)" in out
            # A change elsewhere for bob re-plans him: still held back.
            await scim.members(ids["admins"], "add", ids["bob"])
            await until(lambda: queue_empty(config))
            code, out, _ = await acli(config, "reconcile", "--dry-run", "--format", "json")
            assert json.loads(out)["operations"] == []

            bundle = tmp_path / "bundle"
            code, out, err = await acli(
                config, "review", "evidence", campaign, "--output", str(bundle)
            )
            assert code == 0, err
            names = {p.name for p in bundle.iterdir()}
            assert {
                "snapshot.csv",
                "decisions.csv",
                "remediation.csv",
                "summary.html",
                "manifest.json",
                "sla-report.csv",
                "sla-report.html",
            } <= names
            remediation = (bundle / "remediation.csv").read_text()
            assert "bob@x.io" in remediation
            assert "mallory@x.io" in remediation
            code, out, err = await acli(config, "review", "verify-evidence", str(bundle))
            assert code == 0, err
            copy = tmp_path / "tampered"
            shutil.copytree(bundle, copy)
            data = bytearray((copy / "decisions.csv").read_bytes())
            data[-2] ^= 0x01
            (copy / "decisions.csv").write_bytes(bytes(data))
            result = await asyncio.to_thread(
                CliRunner().invoke, main, ["review", "verify-evidence", str(copy)]
            )
            assert result.exit_code == 1
            assert "decisions.csv: SHA-256" in result.stderr

            # The IdP admin removes the membership and adds it again: the grant comes back.
            await scim.members(ids["admins"], "remove", ids["bob"])
            code, out, _ = await acli(config, "review", "exceptions", "--all", "--format", "json")
            assert json.loads(out)[0]["lifted_reason"].startswith("membership of group")
            await scim.members(ids["admins"], "add", ids["bob"])
            await until(lambda: _has(config, "bob@x.io", "admin"))
            assert "admin" not in await held(config, "mallory@x.io")
            code, out, err = await acli(config, "review", "verify-evidence", str(bundle))
            assert code == 0, err
            code, out, err = await acli(config, "review", "export", campaign, "--format", "csv")
            header = out.splitlines()[0].split(",")
            for column in (
                "item_id",
                "target",
                "role",
                "user",
                "source",
                "reviewer",
                "decision",
                "decided_by",
                "comment",
                "job",
                "revoked_at",
                "verified_at",
                "remove_in_idp",
            ):
                assert column in header
            assert len(out.splitlines()) == 4
            code, out, err = await acli(config, "audit", "verify")
            assert code == 0, out + err
            code, out, err = await acli(config, "audit", "tail", "-n", "200", "--format", "json")
            actions = {json.loads(line)["action"] for line in out.splitlines()}
            assert {
                "review.start",
                "review.decide",
                "review.exception",
                "review.exception.lift",
                "review.evidence",
            } <= actions
    finally:
        assert await stop_service(service) == 0


@pytest.mark.process
@pytest.mark.timeout(120)
async def test_deadline_revokes_undecided_and_late_decisions_need_an_admin(
    config_path: Path, tmp_path: Path
) -> None:
    config = configure(config_path, duration="PT4S", on_no_decision="revoke", remind="PT3S")
    service = await start_service(config)
    try:
        _scim, http, _ids = await world(service, config)
        async with http:
            code, out, err = await acli(config, "review", "start", "privileged")
            assert code == 0, err
            campaign = out.strip()
            items = await items_of(config, campaign)
            alice = items["alice@x.io"]["item_id"]
            await until(lambda: _not_has(config, "mallory@x.io", "admin"))
            await until(lambda: _not_has(config, "alice@x.io", "admin"))
            found = await items_of(config, campaign)
            assert {i["decided_by"] for i in found.values()} == {"(no decision)"}
            expected = {
                "review_started",
                "review_reminder",
                "review_overdue",
                "review_auto_revoked",
            }

            async def alerted() -> bool:
                _code, out, _ = await acli(config, "alerts", "list", "--format", "json")
                return expected <= {a["kind"] for a in json.loads(out)}

            await until(alerted)
            code, out, _ = await acli(config, "alerts", "list", "--format", "json")
            done = [a for a in json.loads(out) if a["kind"] == "review_auto_revoked"]
            assert len(done) == 1
            assert "read back as gone" in done[0]["text"]

            path = write(
                tmp_path / "late.csv",
                f"item_id,decision,reviewer,comment\n{alice},keep,boss@x.io,sorry\n",
            )
            code, _, err = await acli(config, "review", "decide", campaign, "--file", str(path))
            assert code == 1
            assert "deadline" in err
            assert "--late" in err
            code, _, err = await acli(
                config,
                "review",
                "decide",
                campaign,
                "--file",
                str(path),
                "--late",
                "--by",
                "boss@x.io",
            )
            assert code == 1
            assert "admin" in err
            code, out, err = await acli(
                config,
                "review",
                "decide",
                campaign,
                "--file",
                str(path),
                "--late",
                "--by",
                "auditor",
            )
            assert code == 0, err
            found = await items_of(config, campaign)
            assert found["alice@x.io"]["decision"] == "keep"
            assert found["alice@x.io"]["late"] is True
            # Kept after all: the exception ends and the rule gives the grant back.
            await until(lambda: _has(config, "alice@x.io", "admin"))
    finally:
        assert await stop_service(service) == 0


async def queue_empty(config: Path) -> bool:
    code, out, _ = await acli(config, "queue", "list", "--format", "json")
    return code == 0 and json.loads(out) == []


async def _not_has(config: Path, user: str, role: str) -> bool:
    return role not in await held(config, user)


@pytest.mark.timeout(60)
async def test_a_scheduled_campaign_starts_by_itself(config_path: Path) -> None:
    from jmlsync.config import load_settings
    from jmlsync.runtime import open_runtime
    from jmlsync.service import build_scheduler

    config = configure(config_path)
    config.write_text(
        config.read_text().replace(
            'name = "privileged"', 'name = "privileged"\nschedule = "0 9 1 */3 *"'
        )
    )
    await hand_grant(config, "mallory@x.io", "admin")
    async with open_runtime(load_settings(config)) as runtime:
        scheduler = build_scheduler(runtime)
        assert {"reviews", "review-start:privileged"} <= {
            j.id for j in scheduler._scheduler.get_jobs()
        }
        job = scheduler._scheduler.get_job("review-start:privileged")
        await job.func()
        await job.func()
        assert runtime.reviews is not None
        campaigns = await runtime.reviews.reviews.campaigns("privileged")
        assert len(campaigns) == 2
        assert campaigns[0].id != campaigns[1].id
        assert [c.items for c in campaigns] == [1, 1]
        runs = await runtime.assurance.store.last_runs()
        assert any(r.job == "review-start:privileged" and r.outcome == "ok" for r in runs)

"""Time-bound access through a real `jmlsync serve` on both store backends: request, approvals,
the grant in the target, expiry, revocation read back, kill -9, leavers and lost eligibility."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from tests.conftest import TOKENS, ServiceProcess, kill_service, start_service, stop_service
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
HEADERS = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}

ACCESS = """
[pipeline]
poll_seconds = 0.05

[reconcile]
schedule = ""

[access]
expiry_check_seconds = 0.3
end_seconds = 300

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[eligibility]]
name = "sandbox-admin"
groups = ["oncall"]
grants = [{ target = "sandbox", role = "admin" }]
max_duration = "1h"
approvals = 2
approvers = ["approvers"]
privileged = true
ticket_pattern = "INC-[0-9]+"
"""


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [*args, "--config", str(config)])
    return result.exit_code, result.stdout, result.stderr


async def acli(config: Path, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(cli, config, *args)


async def access_json(config: Path, *args: str) -> Any:
    code, out, err = await acli(config, "access", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def ledger_roles(path: Path, user: str) -> set[str]:
    if not path.exists():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT role FROM grants WHERE user = ?", (user,))}
        except sqlite3.OperationalError:
            return set()


async def until(check: Callable[[], Awaitable[bool]], limit: float = 30) -> None:
    """Poll another process's state until ``check`` holds (bounded)."""
    async with asyncio.timeout(limit):
        # Another process's state: there is no event to await across processes.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


class Directory:
    """SCIM pushes to the service: the IdP of these tests."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.ids: dict[str, str] = {}

    async def user(self, name: str) -> str:
        body = {"schemas": [USER], "userName": name, "active": True}
        async with self.http.post(f"{self.url}/Users", json=body) as reply:
            assert reply.status == 201
            self.ids[name] = (await reply.json())["id"]
        return self.ids[name]

    async def group(self, name: str, members: list[str]) -> str:
        body = {
            "schemas": [GROUP],
            "displayName": name,
            "members": [{"value": self.ids[m]} for m in members],
        }
        async with self.http.post(f"{self.url}/Groups", json=body) as reply:
            assert reply.status == 201
            self.ids[name] = (await reply.json())["id"]
        return self.ids[name]

    async def patch(self, kind: str, name: str, operation: dict[str, Any]) -> None:
        body = {"schemas": [PATCH_OP], "Operations": [operation]}
        async with self.http.patch(f"{self.url}/{kind}/{self.ids[name]}", json=body) as reply:
            assert reply.status in (200, 204), await reply.text()


async def _world(service: ServiceProcess, http: aiohttp.ClientSession) -> Directory:
    directory = Directory(http, service.url)
    for name in ("ada@x.io", "bob@x.io", "cy@x.io"):
        await directory.user(name)
    await directory.group("oncall", ["ada@x.io"])
    await directory.group("approvers", ["bob@x.io", "cy@x.io"])
    return directory


async def _granted(config: Path, duration: str) -> dict[str, Any]:
    """A request by ada, approved by bob and cy: active."""
    made = await access_json(
        config,
        "request",
        "--as",
        "ada@x.io",
        "--grant",
        "sandbox/admin",
        "--for",
        duration,
        "--reason",
        "incident 7",
        "--ticket",
        "INC-7",
    )
    assert made["state"] == "pending"
    assert made["user"] == "ada@x.io"
    once = await access_json(config, "approve", str(made["id"]), "--as", "bob@x.io")
    assert once["state"] == "pending"
    twice = await access_json(config, "approve", str(made["id"]), "--as", "cy@x.io")
    assert twice["state"] == "active"
    assert twice["expires_at"] is not None
    assert [a["approver"] for a in twice["approvals"]] == ["bob@x.io", "cy@x.io"]
    return twice  # type: ignore[no-any-return]


def _config(config_path: Path) -> Path:
    with config_path.open("a") as handle:
        handle.write(ACCESS)
    return config_path


@pytest.mark.timeout(120)
async def test_request_two_approvals_grant_expiry_and_verified_end(config_path: Path) -> None:
    config = _config(config_path)
    ledger = config.parent / "ledger.db"
    service = await start_service(config)
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            await _world(service, http)
            active = await _granted(config, "3s")

            async def held() -> bool:
                return "admin" in ledger_roles(ledger, "ada@x.io")

            await until(held)
            code, out, _ = await acli(config, "explain", "--user", "ada@x.io")
            assert f"request #{active['id']}, approved by bob@x.io, cy@x.io, expires" in out

            async def verified() -> bool:
                shown = await access_json(config, "show", str(active["id"]))
                return bool(shown["state"] == "verified")

            await until(verified)
            assert not await held()
            shown = await access_json(config, "show", str(active["id"]))
            assert shown["end_reason"] == "expired"
            assert shown["expires_at"] <= shown["revoked_at"] <= shown["verified_at"]
            actions = [row["action"] for row in shown["history"]]
            assert actions[:4] == ["request", "approve", "approve", "start"]
            assert actions[-1] == "verify"
            assert "end" in actions
    finally:
        assert await stop_service(service) == 0
    code, out, err = await acli(config, "audit", "verify")
    assert code == 0, out + err


@pytest.mark.timeout(120)
async def test_kill_9_while_active_then_restart_after_expiry(config_path: Path) -> None:
    config = _config(config_path)
    ledger = config.parent / "ledger.db"
    service = await start_service(config)
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        await _world(service, http)
        active = await _granted(config, "2s")

        async def held() -> bool:
            return "admin" in ledger_roles(ledger, "ada@x.io")

        await until(held)
        assert await kill_service(service) == -signal.SIGKILL
    expires = datetime.fromisoformat(active["expires_at"].replace("Z", "+00:00"))

    async def expired() -> bool:
        return datetime.now(UTC) > expires

    await until(expired)
    assert await held(), "nothing ends a grant while no jmlsync runs"
    restarted = await start_service(config)
    try:

        async def verified() -> bool:
            shown = await access_json(config, "show", str(active["id"]))
            return bool(shown["state"] == "verified")

        await until(verified)
        assert not await held()
    finally:
        assert await stop_service(restarted) == 0


@pytest.mark.timeout(120)
async def test_a_leaver_and_a_lost_eligibility_end_the_grant(config_path: Path) -> None:
    config = _config(config_path)
    ledger = config.parent / "ledger.db"
    service = await start_service(config)
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            directory = await _world(service, http)
            await directory.user("dee@x.io")
            await directory.patch(
                "Groups",
                "oncall",
                {"op": "add", "path": "members", "value": [{"value": directory.ids["dee@x.io"]}]},
            )
            first = await _granted(config, "1h")
            made = await access_json(
                config,
                "request",
                "--as",
                "dee@x.io",
                "--grant",
                "sandbox/admin",
                "--for",
                "1h",
                "--reason",
                "deploy",
                "--ticket",
                "INC-8",
            )
            await access_json(config, "approve", str(made["id"]), "--as", "bob@x.io")
            second = await access_json(config, "approve", str(made["id"]), "--as", "cy@x.io")
            assert second["state"] == "active"

            async def both_held() -> bool:
                return "admin" in ledger_roles(ledger, "ada@x.io") and "admin" in ledger_roles(
                    ledger, "dee@x.io"
                )

            await until(both_held)
            await directory.patch(
                "Users", "ada@x.io", {"op": "replace", "path": "active", "value": False}
            )
            await directory.patch(
                "Groups",
                "oncall",
                {"op": "remove", "path": f'members[value eq "{directory.ids["dee@x.io"]}"]'},
            )

            async def both_verified() -> bool:
                one = await access_json(config, "show", str(first["id"]))
                two = await access_json(config, "show", str(second["id"]))
                return bool(one["state"] == two["state"] == "verified")

            await until(both_verified)
            assert "admin" not in ledger_roles(ledger, "ada@x.io")
            assert "admin" not in ledger_roles(ledger, "dee@x.io")
            one = await access_json(config, "show", str(first["id"]))
            two = await access_json(config, "show", str(second["id"]))
            assert one["end_reason"] == "leaver"
            assert two["end_reason"] == "eligibility lost"
    finally:
        assert await stop_service(service) == 0

"""Through a real `jmlsync serve` (SQLite and PostgreSQL): movers' revocations recorded by
the pipeline and read back by leaver verification, a leaver whose grant is given back by hand,
and the SLA report as evidence, all read by the commands an operator runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, ScimClient, start_service, stop_service
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.process

TARGETS = """
[pipeline]
poll_seconds = 0.1
retry_base_seconds = 0

[reconcile]
schedule = ""

[sla]
verify_every_seconds = 0.2
mover_seconds = 600

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]

[[rules]]
group = "cloud-admins"
privileged = true
grants = [{ target = "sandbox", role = "admin" }]
"""


def _roles(config: Path, user: str) -> set[str]:
    with sqlite3.connect(config.parent / "ledger.db") as conn:
        return {r[0] for r in conn.execute("SELECT role FROM grants WHERE user = ?", (user,))}


def _grant_by_hand(config: Path, user: str, role: str) -> None:
    """What an administrator does in a console: a grant jmlsync did not make."""
    with sqlite3.connect(config.parent / "ledger.db") as conn:
        conn.execute(
            "INSERT INTO grants (user, role, granted_at) VALUES (?, ?, ?)",
            (user, role, datetime.now(UTC).isoformat()),
        )


async def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    """The command as an operator runs it: its own process, beside the running service."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode, out.decode(), err.decode()


async def _report(config: Path, *args: str) -> tuple[int, Any]:
    code, out, err = await _cli(config, "sla-report", "--format", "json", *args)
    assert code in (0, 1), err
    return code, json.loads(out)


async def _eventually(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    """Poll ``check`` (which may run a command) until it holds, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.1)


def _configure(config: Path) -> Path:
    config.write_text(config.read_text() + TARGETS)
    return config


@pytest.mark.timeout(120)
async def test_a_mover_is_revoked_verified_and_reported(config_path: Path) -> None:
    config = _configure(config_path)
    service = await start_service(config)
    try:
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            ann = await scim.create_user("ann@x.io", active=True)
            group = await scim.create_group("engineering", members=[ann["id"]])
            await _eventually(lambda: _true(_roles(config, "ann@x.io") == {"developer"}))
            remove = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "remove", "path": f'members[value eq "{ann["id"]}"]'}],
            }
            before = datetime.now(UTC)
            assert (await scim.patch(f"/Groups/{group['id']}", remove)).status in (200, 204)
            await _eventually(lambda: _true(_roles(config, "ann@x.io") == set()))

        async def verified() -> bool:
            _, report = await _report(config)
            rows = report["movers"]["revocations"]
            return bool(rows) and rows[0]["verified_at"] is not None

        await _eventually(verified)
        code, report = await _report(config)
        assert code == 0
        (row,) = report["movers"]["revocations"]
        assert (row["user"], row["target"], row["role"]) == ("ann@x.io", "sandbox", "developer")
        assert row["actor"] == "pipeline"
        requested = datetime.fromisoformat(row["requested_at"])
        assert requested >= before.replace(microsecond=0)
        assert row["requested_at"] <= row["revoked_at"] <= row["verified_at"]
        assert row["within_sla"] is True
        assert row["seconds_to_revoke"] >= 0
        assert report["movers"]["sla_seconds"] == 600
        assert report["movers"]["summary"]["verified"] == 1

        code, out, _ = await _cli(config, "status", "--format", "json")
        assert code == 0, out
        assert json.loads(out)["movers"] == {"not_verified": 0, "sla_breaches": 0}
        for fmt in ("table", "csv", "html"):
            code, out, _ = await _cli(config, "sla-report", "--format", fmt)
            assert code == 0, fmt
            assert "ann@x.io" in out, fmt
    finally:
        await stop_service(service)
    _no_traceback(service.log)


def _no_traceback(log: list[str]) -> None:
    text = "".join(log)
    at = text.find("Traceback")
    assert at < 0, text[max(at - 1500, 0) : at + 3000]


async def _true(value: bool) -> bool:
    return value


def _recomputed(document: dict[str, Any]) -> str:
    """The body hash as docs/assurance.md tells an auditor to recompute it."""
    body = {k: v for k, v in document.items() if k not in ("generated", "sha256")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.timeout(120)
async def test_a_past_window_is_reproducible_evidence(config_path: Path) -> None:
    config = _configure(config_path)
    service = await start_service(config)
    try:
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            since = datetime.now(UTC)
            bob = await scim.create_user("bob@x.io", active=True)
            await scim.create_group("engineering", members=[bob["id"]])
            await _eventually(lambda: _true(_roles(config, "bob@x.io") == {"developer"}))
            off = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            assert (await scim.patch(f"/Users/{bob['id']}", off)).status == 200

        async def verified() -> bool:
            _, report = await _report(config)
            return bool(report["leavers"]) and report["leavers"][0]["verified_at"] is not None

        await _eventually(verified)
        until = datetime.now(UTC)
        window = ("--since", since.isoformat(), "--until", until.isoformat())
        code, first = await _report(config, *window)
        assert code == 0
        _, second = await _report(config, *window)
        assert first["sha256"] == second["sha256"] == _recomputed(first)
        assert first["generated"]["jmlsync_version"]
        assert first["generated"]["host"]
        assert first["scope"] == {
            "targets": {"sandbox": "ledger"},
            "rule_count": 2,
            "privileged_roles": ["sandbox/admin"],
        }
        audit = first["audit"]
        assert audit["verify"] == "intact"
        assert audit["head_seq"] >= 4
        assert len(audit["head_hash"]) == 64
        assert [row["user"] for row in first["leavers"]] == ["bob@x.io"]
        assert first["summary"]["compliance_percent"] == 100.0
        code, html_out, _ = await _cli(config, "sla-report", "--format", "html", *window)
        assert code == 0
        assert first["sha256"] in html_out
        code, table, _ = await _cli(config, "sla-report", *window)
        assert first["sha256"] in table
        assert "audit verify: intact" in table

        # An empty window says so instead of claiming full compliance.
        code, out, _ = await _cli(
            config, "sla-report", "--since", "2001-01-01", "--until", "2001-02-01"
        )
        assert code == 0
        assert "compliance n/a" in out
        assert "100.00 %" not in out

        # Bad windows and outputs: one line, exit 1.
        for args, words in (
            (("--since", "2999-01-01"), "in the future"),
            (("--since", "2d", "--until", "3d"), "is before --since"),
            (("--until", "yesterday-ish"), "--until"),
            (("--output", str(config.parent / "missing" / "r.html")), "does not exist"),
        ):
            code, out, err = await _cli(config, "sla-report", *args)
            assert code == 1, args
            assert words in err, (args, err)
            assert len(err.strip().splitlines()) == 1, err
            assert out == ""
    finally:
        await stop_service(service)
    _no_traceback(service.log)


@pytest.mark.timeout(120)
async def test_a_leaver_given_access_back_by_hand_is_a_breach(config_path: Path) -> None:
    config = _configure(config_path)
    service = await start_service(config)
    try:
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            cy = await scim.create_user("cy@x.io", active=True)
            await scim.create_group("engineering", members=[cy["id"]])
            await _eventually(lambda: _true(_roles(config, "cy@x.io") == {"developer"}))
            off = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            assert (await scim.patch(f"/Users/{cy['id']}", off)).status == 200

        async def verified() -> bool:
            _, report = await _report(config)
            return bool(report["leavers"]) and report["leavers"][0]["verified_at"] is not None

        await _eventually(verified)
        code, report = await _report(config)
        assert code == 0
        _grant_by_hand(config, "cy@x.io", "developer")
        code, out, err = await _cli(config, "reconcile", "--format", "json")
        assert code == 0, err
        assert [d["user"] for d in json.loads(out)["drift"]] == ["cy@x.io"]

        code, report = await _report(config)
        assert code == 1
        (row,) = report["leavers"]
        assert row["within_sla"] is False
        assert row["regranted_at"] is not None
        assert "re-granted: sandbox held developer again" in row["breach_cause"]
        assert _roles(config, "cy@x.io") == set()  # and taken away again
        code, out, _ = await _cli(config, "sla-report", "--format", "html")
        assert code == 1
        assert "re-granted: sandbox held developer again" in out
    finally:
        await stop_service(service)
    _no_traceback(service.log)

"""Time-bound access end to end against AWS IAM Identity Center (moto in server mode) through a
real `jmlsync serve`, on both store backends: request, two approvals, the assignment in
Identity Center, expiry, revocation read back, and the row of the SLA report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from jmlsync.report.sla.text import TIMEBOUND_CSV_COLUMNS
from tests.conftest import start_service, stop_service
from tests.moto_server import ACCOUNT, REGION, Moto, aws_env, moto_fixture, moto_server  # noqa: F401
from tests.process.test_access_process import HEADERS, Directory, access_json, acli, until

pytestmark = pytest.mark.process


def _config(config_path: Path, moto: Moto) -> Path:
    with config_path.open("a") as handle:
        handle.write(
            f"""
[pipeline]
poll_seconds = 0.05

[reconcile]
schedule = ""

[access]
expiry_check_seconds = 0.3

[targets.sso]
kind = "aws-identity-center"
region = "{REGION}"
endpoint_url = "{moto.url}"

[[eligibility]]
name = "prod-admin"
groups = ["oncall"]
grants = [{{ target = "sso", role = "{ACCOUNT}/AdministratorAccess" }}]
max_duration = "1h"
approvals = 2
approvers = ["approvers"]
"""
        )
    return config_path


@pytest.mark.timeout(120)
async def test_time_bound_grant_in_identity_center_ends_verified(
    config_path: Path,
    moto: Moto,
) -> None:
    arn = moto.permission_sets(["AdministratorAccess"])["AdministratorAccess"]
    config = _config(config_path, moto)

    def holders() -> set[str]:
        users = moto.identity_store_users()
        return {users.get(pid, pid) for _, pid in moto.assignments([arn])}

    service = await start_service(config)
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as http:
            directory = Directory(http, service.url)
            for name in ("ada@x.io", "bob@x.io", "cy@x.io"):
                await directory.user(name)
            await directory.group("oncall", ["ada@x.io"])
            await directory.group("approvers", ["bob@x.io", "cy@x.io"])
            made = await access_json(
                config,
                "request",
                "--as",
                "ada@x.io",
                "--grant",
                f"sso/{ACCOUNT}/AdministratorAccess",
                "--for",
                "4s",
                "--reason",
                "incident 9",
            )
            await access_json(config, "approve", str(made["id"]), "--as", "bob@x.io")
            active = await access_json(config, "approve", str(made["id"]), "--as", "cy@x.io")
            assert active["state"] == "active"

            async def assigned() -> bool:
                return "ada@x.io" in await asyncio.to_thread(holders)

            await until(assigned)

            async def verified() -> bool:
                shown = await access_json(config, "show", str(made["id"]))
                return bool(shown["state"] == "verified")

            await until(verified)
            assert not await assigned()
    finally:
        assert await stop_service(service) == 0
    code, out, err = await acli(config, "sla-report", "--format", "json", "--since", "1h")
    assert code == 0, err
    section = json.loads(out)["timebound"]
    (row,) = section["grants"]
    assert row["id"] == made["id"]
    assert row["grant"] == f"sso/{ACCOUNT}/AdministratorAccess"
    assert row["expires_at"] <= row["revoked_at"] <= row["verified_at"]
    assert row["within_sla"] is True
    assert 0 <= row["seconds_past_expiry"] < 300
    assert row["approvers"] == ["bob@x.io", "cy@x.io"]
    assert section["summary"] == {"ended": 1, "verified": 1, "breaches": 0}
    code, table, _ = await acli(config, "sla-report", "--since", "1h")
    assert "time-bound access" in table
    assert f"{made['id']:>5} ada@x.io" in table
    # The auditor's formats carry the section too: a CSV section and an HTML table.
    code, csv_text, _ = await acli(config, "sla-report", "--format", "csv", "--since", "1h")
    assert code == 0
    lines = csv_text.splitlines()
    start = lines.index(",".join(TIMEBOUND_CSV_COLUMNS))
    assert lines[start + 1].startswith(f"{made['id']},ada@x.io,sso/{ACCOUNT}/AdministratorAccess,")
    assert lines[start + 1].split(",")[3] == "bob@x.io;cy@x.io"
    code, page, _ = await acli(config, "sla-report", "--format", "html", "--since", "1h")
    assert code == 0
    assert '<section id="timebound"' in page
    assert f"#{made['id']}</td>" in page
    assert f"sso/{ACCOUNT}/AdministratorAccess" in page.split('id="timebound"')[1]

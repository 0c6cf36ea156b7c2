"""The `access` commands: refused input is one line and exit 1 with nothing changed; every
step is an audit-chain row; the alerts say who asks for what and how to approve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import served
from tests.process.test_access_process import ACCESS, HEADERS, Directory, access_json, acli, until

TIMEOUT = """
[[eligibility]]
name = "quick"
users = ["ada@x.io"]
grants = [{ target = "sandbox", role = "viewer" }]
max_duration = "1h"
approvers = ["approvers"]
approval_timeout = "1s"
require_reason = false
"""


async def _directory(url: str, http: aiohttp.ClientSession) -> Directory:
    directory = Directory(http, url.rstrip("/") + "/scim/v2")
    for name in ("ada@x.io", "bob@x.io", "cy@x.io", "eve@x.io"):
        await directory.user(name)
    await directory.group("oncall", ["ada@x.io", "eve@x.io"])
    await directory.group("approvers", ["bob@x.io", "cy@x.io"])
    return directory


async def _refused(config: Path, *args: str, match: str) -> None:
    code, out, err = await acli(config, "access", *args)
    assert code == 1, out + err
    assert out == "", err
    assert match in err, err
    assert len(err.strip().splitlines()) == 1, err


REQUEST = ("request", "--as", "ada@x.io", "--grant", "sandbox/admin", "--reason", "incident")


@pytest.mark.timeout(90)
async def test_refused_input_changes_nothing(config_path: Path) -> None:
    with config_path.open("a") as handle:
        handle.write(ACCESS + TIMEOUT)
    config = config_path
    async with served(config) as url, aiohttp.ClientSession(headers=HEADERS) as http:
        await _directory(url, http)
        await _refused(
            config,
            *REQUEST[:4],
            "sandbox/nope",
            "--for",
            "1h",
            "--ticket",
            "INC-1",
            match="unknown target or role",
        )
        await _refused(config, *REQUEST, "--for", "2h", "--ticket", "INC-1", match="over the")
        await _refused(config, *REQUEST, "--for", "1h", "--ticket", "JIRA-1", match="match")
        await _refused(config, *REQUEST, "--for", "forever", match="--for: not a duration")
        await _refused(config, *REQUEST[:4], "sandbox", "--for", "1h", match="TARGET/ROLE")
        await _refused(
            config,
            "request",
            "--grant",
            "sandbox/admin",
            "--for",
            "1h",
            "--reason",
            "x",
            "--ticket",
            "INC-1",
            match="give --as",
        )
        await _refused(
            config,
            *REQUEST[:2],
            "bob@x.io",
            *REQUEST[3:],
            "--for",
            "1h",
            "--ticket",
            "INC-1",
            match="not eligible",
        )
        await _refused(config, "approve", "99", "--as", "bob@x.io", match="no access request #99")
        await _refused(config, "show", "x1", match="an id is a positive number")
        await _refused(config, "end", "9" * 30, match="an id is a positive number")
        assert await access_json(config, "list") == []

        made = await access_json(config, *REQUEST, "--for", "1h", "--ticket", "INC-1")
        number = str(made["id"])
        await _refused(config, "approve", number, "--as", "ada@x.io", match="their own request")
        await _refused(config, "approve", number, "--as", "eve@x.io", match="approver group")
        await _refused(config, "approve", number, match="give --as")
        await access_json(config, "approve", number, "--as", "bob@x.io")
        await _refused(config, "approve", number, "--as", "bob@x.io", match="already approved")
        await _refused(
            config,
            "extend",
            number,
            "--as",
            "ada@x.io",
            "--for",
            "1h",
            match="only an active grant",
        )
        await _refused(config, "end", number, "--as", "eve@x.io", match="may not end")
        shown = await access_json(config, "show", number)
        assert shown["state"] == "pending"
        assert len(shown["approvals"]) == 1
        assert [row["action"] for row in shown["history"]] == ["request", "approve"]

        late = await access_json(
            config, "request", "--as", "ada@x.io", "--grant", "sandbox/viewer", "--for", "10m"
        )

        async def timed_out() -> bool:
            shown = await access_json(config, "show", str(late["id"]))
            return bool(shown["state"] == "timed_out")

        await until(timed_out)  # the scheduler's check times it out
        await _refused(
            config, "approve", str(late["id"]), "--as", "bob@x.io", match="timed out waiting"
        )


@pytest.mark.timeout(90)
async def test_lists_audit_rows_and_alerts(config_path: Path) -> None:
    with config_path.open("a") as handle:
        handle.write(ACCESS)
    config = config_path
    async with served(config) as url, aiohttp.ClientSession(headers=HEADERS) as http:
        await _directory(url, http)
        first = await access_json(config, *REQUEST, "--for", "30m", "--ticket", "INC-4")
        second = await access_json(config, *REQUEST, "--for", "1h", "--ticket", "INC-5")
        await access_json(config, "approve", str(second["id"]), "--as", "bob@x.io")
        active = await access_json(config, "approve", str(second["id"]), "--as", "cy@x.io")
        assert set(active) >= {"id", "state", "user", "grant", "expires_at", "approvals"}
        pending = await access_json(config, "list", "--pending")
        assert [r["id"] for r in pending] == [first["id"]]
        assert [r["id"] for r in await access_json(config, "list", "--active")] == [second["id"]]
        mine = await access_json(config, "list", "--mine", "--as", "ada@x.io")
        assert [r["id"] for r in mine] == [first["id"], second["id"]]
        assert await access_json(config, "list", "--mine", "--as", "bob@x.io") == []
        denied = await access_json(
            config, "deny", str(first["id"]), "--as", "cy@x.io", "--reason", "use the other one"
        )
        assert denied["state"] == "denied"
        assert denied["denial_reason"] == "use the other one"
        extended = await access_json(
            config, "extend", str(second["id"]), "--as", "ada@x.io", "--for", "30m"
        )
        assert extended["extension_seconds"] == 1800
        assert extended["expires_at"] == active["expires_at"]
        await access_json(config, "approve", str(second["id"]), "--as", "bob@x.io")
        longer = await access_json(config, "approve", str(second["id"]), "--as", "cy@x.io")
        assert longer["expires_at"] > active["expires_at"]
        assert longer["extension_seconds"] is None
        ended = await access_json(config, "end", str(second["id"]))
        assert ended["state"] == "ended"
        assert ended["ended_by"] == "operator"
        code, table, _ = await acli(config, "access", "list")
        assert code == 0
        assert "ada@x.io" in table
        assert "denied" in table

        code, out, _ = await acli(config, "audit", "tail", "-n", "50", "--format", "json")
        rows = [json.loads(line) for line in out.splitlines()]
        steps = [
            (r["actor"], r["action"], r["outcome"])
            for r in rows
            if r["action"].startswith("access.")
        ]
        assert ("operator as ada@x.io", "access.request", "pending") in steps
        assert ("operator as cy@x.io", "access.deny", "denied") in steps
        assert ("operator as ada@x.io", "access.extend", "active") in steps
        assert ("operator", "access.end", "ended") in steps
        start = next(r for r in rows if r["action"] == "access.start")
        detail: dict[str, Any] = json.loads(start["detail"])
        assert detail["request"] == second["id"]
        assert detail["ticket"] == "INC-5"
        assert detail["approvers"] == ["bob@x.io", "cy@x.io"]
        assert detail["reason"] == "incident"
        assert (start["target"], start["role"], start["subject"]) == (
            "sandbox",
            "admin",
            "ada@x.io",
        )

        code, out, _ = await acli(config, "alerts", "list", "--format", "json")
        alerts = json.loads(out)
        texts = {a["kind"]: a["text"] for a in alerts}
        assert f"jmlsync access approve {first['id']} --as YOU" in texts["access_request"]
        assert (
            "*ada@x.io* requests time-bound access to `sandbox/admin`" in (texts["access_request"])
        )
        assert "incident" in texts["access_request"]
        assert (
            "privileged time-bound grant sandbox/admin started"
            in (texts["access_privileged_started"])
        )
        assert "ended (ended early" in texts["access_ended"]

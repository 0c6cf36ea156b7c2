"""Through a real `jmlsync serve`: a healthy ledger and a downstream SCIM target that cannot be
reached. The ledger gets the joiner's grant and loses the leaver's at once; the reports, `status`,
`explain` and `reconcile` name the other target as pending or unreadable."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
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
retry_base_seconds = 1
call_attempts = 2
call_initial_wait_seconds = 0
call_max_wait_seconds = 0

[reconcile]
schedule = ""

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[targets.downstream]
kind = "scim"
url = "http://127.0.0.1:{port}/scim/v2"
token_file = "downstream-token"
timeout_seconds = 2

[[rules]]
group = "engineering"
grants = [
  {{ target = "sandbox", role = "developer" }},
  {{ target = "downstream", role = "developer" }},
]
"""


def _closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _configure(config: Path) -> None:
    """Add the two targets (the SCIM one on a closed port) to the fixture's configuration."""
    token = config.parent / "downstream-token"
    token.write_text("d" * 40 + "\n")
    token.chmod(0o600)
    config.write_text(config.read_text() + TARGETS.format(port=_closed_port()))


def _ledger(config: Path) -> Callable[[str], tuple[set[str], bool | None]]:
    def read(user: str) -> tuple[set[str], bool | None]:
        with sqlite3.connect(config.parent / "ledger.db") as conn:
            roles = {r[0] for r in conn.execute("SELECT role FROM grants WHERE user = ?", (user,))}
            row = conn.execute("SELECT enabled FROM principals WHERE user = ?", (user,)).fetchone()
        return roles, None if row is None else bool(row[0])

    return read


def _revoke_by_hand(config: Path, user: str) -> None:
    with sqlite3.connect(config.parent / "ledger.db") as conn:
        conn.execute("DELETE FROM grants WHERE user = ?", (user,))


async def _until(check: Callable[[], bool], seconds: float = 10) -> None:
    """Poll ``check`` until it holds, failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.05)


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
    return process.returncode, out.decode(), err.decode()


async def _json(config: Path, *args: str, code: int = 0) -> Any:
    got, out, err = await _cli(config, *args, "--format", "json")
    assert got == code, (out, err)
    assert "Traceback" not in err, err
    return json.loads(out)


@pytest.mark.timeout(120)
async def test_an_unreachable_target_holds_up_only_itself(config_path: Path) -> None:
    _configure(config_path)
    ledger = _ledger(config_path)
    service = await start_service(config_path)
    try:
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            scim = ScimClient(session, service.url.rstrip("/"))
            ann = await scim.create_user("ann@x.io", active=True)
            bob = await scim.create_user("bob@x.io", active=True)
            await scim.create_group("engineering", members=[ann["id"], bob["id"]])
            await _until(lambda: ledger("bob@x.io") == ({"developer"}, True))
            await _until(lambda: ledger("ann@x.io") == ({"developer"}, True))
            off = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            assert (await scim.patch(f"/Users/{bob['id']}", off)).status == 200
            await _until(lambda: ledger("bob@x.io") == (set(), False))

        report = await _json(config_path, "sla-report")
        (leaver,) = report["leavers"]
        assert leaver["user"] == "bob@x.io"
        assert leaver["cleared_at"] is None
        assert leaver["pending_targets"] == ["downstream"]
        states = {t["target"]: t for t in leaver["targets"]}
        assert states["sandbox"]["state"] == "cleared"
        assert states["sandbox"]["cleared_at"] is not None
        assert states["downstream"]["state"] == "pending"
        assert "downstream" in states["downstream"]["last_error"]

        status = await _json(config_path, "status")
        assert status["leavers"]["not_cleared"] == 1
        assert status["leavers"]["pending_by_target"] == {"downstream": 1, "sandbox": 0}

        code, out, _ = await _cli(config_path, "status")
        assert code == 0, out
        assert "not cleared on: downstream (1)" in out

        explained = await _json(config_path, "explain", "--user", "bob@x.io", code=1)
        assert [u["target"] for u in explained["unreadable"]] == ["downstream"]
        assert explained["leaver"]["pending_targets"] == ["downstream"]
        principals = {p["target"]: p for p in explained["principals"]}
        assert principals["downstream"]["readable"] is False
        assert principals["sandbox"] == {
            "target": "sandbox",
            "exists": True,
            "enabled": False,
            "readable": True,
        }

        # Ann's grant taken away by hand: reconcile still plans the ledger, and says which
        # target it could not read.
        _revoke_by_hand(config_path, "ann@x.io")
        want = {"action": "grant", "target": "sandbox", "user": "ann@x.io", "role": "developer"}
        for scope in ((), ("--user", "ann@x.io")):
            plan = await _json(config_path, "reconcile", "--dry-run", *scope, code=1)
            assert [u["target"] for u in plan["unreadable"]] == ["downstream"]
            assert plan["summary"]["unreadable"] == 1
            ops = [{k: op[k] for k in want} for op in plan["operations"]]
            assert want in ops
            assert all(op["target"] == "sandbox" for op in plan["operations"])
        code, out, err = await _cli(config_path, "reconcile", "--dry-run")
        assert code == 1
        assert "unreadable targets (1), left out of the plan:" in out
        assert "target downstream could not be read" in err
        assert "Traceback" not in err
        # Applied: the ledger is repaired all the same, and the exit code still says 1.
        applied = await _json(config_path, "reconcile", code=1)
        assert [op["outcome"] for op in applied["operations"]] == ["applied"]
        assert ledger("ann@x.io") == ({"developer"}, True)
    finally:
        await stop_service(service)
    assert "Traceback" not in "".join(service.log)

"""Readiness never hangs, and the PostgreSQL timeouts are configuration like any other."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, load_settings
from jmlsync.ops.http import TargetPings, ops_routes
from jmlsync.ops.metrics import Metrics
from jmlsync.ports import Target
from jmlsync.scim.auth import BearerAuth
from jmlsync.targets.ledger import LedgerTarget
from jmlsync.targets.scim import ScimTarget, ScimTargetSettings
from tests.conftest import TOKENS, write_config


@pytest.mark.timeout(10)
async def test_a_check_that_hangs_answers_not_ready_within_the_check_timeout(
    tmp_path: Path,
) -> None:
    async def frozen() -> str | None:
        await asyncio.Event().wait()  # a database that never answers
        return None

    async def fine() -> str | None:
        return None

    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    tokens.chmod(0o600)
    app = web.Application()
    checks = {"store": frozen, "scheduler": fine}
    # The reasons are shown to a caller with a token.
    allows = BearerAuth(tokens).allows
    routes = ops_routes(Metrics(), None, checks, may_see_reasons=allows, check_timeout=0.2)  # type: ignore[arg-type]
    app.add_routes(routes)
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        reply = await client.get("/readyz", headers={"Authorization": f"Bearer {TOKENS[0]}"})
        body: dict[str, Any] = await reply.json()
    assert time.monotonic() - started < 2
    assert reply.status == 503
    assert body["problems"] == {"store": "no answer within 0.2s"}


async def _down_scim(name: str, port: int, tmp_path: Path) -> ScimTarget:
    token = tmp_path / f"{name}-token"
    token.write_text("d" * 40 + "\n")
    settings = ScimTargetSettings(
        kind="scim", url=f"http://127.0.0.1:{port}/scim/v2", token_file=token, timeout_seconds=30
    )
    return await ScimTarget.open(name, settings)


@pytest.mark.timeout(15)
async def test_a_down_target_is_reported_but_never_makes_the_service_unready(
    tmp_path: Path,
) -> None:
    async def fine() -> str | None:
        return None

    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS[0] + "\n")
    tokens.chmod(0o600)
    metrics = Metrics()
    with socket.socket() as closed, socket.socket() as silent:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections accepted by the kernel, never answered
        ledger = await LedgerTarget.open("sandbox", tmp_path / "ledger.db")
        refused = await _down_scim("refused", closed.getsockname()[1], tmp_path)
        frozen = await _down_scim("frozen", silent.getsockname()[1], tmp_path)
        targets: dict[str, Target] = {"sandbox": ledger, "refused": refused, "frozen": frozen}
        app = web.Application()
        checks = {"store": fine, "scheduler": fine}
        routes = ops_routes(
            metrics,
            None,  # type: ignore[arg-type]
            checks,
            targets=targets,
            may_see_reasons=BearerAuth(tokens).allows,
            check_timeout=0.5,
        )
        app.add_routes(routes)
        try:
            async with TestClient(TestServer(app)) as client:
                started = time.monotonic()
                reply = await client.get(
                    "/readyz", headers={"Authorization": f"Bearer {TOKENS[0]}"}
                )
                body: dict[str, Any] = await reply.json()
                took = time.monotonic() - started
                anonymous = await client.get("/readyz")
                hidden: dict[str, Any] = await anonymous.json()
        finally:
            for target in targets.values():
                await target.close()
    assert reply.status == 200, body
    assert took < 2, "a frozen target held /readyz past the check timeout"
    assert body["status"] == "ready"
    assert body["targets"]["sandbox"] == "ok"
    assert body["targets"]["frozen"] == "no answer within 0.5s"
    assert body["targets"]["refused"].startswith("scim target 'refused': GET /Users:")
    assert "Connect call failed" in body["targets"]["refused"]
    # Without a token, only which targets are down: the reasons name hosts and ports.
    assert anonymous.status == 200
    assert hidden == {
        "status": "ready",
        "checks": ["scheduler", "store"],
        "targets": {"frozen": "failed", "refused": "failed", "sandbox": "ok"},
    }
    up = {
        name: metrics.registry.get_sample_value("jmlsync_target_up", {"target": name})
        for name in targets
    }
    assert up == {"sandbox": 1.0, "refused": 0.0, "frozen": 0.0}


async def test_a_not_ready_answer_reports_the_targets_too(tmp_path: Path) -> None:
    async def broken() -> str | None:
        return "store unreachable: connection refused"

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = await _down_scim("downstream", closed.getsockname()[1], tmp_path)
        ledger = await LedgerTarget.open("sandbox", tmp_path / "ledger.db")
        app = web.Application()
        targets: dict[str, Target] = {"downstream": refused, "sandbox": ledger}
        app.add_routes(ops_routes(Metrics(), None, {"store": broken}, targets=targets))  # type: ignore[arg-type]
        try:
            async with TestClient(TestServer(app)) as client:
                reply = await client.get("/readyz")
                body: dict[str, Any] = await reply.json()
        finally:
            await refused.close()
            await ledger.close()
    assert reply.status == 503
    assert body == {
        "status": "not ready",
        "problems": {"store": "failed"},
        "targets": {"downstream": "failed", "sandbox": "ok"},
    }


class _HeldPing:
    """A target whose pings wait until released: only to hold a round of pings open."""

    name = "held"

    def __init__(self) -> None:
        self.pings = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def ping(self) -> None:
        self.pings += 1
        self.entered.set()
        await self.release.wait()


async def test_requests_arriving_together_share_one_round_of_pings() -> None:
    held = _HeldPing()
    pings = TargetPings({"held": held}, Metrics(), timeout=5)  # type: ignore[dict-item]
    first = asyncio.create_task(pings.run())
    await held.entered.wait()
    second = asyncio.create_task(pings.run())
    first.cancel()  # a caller going away does not cancel the round the other waits for
    held.release.set()
    assert await second == {"held": None}
    assert held.pings == 1
    assert await pings.run() == {"held": None}
    assert held.pings == 2  # a round that ended is not reused


def test_postgres_timeouts_are_validated(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    timeouts = (
        settings.store.connect_timeout_seconds,
        settings.store.command_timeout_seconds,
        settings.store.acquire_timeout_seconds,
    )
    assert timeouts == (5.0, 15.0, 5.0)
    bad = write_config(tmp_path, extra="command_timeout_seconds = 0")
    with pytest.raises(ConfigError, match=r"store.command_timeout_seconds: .*greater than 0"):
        load_settings(bad)


def test_postgres_timeouts_are_in_the_config_schema() -> None:
    result = CliRunner().invoke(main, ["config", "schema"])
    assert result.exit_code == 0
    store = json.loads(result.stdout)["$defs"]["StoreSettings"]["properties"]
    for key in ("connect_timeout_seconds", "command_timeout_seconds", "acquire_timeout_seconds"):
        assert store[key]["exclusiveMinimum"] == 0, store[key]


@pytest.mark.parametrize("command", [["queue", "list"], ["status"], ["audit", "verify"]])
def test_cli_commands_on_an_unreachable_store_print_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path, extra="connect_timeout_seconds = 2")
    config.write_text(
        config.read_text().replace(
            'url = "sqlite:///state/jmlsync.db"',
            f'url = "postgresql://postgres@127.0.0.1:{port}/x"',
        )
    )
    result = CliRunner().invoke(main, [*command, "--config", str(config)])
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("jmlsync: the store is"), line
    assert "PostgreSQL" in line, line

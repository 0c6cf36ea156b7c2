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
from jmlsync.ops.http import ops_routes
from jmlsync.ops.metrics import Metrics
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.keys import AUTH
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
    app[AUTH] = BearerAuth(tokens)  # the reasons are shown to a caller with a token
    checks = {"store": frozen, "scheduler": fine}
    app.add_routes(ops_routes(Metrics(), None, checks, check_timeout=0.2))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        started = time.monotonic()
        reply = await client.get("/readyz", headers={"Authorization": f"Bearer {TOKENS[0]}"})
        body: dict[str, Any] = await reply.json()
    assert time.monotonic() - started < 2
    assert reply.status == 503
    assert body["problems"] == {"store": "no answer within 0.2s"}


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

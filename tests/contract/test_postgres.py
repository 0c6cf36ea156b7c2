"""The PostgreSQL store: the service on it, the pipeline, and copying a SQLite store onto it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

import jmlsync.store
from jmlsync.cli import main
from jmlsync.config import load_settings
from jmlsync.domain.timebound import AccessRequest
from jmlsync.domain.timebound_records import Step
from jmlsync.runtime import Runtime
from jmlsync.service import RUNTIME, build_app
from jmlsync.store.access import SqlAccess
from jmlsync.store.directory import SqlStore
from tests.conftest import BASE_PATH, TOKENS, ScimClient, write_config
from tests.postgres import fresh_database
from tests.scim_samples import PATCH_OP
from tests.service.test_pipeline import PIPELINE

pytestmark = pytest.mark.postgresql


def _on_postgres(config: Path, url: str) -> Path:
    text = config.read_text().replace('url = "sqlite:///state/jmlsync.db"', f'url = "{url}"')
    config.write_text(text)
    return config


@pytest.fixture
async def pg_service(tmp_path: Path) -> AsyncIterator[tuple[ScimClient, Runtime]]:
    async with fresh_database() as url:
        config = _on_postgres(write_config(tmp_path, extra=PIPELINE), url)
        app = await build_app(load_settings(config))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        headers = {"Authorization": f"Bearer {TOKENS[0]}"}
        try:
            async with aiohttp.ClientSession(headers=headers) as session:
                yield ScimClient(session, str(server.make_url(BASE_PATH))), app[RUNTIME]
        finally:
            await server.close()


async def test_scim_on_postgres(pg_service: tuple[ScimClient, Runtime]) -> None:
    scim, runtime = pg_service
    ann = await scim.create_user("Ann@x.io", emails=[{"type": "work", "value": "ann@x.io"}])
    assert (await scim.post("/Users", {"userName": "ann@X.IO"})).status == 409
    users = [await scim.create_user(f"u{i}@x.io") for i in range(20)]
    group = await scim.create_group("engineering", members=[ann["id"]])

    async def add(user_id: str) -> int:
        body = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
        }
        return (await scim.patch(f"/Groups/{group['id']}", body)).status

    assert set(await asyncio.gather(*(add(u["id"]) for u in users))) == {204}
    found = await scim.get(
        "/Users", params={"filter": 'emails[type eq "work" and value co "@x.io"]'}
    )
    assert [r["userName"] for r in found.body["Resources"]] == ["Ann@x.io"]
    members = await scim.get("/Groups", params={"filter": f'members.value eq "{ann["id"]}"'})
    assert members.body["totalResults"] == 1
    got = await scim.get(f"/Groups/{group['id']}")
    assert len(got.body["members"]) == 21
    sorted_page = await scim.get("/Users", params={"sortBy": "userName", "count": "3"})
    assert [r["userName"] for r in sorted_page.body["Resources"]] == [
        "Ann@x.io",
        "u0@x.io",
        "u10@x.io",  # code-point order, as on SQLite
    ]
    await runtime.pipeline.wait_drained()
    ledger = runtime.targets["sandbox"]
    assert await ledger.grants_of("u7@x.io") == {"developer"}
    off = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
    }
    assert (await scim.patch(f"/Users/{ann['id']}", off)).status == 200
    await runtime.pipeline.wait_drained()
    assert await ledger.grants_of("Ann@x.io") == frozenset()
    assert (await scim.delete(f"/Users/{users[0]['id']}")).status == 204
    got = await scim.get(f"/Groups/{group['id']}")
    assert len(got.body["members"]) == 20


def _newest_migration() -> int:
    folder = Path(jmlsync.store.__file__).parent / "migrations"
    return max(int(path.name.split("_", 1)[0]) for path in folder.glob("*.sql"))


async def _time_bound_history(store: SqlStore) -> None:
    """A time-bound request and a personal token, for the copy to carry over."""
    access = SqlAccess(store.db)
    now = datetime.now(UTC)
    draft = AccessRequest(
        0, "bea@x.io", "e", "sandbox", "admin", timedelta(hours=1), "r", "pending", now
    )
    await access.record([Step(None, draft, "request", "test")], now)
    await access.add_token(
        "bea@x.io", "access", "0" * 64, now=now, expires_at=now + timedelta(days=1), actor="t"
    )


async def test_copy_a_sqlite_store_onto_postgres(tmp_path: Path) -> None:
    sqlite_config = write_config(tmp_path, extra=PIPELINE)
    app = await build_app(load_settings(sqlite_config))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TOKENS[0]}"}
        ) as session:
            scim = ScimClient(session, str(server.make_url(BASE_PATH)))
            bea = await scim.create_user("bea@x.io", active=True)
            await scim.create_group("engineering", members=[bea["id"]])
            await app[RUNTIME].pipeline.wait_drained()
            off = {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": False}}],
            }
            await scim.patch(f"/Users/{bea['id']}", off)
            await app[RUNTIME].pipeline.wait_drained()
            await app[RUNTIME].alerts.alert("guard_tripped", "held", key="cli")
            await _time_bound_history(app[RUNTIME].store)
    finally:
        await server.close()
    source = f"sqlite:///{tmp_path / 'state' / 'jmlsync.db'}"

    def cli(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stdout, result.stderr

    async with fresh_database() as url:
        code, out, err = await asyncio.to_thread(cli, "db", "copy", "--from", source, "--to", url)
        assert code == 0, err
        assert re.search(r"^users +1$", out, re.MULTILINE), out
        assert re.search(r"^leaver_targets +1$", out, re.MULTILINE), out
        code, _, err = await asyncio.to_thread(cli, "db", "copy", "--from", source, "--to", url)
        assert code == 1
        assert "empty store" in err
        (tmp_path / "pg").mkdir()
        pg_config = _on_postgres(write_config(tmp_path / "pg"), url)
        code, out, _ = await asyncio.to_thread(cli, "audit", "verify", "--config", str(pg_config))
        assert code == 0, out
        assert "intact" in out
        code, out, _ = await asyncio.to_thread(cli, "db", "upgrade", "--config", str(pg_config))
        assert (code, out.strip()) == (0, f"store at schema version {_newest_migration()}")
        code, out, err = await asyncio.to_thread(
            cli, "access", "show", "1", "--format", "json", "--config", str(pg_config)
        )
        assert code == 0, err
        copied = json.loads(out)
        assert (copied["user"], copied["state"]) == ("bea@x.io", "pending")
        assert [row["action"] for row in copied["history"]] == ["request"]
        code, out, _ = await asyncio.to_thread(
            cli, "token", "list", "--format", "json", "--config", str(pg_config)
        )
        assert [t["user"] for t in json.loads(out) if t["kind"] == "personal"] == ["bea@x.io"]
        code, out, _ = await asyncio.to_thread(
            cli, "alerts", "list", "--format", "json", "--config", str(pg_config)
        )
        assert [(a["id"], a["kind"]) for a in json.loads(out)] == [(1, "guard_tripped")]
        code, out, _ = await asyncio.to_thread(
            cli, "sla-report", "--format", "json", "--config", str(pg_config)
        )
        assert '"user": "bea@x.io"' in out

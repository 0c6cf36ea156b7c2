"""The PostgreSQL store: the service on it, the pipeline, and copying a SQLite store onto it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import load_settings
from jmlsync.service import RUNTIME, Runtime, build_app
from tests.conftest import BASE_PATH, TOKENS, ScimClient, write_config
from tests.postgres import fresh_database
from tests.test_pipeline import PIPELINE

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


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
    finally:
        await server.close()
    source = f"sqlite:///{tmp_path / 'state' / 'jmlsync.db'}"

    def cli(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stdout, result.stderr

    async with fresh_database() as url:
        code, out, err = await asyncio.to_thread(cli, "db", "copy", "--from", source, "--to", url)
        assert code == 0, err
        assert "users              1" in out
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
        assert (code, out.strip()) == (0, "store at schema version 11")
        code, out, _ = await asyncio.to_thread(
            cli, "alerts", "list", "--format", "json", "--config", str(pg_config)
        )
        assert [(a["id"], a["kind"]) for a in json.loads(out)] == [(1, "guard_tripped")]
        code, out, _ = await asyncio.to_thread(
            cli, "sla-report", "--format", "json", "--config", str(pg_config)
        )
        assert '"user": "bea@x.io"' in out

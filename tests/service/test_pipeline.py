"""The provisioning pipeline in-process: SCIM writes reach the ledger through the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from jmlsync.config import load_settings
from jmlsync.runtime import Runtime
from jmlsync.service import RUNTIME, build_app
from jmlsync.targets.ledger import LedgerTarget
from tests.conftest import BASE_PATH, TOKENS, ScimClient, write_config
from tests.scim_samples import PATCH_OP

PIPELINE = """
[pipeline]
workers = 2
poll_seconds = 0.05
retry_base_seconds = 0
call_initial_wait_seconds = 0
call_max_wait_seconds = 0

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


@dataclass
class Service:
    scim: ScimClient
    runtime: Runtime

    @property
    def ledger(self) -> LedgerTarget:
        target = self.runtime.targets["sandbox"]
        assert isinstance(target, LedgerTarget)
        return target

    async def settle(self) -> None:
        await self.runtime.pipeline.wait_drained()

    async def leavers(self) -> list[dict[str, Any]]:
        rows = await self.runtime.store.db.reader.execute_fetchall(
            "SELECT * FROM leavers ORDER BY id"
        )
        return [dict(row) for row in rows]


@pytest.fixture
async def service(store_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    config = write_config(tmp_path, extra=PIPELINE, store_url=store_url)
    app = await build_app(load_settings(config))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            yield Service(ScimClient(session, str(server.make_url(BASE_PATH))), app[RUNTIME])
    finally:
        await server.close()


def patch(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


async def test_joiner_mover_leaver_through_the_queue(service: Service) -> None:
    scim = service.scim
    alice = await scim.create_user("alice@x.io", active=True, displayName="Alice")
    eng = await scim.create_group("engineering", members=[alice["id"]])
    admins = await scim.create_group("cloud-admins")
    await service.settle()
    assert await service.ledger.grants_of("alice@x.io") == {"developer"}

    await scim.patch(
        f"/Groups/{admins['id']}",
        patch({"op": "add", "path": "members", "value": [{"value": alice["id"]}]}),
    )
    await scim.patch(
        f"/Groups/{eng['id']}",
        patch({"op": "remove", "path": f'members[value eq "{alice["id"]}"]'}),
    )
    await service.settle()
    assert await service.ledger.grants_of("alice@x.io") == {"admin"}

    reply = await scim.patch(
        f"/Users/{alice['id']}", patch({"op": "Replace", "path": "active", "value": "False"})
    )
    assert reply.status == 200
    await service.settle()
    assert await service.ledger.grants_of("alice@x.io") == frozenset()
    principal = await service.ledger.principal("alice@x.io")
    assert principal is not None
    assert principal.enabled is False
    (record,) = await service.leavers()
    assert record["user_name"] == "alice@x.io"
    assert record["left_at"] <= record["cleared_at"]
    assert record["cancelled_at"] is None


async def test_reactivation_before_clearing_cancels_the_leaver(service: Service) -> None:
    scim = service.scim
    service.runtime.pipeline.stop()
    bob = await scim.create_user("bob@x.io", active=True)
    await scim.patch(f"/Users/{bob['id']}", patch({"op": "replace", "value": {"active": False}}))
    await scim.patch(f"/Users/{bob['id']}", patch({"op": "replace", "value": {"active": True}}))
    (record,) = await service.leavers()
    assert record["cancelled_at"] is not None
    assert record["cleared_at"] is None


async def test_deleted_user_loses_access_and_group_rename_moves_members(service: Service) -> None:
    scim = service.scim
    carol = await scim.create_user("carol@x.io")
    dave = await scim.create_user("dave@x.io")
    group = await scim.create_group("engineering", members=[carol["id"], dave["id"]])
    await service.settle()
    assert await service.ledger.grants_of("dave@x.io") == {"developer"}
    await scim.patch(
        f"/Groups/{group['id']}", patch({"op": "replace", "value": {"displayName": "cloud-admins"}})
    )
    await service.settle()
    assert await service.ledger.grants_of("dave@x.io") == {"admin"}
    assert (await scim.delete(f"/Users/{carol['id']}")).status == 204
    await service.settle()
    assert await service.ledger.grants_of("carol@x.io") == frozenset()
    leavers = await service.leavers()
    assert [r["user_name"] for r in leavers] == ["carol@x.io"]
    assert leavers[0]["cleared_at"] is not None


async def test_changes_are_audited_and_the_chain_verifies(service: Service) -> None:
    from jmlsync.audit import verify_chain

    erin = await service.scim.create_user("erin@x.io")
    await service.scim.create_group("engineering", members=[erin["id"]])
    await service.settle()
    rows = [row async for row in service.runtime.queue.audit_rows()]
    actions = [(r["actor"], r["action"], r["outcome"]) for r in rows]
    # The actor of a SCIM change names the credential: TOKENS[0] is the file's "default".
    assert ("scim:default", "user.create", "committed") in actions
    assert ("scim:default", "group.create", "committed") in actions
    assert ("pipeline", "grant", "applied") in actions
    count, broken = verify_chain(rows)
    assert broken is None
    assert count == len(rows)


async def test_a_change_of_rules_replans_everyone_at_start(store_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=PIPELINE, store_url=store_url)

    async def run_once() -> frozenset[str]:
        app = await build_app(load_settings(config))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        runtime = app[RUNTIME]
        try:
            if not await runtime.store.list_groups():
                headers = {"Authorization": f"Bearer {TOKENS[0]}"}
                async with aiohttp.ClientSession(headers=headers) as session:
                    scim = ScimClient(session, str(server.make_url(BASE_PATH)))
                    gus = await scim.create_user("gus@x.io")
                    await scim.create_group("engineering", members=[gus["id"]])
            await runtime.pipeline.wait_drained()
            ledger = runtime.targets["sandbox"]
            return await ledger.grants_of("gus@x.io")
        finally:
            await server.close()

    assert await run_once() == {"developer"}
    config.write_text(config.read_text().replace('role = "developer"', 'role = "engineer"'))
    assert await run_once() == {"engineer"}

"""kill -9 in the middle of a burst: every acknowledged change survives and reaches the target
exactly once."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import TOKENS, kill_service, start_service, stop_service, write_config
from tests.scim_samples import PATCH_OP

pytestmark = pytest.mark.process

PIPELINE = """
[pipeline]
workers = 4
poll_seconds = 0.05

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]
"""
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USERS = 150
KILL_AFTER = 60


def ledger_state(path: Path) -> tuple[set[str], dict[tuple[str, str], int]]:
    """Users holding `developer`, and how many times each grant was written."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        holders = {r[0] for r in conn.execute("SELECT user FROM grants WHERE role = 'developer'")}
        writes = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                "SELECT user, role, count(*) FROM writes WHERE op = 'grant' GROUP BY user, role"
            )
        }
    return holders, writes


@pytest.mark.timeout(120)
async def test_sigkill_mid_burst_loses_nothing_and_duplicates_nothing(
    store_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, extra=PIPELINE, store_url=store_url)
    service = await start_service(config)
    headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
    created: set[str] = set()
    joined: set[str] = set()
    acknowledged = asyncio.Event()

    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(
            f"{service.url}/Groups", json={"schemas": [GROUP], "displayName": "engineering"}
        ) as reply:
            assert reply.status == 201
            group_id = (await reply.json())["id"]

        async def one(index: int) -> None:
            name = f"user{index}@x.io"
            try:
                async with http.post(
                    f"{service.url}/Users", json={"schemas": [USER], "userName": name}
                ) as reply:
                    if reply.status != 201:
                        return
                    user_id = (await reply.json())["id"]
                    created.add(name)
                body = {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
                }
                async with http.patch(f"{service.url}/Groups/{group_id}", json=body) as reply:
                    if reply.status == 204:
                        joined.add(name)
                        if len(joined) >= KILL_AFTER:
                            acknowledged.set()
            except aiohttp.ClientError:
                return  # the process died under this request: not acknowledged

        async def burst() -> None:
            limit = asyncio.Semaphore(8)

            async def limited(index: int) -> None:
                async with limit:
                    await one(index)

            await asyncio.gather(*(limited(i) for i in range(USERS)))

        running = asyncio.create_task(burst())
        await acknowledged.wait()
        killed = asyncio.create_task(kill_service(service))
        await running
        code = await killed
        assert code == -signal.SIGKILL, "".join(service.log[-40:])

    assert KILL_AFTER <= len(joined) < USERS, "the kill must land mid-burst"
    restarted = await start_service(config)
    try:
        ledger = tmp_path / "ledger.db"
        async with asyncio.timeout(60):
            # Another process converges: there is no event to await across processes.
            while not joined <= ledger_state(ledger)[0]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"{restarted.url}/Users", params={"count": "1000"}) as reply:
                stored = {r["userName"] for r in (await reply.json())["Resources"]}
            async with http.get(f"{restarted.url}/Groups/{group_id}") as reply:
                member_ids = {m["value"] for m in (await reply.json())["members"]}
            async with http.get(
                f"{restarted.url}/Users", params={"count": "1000", "attributes": "userName"}
            ) as reply:
                id_of = {r["userName"]: r["id"] for r in (await reply.json())["Resources"]}
    finally:
        assert await stop_service(restarted) == 0

    assert created <= stored, "an acknowledged user was lost"
    assert {id_of[name] for name in joined} <= member_ids, "an acknowledged membership was lost"
    holders, writes = ledger_state(ledger)
    members = {name for name, uid in id_of.items() if uid in member_ids}
    assert holders == members, "the ledger must match the group exactly"
    assert set(writes.values()) == {1}, f"duplicate grants: {writes}"

"""Two `jmlsync serve` replicas on one PostgreSQL database: one dies by SIGKILL mid-burst; the
survivor finishes every acknowledged change with no duplicate grant, and one replica at a time
runs the scheduled jobs."""

from __future__ import annotations

import asyncio
import signal
from itertools import cycle, pairwise
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.conftest import TOKENS, kill_service, start_service, stop_service, write_config
from tests.postgres import fresh_database
from tests.process.test_crash import ledger_state
from tests.scim_samples import PATCH_OP

pytestmark = [pytest.mark.process, pytest.mark.postgresql]

SETTINGS = """
[pipeline]
workers = 4
poll_seconds = 0.1
lease_seconds = 2

[sla]
verify_every_seconds = 0.2

[reconcile]
schedule = ""

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]
"""
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USERS = 120
KILL_AFTER = 40


@pytest.mark.timeout(180)
async def test_a_replica_dies_mid_burst_and_the_other_finishes(tmp_path: Path) -> None:
    async with fresh_database() as url:
        config = write_config(tmp_path, extra=SETTINGS)
        config.write_text(
            config.read_text().replace('url = "sqlite:///state/jmlsync.db"', f'url = "{url}"')
        )
        first, second = await start_service(config), await start_service(config)
        headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
        joined: set[str] = set()
        enough = asyncio.Event()
        async with aiohttp.ClientSession(headers=headers) as http:
            body = {"schemas": [GROUP], "displayName": "engineering"}
            async with http.post(f"{first.url}/Groups", json=body) as reply:
                group_id = (await reply.json())["id"]
            replicas = cycle([first.url, second.url])

            async def one(index: int, base: str) -> None:
                name = f"user{index}@x.io"
                try:
                    async with http.post(
                        f"{base}/Users", json={"schemas": [USER], "userName": name}
                    ) as reply:
                        if reply.status != 201:
                            return
                        user_id = (await reply.json())["id"]
                    add = {
                        "schemas": [PATCH_OP],
                        "Operations": [
                            {"op": "add", "path": "members", "value": [{"value": user_id}]}
                        ],
                    }
                    async with http.patch(f"{base}/Groups/{group_id}", json=add) as reply:
                        if reply.status == 204:
                            joined.add(name)
                            if len(joined) >= KILL_AFTER:
                                enough.set()
                except aiohttp.ClientError:
                    return  # sent to the replica that died: not acknowledged

            limit = asyncio.Semaphore(8)

            async def limited(index: int, base: str) -> None:
                async with limit:
                    await one(index, base)

            async def all_of_them() -> None:
                await asyncio.gather(*(limited(i, next(replicas)) for i in range(USERS)))

            burst = asyncio.create_task(all_of_them())
            await enough.wait()
            # Kill the leader, so the test also proves that the other takes over.
            leader_pid = await _leader_pid(url)
            doomed, survivor = (
                (first, second) if first.process.pid == leader_pid else (second, first)
            )
            killed = asyncio.create_task(kill_service(doomed))
            await burst
            code = await killed
            assert code == -signal.SIGKILL, "".join(doomed.log[-40:])
        assert KILL_AFTER <= len(joined) < USERS
        try:
            async with asyncio.timeout(90):
                while len(await _runners(url)) < 2:  # noqa: ASYNC110 - another process
                    await asyncio.sleep(0.1)
                # The survivor is another process: poll the shared ledger.
                while not joined <= ledger_state(tmp_path / "ledger.db")[0]:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            assert await stop_service(survivor) == 0
        holders, writes = ledger_state(tmp_path / "ledger.db")
        assert set(writes.values()) == {1}, f"duplicate grants: {writes}"
        conn = await asyncpg.connect(url)
        try:
            member_count = await conn.fetchval(
                "SELECT count(*) FROM memberships WHERE group_id = $1", group_id
            )
            runs = await conn.fetch(
                "SELECT runner, started_at, finished_at FROM runs ORDER BY started_at"
            )
        finally:
            await conn.close()
        assert holders <= {f"user{i}@x.io" for i in range(USERS)}
        assert len(holders) == member_count
        assert runs, "the scheduler never ran"
        _assert_one_runner_at_a_time([(r[0], r[1], r[2]) for r in runs])


async def _runners(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT DISTINCT runner FROM runs")
    finally:
        await conn.close()
    return [row[0] for row in rows]


async def _leader_pid(url: str) -> int:
    """The process that ran the latest scheduled job (its runner is host:pid)."""
    async with asyncio.timeout(30):
        while True:
            conn = await asyncpg.connect(url)
            try:
                runner = await conn.fetchval("SELECT runner FROM runs ORDER BY id DESC LIMIT 1")
            finally:
                await conn.close()
            if runner:
                return int(runner.rsplit(":", 1)[1])
            await asyncio.sleep(0.1)


def _assert_one_runner_at_a_time(runs: list[tuple[str, str, str | None]]) -> None:
    """No run of one replica overlaps a run of another."""
    for (runner_a, _, end_a), (runner_b, start_b, _) in pairwise(runs):
        if runner_a != runner_b:
            assert end_a is None or end_a <= start_b, (runner_a, runner_b)
    runners = [runner for runner, _, _ in runs]
    switches = sum(1 for a, b in pairwise(runners) if a != b)
    assert switches == 1, f"leadership changed hands {switches} times: {runners}"


GROUPS = 8
PATCHES = 160
MEMBERS_PER_PATCH = 5
#: Every group mapped: each PATCH also queues jobs, which the workers of both replicas apply.
TEAM_RULES = "".join(
    f'\n[[rules]]\ngroup = "team-{g}"\ngrants = [{{ target = "sandbox", role = "r{g}" }}]\n'
    for g in range(GROUPS)
)


@pytest.mark.timeout(180)
async def test_replicas_writing_the_same_groups_at_once_answer_every_write(
    tmp_path: Path,
) -> None:
    """Member PATCHes to the same groups through both replicas at once: each replica's commit
    batch locks rows of several groups and the audit chain's head, so two batches taking them
    in different orders would deadlock and one write would answer 500. Every write answers
    204 and every member is stored, read back through the other replica."""
    async with fresh_database() as url:
        config = write_config(tmp_path, extra=SETTINGS + TEAM_RULES)
        config.write_text(
            config.read_text().replace('url = "sqlite:///state/jmlsync.db"', f'url = "{url}"')
        )
        first, second = await start_service(config), await start_service(config)
        headers = {"Authorization": f"Bearer {TOKENS[0]}", "Content-Type": "application/scim+json"}
        try:
            async with aiohttp.ClientSession(headers=headers) as http:
                group_ids: list[str] = []
                for g in range(GROUPS):
                    body = {"schemas": [GROUP], "displayName": f"team-{g}"}
                    async with http.post(f"{first.url}/Groups", json=body) as reply:
                        assert reply.status == 201
                        group_ids.append((await reply.json())["id"])
                user_ids: list[str] = []
                for u in range(PATCHES * MEMBERS_PER_PATCH):
                    body = {"schemas": [USER], "userName": f"member{u}@x.io"}
                    async with http.post(f"{second.url}/Users", json=body) as reply:
                        assert reply.status == 201
                        user_ids.append((await reply.json())["id"])
                replicas = cycle([first.url, second.url])
                limit = asyncio.Semaphore(16)
                answers: list[int] = []

                async def add(index: int, base: str) -> None:
                    chunk = user_ids[index * MEMBERS_PER_PATCH : (index + 1) * MEMBERS_PER_PATCH]
                    patch = {
                        "schemas": [PATCH_OP],
                        "Operations": [
                            {"op": "add", "path": "members", "value": [{"value": u} for u in chunk]}
                        ],
                    }
                    async with (
                        limit,
                        http.patch(
                            f"{base}/Groups/{group_ids[index * GROUPS // PATCHES]}", json=patch
                        ) as r,
                    ):
                        answers.append(r.status)

                await asyncio.gather(*(add(i, next(replicas)) for i in range(PATCHES)))
                assert answers.count(204) == PATCHES, sorted(set(answers))
                stored = 0
                for g, group_id in enumerate(group_ids):
                    base = second.url if g % 2 == 0 else first.url
                    async with http.get(f"{base}/Groups/{group_id}") as reply:
                        stored += len((await reply.json()).get("members", []))
                assert stored == PATCHES * MEMBERS_PER_PATCH
        finally:
            codes = [await stop_service(first), await stop_service(second)]
        assert codes == [0, 0]
        assert not any("deadlock" in line for line in first.log + second.log)

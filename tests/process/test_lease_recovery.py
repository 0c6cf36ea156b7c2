"""PostgreSQL: the leases of a replica that died are taken back at once (its session lock
is gone), not after the full lease; a live replica's leases are never touched."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from pathlib import Path

import pytest

from jmlsync.clock import now_utc
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.store import pipeline_sql
from jmlsync.store.database import WriteConn
from jmlsync.store.directory import SqlStore
from jmlsync.store.postgres import OwnerLock, PgDatabase
from jmlsync.store.queue import SqlQueue
from tests.conftest import start_service, stop_service, write_config
from tests.postgres import fresh_database
from tests.process.test_crash import ledger_state

pytestmark = pytest.mark.postgresql

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
LEASE = timedelta(seconds=30)
SETTINGS = """
[pipeline]
workers = 2
poll_seconds = 0.05
lease_seconds = 30

[reconcile]
schedule = ""

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]
"""


async def _lease_as(db: PgDatabase, owner_key: int) -> int:
    """Lease the one due job as a replica whose owner key is ``owner_key``; its id."""

    async def body(conn: WriteConn) -> int:
        job = await pipeline_sql.lease(conn, f"worker-{owner_key:08x}/0", now_utc(), LEASE)
        assert job is not None
        return job.id

    return await db.write(body)


async def _leased(queue: SqlQueue) -> list[str | None]:
    return [row.leased_until for row in await queue.rows()]


async def _join(store: SqlStore, name: str) -> None:
    user = await store.create("User", Change({"schemas": [USER], "userName": name}), now_utc())
    add = MemberOp("add", items=(Member(user.id),))
    doc = {"schemas": [GROUP], "displayName": "engineering"}
    await store.create("Group", Change(doc, (add,)), now_utc())


@pytest.mark.timeout(30)
async def test_leases_of_a_dead_owner_are_taken_back_and_a_live_owners_are_not() -> None:
    async with fresh_database() as url:
        store = await SqlStore.open_postgres(url)
        try:
            assert isinstance(store.db, PgDatabase)
            queue = SqlQueue(store.db)
            live_key = secrets.randbelow(2**31)
            lock: OwnerLock = await store.db.owner_lock(live_key)
            await queue.enqueue(["ann@x.io"], cause="test", now=now_utc())
            await _lease_as(store.db, live_key)
            assert await queue.take_back_orphans() == 0, "a live owner's lease was taken"
            assert await queue.recover() == 0
            assert (await _leased(queue))[0] is not None

            await lock.close()  # the process died: PostgreSQL ends its session and lock
            assert await queue.take_back_orphans() == 1
            assert await _leased(queue) == [None]
        finally:
            await store.close()


@pytest.mark.process
@pytest.mark.timeout(60)
async def test_a_running_replica_takes_over_a_dead_replicas_job_promptly(tmp_path: Path) -> None:
    async with fresh_database() as url:
        config = write_config(tmp_path, extra=SETTINGS)
        config.write_text(
            config.read_text().replace('url = "sqlite:///state/jmlsync.db"', f'url = "{url}"')
        )
        store = await SqlStore.open_postgres(url)
        try:
            assert isinstance(store.db, PgDatabase)
            dead_key = secrets.randbelow(2**31)
            doomed = await store.db.owner_lock(dead_key)
            await _join(store, "bob@x.io")
            await _lease_as(store.db, dead_key)  # replica A holds bob's job for 30 s
            survivor = await start_service(config)
            try:
                await doomed.close()  # replica A dies with the lease
                died = time.monotonic()
                ledger = tmp_path / "ledger.db"
                async with asyncio.timeout(20):
                    # Another process converges: there is no event to await across processes.
                    while "bob@x.io" not in ledger_state(ledger)[0]:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
                taken = time.monotonic() - died
            finally:
                assert await stop_service(survivor) == 0
        finally:
            await store.close()
        assert taken < LEASE.total_seconds() / 2, f"took {taken:.1f}s: the lease ran out"
        # At its start (if A died before the survivor's workers began) or by its heartbeat.
        assert "took back 1 lease(s)" in "".join(survivor.log)

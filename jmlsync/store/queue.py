"""The Queue port on SQL: leases, acks, retries and dead letters, leaver records, audit."""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from datetime import datetime, timedelta
from typing import Any, Literal

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import Job, QueueRow, QueueStats
from jmlsync.store import pipeline_sql
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.sql import audit as audit_sql
from jmlsync.store.sql import state as state_sql


class SqlQueue:
    """The provisioning queue and its companions, on the store's database."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    async def enqueue(
        self, user_names: Iterable[str], *, cause: str, now: datetime, leaver: bool = False
    ) -> int:
        async def body(conn: WriteConn) -> int:
            return await pipeline_sql.enqueue(conn, user_names, cause=cause, now=now, leaver=leaver)

        return await self.db.write(body, notify=True)

    async def enqueue_everyone(self, *, cause: str, now: datetime) -> int:
        async def body(conn: WriteConn) -> int:
            return await pipeline_sql.enqueue_everyone(conn, cause=cause, now=now)

        return await self.db.write(body, notify=True)

    async def lease(
        self, owner: str, now: datetime, lease_for: timedelta, *, include_leavers: bool = True
    ) -> Job | None:
        async def body(conn: WriteConn) -> Job | None:
            return await pipeline_sql.lease(
                conn, owner, now, lease_for, include_leavers=include_leavers
            )

        return await self.db.write(body)

    async def lease_batch(
        self,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        *,
        limit: int,
        lane: Literal["any", "leavers", "others"] = "any",
    ) -> list[Job]:
        async def body(conn: WriteConn) -> list[Job]:
            return await pipeline_sql.lease_batch(
                conn, owner, now, lease_for, limit=limit, lane=lane
            )

        return await self.db.write(body)

    async def ack_batch(self, jobs: Sequence[Job]) -> list[bool]:
        if not jobs:
            return []

        async def body(conn: WriteConn) -> list[bool]:
            return await pipeline_sql.ack_batch(conn, jobs)

        return await self.db.write(body, notify=True)

    async def leaver_events_since(self, since: datetime) -> int:
        return await pipeline_sql.leaver_events_since(self.db.reader, since)

    async def seen(self, jobs: Sequence[Job]) -> bool:
        return await pipeline_sql.seen(self.db.reader, jobs)

    async def ack(self, job: Job) -> bool:
        async def body(conn: WriteConn) -> bool:
            return await pipeline_sql.ack(conn, job)

        return await self.db.write(body, notify=True)

    async def fail(
        self,
        job: Job,
        error: str,
        now: datetime,
        *,
        retry_in: timedelta | None,
        pending_targets: Collection[str] | None = None,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        async def body(conn: WriteConn) -> bool:
            failed = await pipeline_sql.fail(
                conn, job, error, now, retry_in=retry_in, pending_targets=pending_targets
            )
            if also is not None:
                await also(conn)
            return failed

        return await self.db.write(body)

    async def release(self, job_ids: Collection[int]) -> None:
        if job_ids:

            async def body(conn: WriteConn) -> None:
                await pipeline_sql.release(conn, job_ids)

            await self.db.write(body, notify=True)

    async def renew(self, job_ids: Collection[int], owner: str, until: datetime) -> None:
        if job_ids:

            async def body(conn: WriteConn) -> None:
                await pipeline_sql.renew(conn, job_ids, owner, until)

            await self.db.write(body)

    async def recover(self) -> int:
        """Release the leases of a process that died: SQLite serves one process at a time,
        so every lease is; on PostgreSQL, those whose owner's session lock is gone."""
        if self.db.dialect.shared:
            return await self.take_back_orphans()

        async def body(conn: WriteConn) -> int:
            return await pipeline_sql.release_all(conn)

        return await self.db.write(body, notify=True)

    async def take_back_orphans(self) -> int:
        if not self.db.dialect.shared:
            return 0

        async def body(conn: WriteConn) -> int:
            return await pipeline_sql.release_orphans(conn, pipeline_sql.OWNER_LOCK)

        return await self.db.write(body, notify=True)

    async def rows(self, *, failed_only: bool = False) -> list[QueueRow]:
        return await pipeline_sql.queue_rows(self.db.reader, failed_only=failed_only)

    async def retry_failed(self, now: datetime, job_id: int | None = None) -> int:
        async def body(conn: WriteConn) -> int:
            return await pipeline_sql.retry_failed(conn, now, job_id)

        return await self.db.write(body, notify=True)

    async def depth(self) -> tuple[int, int]:
        stats = await pipeline_sql.queue_stats(self.db.reader)
        return stats.pending, stats.dead

    async def stats(self) -> QueueStats:
        return await pipeline_sql.queue_stats(self.db.reader)

    async def clear_leaver(self, user_name: str, now: datetime) -> list[str]:
        async def body(conn: WriteConn) -> list[str]:
            return await pipeline_sql.clear_leaver(conn, user_name, now)

        return await self.db.write(body)

    async def record_leaver_targets(
        self,
        user_name: str,
        outcomes: Mapping[str, str | None],
        every_target: Collection[str],
        now: datetime,
    ) -> list[str]:
        async def body(conn: WriteConn) -> list[str]:
            return await pipeline_sql.record_leaver_targets(
                conn, user_name, outcomes, every_target, now
            )

        return await self.db.write(body)

    async def audit(self, entry: AuditEntry) -> None:
        async def body(conn: WriteConn) -> None:
            await pipeline_sql.append_audit(conn, entry)

        await self.db.write(body)

    async def audit_rows(self, *, last: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Audit rows in ``seq`` order (only the ``last`` ones, if given)."""
        sql = audit_sql.AUDIT_ROWS
        params: list[int] = []
        if last is not None:
            sql = audit_sql.RECENT_AUDIT_ROWS
            params = [last]
        async with self.db.reader.execute(sql, params) as cursor:
            async for row in cursor:
                yield dict(row)

    async def audit_about(self, user_name: str, limit: int) -> list[dict[str, Any]]:
        subject = f"user {user_name}"
        prefix = f"{subject} ("
        rows = await self.db.reader.execute_fetchall(
            audit_sql.AUDIT_ABOUT, (subject, len(prefix), prefix, limit)
        )
        return [dict(zip(audit_sql.AUDIT_ABOUT_COLUMNS, row, strict=True)) for row in rows]

    async def audit_head(self) -> str | None:
        return await pipeline_sql.get_state(self.db.reader, pipeline_sql.AUDIT_HEAD)

    async def get_state(self, key: str) -> str | None:
        return await pipeline_sql.get_state(self.db.reader, key)

    async def set_state(self, key: str, value: str | None) -> None:
        async def body(conn: WriteConn) -> None:
            if value is None:
                await conn.execute(state_sql.FORGET_STATE, (key,))
            else:
                await pipeline_sql.set_state(conn, key, value)

        await self.db.write(body, notify=value is None)

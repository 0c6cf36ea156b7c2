"""Movers' revocations on SQLite or PostgreSQL: recorded in the transaction that forgets the
applied grant, read back later by leaver verification, and reported by `jmlsync sla-report`."""

from __future__ import annotations

from datetime import datetime

from jmlsync.domain.access import Grant
from jmlsync.domain.assurance import OpenMover
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.sla import MoverRevocation
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.sql import assurance as sql


def _when(value: object) -> datetime | None:
    return None if value is None else parse_timestamp(str(value))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _revocation(row: tuple[object, ...]) -> MoverRevocation:
    _, user, target, role, requested, revoked, verified, breached, cause, actor = row
    return MoverRevocation(
        str(user),
        str(target),
        str(role),
        parse_timestamp(str(requested)),
        parse_timestamp(str(revoked)),
        _when(verified),
        _when(breached),
        _text(cause),
        _text(actor),
    )


async def insert(
    conn: WriteConn, grant: Grant, requested_at: str, revoked_at: datetime, actor: str | None
) -> None:
    """Record one mover's revocation (inside the caller's transaction)."""
    await conn.execute(
        sql.INSERT_MOVER,
        (
            grant.user,
            grant.target,
            grant.role,
            requested_at,
            format_timestamp(revoked_at),
            actor,
        ),
    )


class SqlMovers:
    """The mover_revocations table: record, read back, report."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    async def record(
        self,
        grant: Grant,
        requested_at: str,
        revoked_at: datetime,
        actor: str | None = None,
    ) -> None:
        """Record a revocation on its own (the pipeline records it with the revocation)."""

        async def body(conn: WriteConn) -> None:
            await insert(conn, grant, requested_at, revoked_at, actor)

        await self.db.write(body)

    async def unverified(self) -> list[OpenMover]:
        """Revocations not read back as gone yet (breached ones too: they are read back
        until the role is gone), oldest first."""
        rows = await self.db.reader.execute_fetchall(sql.UNVERIFIED_MOVERS)
        return [OpenMover(int(row[0]), _revocation(tuple(row))) for row in rows]

    async def mark_verified(self, mover_id: int, now: datetime) -> None:
        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.MARK_MOVER_VERIFIED,
                (format_timestamp(now), mover_id),
            )

        await self.db.write(body)

    async def mark_breached(self, mover_id: int, now: datetime, cause: str) -> bool:
        """Record the breach and its cause; True the first time only (alerted once)."""

        async def body(conn: WriteConn) -> bool:
            async with conn.execute(
                sql.MARK_MOVER_BREACHED,
                (format_timestamp(now), cause, mover_id),
            ) as cursor:
                return bool(cursor.rowcount > 0)

        return await self.db.write(body)

    async def in_window(self, since: datetime, until: datetime) -> list[MoverRevocation]:
        """The revocations requested in [since, until)."""
        rows = await self.db.reader.execute_fetchall(
            sql.MOVERS_IN_WINDOW,
            (format_timestamp(since), format_timestamp(until)),
        )
        return [_revocation(tuple(row)) for row in rows]

    async def counts(self) -> dict[str, int]:
        """For `jmlsync status`: revocations not verified yet, and open breaches (breached
        and the role not yet read back as gone)."""
        async with self.db.reader.execute(sql.MOVER_COUNTS) as cursor:
            row = await cursor.fetchone()
        return {
            "not_verified": int(row[0]) if row else 0,
            "sla_breaches": int(row[1]) if row else 0,
        }

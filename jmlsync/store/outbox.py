"""The alert outbox on SQLite or PostgreSQL: alerts as rows, the de-duplication window, and
leased delivery.

:func:`add_alert` takes the connection of the caller's transaction, so an alert can commit with
the event that causes it (a dead letter, a breach) or in a transaction of its own
(:meth:`SqlOutbox.add`). A deliverer *claims* a due row for a short lease before it posts it;
a second deliverer (another replica, or a CLI command) skips leased rows, so in normal
operation no row is posted twice. A row whose deliverer died is free again when its lease ends.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.sql import outbox as sql

PENDING, DELIVERED, SUPPRESSED, UNROUTED = "pending", "delivered", "suppressed", "unrouted"


@dataclass(frozen=True)
class AlertRow:
    """One alert as stored (``fields`` parsed from its JSON)."""

    id: int
    kind: str
    key: str
    text: str
    fields: dict[str, Any]
    state: str
    created_at: str
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_error: str | None


def _row(row: Any) -> AlertRow:
    return AlertRow(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        json.loads(row[4]),
        row[5],
        row[6],
        int(row[7]),
        row[8],
        row[9],
        row[10],
    )


async def _opens_window(
    conn: WriteConn, kind: str, key: str, now: datetime, dedupe: timedelta
) -> bool:
    """True when no alert of this kind and key was written within ``dedupe`` of ``now``.

    One upsert decides it, so two replicas raising the same alert at once cannot both win:
    on PostgreSQL the second waits on the first's row and then sees it.
    """
    if dedupe <= timedelta(0):
        return True
    async with conn.execute(
        sql.OPEN_WINDOW,
        (kind, key, format_timestamp(now), format_timestamp(now - dedupe)),
    ) as cursor:
        return await cursor.fetchone() is not None


async def add_alert(
    conn: WriteConn,
    kind: str,
    key: str,
    text: str,
    fields: Mapping[str, Any],
    *,
    now: datetime,
    dedupe: timedelta,
    routed: bool,
) -> tuple[int, str]:
    """Write one alert in the caller's transaction; return its id and state.

    The state is ``suppressed`` inside the de-duplication window of the same kind and key,
    ``unrouted`` when there is nowhere to deliver (``routed`` false), else ``pending`` (due
    now).
    """
    stamp = format_timestamp(now)
    if not await _opens_window(conn, kind, key, now, dedupe):
        state, due = SUPPRESSED, None
    elif not routed:
        state, due = UNROUTED, None
    else:
        state, due = PENDING, stamp
    async with conn.execute(
        sql.INSERT_ALERT,
        (kind, key, text, json.dumps(dict(fields), default=str), state, stamp, due),
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), state


async def prune(conn: WriteConn, cutoff: str) -> dict[str, int]:
    """Housekeeping: delete settled alerts and de-duplication windows older than ``cutoff``."""
    async with conn.execute(
        sql.PRUNE_ALERTS, (DELIVERED, cutoff, SUPPRESSED, UNROUTED, cutoff)
    ) as cursor:
        alerts = int(cursor.rowcount)
    async with conn.execute(sql.PRUNE_WINDOWS, (cutoff,)) as cursor:
        windows = int(cursor.rowcount)
    return {"alert_outbox": alerts, "alert_windows": windows}


@dataclass(frozen=True)
class OutboxStats:
    """What the metrics say about the outbox."""

    undelivered: int
    oldest_created_at: datetime | None


class SqlOutbox:
    """The alert outbox on the store's database."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    async def add(
        self,
        kind: str,
        key: str,
        text: str,
        fields: Mapping[str, Any],
        *,
        now: datetime,
        dedupe: timedelta,
        routed: bool,
    ) -> tuple[int, str]:
        """:func:`add_alert` in a transaction of its own."""

        async def body(conn: WriteConn) -> tuple[int, str]:
            return await add_alert(
                conn, kind, key, text, fields, now=now, dedupe=dedupe, routed=routed
            )

        return await self.db.write(body)

    async def claim(
        self,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        *,
        only: Collection[int] | None = None,
    ) -> AlertRow | None:
        """Lease the oldest due pending row (among ``only``, if given); None when none is."""
        stamp = format_timestamp(now)
        among = ""
        params: list[Any] = [format_timestamp(now + lease_for), owner, PENDING, stamp, stamp]
        if only is not None:
            if not only:
                return None
            among = f" AND id IN ({', '.join('?' for _ in only)})"
            params.extend(sorted(only))

        async def body(conn: WriteConn) -> AlertRow | None:
            async with conn.execute(
                "UPDATE alert_outbox SET leased_until = ?, leased_by = ? WHERE id = ("
                " SELECT id FROM alert_outbox WHERE state = ? AND next_attempt_at <= ?"
                f" AND (leased_until IS NULL OR leased_until < ?){among}"
                f" ORDER BY id LIMIT 1{conn.dialect.skip_locked})"
                f" RETURNING {sql.ALERT_COLUMNS}",
                params,
            ) as cursor:
                row = await cursor.fetchone()
            return _row(row) if row is not None else None

        return await self.db.write(body)

    async def renew(self, alert_id: int, owner: str, until: datetime) -> None:
        """Extend a lease this owner holds (before a retry's wait)."""

        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.RENEW_LEASE,
                (format_timestamp(until), alert_id, owner),
            )

        await self.db.write(body)

    async def delivered(self, alert_id: int, owner: str, now: datetime, attempts: int) -> None:
        """Record the delivery of a row this owner leased."""

        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.MARK_DELIVERED,
                (DELIVERED, format_timestamp(now), attempts, alert_id, owner),
            )

        await self.db.write(body)

    async def failed(
        self,
        alert_id: int,
        owner: str,
        error: str,
        attempts: int,
        retry_at: datetime,
    ) -> None:
        """Record failed attempts and release the lease; the row is due again at ``retry_at``."""

        async def body(conn: WriteConn) -> None:
            await conn.execute(
                sql.MARK_FAILED,
                (attempts, error, format_timestamp(retry_at), alert_id, owner),
            )

        await self.db.write(body)

    async def retry(self, now: datetime, alert_id: int | None = None) -> list[int]:
        """Make undelivered rows (or one of them) due now; their ids."""
        where = "state = ?"
        params: list[Any] = [PENDING]
        if alert_id is not None:
            where += " AND id = ?"
            params.append(alert_id)

        async def body(conn: WriteConn) -> list[int]:
            rows = await conn.execute_fetchall(
                f"UPDATE alert_outbox SET next_attempt_at = ? WHERE {where} RETURNING id",
                (format_timestamp(now), *params),
            )
            return sorted(int(row[0]) for row in rows)

        return await self.db.write(body)

    async def rows(self, *, undelivered: bool = False, limit: int = 100) -> list[AlertRow]:
        """The newest rows first (only undelivered ones, if asked)."""
        where = "WHERE state = ?" if undelivered else ""
        params: list[Any] = [PENDING] if undelivered else []
        rows = await self.db.reader.execute_fetchall(
            f"SELECT {sql.ALERT_COLUMNS} FROM alert_outbox {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [_row(row) for row in rows]

    async def states(self, ids: Collection[int]) -> dict[int, str]:
        """The state of each of these rows."""
        if not ids:
            return {}
        rows = await self.db.reader.execute_fetchall(
            f"SELECT id, state FROM alert_outbox WHERE id IN ({', '.join('?' for _ in ids)})",
            sorted(ids),
        )
        return {int(row[0]): row[1] for row in rows}

    async def in_flight(self, ids: Collection[int], owner: str, now: datetime) -> int:
        """How many of these rows are still to be posted now: pending and either leased by
        another deliverer or due (not waiting after a failed round)."""
        if not ids:
            return 0
        stamp = format_timestamp(now)
        rows = await self.db.reader.execute_fetchall(
            f"{sql.IN_FLIGHT_AMONG} ({', '.join('?' for _ in ids)})",
            (PENDING, stamp, owner, stamp, stamp, *sorted(ids)),
        )
        return int(rows[0][0])

    async def next_due(self) -> datetime | None:
        """When the soonest pending row can next be claimed (its retry time, or the end of
        its lease); None when nothing is pending."""
        rows = await self.db.reader.execute_fetchall(sql.NEXT_DUE, (PENDING,))
        return parse_timestamp(rows[0][0]) if rows and rows[0][0] else None

    async def stats(self) -> OutboxStats:
        rows = await self.db.reader.execute_fetchall(sql.STATS, (PENDING,))
        count, oldest = rows[0][0], rows[0][1]
        return OutboxStats(int(count), parse_timestamp(oldest) if oldest else None)

"""The SessionStore port on the store's database (SQLite or PostgreSQL).

Only hashes of the cookie's token and of the OIDC ``state`` are stored. Expired rows are
deleted as new ones are written, so the tables stay as small as the number of people signed in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.sessions import Session, Timeouts
from jmlsync.store.database import Backend, WriteConn
from jmlsync.store.pipeline_sql import append_audit
from jmlsync.store.sql import sessions as sql

#: How long a sign-in sent to the issuer may take at most.
_LOGIN_LIMIT = timedelta(minutes=15)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SqlSessions:
    """Sessions and pending sign-ins over one store."""

    def __init__(self, db: Backend, timeouts: Timeouts) -> None:
        self.db = db
        self.timeouts = timeouts

    async def begin_login(
        self, state: str, nonce: str, verifier: str, return_to: str, now: datetime
    ) -> None:
        # Pending sign-ins older than the idle timeout (at most the limit) are dropped.
        cutoff = format_timestamp(now - min(self.timeouts.idle, _LOGIN_LIMIT))

        async def body(conn: WriteConn) -> None:
            await conn.execute(sql.DELETE_STALE_LOGINS, (cutoff,))
            await conn.execute(
                sql.INSERT_LOGIN,
                (_hash(state), nonce, verifier, return_to, format_timestamp(now)),
            )

        await self.db.write(body)

    async def take_login(self, state: str, now: datetime) -> tuple[str, str, str] | None:
        cutoff = format_timestamp(now - _LOGIN_LIMIT)

        async def body(conn: WriteConn) -> tuple[str, str, str] | None:
            async with conn.execute(sql.TAKE_LOGIN, (_hash(state),)) as cursor:
                row = await cursor.fetchone()
            if row is None or row[3] < cutoff:
                return None
            return str(row[0]), str(row[1]), str(row[2])

        return await self.db.write(body)

    async def create(
        self, user_name: str, claims: dict[str, Any], now: datetime, audit: AuditEntry
    ) -> str:
        token = secrets.token_urlsafe(32)
        stamp = format_timestamp(now)
        ends = format_timestamp(now + self.timeouts.absolute)
        idle_cutoff = format_timestamp(now - self.timeouts.idle)

        async def body(conn: WriteConn) -> None:
            await conn.execute(sql.DELETE_EXPIRED_SESSIONS, (stamp, idle_cutoff))
            await conn.execute(
                sql.INSERT_SESSION,
                (
                    _hash(token),
                    user_name,
                    secrets.token_urlsafe(32),
                    stamp,
                    stamp,
                    ends,
                    json.dumps(claims, sort_keys=True, default=str),
                ),
            )
            await append_audit(conn, audit)

        await self.db.write(body)
        return token

    async def get(self, token: str, now: datetime) -> Session | None:
        async with self.db.reader.execute(sql.SESSION, (_hash(token),)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        session = Session(
            str(row[0]),
            str(row[1]),
            parse_timestamp(row[2]),
            parse_timestamp(row[3]),
            parse_timestamp(row[4]),
            json.loads(row[5]),
        )
        if now >= session.expires_at or now - session.last_seen_at >= self.timeouts.idle:
            await self.delete(token)
            return None
        # One write per request would be wasted: the idle end moves in steps of a tenth.
        if now - session.last_seen_at >= self.timeouts.idle / 10:
            await self._touch(token, now)
        return session

    async def _touch(self, token: str, now: datetime) -> None:
        async def body(conn: WriteConn) -> None:
            await conn.execute(sql.TOUCH_SESSION, (format_timestamp(now), _hash(token)))

        await self.db.write(body)

    async def delete(self, token: str, audit: AuditEntry | None = None) -> None:
        async def body(conn: WriteConn) -> None:
            await conn.execute(sql.DELETE_SESSION, (_hash(token),))
            if audit is not None:
                await append_audit(conn, audit)

        await self.db.write(body)

    async def audit(self, entry: AuditEntry) -> None:
        async def body(conn: WriteConn) -> None:
            await append_audit(conn, entry)

        await self.db.write(body)

"""Time-bound access on SQLite or PostgreSQL: requests, approvals, their history, and
personal API tokens.

Every change of a request is one transaction: the request row (guarded by its version, so two
approvers at once cannot both win on a stale read), its new approvals, a history row, an
audit-chain row and, when the grant starts or ends, the queue row of the user. History is
never deleted, not even by housekeeping: it is the evidence that a grant ended.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.timebound import AccessRefused, AccessRequest, Approval
from jmlsync.domain.timebound_records import HistoryRow, Step, TokenRow
from jmlsync.store import pipeline_sql
from jmlsync.store.database import Backend, Conn, WriteConn
from jmlsync.store.sql import access as sql


def _stamp(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def _time(text: str | None) -> datetime | None:
    return parse_timestamp(text) if text else None


def _request(row: Any, approvals: Sequence[Approval]) -> AccessRequest:
    return AccessRequest(
        id=int(row[0]),
        user=row[1],
        eligibility=row[2],
        target=row[3],
        role=row[4],
        duration=timedelta(seconds=int(row[5])),
        reason=row[6],
        ticket=row[7],
        state=row[8],
        privileged=bool(row[9]),
        created_at=parse_timestamp(row[10]),
        approved_at=_time(row[11]),
        started_at=_time(row[12]),
        expires_at=_time(row[13]),
        ended_at=_time(row[14]),
        ended_by=row[15],
        end_reason=row[16],
        revoked_at=_time(row[17]),
        verified_at=_time(row[18]),
        breached_at=_time(row[19]),
        decided_by=row[20],
        decision_reason=row[21],
        extension=timedelta(seconds=int(row[22])) if row[22] is not None else None,
        extension_round=int(row[23]),
        approvals=tuple(approvals),
        version=int(row[24]),
    )


def _values(request: AccessRequest) -> list[Any]:
    """The row's mutable columns, in the order of :data:`.sql.access.REQUEST_MUTABLE`."""
    return [
        request.state,
        int(request.duration.total_seconds()),
        _stamp(request.approved_at),
        _stamp(request.started_at),
        _stamp(request.expires_at),
        _stamp(request.ended_at),
        request.ended_by,
        request.end_reason,
        _stamp(request.revoked_at),
        _stamp(request.verified_at),
        _stamp(request.breached_at),
        request.decided_by,
        request.decision_reason,
        int(request.extension.total_seconds()) if request.extension is not None else None,
        request.extension_round,
    ]


def audit_detail(request: AccessRequest, detail: str | None) -> str:
    """The audit row's detail: the request, its reason, ticket and approvers, as JSON."""
    return json.dumps(
        {
            "request": request.id,
            "reason": request.reason,
            "ticket": request.ticket,
            "approvers": request.all_approvers(),
            "expires_at": _stamp(request.expires_at),
            "note": detail,
        },
        sort_keys=True,
    )


class SqlAccess:
    """The AccessStore port (:class:`jmlsync.ports.AccessStore`) on the store's database."""

    def __init__(self, db: Backend) -> None:
        self.db = db

    async def record(self, steps: Sequence[Step], now: datetime) -> list[AccessRequest]:
        """Write every step in one transaction; the requests as stored (new ones with ids).

        Raises AccessRefused when a request changed since it was read (nothing is written).
        """

        async def body(conn: WriteConn) -> list[AccessRequest]:
            return [await _write_step(conn, step, now) for step in steps]

        return await self.db.write(body, notify=any(s.enqueue for s in steps))

    async def get(self, request_id: int) -> AccessRequest | None:
        """The request with this id, or None."""
        found = await _select(self.db.reader, " WHERE id = ?", [request_id])
        return found[0] if found else None

    async def find(
        self,
        *,
        states: Collection[str] | None = None,
        user: str | None = None,
        ended_since: datetime | None = None,
        ended_until: datetime | None = None,
    ) -> list[AccessRequest]:
        """Requests by state, requester (caselessly) and end time, oldest first."""
        where, params = [], []
        if states is not None:
            if not states:
                return []
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            params.extend(sorted(states))
        if user is not None:
            where.append("lower(user_name) = ?")
            params.append(user.lower())
        if ended_since is not None:
            where.append("ended_at >= ?")
            params.append(format_timestamp(ended_since))
        if ended_until is not None:
            where.append("ended_at <= ?")
            params.append(format_timestamp(ended_until))
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return await _select(self.db.reader, clause, params)

    async def active(self, user_names: Collection[str] | None = None) -> list[AccessRequest]:
        """Active grants (of the users named exactly, if given): part of the desired state."""
        return await self.holding(user_names, states=("active",))

    async def holding(
        self, user_names: Collection[str] | None, *, states: Sequence[str] = ("active", "ended")
    ) -> list[AccessRequest]:
        """Requests in ``states`` of the userNames named exactly (on the index: the pipeline
        asks this for every job), or of everyone."""
        clause = f" WHERE state IN ({', '.join('?' for _ in states)})"
        params: list[Any] = list(states)
        if user_names is not None:
            names = sorted(set(user_names))
            if not names:
                return []
            clause += f" AND user_name IN ({', '.join('?' for _ in names)})"
            params.extend(names)
        return await _select(self.db.reader, clause, params)

    async def history(self, request_id: int) -> list[HistoryRow]:
        """Every recorded change of the request, oldest first."""
        rows = await self.db.reader.execute_fetchall(
            sql.HISTORY,
            (request_id,),
        )
        return [HistoryRow(parse_timestamp(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def add_token(
        self,
        user_name: str,
        scope: str,
        token_hash: str,
        *,
        now: datetime,
        expires_at: datetime,
        actor: str,
    ) -> int:
        """Store a personal token's hash; its id. Audited."""

        async def body(conn: WriteConn) -> int:
            async with conn.execute(
                sql.INSERT_TOKEN,
                (user_name, scope, token_hash, format_timestamp(now), format_timestamp(expires_at)),
            ) as cursor:
                row = await cursor.fetchone()
            assert row is not None
            token_id = int(row[0])
            entry = AuditEntry(
                format_timestamp(now),
                actor,
                "token.generate",
                user_name,
                "ok",
                detail=json.dumps(
                    {"token": token_id, "scope": scope, "expires_at": format_timestamp(expires_at)}
                ),
            )
            await pipeline_sql.append_audit(conn, entry)
            return token_id

        return await self.db.write(body)

    async def tokens(self) -> list[TokenRow]:
        """Every personal token, newest first."""
        rows = await self.db.reader.execute_fetchall(sql.TOKENS)
        return [_token(r) for r in rows]

    async def token_by_hash(self, token_hash: str) -> TokenRow | None:
        """The token with this hash, or None."""
        rows = await self.db.reader.execute_fetchall(
            sql.TOKEN_BY_HASH,
            (token_hash,),
        )
        return _token(rows[0]) if rows else None

    async def revoke_token(self, token_id: int, *, now: datetime, actor: str) -> bool:
        """Revoke a token (audited); False when there is no such unrevoked token."""

        async def body(conn: WriteConn) -> bool:
            async with conn.execute(
                sql.REVOKE_TOKEN,
                (format_timestamp(now), token_id),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return False
            entry = AuditEntry(
                format_timestamp(now),
                actor,
                "token.revoke",
                row[0],
                "ok",
                detail=json.dumps({"token": token_id}),
            )
            await pipeline_sql.append_audit(conn, entry)
            return True

        return await self.db.write(body)


def _token(row: Any) -> TokenRow:
    return TokenRow(
        int(row[0]),
        row[1],
        row[2],
        parse_timestamp(row[3]),
        parse_timestamp(row[4]),
        _time(row[5]),
    )


async def _select(conn: Conn, clause: str, params: Sequence[Any]) -> list[AccessRequest]:
    rows = await conn.execute_fetchall(
        f"SELECT {sql.REQUEST_COLUMNS} FROM access_requests{clause} ORDER BY id", params
    )
    if not rows:
        return []
    ids = [int(r[0]) for r in rows]
    approvals: dict[int, list[Approval]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found = await conn.execute_fetchall(
            f"{sql.APPROVALS_OF} ({', '.join('?' for _ in chunk)}){sql.APPROVALS_ORDER}",
            chunk,
        )
        for r in found:
            approvals.setdefault(int(r[0]), []).append(
                Approval(r[1], parse_timestamp(r[2]), int(r[3]))
            )
    return [_request(row, approvals.get(int(row[0]), [])) for row in rows]


async def _insert(conn: WriteConn, request: AccessRequest) -> int:
    async with conn.execute(
        sql.INSERT_REQUEST,
        [
            request.user,
            request.eligibility,
            request.target,
            request.role,
            request.reason,
            request.ticket,
            int(request.privileged),
            format_timestamp(request.created_at),
            *_values(request),
        ],
    ) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _update(conn: WriteConn, before: AccessRequest, after: AccessRequest) -> None:
    assignments = ", ".join(f"{column.strip()} = ?" for column in sql.REQUEST_MUTABLE.split(","))
    async with conn.execute(
        f"UPDATE access_requests SET {assignments}, version = version + 1"
        " WHERE id = ? AND version = ? RETURNING id",
        [*_values(after), before.id, before.version],
    ) as cursor:
        if await cursor.fetchone() is None:
            raise AccessRefused(f"request #{before.id} changed meanwhile; look again and retry")


async def _write_step(conn: WriteConn, step: Step, now: datetime) -> AccessRequest:
    after = step.after
    if step.before is None or step.before.id == 0:
        request_id = await _insert(conn, after)
        known: set[tuple[int, str]] = set()
    else:
        request_id = step.before.id
        await _update(conn, step.before, after)
        known = {(a.round, a.approver) for a in step.before.approvals}
    for approval in after.approvals:
        if (approval.round, approval.approver) not in known:
            await conn.execute(
                sql.INSERT_APPROVAL,
                (request_id, approval.round, approval.approver, format_timestamp(approval.at)),
            )
    stamp = format_timestamp(now)
    before_state = step.before.state if step.before is not None else None
    await conn.execute(
        sql.INSERT_HISTORY,
        (request_id, stamp, step.actor, step.action, before_state, after.state, step.detail),
    )
    stored = (await _select(conn, " WHERE id = ?", [request_id]))[0]
    entry = AuditEntry(
        stamp,
        step.actor,
        f"access.{step.action}",
        stored.user,
        stored.state,
        target=stored.target,
        role=stored.role,
        detail=audit_detail(stored, step.detail),
    )
    await pipeline_sql.append_audit(conn, entry)
    if step.enqueue:
        await pipeline_sql.enqueue(conn, [stored.user], cause=f"access.{step.action}", now=now)
    return stored

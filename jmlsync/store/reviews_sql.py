"""SQL of access reviews shared by both backends, including the hook a group write calls to
lift review exceptions whose membership went away (inside the write's transaction)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.models import format_timestamp
from jmlsync.store import pipeline_sql
from jmlsync.store.database import Conn


async def audit(conn: Conn, entry: AuditEntry) -> int:
    """Append ``entry`` to the audit chain; return its seq (the caller's transaction holds
    the chain's head, so the newest row is this one)."""
    await pipeline_sql.append_audit(conn, entry)
    async with conn.execute("SELECT max(seq) FROM audit") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def lift_exception(
    conn: Conn, exception_id: int, subject: str, reason: str, now: datetime, actor: str
) -> bool:
    """Lift one active exception (audited); False when it was not active."""
    stamp = format_timestamp(now)
    cursor = await conn.execute(
        "UPDATE review_exceptions SET lifted_at = ?, lifted_reason = ?"
        " WHERE id = ? AND lifted_at IS NULL",
        (stamp, reason, exception_id),
    )
    if cursor.rowcount == 0:
        return False
    await pipeline_sql.append_audit(
        conn,
        AuditEntry(
            at=stamp,
            actor=actor,
            action="review.exception.lift",
            subject=subject,
            outcome="committed",
            detail=f"exception {exception_id}: {reason}",
        ),
    )
    return True


async def lift_for_membership(
    conn: Conn,
    group_id: str,
    affected_user_ids: Collection[str],
    now: datetime,
    *,
    group_deleted: bool,
) -> None:
    """Lift the exceptions a removed membership caused: the IdP changed the membership the
    review named, so re-adding it is a new decision and gives the grant back."""
    if not affected_user_ids:
        return
    rows = await conn.execute_fetchall(
        "SELECT id, user_id, user_name, target, role, causes FROM review_exceptions"
        " WHERE lifted_at IS NULL"
    )
    affected = set(affected_user_ids)
    for row in rows:
        causes: list[list[Any]] = json.loads(row[5])
        if row[1] not in affected or group_id not in {str(c[1]) for c in causes}:
            continue
        if not group_deleted:
            async with conn.execute(
                "SELECT 1 FROM memberships WHERE group_id = ? AND user_id = ?",
                (group_id, row[1]),
            ) as cursor:
                if await cursor.fetchone() is not None:
                    continue
        await lift_exception(
            conn,
            int(row[0]),
            f"user {row[2]}",
            f"membership of group {group_id} removed ({row[3]} {row[4]})",
            now,
            "scim",
        )

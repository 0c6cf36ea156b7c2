"""The steps of access reviews run inside a transaction body, on both backends (their SQL text
is in :mod:`jmlsync.store.sql.reviews`), including the hook a group write calls to lift review
exceptions whose membership went away (inside the write's transaction)."""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.review_records import NewException
from jmlsync.domain.reviews import Campaign, DecisionRow, Item
from jmlsync.store import pipeline_sql
from jmlsync.store.database import WriteConn
from jmlsync.store.sql import reviews as sql


async def audit(conn: WriteConn, entry: AuditEntry) -> int:
    """Append ``entry`` to the audit chain; return its seq (the batch's next seq, less one:
    the caller's transaction holds the chain's head, so the newest row is this one)."""
    await pipeline_sql.append_audit(conn, entry)
    assert conn.audit_head is not None  # set by the append
    return conn.audit_head[0] - 1


async def lift_exception(
    conn: WriteConn, exception_id: int, subject: str, reason: str, now: datetime, actor: str
) -> bool:
    """Lift one active exception (audited); False when it was not active."""
    stamp = format_timestamp(now)
    cursor = await conn.execute(
        sql.LIFT_EXCEPTION,
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
    conn: WriteConn,
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
    rows = await conn.execute_fetchall(sql.ACTIVE_EXCEPTIONS)
    affected = set(affected_user_ids)
    for row in rows:
        causes: list[list[Any]] = json.loads(row[5])
        if row[1] not in affected or group_id not in {str(c[1]) for c in causes}:
            continue
        if not group_deleted:
            async with conn.execute(
                sql.IS_MEMBER,
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


def decision_entry(
    campaign: Campaign, item: Item, row: DecisionRow, stamp: str, imported_by: str, late: bool
) -> AuditEntry:
    """The audit row of one decision: who decided, who imported it, late or not."""
    detail = f"campaign {campaign.id} item {item.id}: {row.decision} by {row.reviewer}"
    if late:
        detail += " (late, by an admin)"
    if row.comment:
        detail += f": {row.comment}"
    return AuditEntry(
        at=stamp,
        actor=imported_by,
        action="review.decide",
        subject=f"user {item.user.user_name}",
        outcome="committed",
        target=item.target,
        role=item.role,
        detail=detail,
    )


async def add_exception(
    conn: WriteConn,
    campaign: Campaign,
    item: Item,
    exception: NewException,
    stamp: str,
    actor: str,
) -> None:
    """Create the exception holding back a revoked rule-given grant, audited."""
    await conn.execute(
        sql.INSERT_EXCEPTION,
        (
            campaign.id,
            item.id,
            item.target,
            item.user.user_name,
            item.user.user_name.casefold(),
            exception.user_id,
            item.role,
            json.dumps([list(c) for c in exception.causes]),
            stamp,
        ),
    )
    paths = ", ".join(f"group {name} (rule {rule})" for rule, _g, name in exception.causes)
    await pipeline_sql.append_audit(
        conn,
        AuditEntry(
            at=stamp,
            actor=actor,
            action="review.exception",
            subject=f"user {item.user.user_name}",
            outcome="committed",
            target=item.target,
            role=item.role,
            detail=f"campaign {campaign.id} item {item.id}: held back while {paths} remains",
        ),
    )


async def withdraw(conn: WriteConn, campaign_id: str, item_id: int, stamp: str, actor: str) -> None:
    """A keep replacing an earlier revoke of the same item ends its exception."""
    rows = await conn.execute_fetchall(
        sql.ACTIVE_EXCEPTIONS_OF_ITEM,
        (campaign_id, item_id),
    )
    now = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    for row in rows:
        await lift_exception(
            conn, int(row[0]), f"user {row[1]}", "decision changed to keep", now, actor
        )
        # The rules give the grant again: plan the holder now, not at the next change.
        await pipeline_sql.enqueue(conn, [row[1]], cause="review.keep", now=now)
    await conn.execute(
        sql.DELETE_OPEN_REMEDIATION,
        (campaign_id, item_id),
    )


async def remediate(conn: WriteConn, campaign_id: str, item: Item, now: datetime) -> None:
    """Queue the holder's job and note it; the pipeline plans the revocation."""
    await pipeline_sql.enqueue(conn, [item.user.user_name], cause="review.revoke", now=now)
    rows = await conn.execute_fetchall(sql.QUEUE_JOB_OF, (item.user.user_name,))
    job_id = int(rows[0][0]) if rows else None
    await conn.execute(
        sql.UPSERT_REMEDIATION,
        (campaign_id, item.id, job_id, format_timestamp(now)),
    )

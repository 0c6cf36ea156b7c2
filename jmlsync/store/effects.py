"""What a directory write causes, inside the write's own transaction: queue rows for every
principal whose grants may change, leaver records, and the audit row.

Committing these with the change is what makes an acknowledged change impossible to lose: if
the process dies after the commit, the queue row is there for the next start to work off.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import Change, format_timestamp
from jmlsync.store import pipeline_sql, reviews_sql, rows
from jmlsync.store.database import Conn, WriteConn
from jmlsync.store.sql import policy as sql

_CHUNK = 500


def _active(doc: Mapping[str, Any] | None) -> bool:
    return doc is not None and doc.get("active", True) is not False


async def user_names(conn: Conn, user_ids: Collection[str]) -> list[str]:
    """The userNames of these user ids (unknown ids are skipped)."""
    ids = sorted(user_ids)
    names: list[str] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = f"{sql.USER_NAMES_OF_IDS} ({','.join('?' * len(chunk))})"
        async with conn.execute(query, chunk) as cursor:
            names.extend([row[0] async for row in cursor])
    return names


async def audit(
    conn: WriteConn,
    now: datetime,
    action: str,
    subject: str,
    *,
    detail: str | None = None,
    actor: str = "scim",
) -> None:
    entry = AuditEntry(
        at=format_timestamp(now),
        actor=actor,
        action=action,
        subject=subject,
        outcome="committed",
        detail=detail,
    )
    await pipeline_sql.append_audit(conn, entry)


async def user_written(
    conn: WriteConn,
    user_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    now: datetime,
    *,
    notes: tuple[str, ...] = (),
    actor: str = "scim",
) -> None:
    """Enqueue the user's principal(s) and keep the leaver record, for a create, an update
    (``before`` and ``after``) or a delete (``after`` None); ``notes`` join the audit row."""
    action = "user.create" if before is None else "user.delete" if after is None else "user.update"
    old_name = str(before["userName"]) if before else None
    new_name = str(after["userName"]) if after else None
    leaving = _active(before) and not _active(after)
    if leaving:
        name = new_name or old_name
        assert name is not None
        await pipeline_sql.open_leaver(conn, name, user_id, now)
    elif before is not None and not _active(before) and _active(after) and new_name:
        await pipeline_sql.cancel_leaver(conn, new_name, now)
    if new_name is not None and before is None and _active(after):
        await pipeline_sql.enqueue_joiner(conn, new_name, cause=action, now=now)
    elif new_name is not None:
        await pipeline_sql.enqueue(conn, [new_name], cause=action, now=now, leaver=leaving)
    if old_name is not None and old_name != new_name:
        # A rename or a delete: the principal under the old name must lose its access fast.
        await pipeline_sql.enqueue(conn, [old_name], cause=action, now=now, leaver=True)
    detail = None
    if leaving:
        detail = "deactivated" if after is not None else "deleted"
    elif before is not None and after is not None and not _active(before) and _active(after):
        detail = "reactivated"
    detail = "; ".join([*([detail] if detail else []), *notes]) or None
    subject = f"user {new_name or old_name} ({user_id})"
    await audit(conn, now, action, subject, detail=detail, actor=actor)


async def group_written(
    conn: WriteConn,
    group_id: str,
    action: str,
    affected_user_ids: Collection[str],
    change: Change,
    now: datetime,
    *,
    actor: str = "scim",
) -> None:
    """Enqueue every user whose membership of the group changed (or every member, when the
    group's name or existence changed) and audit the write, with its membership operations."""
    names = await user_names(conn, affected_user_ids)
    if names:
        await pipeline_sql.enqueue(conn, names, cause=action, now=now)
    await reviews_sql.lift_for_membership(
        conn, group_id, affected_user_ids, now, group_deleted=action == "group.delete"
    )
    subject = f"group {change.doc.get('displayName')} ({group_id})"
    members = rows.members_detail(change)
    detail = "; ".join([*([members] if members else []), *change.notes]) or None
    await audit(conn, now, action, subject, detail=detail, actor=actor)


async def members_of(conn: Conn, group_id: str) -> set[str]:
    async with conn.execute(sql.MEMBERS_OF_GROUP, (group_id,)) as cursor:
        return {row[0] async for row in cursor}

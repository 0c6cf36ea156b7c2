"""Group membership rows: applying a write's membership operations, in its transaction.

An operation costs what it changes (``replace`` and ``clear`` excepted): adding or removing one
member of a 100,000-member group touches one row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jmlsync.domain.directory import Member, MemberOp
from jmlsync.domain.errors import UnknownMembers
from jmlsync.store import effects
from jmlsync.store.database import WriteConn

#: SQLite accepts at most 32766 parameters per statement; stay well below.
CHUNK = 500


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    """``items`` in slices small enough for one statement's parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    """``count`` comma-separated placeholders."""
    return ",".join("?" * count)


async def apply(conn: WriteConn, group_id: str, ops: Sequence[MemberOp]) -> set[str]:
    """Apply the membership operations in order; return the user ids they may affect."""
    affected: set[str] = set()
    for op in ops:
        if op.action in ("clear", "replace"):
            affected |= await effects.members_of(conn, group_id)
            await conn.execute("DELETE FROM memberships WHERE group_id = ?", (group_id,))
        if op.action in ("add", "replace"):
            await _add(conn, group_id, op.items)
            affected.update(item.value for item in op.items)
        if op.action == "remove":
            affected |= op.ids
            ids = sorted(op.ids)
            for chunk in chunks(ids):
                await conn.execute(
                    f"DELETE FROM memberships WHERE group_id = ? AND user_id IN"
                    f" ({marks(len(chunk))})",
                    (group_id, *chunk),
                )
    return affected


async def _add(conn: WriteConn, group_id: str, items: Sequence[Member]) -> None:
    if not items:
        return
    ids = sorted({item.value for item in items})
    existing: set[str] = set()
    for chunk in chunks(ids):
        async with conn.execute(
            f"SELECT id FROM users WHERE id IN ({marks(len(chunk))})", chunk
        ) as cursor:
            existing.update([row[0] async for row in cursor])
    missing = [i for i in ids if i not in existing]
    if missing:
        raise UnknownMembers(missing)
    await conn.executemany(
        "INSERT INTO memberships (group_id, user_id, display) VALUES (?, ?, ?)"
        " ON CONFLICT (group_id, user_id) DO UPDATE"
        " SET display = coalesce(excluded.display, memberships.display)",
        [(group_id, item.value, item.display) for item in items],
    )

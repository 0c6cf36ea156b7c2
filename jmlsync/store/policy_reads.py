"""Streaming reads of the directory for planning, and the record of applied grants (SQLite).

Planning never asks per user: groups, the memberships of groups some rule names, and users are
each read in one streaming query, so a directory of 100k users costs three passes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from datetime import datetime
from typing import Any

from jmlsync.domain.access import Grant, GroupInfo, UserState
from jmlsync.domain.directory import format_timestamp
from jmlsync.store.database import Conn, WriteConn
from jmlsync.store.sql import policy as sql

_CHUNK = 500

#: Rows a streaming read fetches per trip to the database thread (aiosqlite's default is 64:
#: 5,000 trips for a directory of 100k users and their memberships).
_ROWS_PER_FETCH = 2000


def _streaming(cursor: Any) -> Any:
    """``cursor``, fetching :data:`_ROWS_PER_FETCH` rows at a time where it fetches in
    batches (aiosqlite's); other cursors are returned as they are."""
    if hasattr(cursor, "iter_chunk_size"):
        cursor.iter_chunk_size = _ROWS_PER_FETCH
    return cursor


async def list_groups(conn: Conn) -> list[GroupInfo]:
    """Every group's id, displayName and externalId."""
    rows = await conn.execute_fetchall(sql.LIST_GROUPS)
    return [GroupInfo(id=r[0], display_name=r[1], external_id=r[2]) for r in rows]


async def _memberships(conn: Conn, group_ids: Collection[str]) -> dict[str, set[str]]:
    """user id → the ids among ``group_ids`` it belongs to."""
    groups_of: dict[str, set[str]] = {}
    ids = sorted(group_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = f"{sql.MEMBERSHIPS_OF_GROUPS} ({','.join('?' * len(chunk))})"
        # The chunk's rows in one fetch (two columns: a few MB at 100k members), added in a
        # plain loop: a row at a time through the cursor's iterator cost a third more.
        for user_id, group_id in await conn.execute_fetchall(query, chunk):
            found = groups_of.get(user_id)
            if found is None:
                groups_of[user_id] = {group_id}
            else:
                found.add(group_id)
    return groups_of


async def policy_users(
    conn: Conn,
    group_ids: Collection[str],
    *,
    with_resource: bool,
    user_names: Collection[str] | None = None,
) -> AsyncIterator[UserState]:
    """Every user (or those named) with its memberships among ``group_ids``.

    ``resource`` holds the stored document plus ``id`` when ``with_resource`` (rules with a
    ``user_filter`` need it); it is left empty otherwise to keep memory flat.
    """
    groups_of = await _memberships(conn, group_ids)
    columns = "id, user_name, active" + (", doc" if with_resource else "")
    query = f"SELECT {columns} FROM users"
    params: list[str] = []
    if user_names is not None:
        keys = sorted({name.casefold() for name in user_names})
        query += f" WHERE user_name_key IN ({','.join('?' * len(keys))})"
        params = keys
    async with conn.execute(query, params) as cursor:
        async for row in _streaming(cursor):
            resource = {**json.loads(row[3]), "id": row[0]} if with_resource else {}
            yield UserState(
                id=row[0],
                user_name=row[1],
                active=bool(row[2]),
                groups=frozenset(groups_of.get(row[0], ())),
                resource=resource,
            )


async def policy_user(conn: Conn, user_name: str) -> tuple[UserState | None, list[GroupInfo]]:
    """The user whose userName is exactly ``user_name`` (with its resource), and its groups."""
    return (await policy_users_named(conn, [user_name]))[user_name]


async def policy_users_named(
    conn: Conn, user_names: Collection[str]
) -> dict[str, tuple[UserState | None, list[GroupInfo]]]:
    """Each of ``user_names`` (matched exactly) with its resource and groups, (None, []) for
    a name the directory does not hold; in two queries however many names: the pipeline plans
    a batch of jobs with one read of their users and one of their groups."""
    found: dict[str, tuple[UserState | None, list[GroupInfo]]] = {
        name: (None, []) for name in user_names
    }
    keys = sorted({name.casefold() for name in user_names})
    rows: list[Any] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        query = f"{sql.POLICY_USERS_NAMED} ({','.join('?' * len(chunk))})"
        rows.extend(await conn.execute_fetchall(query, chunk))
    rows = [row for row in rows if row[1] in found]
    groups_of: dict[str, list[GroupInfo]] = {row[0]: [] for row in rows}
    ids = sorted(groups_of)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = f"{sql.GROUPS_OF_USERS} ({','.join('?' * len(chunk))})"
        for r in await conn.execute_fetchall(query, chunk):
            groups_of[r[0]].append(GroupInfo(id=r[1], display_name=r[2], external_id=r[3]))
    for row in rows:
        groups = groups_of[row[0]]
        user = UserState(
            id=row[0],
            user_name=row[1],
            active=bool(row[2]),
            groups=frozenset(g.id for g in groups),
            resource={**json.loads(row[3]), "id": row[0]},
        )
        found[row[1]] = (user, groups)
    return found


async def applied_grants(conn: Conn, user_names: Collection[str] | None = None) -> set[Grant]:
    """The grants jmlsync applied and has not revoked since (of the users named, if given)."""
    query = sql.APPLIED_GRANTS
    params: list[str] = []
    if user_names is not None:
        names = sorted(user_names)
        query += f" WHERE user_name IN ({','.join('?' * len(names))})"
        params = names
    rows = await conn.execute_fetchall(query, params)
    return {Grant(target=r[0], user=r[1], role=r[2]) for r in rows}


async def record_applied(conn: WriteConn, grant: Grant, reason: str, now: datetime) -> None:
    """Remember that jmlsync applied ``grant``: it is managed from now on."""
    await conn.execute(
        sql.RECORD_APPLIED,
        (grant.target, grant.user, grant.role, reason, format_timestamp(now)),
    )


async def forget_applied(conn: WriteConn, grant: Grant) -> bool:
    """Forget an applied grant once it is revoked; True when jmlsync had applied it."""
    async with conn.execute(sql.FORGET_APPLIED, (grant.target, grant.user, grant.role)) as cursor:
        return bool(cursor.rowcount > 0)

"""The embedded store: SQLite through aiosqlite, in WAL mode, one writer and one reader.

Writes are serialised by an asyncio lock around ``BEGIN IMMEDIATE ... COMMIT`` on the writer
connection; reads go to a second connection, which WAL lets run beside a write.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from jmlsync.domain.errors import (
    DuplicateUserName,
    ResourceNotFound,
    UnknownMembers,
    VersionMismatch,
)
from jmlsync.domain.grants import Grant, GroupInfo, UserState
from jmlsync.domain.models import (
    Change,
    GroupRef,
    Member,
    MemberOp,
    Page,
    ResourceKind,
    StoredResource,
    format_timestamp,
)
from jmlsync.ports import Query
from jmlsync.store import policy_reads
from jmlsync.store.filter_sql import GROUPS_TABLE, USERS_TABLE, compile_filter, sort_expression

#: SQLite accepts at most 32766 parameters per statement; stay well below.
_CHUNK = 500


def _fold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("jmlsync.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text("utf-8")))
    return sorted(found)


class SqliteStore:
    """The Store port on one SQLite file."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "full") -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and apply pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path, synchronous)
        await cls._migrate(writer)
        reader = await cls._connect(path, synchronous)
        await reader.execute("PRAGMA query_only = ON")
        return cls(writer, reader)

    @staticmethod
    async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.create_function("fold", 1, _fold, deterministic=True)
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cursor:
            applied = {row[0] async for row in cursor}
        for number, name, script in _migrations():
            if number in applied:
                continue
            statements = f"BEGIN IMMEDIATE;\n{script}\n"
            statements += "INSERT INTO schema_migrations VALUES"
            statements += f" ({number}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ'));\nCOMMIT;"
            await conn.executescript(statements)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            # BEGIN sits inside the try: a cancellation while it runs must still roll back,
            # or the connection would stay inside a transaction for every later write.
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                await self._writer.rollback()
                raise

    async def create(self, kind: ResourceKind, change: Change, now: datetime) -> StoredResource:
        resource_id = str(uuid.uuid4())
        stamp = format_timestamp(now)
        async with self._transaction() as conn:
            if kind == "User":
                await self._insert_user(conn, resource_id, change.doc, stamp)
            else:
                await self._insert_group(conn, resource_id, change.doc, stamp)
                await self._apply_member_ops(conn, resource_id, change.members)
            return await self._read(conn, kind, resource_id, with_members=True)

    async def get(
        self, kind: ResourceKind, resource_id: str, *, with_members: bool = True
    ) -> StoredResource:
        return await self._read(self._reader, kind, resource_id, with_members=with_members)

    async def update(
        self,
        kind: ResourceKind,
        resource_id: str,
        mutate: Callable[[StoredResource], Change],
        now: datetime,
        *,
        expected_version: int | None = None,
        with_members: bool = True,
    ) -> StoredResource:
        stamp = format_timestamp(now)
        async with self._transaction() as conn:
            current = await self._read(conn, kind, resource_id, with_members=False)
            if expected_version is not None and current.version != expected_version:
                raise VersionMismatch(f"{kind} {resource_id} is at version {current.version}")
            change = mutate(current)
            if kind == "User":
                await self._update_user(conn, resource_id, change.doc, stamp)
            else:
                await self._update_group(conn, resource_id, change.doc, stamp)
                await self._apply_member_ops(conn, resource_id, change.members)
            return await self._read(conn, kind, resource_id, with_members=with_members)

    async def delete(
        self, kind: ResourceKind, resource_id: str, *, expected_version: int | None = None
    ) -> None:
        table = "users" if kind == "User" else "groups"
        async with self._transaction() as conn:
            current = await self._read(conn, kind, resource_id, with_members=False)
            if expected_version is not None and current.version != expected_version:
                raise VersionMismatch(f"{kind} {resource_id} is at version {current.version}")
            if kind == "User":
                await self._touch_groups_of(conn, resource_id)
            await conn.execute(f"DELETE FROM {table} WHERE id = ?", (resource_id,))

    async def search(self, kind: ResourceKind, query: Query) -> Page:
        table = USERS_TABLE if kind == "User" else GROUPS_TABLE
        where, params = ("1", []) if query.filter is None else compile_filter(query.filter, table)
        async with self._reader.execute(
            f"SELECT count(*) FROM {table.name} WHERE {where}", params
        ) as cursor:
            row = await cursor.fetchone()
            total = int(row[0]) if row else 0
        if query.count <= 0 or total < query.start_index:
            return Page(total=total, resources=())
        order = "id"
        if query.sort_by is not None:
            direction = "DESC" if query.descending else "ASC"
            order = f"{sort_expression(query.sort_by, table)} {direction} NULLS LAST, id"
        sql = f"SELECT * FROM {table.name} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
        rows = await self._reader.execute_fetchall(
            sql, [*params, query.count, query.start_index - 1]
        )
        resources_ = [self._resource(kind, row) for row in rows]
        if query.with_members:
            resources_ = await self._attach_relations(self._reader, kind, resources_)
        return Page(total=total, resources=tuple(resources_))

    async def list_groups(self) -> list[GroupInfo]:
        return await policy_reads.list_groups(self._reader)

    def policy_users(
        self,
        group_ids: Collection[str],
        *,
        with_resource: bool,
        user_names: Collection[str] | None = None,
    ) -> AsyncIterator[UserState]:
        return policy_reads.policy_users(
            self._reader, group_ids, with_resource=with_resource, user_names=user_names
        )

    async def find_user(self, user_name: str) -> StoredResource | None:
        async with self._reader.execute(
            "SELECT * FROM users WHERE user_name_key = ?", (user_name.casefold(),)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._resource("User", row)

    async def applied_grants(self, user_names: Collection[str] | None = None) -> set[Grant]:
        return await policy_reads.applied_grants(self._reader, user_names)

    async def record_applied(self, grant: Grant, reason: str, now: datetime) -> None:
        async with self._transaction() as conn:
            await policy_reads.record_applied(conn, grant, reason, now)

    async def forget_applied(self, grant: Grant) -> None:
        async with self._transaction() as conn:
            await policy_reads.forget_applied(conn, grant)

    async def _read(
        self,
        conn: aiosqlite.Connection,
        kind: ResourceKind,
        resource_id: str,
        *,
        with_members: bool,
    ) -> StoredResource:
        table = "users" if kind == "User" else "groups"
        async with conn.execute(f"SELECT * FROM {table} WHERE id = ?", (resource_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise ResourceNotFound(f"{kind} {resource_id} not found")
        resource = self._resource(kind, row)
        if with_members:
            (resource,) = await self._attach_relations(conn, kind, [resource])
        return resource

    @staticmethod
    def _resource(kind: ResourceKind, row: sqlite3.Row) -> StoredResource:
        return StoredResource(
            kind=kind,
            id=row["id"],
            doc=json.loads(row["doc"]),
            created=row["created"],
            last_modified=row["last_modified"],
            version=row["version"],
        )

    async def _attach_relations(
        self, conn: aiosqlite.Connection, kind: ResourceKind, items: list[StoredResource]
    ) -> list[StoredResource]:
        """Fill Group.members or User.groups for ``items`` with one query per chunk of ids."""
        if not items:
            return items
        ids = [item.id for item in items]
        found: dict[str, list[Any]] = {item_id: [] for item_id in ids}
        for chunk in _chunks(ids):
            if kind == "Group":
                sql = (
                    "SELECT group_id AS owner, user_id AS ref, display FROM memberships"
                    f" WHERE group_id IN ({_marks(len(chunk))})"
                )
            else:
                sql = (
                    "SELECT m.user_id AS owner, m.group_id AS ref, g.display_name AS display"
                    " FROM memberships m JOIN groups g ON g.id = m.group_id"
                    f" WHERE m.user_id IN ({_marks(len(chunk))})"
                )
            async with conn.execute(sql, chunk) as cursor:
                async for row in cursor:
                    found[row["owner"]].append((row["ref"], row["display"]))
        result = []
        for item in items:
            pairs = found[item.id]
            if kind == "Group":
                members = tuple(Member(value=ref, display=display) for ref, display in pairs)
                result.append(replace(item, members=members))
            else:
                groups = tuple(GroupRef(value=ref, display=display) for ref, display in pairs)
                result.append(replace(item, groups=groups))
        return result

    async def _insert_user(
        self, conn: aiosqlite.Connection, user_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        try:
            await conn.execute(
                "INSERT INTO users (id, user_name, user_name_key, external_id, display_name,"
                " active, doc, created, last_modified, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (user_id, *_user_columns(doc), stamp, stamp),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateUserName(f"userName {doc.get('userName')!r} is already taken") from exc

    async def _update_user(
        self, conn: aiosqlite.Connection, user_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        try:
            await conn.execute(
                "UPDATE users SET user_name = ?, user_name_key = ?, external_id = ?,"
                " display_name = ?, active = ?, doc = ?, last_modified = ?,"
                " version = version + 1 WHERE id = ?",
                (*_user_columns(doc), stamp, user_id),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateUserName(f"userName {doc.get('userName')!r} is already taken") from exc

    async def _insert_group(
        self, conn: aiosqlite.Connection, group_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        await conn.execute(
            "INSERT INTO groups (id, display_name, display_name_key, external_id, doc, created,"
            " last_modified, version) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            (group_id, *_group_columns(doc), stamp, stamp),
        )

    async def _update_group(
        self, conn: aiosqlite.Connection, group_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        await conn.execute(
            "UPDATE groups SET display_name = ?, display_name_key = ?, external_id = ?, doc = ?,"
            " last_modified = ?, version = version + 1 WHERE id = ?",
            (*_group_columns(doc), stamp, group_id),
        )

    async def _touch_groups_of(self, conn: aiosqlite.Connection, user_id: str) -> None:
        """A deleted user leaves its groups: their version moves so cached ETags go stale."""
        await conn.execute(
            "UPDATE groups SET version = version + 1 WHERE id IN"
            " (SELECT group_id FROM memberships WHERE user_id = ?)",
            (user_id,),
        )

    async def _apply_member_ops(
        self, conn: aiosqlite.Connection, group_id: str, ops: Sequence[MemberOp]
    ) -> None:
        for op in ops:
            if op.action in ("clear", "replace"):
                await conn.execute("DELETE FROM memberships WHERE group_id = ?", (group_id,))
            if op.action in ("add", "replace"):
                await self._add_members(conn, group_id, op.items)
            if op.action == "remove":
                ids = sorted(op.ids)
                for chunk in _chunks(ids):
                    await conn.execute(
                        f"DELETE FROM memberships WHERE group_id = ? AND user_id IN"
                        f" ({_marks(len(chunk))})",
                        (group_id, *chunk),
                    )

    async def _add_members(
        self, conn: aiosqlite.Connection, group_id: str, items: Sequence[Member]
    ) -> None:
        if not items:
            return
        ids = sorted({item.value for item in items})
        existing: set[str] = set()
        for chunk in _chunks(ids):
            async with conn.execute(
                f"SELECT id FROM users WHERE id IN ({_marks(len(chunk))})", chunk
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


def _user_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    user_name = str(doc["userName"])
    active = doc.get("active", True)
    return (
        user_name,
        user_name.casefold(),
        doc.get("externalId"),
        doc.get("displayName"),
        1 if active else 0,
        json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
    )


def _group_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    display_name = str(doc["displayName"])
    return (
        display_name,
        display_name.casefold(),
        doc.get("externalId"),
        json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
    )

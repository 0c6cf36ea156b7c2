"""The directory store: users, groups and memberships, on SQLite or PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from jmlsync.audit import ACTOR, AuditEntry
from jmlsync.domain.access import Grant, GroupInfo, UserState
from jmlsync.domain.directory import (
    Change,
    GroupRef,
    Member,
    Page,
    ResourceKind,
    StoredResource,
    format_timestamp,
    parse_timestamp,
)
from jmlsync.domain.errors import (
    DuplicateUserName,
    ResourceNotFound,
    VersionMismatch,
)
from jmlsync.ports import Effect, Query, ReplicaLocks, WriteHealth
from jmlsync.store import effects, memberships, movers, pipeline_sql, policy_reads, rows
from jmlsync.store.connection import Row
from jmlsync.store.database import (
    Backend,
    Conn,
    Database,
    IntegrityError,
    WriteConn,
)
from jmlsync.store.filters.columns import GROUPS_TABLE, USERS_TABLE
from jmlsync.store.memberships import chunks, marks
from jmlsync.store.postgres import PgDatabase, PgTimeouts
from jmlsync.store.rows import new_id
from jmlsync.store.sql import directory as sql


class SqlStore:
    """The Store port on a SQL database (SQLite by default, PostgreSQL for replicas)."""

    def __init__(self, db: Backend) -> None:
        self.db = db
        self._reader = db.reader

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "full") -> SqlStore:
        """Open (creating if needed) the database at ``path`` and apply pending migrations."""
        return cls(await Database.open(path, synchronous=synchronous))

    @classmethod
    async def open_postgres(cls, dsn: str, timeouts: PgTimeouts | None = None) -> SqlStore:
        """Open the PostgreSQL database at ``dsn`` (migrating it): the same store, on the
        PostgreSQL backend."""
        return cls(await PgDatabase.open(dsn, timeouts=timeouts))

    async def close(self) -> None:
        await self.db.close()

    @property
    def write_health(self) -> WriteHealth:
        """Whether the database takes writes (readiness)."""
        return self.db.health

    def replica_locks(self) -> ReplicaLocks | None:
        """The locks that coordinate replicas sharing this store (PostgreSQL); None when one
        process owns it (SQLite: the file lock is held for the process's life)."""
        from jmlsync.store.postgres import PgDatabase

        return self.db if isinstance(self.db, PgDatabase) else None

    async def ping(self) -> None:
        """Raise when the database cannot answer a query."""
        async with self._reader.execute(sql.PING) as cursor:
            await cursor.fetchone()

    async def create(self, kind: ResourceKind, change: Change, now: datetime) -> StoredResource:
        resource_id = new_id()
        stamp = format_timestamp(now)
        actor = ACTOR.get()  # read here: the write may run on the writer's task

        async def body(conn: WriteConn) -> StoredResource:
            if kind == "User":
                await self._insert_user(conn, resource_id, change.doc, stamp)
                await effects.user_written(
                    conn, resource_id, None, change.doc, now, notes=change.notes, actor=actor
                )
            else:
                await self._insert_group(conn, resource_id, change.doc, stamp)
                affected = await memberships.apply(conn, resource_id, change.members)
                await effects.group_written(
                    conn, resource_id, "group.create", affected, change, now, actor=actor
                )
            # What was written is what a read would give back: no query for it. A new user
            # belongs to no group; a new group's members are read (their displays may merge).
            written = StoredResource(
                kind=kind,
                id=resource_id,
                doc=change.doc,
                created=stamp,
                last_modified=stamp,
                version=1,
            )
            if kind == "User":
                return replace(written, groups=())
            (written,) = await self._attach_relations(conn, kind, [written])
            return written

        return await self.db.write(body, notify=True)

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
        actor = ACTOR.get()

        async def body(conn: WriteConn) -> StoredResource:
            current = await self._read(conn, kind, resource_id, with_members=False, lock=True)
            if expected_version is not None and current.version != expected_version:
                raise VersionMismatch(f"{kind} {resource_id} is at version {current.version}")
            change = mutate(current)
            if kind == "User":
                await self._update_user(conn, resource_id, change.doc, stamp)
                await effects.user_written(
                    conn,
                    resource_id,
                    current.doc,
                    change.doc,
                    now,
                    notes=change.notes,
                    actor=actor,
                )
            else:
                await self._update_group(conn, resource_id, change.doc, stamp)
                affected = await memberships.apply(conn, resource_id, change.members)
                if rows.group_identity(current.doc) != rows.group_identity(change.doc):
                    # Rules match on displayName (or externalId): every member may move.
                    affected |= await effects.members_of(conn, resource_id)
                await effects.group_written(
                    conn, resource_id, "group.update", affected, change, now, actor=actor
                )
            # What was written is what a read would give back (the row was read under its
            # lock, so its version is one more): only the relations are read.
            written = replace(
                current, doc=change.doc, last_modified=stamp, version=current.version + 1
            )
            if not with_members:
                return written
            (written,) = await self._attach_relations(conn, kind, [written])
            return written

        return await self.db.write(body, notify=True)

    async def delete(
        self,
        kind: ResourceKind,
        resource_id: str,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> None:
        table = "users" if kind == "User" else "groups"
        actor = ACTOR.get()

        async def body(conn: WriteConn) -> None:
            current = await self._read(conn, kind, resource_id, with_members=False, lock=True)
            if expected_version is not None and current.version != expected_version:
                raise VersionMismatch(f"{kind} {resource_id} is at version {current.version}")
            if kind == "User":
                await self._touch_groups_of(conn, resource_id)
                await effects.user_written(conn, resource_id, current.doc, None, now, actor=actor)
            else:
                members = await effects.members_of(conn, resource_id)
                gone = Change(doc=current.doc)
                await effects.group_written(
                    conn, resource_id, "group.delete", members, gone, now, actor=actor
                )
            await conn.execute(sql.DELETE_BY_ID.format(table=table), (resource_id,))

        await self.db.write(body, notify=True)

    async def search(self, kind: ResourceKind, query: Query) -> Page:
        table = USERS_TABLE if kind == "User" else GROUPS_TABLE
        dialect = self.db.dialect
        where, params = (
            ("TRUE", []) if query.filter is None else dialect.compile_filter(query.filter, table)
        )
        async with self._reader.execute(
            sql.COUNT_WHERE.format(table=table.name, where=where), params
        ) as cursor:
            row = await cursor.fetchone()
            total = int(row[0]) if row else 0
        if query.count <= 0 or total < query.start_index:
            return Page(total=total, resources=())
        order = "id"
        if query.sort_by is not None:
            direction = "DESC" if query.descending else "ASC"
            order = f"{dialect.sort_expression(query.sort_by, table)} {direction} NULLS LAST, id"
        window = dialect.window(len(params))
        search = sql.SEARCH.format(table=table.name, where=where, order=order, window=window)
        rows = await self._reader.execute_fetchall(
            search, [*params, query.count, query.start_index - 1]
        )
        resources_ = [self._resource(kind, row) for row in rows]
        if query.with_members:
            resources_ = await self._attach_relations(
                self._reader, kind, resources_, limit=query.member_limit
            )
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
        async with self._reader.execute(sql.FIND_USER, (user_name.casefold(),)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._resource("User", row)

    async def applied_grants(self, user_names: Collection[str] | None = None) -> set[Grant]:
        return await policy_reads.applied_grants(self._reader, user_names)

    async def policy_user(self, user_name: str) -> tuple[UserState | None, list[GroupInfo]]:
        return await policy_reads.policy_user(self._reader, user_name)

    async def policy_users_named(
        self, user_names: Collection[str]
    ) -> dict[str, tuple[UserState | None, list[GroupInfo]]]:
        return await policy_reads.policy_users_named(self._reader, user_names)

    async def record_applied(
        self,
        grant: Grant,
        reason: str,
        now: datetime,
        audit: AuditEntry | None = None,
        *,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        async def body(conn: WriteConn) -> None:
            await policy_reads.record_applied(conn, grant, reason, now)
            if audit is not None:
                await pipeline_sql.append_audit(conn, audit)
            if also is not None:
                await also(conn)

        await self.db.write(body)

    async def forget_applied(
        self,
        grant: Grant,
        audit: AuditEntry | None = None,
        mover_requested_at: str | None = None,
    ) -> None:
        async def body(conn: WriteConn) -> None:
            was_applied = await policy_reads.forget_applied(conn, grant)
            if audit is not None:
                await pipeline_sql.append_audit(conn, audit)
            if was_applied and mover_requested_at is not None and audit is not None:
                # Recorded with the revocation's audit row: a crash cannot keep one only.
                revoked_at = parse_timestamp(audit.at)
                await movers.insert(conn, grant, mover_requested_at, revoked_at, audit.actor)

        await self.db.write(body)

    async def record_effects(self, effects: Sequence[Effect]) -> None:
        if not effects:
            return

        async def body(conn: WriteConn) -> None:
            for effect in effects:
                grant = effect.grant
                if grant is None or effect.kind == "audit":
                    continue
                if effect.kind == "granted":
                    assert effect.now is not None
                    await policy_reads.record_applied(conn, grant, effect.reason, effect.now)
                elif await policy_reads.forget_applied(conn, grant) and effect.mover_requested_at:
                    revoked_at = parse_timestamp(effect.audit.at)
                    await movers.insert(
                        conn, grant, effect.mover_requested_at, revoked_at, effect.audit.actor
                    )
            await pipeline_sql.append_audits(conn, [effect.audit for effect in effects])
            for effect in effects:
                if effect.also is not None:
                    await effect.also(conn)

        await self.db.write(body)

    async def _read(
        self,
        conn: Conn,
        kind: ResourceKind,
        resource_id: str,
        *,
        with_members: bool,
        lock: bool = False,
    ) -> StoredResource:
        table = "users" if kind == "User" else "groups"
        suffix = conn.dialect.for_update if lock else ""
        read = sql.READ_BY_ID.format(table=table, lock=suffix)
        async with conn.execute(read, (resource_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise ResourceNotFound(f"{kind} {resource_id} not found")
        resource = self._resource(kind, row)
        if with_members:
            (resource,) = await self._attach_relations(conn, kind, [resource])
        return resource

    @staticmethod
    def _resource(kind: ResourceKind, row: Row) -> StoredResource:
        return StoredResource(
            kind=kind,
            id=row["id"],
            doc=json.loads(row["doc"]),
            created=row["created"],
            last_modified=row["last_modified"],
            version=row["version"],
        )

    async def _attach_relations(
        self,
        conn: Conn,
        kind: ResourceKind,
        items: list[StoredResource],
        *,
        limit: int | None = None,
    ) -> list[StoredResource]:
        """Fill Group.members or User.groups for ``items`` with one query per chunk of ids;
        a group with more than ``limit`` members is left without them (counted first, so
        they are never read)."""
        if not items:
            return items
        ids = [item.id for item in items]
        if kind == "Group" and limit is not None:
            large = await self._larger_than(conn, ids, limit)
            ids = [item_id for item_id in ids if item_id not in large]
        found: dict[str, list[Any]] = {item_id: [] for item_id in ids}
        for chunk in chunks(ids):
            head = sql.MEMBERS_OF_GROUPS if kind == "Group" else sql.GROUPS_OF_USERS
            async with conn.execute(f"{head} ({marks(len(chunk))})", chunk) as cursor:
                async for row in cursor:
                    found[row["owner"]].append((row["ref"], row["display"]))
        result = []
        for item in items:
            if item.id not in found:
                result.append(item)
                continue
            pairs = found[item.id]
            if kind == "Group":
                members = tuple(Member(value=ref, display=display) for ref, display in pairs)
                result.append(replace(item, members=members))
            else:
                groups = tuple(GroupRef(value=ref, display=display) for ref, display in pairs)
                result.append(replace(item, groups=groups))
        return result

    @staticmethod
    async def _larger_than(conn: Conn, group_ids: list[str], limit: int) -> set[str]:
        large: set[str] = set()
        for chunk in chunks(group_ids):
            larger = sql.GROUPS_LARGER_THAN.format(marks=marks(len(chunk)), limit=int(limit))
            async with conn.execute(larger, chunk) as cursor:
                large.update([row[0] async for row in cursor])
        return large

    async def _insert_user(self, conn: Conn, user_id: str, doc: dict[str, Any], stamp: str) -> None:
        try:
            await conn.execute(
                sql.INSERT_USER,
                (user_id, *rows.user_columns(doc), stamp, stamp),
            )
        except IntegrityError as exc:
            raise DuplicateUserName(f"userName {doc.get('userName')!r} is already taken") from exc

    async def _update_user(self, conn: Conn, user_id: str, doc: dict[str, Any], stamp: str) -> None:
        try:
            await conn.execute(
                sql.UPDATE_USER,
                (*rows.user_columns(doc), stamp, user_id),
            )
        except IntegrityError as exc:
            raise DuplicateUserName(f"userName {doc.get('userName')!r} is already taken") from exc

    async def _insert_group(
        self, conn: Conn, group_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        await conn.execute(
            sql.INSERT_GROUP,
            (group_id, *rows.group_columns(doc), stamp, stamp),
        )

    async def _update_group(
        self, conn: Conn, group_id: str, doc: dict[str, Any], stamp: str
    ) -> None:
        await conn.execute(
            sql.UPDATE_GROUP,
            (*rows.group_columns(doc), stamp, group_id),
        )

    async def _touch_groups_of(self, conn: Conn, user_id: str) -> None:
        """A deleted user leaves its groups: their version moves so cached ETags go stale."""
        await conn.execute(
            sql.TOUCH_GROUPS_OF_USER,
            (user_id,),
        )

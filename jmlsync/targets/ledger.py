"""The ledger: the embedded default target, principals and grants in a local SQLite file.

It is the reference implementation of the Target port. Beside the grants it keeps ``writes``, an
append-only log with one row per write that changed something, so tests can prove that retries
and crashes never applied an operation twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.ports import BatchStep
from jmlsync.targets.settings import TargetSection

WriteOp = Literal["create_principal", "enable_principal", "grant", "revoke", "disable_principal"]

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS principals (
    user TEXT NOT NULL PRIMARY KEY,
    enabled INTEGER NOT NULL,
    display_name TEXT,
    email TEXT,
    external_id TEXT,
    created_at TEXT,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL REFERENCES principals (user),
    role TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (user, role)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_by_role ON grants (role);
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    user TEXT NOT NULL,
    role TEXT,
    at TEXT NOT NULL
);
COMMIT;
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class LedgerTargetSettings(TargetSection):
    """``kind = "ledger"``: a local SQLite file of principals and grants."""

    kind: Literal["ledger"]
    path: Path


class LedgerTarget:
    """The Target port on one SQLite file: a writer connection and a query-only reader."""

    def __init__(
        self,
        name: str,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        page_size: int = 1000,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.name = name
        self._writer = writer
        self._reader = reader
        self._page_size = page_size
        self._write_lock = asyncio.Lock()
        #: The file opened, when opened by path: ``ping`` checks it is still there.
        self.path: Path | None = None

    @classmethod
    async def open(cls, name: str, path: Path, *, page_size: int = 1000) -> LedgerTarget:
        """Open the ledger at ``path``, creating its directory and schema when missing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path)
        await writer.executescript(_SCHEMA)
        reader = await cls._connect(path)
        await reader.execute("PRAGMA query_only = ON")
        target = cls(name, writer, reader, page_size=page_size)
        target.path = path
        return target

    @staticmethod
    async def _connect(path: Path) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def close(self) -> None:
        # Under the lock, so a write in flight commits before its connection goes away.
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()

    async def ping(self) -> None:
        # An open connection keeps reading a file deleted or replaced under it: writes would
        # land in no file anyone reads again.
        if self.path is not None and not self.path.is_file():
            raise TransientTargetError(f"ledger {self.name!r}: {str(self.path)!r} is gone")
        await self._fetch("SELECT 1 FROM principals LIMIT 1", ())

    async def list_grants(self) -> AsyncIterator[Grant]:
        async for user, role in self._keyset("SELECT user, role FROM grants", ("user", "role")):
            yield Grant(target=self.name, user=user, role=role)

    async def list_principals(self) -> AsyncIterator[Principal]:
        async for user, enabled in self._keyset("SELECT user, enabled FROM principals", ("user",)):
            yield Principal(user=user, enabled=bool(enabled))

    async def grants_of(self, user: str) -> frozenset[str]:
        rows = await self._fetch("SELECT role FROM grants WHERE user = ?", (user,))
        return frozenset(row[0] for row in rows)

    async def principal(self, user: str) -> Principal | None:
        rows = await self._fetch("SELECT enabled FROM principals WHERE user = ?", (user,))
        return Principal(user=user, enabled=bool(rows[0][0])) if rows else None

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        async with self._transaction() as conn:
            await self._ensure(conn, spec, _now())

    async def grant(self, user: str, role: str) -> None:
        async with self._transaction() as conn:
            await self._grant(conn, user, role, _now())

    async def revoke(self, user: str, role: str) -> None:
        async with self._transaction() as conn:
            await self._revoke(conn, user, role, _now())

    async def disable_principal(self, user: str) -> None:
        async with self._transaction() as conn:
            await self._disable(conn, user, _now())

    async def apply_batch(self, steps: Sequence[BatchStep]) -> None:
        """Every step in one transaction (one commit, one fsync): all of them or none.

        When each principal's steps come in the order a plan makes them (revocations, then
        the disable, then ensure and grants), the steps run as a few set statements, one per
        kind, in that order; any other order runs step by step."""
        at = _now()
        async with self._transaction() as conn:
            if _in_plan_order(steps):
                await self._apply_sets(conn, steps, at)
                return
            for step in steps:
                if step.action == "ensure":
                    assert step.spec is not None
                    await self._ensure(conn, step.spec, at)
                elif step.action == "grant":
                    assert step.role is not None
                    await self._grant(conn, step.user, step.role, at)
                elif step.action == "revoke":
                    assert step.role is not None
                    await self._revoke(conn, step.user, step.role, at)
                else:
                    await self._disable(conn, step.user, at)

    async def _apply_sets(
        self, conn: aiosqlite.Connection, steps: Sequence[BatchStep], at: str
    ) -> None:
        """The steps as one statement per kind and chunk, each logging what it changed."""

        def of(action: str) -> list[BatchStep]:
            return [step for step in steps if step.action == action]

        logged: list[tuple[str, str, str | None, str]] = []
        for chunk in _chunks(of("revoke")):
            pairs = ", ".join("(?, ?)" for _ in chunk)
            params = [value for step in chunk for value in (step.user, step.role)]
            rows = await _returning(
                conn,
                f"DELETE FROM grants WHERE (user, role) IN (VALUES {pairs}) RETURNING user, role",
                params,
            )
            logged += [("revoke", row[0], row[1], at) for row in rows]
        for chunk in _chunks(of("disable")):
            marks = ", ".join("?" * len(chunk))
            rows = await _returning(
                conn,
                "UPDATE principals SET enabled = 0, updated_at = ?"
                f" WHERE enabled AND user IN ({marks}) RETURNING user",
                [at, *(step.user for step in chunk)],
            )
            logged += [("disable_principal", row[0], None, at) for row in rows]
        specs: dict[str, PrincipalSpec] = {}
        for step in of("ensure"):
            assert step.spec is not None
            specs.setdefault(step.user, step.spec)
        for group in _chunks(list(specs.values())):
            values = ", ".join("(?, 1, ?, ?, ?, ?, ?)" for _ in group)
            params = [
                value
                for spec in group
                for value in (spec.user, spec.display_name, spec.email, spec.external_id, at, at)
            ]
            created = {
                row[0]
                for row in await _returning(
                    conn,
                    "INSERT INTO principals (user, enabled, display_name, email, external_id,"
                    f" created_at, updated_at) VALUES {values}"
                    " ON CONFLICT (user) DO NOTHING RETURNING user",
                    params,
                )
            }
            logged += [
                ("create_principal", spec.user, None, at) for spec in group if spec.user in created
            ]
            others = [spec.user for spec in group if spec.user not in created]
            if others:
                rows = await _returning(
                    conn,
                    "UPDATE principals SET enabled = 1, updated_at = ?"
                    f" WHERE NOT enabled AND user IN ({', '.join('?' * len(others))})"
                    " RETURNING user",
                    [at, *others],
                )
                logged += [("enable_principal", row[0], None, at) for row in rows]
        for chunk in _chunks(of("grant")):
            users = sorted({step.user for step in chunk})
            known = {
                row[0]
                for row in await _returning(
                    conn,
                    f"SELECT user FROM principals WHERE user IN ({', '.join('?' * len(users))})",
                    users,
                )
            }
            if missing := [user for user in users if user not in known]:
                raise PermanentTargetError(f"ledger {self.name!r} has no principal {missing[0]!r}")
            values = ", ".join("(?, ?, ?)" for _ in chunk)
            params = [value for step in chunk for value in (step.user, step.role, at)]
            rows = await _returning(
                conn,
                f"INSERT INTO grants (user, role, granted_at) VALUES {values}"
                " ON CONFLICT (user, role) DO NOTHING RETURNING user, role",
                params,
            )
            logged += [("grant", row[0], row[1], at) for row in rows]
        if logged:
            await conn.executemany(
                "INSERT INTO writes (op, user, role, at) VALUES (?, ?, ?, ?)", logged
            )

    async def read_batch(
        self, users: Sequence[str]
    ) -> dict[str, tuple[frozenset[str], Principal | None]]:
        found: dict[str, tuple[frozenset[str], Principal | None]] = {}
        names = sorted(set(users))
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            roles: dict[str, set[str]] = {}
            for user, role in await self._fetch(
                f"SELECT user, role FROM grants WHERE user IN ({marks})", chunk
            ):
                roles.setdefault(user, set()).add(role)
            enabled = {
                row[0]: bool(row[1])
                for row in await self._fetch(
                    f"SELECT user, enabled FROM principals WHERE user IN ({marks})", chunk
                )
            }
            for user in chunk:
                principal = Principal(user, enabled[user]) if user in enabled else None
                found[user] = (frozenset(roles.get(user, ())), principal)
        return found

    async def _ensure(self, conn: aiosqlite.Connection, spec: PrincipalSpec, at: str) -> None:
        if await _changed(
            conn,
            "INSERT INTO principals (user, enabled, display_name, email, external_id,"
            " created_at, updated_at) VALUES (?, 1, ?, ?, ?, ?, ?)"
            " ON CONFLICT (user) DO NOTHING",
            (spec.user, spec.display_name, spec.email, spec.external_id, at, at),
        ):
            await _log(conn, "create_principal", spec.user, None, at)
        elif await _changed(
            conn,
            "UPDATE principals SET enabled = 1, updated_at = ? WHERE user = ? AND NOT enabled",
            (at, spec.user),
        ):
            await _log(conn, "enable_principal", spec.user, None, at)

    async def _grant(self, conn: aiosqlite.Connection, user: str, role: str, at: str) -> None:
        async with conn.execute("SELECT 1 FROM principals WHERE user = ?", (user,)) as cursor:
            if await cursor.fetchone() is None:
                raise PermanentTargetError(f"ledger {self.name!r} has no principal {user!r}")
        if await _changed(
            conn,
            "INSERT INTO grants (user, role, granted_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user, role) DO NOTHING",
            (user, role, at),
        ):
            await _log(conn, "grant", user, role, at)

    async def _revoke(self, conn: aiosqlite.Connection, user: str, role: str, at: str) -> None:
        sql = "DELETE FROM grants WHERE user = ? AND role = ?"
        if await _changed(conn, sql, (user, role)):
            await _log(conn, "revoke", user, role, at)

    async def _disable(self, conn: aiosqlite.Connection, user: str, at: str) -> None:
        sql = "UPDATE principals SET enabled = 0, updated_at = ? WHERE user = ? AND enabled"
        if await _changed(conn, sql, (at, user)):
            await _log(conn, "disable_principal", user, None, at)

    async def write_count(self, op: str | None = None) -> int:
        """How many changing writes the ledger has logged, of one ``op`` or of all."""
        if op is None:
            rows = await self._fetch("SELECT count(*) FROM writes", ())
        else:
            rows = await self._fetch("SELECT count(*) FROM writes WHERE op = ?", (op,))
        return int(rows[0][0])

    async def writes(self) -> list[tuple[str, str, str | None]]:
        """The write log, oldest first, as ``(op, user, role)``; principal writes have no role."""
        rows = await self._fetch("SELECT op, user, role FROM writes ORDER BY seq", ())
        return [(row[0], row[1], row[2]) for row in rows]

    @contextmanager
    def _translated(self) -> Iterator[None]:
        # A busy or unreadable file may clear up; anything else SQLite says will not.
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise TransientTargetError(f"ledger {self.name!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentTargetError(f"ledger {self.name!r}: {exc}") from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            with self._translated():
                try:
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield self._writer
                    await self._writer.execute("COMMIT")
                except BaseException:
                    # A cancelled BEGIN or COMMIT still runs on the connection's thread;
                    # rollback() queues behind it, ends whatever transaction it left, and does
                    # nothing when there is none.
                    await self._writer.rollback()
                    raise

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        with self._translated():
            return list(await self._reader.execute_fetchall(sql, params))

    async def _keyset(self, select: str, key: Sequence[str]) -> AsyncIterator[sqlite3.Row]:
        """Rows of ``select`` by pages ordered on ``key``, the leading columns it selects.

        Each page is its own query, from after the last key seen, so no read transaction stays
        open while the consumer works and memory holds one page at a time.
        """
        columns = ", ".join(key)
        after = f"{select} WHERE ({columns}) > ({', '.join('?' * len(key))})"
        last: tuple[Any, ...] = ()
        while True:
            sql = f"{after if last else select} ORDER BY {columns} LIMIT ?"
            rows = await self._fetch(sql, (*last, self._page_size))
            for row in rows:
                yield row
            if len(rows) < self._page_size:
                return
            last = tuple(rows[-1][: len(key)])


#: The order a plan gives one principal's steps (see ``apply_batch``).
_RANK = {"revoke": 0, "disable": 1, "ensure": 2, "grant": 2}
_CHUNK = 300

T = TypeVar("T")


def _in_plan_order(steps: Sequence[BatchStep]) -> bool:
    """Whether each principal's steps come revocations, disable, then ensure and grants,
    with each principal ensured before its grants and no step twice."""
    rank: dict[str, int] = {}
    ensured: set[str] = set()
    seen: set[tuple[str, str, str | None]] = set()
    for step in steps:
        key = (step.action, step.user, step.role)
        if key in seen or _RANK[step.action] < rank.get(step.user, 0):
            return False
        seen.add(key)
        rank[step.user] = _RANK[step.action]
        if step.action == "ensure":
            ensured.add(step.user)
        elif step.action == "grant" and step.user not in ensured:
            return False
    return True


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


async def _returning(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any]
) -> list[sqlite3.Row]:
    async with conn.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _changed(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> bool:
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount > 0


async def _log(
    conn: aiosqlite.Connection, op: WriteOp, user: str, role: str | None, at: str
) -> None:
    await conn.execute(
        "INSERT INTO writes (op, user, role, at) VALUES (?, ?, ?, ?)", (op, user, role, at)
    )

"""The store on PostgreSQL (asyncpg), for several replicas on one database.

The SQL modules of the store are shared with SQLite: they see a connection with the same
surface (``execute``, ``executemany``, ``execute_fetchall``, ``?`` placeholders) and ask
:func:`jmlsync.store.database.for_update` / ``skip_locked`` where PostgreSQL must lock. Each
write body runs in its own READ COMMITTED transaction from the pool; rows a body reads in order
to change them are locked (``FOR UPDATE``), queue claims skip rows other replicas hold
(``FOR UPDATE SKIP LOCKED``), and audit appends take the chain's head row lock.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar

import asyncpg

from jmlsync.store.database import IntegrityError

T = TypeVar("T")
MIGRATION_LOCK = 7_263_001
_PLACEHOLDER = re.compile(r"\?")
_NUMBERED = re.compile(r"\$\d")


def _numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (SQL already numbered is left as it is)."""
    if _NUMBERED.search(sql):
        return sql
    counter = iter(range(1, 10**6))
    return _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("jmlsync.store").joinpath("migrations").joinpath("postgresql")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8")))
    return sorted(found)


class PgCursor:
    """The rows of one statement, with aiosqlite's cursor surface."""

    def __init__(self, rows: list[asyncpg.Record], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    async def fetchone(self) -> asyncpg.Record | None:
        return self._rows[0] if self._rows else None

    async def fetchall(self) -> list[asyncpg.Record]:
        return self._rows

    def __aiter__(self) -> AsyncIterator[asyncpg.Record]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[asyncpg.Record]:
        for row in self._rows:
            yield row


class _Statement:
    """``await conn.execute(...)`` or ``async with conn.execute(...) as cursor``."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, PgCursor]]) -> None:
        self._run = run

    def __await__(self) -> Any:
        return self._run().__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._run()

    async def __aexit__(self, *_exc: object) -> None:
        return None


def _rowcount(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PgConn:
    """An asyncpg connection with the surface the shared SQL modules use."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        async def run() -> PgCursor:
            text = _numbered(sql)
            try:
                if _returns_rows(text):
                    rows = await self._conn.fetch(text, *params)
                    return PgCursor(list(rows), len(rows))
                status = await self._conn.execute(text, *params)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise IntegrityError(str(exc)) from exc
            return PgCursor([], _rowcount(status))

        return _Statement(run)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        batch = list(rows)
        if batch:
            try:
                await self._conn.executemany(_numbered(sql), batch)
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise IntegrityError(str(exc)) from exc
        return PgCursor([], len(batch))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._conn.fetch(_numbered(sql), *params))


def _returns_rows(sql: str) -> bool:
    head = sql.lstrip().split(None, 1)[0].upper()
    return head in ("SELECT", "WITH", "VALUES") or " RETURNING " in sql.upper()


class PgReader:
    """Reads outside write transactions: one pooled connection per statement."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        async def run() -> PgCursor:
            async with self._pool.acquire() as conn:
                cursor: PgCursor = await PgConn(conn).execute(sql, params)
                return cursor

        return _Statement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.acquire() as conn:
            return await PgConn(conn).execute_fetchall(sql, params)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Documents travel as JSON text, as on SQLite: the store parses and writes them itself.
    await conn.set_type_codec(
        "jsonb", encoder=lambda text: text, decoder=lambda text: text, schema="pg_catalog"
    )


class PgDatabase:
    """The PostgreSQL twin of :class:`jmlsync.store.database.Database`."""

    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn
        self.reader = PgReader(pool)
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, dsn: str, *, min_size: int = 2, max_size: int = 10) -> PgDatabase:
        """Connect a pool to ``dsn`` and apply pending migrations (one replica at a time)."""
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection
        )
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await _migrate(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return cls(pool, dsn)

    async def close(self) -> None:
        await self._pool.close()

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def write(
        self, body: Callable[[Any], Coroutine[Any, Any, T]], *, notify: bool = False
    ) -> Awaitable[T]:
        return self._write(body, notify)

    async def _write(self, body: Callable[[Any], Coroutine[Any, Any, T]], notify: bool) -> T:
        async with self._pool.acquire() as conn, conn.transaction():
            result = await body(PgConn(conn))
        if notify:
            for callback in self._after_commit:
                callback()
        return result

    async def acquire_leadership(self, key: int) -> LeaderLock:
        """A connection held for the process's life, to hold an advisory lock on."""
        return LeaderLock(await asyncpg.connect(self.dsn), key)


async def _migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}
    for number, name, script in _migrations():
        if number in applied:
            continue
        async with conn.transaction():
            await conn.execute(script)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2,"
                " to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))",
                number,
                name,
            )


class LeaderLock:
    """Leadership among replicas: a session-level advisory lock on a dedicated connection.

    Whoever holds it runs the scheduled jobs; if that process dies, its connection closes,
    PostgreSQL releases the lock, and another replica's next ``try_acquire`` takes it.
    """

    def __init__(self, conn: asyncpg.Connection, key: int) -> None:
        self._conn = conn
        self._key = key
        self.held = False
        # The scheduler and the alert deliverer both ask; one connection runs one query.
        self._asking = asyncio.Lock()

    async def try_acquire(self) -> bool:
        async with self._asking:
            return await self._try_acquire()

    async def _try_acquire(self) -> bool:
        if not self.held:
            self.held = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
            )
        return self.held

    async def close(self) -> None:
        await self._conn.close()

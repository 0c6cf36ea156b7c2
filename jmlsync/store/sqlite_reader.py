"""The query-only SQLite readers, with the store's outage semantics.

Reads go through aiosqlite on connections of their own (WAL lets them run beside a write),
and a read always has a connection to itself until its cursor is closed or drained: on a
connection with a statement still open (a streamed listing, a plan's reads), a new statement
joins that statement's read transaction and sees the database as it was when it began,
missing what the writer committed since (a user just created, a leaver just deactivated).
So a read takes an idle connection, or opens another when none is idle; past a limit of kept
connections, the one it opens is closed once the read is done. It never shares a connection
and never waits for one (a read waiting for reads that wait in turn would hang the service).

An SQLite error that means "not now" (the disk failing, the file locked past
``busy_timeout``) is raised as :class:`~jmlsync.domain.errors.StoreUnavailable`, as writes
already are, so a read in a request answers 503 with ``Retry-After`` rather than an internal
error.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from typing import Any, TypeVar

import aiosqlite

from jmlsync.domain.errors import StoreUnavailable
from jmlsync.store.dialect import SQLITE, Dialect

T = TypeVar("T")


#: SQLite result codes (primary, without the extended bits) that mean "not now" rather than
#: "not this": the disk is full or failing, another process holds the lock past
#: busy_timeout, the file cannot be opened or written.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOMEM,
    }
)


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable an SQLite error stands for, or None when it is not an outage."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            return StoreUnavailable(f"SQLite: {exc}")
    return None


def _outage(exc: sqlite3.DatabaseError) -> BaseException:
    found = unavailable(exc)
    return found if found is not None else exc


async def _translated(step: Awaitable[T]) -> T:
    try:
        return await step
    except sqlite3.DatabaseError as exc:
        error = _outage(exc)
        if error is exc:
            raise
        raise error from exc


class ReadCursor:
    """The rows of one read, with aiosqlite's cursor surface. The connection is the read's
    until the cursor is closed or has given its last row."""

    #: Rows fetched per trip to the connection's thread when iterating.
    iter_chunk_size = 256

    def __init__(self, cursor: aiosqlite.Cursor, release: Callable[[], None]) -> None:
        self._cursor = cursor
        self._release: Callable[[], None] | None = release

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    async def fetchone(self) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await _translated(self._cursor.fetchone())
        if row is None:
            self._done()
        return row

    async def fetchall(self) -> list[sqlite3.Row]:
        try:
            return list(await _translated(self._cursor.fetchall()))
        finally:
            self._done()

    def __aiter__(self) -> AsyncIterator[sqlite3.Row]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[sqlite3.Row]:
        try:
            while True:
                rows = await _translated(self._cursor.fetchmany(self.iter_chunk_size))
                if not rows:
                    return
                for row in rows:
                    yield row
        finally:
            self._done()

    async def close(self) -> None:
        try:
            await self._cursor.close()
        finally:
            self._done()

    def __del__(self) -> None:
        # A cursor dropped without being closed or drained gives its connection back.
        self._done()


class _ReadStatement:
    """``await reader.execute(...)`` or ``async with reader.execute(...) as cursor``."""

    def __init__(self, run: Callable[[], Awaitable[ReadCursor]]) -> None:
        self._run = run
        self._cursor: ReadCursor | None = None

    def __await__(self) -> Generator[Any, None, ReadCursor]:
        return self._run().__await__()

    async def __aenter__(self) -> ReadCursor:
        self._cursor = await self._run()
        return self._cursor

    async def __aexit__(self, *_exc: object) -> None:
        if self._cursor is not None:
            await self._cursor.close()


class SqliteReader:
    """The reader connections as the store's SQL modules see them: one surface, each read on
    a connection of its own (see the module's docstring)."""

    dialect: Dialect = SQLITE

    def __init__(
        self,
        conns: Sequence[aiosqlite.Connection],
        *,
        open_more: Callable[[], Awaitable[aiosqlite.Connection]] | None = None,
        limit: int | None = None,
    ) -> None:
        if not conns:
            raise ValueError("a reader needs at least one connection")
        self._kept = list(conns)
        self._idle = list(conns)
        self._open_more = open_more
        self._limit = max(len(conns), limit or len(conns))
        self._opening = 0
        #: Connections opened past the limit, for one read each.
        self._extra: set[aiosqlite.Connection] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """The connections open now (kept, and opened past the limit for one read)."""
        return len(self._kept) + len(self._extra)

    async def _acquire(self) -> aiosqlite.Connection:
        if self._idle:
            return self._idle.pop()
        if self._open_more is None:
            # Without a way to open more (tests of one connection): share the first.
            return self._kept[0]
        keep = len(self._kept) + self._opening < self._limit
        self._opening += keep
        try:
            conn = await _translated(self._open_more())
        finally:
            self._opening -= keep
        (self._kept.append if keep else self._extra.add)(conn)
        return conn

    def _release(self, conn: aiosqlite.Connection) -> None:
        if conn in self._extra:
            self._extra.discard(conn)
            closing = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        elif conn not in self._idle:
            self._idle.append(conn)

    def _giver(self, conn: aiosqlite.Connection) -> Callable[[], None]:
        def give_back() -> None:
            self._release(conn)

        return give_back

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _ReadStatement:
        async def run() -> ReadCursor:
            conn = await self._acquire()
            release = self._giver(conn)
            try:
                cursor = await _translated(conn.execute(sql, params))
            except BaseException:
                release()
                raise
            return ReadCursor(cursor, release)

        return _ReadStatement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        conn = await self._acquire()
        try:
            return list(await _translated(conn.execute_fetchall(sql, params)))
        finally:
            self._release(conn)

    async def close(self) -> None:
        for conn in [*self._kept, *self._extra]:
            await conn.close()
        self._extra.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)

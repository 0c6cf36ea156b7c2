"""The query-only SQLite readers, with the store's outage semantics.

Reads go through aiosqlite on connections of their own (WAL lets them run beside a write).
There are a few of them, and a read takes one with no statement open: on one connection, a
statement still open (a streamed listing, a plan's reads) keeps its read transaction, and
every read beside it would see the database as it was when that statement started, missing
what the writer committed since: a user just created, a membership just removed. Only when
every connection has a statement open does a read share the least busy one. An
SQLite error that means "not now" (the disk failing, the file locked past ``busy_timeout``)
is raised as :class:`~jmlsync.domain.errors.StoreUnavailable`, as writes already are, so a
read in a request answers 503 with ``Retry-After`` rather than an internal error.
"""

from __future__ import annotations

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
    """The reader connections as the store's SQL modules see them: one surface, and each
    read on a connection with no other statement open (see the module's docstring)."""

    dialect: Dialect = SQLITE

    def __init__(self, conns: Sequence[aiosqlite.Connection]) -> None:
        if not conns:
            raise ValueError("a reader needs at least one connection")
        self._conns = list(conns)
        #: Statements open on each connection.
        self._open = [0] * len(self._conns)

    def _take(self) -> int:
        index = min(range(len(self._conns)), key=self._open.__getitem__)
        self._open[index] += 1
        return index

    def _giver(self, index: int) -> Callable[[], None]:
        def give_back() -> None:
            self._open[index] -= 1

        return give_back

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _ReadStatement:
        async def run() -> ReadCursor:
            index = self._take()
            release = self._giver(index)
            try:
                cursor = await _translated(self._conns[index].execute(sql, params))
            except BaseException:
                release()
                raise
            return ReadCursor(cursor, release)

        return _ReadStatement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        index = self._take()
        try:
            return list(await _translated(self._conns[index].execute_fetchall(sql, params)))
        finally:
            self._open[index] -= 1

    async def close(self) -> None:
        for conn in self._conns:
            await conn.close()

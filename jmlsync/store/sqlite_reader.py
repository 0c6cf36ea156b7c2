"""The query-only SQLite reader, with the store's outage semantics.

Reads go through aiosqlite on their own connection (WAL lets them run beside a write). An
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
    """The rows of one read, with aiosqlite's cursor surface."""

    def __init__(self, cursor: aiosqlite.Cursor) -> None:
        self._cursor = cursor

    async def fetchone(self) -> sqlite3.Row | None:
        row: sqlite3.Row | None = await _translated(self._cursor.fetchone())
        return row

    async def fetchall(self) -> list[sqlite3.Row]:
        return list(await _translated(self._cursor.fetchall()))

    def __aiter__(self) -> AsyncIterator[sqlite3.Row]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[sqlite3.Row]:
        while True:
            rows = await _translated(self._cursor.fetchmany(256))
            if not rows:
                return
            for row in rows:
                yield row

    async def close(self) -> None:
        await self._cursor.close()


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
    """The reader connection as the store's SQL modules see it."""

    dialect: Dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _ReadStatement:
        async def run() -> ReadCursor:
            return ReadCursor(await _translated(self._conn.execute(sql, params)))

        return _ReadStatement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await _translated(self._conn.execute_fetchall(sql, params)))

    async def close(self) -> None:
        await self._conn.close()

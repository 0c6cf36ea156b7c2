"""The query-only SQLite readers, with the store's outage semantics.

Reads run on query-only connections (WAL lets them run beside a write), all served by one
thread. On a connection with a statement still open (a streamed listing, a plan's reads), a
new statement joins that statement's read transaction and sees the database as it was when
it began, missing what the writer committed since (a user just created, a leaver just
deactivated). So a read runs its statement and fetches its first rows in one step of the
reader thread, on a connection with no statement open; when that is the whole result (most
reads) the statement is finished in the same step and the connection is free again at once.
Only a read with more rows to come keeps its connection to itself until its cursor is
drained or closed, and later reads use another, opened in that thread when none is free (up
to a limit of connections kept; past it, the one opened is closed after its read). A read
never shares a connection with an open statement and never waits for one. One thread runs
every statement, as one connection's thread did: a thread per connection made the reads
contend with the event loop for the interpreter lock and halved the pipeline's throughput.

An SQLite error that means "not now" (the disk failing, the file locked past
``busy_timeout``) is raised as :class:`~jmlsync.domain.errors.StoreUnavailable`, as writes
already are, so a read in a request answers 503 with ``Retry-After`` rather than an internal
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

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


class _Pool:
    """The reader thread's connections; every method runs in that thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], limit: int) -> None:
        self._connect = connect
        self._limit = limit
        self.free: list[sqlite3.Connection] = []
        self.held: dict[int, tuple[sqlite3.Connection, sqlite3.Cursor]] = {}
        self.count = 0
        self._next = 0

    def open(self, initial: int) -> None:
        for _ in range(initial):
            self.free.append(self._connect())
            self.count += 1

    def _take(self) -> sqlite3.Connection:
        if self.free:
            return self.free.pop()
        self.count += 1
        return self._connect()

    def _give(self, conn: sqlite3.Connection) -> None:
        if len(self.free) + len(self.held) >= self._limit:
            self.count -= 1
            conn.close()
        else:
            self.free.append(conn)

    def first(
        self, sql: str, params: Sequence[Any], size: int
    ) -> tuple[list[sqlite3.Row], int | None]:
        """Run ``sql`` and fetch up to ``size`` rows; a handle when more are to come."""
        conn = self._take()
        try:
            cursor = conn.execute(sql, params)
            rows = cursor.fetchmany(size)
        except BaseException:
            self._give(conn)
            raise
        if len(rows) < size:
            cursor.close()
            self._give(conn)
            return rows, None
        self._next += 1
        self.held[self._next] = (conn, cursor)
        return rows, self._next

    def more(self, handle: int, size: int) -> list[sqlite3.Row]:
        """The next ``size`` rows of a held read; its connection is freed once it ends."""
        _conn, cursor = self.held[handle]
        try:
            rows = cursor.fetchmany(size)
        except BaseException:
            self.finish(handle)
            raise
        if len(rows) < size:
            self.finish(handle)
        return rows

    def finish(self, handle: int) -> None:
        found = self.held.pop(handle, None)
        if found is not None:
            conn, cursor = found
            cursor.close()
            self._give(conn)

    def all_rows(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        conn = self._take()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            self._give(conn)

    def close(self) -> None:
        for handle in list(self.held):
            self.finish(handle)
        for conn in self.free:
            conn.close()
        self.free.clear()
        self.count = 0


class ReadCursor:
    """The rows of one read, with aiosqlite's cursor surface: the first rows came with the
    statement; a read with more to come holds its connection until drained or closed."""

    #: Rows fetched per trip to the reader thread after the first.
    iter_chunk_size = 256

    def __init__(self, reader: SqliteReader, rows: list[sqlite3.Row], handle: int | None) -> None:
        self._reader = reader
        self._rows_left = rows
        self._at = 0
        self._handle = handle

    async def _refill(self) -> bool:
        """Fetch the next rows into the buffer; False when the read has ended."""
        if self._handle is None:
            return False
        handle = self._handle
        try:
            rows = await _translated(
                self._reader.run(self._reader.pool.more, handle, self.iter_chunk_size)
            )
        except BaseException:
            # Failed (the pool finished the read) or cancelled (perhaps before the fetch ran):
            # finishing again is harmless, and a cancelled read must not keep its connection.
            self._handle = None
            self._reader.release_later(handle)
            raise
        if len(rows) < self.iter_chunk_size:
            self._handle = None  # the pool finished it
        self._rows_left, self._at = rows, 0
        return bool(rows)

    async def fetchone(self) -> sqlite3.Row | None:
        if self._at >= len(self._rows_left) and not await self._refill():
            return None
        row = self._rows_left[self._at]
        self._at += 1
        return row

    async def fetchall(self) -> list[sqlite3.Row]:
        rows = self._rows_left[self._at :]
        self._at = len(self._rows_left)
        while await self._refill():
            rows.extend(self._rows_left)
            self._at = len(self._rows_left)
        return rows

    def __aiter__(self) -> AsyncIterator[sqlite3.Row]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[sqlite3.Row]:
        while True:
            while self._at < len(self._rows_left):
                row = self._rows_left[self._at]
                self._at += 1
                yield row
            if not await self._refill():
                return

    async def close(self) -> None:
        handle, self._handle = self._handle, None
        self._rows_left, self._at = [], 0
        if handle is not None:
            # Submitted whatever happens to this task: a cancelled close still frees it.
            await asyncio.shield(asyncio.wrap_future(self._reader.release(handle)))

    def __del__(self) -> None:
        # A cursor dropped while its read still holds a connection gives the connection back.
        handle, self._handle = self._handle, None
        if handle is not None:
            self._reader.release_later(handle)


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
    """The reader connections as the store's SQL modules see them (see the module's
    docstring). ``connect`` opens and configures a connection, in the reader thread."""

    dialect: Dialect = SQLITE

    #: Rows a read fetches with its statement: a result this small never holds a connection.
    first_rows = 256

    def __init__(self, executor: ThreadPoolExecutor, pool: _Pool) -> None:
        self._executor = executor
        self.pool = pool

    @classmethod
    async def open(
        cls, connect: Callable[[], sqlite3.Connection], *, initial: int, limit: int
    ) -> SqliteReader:
        """The reader thread and its first ``initial`` connections (up to ``limit`` kept)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jmlsync-sqlite-reader")
        pool = _Pool(connect, max(1, limit))
        try:
            await _translated(
                asyncio.get_running_loop().run_in_executor(executor, pool.open, initial)
            )
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(executor, pool.close)
            executor.shutdown(wait=False)
            raise
        return cls(executor, pool)

    def run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """``fn(*args)`` in the reader thread."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def release(self, handle: int) -> Future[None]:
        """Finish a held read in the reader thread; callable from any thread."""
        return self._executor.submit(self.pool.finish, handle)

    def release_later(self, handle: int) -> None:
        """:meth:`release`, for a cursor dropped without being closed or a cancelled read."""
        with contextlib.suppress(RuntimeError):  # the reader is already shut down
            self.release(handle)

    def _forget(self, started: Future[tuple[list[sqlite3.Row], int | None]]) -> None:
        if not started.cancelled() and started.exception() is None:
            handle = started.result()[1]
            if handle is not None:
                self.release_later(handle)

    @property
    def connections(self) -> int:
        """The connections open now."""
        return self.pool.count

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _ReadStatement:
        async def run() -> ReadCursor:
            started = self._executor.submit(self.pool.first, sql, params, self.first_rows)
            try:
                rows, handle = await _translated(asyncio.wrap_future(started))
            except asyncio.CancelledError:
                # The statement may run anyway: a read left holding a connection frees it.
                started.add_done_callback(self._forget)
                raise
            return ReadCursor(self, rows, handle)

        return _ReadStatement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await _translated(self.run(self.pool.all_rows, sql, params))

    async def close(self) -> None:
        await self.run(self.pool.close)
        self._executor.shutdown(wait=True)

"""One SQLite database: migrations, a query-only reader, and group-committed writes.

Reads run on reader connections of their own (one thread serves them), which WAL lets run
beside a write.

Writes are *transaction bodies*: ``async def body(conn)`` functions that touch nothing but
``conn``. They run whole in one writer thread, so a transaction costs one hop from the event
loop instead of one per statement, and the writer takes every body queued meanwhile into the
same ``BEGIN IMMEDIATE ... COMMIT``: each body inside its own SAVEPOINT (a failing body rolls
back alone), one commit and one fsync for the batch. A write returns only after the commit of
its batch, so an acknowledged change is durable; concurrent writers share the cost of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from jmlsync.store.connection import Body as Body
from jmlsync.store.connection import Conn as Conn
from jmlsync.store.connection import WriteConn as WriteConn
from jmlsync.store.dialect import SQLITE, Dialect
from jmlsync.store.health import WriteHealth
from jmlsync.store.sqlite_reader import SqliteReader, unavailable

T = TypeVar("T")
MAX_BATCH = 256


SqlValue = str | bytes | int | float | None


def _fold(value: SqlValue) -> SqlValue:
    return value.casefold() if isinstance(value, str) else value


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("jmlsync.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text("utf-8")))
    return sorted(found)


def _configure(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.create_function("fold", 1, _fold, deterministic=True)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for number, name, script in _migrations():
        if number in applied:
            continue
        statements = f"BEGIN IMMEDIATE;\n{script}\n"
        statements += "INSERT INTO schema_migrations VALUES"
        statements += f" ({number}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ'));\nCOMMIT;"
        conn.executescript(statements)


class WriteCursor:
    """A cursor of the writer connection, with aiosqlite's (awaitable) surface."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    async def fetchone(self) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._cursor.fetchone()
        return row

    async def fetchall(self) -> list[sqlite3.Row]:
        return list(self._cursor.fetchall())

    def __aiter__(self) -> AsyncIterator[sqlite3.Row]:
        return self._rows()

    async def _rows(self) -> AsyncIterator[sqlite3.Row]:
        for row in self._cursor:
            yield row


class _Statement(Generic[T]):
    """A statement result usable as ``await conn.execute(...)`` or ``async with``."""

    def __init__(self, run: Callable[[], T]) -> None:
        self._run = run

    def __await__(self) -> Generator[Any, None, T]:
        return self._result().__await__()

    async def _result(self) -> T:
        return self._run()

    async def __aenter__(self) -> T:
        return self._run()

    async def __aexit__(self, *_exc: object) -> None:
        return None


class SqliteWriteConn:
    """The writer connection as transaction bodies see it: the subset of aiosqlite's
    Connection they use, executed synchronously in the writer thread."""

    dialect: Dialect = SQLITE

    def __init__(self, raw: sqlite3.Connection) -> None:
        self._raw = raw
        #: The audit chain's next seq and head within the current batch (None: not read yet).
        self.audit_head: tuple[int, str] | None = None
        #: The batch's audit rows not inserted yet.
        self.audit_pending: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement[WriteCursor]:
        return _Statement(lambda: WriteCursor(self._raw.execute(sql, params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> WriteCursor:
        return WriteCursor(self._raw.executemany(sql, rows))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self._raw.execute(sql, params).fetchall())


def _run_body(body: Body[T], conn: WriteConn) -> T:
    """Drive a transaction body to its end: it may await only ``conn``, which never suspends."""
    coroutine = body(conn)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a transaction body awaited something other than its connection")


async def _nothing(_conn: WriteConn) -> None:
    return None


async def _keep_audit_head(conn: WriteConn) -> None:
    # Imported here: the pipeline's SQL imports this module.
    from jmlsync.store.pipeline_sql import keep_audit_head

    await keep_audit_head(conn)


@dataclass
class _Write:
    body: Body[Any]
    future: asyncio.Future[Any]
    notify: bool


#: Reader connections of one SQLite store opened with it; more are opened while reads overlap,
#: up to MAX_READERS, past which a read waits for one (each read has a connection to itself,
#: so it sees every commit made before it began: see :mod:`jmlsync.store.sqlite_reader`).
READERS = 4
MAX_READERS = 32


class Database:
    """The connections to one SQLite file, and the one way to write to it."""

    dialect: Dialect = SQLITE

    def __init__(
        self, raw: sqlite3.Connection, executor: ThreadPoolExecutor, reader: SqliteReader
    ) -> None:
        self._raw = raw
        self._conn = SqliteWriteConn(raw)
        self._executor = executor
        self.reader = reader
        self._queue: list[_Write] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._after_commit: list[Callable[[], None]] = []
        self.health = WriteHealth()

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "full") -> Database:
        """Open (creating if needed) the database at ``path`` and apply pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jmlsync-sqlite-writer")

        def connect() -> sqlite3.Connection:
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            _configure(raw, synchronous)
            _migrate(raw)
            return raw

        try:
            raw = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except sqlite3.DatabaseError as exc:
            executor.shutdown(wait=False)
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc

        def open_reader() -> sqlite3.Connection:
            reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                reader.row_factory = sqlite3.Row
                reader.execute("PRAGMA journal_mode = WAL")
                reader.execute("PRAGMA busy_timeout = 10000")
                reader.execute("PRAGMA query_only = ON")
                reader.create_function("fold", 1, _fold, deterministic=True)
            except BaseException:
                reader.close()
                raise
            return reader

        try:
            reader = await SqliteReader.open(open_reader, initial=READERS, limit=MAX_READERS)
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(executor, raw.close)
            executor.shutdown(wait=False)
            raise
        return cls(raw, executor, reader)

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        if self._writer is not None:
            await self.write(_nothing)  # writes are FIFO: this lands after every queued one
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self.reader.close()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._raw.close)
        self._executor.shutdown(wait=True)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each committed batch holding a ``notify=True`` write (one
        that may have made queue rows due: it wakes the workers)."""
        self._after_commit.append(callback)

    def write(self, body: Body[T], *, notify: bool = False) -> Awaitable[T]:
        """Run ``body`` in a transaction of its own (a savepoint of the batch); its result,
        once the batch is committed. An exception in ``body`` rolls back only ``body``."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(body, future, notify))
        self._queued.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="jmlsync-sqlite-writer")
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results, wrote = await loop.run_in_executor(self._executor, self._commit, batch)
                except BaseException as exc:  # the commit itself failed: nothing was written
                    error = unavailable(exc)
                    if error is not None:
                        self.health.refused(error)
                    results = [(False, error or exc)] * len(batch)
                else:
                    # Only a commit that changed rows proves the disk takes writes again: an
                    # empty lease finds nothing to write even while the disk is full.
                    if wrote:
                        self.health.accepted()
                self._settle(batch, results)

    def _settle(self, batch: list[_Write], results: list[tuple[bool, Any]]) -> None:
        notify = False
        for write, (ok, value) in zip(batch, results, strict=True):
            if write.future.done():
                continue
            if ok:
                write.future.set_result(value)
                notify = notify or write.notify
            else:
                write.future.set_exception(value)
        if notify:
            for callback in self._after_commit:
                callback()

    def _commit(self, batch: list[_Write]) -> tuple[list[tuple[bool, Any]], bool]:
        """In the writer thread: one transaction, one savepoint per body, one commit. The
        results, and whether the commit changed any row."""
        raw = self._raw
        if raw.in_transaction:  # a rollback after an I/O error may itself have failed
            raw.execute("ROLLBACK")
        changes = raw.total_changes
        raw.execute("BEGIN IMMEDIATE")
        # Another process may have appended since the last batch: read the head afresh.
        self._conn.audit_head = None
        self._conn.audit_pending = []
        results: list[tuple[bool, Any]] = []
        try:
            for write in batch:
                raw.execute("SAVEPOINT body")
                head, pending = self._conn.audit_head, list(self._conn.audit_pending)
                try:
                    value = _run_body(write.body, self._conn)
                except Exception as exc:
                    if unavailable(exc) is not None:
                        # SQLite may have rolled the whole transaction back already: the
                        # batch fails as one, so nothing of it is half-applied.
                        raise
                    raw.execute("ROLLBACK TO body")
                    raw.execute("RELEASE body")
                    # Its audit rows are gone with it (and the earlier bodies' rows it
                    # inserted).
                    self._conn.audit_head, self._conn.audit_pending = head, pending
                    results.append((False, exc))
                else:
                    raw.execute("RELEASE body")
                    results.append((True, value))
            _run_body(_keep_audit_head, self._conn)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
            raise
        return results, raw.total_changes != changes


class Backend(Protocol):
    """What the store, queue and assurance classes need of a database (SQLite or
    PostgreSQL): a reader, transaction bodies, commit callbacks, and closing."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def reader(self) -> Conn: ...

    def write(self, body: Body[T], *, notify: bool = False) -> Awaitable[T]: ...

    def on_commit(self, callback: Callable[[], None]) -> None: ...

    @property
    def health(self) -> WriteHealth: ...

    async def close(self) -> None: ...


#: A constraint was violated (a duplicate unique key): the one class every backend raises.
IntegrityError = sqlite3.IntegrityError

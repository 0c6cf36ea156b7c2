"""The store on PostgreSQL (asyncpg), for several replicas on one database.

The SQL modules of the store are shared with SQLite: they see a connection with the same
surface (``execute``, ``executemany``, ``execute_fetchall``, ``?`` placeholders) and ask
:attr:`Dialect.for_update <jmlsync.store.dialect.Dialect.for_update>` / ``skip_locked``
where PostgreSQL must lock. Write bodies are group-committed as on SQLite: one writer task
takes every body queued meanwhile into one READ COMMITTED transaction, each body in its own
savepoint (a failing body rolls back alone; one round trip between two bodies), one COMMIT
and one WAL flush for the batch, every write answered after it. Every directory write
appends to the audit chain under its head row lock, so transactions of their own would run
one after another anyway, each paying its own flush. Each batch takes that lock before
anything else, so replicas' batches queue for it instead of deadlocking on the rows they
lock. Rows a body reads in order to change them are locked (``FOR UPDATE``), queue claims
skip rows other replicas hold (``FOR UPDATE SKIP LOCKED``).

Every wait on the server is bounded (:class:`PgTimeouts`): connecting, each statement, and
taking a connection from the pool. A lost, stopped or frozen server, or one out of disk, turns
into :class:`~jmlsync.domain.errors.StoreUnavailable` (SCIM answers 503, workers back off),
never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import asyncpg

from jmlsync.domain.errors import StoreUnavailable
from jmlsync.store.connection import Body, WriteConn
from jmlsync.store.database import IntegrityError
from jmlsync.store.dialect import POSTGRESQL, Dialect
from jmlsync.store.health import WriteHealth
from jmlsync.store.pipeline_sql import OWNER_LOCK, keep_audit_head, lock_audit_head

T = TypeVar("T")
MIGRATION_LOCK = 7_263_001
#: The most write bodies one transaction takes (as on SQLite).
MAX_BATCH = 256

#: What means "the server cannot take this now" rather than "this is wrong": a connection
#: lost or refused, a timeout, an operator or crash shutdown, a server starting up, out of
#: disk, memory or connections (SQLSTATE classes 08, 57, 53 and 58). asyncpg's client-state
#: errors are here too: a connection the server dropped mid-statement can be left in one.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.PostgresSystemError,
)


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable a PostgreSQL or network error stands for, else None."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, _UNAVAILABLE):
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = "timed out waiting for the server"
        return StoreUnavailable(f"PostgreSQL: {reason}")
    return None


class _PoolFloorFilter(logging.Filter):
    """asyncpg logs a traceback every second while it cannot reconnect the pool's idle
    connections; the store's write health already logs the outage once, and its end."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to restore the pool connection floor")


logging.getLogger("asyncpg.pool").addFilter(_PoolFloorFilter())


@dataclass(frozen=True)
class PgTimeouts:
    """How long to wait for the server (``[store]`` ``*_timeout_seconds``)."""

    connect: float = 5.0
    command: float = 15.0
    acquire: float = 5.0


_PLACEHOLDER = re.compile(r"\?")
_NUMBERED = re.compile(r"\$\d")


@functools.lru_cache(maxsize=1024)
def _numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (SQL already numbered is left as it is).

    Remembered: the store sends the same few hundred statements over and over, and the same
    text lets asyncpg reuse its prepared statement."""
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

    def __await__(self) -> Generator[Any, None, PgCursor]:
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

    dialect: Dialect = POSTGRESQL

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        #: The audit chain's next seq and head within the current batch (None: not read yet).
        self.audit_head: tuple[int, str] | None = None
        #: The batch's audit rows not inserted yet.
        self.audit_pending: list[tuple[Any, ...]] = []

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

    dialect: Dialect = POSTGRESQL

    def __init__(self, pool: asyncpg.Pool, timeouts: PgTimeouts) -> None:
        self._pool = pool
        self._timeouts = timeouts

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Statement:
        async def run() -> PgCursor:
            try:
                async with self._pool.acquire(timeout=self._timeouts.acquire) as conn:
                    cursor: PgCursor = await PgConn(conn).execute(sql, params)
                    return cursor
            except _UNAVAILABLE as exc:
                raise unavailable(exc) or exc from exc

        return _Statement(run)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            async with self._pool.acquire(timeout=self._timeouts.acquire) as conn:
                return await PgConn(conn).execute_fetchall(sql, params)
        except _UNAVAILABLE as exc:
            raise unavailable(exc) or exc from exc


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Documents travel as JSON text, as on SQLite: the store parses and writes them itself.
    await conn.set_type_codec(
        "jsonb", encoder=lambda text: text, decoder=lambda text: text, schema="pg_catalog"
    )


async def _nothing(_conn: WriteConn) -> None:
    return None


@dataclass
class _Write:
    body: Callable[[Any], Coroutine[Any, Any, Any]]
    future: asyncio.Future[Any]
    notify: bool


class PgDatabase:
    """The PostgreSQL twin of :class:`jmlsync.store.database.Database`."""

    dialect: Dialect = POSTGRESQL

    def __init__(self, pool: asyncpg.Pool, dsn: str, timeouts: PgTimeouts | None = None) -> None:
        self._pool = pool
        self.dsn = dsn
        self.timeouts = timeouts or PgTimeouts()
        self.reader = PgReader(pool, self.timeouts)
        self.health = WriteHealth()
        self._after_commit: list[Callable[[], None]] = []
        self._queue: list[_Write] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        timeouts: PgTimeouts | None = None,
    ) -> PgDatabase:
        """Connect a pool to ``dsn`` and apply pending migrations (one replica at a time)."""
        timeouts = timeouts or PgTimeouts()
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                timeout=timeouts.connect,
                command_timeout=timeouts.command,
            )
        except _UNAVAILABLE as exc:
            raise unavailable(exc) or StoreUnavailable(str(exc)) from exc
        async with pool.acquire(timeout=timeouts.acquire) as conn:
            # Migrations may take long; the lock waits for another replica's migrations.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK, timeout=None)
            try:
                await _migrate(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return cls(pool, dsn, timeouts)

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # a lost server: nothing more to finish
                await self.write(_nothing)  # writes are FIFO: this lands after every queued one
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._pool.close()

    def on_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    def write(self, body: Body[T], *, notify: bool = False) -> Awaitable[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(body, future, notify))
        self._queued.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="jmlsync-pg-writer")
        return future

    async def _drain(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await self._commit(batch)
                except Exception as exc:  # the batch did not commit: nothing of it was written
                    # (or its COMMIT's outcome is unknown: then the client's retry meets its
                    # own change, as after any lost answer).
                    error = unavailable(exc)
                    if error is None and isinstance(exc, _UNAVAILABLE):
                        error = StoreUnavailable(str(exc))
                    if error is not None:
                        self.health.refused(error)
                    results = [(False, error or exc)] * len(batch)
                else:
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

    async def _commit(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """One READ COMMITTED transaction for the batch, one savepoint per body when there
        are several (a failing body rolls back alone), one commit. The bodies' results."""
        async with self._pool.acquire(timeout=self.timeouts.acquire) as raw:
            conn = PgConn(raw)
            transaction = raw.transaction()
            await transaction.start()
            try:
                await lock_audit_head(conn)
                taken = conn.audit_head
                results = await self._run_all(raw, conn, batch)
                written = any(ok for ok, _ in results)
                if written and conn.audit_head != taken:
                    await keep_audit_head(conn)
            except BaseException:
                with contextlib.suppress(*_UNAVAILABLE, asyncpg.PostgresError):
                    await transaction.rollback()
                raise
            if written:
                await transaction.commit()
            else:
                await transaction.rollback()
            return results

    @staticmethod
    async def _run_all(
        raw: asyncpg.Connection, conn: PgConn, batch: list[_Write]
    ) -> list[tuple[bool, Any]]:
        if len(batch) == 1:  # alone in its transaction: no savepoint to pay for
            try:
                return [(True, await batch[0].body(conn))]
            except _UNAVAILABLE:
                raise
            except Exception as exc:
                return [(False, exc)]
        # One savepoint name, one round trip between two bodies: a body that succeeded is
        # released and the next one's savepoint set in one message; one that failed is rolled
        # back to it, which keeps it set for the next. The COMMIT releases the last.
        results: list[tuple[bool, Any]] = []
        await raw.execute("SAVEPOINT body")
        last = len(batch) - 1
        for index, write in enumerate(batch):
            head, pending = conn.audit_head, list(conn.audit_pending)
            try:
                value = await write.body(conn)
            except _UNAVAILABLE:
                raise  # the connection is gone: the batch fails as one
            except Exception as exc:
                await raw.execute("ROLLBACK TO SAVEPOINT body")
                # Its audit rows are gone with it (and the earlier bodies' rows it inserted).
                conn.audit_head, conn.audit_pending = head, pending
                results.append((False, exc))
            else:
                if index < last:
                    await raw.execute("RELEASE SAVEPOINT body; SAVEPOINT body")
                results.append((True, value))
        return results

    async def acquire_leadership(self, key: int) -> LeaderLock:
        """A connection held for the process's life, to hold an advisory lock on."""
        return LeaderLock(await self.connect(), key, self.connect)

    async def connect(self) -> asyncpg.Connection:
        """A dedicated connection outside the pool, with the store's timeouts."""
        return await asyncpg.connect(
            self.dsn, timeout=self.timeouts.connect, command_timeout=self.timeouts.command
        )

    async def owner_lock(self, owner_key: int) -> OwnerLock:
        """Hold the session lock that tells other replicas this process's leases are live."""
        lock = OwnerLock(self.connect, owner_key)
        await lock.hold()
        return lock


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

    def __init__(
        self,
        conn: asyncpg.Connection,
        key: int,
        reconnect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
    ) -> None:
        self._conn = conn
        self._key = key
        self._reconnect = reconnect
        self.held = False
        # The scheduler and the alert deliverer both ask; one connection runs one query.
        self._asking = asyncio.Lock()

    async def try_acquire(self) -> bool:
        async with self._asking:
            return await self._try_acquire()

    async def _try_acquire(self) -> bool:
        if self._conn.is_closed() and self._reconnect is not None:
            # The server restarted or the network broke: the lock went with the session.
            self.held = False
            self._conn = await self._reconnect()
        if not self.held:
            self.held = bool(
                await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
            )
        return self.held

    async def close(self) -> None:
        await self._conn.close()


class OwnerLock:
    """A session advisory lock ``(OWNER_LOCK, owner_key)`` on a dedicated connection.

    Lease owners are ``worker-<owner_key as 8 hex digits>/<n>``: a lease whose owner's lock
    is gone belongs to a process that died (or lost the database), and any replica takes it
    back at once instead of waiting for it to expire.
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], key: int) -> None:
        self._connect = connect
        self._key = key
        self._conn: asyncpg.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def hold(self) -> None:
        """Hold the lock, taking it again on a new connection if the old one was lost.
        Raises StoreUnavailable when the server cannot be reached."""
        if self.held:
            return
        try:
            conn = await self._connect()
        except _UNAVAILABLE as exc:
            raise unavailable(exc) or StoreUnavailable(str(exc)) from exc
        try:
            await conn.execute("SELECT pg_advisory_lock($1, $2)", OWNER_LOCK, self._key)
        except BaseException as exc:
            conn.terminate()
            error = unavailable(exc)
            if error is None:
                raise
            raise error from exc
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

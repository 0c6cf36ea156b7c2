"""The connection surface the store's SQL code is written against, for both backends.

The SQL modules never see aiosqlite, sqlite3 or asyncpg: they see a :class:`Conn` (a reader,
or inside a transaction body the writer) and, in a body, a :class:`WriteConn`. The SQLite
reader (:class:`~jmlsync.store.sqlite_reader.SqliteReader`), the SQLite writer
(:class:`~jmlsync.store.database.SqliteWriteConn`) and the PostgreSQL adapters
(:class:`~jmlsync.store.postgres.PgReader`, :class:`~jmlsync.store.postgres.PgConn`)
implement them; SQL uses ``?`` placeholders throughout.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from typing import Any, Protocol, TypeVar

from jmlsync.store.dialect import Dialect

T = TypeVar("T")
C_co = TypeVar("C_co", covariant=True)


class Row(Protocol):
    """One result row: by position or by column name (``sqlite3.Row``, ``asyncpg.Record``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Any]: ...


class Cursor(Protocol):
    """The rows of one statement."""

    async def fetchone(self) -> Row | None: ...

    async def fetchall(self) -> Sequence[Row]: ...

    def __aiter__(self) -> AsyncIterator[Row]: ...


class ChangeCursor(Cursor, Protocol):
    """The rows of one statement in a transaction, and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...


class Statement(Protocol[C_co]):
    """A statement run either as ``await conn.execute(...)`` or
    ``async with conn.execute(...) as cursor``."""

    def __await__(self) -> Generator[Any, None, C_co]: ...

    async def __aenter__(self) -> C_co: ...

    async def __aexit__(self, *_exc: object) -> None: ...


class Conn(Protocol):
    """What the SQL helpers take: the reader, or inside a transaction body, the writer."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Statement[Cursor]: ...

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> Sequence[Row]: ...


class WriteConn(Conn, Protocol):
    """The connection of one transaction body."""

    #: The audit chain's next seq and head while a commit batch appends to it (None until
    #: the batch's first append): written once, before the batch commits.
    audit_head: tuple[int, str] | None
    #: The audit rows appended in the batch and not inserted yet (see
    #: ``pipeline_sql.append_audit``): inserted together before the batch commits.
    audit_pending: list[tuple[Any, ...]]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Statement[ChangeCursor]: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> ChangeCursor: ...


#: A transaction body: ``async def body(conn)``, touching nothing but ``conn``.
Body = Callable[[WriteConn], Coroutine[Any, Any, T]]

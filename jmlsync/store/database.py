"""One SQLite database: a writer and a query-only reader in WAL mode, migrations, transactions.

Writes are serialised by an asyncio lock around ``BEGIN IMMEDIATE ... COMMIT`` on the writer
connection; reads go to the reader, which WAL lets run beside a write.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import aiosqlite


def _fold(value: object) -> object:
    return value.casefold() if isinstance(value, str) else value


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("jmlsync.store").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text("utf-8")))
    return sorted(found)


class Database:
    """The connections to one SQLite file, and the one way to write to it."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.writer = writer
        self.reader = reader
        self._write_lock = asyncio.Lock()
        self._after_commit: list[Callable[[], None]] = []

    @classmethod
    async def open(cls, path: Path, *, synchronous: str = "full") -> Database:
        """Open (creating if needed) the database at ``path`` and apply pending migrations."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await cls._connect(path, synchronous)
        await cls._migrate(writer)
        reader = await cls._connect(path, synchronous)
        await reader.execute("PRAGMA query_only = ON")
        return cls(writer, reader)

    @staticmethod
    async def _connect(path: Path, synchronous: str) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA busy_timeout = 10000")
        await conn.create_function("fold", 1, _fold, deterministic=True)
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cursor:
            applied = {row[0] async for row in cursor}
        for number, name, script in _migrations():
            if number in applied:
                continue
            statements = f"BEGIN IMMEDIATE;\n{script}\n"
            statements += "INSERT INTO schema_migrations VALUES"
            statements += f" ({number}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ'));\nCOMMIT;"
            await conn.executescript(statements)

    async def close(self) -> None:
        await self.reader.close()
        async with self._write_lock:
            await self.writer.close()

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each committed transaction opened with ``notify=True``
        (writes that may have made queue rows due: it wakes the workers)."""
        self._after_commit.append(callback)

    @asynccontextmanager
    async def transaction(self, *, notify: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; committed on exit, rolled back on any exception."""
        async with self._write_lock:
            # BEGIN sits inside the try: a cancellation while it runs must still roll back,
            # or the connection would stay inside a transaction for every later write.
            try:
                await self.writer.execute("BEGIN IMMEDIATE")
                yield self.writer
                await self.writer.execute("COMMIT")
            except BaseException:
                await self.writer.rollback()
                raise
        if notify:
            for callback in self._after_commit:
                callback()

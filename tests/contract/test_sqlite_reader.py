"""Reads on SQLite share the store's outage semantics: "not now" errors are StoreUnavailable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from jmlsync.domain.errors import StoreUnavailable
from jmlsync.store.sqlite_reader import SqliteReader


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (v INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(600)])
        conn.commit()
    finally:
        conn.close()
    return path


async def _reader(path: Path) -> SqliteReader:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 0")
    return SqliteReader(conn)


async def test_reads_work_through_every_form(database: Path) -> None:
    reader = await _reader(database)
    try:
        assert len(await reader.execute_fetchall("SELECT v FROM t")) == 600
        async with reader.execute("SELECT v FROM t ORDER BY v") as cursor:
            assert (await cursor.fetchone())[0] == 0
        cursor = await reader.execute("SELECT v FROM t ORDER BY v")
        assert [row[0] async for row in cursor] == list(range(600))
        await cursor.close()
    finally:
        await reader.close()


async def test_a_locked_file_is_store_unavailable_not_an_internal_error(database: Path) -> None:
    reader = await _reader(database)
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        # Another process holding the file exclusively: readers get SQLITE_BUSY.
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(StoreUnavailable, match="SQLite"):
            await reader.execute_fetchall("SELECT v FROM t")
        with pytest.raises(StoreUnavailable):
            async with reader.execute("SELECT v FROM t") as cursor:
                await cursor.fetchall()
        holder.execute("COMMIT")
        holder.close()  # the lock ends with the holder: reads work again
        assert len(await reader.execute_fetchall("SELECT v FROM t")) == 601
    finally:
        holder.close()
        await reader.close()


async def test_errors_that_are_not_outages_stay_as_they_are(database: Path) -> None:
    reader = await _reader(database)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await reader.execute_fetchall("SELECT * FROM missing")
    finally:
        await reader.close()

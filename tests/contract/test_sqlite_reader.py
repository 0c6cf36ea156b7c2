"""Reads on SQLite share the store's outage semantics ("not now" errors are StoreUnavailable),
and a read beside an open statement still sees what was committed since that statement began."""

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


async def _reader(path: Path, connections: int = 1) -> SqliteReader:
    conns = []
    for _ in range(connections):
        conn = await aiosqlite.connect(path, isolation_level=None)
        await conn.execute("PRAGMA busy_timeout = 0")
        conns.append(conn)
    return SqliteReader(conns)


def _commit_row(path: Path, value: int) -> None:
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("INSERT INTO t VALUES (?)", (value,))
    finally:
        writer.close()


async def _count(reader: SqliteReader) -> int:
    async with reader.execute("SELECT count(*) FROM t") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("connections", [2, 4])
async def test_a_read_beside_an_open_statement_sees_the_latest_commit(
    database: Path, connections: int
) -> None:
    reader = await _reader(database, connections)
    try:
        async with reader.execute("SELECT v FROM t") as streaming:
            assert await streaming.fetchone() is not None  # its read transaction is open
            _commit_row(database, 1000)
            assert await _count(reader) == 601
            assert len(await reader.execute_fetchall("SELECT v FROM t")) == 601
        _commit_row(database, 1001)
        assert await _count(reader) == 602  # the connections were given back
    finally:
        await reader.close()


async def test_one_connection_would_miss_the_commit(database: Path) -> None:
    # Why there are several: on one connection the open statement's snapshot hides the row.
    reader = await _reader(database, 1)
    try:
        async with reader.execute("SELECT v FROM t") as streaming:
            assert await streaming.fetchone() is not None
            _commit_row(database, 1000)
            assert await _count(reader) == 600
        assert await _count(reader) == 601
    finally:
        await reader.close()


async def test_every_connection_busy_shares_the_least_busy(database: Path) -> None:
    reader = await _reader(database, 2)
    try:
        first = await reader.execute("SELECT v FROM t")
        second = await reader.execute("SELECT v FROM t")
        assert await first.fetchone() is not None
        assert await second.fetchone() is not None
        assert await _count(reader) == 600  # no wait, no deadlock: a shared connection
        await first.close()
        await second.close()
        drained = await reader.execute("SELECT v FROM t")
        assert len([row async for row in drained]) == 600  # drained: given back
        _commit_row(database, 1000)
        assert await _count(reader) == 601
    finally:
        await reader.close()


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

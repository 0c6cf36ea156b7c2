"""Reads on SQLite share the store's outage semantics ("not now" errors are StoreUnavailable),
and a read beside an open statement still sees what was committed since that statement began."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _connector(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 0")
        return conn

    return connect


async def _reader(path: Path, connections: int = 1, limit: int | None = None) -> SqliteReader:
    return await SqliteReader.open(
        _connector(path), initial=connections, limit=limit or connections
    )


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


async def test_one_connection_with_a_statement_open_misses_a_commit(database: Path) -> None:
    # Why a read never shares a connection: beside an open statement it sees an old snapshot.
    conn = _connector(database)()
    try:
        streaming = conn.execute("SELECT v FROM t")
        assert streaming.fetchone() is not None
        _commit_row(database, 1000)
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 600
        streaming.close()
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 601
    finally:
        conn.close()


@pytest.mark.parametrize(("connections", "limit"), [(1, 2), (2, 2), (4, 32)])
async def test_a_read_beside_an_open_statement_sees_the_latest_commit(
    database: Path, connections: int, limit: int
) -> None:
    reader = await _reader(database, connections, limit)
    try:
        async with reader.execute("SELECT v FROM t") as streaming:
            assert await streaming.fetchone() is not None  # its read transaction is open
            _commit_row(database, 1000)
            assert await _count(reader) == 601
            assert len(await reader.execute_fetchall("SELECT v FROM t")) == 601
        _commit_row(database, 1001)
        assert await _count(reader) == 602  # the connections were given back
        assert reader.connections == max(connections, 2)
    finally:
        await reader.close()


async def test_past_the_limit_a_read_opens_a_connection_for_itself_and_closes_it(
    database: Path,
) -> None:
    reader = await _reader(database, 1, limit=2)
    try:
        first = await reader.execute("SELECT v FROM t")
        second = await reader.execute("SELECT v FROM t")
        assert await first.fetchone() is not None
        assert await second.fetchone() is not None
        assert reader.connections == 2
        third = await reader.execute("SELECT v FROM t")  # no wait: a connection of its own
        assert reader.connections == 3
        _commit_row(database, 1000)
        assert len([row async for row in third]) == 600  # its snapshot began before the commit
        assert reader.connections == 2  # past the limit: closed once drained
        assert await _count(reader) == 601  # opened for this read, after the commit
        await first.close()
        await second.close()
        assert reader.connections == 2
        assert await _count(reader) == 601  # the kept ones are idle again, and fresh
    finally:
        await reader.close()


async def test_reads_waiting_on_reads_never_hang(database: Path) -> None:
    # Every read holding a connection while it asks for another: past the limit too.
    reader = await _reader(database, 1, limit=2)
    try:

        async def nested(depth: int) -> int:
            async with reader.execute("SELECT v FROM t") as cursor:
                assert await cursor.fetchone() is not None
                return 1 if depth == 0 else 1 + await nested(depth - 1)

        assert await asyncio.gather(*(nested(3) for _ in range(4))) == [4] * 4
        assert reader.connections == 2
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


async def test_a_dropped_or_cancelled_read_gives_its_connection_back(database: Path) -> None:
    reader = await _reader(database, 1, limit=1)
    try:
        dropped = await reader.execute("SELECT v FROM t")  # 600 rows: it holds a connection
        assert len(reader.pool.held) == 1
        del dropped
        assert await _count(reader) == 600  # the reader thread freed it before this read
        assert reader.pool.held == {}

        streaming = await reader.execute("SELECT v FROM t")
        streaming.iter_chunk_size = 1
        draining = asyncio.create_task(_drain(streaming))
        await asyncio.sleep(0)  # under way: its next fetch may or may not have run
        draining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await draining
        assert await _count(reader) == 600
        assert reader.pool.held == {}
        assert reader.connections == 1
    finally:
        await reader.close()


async def _drain(cursor: Any) -> int:
    return len([row async for row in cursor])

"""Copy a whole store from one database to another (SQLite to PostgreSQL, typically), history
included: directory, queue, leaver records and their per-target outcomes, applied grants,
drift, runs, alerts, time-bound access requests with their history and personal tokens (as
hashes), and the audit chain, row for row, so `jmlsync audit verify` passes on the
copy."""

from __future__ import annotations

from typing import Any

from jmlsync.store.database import WriteConn
from jmlsync.store.directory import SqlStore

#: In dependency order (groups and users before memberships).
TABLES = (
    "users",
    "groups",
    "memberships",
    "applied_grants",
    "queue",
    "leavers",
    "leaver_targets",
    "audit",
    "service_state",
    "mover_revocations",
    "drift",
    "runs",
    "alert_outbox",
    "alert_windows",
    "access_requests",
    "access_approvals",
    "access_history",
    "personal_tokens",
)
#: Flags SQLite keeps as 0/1 and PostgreSQL as booleans.
BOOLEANS = {("users", "active"), ("queue", "leaver")}
_CHUNK = 1000
#: The tables whose ``id`` comes from a sequence on PostgreSQL.
_SERIAL = frozenset(
    {
        "queue",
        "leavers",
        "mover_revocations",
        "drift",
        "runs",
        "alert_outbox",
        "access_requests",
        "access_history",
        "personal_tokens",
    }
)


class CopyError(Exception):
    """The copy cannot be made (e.g. the destination already holds data)."""


async def copy_store(source: SqlStore, destination: SqlStore) -> dict[str, int]:
    """Copy every row of every table; the destination must hold no users and no audit."""
    for table in ("users", "audit"):
        rows = await destination.db.reader.execute_fetchall(f"SELECT count(*) FROM {table}")
        if int(rows[0][0]):
            raise CopyError(f"the destination already holds {table}: copy into an empty store")
    counts = {}
    for table in TABLES:
        rows = await source.db.reader.execute_fetchall(f"SELECT * FROM {table}")
        counts[table] = len(rows)
        if not rows:
            continue
        columns = list(rows[0].keys())
        values = [tuple(_convert(table, column, row[column]) for column in columns) for row in rows]
        await _insert(destination, table, columns, values)
    return counts


def _convert(table: str, column: str, value: Any) -> Any:
    if (table, column) in BOOLEANS and value is not None:
        return bool(value)
    return value


async def _insert(
    destination: SqlStore, table: str, columns: list[str], values: list[tuple[Any, ...]]
) -> None:
    marks = ", ".join("?" * len(columns))
    names = ", ".join(columns)
    conflict = " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    sql = f"INSERT INTO {table} ({names}) VALUES ({marks})"
    if table == "service_state":
        sql += conflict
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]

        async def body(conn: WriteConn, chunk: list[tuple[Any, ...]] = chunk) -> None:
            await conn.executemany(sql, chunk)

        await destination.db.write(body)
    await _bump_sequence(destination, table)


async def _bump_sequence(destination: SqlStore, table: str) -> None:
    """On PostgreSQL, move the table's id sequence past the copied ids."""
    if getattr(destination.db, "dialect", "sqlite") != "postgresql":
        return
    if table not in _SERIAL:
        return

    async def body(conn: WriteConn) -> None:
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" (SELECT coalesce(max(id), 1) FROM {table}))"
        )

    await destination.db.write(body)

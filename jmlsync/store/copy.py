"""Copy a whole store from one database to another (SQLite to PostgreSQL, typically), history
included: directory, queue, leaver records and their per-target outcomes, applied grants,
drift, runs, alerts, time-bound access requests with their history and personal tokens (as
hashes), and the audit chain, row for row, so `jmlsync audit verify` passes on the
copy."""

from __future__ import annotations

import json
from typing import Any

from jmlsync.domain.text import bad_string, unstorable
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
    "review_campaigns",
    "review_items",
    "review_decisions",
    "review_remediations",
    "review_exceptions",
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
        "review_exceptions",
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
    if not destination.db.dialect.stores_nul:
        await _refuse_unstorable(source)
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


#: Columns that say which row is meant, in a refusal.
_NAMING = ("id", "seq", "key", "user_name", "display_name", "group_id", "user_id")
#: Columns holding JSON text (jsonb on PostgreSQL, which refuses ``\u0000`` escapes).
_JSON_COLUMNS = frozenset({"doc"})
_SHOWN = 5


def _unstorable_value(column: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if unstorable(value):
        return True
    if column in _JSON_COLUMNS and "\\u" in value:
        try:
            return bad_string(json.loads(value)) is not None
        except ValueError:
            return False
    return False


async def _refuse_unstorable(source: SqlStore) -> None:
    """Raise CopyError naming the rows that hold U+0000 or a lone surrogate, before anything
    is written: PostgreSQL cannot store them (SCIM refuses them now, but an older SQLite store
    may hold them)."""
    found: list[str] = []
    for table in TABLES:
        rows = await source.db.reader.execute_fetchall(f"SELECT * FROM {table}")
        for row in rows:
            columns = list(row.keys())
            if not any(_unstorable_value(column, row[column]) for column in columns):
                continue
            names = " ".join(
                f"{c}={row[c]!r}" for c in _NAMING if c in columns and row[c] is not None
            )
            found.append(f"{table} {names}".strip())
    if found:
        more = f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        raise CopyError(
            f"{len(found)} row(s) hold U+0000 or a lone surrogate, which PostgreSQL cannot"
            f" store: {'; '.join(found[:_SHOWN])}{more};"
            " fix or delete them in the source first"
        )


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
    reset = destination.db.dialect.sequence_reset(table)
    if reset is None or table not in _SERIAL:
        return

    async def body(conn: WriteConn) -> None:
        await conn.execute(reset)

    await destination.db.write(body)

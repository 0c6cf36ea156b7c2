"""What differs between the SQL of SQLite and of PostgreSQL, decided once per database.

The store's SQL is written once, with ``?`` placeholders, and runs on both backends. Where the
two must differ (row locks, parameter numbering, the filter compiler, how leases and sequences
work), the code asks the :class:`Dialect` its database was opened with (``db.dialect``, and
``conn.dialect`` on every connection the database hands out) instead of testing a name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from jmlsync.domain.filters import Attr, Expr
from jmlsync.store.filters import postgres as pg_filters
from jmlsync.store.filters import sqlite as sqlite_filters
from jmlsync.store.filters.columns import Table


class Dialect(ABC):
    """One backend's SQL: its name and the fragments and compilers the shared SQL needs."""

    name: ClassVar[str]
    for_update: ClassVar[str]
    """`` FOR UPDATE`` where a read inside a transaction must lock its rows (PostgreSQL, where
    transactions run side by side); nothing on SQLite, whose writes are already serial."""
    skip_locked: ClassVar[str]
    """`` FOR UPDATE SKIP LOCKED`` for queue claims on PostgreSQL: replicas take different
    rows. Nothing on SQLite."""
    shared: ClassVar[bool]
    """Several processes use the database at once, each naming its live leases in a session
    lock (PostgreSQL); on SQLite one process does, so any lease left at start is stale."""
    stores_nul: ClassVar[bool]
    """Text may hold U+0000 and lone surrogates (SQLite); PostgreSQL refuses them."""

    @abstractmethod
    def compile_filter(self, expr: Expr, table: Table) -> tuple[str, list[Any]]:
        """``expr`` as a ``WHERE`` fragment over ``table`` and its parameters, the first
        parameter of the statement first."""

    @abstractmethod
    def sort_expression(self, attr: Attr, table: Table) -> str:
        """An SQL expression, without parameters, to ``ORDER BY`` ``attr``."""

    @abstractmethod
    def window(self, before: int) -> str:
        """``LIMIT ? OFFSET ?`` for a statement with ``before`` parameters ahead of them."""

    def sequence_reset(self, table: str) -> str | None:
        """SQL that moves ``table``'s id sequence past its largest id, where ids come from a
        sequence (PostgreSQL); None where the next id follows the rows (SQLite)."""
        return None


class SqliteDialect(Dialect):
    name = "sqlite"
    for_update = ""
    skip_locked = ""
    shared = False
    stores_nul = True

    def compile_filter(self, expr: Expr, table: Table) -> tuple[str, list[Any]]:
        return sqlite_filters.compile_filter(expr, table)

    def sort_expression(self, attr: Attr, table: Table) -> str:
        return sqlite_filters.sort_expression(attr, table)

    def window(self, before: int) -> str:
        return "LIMIT ? OFFSET ?"


class PostgresDialect(Dialect):
    name = "postgresql"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    shared = True
    stores_nul = False

    def compile_filter(self, expr: Expr, table: Table) -> tuple[str, list[Any]]:
        return pg_filters.compile_filter_pg(expr, table)

    def sort_expression(self, attr: Attr, table: Table) -> str:
        return pg_filters.sort_expression_pg(attr, table)

    def window(self, before: int) -> str:
        # The filter's parameters are numbered already ($1...): these follow them.
        return f"LIMIT ${before + 1} OFFSET ${before + 2}"

    def sequence_reset(self, table: str) -> str | None:
        return (
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" (SELECT coalesce(max(id), 1) FROM {table}))"
        )


SQLITE: Dialect = SqliteDialect()
POSTGRESQL: Dialect = PostgresDialect()

"""A fresh PostgreSQL database per test, on the server at 127.0.0.1:5432 (CI starts it)."""

from __future__ import annotations

import functools
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

HOST, PORT = "127.0.0.1", 5432
ADMIN_DSN = f"postgresql://postgres@{HOST}:{PORT}/test"
#: Why a PostgreSQL test is skipped: the only reason one may be.
UNREACHABLE = f"no PostgreSQL server answers on {HOST}:{PORT}"


@functools.cache
def postgres_reachable() -> bool:
    """Whether the shared server accepts TCP connections (asked once per run)."""
    try:
        with socket.create_connection((HOST, PORT), timeout=2):
            return True
    except OSError:
        return False


def skip_unless_reachable() -> None:
    if not postgres_reachable():
        pytest.skip(UNREACHABLE)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped on exit (the test is skipped without a
    server)."""
    skip_unless_reachable()
    name = f"jmlsync_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@{HOST}:{PORT}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

"""Console sessions and pending sign-ins in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jmlsync.audit import AuditEntry
from jmlsync.config import load_settings
from jmlsync.domain.sessions import Timeouts
from jmlsync.evidence import verify_audit
from jmlsync.runtime import open_store
from jmlsync.store.directory import SqlStore
from jmlsync.store.queue import SqlQueue
from jmlsync.store.sessions import SqlSessions

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TIMEOUTS = Timeouts(idle=timedelta(minutes=30), absolute=timedelta(hours=8))


@pytest.fixture
async def store(config_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(load_settings(config_path))
    try:
        yield opened
    finally:
        await opened.close()


def _entry(action: str) -> AuditEntry:
    return AuditEntry(
        at="2026-03-01T09:00:00.000000Z",
        actor="ada@example.org",
        action=action,
        subject="user ada@example.org",
        outcome="ok",
    )


async def test_a_session_lives_until_idle_or_absolute_end(store: SqlStore) -> None:
    sessions = SqlSessions(store.db, TIMEOUTS)
    token = await sessions.create("ada@example.org", {"sub": "1"}, T0, _entry("console.sign-in"))
    got = await sessions.get(token, T0 + timedelta(minutes=29))
    assert got is not None
    assert got.user_name == "ada@example.org"
    assert got.claims == {"sub": "1"}
    assert got.csrf_token
    assert got.csrf_token != token
    # Used at 29 minutes: alive 29 minutes later, although 58 have passed since sign-in.
    assert await sessions.get(token, T0 + timedelta(minutes=58)) is not None
    assert await sessions.get(token, T0 + timedelta(minutes=89)) is None  # idle
    assert await sessions.get(token, T0 + timedelta(minutes=59)) is None  # deleted for good
    assert await sessions.get("not-a-token", T0) is None


async def test_a_session_ends_at_its_absolute_end_however_used(store: SqlStore) -> None:
    sessions = SqlSessions(store.db, TIMEOUTS)
    token = await sessions.create("ada@example.org", {}, T0, _entry("console.sign-in"))
    for minutes in range(20, 8 * 60, 20):
        assert await sessions.get(token, T0 + timedelta(minutes=minutes)) is not None
    assert await sessions.get(token, T0 + timedelta(hours=8)) is None


async def test_sign_in_and_out_are_audited_and_the_chain_holds(store: SqlStore) -> None:
    sessions = SqlSessions(store.db, TIMEOUTS)
    token = await sessions.create("ada@example.org", {}, T0, _entry("console.sign-in"))
    await sessions.delete(token, _entry("console.sign-out"))
    assert await sessions.get(token, T0) is None
    queue = SqlQueue(store.db)
    actions = [row["action"] async for row in queue.audit_rows()]
    assert actions[-2:] == ["console.sign-in", "console.sign-out"]
    assert (await verify_audit(queue))[1] is None


async def test_a_pending_sign_in_is_used_once_and_expires(store: SqlStore) -> None:
    sessions = SqlSessions(store.db, TIMEOUTS)
    await sessions.begin_login("state-1", "nonce-1", "verifier-1", "/console/audit", T0)
    await sessions.begin_login("state-2", "nonce-2", "verifier-2", "/console/", T0)
    found = await sessions.take_login("state-1", T0 + timedelta(minutes=1))
    assert found == ("nonce-1", "verifier-1", "/console/audit")
    assert await sessions.take_login("state-1", T0 + timedelta(minutes=1)) is None  # used up
    assert await sessions.take_login("state-2", T0 + timedelta(minutes=16)) is None  # too old
    assert await sessions.take_login("unknown", T0) is None


async def test_a_persons_history_is_the_audit_rows_about_them_newest_first(
    store: SqlStore,
) -> None:
    queue = SqlQueue(store.db)
    for subject, action in (
        ("user ada@example.org", "console.sign-in"),
        ("user ada@example.org (added to eng)", "scim.patch"),
        ("user ada@example.org2", "scim.create"),  # someone else, the same prefix
        ("user ada@example.org", "console.sign-out"),
    ):
        await queue.audit(AuditEntry(T0.isoformat(), "idp", action, subject, "ok"))
    rows = await queue.audit_about("ada@example.org", 10)
    assert [row["action"] for row in rows] == ["console.sign-out", "scim.patch", "console.sign-in"]
    assert set(rows[0]) == {"seq", "at", "actor", "action", "target", "role", "outcome", "detail"}
    assert [row["action"] for row in await queue.audit_about("ada@example.org", 1)] == [
        "console.sign-out"
    ]

"""Writes that share one commit (a batch): each keeps its own outcome, the audit chain runs
through the batch in order, and a body that fails takes its audit rows with it. On SQLite
and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.domain.errors import DuplicateUserName
from jmlsync.evidence import verify_audit
from jmlsync.store import pipeline_sql
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.database import WriteConn
from jmlsync.store.directory import SqlStore
from jmlsync.store.queue import SqlQueue
from tests.postgres import fresh_database

pytestmark = pytest.mark.timeout(60)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        opened = await SqlStore.open(tmp_path / "jmlsync.db")
        yield opened
        await opened.close()
        return
    async with fresh_database() as url:
        opened = await SqlStore.open_postgres(url)
        yield opened
        await opened.close()


def _user(name: str) -> Change:
    return Change(doc={"schemas": [USER], "userName": name, "active": True})


class Refused(Exception):
    pass


async def _audits_then_fails(conn: WriteConn) -> None:
    entry = AuditEntry(at="2026-01-02T03:04:05Z", actor="t", action="x", subject="s", outcome="o")
    await pipeline_sql.append_audit(conn, entry)
    raise Refused


async def test_a_batch_keeps_each_outcome_and_one_unbroken_chain(store: SqlStore) -> None:
    writes = []
    for number in range(12):
        writes.append(store.create("User", _user(f"u{number}@x.io"), NOW))
        if number % 4 == 1:
            writes.append(store.db.write(_audits_then_fails))
        if number == 6:
            writes.append(store.create("User", _user("u0@x.io"), NOW))  # taken
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    created = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(created) == 12
    assert sum(isinstance(o, Refused) for o in outcomes) == 3
    assert sum(isinstance(o, DuplicateUserName) for o in outcomes) == 1
    for made in created:
        assert made == await store.get("User", made.id)  # what was answered is what is stored
    queue = SqlQueue(store.db)
    rows = [row async for row in queue.audit_rows()]
    assert [row["action"] for row in rows] == ["user.create"] * 12
    assert await verify_audit(queue) == (12, None)
    # The next batch chains on to this one.
    await store.create("User", _user("late@x.io"), NOW)
    assert await verify_audit(queue) == (13, None)


async def test_a_prune_in_a_batch_sees_the_rows_appended_before_it(store: SqlStore) -> None:
    """The batch's audit rows are inserted together before it commits; a body that reads the
    audit table (the housekeeping's prune) first inserts those appended before it."""
    for number in range(3):
        await store.create("User", _user(f"old{number}@x.io"), NOW - timedelta(days=10))
    assurance = SqlAssurance(store.db)
    outcomes = await asyncio.gather(  # queued together: one batch
        store.create("User", _user("a@x.io"), NOW - timedelta(seconds=1)),
        store.create("User", _user("b@x.io"), NOW - timedelta(seconds=1)),
        assurance.housekeeping(NOW, timedelta(0)),
        store.create("User", _user("c@x.io"), NOW),
    )
    assert outcomes[2]["audit"] == 5  # the three old rows and the batch's first two
    queue = SqlQueue(store.db)
    assert [row["subject"].split()[1] async for row in queue.audit_rows()] == ["c@x.io"]
    assert await verify_audit(queue) == (1, None)
    # Every row pruned: the next one follows the anchor (seq 7, chained to row 6's hash).
    assert (await assurance.housekeeping(NOW + timedelta(days=1), timedelta(0)))["audit"] == 1
    await store.create("User", _user("d@x.io"), NOW + timedelta(days=1))
    assert [row["seq"] async for row in queue.audit_rows()] == [7]
    assert await verify_audit(queue) == (1, None)


async def test_an_update_answers_what_a_read_gives_back(store: SqlStore) -> None:
    """An update is answered from what it wrote (no read of the row after it), with the
    relations read: the answer is what a later read returns."""
    ann = await store.create("User", _user("ann@x.io"), NOW)
    group_doc = {"schemas": [GROUP], "displayName": "team"}
    team = await store.create("Group", Change(doc=group_doc), NOW)
    adding = (MemberOp("add", items=(Member(ann.id, "Ann"),)),)
    later = NOW + timedelta(seconds=5)
    joined = await store.update(
        "Group", team.id, lambda cur: Change(doc=dict(cur.doc), members=adding), later
    )
    assert joined == await store.get("Group", team.id)
    assert joined.version == 2
    assert joined.last_modified != joined.created
    left = await store.update(
        "User", ann.id, lambda cur: Change(doc={**cur.doc, "active": False}), later
    )
    assert left == await store.get("User", ann.id)
    assert left.version == 2
    assert [g.value for g in left.groups] == [team.id]
    bare = await store.update(
        "User", ann.id, lambda cur: Change(doc=dict(cur.doc)), later, with_members=False
    )
    assert bare.version == 3
    assert bare == await store.get("User", ann.id, with_members=False)

"""The queue on a real SQLite store: coalescing, leases, leaver priority, dead letters."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jmlsync.domain.access import Grant
from jmlsync.domain.directory import Change
from jmlsync.ops.alerts import Alerts, LogAlerts, OutboxAlerts, stage_alert
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.outbox import SqlOutbox
from jmlsync.store.queue import SqlQueue

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
def store(sql_store: SqlStore) -> SqlStore:
    """The store on each backend: the same queue contract holds on both."""
    return sql_store


@pytest.fixture
def queue(store: SqlStore) -> SqlQueue:
    return SqlQueue(store.db)


def user(name: str, **attrs: Any) -> Change:
    return Change(doc={"schemas": [USER], "userName": name, **attrs})


async def queued_user(store: SqlStore, name: str, **attrs: Any) -> str:
    """A user with a job pending: created, then changed (a new user alone owes no job)."""
    created = await store.create("User", user(name, **attrs), T0)
    await store.update("User", created.id, lambda c: Change({**c.doc, "title": "queued"}), T0)
    return created.id


async def test_a_new_user_is_queued_only_when_something_is_owed(
    store: SqlStore, queue: SqlQueue
) -> None:
    """A user just created is in no group: its job would plan nothing, so none is queued,
    unless jmlsync applied grants under the name, a time-bound request names it, a job for
    the name is pending (coalesced, still a leaver's), or it arrives inactive."""
    await store.create("User", user("new", active=True), T0)
    assert await queue.rows() == []
    await store.record_applied(Grant("t", "back", "admin"), "rule", T0)
    await store.create("User", user("back"), T0)

    async def request_for(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO access_requests (user_name, eligibility, target, role,"
            " duration_seconds, reason, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("asked", "oncall", "t", "admin", 3600, "pager", "pending", "2026-01-01T00:00:00Z"),
        )

    await store.db.write(request_for)
    await store.create("User", user("asked"), T0)
    gone = await store.create("User", user("again"), T0)
    await store.delete("User", gone.id, T0)
    await store.create("User", user("again"), T0)
    await store.create("User", user("off", active=False), T0)
    rows = {r.user_name: (r.cause, r.leaver) for r in await queue.rows()}
    assert rows == {
        "back": ("user.create", False),
        "asked": ("user.create", False),
        "again": ("user.create", True),
        "off": ("user.create", False),
    }


async def test_a_hundred_changes_to_one_user_are_one_job(store: SqlStore, queue: SqlQueue) -> None:
    created = await store.create("User", user("ann", active=True), T0)
    for i in range(101):
        await store.update(
            "User", created.id, lambda c, i=i: Change({**c.doc, "title": f"t{i}"}), T0
        )
    rows = await queue.rows()
    assert [(r.user_name, r.cause) for r in rows] == [("ann", "user.update")]
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert job.generation == 101
    assert await queue.lease("w2", T0, LEASE) is None
    assert await queue.ack(job) is True
    assert await queue.rows() == []


async def test_leavers_are_leased_first(store: SqlStore, queue: SqlQueue) -> None:
    for name in ("a", "b", "c"):
        await queued_user(store, name, active=True)
    leaver = await store.create("User", user("z", active=True), T0)
    later = T0 + timedelta(seconds=5)
    await store.update("User", leaver.id, lambda c: Change({**c.doc, "active": False}), later)
    first = await queue.lease("w", later, LEASE)
    assert first is not None
    assert (first.user_name, first.leaver) == ("z", True)
    rows = await store.db.reader.execute_fetchall("SELECT user_name, left_at FROM leavers")
    assert [tuple(r) for r in rows] == [("z", "2026-01-01T00:00:05.000000Z")]


async def test_a_change_during_a_lease_is_not_lost(store: SqlStore, queue: SqlQueue) -> None:
    created_id = await queued_user(store, "bea")
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    await store.update("User", created_id, lambda c: Change({**c.doc, "title": "x"}), T0)
    assert await queue.ack(job) is False
    again = await queue.lease("w", T0, LEASE)
    assert again is not None
    assert again.id == job.id
    assert await queue.ack(again) is True


async def test_expired_leases_are_taken_again(store: SqlStore, queue: SqlQueue) -> None:
    await queued_user(store, "cy")
    assert await queue.lease("crashed", T0, LEASE) is not None
    assert await queue.lease("other", T0 + timedelta(seconds=29), LEASE) is None
    retaken = await queue.lease("other", T0 + timedelta(seconds=31), LEASE)
    assert retaken is not None
    assert retaken.user_name == "cy"


async def test_failures_reschedule_then_dead_letter_and_redrive(
    store: SqlStore, queue: SqlQueue
) -> None:
    await queued_user(store, "dan")
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert await queue.fail(job, "throttled", T0, retry_in=timedelta(seconds=60)) is False
    assert await queue.lease("w", T0 + timedelta(seconds=59), LEASE) is None
    job = await queue.lease("w", T0 + timedelta(seconds=61), LEASE)
    assert job is not None
    assert job.attempts == 1
    assert await queue.fail(job, "denied", T0, retry_in=None) is True
    (dead,) = await queue.rows(failed_only=True)
    assert (dead.user_name, dead.attempts, dead.last_error) == ("dan", 2, "denied")
    assert await queue.lease("w", T0 + timedelta(days=1), LEASE) is None
    assert await queue.depth() == (0, 1)
    assert await queue.retry_failed(T0, dead.id) == 1
    assert await queue.rows(failed_only=True) == []
    revived = await queue.lease("w", T0, LEASE)
    assert revived is not None
    assert revived.attempts == 0


async def test_a_new_change_revives_a_dead_letter(store: SqlStore, queue: SqlQueue) -> None:
    created_id = await queued_user(store, "eve")
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    await queue.fail(job, "denied", T0, retry_in=None)
    await store.update("User", created_id, lambda c: Change({**c.doc, "active": False}), T0)
    (row,) = await queue.rows()
    assert row.failed_at is None
    assert row.leaver is True


async def test_group_writes_enqueue_the_members_they_touch(
    store: SqlStore, queue: SqlQueue
) -> None:
    from jmlsync.domain.directory import Member, MemberOp

    ids = {n: (await store.create("User", user(n), T0)).id for n in ("f", "g", "h")}
    await queue.release([])
    while (job := await queue.lease("w", T0, LEASE)) is not None:
        await queue.ack(job)
    doc = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "eng"}
    add = MemberOp("add", items=(Member(ids["f"]), Member(ids["g"])))
    group = await store.create("Group", Change(doc, (add,)), T0)
    assert sorted(r.user_name for r in await queue.rows()) == ["f", "g"]
    while (job := await queue.lease("w", T0, LEASE)) is not None:
        await queue.ack(job)
    same_name = Change({**doc, "displayName": "ENG"}, ())
    await store.update("Group", group.id, lambda _c: same_name, T0)
    assert await queue.rows() == []
    renamed = Change({**doc, "displayName": "platform"}, ())
    await store.update("Group", group.id, lambda _c: renamed, T0)
    assert sorted(r.user_name for r in await queue.rows()) == ["f", "g"]


async def test_a_retry_plans_only_the_pending_targets(store: SqlStore, queue: SqlQueue) -> None:
    created_id = await queued_user(store, "fay")
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert job.pending_targets is None
    await queue.fail(job, "read b: down", T0, retry_in=timedelta(0), pending_targets=["b"])
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert job.pending_targets == {"b"}
    # A failure that is not a target's keeps the pending set.
    await queue.fail(job, "internal error", T0, retry_in=timedelta(0))
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert job.pending_targets == {"b"}
    # A change coalesced while the job runs wins: the next attempt plans every target.
    await store.update("User", created_id, lambda c: Change({**c.doc, "title": "x"}), T0)
    await queue.fail(job, "read b: down", T0, retry_in=timedelta(0), pending_targets=["b"])
    job = await queue.lease("w", T0, LEASE)
    assert job is not None
    assert job.pending_targets is None


async def test_leaver_records_keep_per_target_outcomes(store: SqlStore, queue: SqlQueue) -> None:
    created = await store.create("User", user("gil", active=True), T0)
    await store.update("User", created.id, lambda c: Change({**c.doc, "active": False}), T0)
    later = T0 + timedelta(seconds=3)
    cleared = await queue.record_leaver_targets("gil", {"a": None, "b": "down"}, ["a", "b"], later)
    assert cleared == []
    last = T0 + timedelta(seconds=9)
    cleared = await queue.record_leaver_targets("gil", {"b": None}, ["a", "b"], last)
    assert cleared == ["2026-01-01T00:00:00.000000Z"]
    rows = await store.db.reader.execute_fetchall(
        "SELECT target, cleared_at, last_error FROM leaver_targets ORDER BY target"
    )
    assert [tuple(r) for r in rows] == [
        ("a", "2026-01-01T00:00:03.000000Z", None),
        ("b", "2026-01-01T00:00:09.000000Z", None),
    ]
    (leaver,) = await store.db.reader.execute_fetchall("SELECT cleared_at FROM leavers")
    assert leaver[0] == "2026-01-01T00:00:09.000000Z"
    # Nothing open any more: a late outcome changes nothing.
    assert await queue.record_leaver_targets("gil", {"a": "x"}, ["a", "b"], last) == []


async def test_a_dead_letter_and_its_alert_commit_together(
    store: SqlStore, queue: SqlQueue, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = SqlOutbox(store.db)
    sink = Alerts(
        LogAlerts(), OutboxAlerts(outbox, clock=lambda: T0, dedupe=timedelta(0), routed=True)
    )
    await queued_user(store, "eve")
    job = await queue.lease("w", T0, LEASE)
    assert job is not None

    async def breaks(_conn: Any) -> None:
        raise RuntimeError("the alert could not be written")

    # The alert's write fails inside the transaction: the dead letter is rolled back too.
    with pytest.raises(RuntimeError):
        await queue.fail(job, "denied", T0, retry_in=None, also=breaks)
    assert await queue.rows(failed_only=True) == []
    assert await outbox.rows() == []

    alert = stage_alert(sink, "dead_letter", "job for eve dead-lettered", user="eve")
    with caplog.at_level(logging.ERROR, logger="jmlsync.alerts"):
        assert await queue.fail(job, "denied", T0, retry_in=None, also=alert.write) is True
        assert "ALERT dead_letter" not in caplog.text  # logged only once committed
        await alert.after_commit()
    (dead,) = await queue.rows(failed_only=True)
    (row,) = await outbox.rows()
    assert (dead.user_name, row.kind, row.key, row.state) == (
        "eve",
        "dead_letter",
        "eve",
        "pending",
    )
    assert "ALERT dead_letter: job for eve dead-lettered" in caplog.text


async def test_a_privileged_grant_and_its_alert_commit_together(store: SqlStore) -> None:
    outbox = SqlOutbox(store.db)
    sink = OutboxAlerts(outbox, clock=lambda: T0, dedupe=timedelta(0), routed=True)
    grant = Grant("sandbox", "eve", "admin")

    async def breaks(_conn: Any) -> None:
        raise RuntimeError("the alert could not be written")

    with pytest.raises(RuntimeError):
        await store.record_applied(grant, "rule 1", T0, also=breaks)
    assert await store.applied_grants() == set()  # rolled back with the alert
    alert = stage_alert(sink, "privileged_grant", "eve was granted admin", user="eve")
    await store.record_applied(grant, "rule 1", T0, also=alert.write)
    await alert.after_commit()
    assert await store.applied_grants() == {grant}
    (row,) = await outbox.rows()
    assert (row.kind, row.state, sink.written) == ("privileged_grant", "pending", [row.id])


async def test_new_drift_and_its_alerts_commit_together(store: SqlStore) -> None:
    assurance = SqlAssurance(store.db)
    found = [("unmanaged", Grant("sandbox", "eve", "admin"))]

    async def breaks(_conn: Any, _new: list[Any]) -> None:
        raise RuntimeError("the alert could not be written")

    with pytest.raises(RuntimeError):
        await assurance.record_drift(found, T0, scope_complete=True, also=breaks)
    assert await assurance.open_drift() == []  # rolled back with its alerts
    seen: list[Any] = []

    async def alert_rows(_conn: Any, new: list[Any]) -> None:
        seen.extend(new)

    new, open_findings = await assurance.record_drift(
        found, T0, scope_complete=True, also=alert_rows
    )
    assert [f.user for f in seen] == [f.user for f in new] == ["eve"]
    assert len(open_findings) == 1


async def test_a_held_run_and_its_guard_alert_commit_together(store: SqlStore) -> None:
    assurance = SqlAssurance(store.db)
    outbox = SqlOutbox(store.db)
    sink = OutboxAlerts(outbox, clock=lambda: T0, dedupe=timedelta(0), routed=True)
    run_id = await assurance.start_run("full-reconcile", T0, "here")

    async def breaks(_conn: Any) -> None:
        raise RuntimeError("the alert could not be written")

    with pytest.raises(RuntimeError):
        await assurance.finish_run(run_id, T0, "held", {}, "revokes 2 grants", also=breaks)
    (run,) = await assurance.last_runs()
    assert (run.finished_at, run.outcome) == (None, None)  # rolled back with its alert
    alert = stage_alert(sink, "guard_tripped", "revokes 2 grants", revocations=2, key="full")
    await assurance.finish_run(run_id, T0, "held", {}, "revokes 2 grants", also=alert.write)
    await alert.after_commit()
    (run,) = await assurance.last_runs()
    (row,) = await outbox.rows()
    assert (run.outcome, row.kind, row.state, sink.written) == (
        "held",
        "guard_tripped",
        "pending",
        [row.id],
    )


async def test_a_regranted_leaver_and_its_alert_commit_together(store: SqlStore) -> None:
    assurance = SqlAssurance(store.db)
    outbox = SqlOutbox(store.db)
    sink = OutboxAlerts(outbox, clock=lambda: T0, dedupe=timedelta(0), routed=True)
    created = await store.create("User", user("gus", active=True), T0)
    await store.update("User", created.id, lambda c: Change({**c.doc, "active": False}), T0)
    (leaver,) = await assurance.unverified_leavers()
    await assurance.mark_verified(leaver.id, T0)

    async def breaks(_conn: Any) -> None:
        raise RuntimeError("the alert could not be written")

    with pytest.raises(RuntimeError):
        await assurance.mark_regranted("gus", "re-granted", T0, also=breaks)
    assert await assurance.open_breaches() == 0  # rolled back with its alert
    alert = stage_alert(sink, "leaver_regranted", "gus holds admin again", user="gus")
    assert await assurance.mark_regranted("gus", "re-granted", T0, also=alert.write) is True
    await alert.after_commit()
    assert await assurance.open_breaches() == 1
    (row,) = await outbox.rows()
    assert (row.kind, row.state) == ("leaver_regranted", "pending")
    # Already breached and unverified: no second breach, no second alert row.
    again = stage_alert(sink, "leaver_regranted", "gus holds admin again", user="gus")
    assert await assurance.mark_regranted("gus", "re-granted", T0, also=again.write) is False
    assert len(await outbox.rows()) == 1

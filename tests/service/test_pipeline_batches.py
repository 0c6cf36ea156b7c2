"""Batches in the pipeline: one lease and one ack for many rows, the leavers' own lane, and a
ledger batch that is one transaction (all of it or nothing, then the usual retry rules)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jmlsync.clock import now_utc
from jmlsync.config import load_settings
from jmlsync.domain.access import Grant, PrincipalSpec
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.engine.apply import Applier
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.worker import Pipeline, PipelineOptions
from jmlsync.policy_config import rules_from_settings
from jmlsync.ports import BatchStep, Target
from jmlsync.runtime import open_runtime
from jmlsync.store import policy_reads
from jmlsync.store.database import READERS, WriteConn
from jmlsync.store.directory import SqlStore
from jmlsync.store.queue import SqlQueue
from jmlsync.targets.ledger import LedgerTarget
from tests.conftest import write_config
from tests.fakes import FlakyLedgerFake, RecordingAlerts
from tests.postgres import fresh_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
CONFIG = """
[pipeline]
workers = 2
poll_seconds = 0.05
retry_base_seconds = 0
call_initial_wait_seconds = 0
call_max_wait_seconds = 0

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }, { target = "sandbox", role = "viewer" }]
"""


async def _no_sleep(_seconds: float) -> None:
    return None


# -- one lease, one ack -----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def queue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlQueue]:
    """The queue on each backend."""
    if request.param == "sqlite":
        store = await SqlStore.open(tmp_path / "jmlsync.db")
        try:
            yield SqlQueue(store.db)
        finally:
            await store.close()
        return
    async with fresh_database() as url:
        store = await SqlStore.open_postgres(url)
        try:
            yield SqlQueue(store.db)
        finally:
            await store.close()


async def test_a_batch_lease_takes_leavers_first_and_never_a_row_twice(queue: SqlQueue) -> None:
    await queue.enqueue([f"u{i}" for i in range(5)], cause="test", now=T0)
    await queue.enqueue(["leo", "lia"], cause="test", now=T0, leaver=True)
    # Leavers first, and in a batch of their own: never behind a joiner or a mover.
    first = await queue.lease_batch("w1", T0, LEASE, limit=3)
    assert sorted((job.user_name, job.leaver) for job in first) == [("leo", True), ("lia", True)]
    second = await queue.lease_batch("w2", T0, LEASE, limit=3)
    assert len(second) == 3
    assert not any(job.leaver for job in second)
    third = await queue.lease_batch("w3", T0, LEASE, limit=10)
    assert len(third) == 2
    assert len({job.id for job in [*first, *second, *third]}) == 7
    assert await queue.lease_batch("w3", T0, LEASE, limit=10) == []
    # Leases expire as single leases do: the rows are due again, to anyone.
    later = T0 + LEASE + timedelta(seconds=1)
    assert len(await queue.lease_batch("w3", later, LEASE, limit=10)) == 2
    assert len(await queue.lease_batch("w3", later, LEASE, limit=10)) == 5


async def test_lanes_take_only_leavers_or_none_of_them(queue: SqlQueue) -> None:
    await queue.enqueue(["ann", "bob"], cause="test", now=T0)
    await queue.enqueue(["leo"], cause="test", now=T0, leaver=True)
    others = await queue.lease_batch("w1", T0, LEASE, limit=10, lane="others")
    assert sorted(job.user_name for job in others) == ["ann", "bob"]
    leavers = await queue.lease_batch("w2", T0, LEASE, limit=10, lane="leavers")
    assert [(job.user_name, job.leaver) for job in leavers] == [("leo", True)]


async def test_leavers_who_hold_a_grant_come_first_in_batches_of_their_own(
    queue: SqlQueue,
) -> None:
    # Enqueued first, so without the rule they would be leased first.
    await queue.enqueue(["ann", "bob", "cat"], cause="test", now=T0, leaver=True)
    await queue.enqueue(["dan", "eve"], cause="test", now=T0 + timedelta(seconds=1), leaver=True)

    async def grant(conn: WriteConn) -> None:
        for user in ("dan", "eve"):
            await policy_reads.record_applied(conn, Grant("sandbox", user, "dev"), "rule 1", T0)

    await queue.db.write(grant)
    later = T0 + timedelta(seconds=2)
    first = await queue.lease_batch("w1", later, LEASE, limit=10, lane="leavers")
    assert sorted(job.user_name for job in first) == ["dan", "eve"]
    rest = await queue.lease_batch("w2", later, LEASE, limit=10)
    assert sorted(job.user_name for job in rest) == ["ann", "bob", "cat"]


async def test_a_batch_ack_keeps_a_row_changed_meanwhile(queue: SqlQueue) -> None:
    await queue.enqueue(["ann", "bob", "cat"], cause="test", now=T0)
    jobs = await queue.lease_batch("w", T0, LEASE, limit=10)
    by_name = {job.user_name: job for job in jobs}
    await queue.enqueue(["bob"], cause="again", now=T0)  # coalesces: a newer generation
    acked = await queue.ack_batch([by_name["ann"], by_name["bob"], by_name["cat"]])
    assert acked == [True, False, True]
    (row,) = await queue.rows()
    assert (row.user_name, row.cause, row.leased_until) == ("bob", "again", None)
    (due,) = await queue.lease_batch("w", T0, LEASE, limit=10)
    assert due.user_name == "bob"
    assert await queue.ack_batch([due]) == [True]
    assert await queue.rows() == []
    assert await queue.ack_batch([]) == []


async def test_a_batch_ack_of_more_jobs_than_one_statement_names(queue: SqlQueue) -> None:
    names = [f"user{i}" for i in range(450)]
    await queue.enqueue(names, cause="test", now=T0)
    jobs = await queue.lease_batch("w", T0, LEASE, limit=500)
    assert len(jobs) == 450
    await queue.enqueue(["user7", "user301"], cause="again", now=T0)
    acked = await queue.ack_batch(jobs)
    kept = sorted(job.user_name for job, done in zip(jobs, acked, strict=True) if not done)
    assert kept == ["user301", "user7"]
    assert sorted(row.user_name for row in await queue.rows()) == ["user301", "user7"]


async def _join(directory: Any, names: list[str]) -> list[str]:
    ids = [
        (await directory.create("User", Change({"userName": n, "active": True}), now_utc())).id
        for n in names
    ]
    add = MemberOp("add", items=tuple(Member(i) for i in ids))
    groups = await directory.list_groups()
    if groups:
        await directory.update("Group", groups[0].id, lambda c: Change(c.doc, (add,)), now_utc())
    else:
        doc = {"schemas": [GROUP], "displayName": "engineering"}
        await directory.create("Group", Change(doc, (add,)), now_utc())
    return ids


# -- a ledger batch is one transaction --------------------------------------------------------


@contextmanager
def refusing(ledger: Path, where: str) -> Iterator[None]:
    """The ledger file refuses grants ``where`` the SQL condition holds (a trigger)."""
    with sqlite3.connect(ledger) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE INSERT ON grants WHEN {where}"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    try:
        yield
    finally:
        with sqlite3.connect(ledger) as conn:
            conn.execute("DROP TRIGGER refuse")


async def test_a_ledger_batch_with_a_failing_step_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = await LedgerTarget.open("sandbox", path)
    try:
        steps = [
            BatchStep("ensure", "ann", spec=PrincipalSpec(user="ann")),
            BatchStep("grant", "ann", role="developer"),
            BatchStep("grant", "ann", role="viewer"),
        ]
        with refusing(path, "NEW.role = 'viewer'"), pytest.raises(PermanentTargetError):
            await ledger.apply_batch(steps)
        assert await ledger.principal("ann") is None
        assert await ledger.write_count() == 0
        await ledger.apply_batch(steps)
        assert await ledger.grants_of("ann") == {"developer", "viewer"}
        assert await ledger.write_count() == 3
    finally:
        await ledger.close()


class TransientLedger(LedgerTarget):
    """The ledger, with a refusal by the test's trigger classed as transient."""

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            with super()._translated():
                yield
        except PermanentTargetError as exc:
            raise TransientTargetError(str(exc)) from exc


@pytest.fixture
async def batch_rig(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, Target], Pipeline]]:
    settings = load_settings(write_config(tmp_path, extra=CONFIG))
    async with open_runtime(settings) as runtime:
        path = tmp_path / "state" / "ledger.db"
        targets: dict[str, Target] = {"sandbox": await TransientLedger.open("sandbox", path)}
        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            Applier(
                runtime.store,
                runtime.queue,
                targets,
                clock=now_utc,
                retry=RetryPolicy(attempts=2, sleep=_no_sleep),
            ),
            rules_from_settings(settings),
            clock=now_utc,
            alerts=RecordingAlerts(),
            options=PipelineOptions(workers=2, retry_base=timedelta(minutes=1), max_attempts=3),
        )
        try:
            yield runtime, targets, pipeline
        finally:
            await targets["sandbox"].close()


async def test_a_failed_ledger_batch_records_nothing_and_is_retried(
    batch_rig: tuple[Any, dict[str, LedgerTarget], Pipeline], tmp_path: Path
) -> None:
    runtime, targets, pipeline = batch_rig
    ledger = targets["sandbox"]
    names = ["ann@x.io", "bob@x.io", "cat@x.io"]
    await _join(runtime.store, names)
    jobs = await runtime.queue.lease_batch("test", now_utc(), LEASE, limit=10)
    assert sorted(job.user_name for job in jobs) == names
    with refusing(tmp_path / "state" / "ledger.db", "NEW.user = 'cat@x.io'"):
        await pipeline.process_batch(jobs)
    # A transient failure fails the whole batch: nothing of it on the ledger or recorded.
    assert await ledger.write_count() == 0
    assert await runtime.store.applied_grants() == set()
    rows = await runtime.queue.rows()
    assert [(r.attempts, r.failed_at is None) for r in rows] == [(1, True)] * 3
    assert all("refused by the test" in (r.last_error or "") for r in rows)
    assert all(r.next_attempt_at > jobs[0].enqueued_at for r in rows), "rescheduled"
    # The retry (once due) applies every grant exactly once.
    later = now_utc() + timedelta(minutes=2)
    again = await runtime.queue.lease_batch("test", later, LEASE, limit=10)
    await pipeline.process_batch(again)
    assert await runtime.queue.rows() == []
    assert await ledger.write_count("grant") == 6
    assert len(await runtime.store.applied_grants()) == 6


async def test_a_permanent_failure_in_a_ledger_batch_fails_only_its_job(
    tmp_path: Path,
) -> None:
    settings = load_settings(write_config(tmp_path, extra=CONFIG))
    async with open_runtime(settings) as runtime:
        ledger = runtime.targets["sandbox"]
        alerts = RecordingAlerts()
        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            Applier(runtime.store, runtime.queue, {"sandbox": ledger}, clock=now_utc),
            rules_from_settings(settings),
            clock=now_utc,
            alerts=alerts,
            options=PipelineOptions(workers=2, max_attempts=3),
        )
        await _join(runtime.store, ["ann@x.io", "bad@x.io"])
        jobs = await runtime.queue.lease_batch("test", now_utc(), LEASE, limit=10)
        assert len(jobs) == 2
        with refusing(tmp_path / "ledger.db", "NEW.user = 'bad@x.io'"):
            await pipeline.process_batch(jobs)
        assert await ledger.grants_of("ann@x.io") == {"developer", "viewer"}
        # The bad job's own transaction left nothing: not even its principal.
        assert await ledger.principal("bad@x.io") is None
        applied = await runtime.store.applied_grants()
        assert {g.user for g in applied} == {"ann@x.io"}
        (dead,) = await runtime.queue.rows(failed_only=True)
        assert (dead.user_name, dead.attempts) == ("bad@x.io", 1)
        assert alerts.kinds() == ["dead_letter"]


# -- the leavers' lane ------------------------------------------------------------------------


async def _deactivate(directory: Any, user_id: str) -> None:
    def inactive(current: Any) -> Change:
        return Change({**current.doc, "active": False})

    await directory.update("User", user_id, inactive, now_utc())


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("workers", "leaver_workers"), [(2, 0), (2, 1), (4, 1)])
async def test_a_leaver_is_applied_ahead_of_a_queued_burst_of_movers(
    tmp_path: Path, workers: int, leaver_workers: int
) -> None:
    settings = load_settings(write_config(tmp_path, extra=CONFIG))
    async with open_runtime(settings) as runtime:
        gated = FlakyLedgerFake(runtime.targets["sandbox"])
        left = asyncio.Event()

        def on_cleared(user: str, _seconds: float) -> None:
            if user == "leo@x.io":
                left.set()

        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            Applier(runtime.store, runtime.queue, {"sandbox": gated}, clock=now_utc),
            rules_from_settings(settings),
            clock=now_utc,
            alerts=RecordingAlerts(),
            options=PipelineOptions(
                workers=workers, leaver_workers=leaver_workers, poll_seconds=0.05
            ),
            on_cleared=on_cleared,
        )
        (leo,) = await _join(runtime.store, ["leo@x.io"])
        movers = [
            (await runtime.store.create("User", Change({"userName": n}), now_utc())).id
            for n in [f"m{i}@x.io" for i in range(40)]
        ]
        task = asyncio.create_task(pipeline.run())
        await pipeline.wait_drained()
        pipeline.stop()
        await task
        assert await gated.ledger.grants_of("leo@x.io") == {"developer", "viewer"}
        # Queued while no worker runs: the movers join the group (their grants hang on the
        # target), then leo leaves.
        (group,) = await runtime.store.list_groups()
        add = MemberOp("add", items=tuple(Member(i) for i in movers))
        await runtime.store.update("Group", group.id, lambda c: Change(c.doc, (add,)), now_utc())
        await _deactivate(runtime.store, leo)
        gated.hang = asyncio.Event()
        task = asyncio.create_task(pipeline.run())
        try:
            await left.wait()
            assert await gated.ledger.grants_of("leo@x.io") == frozenset()
            principal = await gated.ledger.principal("leo@x.io")
            assert principal is not None
            assert not principal.enabled
            assert await gated.ledger.grants_of("m0@x.io") == frozenset(), "the burst waits"
            gated.hang.set()
            await pipeline.wait_drained()
            assert await gated.ledger.grants_of("m39@x.io") == {"developer", "viewer"}
            assert await runtime.queue.rows() == []
        finally:
            gated.hang.set()
            pipeline.stop()
            await task


class LaggingReaderSpy:
    """The queue, telling when the workers found the store's reader behind the lease."""

    def __init__(self, queue: SqlQueue) -> None:
        self._queue = queue
        self.lagged = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def seen(self, jobs: Any) -> bool:
        seen = await self._queue.seen(jobs)
        if not seen:
            self.lagged.set()
        return seen


@pytest.mark.timeout(30)
async def test_a_leaver_is_never_planned_from_a_reader_snapshot_older_than_its_lease(
    tmp_path: Path,
) -> None:
    settings = load_settings(write_config(tmp_path, extra=CONFIG))
    async with open_runtime(settings) as runtime:
        ledger = runtime.targets["sandbox"]
        spy = LaggingReaderSpy(runtime.queue)
        left = asyncio.Event()
        pipeline = Pipeline(
            runtime.store,
            spy,
            Applier(runtime.store, runtime.queue, {"sandbox": ledger}, clock=now_utc),
            rules_from_settings(settings),
            clock=now_utc,
            alerts=RecordingAlerts(),
            options=PipelineOptions(workers=2),
            on_cleared=lambda user, _seconds: left.set(),
        )
        (leo,) = await _join(runtime.store, ["leo@x.io"])
        await pipeline.process_batch(
            await runtime.queue.lease_batch("t", now_utc(), LEASE, limit=9)
        )
        assert await ledger.grants_of("leo@x.io") == {"developer", "viewer"}
        # Reads held open (more rows to come) on as many connections as the store opened:
        # on one shared connection such a read kept its snapshot from before leo leaves for
        # every read beside it. No read runs beside an open statement now, so the plan sees
        # the deactivation.
        reader = runtime.store.db.reader
        many = (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
            " SELECT id FROM users, n"
        )
        async with contextlib.AsyncExitStack() as pins:
            for _ in range(READERS):  # more rows to come: each read stays open
                pinned = await pins.enter_async_context(reader.execute(many))
                assert await pinned.fetchone() is not None
            assert reader.connections == READERS
            await _deactivate(runtime.store, leo)
            jobs = await runtime.queue.lease_batch("t", now_utc(), LEASE, limit=9)
            assert [(job.user_name, job.leaver) for job in jobs] == [("leo@x.io", True)]
            await pipeline.process_batch(jobs)
            assert left.is_set()
            assert await ledger.grants_of("leo@x.io") == frozenset()
        assert not spy.lagged.is_set(), "the plan's reads saw an old snapshot"
        assert await runtime.queue.rows() == []


async def test_a_batch_is_planned_from_one_read_of_each_kind(
    batch_rig: tuple[Any, dict[str, LedgerTarget], Pipeline],
) -> None:
    """Its users and groups in one read, its applied grants in another, whatever the batch's
    size; and each job's plan is the one it would have alone."""
    runtime, _targets, pipeline = batch_rig
    names = [f"user{i}@x.io" for i in range(12)]
    ids = await _join(runtime.store, names)
    await _deactivate(runtime.store, ids[0])
    # A lease never mixes a leaver with other jobs; the plan of any batch is the same.
    jobs = await runtime.queue.lease_batch("test", now_utc(), LEASE, limit=20)
    jobs += await runtime.queue.lease_batch("test", now_utc(), LEASE, limit=20)
    assert len(jobs) == 12
    calls: dict[str, int] = {}
    store = runtime.store
    for method in ("policy_user", "policy_users_named", "applied_grants"):
        original = getattr(store, method)

        def counted(*args: Any, _original: Any = original, _name: str = method) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        setattr(store, method, counted)
    together = await pipeline.planner.plan([job.user_name for job in jobs])
    assert calls == {"policy_users_named": 1, "applied_grants": 1}
    alone = [(await pipeline.planner.plan([job.user_name]))[0] for job in jobs]
    assert together == alone
    works = {work.user_name: work for work in together if work is not None}
    assert (works[names[0]].leaver, dict(works[names[0]].desired)) == (True, {})
    assert (works[names[1]].leaver, sorted(works[names[1]].desired)) == (
        False,
        [("sandbox", names[1], "developer"), ("sandbox", names[1], "viewer")],
    )

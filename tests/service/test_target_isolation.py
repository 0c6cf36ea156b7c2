"""Per-target isolation in the pipeline: one target that cannot be read or written holds up
only its own operations, and its retries plan that target alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jmlsync.clock import now_utc
from jmlsync.config import load_settings
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.engine.apply import Applier
from jmlsync.engine.assurance import Assurance
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.worker import Pipeline, PipelineOptions
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import open_runtime
from jmlsync.store.assurance import SqlAssurance
from tests.conftest import write_config
from tests.fakes import FlakyLedgerFake, RecordingAlerts

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"

TWO_TARGETS = """
[pipeline]
workers = 2
poll_seconds = 0.05

[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[targets.downstream]
kind = "ledger"
path = "downstream.db"

[[rules]]
group = "engineering"
grants = [
  { target = "sandbox", role = "developer" },
  { target = "downstream", role = "developer" },
]
"""

pytestmark = pytest.mark.timeout(60)


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass
class Rig:
    runtime: Any
    sandbox: FlakyLedgerFake
    downstream: FlakyLedgerFake
    pipeline: Pipeline
    alerts: RecordingAlerts
    assurance: Assurance

    async def join(self, name: str) -> str:
        store = self.runtime.store
        created = await store.create(
            "User", Change({"schemas": [USER], "userName": name, "active": True}), now_utc()
        )
        groups = await store.list_groups()
        add = MemberOp("add", items=(Member(created.id),))
        if groups:
            await store.update("Group", groups[0].id, lambda c: Change(c.doc, (add,)), now_utc())
        else:
            doc = {"schemas": [GROUP], "displayName": "engineering"}
            await store.create("Group", Change(doc, (add,)), now_utc())
        return str(created.id)

    async def leave(self, user_id: str) -> None:
        store = self.runtime.store

        def deactivate(current: Any) -> Change:
            return Change({**current.doc, "active": False})

        await store.update("User", user_id, deactivate, now_utc())

    async def run_until_drained(self) -> None:
        task = asyncio.create_task(self.pipeline.run())
        await self.pipeline.wait_drained()
        self.pipeline.stop()
        await task

    async def leaver_targets(self) -> dict[str, dict[str, Any]]:
        rows = await self.runtime.store.db.reader.execute_fetchall(
            "SELECT target, cleared_at, last_error FROM leaver_targets"
        )
        return {row[0]: {"cleared_at": row[1], "last_error": row[2]} for row in rows}

    async def leaver(self) -> dict[str, Any]:
        (row,) = await self.runtime.store.db.reader.execute_fetchall(
            "SELECT user_name, cleared_at FROM leavers"
        )
        return dict(row)


@pytest.fixture
async def rig(store_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    settings = load_settings(write_config(tmp_path, extra=TWO_TARGETS, store_url=store_url))
    async with open_runtime(settings) as runtime:
        sandbox = FlakyLedgerFake(runtime.targets["sandbox"])
        downstream = FlakyLedgerFake(runtime.targets["downstream"])
        downstream.failing = {"grants_of", "grant", "revoke"}
        applier = Applier(
            runtime.store,
            runtime.queue,
            {"sandbox": sandbox, "downstream": downstream},
            clock=now_utc,
            retry=RetryPolicy(attempts=2, sleep=_no_sleep),
        )
        alerts = RecordingAlerts()
        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            applier,
            rules_from_settings(settings),
            clock=now_utc,
            alerts=alerts,
            # A retry is due a minute later: each drain is exactly one attempt.
            options=PipelineOptions(
                workers=2, max_attempts=3, retry_base=timedelta(minutes=1), poll_seconds=0.05
            ),
        )
        rules = rules_from_settings(settings)
        assurance = Assurance(
            reconciler=Reconciler(runtime.store, applier.targets, rules, applier),
            applier=applier,
            queue=runtime.queue,
            store=SqlAssurance(runtime.store.db),
            alerts=alerts,
            metrics=runtime.metrics,
            clock=now_utc,
            sla=timedelta(minutes=15),
            drift_mode="report",
            max_revocations=50,
        )
        yield Rig(runtime, sandbox, downstream, pipeline, alerts, assurance)


async def _due_now(rig: Rig) -> None:
    """Make the waiting retry due (instead of waiting out its backoff)."""

    async def body(conn: Any) -> None:
        await conn.execute("UPDATE queue SET next_attempt_at = '2000-01-01T00:00:00Z'")

    await rig.runtime.store.db.write(body)


async def test_a_target_that_cannot_be_read_holds_up_only_itself(rig: Rig) -> None:
    rig.downstream.fail_next = 1000
    await rig.join("ann@x.io")
    await rig.run_until_drained()
    assert await rig.sandbox.ledger.grants_of("ann@x.io") == {"developer"}
    assert await rig.downstream.ledger.grants_of("ann@x.io") == frozenset()
    (row,) = await rig.runtime.queue.rows()
    assert row.failed_at is None
    assert row.attempts == 1
    assert "read downstream" in (row.last_error or "")
    assert "throttled" in (row.last_error or "")

    # The retry plans only the pending target: the healthy one is not even read again.
    reads = rig.sandbox.calls["grants_of"]
    rig.downstream.fail_next = 0
    await _due_now(rig)
    await rig.run_until_drained()
    assert rig.sandbox.calls["grants_of"] == reads
    assert await rig.downstream.ledger.grants_of("ann@x.io") == {"developer"}
    assert await rig.runtime.queue.rows() == []
    assert rig.alerts.sent == []


async def test_a_leaver_is_cleared_per_target_then_overall(rig: Rig) -> None:
    ann = await rig.join("ann@x.io")
    await rig.run_until_drained()
    assert await rig.downstream.ledger.grants_of("ann@x.io") == {"developer"}

    rig.downstream.fail_next = 1000
    await rig.leave(ann)
    await rig.run_until_drained()
    assert await rig.sandbox.ledger.grants_of("ann@x.io") == frozenset()
    sandbox_principal = await rig.sandbox.ledger.principal("ann@x.io")
    assert sandbox_principal is not None
    assert sandbox_principal.enabled is False
    assert await rig.downstream.ledger.grants_of("ann@x.io") == {"developer"}
    targets = await rig.leaver_targets()
    assert targets["sandbox"]["cleared_at"] is not None
    assert targets["downstream"]["cleared_at"] is None
    assert "throttled" in targets["downstream"]["last_error"]
    assert (await rig.leaver())["cleared_at"] is None

    rig.downstream.fail_next = 0
    await _due_now(rig)
    await rig.run_until_drained()
    assert await rig.downstream.ledger.grants_of("ann@x.io") == frozenset()
    targets = await rig.leaver_targets()
    assert targets["downstream"]["cleared_at"] is not None
    assert targets["downstream"]["last_error"] is None
    record = await rig.leaver()
    assert record["cleared_at"] == max(t["cleared_at"] for t in targets.values())
    assert await rig.runtime.queue.rows() == []


async def test_a_new_change_replans_every_target(rig: Rig) -> None:
    rig.downstream.fail_next = 1000
    await rig.join("bob@x.io")
    await rig.run_until_drained()
    rows = await rig.runtime.store.db.reader.execute_fetchall("SELECT pending_targets FROM queue")
    assert [row[0] for row in rows] == ['["downstream"]']
    await rig.runtime.queue.enqueue(["bob@x.io"], cause="test", now=now_utc())
    rows = await rig.runtime.store.db.reader.execute_fetchall("SELECT pending_targets FROM queue")
    assert [row[0] for row in rows] == [None]
    reads = rig.sandbox.calls["grants_of"]
    await rig.run_until_drained()
    assert rig.sandbox.calls["grants_of"] == reads + 1


async def test_the_failing_target_is_dead_lettered_by_name(rig: Rig) -> None:
    rig.downstream.fail_next = 1000
    await rig.join("cat@x.io")
    for _ in range(3):
        await _due_now(rig)
        await rig.run_until_drained()
    (dead,) = await rig.runtime.queue.rows(failed_only=True)
    assert dead.attempts == 3
    assert dead.pending_targets == ("downstream",)
    assert "downstream" in (dead.last_error or "")
    assert "sandbox" not in (dead.last_error or "")
    (alert,) = rig.alerts.sent
    assert alert[0] == "dead_letter"
    assert "on downstream" in alert[1]
    assert alert[2]["targets"] == ["downstream"]
    assert await rig.sandbox.ledger.grants_of("cat@x.io") == {"developer"}


async def test_a_target_that_refuses_writes_holds_up_only_itself(rig: Rig) -> None:
    rig.downstream.failing = {"grant"}
    rig.downstream.fail_next = 1000
    await rig.join("dan@x.io")
    await rig.run_until_drained()
    assert await rig.sandbox.ledger.grants_of("dan@x.io") == {"developer"}
    (row,) = await rig.runtime.queue.rows()
    assert "grant downstream" in (row.last_error or "")


async def test_a_throttled_listing_is_retried_and_the_run_completes(rig: Rig) -> None:
    await rig.join("eve@x.io")
    await rig.run_until_drained()
    rig.downstream.failing = {"list_grants"}
    rig.downstream.fail_next = 1  # the rig's retry policy makes two attempts
    outcome, counts, detail = await rig.assurance.full_reconcile()
    assert (outcome, counts["unreadable"], detail) == ("ok", 0, None)
    assert rig.downstream.calls["list_grants"] == 2
    assert counts["actual"] == 2


async def test_an_unreadable_listing_marks_only_that_target(rig: Rig) -> None:
    await rig.join("fay@x.io")
    await rig.run_until_drained()
    await rig.sandbox.ledger.revoke("fay@x.io", "developer")
    await rig.downstream.ledger.revoke("fay@x.io", "developer")
    outcome, counts, _ = await rig.assurance.full_reconcile()
    assert (outcome, counts["missing"]) == ("ok", 2)

    rig.downstream.failing = {"list_grants"}
    rig.downstream.fail_next = 1000
    await rig.sandbox.ledger.grant("fay@x.io", "developer")
    outcome, counts, detail = await rig.assurance.full_reconcile()
    assert outcome == "partial"
    assert (counts["unreadable"], counts["missing"]) == (1, 0)
    assert detail is not None
    assert detail.startswith("unreadable: downstream (")
    # The sandbox finding is resolved (it was read); the unread target's finding stays open.
    still_open = await rig.assurance.store.open_drift()
    assert [(d.kind, d.target) for d in still_open] == [("missing", "downstream")]


async def test_an_error_that_is_not_a_targets_reaches_the_worker_as_itself(rig: Rig) -> None:
    async def broken(_user: str, _role: str) -> None:
        raise RuntimeError("a bug, not a target failure")

    rig.downstream.grant = broken  # type: ignore[method-assign]
    await rig.join("gus@x.io")
    job = await rig.runtime.queue.lease("test", now_utc(), timedelta(seconds=30))
    assert job is not None
    with pytest.raises(RuntimeError, match="a bug"):
        await rig.pipeline.process(job)


async def test_a_permanent_failure_waits_for_a_transient_one_then_both_dead_letter(
    rig: Rig,
) -> None:
    rig.sandbox.failing, rig.sandbox.permanent, rig.sandbox.fail_next = {"grant"}, True, 1000
    rig.downstream.fail_next = 1000
    await rig.join("hal@x.io")
    await rig.run_until_drained()
    (row,) = await rig.runtime.queue.rows()
    assert (row.failed_at, row.pending_targets) == (None, ("downstream", "sandbox"))
    rig.downstream.fail_next = 0
    await _due_now(rig)
    await rig.run_until_drained()
    (dead,) = await rig.runtime.queue.rows(failed_only=True)
    assert (dead.attempts, dead.pending_targets) == (2, ("sandbox",))
    assert "grant sandbox" in (dead.last_error or "")
    assert await rig.downstream.ledger.grants_of("hal@x.io") == {"developer"}

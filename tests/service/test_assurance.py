"""Scheduled assurance: leaver verification and SLA breaches, drift, the guard, protected
users, alerts, the leaver pause, and the run record."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import load_settings
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.engine.apply import Applier
from jmlsync.engine.assurance import Assurance
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.worker import Pipeline, PipelineOptions
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import Runtime, open_runtime
from jmlsync.scheduling import Scheduler
from jmlsync.store.assurance import SqlAssurance
from tests.conftest import write_config
from tests.fakes import FlakyLedgerFake, RecordingAlerts
from tests.service.test_pipeline import PIPELINE

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def _no_sleep(_seconds: float) -> None:
    return None


@dataclass
class Rig:
    config: Path
    runtime: Runtime
    flaky: FlakyLedgerFake
    clock: Clock
    alerts: RecordingAlerts
    pipeline: Pipeline
    assurance: Assurance
    ids: dict[str, str]

    async def user(self, name: str, *groups: str) -> None:
        store = self.runtime.store
        doc = {"schemas": [USER], "userName": name, "active": True}
        self.ids[name] = (await store.create("User", Change(doc), self.clock())).id
        for group in groups:
            add = MemberOp("add", items=(Member(self.ids[name]),))
            if group in self.ids:
                await store.update(
                    "Group", self.ids[group], lambda c, a=add: Change(c.doc, (a,)), self.clock()
                )
            else:
                gdoc = {"schemas": [GROUP], "displayName": group}
                created = await store.create("Group", Change(gdoc, (add,)), self.clock())
                self.ids[group] = created.id

    async def deactivate(self, name: str) -> None:
        await self.runtime.store.update(
            "User",
            self.ids[name],
            lambda c: Change({**c.doc, "active": False}),
            self.clock(),
        )

    async def drain(self) -> None:
        task = asyncio.create_task(self.pipeline.run())
        await self.pipeline.wait_drained()
        self.pipeline.stop()
        await task

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, [*args, "--config", str(self.config)])
        return result.exit_code, result.stdout, result.stderr


async def _rig(config: Path) -> AsyncIterator[Rig]:
    settings = load_settings(config)
    async with open_runtime(settings) as runtime:
        clock = Clock()
        alerts = RecordingAlerts()
        flaky = FlakyLedgerFake(runtime.targets["sandbox"])
        targets = {"sandbox": flaky}
        applier = Applier(
            runtime.store,
            runtime.queue,
            targets,
            clock=clock,
            retry=RetryPolicy(attempts=2, sleep=_no_sleep),
            alerts=alerts,
        )
        rules = rules_from_settings(settings)
        protected = settings.safety.protected_users
        pipeline = Pipeline(
            runtime.store,
            runtime.queue,
            applier,
            rules,
            clock=clock,
            alerts=alerts,
            options=PipelineOptions(
                workers=2,
                max_attempts=1,
                retry_base=timedelta(0),
                poll_seconds=0.05,
                max_leavers_per_minute=settings.pipeline.max_leavers_per_minute,
            ),
            protected=protected,
        )
        reconciler = Reconciler(runtime.store, targets, rules, applier, protected)
        assurance = replace(
            runtime.assurance,
            reconciler=reconciler,
            applier=applier,
            alerts=alerts,
            clock=clock,
        )
        yield Rig(config, runtime, flaky, clock, alerts, pipeline, assurance, {})


@pytest.fixture
async def rig(store_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async for built in _rig(write_config(tmp_path, extra=PIPELINE, store_url=store_url)):
        yield built


async def _in_thread(rig: Rig, *args: str) -> tuple[int, str, str]:
    return await asyncio.to_thread(rig.cli, *args)


async def test_cleared_leavers_are_verified(rig: Rig) -> None:
    await rig.user("ann@x.io", "engineering")
    await rig.drain()
    await rig.deactivate("ann@x.io")
    await rig.drain()
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["verified"], counts["breached"]) == ("ok", 1, 0)
    code, out, _ = await _in_thread(rig, "sla-report", "--format", "json")
    assert code == 0
    report = json.loads(out)
    (row,) = report["leavers"]
    assert row["user"] == "ann@x.io"
    assert row["within_sla"] is True
    assert report["sla_seconds"] == 900


async def test_a_target_refusing_revocations_breaches_once_and_is_reported(rig: Rig) -> None:
    await rig.user("bob@x.io", "engineering")
    await rig.drain()
    rig.flaky.failing = {"revoke"}
    rig.flaky.fail_next = 10**6
    rig.flaky.permanent = True
    await rig.deactivate("bob@x.io")
    await rig.drain()
    assert "dead_letter" in rig.alerts.kinds()
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["breached"]) == ("ok", 0)  # still inside the SLA
    rig.clock.now += timedelta(seconds=901)
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["breached"]) == ("breach", 1)
    await rig.assurance.verify_leavers()
    assert rig.alerts.kinds().count("sla_breach") == 1
    rows = await rig.runtime.queue.rows()
    assert [(r.user_name, r.cause, r.leaver, r.failed_at) for r in rows] == [
        ("bob@x.io", "sla.breach", True, None)
    ]
    for fmt in ("json", "csv", "table", "html"):
        code, out, _ = await _in_thread(rig, "sla-report", "--format", fmt)
        assert code == 1, fmt
        assert "bob@x.io" in out
    code, out, _ = await _in_thread(rig, "status")
    assert code == 1
    assert "1 SLA breach(es) open" in out


async def test_drift_is_recorded_alerted_and_remediated(rig: Rig) -> None:
    await rig.user("cat@x.io", "engineering")
    await rig.drain()
    await rig.flaky.ledger.grant("cat@x.io", "admin")
    outcome, counts, _ = await rig.assurance.full_reconcile()
    assert (outcome, counts["unmanaged"], counts["missing"]) == ("ok", 1, 0)
    # admin is a privileged role: an incident as well as drift
    assert rig.alerts.kinds() == ["privileged_drift", "unmanaged_drift"]
    assert await rig.flaky.ledger.grants_of("cat@x.io") == {"developer", "admin"}
    await rig.assurance.full_reconcile()
    assert rig.alerts.kinds() == ["privileged_drift", "unmanaged_drift"]  # alerted once
    remediate = replace(rig.assurance, drift_mode="remediate")
    outcome, counts, _ = await remediate.full_reconcile()
    assert (outcome, counts["applied"]) == ("ok", 1)
    assert await rig.flaky.ledger.grants_of("cat@x.io") == {"developer"}
    outcome, counts, _ = await remediate.full_reconcile()
    assert counts["unmanaged"] == 0
    assert await SqlAssurance(rig.runtime.store.db).open_drift() == []


async def test_the_guard_holds_remediation(rig: Rig) -> None:
    for name in ("dan@x.io", "eve@x.io"):
        await rig.user(name, "engineering")
    await rig.drain()
    for name in ("dan@x.io", "eve@x.io"):
        await rig.flaky.ledger.grant(name, "admin")
    guarded = replace(rig.assurance, drift_mode="remediate", max_revocations=1)
    outcome, _, detail = await guarded.full_reconcile()
    assert outcome == "held"
    assert detail is not None
    assert "revokes 2 grants" in detail
    assert "guard_tripped" in rig.alerts.kinds()
    assert await rig.flaky.ledger.grants_of("dan@x.io") == {"developer", "admin"}


async def test_a_scheduled_held_run_records_itself_with_its_alert(rig: Rig) -> None:
    for name in ("dan@x.io", "eve@x.io"):
        await rig.user(name, "engineering")
    await rig.drain()
    for name in ("dan@x.io", "eve@x.io"):
        await rig.flaky.ledger.grant(name, "admin")
    guarded = replace(rig.assurance, drift_mode="remediate", max_revocations=1)
    store = SqlAssurance(rig.runtime.store.db)
    writes: list[str] = []
    finish = store.finish_run

    async def finish_run(*args: Any, also: Any = None, **kwargs: Any) -> None:
        writes.append("with alert" if also is not None else "alone")
        await finish(*args, also=also, **kwargs)

    run = replace(guarded.reconcile_run(), store=store)
    store.finish_run = finish_run  # type: ignore[method-assign]

    async def job() -> tuple[str, dict[str, int], str | None]:
        return (await run.recorded(guarded.full_request())).result

    async def never(*_args: Any) -> Any:
        raise AssertionError("a job that records itself is not recorded again")

    scheduler = Scheduler((never, never))
    assert await scheduler.run_now("full-reconcile", job, records_itself=True) == "held"
    assert writes == ["with alert"]
    assert rig.alerts.kinds().count("guard_tripped") == 1
    (record,) = [r for r in await store.last_runs() if r.job == "full-reconcile"]
    assert record.outcome == "held"
    assert record.detail is not None
    assert "revokes 2 grants" in record.detail


async def test_protected_users_are_never_changed(store_url: str, tmp_path: Path) -> None:
    extra = PIPELINE + '\n[safety]\nprotected_users = ["Root@x.io"]\n'
    async for rig in _rig(write_config(tmp_path, extra=extra, store_url=store_url)):
        await rig.user("root@x.io", "engineering")
        await rig.drain()
        assert await rig.flaky.ledger.grants_of("root@x.io") == frozenset()
        assert "protected_user" in rig.alerts.kinds()
        snapshot = await rig.assurance.reconciler.snapshot(
            __import__("jmlsync.engine.reconcile", fromlist=["Scope"]).Scope()
        )
        assert snapshot.operations == []


async def test_privileged_grants_are_alerted(rig: Rig) -> None:
    await rig.user("fay@x.io", "cloud-admins")
    await rig.drain()
    (alert,) = [a for a in rig.alerts.sent if a[0] == "privileged_grant"]
    assert alert[2]["role"] == "admin"


async def test_an_implausible_wave_of_leavers_pauses_them(store_url: str, tmp_path: Path) -> None:
    extra = PIPELINE.replace("[pipeline]\n", "[pipeline]\nmax_leavers_per_minute = 2\n")
    async for rig in _rig(write_config(tmp_path, extra=extra, store_url=store_url)):
        names = [f"u{i}@x.io" for i in range(3)]
        for name in names:
            await rig.user(name, "engineering")
        await rig.drain()
        for name in names:
            await rig.deactivate(name)
        await rig.drain()
        assert "leavers_paused" in rig.alerts.kinds()
        assert await rig.flaky.ledger.grants_of("u0@x.io") == {"developer"}
        code, out, _ = await _in_thread(rig, "status")
        assert code == 1
        assert "LEAVERS PAUSED" in out
        code, out, _ = await _in_thread(rig, "queue", "resume-leavers")
        assert code == 0
        assert "resumed" in out
        await rig.drain()
        for name in names:
            assert await rig.flaky.ledger.grants_of(name) == frozenset()


async def test_scheduled_runs_are_recorded(rig: Rig) -> None:
    store = SqlAssurance(rig.runtime.store.db)

    async def start(job: str) -> int:
        return await store.start_run(job, rig.clock())

    async def finish(run_id: int, outcome: str, counts: dict[str, int], detail: str | None) -> None:
        await store.finish_run(run_id, rig.clock(), outcome, counts, detail)

    scheduler = Scheduler((start, finish))
    assert await scheduler.run_now("verify-leavers", rig.assurance.verify_leavers) == "ok"

    async def broken() -> tuple[str, dict[str, int], str | None]:
        raise RuntimeError("target unreachable")

    assert await scheduler.run_now("full-reconcile", broken) == "failed"
    runs = {run.job: run for run in await store.last_runs()}
    assert runs["verify-leavers"].outcome == "ok"
    assert runs["full-reconcile"].detail == "RuntimeError: target unreachable"
    code, out, _ = await _in_thread(rig, "status", "--format", "json")
    assert code == 0
    assert json.loads(out)["runs"]["full-reconcile"]["outcome"] == "failed"


async def test_many_new_findings_alert_once_per_target_and_privileged_ones_each(rig: Rig) -> None:
    for user in ("cat@x.io", "dan@x.io", "eve@x.io", "fay@x.io"):
        await rig.user(user, "engineering")
    await rig.drain()
    for user in ("cat@x.io", "dan@x.io", "eve@x.io"):
        await rig.flaky.ledger.grant(user, "admin")
    few = replace(rig.assurance, drift_alert_limit=2)
    outcome, counts, _ = await few.full_reconcile()
    assert (outcome, counts["unmanaged"]) == ("ok", 3)
    # admin is privileged: each finding is an incident of its own; as drift, one alert says 3
    assert rig.alerts.kinds() == ["privileged_drift"] * 3 + ["unmanaged_drift"]
    _, text, fields = rig.alerts.sent[3]
    assert (fields["target"], fields["count"]) == ("sandbox", 3)
    assert fields["examples"] == [f"{u}@x.io holds admin" for u in ("cat", "dan", "eve")]
    assert text.startswith("3 new grants on sandbox that no rule grants")
    await few.full_reconcile()
    assert len(rig.alerts.sent) == 4  # the findings are not new any more
    await rig.flaky.ledger.grant("fay@x.io", "admin")
    await few.full_reconcile()  # one new finding, under the limit: alerted on its own
    assert rig.alerts.kinds()[4:] == ["privileged_drift", "unmanaged_drift"]
    assert rig.alerts.sent[5][2]["user"] == "fay@x.io"

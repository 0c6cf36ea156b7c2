"""The time-bound access engine on both store backends with a clock the test moves: the
desired state (reconcile never revokes an active grant early, and does after expiry),
self-service, stale writes refused, and an end that is not verified in time (a breach)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import load_settings
from jmlsync.domain.access import PrincipalSpec
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.domain.timebound import AccessRefused, Person, new_request
from jmlsync.domain.timebound_records import Step
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.engine.timebound import Actor, TimeboundAccess
from jmlsync.policy_config import eligibilities_from_settings, rules_from_settings
from jmlsync.runtime import Runtime, open_runtime
from jmlsync.store.access import SqlAccess
from tests.fakes import RecordingAlerts

CONFIG = """
[targets.sandbox]
kind = "ledger"
path = "ledger.db"

[access]
end_seconds = 60

[[rules]]
group = "engineering"
grants = [{ target = "sandbox", role = "developer" }]

[[eligibility]]
name = "admin"
groups = ["oncall"]
grants = [{ target = "sandbox", role = "admin" }]
max_duration = "1h"
approvers = ["approvers"]

[[eligibility]]
name = "viewer"
users = ["ada@x.io"]
grants = [{ target = "sandbox", role = "viewer" }]
max_duration = "1h"
approvals = 0
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    config: Path
    runtime: Runtime
    clock: Clock
    alerts: RecordingAlerts
    access: TimeboundAccess
    reconciler: Reconciler


def _status(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["status", "--format", "json", "--config", str(config)])
    return result.exit_code, result.stdout


def _doc(kind: str, **attrs: Any) -> dict[str, Any]:
    return {"schemas": [f"urn:ietf:params:scim:schemas:core:2.0:{kind}"], **attrs}


@pytest.fixture
async def rig(config_path: Path) -> AsyncIterator[Rig]:
    with config_path.open("a") as handle:
        handle.write(CONFIG)
    settings = load_settings(config_path)
    async with open_runtime(settings) as runtime:
        clock, alerts = Clock(), RecordingAlerts()
        store = runtime.store
        ids = {}
        for name in ("ada@x.io", "bob@x.io"):
            ids[name] = (
                await store.create("User", Change(_doc("User", userName=name)), clock())
            ).id
        for group, members in (("oncall", ["ada@x.io"]), ("approvers", ["bob@x.io"])):
            change = Change(
                _doc("Group", displayName=group),
                (MemberOp("replace", items=tuple(Member(ids[m]) for m in members)),),
            )
            await store.create("Group", change, clock())
        rules = rules_from_settings(settings)
        access = TimeboundAccess(
            store,
            SqlAccess(store.db),
            eligibilities_from_settings(settings),
            rules,
            applier=runtime.applier,
            alerts=alerts,
            clock=clock,
            end_limit=timedelta(seconds=60),
        )
        reconciler = Reconciler(store, runtime.targets, rules, runtime.applier, timebound=access)
        yield Rig(config_path, runtime, clock, alerts, access, reconciler)


ADA, BOB = Actor("operator as ada@x.io", "ada@x.io"), Actor("operator as bob@x.io", "bob@x.io")


async def _active(rig: Rig) -> int:
    made = await rig.access.request(
        ADA, "sandbox", "admin", duration=timedelta(minutes=30), reason="r", ticket=None
    )
    approved = await rig.access.approve(BOB, made.id)
    assert approved.state == "active"
    return made.id


def _ops(operations: list[Any]) -> set[tuple[str, str, str | None]]:
    return {(op.action, op.user, op.role) for op in operations}


@pytest.mark.timeout(60)
async def test_reconcile_grants_until_expiry_and_then_revokes(rig: Rig) -> None:
    await _active(rig)
    snapshot = await rig.reconciler.snapshot(Scope())
    assert ("grant", "ada@x.io", "admin") in _ops(snapshot.operations)
    await rig.reconciler.apply(snapshot.operations)
    again = await rig.reconciler.snapshot(Scope())
    assert ("revoke", "ada@x.io", "admin") not in _ops(again.operations), "never early"
    explanation = await rig.reconciler.explain("ada@x.io")
    (reasons,) = [r for g, r in explanation.desired if g.role == "admin"]
    assert "approved by bob@x.io, expires" in str(reasons[0])
    rig.clock.now += timedelta(minutes=31)
    late = await rig.reconciler.snapshot(Scope())
    assert ("revoke", "ada@x.io", "admin") in _ops(late.operations)


@pytest.mark.timeout(60)
async def test_self_service_starts_at_once(rig: Rig) -> None:
    made = await rig.access.request(
        ADA, "sandbox", "viewer", duration=timedelta(minutes=5), reason="look", ticket=None
    )
    assert made.state == "active"
    assert made.approvals == ()
    history = [row.action for row in await rig.access.access.history(made.id)]
    assert history == ["request", "approve", "start"]
    # A crash between the request and its start leaves it pending: the next check starts it.
    eligibility = rig.access.eligibilities["viewer"]
    draft = new_request(
        [eligibility],
        Person("ada@x.io", True),
        "sandbox",
        "viewer",
        duration=timedelta(minutes=5),
        reason="look",
        ticket=None,
        now=rig.clock(),
    )
    (lost,) = await rig.access.access.record([Step(None, draft, "request", "test")], rig.clock())
    assert lost.state == "pending"
    assert (await rig.access.check())[1]["started"] == 1
    assert (await rig.access.get(lost.id)).state == "active"


@pytest.mark.timeout(60)
async def test_a_stale_write_is_refused(rig: Rig) -> None:
    made = await rig.access.request(
        ADA, "sandbox", "admin", duration=timedelta(minutes=5), reason="r", ticket=None
    )
    store = rig.access.access
    ended = made.__class__(**{**made.__dict__, "state": "cancelled"})
    await store.record([Step(made, ended, "end", "test")], rig.clock())
    with pytest.raises(AccessRefused, match="changed meanwhile"):
        await store.record([Step(made, ended, "end", "test")], rig.clock())
    assert (await store.get(made.id)).state == "cancelled"  # type: ignore[union-attr]


@pytest.mark.timeout(60)
async def test_an_end_not_verified_in_time_is_a_breach(rig: Rig) -> None:
    request_id = await _active(rig)
    ledger = rig.runtime.targets["sandbox"]
    await ledger.ensure_principal(PrincipalSpec("ada@x.io"))
    await ledger.grant("ada@x.io", "admin")
    rig.clock.now += timedelta(minutes=31)
    outcome, counts, _ = await rig.access.check()
    assert counts["ended"] == 1
    assert outcome == "ok"
    assert "access_ended" in rig.alerts.kinds()
    # The target still holds it (the revocation never landed): within the limit, wait.
    rig.clock.now += timedelta(seconds=30)
    assert (await rig.access.check())[1]["verified"] == 0
    rig.clock.now += timedelta(seconds=61)
    outcome, counts, _ = await rig.access.check()
    assert outcome == "breach"
    assert counts["breached"] == 1
    assert "access_end_unverified" in rig.alerts.kinds()
    assert (await rig.access.check())[1]["breached"] == 0, "one breach per end"
    code, out = await asyncio.to_thread(_status, rig.config)
    assert code == 1
    assert json.loads(out)["access"] == {
        "pending": 0,
        "active": 0,
        "ended_not_verified": 1,
        "breaches": 1,
    }
    await ledger.revoke("ada@x.io", "admin")
    assert (await rig.access.check())[1]["verified"] == 1
    stored = await rig.access.get(request_id)
    assert stored.state == "verified"
    assert stored.breached_at is not None
    code, out = await asyncio.to_thread(_status, rig.config)
    assert code == 0
    assert json.loads(out)["access"]["breaches"] == 0

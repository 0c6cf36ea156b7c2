"""Movers' revocations: recorded by the pipeline and by reconciliation with the revocation,
read back by leaver verification, and breached (alerted once, queued again) past the SLA."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from jmlsync.domain.directory import Change, MemberOp, parse_timestamp
from tests.service.test_assurance import Rig, rig  # noqa: F401


async def _leave_group(rig: Rig, user: str, group: str) -> None:  # noqa: F811
    remove = MemberOp("remove", ids=frozenset({rig.ids[user]}))
    await rig.runtime.store.update(
        "Group", rig.ids[group], lambda c: Change(c.doc, (remove,)), rig.clock()
    )


async def test_the_pipeline_records_and_verification_reads_back(rig: Rig) -> None:  # noqa: F811
    await rig.user("ann@x.io", "engineering")
    await rig.drain()
    changed = rig.clock.now
    await _leave_group(rig, "ann@x.io", "engineering")
    rig.clock.now += timedelta(seconds=3)
    await rig.drain()
    movers = rig.assurance.store.movers
    (open_mover,) = await movers.unverified()
    revocation = open_mover.revocation
    assert (revocation.user, revocation.target, revocation.role) == (
        "ann@x.io",
        "sandbox",
        "developer",
    )
    assert revocation.requested_at == changed
    assert revocation.revoked_at == changed + timedelta(seconds=3)
    assert revocation.actor == "pipeline"
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["movers_verified"], counts["movers_breached"]) == ("ok", 1, 0)
    assert await movers.unverified() == []
    assert await movers.counts() == {"not_verified": 0, "sla_breaches": 0}


async def test_a_role_still_held_past_the_sla_is_a_breach(rig: Rig) -> None:  # noqa: F811
    await rig.user("bob@x.io", "engineering")
    await rig.drain()
    await _leave_group(rig, "bob@x.io", "engineering")
    await rig.drain()
    await rig.flaky.ledger.grant("bob@x.io", "developer")  # back by hand before the read-back
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["movers_breached"], counts["movers_verified"]) == ("ok", 0, 0)
    rig.clock.now += timedelta(seconds=901)
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["movers_breached"]) == ("breach", 1)
    await rig.assurance.verify_leavers()
    assert rig.alerts.kinds().count("mover_sla_breach") == 1
    (open_mover,) = await rig.assurance.store.movers.unverified()
    assert open_mover.revocation.cause is not None
    assert "sandbox still held developer" in open_mover.revocation.cause
    # Held again, it is unmanaged drift: a remediating reconciliation takes it away (not a
    # second mover revocation), and the next read-back verifies the first.
    outcome, counts, _ = await replace(rig.assurance, drift_mode="remediate").full_reconcile()
    assert (outcome, counts["applied"]) == ("ok", 1)
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (counts["movers_checked"], counts["movers_verified"]) == (1, 1)
    assert await rig.assurance.store.movers.counts() == {"not_verified": 0, "sla_breaches": 0}
    code, out, _ = await asyncio.to_thread(rig.cli, "sla-report", "--format", "table")
    assert code == 1
    assert "BREACH" in out


async def test_a_late_revocation_is_a_breach_once_verified(rig: Rig) -> None:  # noqa: F811
    await rig.user("cy@x.io", "engineering")
    await rig.drain()
    await _leave_group(rig, "cy@x.io", "engineering")
    rig.clock.now += timedelta(seconds=1000)
    await rig.drain()
    outcome, counts, _ = await rig.assurance.verify_leavers()
    assert (outcome, counts["movers_breached"], counts["movers_verified"]) == ("breach", 1, 1)
    (kind, text, _), *_ = rig.alerts.sent
    assert kind == "mover_sla_breach"
    assert "revoked 1000s after the change" in text
    assert await rig.runtime.queue.rows() == []  # nothing to do again: it is gone


async def test_reconciliation_records_the_revocation_it_applies(rig: Rig) -> None:  # noqa: F811
    await rig.user("dee@x.io", "engineering")
    await rig.drain()
    changed = rig.clock.now
    await _leave_group(rig, "dee@x.io", "engineering")  # queued, not worked off yet
    rig.clock.now += timedelta(seconds=5)
    remediate = replace(rig.assurance, drift_mode="remediate")
    outcome, counts, _ = await remediate.full_reconcile()
    assert (outcome, counts["applied"]) == ("ok", 1)
    (open_mover,) = await rig.assurance.store.movers.unverified()
    assert open_mover.revocation.actor == "reconcile"
    assert open_mover.revocation.requested_at == changed
    assert open_mover.revocation.revoked_at == parse_timestamp(
        (await rig.runtime.queue.rows())[0].enqueued_at
    ) + timedelta(seconds=5)

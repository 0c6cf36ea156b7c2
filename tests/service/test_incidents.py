"""Privileged drift and re-granted leavers are incidents: alerted by whichever read finds them
(scheduled reconciliation, leaver verification, a job's read-back); `remediate-privileged`
revokes unmanaged privileged grants and reports the rest."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import timedelta

from jmlsync.domain.access import PrincipalSpec
from tests.service.test_assurance import Rig, rig  # noqa: F401


def _found_by(rig: Rig, kind: str) -> list[str]:  # noqa: F811
    return [fields["found_by"] for k, _, fields in rig.alerts.sent if k == kind]


async def test_remediate_privileged_revokes_only_privileged_drift(rig: Rig) -> None:  # noqa: F811
    await rig.user("cat@x.io", "engineering")
    await rig.user("dan@x.io")
    await rig.drain()
    await rig.flaky.ledger.grant("cat@x.io", "admin")
    await rig.flaky.ledger.ensure_principal(PrincipalSpec("dan@x.io"))
    await rig.flaky.ledger.grant("dan@x.io", "developer")
    privileged_only = replace(rig.assurance, drift_mode="remediate-privileged")
    outcome, counts, _ = await privileged_only.full_reconcile()
    assert (outcome, counts["unmanaged"], counts["applied"]) == ("ok", 2, 1)
    assert _found_by(rig, "privileged_drift") == ["reconciliation"]
    assert await rig.flaky.ledger.grants_of("cat@x.io") == {"developer"}
    assert await rig.flaky.ledger.grants_of("dan@x.io") == {"developer"}  # reported only
    await privileged_only.full_reconcile()  # the next run finds it gone: resolved
    drift = await rig.assurance.store.open_drift()
    assert [(d.user, d.role) for d in drift] == [("dan@x.io", "developer")]


async def test_a_jobs_read_back_alerts_privileged_drift(rig: Rig) -> None:  # noqa: F811
    await rig.user("eve@x.io", "engineering")
    await rig.drain()
    await rig.flaky.ledger.grant("eve@x.io", "admin")
    await rig.runtime.queue.enqueue(["eve@x.io"], cause="test", now=rig.clock())
    await rig.drain()
    assert _found_by(rig, "privileged_drift") == ["the pipeline's read-back"]
    assert await rig.flaky.ledger.grants_of("eve@x.io") == {"developer"}


async def test_leaver_verification_alerts_privileged_drift(rig: Rig) -> None:  # noqa: F811
    await rig.user("fay@x.io", "engineering")
    await rig.drain()
    await rig.deactivate("fay@x.io")
    await rig.drain()
    await rig.flaky.ledger.grant("fay@x.io", "admin")
    _, counts, _ = await rig.assurance.verify_leavers()
    assert counts["verified"] == 0
    assert _found_by(rig, "privileged_drift") == ["leaver verification"]


async def test_a_re_granted_leaver_is_a_breach(rig: Rig) -> None:  # noqa: F811
    await rig.user("gus@x.io", "engineering")
    await rig.drain()
    await rig.deactivate("gus@x.io")
    await rig.drain()
    _, counts, _ = await rig.assurance.verify_leavers()
    assert counts["verified"] == 1
    rig.clock.now += timedelta(seconds=60)
    await rig.flaky.ledger.grant("gus@x.io", "developer")  # given back by hand
    _, counts, _ = await rig.assurance.full_reconcile()
    assert counts["regranted"] == 1
    assert rig.alerts.kinds().count("leaver_regranted") == 1
    await rig.assurance.full_reconcile()
    assert rig.alerts.kinds().count("leaver_regranted") == 1  # once
    code, out, _ = await asyncio.to_thread(rig.cli, "sla-report", "--format", "json")
    assert code == 1
    (row,) = json.loads(out)["leavers"]
    assert row["within_sla"] is False
    assert row["regranted_at"] is not None
    assert "re-granted: sandbox held developer again" in row["breach_cause"]
    assert [(r.user_name, r.cause, r.leaver) for r in await rig.runtime.queue.rows()] == [
        ("gus@x.io", "sla.regranted", True)
    ]
    await rig.drain()  # the leaver's access goes again, and is read back as gone
    assert await rig.flaky.ledger.grants_of("gus@x.io") == set()
    _, counts, _ = await rig.assurance.verify_leavers()
    assert counts["verified"] == 1
    code, out, _ = await asyncio.to_thread(rig.cli, "status", "--format", "json")
    assert json.loads(out)["leavers"]["sla_breaches"] == 0


async def test_a_breach_row_says_why(rig: Rig) -> None:  # noqa: F811
    await rig.user("hal@x.io", "engineering")
    await rig.drain()
    rig.flaky.failing = {"revoke"}
    rig.flaky.fail_next = 10**6
    rig.flaky.permanent = True
    await rig.deactivate("hal@x.io")
    await rig.drain()  # dead-lettered: the target refuses the revocation
    rig.clock.now += timedelta(seconds=901)
    outcome, _, _ = await rig.assurance.verify_leavers()
    assert outcome == "breach"
    code, out, _ = await asyncio.to_thread(rig.cli, "sla-report", "--format", "json")
    assert code == 1
    (row,) = json.loads(out)["leavers"]
    assert row["breach_cause"].startswith("not cleared on sandbox (revoke sandbox:")
    assert "revoke denied (injected)" in row["breach_cause"]
    (target,) = row["targets"]
    assert (target["state"], target["failures"]) == ("pending", 1)
    for fmt in ("table", "html", "csv"):
        _, out, _ = await asyncio.to_thread(rig.cli, "sla-report", "--format", fmt)
        assert "revoke denied (injected)" in out, fmt

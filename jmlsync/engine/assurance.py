"""What jmlsync proves on a schedule: that leavers lost access within the SLA, and that the
targets match the directory (drift), with the mass-revocation guard on remediation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from jmlsync.alerts import AlertSink
from jmlsync.domain.errors import TargetError
from jmlsync.domain.grants import Grant, Operation
from jmlsync.domain.models import format_timestamp
from jmlsync.engine.apply import Applier
from jmlsync.engine.mover_verify import MoverVerifier
from jmlsync.engine.reconcile import Reconciler, Scope, Snapshot
from jmlsync.metrics import Metrics
from jmlsync.ports import Queue
from jmlsync.store.assurance import DriftFinding, OpenLeaver, SqlAssurance

log = logging.getLogger("jmlsync.assurance")

RunResult = tuple[str, dict[str, int], str | None]


def drift_of(snapshot: Snapshot) -> list[tuple[str, Grant]]:
    """Drift in a snapshot: ``missing`` (desired, absent) and ``unmanaged`` (present on a
    role jmlsync manages, not desired: e.g. granted by hand in the console)."""
    inp = snapshot.plan_input
    findings: list[tuple[str, Grant]] = []
    for grant in sorted(inp.desired):
        if grant not in inp.actual and inp.in_scope(grant.target, grant.user):
            findings.append(("missing", grant))
    for grant in sorted(inp.actual):
        owned = (grant.target, grant.role) in inp.managed or grant in inp.applied
        if owned and grant not in inp.desired and inp.in_scope(grant.target, grant.user):
            findings.append(("unmanaged", grant))
    return findings


def drift_json(
    findings: Iterable[tuple[str, Grant]], known: Iterable[DriftFinding], now: str
) -> list[dict[str, str]]:
    """The ``drift`` array of `reconcile --format json`."""
    first_seen = {(d.kind, d.target, d.user, d.role): d.first_seen for d in known}
    return [
        {
            "kind": kind,
            "target": grant.target,
            "user": grant.user,
            "role": grant.role,
            "first_seen": first_seen.get((kind, grant.target, grant.user, grant.role), now),
        }
        for kind, grant in findings
    ]


async def mover_requests(
    queue: Queue, operations: Iterable[Operation], started: datetime
) -> dict[str, str]:
    """When each user a reconciliation revokes as a mover asked for it: the enqueue time of
    the user's queue row still pending, else ``started`` (when the run found it unwanted)."""
    movers = {op.user for op in operations if op.action == "revoke" and op.reason == "mover"}
    if not movers:
        return {}
    pending = {row.user_name: row.enqueued_at for row in await queue.rows()}
    return {user: pending.get(user, format_timestamp(started)) for user in movers}


def revocations_over(operations: Iterable[Operation], limit: int) -> int | None:
    """The number of revocations when it exceeds ``limit`` (the guard trips), else None."""
    count = sum(1 for op in operations if op.action == "revoke")
    return count if count > limit else None


@dataclass
class Assurance:
    """The scheduled jobs' logic, over the runtime's parts."""

    reconciler: Reconciler
    applier: Applier
    queue: Queue
    store: SqlAssurance
    alerts: AlertSink
    metrics: Metrics
    clock: Callable[[], datetime]
    sla: timedelta
    drift_mode: str
    max_revocations: int
    #: ``[sla].mover_seconds``; None: the leaver SLA.
    mover_sla: timedelta | None = None

    async def verify_leavers(self) -> RunResult:
        """Read back every cleared leaver's access; mark it verified, or breached past the SLA.
        Movers' revocations are read back in the same run (see :mod:`.mover_verify`)."""
        counts = {"checked": 0, "verified": 0, "breached": 0, "unreadable": 0}
        for leaver in await self.store.unverified_leavers():
            counts["checked"] += 1
            cause = await self._not_cleared_cause(leaver)
            if leaver.cleared_at is not None:
                try:
                    leftovers = await self._leftovers(leaver.user_name)
                except TargetError as exc:
                    log.warning("cannot verify %s yet: %s", leaver.user_name, exc)
                    counts["unreadable"] += 1
                    leftovers = [f"could not be read back: {exc}"]
                if not leftovers:
                    await self.store.mark_verified(leaver.id, self.clock())
                    counts["verified"] += 1
                    continue
                cause = "read back: " + "; ".join(leftovers)
            if await self._breach(leaver, cause):
                counts["breached"] += 1
        counts.update(await self._movers().run())
        outcome = "breach" if counts["breached"] or counts["movers_breached"] else "ok"
        return outcome, counts, None

    def _movers(self) -> MoverVerifier:
        return MoverVerifier(
            self.store.movers,
            self.applier,
            self.reconciler,
            self.alerts,
            self.clock,
            self.mover_sla if self.mover_sla is not None else self.sla,
        )

    async def _not_cleared_cause(self, leaver: OpenLeaver) -> str:
        """Why a leaver is not cleared: each pending target and the error keeping it so."""
        if leaver.cleared_at is not None:
            return ""
        pending = await self.store.pending_targets_of(leaver.id, list(self.applier.targets))
        if not pending:
            return "not cleared yet"
        return "not cleared on " + "; ".join(
            f"{target} ({error})" if error else target for target, error in pending.items()
        )

    async def _leftovers(self, user: str) -> list[str]:
        """What each target still holds for a leaver (empty: access gone)."""
        managed = self.reconciler.plan_managed()
        found: list[str] = []
        for target in self.applier.targets:
            roles, principal = await self.applier.read_user(target, user)
            held = sorted(role for role in roles if (target, role) in managed)
            if held:
                found.append(f"{target} still held {', '.join(held)}")
            if principal is not None and principal.disableable:
                found.append(f"{target} principal still enabled")
        return found

    async def _breach(self, leaver: OpenLeaver, cause: str) -> bool:
        now = self.clock()
        if now - leaver.left_at <= self.sla or leaver.breached_at is not None:
            return False
        if not await self.store.mark_breached(leaver.id, now, cause):
            return False
        self.metrics.sla_breaches.inc()
        late = (now - leaver.left_at).total_seconds()
        await self.alerts.alert(
            "sla_breach",
            f"leaver {leaver.user_name} still not verified {late:.0f}s after leaving"
            f" (SLA {self.sla.total_seconds():.0f}s; {cause}); revocations queued again",
            user=leaver.user_name,
            left_at=leaver.left_at.isoformat(),
            cause=cause,
        )
        await self.queue.enqueue([leaver.user_name], cause="sla.breach", now=now, leaver=True)
        return True

    async def full_reconcile(self) -> RunResult:
        """Read every target, record drift, and remediate it when configured (guarded)."""
        started = self.clock()
        snapshot = await self.reconciler.snapshot(Scope())
        findings = drift_of(snapshot)
        new, open_findings = await self.store.record_drift(
            findings, self.clock(), scope_complete=True, unreadable=snapshot.unreadable
        )
        for kind in ("missing", "unmanaged"):
            self.metrics.drift_findings.labels(kind).set(
                sum(1 for d in open_findings if d.kind == kind)
            )
        for finding in new:
            if finding.kind == "unmanaged":
                await self.alerts.alert(
                    "unmanaged_drift",
                    f"{finding.user} holds {finding.role} on {finding.target}, which no rule"
                    " grants (granted outside jmlsync?)",
                    user=finding.user,
                    target=finding.target,
                    role=finding.role,
                    key=f"{finding.target}/{finding.user}/{finding.role}",
                )
        counts = {
            **snapshot.counts,
            "missing": sum(1 for k, _ in findings if k == "missing"),
            "unmanaged": sum(1 for k, _ in findings if k == "unmanaged"),
            "new_findings": len(new),
        }
        outcome, detail = "ok", None
        if self.drift_mode == "remediate" and snapshot.operations:
            outcome, detail = await self._remediate(snapshot.operations, counts, started)
        if snapshot.unreadable:
            # The other targets were read (and remediated); this run is not a clean bill.
            unread = unreadable_detail(snapshot.unreadable)
            outcome = "partial" if outcome == "ok" else outcome
            detail = unread if detail is None else f"{detail}; {unread}"
        self.metrics.last_reconcile.set(self.clock().timestamp())
        self.metrics.last_reconcile_ok.set(1 if outcome == "ok" else 0)
        return outcome, counts, detail

    async def _remediate(
        self, operations: list[Operation], counts: dict[str, int], started: datetime
    ) -> tuple[str, str | None]:
        held = revocations_over(operations, self.max_revocations)
        if held is not None:
            message = guard_message(held, self.max_revocations)
            await self.alerts.alert("guard_tripped", message, revocations=held, key="full")
            return "held", message
        requested = await mover_requests(self.queue, operations, started)
        outcomes = await self.reconciler.apply(operations, requested_at=requested)
        counts["applied"] = sum(1 for o in outcomes if o.ok)
        counts["failed"] = sum(1 for o in outcomes if not o.ok)
        return ("ok" if not counts["failed"] else "failed"), None

    async def housekeeping(self, keep: timedelta) -> RunResult:
        pruned = await self.store.housekeeping(self.clock(), keep)
        return "ok", pruned, None


def unreadable_detail(unreadable: Mapping[str, str]) -> str:
    """A run's detail naming each target that could not be read, with its error."""
    return "unreadable: " + "; ".join(
        f"{name} ({error})" for name, error in sorted(unreadable.items())
    )


def guard_message(revocations: int, limit: int) -> str:
    """What a held run says: the count, the limit, and the override."""
    return (
        f"held: the plan revokes {revocations} grants, more than the limit of {limit};"
        f" nothing was changed. Check the IdP, then run `jmlsync reconcile --max-revocations"
        f" {revocations}` to allow it."
    )

"""What jmlsync proves on a schedule: that leavers lost access within the SLA, and that the
targets match the directory (drift), with the mass-revocation guard on remediation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from jmlsync.domain.access import Grant, Operation
from jmlsync.domain.assurance import OpenLeaver
from jmlsync.domain.errors import TargetError
from jmlsync.engine.alerting import stage_alert
from jmlsync.engine.apply import Applier
from jmlsync.engine.incidents import privileged_drift
from jmlsync.engine.mover_verify import MoverVerifier
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.engine.reconcile_run import DRIFT_ALERT_LIMIT, ReconcileRun, RunRequest, RunResult
from jmlsync.ports import AlertSink, AssuranceStore, Clock, EngineMetrics, Queue

log = logging.getLogger("jmlsync.assurance")


def privileged_revocation(operation: Operation) -> bool:
    """What ``drift = "remediate-privileged"`` applies: revocations of privileged roles (every
    other difference is reported, not changed)."""
    return operation.action == "revoke" and operation.privileged


@dataclass
class Assurance:
    """The scheduled jobs' logic, over the runtime's parts."""

    reconciler: Reconciler
    applier: Applier
    queue: Queue
    store: AssuranceStore
    alerts: AlertSink
    metrics: EngineMetrics
    clock: Clock
    sla: timedelta
    drift_mode: str
    max_revocations: int
    #: ``[sla].mover_seconds``; None: the leaver SLA.
    mover_sla: timedelta | None = None
    #: ``[alerts].drift_alerts_per_run``.
    drift_alert_limit: int = DRIFT_ALERT_LIMIT

    async def verify_leavers(self) -> RunResult:
        """Read back every cleared leaver's access; mark it verified, or breached past the SLA.
        Movers' revocations are read back in the same run (see :mod:`.mover_verify`)."""
        counts = {"checked": 0, "verified": 0, "breached": 0, "unreadable": 0}
        for leaver in await self.store.unverified_leavers():
            counts["checked"] += 1
            cause: str | None = None
            if leaver.cleared_at is not None:
                try:
                    leftovers = await self._leftovers(leaver.user_name)
                except TargetError as exc:
                    log.warning("cannot verify %s yet: %s", leaver.user_name, exc)
                    counts["unreadable"] += 1
                    cause = f"could not be read back: {exc}"
                else:
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
        privileged = self.reconciler.plan_privileged()
        applied = await self.reconciler.store.applied_grants([user])
        found: list[str] = []
        for target in self.applier.targets:
            roles, principal = await self.applier.read_user(target, user)
            held = sorted(role for role in roles if (target, role) in managed)
            for role in held:
                grant = Grant(target, user, role)
                if (target, role) in privileged and grant not in applied:
                    await privileged_drift(self.alerts, grant, "leaver verification")
            if held:
                found.append(f"{target} still held {', '.join(held)}")
            if principal is not None and principal.disableable:
                found.append(f"{target} principal still enabled")
        return found

    async def _breach(self, leaver: OpenLeaver, cause: str | None) -> bool:
        """Breach a leaver past the SLA, once; ``cause`` None: not cleared (the pending
        targets and their errors say why)."""
        now = self.clock()
        if now - leaver.left_at <= self.sla or leaver.breached_at is not None:
            return False
        if cause is None:
            cause = await self._not_cleared_cause(leaver)
        late = (now - leaver.left_at).total_seconds()
        # The alert's row commits with the breach itself: a crash cannot keep one only.
        alert = stage_alert(
            self.alerts,
            "sla_breach",
            f"leaver {leaver.user_name} still not verified {late:.0f}s after leaving"
            f" (SLA {self.sla.total_seconds():.0f}s; {cause}); revocations queued again",
            user=leaver.user_name,
            left_at=leaver.left_at.isoformat(),
            cause=cause,
        )
        if not await self.store.mark_breached(leaver.id, now, cause, also=alert.write):
            return False
        self.metrics.sla_breaches.inc()
        await alert.after_commit()
        await self.queue.enqueue([leaver.user_name], cause="sla.breach", now=now, leaver=True)
        return True

    def reconcile_run(self) -> ReconcileRun:
        """The one reconciliation run, over this runtime's parts (the CLI uses it too)."""
        return ReconcileRun(
            self.reconciler,
            self.queue,
            self.store,
            self.alerts,
            self.metrics,
            self.clock,
            drift_alert_limit=self.drift_alert_limit,
        )

    async def full_reconcile(self) -> RunResult:
        """Read every target, record drift, and remediate it when configured (guarded)."""
        return (await self.reconcile_run().run(self.full_request())).result

    def full_request(self) -> RunRequest:
        """What a full reconciliation does under this configuration."""
        return RunRequest(
            scope=Scope(),
            apply=self.drift_mode in ("remediate", "remediate-privileged"),
            max_revocations=self.max_revocations,
            job="full-reconcile",
            guard_key="full",
            select=privileged_revocation if self.drift_mode == "remediate-privileged" else None,
        )

    async def housekeeping(self, keep: timedelta) -> RunResult:
        pruned = await self.store.housekeeping(self.clock(), keep)
        return "ok", pruned, None

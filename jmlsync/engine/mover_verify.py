"""Reading back movers' revocations, like leavers: a revoked role the target no longer holds
is verified; one still (or again) held past ``[sla].mover_seconds``, or revoked later than
that, is a breach, alerted once. A role held again once jmlsync revoked it is no longer one
jmlsync applied: it is unmanaged drift, which full reconciliation reports (and revokes with
``drift = "remediate"``); the read-back goes on until it is gone."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from jmlsync.domain.access import Grant
from jmlsync.domain.assurance import OpenMover
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.errors import TargetError
from jmlsync.engine.apply import Applier
from jmlsync.engine.reconcile import Reconciler
from jmlsync.ports import AlertSink, Clock, MoverRecords

log = logging.getLogger("jmlsync.assurance")


@dataclass
class MoverVerifier:
    """Reads back each unverified mover revocation and records what it found."""

    movers: MoverRecords
    applier: Applier
    reconciler: Reconciler
    alerts: AlertSink
    clock: Clock
    sla: timedelta

    async def run(self) -> dict[str, int]:
        """Check every open revocation; counts ``movers_checked``, ``_verified``, ``_breached``."""
        counts = {"movers_checked": 0, "movers_verified": 0, "movers_breached": 0}
        for open_mover in await self.movers.unverified():
            counts["movers_checked"] += 1
            verified, breached = await self._check(open_mover)
            counts["movers_verified"] += int(verified)
            counts["movers_breached"] += int(breached)
        return counts

    async def _check(self, open_mover: OpenMover) -> tuple[bool, bool]:
        """(verified, newly breached) for one revocation."""
        revocation = open_mover.revocation
        now = self.clock()
        late = revocation.revoked_at - revocation.requested_at > self.sla
        if revocation.target not in self.applier.targets:
            # The target is no longer configured: nothing left to read back there.
            await self.movers.mark_verified(open_mover.id, now)
            return True, False
        try:
            roles, _ = await self.applier.read_user(revocation.target, revocation.user)
        except TargetError as exc:
            log.warning("cannot verify %s's revocation yet: %s", revocation.user, exc)
            cause = f"{revocation.target} could not be read back: {exc}"
            return False, await self._breach_if_overdue(open_mover, now, cause)
        grant = Grant(revocation.target, revocation.user, revocation.role)
        if revocation.role in roles and grant not in await self.reconciler.desired_of(grant.user):
            cause = (
                f"{revocation.target} still held {revocation.role} for {revocation.user}"
                f" when read back at {format_timestamp(now)}"
            )
            return False, await self._breach_if_overdue(open_mover, now, cause)
        # Gone, or held again because a rule gives it again (a later joiner-style grant).
        breached = False
        if late and revocation.breached_at is None:
            seconds = (revocation.revoked_at - revocation.requested_at).total_seconds()
            cause = f"revoked {seconds:.0f}s after the change, over the SLA"
            breached = await self._breach(open_mover, now, cause)
        await self.movers.mark_verified(open_mover.id, now)
        return True, breached

    async def _breach_if_overdue(self, open_mover: OpenMover, now: datetime, cause: str) -> bool:
        revocation = open_mover.revocation
        if revocation.breached_at is not None or now - revocation.requested_at <= self.sla:
            return False
        return await self._breach(open_mover, now, cause)

    async def _breach(self, open_mover: OpenMover, now: datetime, cause: str) -> bool:
        revocation = open_mover.revocation
        if not await self.movers.mark_breached(open_mover.id, now, cause):
            return False
        await self.alerts.alert(
            "mover_sla_breach",
            f"mover {revocation.user}: {revocation.role} on {revocation.target} not revoked and"
            f" read back within the SLA ({self.sla.total_seconds():.0f}s): {cause}",
            user=revocation.user,
            target=revocation.target,
            role=revocation.role,
            requested_at=format_timestamp(revocation.requested_at),
            key=f"mover/{revocation.target}/{revocation.user}/{revocation.role}",
        )
        return True

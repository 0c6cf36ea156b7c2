"""What the scheduler does for access reviews: read revocations back, remind reviewers, and
act on deadlines (``on_no_decision``), each alerted."""

from __future__ import annotations

import logging

from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.errors import TargetError
from jmlsync.domain.review_records import NO_DECISION
from jmlsync.domain.reviews import Campaign, DecisionRow, Item
from jmlsync.engine.apply import Applier
from jmlsync.engine.reviews import Reviews
from jmlsync.ports import AlertSink, Clock

log = logging.getLogger("jmlsync.reviews")

RunResult = tuple[str, dict[str, int], str | None]


class ReviewTasks:
    """The scheduled side of reviews; one :meth:`run` does everything due."""

    def __init__(
        self,
        reviews: Reviews,
        applier: Applier,
        *,
        alerts: AlertSink,
        clock: Clock,
    ) -> None:
        self.reviews = reviews
        self.applier = applier
        self.alerts = alerts
        self.clock = clock

    async def run(self) -> RunResult:
        """Verify revocations, send reminders, act on deadlines."""
        counts = await self.verify()
        counts.update(await self.deadlines())
        return "ok", counts, None

    async def verify(self) -> dict[str, int]:
        """Read each revoked item back from its target; gone is verified."""
        store = self.reviews.reviews
        counts = {"verified": 0, "pending": 0, "unreadable": 0}
        items: dict[str, dict[int, Item]] = {}
        for remediation in await store.remediations():
            if remediation.verified_at is not None:
                continue
            if remediation.campaign not in items:
                items[remediation.campaign] = {
                    i.id: i for i in await store.items(remediation.campaign)
                }
            item = items[remediation.campaign][remediation.item_id]
            if item.target not in self.applier.targets:
                counts["unreadable"] += 1
                error = f"target {item.target} is no longer configured"
                await store.mark_remediated(
                    remediation, revoked_at=None, verified_at=None, error=error
                )
                continue
            try:
                roles, _principal = await self.applier.read_user(item.target, item.user.user_name)
            except TargetError as exc:
                counts["unreadable"] += 1
                await store.mark_remediated(
                    remediation, revoked_at=None, verified_at=None, error=str(exc)
                )
                continue
            if item.role in roles:
                counts["pending"] += 1
                continue
            revoked = await store.revoke_audit(item.grant, remediation.requested_at)
            now = format_timestamp(self.clock())
            await store.mark_remediated(
                remediation,
                # No revocation of ours: someone else took it away first.
                revoked_at=revoked[0] if revoked else None,
                verified_at=now,
                error=None,
            )
            counts["verified"] += 1
        await self._auto_revocations_done()
        return counts

    async def _auto_revocations_done(self) -> None:
        """Alert once per campaign when every revocation its deadline made is read back."""
        store = self.reviews.reviews
        for campaign in await store.campaigns():
            if campaign.closed_at is None:
                continue
            automatic = [
                d.item_id
                for d in (await store.decisions(campaign.id)).values()
                if d.reviewer == NO_DECISION
            ]
            if not automatic:
                continue
            remediations = {r.item_id: r for r in await store.remediations(campaign.id)}
            if not all((r := remediations.get(i)) and r.verified_at for i in automatic):
                continue
            if await store.mark_campaign(campaign.id, "auto_revoked_at", self.clock()):
                await self.alerts.alert(
                    "review_auto_revoked",
                    f"access review {campaign.id}: the {len(automatic)} item(s) undecided at"
                    " the deadline were revoked and read back as gone",
                    campaign=campaign.id,
                    revoked=len(automatic),
                    key=campaign.id,
                )

    async def deadlines(self) -> dict[str, int]:
        """Remind before each open campaign's deadline; at it, apply ``on_no_decision``."""
        counts = {"reminded": 0, "closed": 0, "auto_revoked": 0}
        now = self.clock()
        for campaign in await self.reviews.reviews.campaigns():
            if campaign.closed_at is not None:
                continue
            definition = self.reviews.definitions.get(campaign.name)
            if definition is None:
                continue
            deadline = parse_timestamp(campaign.deadline)
            if now >= deadline:
                counts["auto_revoked"] += await self._close(campaign, definition.on_no_decision)
                counts["closed"] += 1
            elif now >= deadline - definition.remind_before and campaign.reminded_at is None:
                await self._remind(campaign)
                counts["reminded"] += 1
        return counts

    async def _undecided(self, campaign: Campaign) -> list[Item]:
        decided = await self.reviews.reviews.decisions(campaign.id)
        return [i for i in await self.reviews.reviews.items(campaign.id) if i.id not in decided]

    async def _remind(self, campaign: Campaign) -> None:
        if not await self.reviews.reviews.mark_campaign(campaign.id, "reminded_at", self.clock()):
            return
        per_reviewer: dict[str, int] = {}
        for item in await self._undecided(campaign):
            key = item.reviewer or "(unassigned)"
            per_reviewer[key] = per_reviewer.get(key, 0) + 1
        for reviewer, count in sorted(per_reviewer.items()):
            await self.alerts.alert(
                "review_reminder",
                f"access review {campaign.id}: {count} item(s) for {reviewer} undecided;"
                f" the deadline is {campaign.deadline}",
                campaign=campaign.id,
                reviewer=reviewer,
                undecided=count,
                key=f"{campaign.id}/{reviewer}",
            )

    async def _close(self, campaign: Campaign, on_no_decision: str) -> int:
        """The deadline: alert what is undecided, revoke it when so configured."""
        store = self.reviews.reviews
        if not await store.mark_campaign(campaign.id, "closed_at", self.clock()):
            return 0
        undecided = await self._undecided(campaign)
        outcome = "revoked" if on_no_decision == "revoke" else "kept"
        await self.alerts.alert(
            "review_overdue",
            f"access review {campaign.id} reached its deadline with {len(undecided)} item(s)"
            f" undecided; they are {outcome} (on_no_decision = {on_no_decision})",
            campaign=campaign.id,
            undecided=len(undecided),
            on_no_decision=on_no_decision,
            key=campaign.id,
        )
        if on_no_decision != "revoke" or not undecided:
            return 0
        rows = [
            DecisionRow(0, item.id, "revoke", NO_DECISION, "no decision by the deadline")
            for item in undecided
        ]
        directory = await self.reviews.directory()
        await store.record_decisions(
            campaign,
            rows,
            {i.id: i for i in undecided},
            now=self.clock(),
            imported_by="deadline",
            late=False,
            exceptions=self.reviews.exceptions_for(undecided, directory),
        )
        log.info("campaign %s closed: %d item(s) to revoke", campaign.id, len(undecided))
        return len(undecided)

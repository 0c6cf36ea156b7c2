"""Access-review campaigns: the snapshot of what the targets hold, and decisions imported.

The snapshot is taken from the targets themselves (actual grants, read as reconciliation
reads them), each grant described from the directory and the grant ledger, and stored with
its SHA-256 anchored in the audit chain. Decisions are checked whole before any is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jmlsync.domain.access import Grant, GroupInfo, Reason, Rule, UserState
from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.domain.policy import desired_grants, grant_causes, privileged_roles, rules_by_group
from jmlsync.domain.review_records import NewException
from jmlsync.domain.reviews import (
    Campaign,
    DecisionError,
    DecisionRow,
    Item,
    Owner,
    Person,
    ReviewScope,
    Source,
    assign_reviewer,
    check_decisions,
    parse_decisions,
    snapshot_digest,
)
from jmlsync.engine.reconcile import Reconciler
from jmlsync.ports import AlertSink, Clock, PlanningReads, ReviewStore

log = logging.getLogger("jmlsync.reviews")

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


class ReviewError(Exception):
    """A review command that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Definition:
    """A ``[[reviews]]`` entry as the engine uses it."""

    name: str
    scope: ReviewScope
    reviewers: tuple[str, ...]
    owners: tuple[Owner, ...]
    duration: timedelta
    remind_before: timedelta
    on_no_decision: Literal["keep", "revoke"]
    admins: frozenset[str]


@dataclass
class Directory:
    """The directory as reviews read it: users with their documents, groups, the rules'
    view, and members of groups by (casefolded) displayName."""

    users: list[UserState]
    groups: dict[str, GroupInfo]
    by_group: dict[str, tuple[Rule, ...]]
    members: dict[str, frozenset[str]]

    def by_name(self) -> dict[str, UserState]:
        return {u.user_name.casefold(): u for u in self.users}

    def active(self) -> frozenset[str]:
        return frozenset(u.user_name for u in self.users if u.active)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def person_of(state: UserState | None, user_name: str, names_by_id: Mapping[str, str]) -> Person:
    """The holder as the snapshot records them (userName, display name, active, manager)."""
    if state is None:
        return Person(user_name)
    doc: Mapping[str, Any] = state.resource
    enterprise = doc.get(ENTERPRISE)
    manager = enterprise.get("manager") if isinstance(enterprise, dict) else None
    manager_id = manager.get("value") if isinstance(manager, dict) else None
    return Person(
        user_name=state.user_name,
        display_name=_text(doc.get("displayName")),
        active=state.active,
        manager=names_by_id.get(manager_id) if isinstance(manager_id, str) else None,
    )


class Reviews:
    """Starts campaigns and takes decisions."""

    def __init__(
        self,
        store: PlanningReads,
        reviews: ReviewStore,
        reconciler: Reconciler,
        definitions: Sequence[Definition],
        *,
        alerts: AlertSink,
        clock: Clock,
    ) -> None:
        self.store = store
        self.reviews = reviews
        self.reconciler = reconciler
        self.definitions = {d.name: d for d in definitions}
        self.alerts = alerts
        self.clock = clock

    def definition(self, name: str) -> Definition:
        found = self.definitions.get(name)
        if found is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise ReviewError(f"no campaign {name!r} in [[reviews]] (configured: {known})")
        return found

    async def directory(self, extra_groups: Sequence[str] = ()) -> Directory:
        """Users (with documents) and their memberships of rule groups and ``extra_groups``."""
        groups = {g.id: g for g in await self.store.list_groups()}
        by_group = rules_by_group(self.reconciler.rules, groups.values())
        wanted = {name.casefold() for name in extra_groups}
        extra = {g.id for g in groups.values() if g.display_name.casefold() in wanted}
        users = [
            u
            async for u in self.store.policy_users(
                set(by_group) | extra, with_resource=True, user_names=None
            )
        ]
        members: dict[str, set[str]] = {}
        for user in users:
            for group_id in user.groups & extra:
                members.setdefault(groups[group_id].display_name.casefold(), set()).add(
                    user.user_name
                )
        frozen = {name: frozenset(m) for name, m in members.items()}
        return Directory(users, groups, by_group, frozen)

    def _reviewer_groups(self, definition: Definition) -> list[str]:
        specs = [*definition.reviewers, *(r for o in definition.owners for r in o.reviewers)]
        return [s.removeprefix("group:") for s in specs if s.startswith("group:")]

    async def start(self, name: str, started_by: str) -> tuple[Campaign, list[Item]]:
        """Snapshot what the targets hold for campaign ``name``, store it, alert reviewers."""
        definition = self.definition(name)
        now = self.clock()
        actual, unreadable = await self.reconciler.read_actual()
        if unreadable:
            names = ", ".join(f"{t} ({e})" for t, e in sorted(unreadable.items()))
            raise ReviewError(f"cannot snapshot: target(s) could not be read: {names}")
        directory = await self.directory(self._reviewer_groups(definition))
        desired = desired_grants(directory.users, directory.by_group)
        applied = await self.reviews.applied_details()
        campaign_id = await self._new_id(name, now)
        items = self._items(campaign_id, now, definition, actual, desired, applied, directory)
        digest = snapshot_digest(items)
        deadline = now + definition.duration
        entry = AuditEntry(
            at=format_timestamp(now),
            actor=started_by,
            action="review.start",
            subject=f"campaign {campaign_id}",
            outcome="committed",
            detail=f"snapshot sha256 {digest}; {len(items)} item(s);"
            f" deadline {format_timestamp(deadline)}",
        )
        campaign = Campaign(
            campaign_id,
            name,
            format_timestamp(now),
            format_timestamp(deadline),
            digest,
            None,
            len(items),
        )
        seq = await self.reviews.create_campaign(campaign, items, started_by, entry)
        stored = await self.reviews.campaign(campaign_id)
        assert stored is not None
        assert stored.audit_seq == seq
        await self._started_alerts(stored, items)
        return stored, items

    async def _new_id(self, name: str, now: datetime) -> str:
        base = f"{name}-{now:%Y%m%dT%H%M%SZ}"
        candidate, number = base, 1
        while await self.reviews.campaign(candidate) is not None:
            number += 1
            candidate = f"{base}-{number}"
        return candidate

    def _items(
        self,
        campaign_id: str,
        now: datetime,
        definition: Definition,
        actual: set[Grant],
        desired: Mapping[Grant, Reason],
        applied: Mapping[Grant, tuple[str, str]],
        directory: Directory,
    ) -> list[Item]:
        privileged = privileged_roles(self.reconciler.rules)
        by_name = directory.by_name()
        names_by_id = {u.id: u.user_name for u in directory.users}
        active = directory.active()
        stamp = format_timestamp(now)
        items: list[Item] = []
        for grant in sorted(actual):
            source = _source(grant, desired, applied)
            is_privileged = (grant.target, grant.role) in privileged
            if not definition.scope.covers(grant, is_privileged, source):
                continue
            person = person_of(by_name.get(grant.user.casefold()), grant.user, names_by_id)
            reviewer = assign_reviewer(
                person,
                grant.target,
                grant.role,
                owners=definition.owners,
                reviewers=definition.reviewers,
                active_users=active,
                groups=directory.members,
            )
            granted = applied.get(grant)
            items.append(
                Item(
                    id=len(items) + 1,
                    campaign=campaign_id,
                    snapshot_at=stamp,
                    target=grant.target,
                    role=grant.role,
                    privileged=is_privileged,
                    user=person,
                    source=source,
                    granted_at=granted[1] if granted else None,
                    reviewer=reviewer,
                )
            )
        return items

    async def _started_alerts(self, campaign: Campaign, items: Sequence[Item]) -> None:
        per_reviewer: dict[str, int] = {}
        for item in items:
            key = item.reviewer or "(unassigned)"
            per_reviewer[key] = per_reviewer.get(key, 0) + 1
        for reviewer, count in sorted(per_reviewer.items()):
            await self.alerts.alert(
                "review_started",
                f"access review {campaign.id} started: {count} item(s) for {reviewer}"
                f" to decide by {campaign.deadline}",
                campaign=campaign.id,
                reviewer=reviewer,
                items=count,
                deadline=campaign.deadline,
                key=f"{campaign.id}/{reviewer}",
            )

    async def decide(
        self,
        campaign_id: str,
        text: str,
        kind: Literal["csv", "json"],
        *,
        imported_by: str,
        late: bool,
    ) -> tuple[int, int]:
        """Check a decisions file whole, then record it; (decisions, jobs queued)."""
        campaign = await self.campaign(campaign_id)
        definition = self.definition(campaign.name)
        if late and imported_by.casefold() not in definition.admins:
            raise DecisionError(
                f"--late is for an admin of campaign {campaign.name}; {imported_by} is not"
                " one ([[reviews]] admins)"
            )
        return await self.decide_rows(
            campaign_id, parse_decisions(text, kind), imported_by=imported_by, late=late
        )

    async def decide_rows(
        self,
        campaign_id: str,
        rows: Sequence[DecisionRow],
        *,
        imported_by: str,
        late: bool = False,
    ) -> tuple[int, int]:
        """Check decisions whole (the file's or the API's), then record them all in one
        transaction; (decisions, jobs queued). ``late`` is the caller's to authorise."""
        campaign = await self.campaign(campaign_id)
        definition = self.definition(campaign.name)
        items = {item.id: item for item in await self.reviews.items(campaign_id)}
        directory = await self.directory(self._reviewer_groups(definition))
        check_decisions(
            rows,
            items,
            directory.members,
            now=self.clock(),
            deadline=parse_timestamp(campaign.deadline),
            late=late,
            protected=self.reconciler.protected,
        )
        exceptions = self.exceptions_for(
            [items[r.item_id] for r in rows if r.decision == "revoke"], directory
        )
        jobs = await self.reviews.record_decisions(
            campaign,
            rows,
            items,
            now=self.clock(),
            imported_by=imported_by,
            late=late,
            exceptions=exceptions,
        )
        return len(rows), jobs

    async def reviewer_groups(self, campaign: Campaign) -> dict[str, frozenset[str]]:
        """Members (userNames) of the campaign's reviewing groups, by casefolded name;
        empty when the campaign is no longer configured."""
        definition = self.definitions.get(campaign.name)
        if definition is None:
            return {}
        return (await self.directory(self._reviewer_groups(definition))).members

    def exceptions_for(self, revoked: Sequence[Item], directory: Directory) -> list[NewException]:
        """For each revoked grant a rule still gives: the paths that give it, to hold back."""
        by_name = directory.by_name()
        found = []
        for item in revoked:
            state = by_name.get(item.user.user_name.casefold())
            if state is None:
                continue
            causes = grant_causes([state], directory.by_group).get(item.grant)
            if not causes:
                continue
            named = tuple(
                sorted(
                    (rule, group, directory.groups[group].display_name) for rule, group in causes
                )
            )
            found.append(NewException(item.id, state.id, named))
        return found

    async def campaign(self, campaign_id: str) -> Campaign:
        campaign = await self.reviews.campaign(campaign_id)
        if campaign is None:
            raise ReviewError(f"no campaign {campaign_id!r} (see jmlsync review list)")
        return campaign


def _source(
    grant: Grant, desired: Mapping[Grant, Reason], applied: Mapping[Grant, tuple[str, str]]
) -> Source:
    reason = desired.get(grant)
    if reason is not None:
        return Source("rule", reason.rule, reason.group)
    if grant in applied:
        return Source("rule", detail=applied[grant][0])
    return Source("unmanaged")

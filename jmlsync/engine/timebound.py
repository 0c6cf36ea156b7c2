"""Time-bound access in motion: requests and approvals persisted, grants started and ended
through the pipeline, expiry enforced from the stored ``expires_at``, and ends read back.

:class:`TimeboundAccess` is what the CLI and the HTTP API call (each action one transaction,
audited, with the user queued when a grant starts or ends) and what the scheduler runs
(:meth:`TimeboundAccess.check`, leader only). The pipeline asks :meth:`desired` for a user's
active grants and tells :meth:`after_job` what it applied. Nothing lives in memory: a
``kill -9`` at any moment leaves the store saying what is still to do, and the next check
does it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from jmlsync.domain import timebound as tb
from jmlsync.domain.access import Grant, GroupInfo, Reason, Rule, UserState
from jmlsync.domain.errors import TargetError
from jmlsync.domain.policy import desired_grants, rules_by_group, timebound_grants
from jmlsync.domain.timebound import (
    AccessRefused,
    AccessRequest,
    Eligibility,
    Person,
    RequestNotFound,
)
from jmlsync.domain.timebound_records import Step
from jmlsync.engine.apply import Applier
from jmlsync.engine.timebound_alerts import (
    alert_end_unverified,
    alert_ended,
    alert_privileged_started,
    alert_waiting,
)
from jmlsync.ports import AccessStore, AlertSink, Clock, PlanningReads

log = logging.getLogger("jmlsync.access")

RunResult = tuple[str, dict[str, int], str | None]


def person_of(user: UserState | None, groups: Sequence[GroupInfo]) -> Person | None:
    """A directory user as the lifecycle rules see them (None: not in the directory)."""
    if user is None:
        return None
    return Person(user.user_name, user.active, frozenset(g.display_name for g in groups))


@dataclass(frozen=True)
class Actor:
    """Who acts: a directory user (``user``), the host operator, or both (``--as``).

    ``label`` is what the audit row says (``operator as bob@x.io``); ``admin`` may end any
    grant.
    """

    label: str
    user: str | None = None
    admin: bool = False


class TimeboundAccess:
    """Every action on time-bound access, and the scheduler's check."""

    def __init__(
        self,
        store: PlanningReads,
        access: AccessStore,
        eligibilities: Sequence[Eligibility],
        rules: Sequence[Rule],
        *,
        applier: Applier,
        alerts: AlertSink,
        clock: Clock,
        end_limit: timedelta,
        admins: Collection[str] = (),
    ) -> None:
        self.store = store
        self.access = access
        self.eligibilities = {e.name: e for e in eligibilities}
        self.rules = rules
        self.applier = applier
        self.alerts = alerts
        self.clock = clock
        self.end_limit = end_limit
        self.admins = frozenset(a.casefold() for a in admins)
        self.roles = frozenset((g.target, g.role) for e in eligibilities for g in e.grants)
        self.privileged = frozenset(
            (g.target, g.role) for e in eligibilities if e.privileged for g in e.grants
        )

    async def person(self, user_name: str) -> Person | None:
        """The directory user named ``user_name`` (caselessly), or None."""
        stored = await self.store.find_user(user_name)
        if stored is None:
            return None
        user, groups = await self.store.policy_user(str(stored.doc["userName"]))
        return person_of(user, groups)

    async def _acting(self, actor: Actor) -> Person | None:
        if actor.user is None:
            return None
        person = await self.person(actor.user)
        if person is None:
            raise AccessRefused(f"no directory user {actor.user!r}")
        return person

    def _eligibility(self, request: AccessRequest) -> Eligibility:
        found = self.eligibilities.get(request.eligibility)
        if found is None:
            raise AccessRefused(
                f"eligibility {request.eligibility!r} of request #{request.id} is no longer"
                " configured"
            )
        return found

    async def get(self, request_id: int) -> AccessRequest:
        """The request, or AccessRefused when there is none."""
        found = await self.access.get(request_id)
        if found is None:
            raise RequestNotFound(f"no access request #{request_id}")
        return found

    def is_admin(self, actor: Actor) -> bool:
        return actor.admin or (actor.user is not None and actor.user.casefold() in self.admins)

    async def request(
        self,
        actor: Actor,
        target: str,
        role: str,
        *,
        duration: timedelta,
        reason: str,
        ticket: str | None,
    ) -> AccessRequest:
        """A new request by ``actor.user``; self-service ones start at once."""
        person = await self._acting(actor)
        if person is None:
            raise AccessRefused("a request is made for a directory user: give --as USERNAME")
        now = self.clock()
        draft = tb.new_request(
            list(self.eligibilities.values()),
            person,
            target,
            role,
            duration=duration,
            reason=reason,
            ticket=ticket,
            now=now,
        )
        (stored,) = await self.access.record([Step(None, draft, "request", actor.label)], now)
        eligibility = self._eligibility(stored)
        if eligibility.approvals == 0:
            approved = tb.auto_approved(stored, eligibility, now)
            stored = await self._record_start(stored, approved, actor, "self-service", now)
        else:
            await alert_waiting(self.alerts, stored, eligibility)
        return stored

    async def approve(self, actor: Actor, request_id: int) -> AccessRequest:
        """``actor.user`` approves; the last approval needed starts the grant."""
        request = await self.get(request_id)
        eligibility = self._eligibility(request)
        approver = await self._acting(actor)
        if approver is None:
            raise AccessRefused("approvals are made by directory users: give --as USERNAME")
        now = self.clock()
        await self._time_out_if_due(request, eligibility, now)
        approved = tb.approve(request, eligibility, approver, now)
        if approved.state == "approved":
            return await self._record_start(request, approved, actor, None, now)
        if request.state == "active" and approved.extension is None:
            detail = f"extended to {approved.expires_at:%Y-%m-%dT%H:%M:%SZ}"
            (stored,) = await self.access.record(
                [Step(request, approved, "approve", actor.label, detail)], now
            )
            return stored
        (stored,) = await self.access.record([Step(request, approved, "approve", actor.label)], now)
        return stored

    async def _time_out_if_due(
        self, request: AccessRequest, eligibility: Eligibility, now: datetime
    ) -> None:
        if tb.timed_out(request, eligibility, now):
            await self.access.record(
                [Step(request, tb.time_out(request, eligibility, now), "time_out", "scheduler")],
                now,
            )
            raise AccessRefused(f"request #{request.id} timed out waiting for approval")

    async def _record_start(
        self,
        before: AccessRequest,
        approved: AccessRequest,
        actor: Actor,
        detail: str | None,
        now: datetime,
    ) -> AccessRequest:
        """Record the approval and the start (pending → approved → active) in one
        transaction, with the user queued: the pipeline grants it."""
        eligibility = self._eligibility(approved)
        person = await self.person(approved.user)
        started = tb.start(approved, eligibility, person, now)
        steps = [Step(before, approved, "approve", actor.label, detail)]
        if started.state == "active":
            steps.append(
                Step(
                    replace(approved, version=before.version + 1),
                    started,
                    "start",
                    "jmlsync",
                    f"expires {started.expires_at:%Y-%m-%dT%H:%M:%SZ}",
                    enqueue=True,
                )
            )
        else:
            steps.append(
                Step(replace(approved, version=before.version + 1), started, "cancel", "jmlsync")
            )
        stored = (await self.access.record(steps, now))[-1]
        if stored.state == "active" and stored.privileged:
            await alert_privileged_started(self.alerts, stored)
        return stored

    async def deny(self, actor: Actor, request_id: int, reason: str) -> AccessRequest:
        """An approver denies a pending request (or a pending extension)."""
        request = await self.get(request_id)
        eligibility = self._eligibility(request)
        approver = await self._acting(actor)
        if approver is None:
            raise AccessRefused("a denial is made by a directory user: give --as USERNAME")
        now = self.clock()
        await self._time_out_if_due(request, eligibility, now)
        denied = tb.deny(request, eligibility, approver, reason, now)
        (stored,) = await self.access.record(
            [Step(request, denied, "deny", actor.label, reason)], now
        )
        return stored

    async def end(self, actor: Actor, request_id: int) -> AccessRequest:
        """End a grant early (or cancel a request not started): requester, approver or admin."""
        request = await self.get(request_id)
        eligibility = self._eligibility(request)
        person = await self._acting(actor)
        now = self.clock()
        ended = tb.end(
            request, eligibility, person, now, admin=self.is_admin(actor), actor_name=actor.label
        )
        holding = request.state == "active"
        (stored,) = await self.access.record(
            [Step(request, ended, "end", actor.label, ended.end_reason, enqueue=holding)], now
        )
        if holding:
            await alert_ended(self.alerts, stored)
        return stored

    async def extend(self, actor: Actor, request_id: int, duration: timedelta) -> AccessRequest:
        """The requester asks for more time; it needs the approvals again."""
        request = await self.get(request_id)
        eligibility = self._eligibility(request)
        person = await self._acting(actor)
        if person is None:
            raise AccessRefused("an extension is asked by the requester: give --as USERNAME")
        now = self.clock()
        asked = tb.extend(request, eligibility, person, duration, now)
        detail = f"asked for {tb.format_duration(duration)} more"
        (stored,) = await self.access.record(
            [Step(request, asked, "extend", actor.label, detail)], now
        )
        if stored.extension is not None:
            await alert_waiting(self.alerts, stored, eligibility)
        return stored

    async def desired(self, person: Person | None, now: datetime) -> dict[Grant, Reason]:
        """The user's active time-bound grants that are still due: held by an active,
        still eligible person and not past ``expires_at``."""
        if person is None or not person.active:
            return {}
        requests = await self.access.active([person.user_name])
        keep = [r for r in requests if self._still_held(r, person, now)]
        return timebound_grants(keep, now)

    async def desired_many(
        self, persons: Mapping[str, Person | None], now: datetime
    ) -> dict[str, dict[Grant, Reason]]:
        """:meth:`desired` of each person (keyed by the userName asked for), in one read."""
        held = {name: p for name, p in persons.items() if p is not None and p.active}
        requests = await self.access.active(sorted(held)) if held else []
        by_user: dict[str, list[AccessRequest]] = {}
        for request in requests:
            by_user.setdefault(request.user, []).append(request)
        result: dict[str, dict[Grant, Reason]] = {}
        for name in persons:
            person = held.get(name)
            if person is None:
                result[name] = {}
                continue
            keep = [r for r in by_user.get(name, ()) if self._still_held(r, person, now)]
            result[name] = timebound_grants(keep, now)
        return result

    def _still_held(self, request: AccessRequest, person: Person, now: datetime) -> bool:
        eligibility = self.eligibilities.get(request.eligibility)
        return tb.end_if_ineligible(request, eligibility, person, now) == request

    async def desired_for(self, user_names: Collection[str] | None) -> dict[Grant, Reason]:
        """:meth:`desired` for every holder of an active grant (or those named)."""
        now = self.clock()
        result: dict[Grant, Reason] = {}
        holders = {r.user for r in await self.access.active(user_names)}
        for name in sorted(holders):
            result.update(await self.desired(await self.person(name), now))
        return result

    async def after_job(
        self,
        user_name: str,
        person: Person | None,
        succeeded: Collection[str],
        desired: Mapping[Grant, Reason],
    ) -> None:
        """After the pipeline planned ``user_name``: end the active grants it no longer
        holds (leaver, lost eligibility, expired) and note the ends applied on the targets
        that succeeded (``revoked_at``)."""
        now = self.clock()
        steps: list[Step] = []
        ending: list[AccessRequest] = []
        for request in await self.access.holding([user_name]):
            current = request
            if request.state == "active":
                current = self._ended(request, person, now)
                if current is request:
                    continue
                ending.append(current)
            grant = Grant(current.target, current.user, current.role)
            if current.revoked_at is None and current.target in succeeded and grant not in desired:
                current = tb.mark_revoked(current, now)
            if current != request:
                action = "end" if request.state == "active" else "revoked"
                steps.append(Step(request, current, action, "pipeline", current.end_reason))
        if steps:
            try:
                await self.access.record(steps, now)
            except AccessRefused as exc:
                # Changed meanwhile (an approval, an end): the scheduler's check catches up.
                log.info("time-bound grants of %s left to the next check: %s", user_name, exc)
                return
        for request in ending:
            await alert_ended(self.alerts, request)

    def _ended(self, request: AccessRequest, person: Person | None, now: datetime) -> AccessRequest:
        ended = tb.end_if_ineligible(
            request, self.eligibilities.get(request.eligibility), person, now
        )
        return ended if ended.state == "ended" else tb.expire(request, now)

    async def check(self) -> RunResult:
        """The scheduled check: time out, start, expire, end for lost eligibility, and read
        back ended grants (verified, or a breach past ``[access].end_seconds``)."""
        now = self.clock()
        counts = dict.fromkeys(
            ("timed_out", "started", "ended", "verified", "breached", "unreadable"), 0
        )
        for request in await self.access.find(states=["pending", "approved", "active"]):
            await self._check_open(request, now, counts)
        for request in await self.access.find(states=["ended"]):
            await self._verify(request, counts)
        outcome = "breach" if counts["breached"] else "ok"
        return outcome, counts, None

    async def _check_open(
        self, request: AccessRequest, now: datetime, counts: dict[str, int]
    ) -> None:
        eligibility = self.eligibilities.get(request.eligibility)
        try:
            if request.state == "pending" and eligibility is not None:
                if tb.timed_out(request, eligibility, now):
                    late = tb.time_out(request, eligibility, now)
                    await self.access.record([Step(request, late, "time_out", "scheduler")], now)
                    counts["timed_out"] += 1
                elif eligibility.approvals == 0:
                    # Self-service whose start was lost (a crash between the two writes).
                    approved = tb.auto_approved(request, eligibility, now)
                    started = await self._record_start(
                        request, approved, Actor("scheduler"), "self-service", now
                    )
                    counts["started"] += started.state == "active"
            elif request.state == "approved" and eligibility is not None:
                person = await self.person(request.user)
                started = tb.start(request, eligibility, person, now)
                await self.access.record(
                    [
                        Step(
                            request,
                            started,
                            "start",
                            "scheduler",
                            enqueue=started.state == "active",
                        )
                    ],
                    now,
                )
                counts["started"] += started.state == "active"
            elif request.state == "active":
                ended = self._ended(request, await self.person(request.user), now)
                if ended is not request:
                    await self.access.record(
                        [Step(request, ended, "end", "scheduler", ended.end_reason, enqueue=True)],
                        now,
                    )
                    counts["ended"] += 1
                    await alert_ended(self.alerts, ended)
        except AccessRefused as exc:
            # Another replica or command changed it meanwhile: the next check sees the news.
            log.info("access check skipped request #%d: %s", request.id, exc)

    async def _verify(self, request: AccessRequest, counts: dict[str, int]) -> None:
        try:
            roles, _ = await self.applier.read_user(request.target, request.user)
        except (TargetError, KeyError) as exc:
            log.warning("cannot verify the end of request #%d yet: %s", request.id, exc)
            counts["unreadable"] += 1
            roles = None
        now = self.clock()
        if roles is not None and (request.role not in roles or await self._rule_holds(request)):
            note = None if request.role not in roles else "still granted by a rule"
            verified = tb.mark_verified(request, now)
            try:
                await self.access.record(
                    [Step(request, verified, "verify", "scheduler", note)], now
                )
            except AccessRefused:
                return
            counts["verified"] += 1
            return
        if not tb.end_overdue(request, now, self.end_limit):
            return
        breached = replace(request, breached_at=now)
        try:
            await self.access.record(
                [Step(request, breached, "breach", "scheduler", "end not verified", enqueue=True)],
                now,
            )
        except AccessRefused:
            return
        counts["breached"] += 1
        await alert_end_unverified(self.alerts, request, now, self.end_limit)

    async def _rule_holds(self, request: AccessRequest) -> bool:
        """Whether a rule still gives the grant (then its presence is no failed end)."""
        user, groups = await self.store.policy_user(request.user)
        if user is None:
            return False
        desired = desired_grants([user], rules_by_group(self.rules, groups))
        return Grant(request.target, request.user, request.role) in desired

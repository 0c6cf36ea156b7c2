"""Planning a batch of pipeline jobs: what the directory wants for each job's principal.

desired = rules + active time-bound grants - review exceptions, with what jmlsync applied,
from one read of each kind for the whole batch; the worker (:mod:`jmlsync.engine.worker`)
then applies the plans on each target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from jmlsync.domain.access import Grant, GroupInfo, Reason, Rule, UserState
from jmlsync.domain.policy import desired_grants, rules_by_group, with_timebound
from jmlsync.domain.timebound import Person
from jmlsync.engine.apply import principal_spec
from jmlsync.engine.per_target import JobWork
from jmlsync.engine.review_holds import Holds, held_by, read_holds
from jmlsync.engine.timebound import TimeboundAccess, person_of
from jmlsync.ports import Clock, PlanningStore, ReviewHolds


class JobPlanner:
    """Plans the principals of a batch of jobs over the store, the rules, time-bound access
    and review holds."""

    def __init__(
        self,
        store: PlanningStore,
        rules: Sequence[Rule],
        *,
        clock: Clock,
        reviews: ReviewHolds | None = None,
        timebound: TimeboundAccess | None = None,
    ) -> None:
        self.store = store
        self.rules = rules
        self.clock = clock
        self.reviews = reviews
        self.timebound = timebound

    async def plan(self, names: Sequence[str]) -> list[JobWork | None]:
        """What the directory wants for each named principal (None: no target needs asking),
        from one read of each kind for the whole batch (users and their groups, time-bound
        grants, review holds, applied grants) rather than one per job."""
        if not names:
            return []
        found = await self.store.policy_users_named(names)
        persons = {name: person_of(*found[name]) for name in names}
        timebound: dict[str, dict[Grant, Reason]] = {}
        if self.timebound is not None:
            timebound = await self.timebound.desired_many(persons, self.clock())
        holds = await read_holds(self.reviews, names)
        applied_by: dict[str, set[Grant]] = {}
        for grant in await self.store.applied_grants(names):
            applied_by.setdefault(grant.user, set()).add(grant)
        return [
            self._one(name, *found[name], persons[name], timebound, holds, applied_by)
            for name in names
        ]

    def _one(
        self,
        name: str,
        user: UserState | None,
        groups: list[GroupInfo],
        person: Person | None,
        timebound: Mapping[str, Mapping[Grant, Reason]],
        holds: Holds,
        applied_by: Mapping[str, set[Grant]],
    ) -> JobWork | None:
        by_group = rules_by_group(self.rules, groups)
        users = [user] if user else []
        desired = desired_grants(users, by_group)
        if self.timebound is not None:
            # desired = rules + active time-bound grants, until their stored expires_at.
            desired = with_timebound(desired, timebound.get(name, {}))
        # ... minus the grants access reviews hold back.
        held = held_by(holds.of(name), users, by_group, desired)
        desired = held.desired
        applied = applied_by.get(name, set())
        leaver = user is None or not user.active
        if not desired and not applied and not leaver and not held.withheld:
            # Nothing to grant and nothing of ours to take back: no need to ask the targets.
            # (Access granted by hand on a managed role is drift: full reconciliation finds it.)
            return None
        active = user.active if user else None
        return JobWork(
            name,
            active,
            desired,
            applied,
            leaver,
            withheld=held.withheld,
            person=person,
            spec=principal_spec(name, user.resource) if user else None,
        )

"""Reconciliation: desired grants from the directory, actual ones from the targets, the plan
between them, and applying it. A dry run stops after the plan.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from jmlsync.domain.access import (
    Grant,
    GroupInfo,
    Operation,
    Reason,
    Rule,
    UserState,
)
from jmlsync.domain.errors import TargetError
from jmlsync.domain.plan import PlanInput, plan
from jmlsync.domain.policy import (
    desired_grants,
    explain_user,
    managed_roles,
    privileged_roles,
    rules_by_group,
    with_timebound,
)
from jmlsync.domain.review_records import ReviewException
from jmlsync.engine.apply import Applier, Outcome
from jmlsync.engine.per_target import first_failure
from jmlsync.engine.review_holds import Held, apply_holds
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.ports import PlanningStore, ReviewHolds, Target

log = logging.getLogger("jmlsync.reconcile")

Progress = Callable[[str, int], None]

#: Principals applied at once by a reconciliation (each target's max_concurrency still holds).
RECONCILE_PARALLEL = 32


def _no_progress(_stage: str, _count: int) -> None:
    return None


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a snapshot builds its objects.

    A snapshot of 100k users makes millions of objects that all stay alive until the plan is
    made; each collection the allocations trigger would only walk them again (about 40% of a
    100k-user run's time). Reference counting still frees whatever is dropped; the collector
    resumes as it was when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class Scope:
    """What a run looks at: some targets and some users (None: all)."""

    targets: frozenset[str] | None = None
    users: frozenset[str] | None = None


@dataclass
class Snapshot:
    """Everything a plan was computed from, kept for reports (explain, drift).

    ``unreadable`` maps each target that could not be read (after the retry policy) to its
    error: the plan and the drift leave it out, the other targets are complete.
    """

    plan_input: PlanInput
    operations: list[Operation]
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    #: The review exceptions holding back grants the rules give (see :mod:`review_holds`).
    exceptions: tuple[ReviewException, ...] = ()

    @property
    def readable(self) -> frozenset[str]:
        """The targets the plan covers (every target in scope that could be read)."""
        return frozenset(self.plan_input.targets or ())


@dataclass
class Explanation:
    """Why one user has the access they have, and what would change."""

    user: str
    active: bool | None
    groups: list[str]
    desired: list[tuple[Grant, list[Reason]]]
    actual: list[tuple[Grant, bool]]
    principals: dict[str, bool | None]
    operations: list[Operation]
    unreadable: dict[str, str] = field(default_factory=dict)
    exceptions: tuple[ReviewException, ...] = ()


class Reconciler:
    """Plans and applies the difference between the directory and the targets."""

    def __init__(
        self,
        store: PlanningStore,
        targets: Mapping[str, Target],
        rules: Sequence[Rule],
        applier: Applier,
        protected: Iterable[str] = (),
        reviews: ReviewHolds | None = None,
        timebound: TimeboundAccess | None = None,
    ) -> None:
        self.store = store
        self.reviews = reviews
        self.timebound = timebound
        self.targets = targets
        self.rules = rules
        self.applier = applier
        self.protected = frozenset(name.casefold() for name in protected)

    def plan_managed(self) -> frozenset[tuple[str, str]]:
        """The roles jmlsync owns because a rule or an eligibility names them."""
        extra = self.timebound.roles if self.timebound else frozenset()
        return managed_roles(self.rules) | extra

    def plan_privileged(self) -> frozenset[tuple[str, str]]:
        """The roles of privileged rules and privileged eligibilities."""
        extra = self.timebound.privileged if self.timebound else frozenset()
        return privileged_roles(self.rules) | extra

    async def desired_of(self, user_name: str) -> frozenset[Grant]:
        """The grants the rules give ``user_name`` now (none when inactive or unknown)."""
        user, groups = await self.store.policy_user(user_name)
        if user is None or not user.active:
            return frozenset()
        return frozenset(desired_grants([user], rules_by_group(self.rules, groups)))

    def is_protected(self, user: str) -> bool:
        """Whether ``user`` is a protected account jmlsync never changes."""
        return user.casefold() in self.protected

    def _target_names(self, scope: Scope) -> list[str]:
        names = sorted(self.targets)
        return [n for n in names if scope.targets is None or n in scope.targets]

    async def snapshot(self, scope: Scope, progress: Progress = _no_progress) -> Snapshot:
        """Read desired and actual state and compute the plan (no change anywhere)."""
        with collector_paused():
            return await self._snapshot(scope, progress)

    async def _snapshot(self, scope: Scope, progress: Progress) -> Snapshot:
        started = time.perf_counter()
        if scope.users is not None:
            scope = Scope(scope.targets, await self._canonical(scope.users))
        # The directory and every target are read side by side: a slow target (a cloud API
        # paging through its assignments) costs its own time, not the sum of all.
        try:
            async with asyncio.TaskGroup() as reads:
                directory = reads.create_task(self._desired(scope, progress))
                targets = reads.create_task(self._actual(scope, progress))
        except ExceptionGroup as grouped:  # the store failing: raised as it came
            raise first_failure(grouped) from grouped
        groups, users, desired, held, applied = directory.result()
        actual, principals, unreadable = targets.result()
        leavers = {u for u, active in users.items() if not active}
        leavers |= {g.user for g in applied if g.user not in users}
        if scope.users is not None:
            leavers = {u for u in leavers if u.casefold() in {n.casefold() for n in scope.users}}
        plan_input = PlanInput(
            desired=desired,
            actual=actual,
            managed=self.plan_managed(),
            privileged=self.plan_privileged(),
            applied=applied,
            users=users,
            leavers=frozenset(leavers),
            principals=principals,
            targets=frozenset(n for n in self._target_names(scope) if n not in unreadable),
            only_users=None,
            withheld=held.withheld,
        )
        operations = plan(plan_input)
        if self.protected:
            operations = [op for op in operations if not self.is_protected(op.user)]
        counts = {
            "users": len(users),
            "groups": len(groups),
            "desired": len(desired),
            "actual": len(actual),
            "unreadable": len(unreadable),
        }
        seconds = time.perf_counter() - started
        return Snapshot(plan_input, operations, seconds, counts, unreadable, held.exceptions)

    async def _desired(
        self, scope: Scope, progress: Progress
    ) -> tuple[list[GroupInfo], dict[str, bool], dict[Grant, Reason], Held, set[Grant]]:
        """The directory's side of a snapshot: groups, users (userName → active), the grants
        the rules and time-bound access give, the review holds, and jmlsync's applied grants."""
        groups = await self.store.list_groups()
        by_group = rules_by_group(self.rules, groups)
        users: dict[str, bool] = {}
        stream = self.store.policy_users(
            by_group.keys(),
            with_resource=any(rule.user_filter is not None for rule in self.rules),
            user_names=scope.users,
        )
        states = await _collect(stream, users, progress)
        desired = desired_grants(states, by_group)
        if self.timebound is not None:
            # desired = rules + active time-bound grants: reconcile never revokes one early.
            desired = with_timebound(desired, await self.timebound.desired_for(scope.users))
        # ... minus the grants access reviews hold back.
        held = await apply_holds(self.reviews, states, by_group, desired, scope.users)
        applied = await self.store.applied_grants(scope.users)
        return groups, users, held.desired, held, applied

    async def _canonical(self, names: frozenset[str]) -> frozenset[str]:
        """The directory's spelling of each userName; unknown names stay as given."""
        found = set()
        for name in names:
            stored = await self.store.find_user(name)
            found.add(str(stored.doc["userName"]) if stored else name)
        return frozenset(found)

    async def explain(self, user_name: str) -> Explanation:
        """Why ``user_name`` has (or should have) each grant, and what would change."""
        canonical = next(iter(await self._canonical(frozenset({user_name}))))
        snapshot = await self.snapshot(Scope(users=frozenset({canonical})))
        groups = {g.id: g for g in await self.store.list_groups()}
        by_group = rules_by_group(self.rules, groups.values())
        states = [
            state
            async for state in self.store.policy_users(
                groups.keys(), with_resource=True, user_names={canonical}
            )
        ]
        state = states[0] if states else None
        inp = snapshot.plan_input
        managed = inp.managed
        return Explanation(
            user=canonical,
            active=state.active if state else None,
            groups=sorted(groups[g].display_name for g in state.groups) if state else [],
            desired=await self._explained(state, by_group, groups),
            actual=[
                (g, (g.target, g.role) in managed or g in inp.applied) for g in sorted(inp.actual)
            ],
            principals={
                name: inp.principals.get((name, canonical)) for name in self._target_names(Scope())
            },
            operations=snapshot.operations,
            unreadable=snapshot.unreadable,
            exceptions=snapshot.exceptions,
        )

    async def read_actual(self) -> tuple[set[Grant], dict[str, str]]:
        """Every grant every target holds, and the targets that could not be read."""
        actual, _principals, unreadable = await self._actual(Scope(), _no_progress)
        return actual, unreadable

    async def _explained(
        self,
        state: UserState | None,
        by_group: Mapping[str, Sequence[Rule]],
        groups: Mapping[str, GroupInfo],
    ) -> list[tuple[Grant, list[Reason]]]:
        """The rules' reasons for each grant, and the time-bound grant's where one is active."""
        if state is None:
            return []
        reasons = dict(explain_user(state, by_group, groups))
        if self.timebound is not None:
            for grant, reason in (await self.timebound.desired_for({state.user_name})).items():
                reasons.setdefault(grant, []).append(reason)
        return sorted(reasons.items())

    async def _actual(
        self, scope: Scope, progress: Progress
    ) -> tuple[set[Grant], dict[tuple[str, str], bool], dict[str, str]]:
        """What each target holds; a target that cannot be read is reported, not raised."""
        listed = [0]

        async def read(name: str) -> tuple[set[Grant], dict[tuple[str, str], bool]] | str:
            try:
                if scope.users is not None:
                    return await self._read_users(name, scope.users)
                return await self._list(name, listed, progress)
            except TargetError as exc:
                log.warning("cannot read target %s: %s", name, exc, extra={"target": name})
                return str(exc)

        names = self._target_names(scope)
        try:
            async with asyncio.TaskGroup() as reads:
                tasks = [reads.create_task(read(name)) for name in names]
        except ExceptionGroup as grouped:
            raise first_failure(grouped) from grouped
        actual: set[Grant] = set()
        principals: dict[tuple[str, str], bool] = {}
        unreadable: dict[str, str] = {}
        for name, task in zip(names, tasks, strict=True):
            result = task.result()
            if isinstance(result, str):
                unreadable[name] = result
                continue
            grants, found = result
            actual |= grants
            principals.update(found)
        return actual, principals, unreadable

    async def _read_users(
        self, name: str, users: frozenset[str]
    ) -> tuple[set[Grant], dict[tuple[str, str], bool]]:
        grants: set[Grant] = set()
        principals: dict[tuple[str, str], bool] = {}
        for user in sorted(users):
            roles, found = await self.applier.read_user(name, user)
            grants.update(Grant(name, user, role) for role in roles)
            if found is not None:
                principals[(name, found.user)] = found.disableable
        return grants, principals

    async def _list(
        self, name: str, listed_so_far: list[int], progress: Progress
    ) -> tuple[set[Grant], dict[tuple[str, str], bool]]:
        """List one target whole under the targets' retry policy: each read request, and
        the listing itself (see :meth:`Applier.listing`): a throttle must not end the run."""
        target = self.targets[name]

        async def grants() -> set[Grant]:
            listed: set[Grant] = set()
            async for grant in target.list_grants():
                listed.add(grant)
                # One count over the targets read side by side.
                listed_so_far[0] += 1
                if listed_so_far[0] % 10_000 == 0:
                    progress("reading targets", listed_so_far[0])
            return listed

        async def principals() -> dict[tuple[str, str], bool]:
            return {(name, p.user): p.disableable async for p in target.list_principals()}

        listed = await self.applier.listing(name, "list grants", grants)
        return listed, await self.applier.listing(name, "list principals", principals)

    async def apply(
        self,
        operations: Sequence[Operation],
        progress: Progress = _no_progress,
        requested_at: Mapping[str, str] | None = None,
    ) -> list[Outcome]:
        """Apply operations in order; a failure is recorded and the run goes on.
        ``requested_at`` dates the movers' revocations (see :meth:`Applier.apply`)."""
        return await self.applier.apply(
            operations,
            actor="reconcile",
            progress=lambda count: progress("applying", count),
            parallel=RECONCILE_PARALLEL,
            requested_at=requested_at,
        )


async def _collect(
    stream: AsyncIterator[UserState], users: dict[str, bool], progress: Progress
) -> list[UserState]:
    """Drain the user stream, noting each user's activity for the plan."""
    collected = []
    async for user in stream:
        users[user.user_name] = user.active
        collected.append(user)
        if len(collected) % 10_000 == 0:
            progress("reading users", len(collected))
    return collected

"""One pipeline job, target by target: each target is read, planned and applied on its own and
all at once, so a target that cannot be read or written holds up only its own operations."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from jmlsync.domain.access import Grant, Reason
from jmlsync.domain.errors import PermanentTargetError, TargetError
from jmlsync.domain.plan import PlanInput, plan
from jmlsync.domain.timebound import Person
from jmlsync.engine.apply import Applier
from jmlsync.engine.incidents import privileged_drift


@dataclass(frozen=True)
class RoleSets:
    """The roles the rules name (jmlsync owns them) and those of privileged rules."""

    managed: AbstractSet[tuple[str, str]]
    privileged: AbstractSet[tuple[str, str]]


@dataclass(frozen=True)
class JobWork:
    """One job's desired state, shared by the plans of its targets."""

    user_name: str
    active: bool | None
    desired: Mapping[Grant, Reason]
    applied: AbstractSet[Grant]
    leaver: bool
    #: When the oldest change this job answers was committed (the queue row's enqueue time):
    #: what a mover's revocation is measured from.
    requested_at: str | None = None
    #: Grants access reviews revoked: revoked wherever held, never granted.
    withheld: AbstractSet[Grant] = frozenset()
    #: The user as time-bound access sees them (None: not in the directory).
    person: Person | None = None


@dataclass(frozen=True)
class TargetResult:
    """How one target of a job went: ``error`` None when every operation was applied."""

    target: str
    error: str | None = None
    permanent: bool = False


async def run_targets(
    applier: Applier, roles: RoleSets, work: JobWork, names: Sequence[str]
) -> list[TargetResult]:
    """Every named target at once, so a slow or failing one delays no other; results in the
    order of ``names``. A target's errors are its result; anything else (the store failing)
    is raised as it came, so the worker sees its type rather than a group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_run_target(applier, roles, work, n)) for n in names]
    except ExceptionGroup as grouped:
        raise grouped.exceptions[0] from grouped
    return [task.result() for task in tasks]


async def _run_target(applier: Applier, roles: RoleSets, work: JobWork, name: str) -> TargetResult:
    try:
        held, found = await applier.read_user(name, work.user_name)
    except TargetError as exc:
        return TargetResult(name, f"read {name}: {exc}", isinstance(exc, PermanentTargetError))
    for role in sorted(held):
        grant = Grant(name, work.user_name, role)
        owned = grant in work.desired or grant in work.applied
        if (name, role) in roles.privileged and not owned:
            # Read back by the job: its plan revokes it below, but it is an incident all the same.
            await privileged_drift(applier.alerts, grant, "the pipeline's read-back")
    principals = {(name, work.user_name): found.disableable} if found is not None else {}
    inp = PlanInput(
        desired=work.desired,
        actual={Grant(name, work.user_name, role) for role in held},
        managed=roles.managed,
        privileged=roles.privileged,
        applied=work.applied,
        users={} if work.active is None else {work.user_name: work.active},
        leavers=frozenset({work.user_name}) if work.leaver else frozenset(),
        principals=principals,
        targets=frozenset({name}),
        only_users=frozenset({work.user_name}),
        withheld=work.withheld,
    )
    requested = {work.user_name: work.requested_at} if work.requested_at else None
    outcomes = await applier.apply(plan(inp), actor="pipeline", requested_at=requested)
    failures = [o for o in outcomes if not o.ok]
    if not failures:
        return TargetResult(name)
    return TargetResult(
        name,
        "; ".join(f"{o.operation.action} {name}: {o.error}" for o in failures),
        any(o.permanent for o in failures),
    )

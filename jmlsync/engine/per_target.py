"""One pipeline job, target by target: each target is read, planned and applied on its own and
all at once, so a target that cannot be read or written holds up only its own operations."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from jmlsync.domain.access import Grant, Operation, Principal, PrincipalSpec, Reason
from jmlsync.domain.errors import PermanentTargetError, TargetError
from jmlsync.domain.plan import PlanInput, plan
from jmlsync.domain.timebound import Person
from jmlsync.engine.apply import URGENT, Applier
from jmlsync.engine.incidents import privileged_drift
from jmlsync.ports import JOB_READS


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
    #: What a target needs to create the principal (None: read from the store if needed).
    spec: PrincipalSpec | None = None


@dataclass(frozen=True)
class TargetResult:
    """How one target of a job went: ``error`` None when every operation was applied."""

    target: str
    error: str | None = None
    permanent: bool = False


def first_failure(grouped: BaseException) -> BaseException:
    """The first error inside a task group's exception group (groups inside groups too), to
    raise as it came: callers and the CLI handle its type, not a group's."""
    first = grouped
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


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
        raise first_failure(grouped) from grouped
    return [task.result() for task in tasks]


async def run_batch(
    applier: Applier, roles: RoleSets, jobs: Sequence[tuple[JobWork, Sequence[str]]]
) -> list[list[TargetResult]]:
    """Many jobs, each with the targets it plans: every target at once, and on each target
    the jobs' reads side by side and their operations applied together
    (:meth:`Applier.apply_jobs`: one transaction where the target can). The results of each
    job, in the order of its names. A target's errors are its jobs' results; anything else
    is raised as it came."""
    names = sorted({name for _, wanted in jobs for name in wanted})
    try:
        async with asyncio.TaskGroup() as group:
            tasks = {
                name: group.create_task(
                    _run_target_batch(
                        applier,
                        roles,
                        [(i, work) for i, (work, wanted) in enumerate(jobs) if name in wanted],
                        name,
                    )
                )
                for name in names
            }
    except ExceptionGroup as grouped:
        raise first_failure(grouped) from grouped
    by_target = {name: task.result() for name, task in tasks.items()}
    return [[by_target[name][i] for name in wanted] for i, (_, wanted) in enumerate(jobs)]


async def _run_target_batch(
    applier: Applier, roles: RoleSets, jobs: Sequence[tuple[int, JobWork]], name: str
) -> dict[int, TargetResult]:
    results: dict[int, TargetResult] = {}
    planned: list[tuple[int, JobWork, list[Operation]]] = []
    # This target's task alone: a batch with a leaver takes the target's leaver slot.
    URGENT.set(any(work.leaver for _, work in jobs))
    # What the reads below find, the writes planned from them may reuse (this task only).
    JOB_READS.set({})

    read = await applier.read_users(name, [work.user_name for _, work in jobs])
    for index, work in jobs:
        found = read[work.user_name]
        if isinstance(found, TargetError):
            permanent = isinstance(found, PermanentTargetError)
            results[index] = TargetResult(name, f"read {name}: {found}", permanent)
            continue
        planned.append((index, work, await _plan_target(applier, roles, work, name, found)))
    planned.sort(key=lambda item: item[0])
    specs = {work.user_name: work.spec for _, work, _ in planned if work.spec is not None}
    requested = {w.user_name: w.requested_at for _, w, _ in planned if w.requested_at}
    outcomes = await applier.apply_jobs(
        name,
        [operations for _, _, operations in planned],
        actor="pipeline",
        specs=specs,
        requested_at=requested,
    )
    for (index, _, _), job_outcomes in zip(planned, outcomes, strict=True):
        failures = [o for o in job_outcomes if not o.ok]
        results[index] = (
            TargetResult(
                name,
                "; ".join(f"{o.operation.action} {name}: {o.error}" for o in failures),
                any(o.permanent for o in failures),
            )
            if failures
            else TargetResult(name)
        )
    return results


async def _run_target(applier: Applier, roles: RoleSets, work: JobWork, name: str) -> TargetResult:
    JOB_READS.set({})  # this target's task alone, as in _run_target_batch
    try:
        found = await applier.read_user(name, work.user_name)
    except TargetError as exc:
        return TargetResult(name, f"read {name}: {exc}", isinstance(exc, PermanentTargetError))
    operations = await _plan_target(applier, roles, work, name, found)
    requested = {work.user_name: work.requested_at} if work.requested_at else None
    specs = {work.user_name: work.spec} if work.spec is not None else None
    outcomes = await applier.apply(
        operations, actor="pipeline", specs=specs, requested_at=requested
    )
    failures = [o for o in outcomes if not o.ok]
    if not failures:
        return TargetResult(name)
    return TargetResult(
        name,
        "; ".join(f"{o.operation.action} {name}: {o.error}" for o in failures),
        any(o.permanent for o in failures),
    )


async def _plan_target(
    applier: Applier,
    roles: RoleSets,
    work: JobWork,
    name: str,
    read: tuple[frozenset[str], Principal | None],
) -> list[Operation]:
    """The plan of one job on one target, from what was read back from it."""
    held, found = read
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
    return plan(inp)

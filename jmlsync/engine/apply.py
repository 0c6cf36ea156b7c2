"""Applying operations to targets: retries, per-target concurrency, the applied-grant record
and the audit row of every operation. Shared by the pipeline and `jmlsync reconcile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from jmlsync.domain.access import Grant, Operation, Principal, PrincipalSpec
from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.errors import PermanentTargetError, TargetError
from jmlsync.engine.alerting import stage_alert
from jmlsync.engine.retry import RetryPolicy
from jmlsync.ports import (
    LISTING_READ_RETRY,
    AlertSink,
    AuditLog,
    BatchStep,
    BatchTarget,
    Clock,
    Effect,
    EngineMetrics,
    PlanningStore,
    StagedAlert,
    Target,
    UserReadTarget,
)

log = logging.getLogger("jmlsync.apply")

#: Set while a leaver's operations run: their target calls take a target's reserved slot.
URGENT: ContextVar[bool] = ContextVar("jmlsync_urgent", default=False)


class Slots:
    """A target's ``max_concurrency`` slots, one of them (when there are two or more) kept
    for leavers' calls (:data:`URGENT`), which also go before every other waiting call: a
    burst of joiners and movers never keeps a leaver waiting for a slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._reserved = 1 if limit > 1 else 0
        self._used = 0
        self._urgent_waiting = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        urgent = URGENT.get()
        async with self._changed:
            if urgent:
                self._urgent_waiting += 1
                try:
                    await self._changed.wait_for(lambda: self._used < self.limit)
                finally:
                    self._urgent_waiting -= 1
            else:
                await self._changed.wait_for(
                    lambda: self._urgent_waiting == 0 and self._used < self.limit - self._reserved
                )
            self._used += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            async with self._changed:
                self._used -= 1
                self._changed.notify_all()


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome:
    """What happened to one operation when applied."""

    operation: Operation
    ok: bool
    error: str | None = None
    permanent: bool = False


def principal_spec(user_name: str, doc: Mapping[str, object]) -> PrincipalSpec:
    """What a target needs to create the principal, from the user's SCIM document."""
    raw_name = doc.get("name")
    name: Mapping[str, object] = raw_name if isinstance(raw_name, dict) else {}
    raw_emails = doc.get("emails")
    emails = [e for e in raw_emails if isinstance(e, dict)] if isinstance(raw_emails, list) else []
    chosen = next((e for e in emails if e.get("primary")), emails[0] if emails else {})

    def text(value: object) -> str | None:
        return value if isinstance(value, str) else None

    return PrincipalSpec(
        user=user_name,
        display_name=text(doc.get("displayName")),
        given_name=text(name.get("givenName")),
        family_name=text(name.get("familyName")),
        email=text(chosen.get("value")),
        external_id=text(doc.get("externalId")),
    )


class Applier:
    """Applies operations in order through the targets, one retry policy, bounded concurrency."""

    def __init__(
        self,
        store: PlanningStore,
        queue: AuditLog | None,
        targets: Mapping[str, Target],
        *,
        clock: Clock,
        retry: RetryPolicy | None = None,
        concurrency: Mapping[str, int] | None = None,
        metrics: EngineMetrics | None = None,
        alerts: AlertSink | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.targets = targets
        self.clock = clock
        self.retry = retry or RetryPolicy()
        limits = concurrency or {}
        self._slots = {name: Slots(limits.get(name, 4)) for name in targets}
        self.metrics = metrics
        self.alerts = alerts

    async def call(self, target: str, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run one target call under the target's concurrency limit, with retries."""

        async def limited() -> T:
            async with self._slots[target].hold():
                return await action()

        return await self.retry.call(f"{what} on {target}", limited, self._retry_counter(target))

    async def listing(self, target: str, what: str, drain: Callable[[], Awaitable[T]]) -> T:
        """Drain a whole listing of ``target`` (``drain`` iterates it), under the target's
        retry policy twice over: each read request inside is retried on its own (connectors
        that send requests see ``LISTING_READ_RETRY``), and a listing that still fails
        half-way is started again, within the same bounds."""

        count_retry = self._retry_counter(target)
        listing = f"{what} on {target}"

        def read_retry(what: str, action: Callable[[], Awaitable[R]]) -> Awaitable[R]:
            return self.retry.call(f"{what} ({listing})", action, count_retry)

        async def drained() -> T:
            token = LISTING_READ_RETRY.set(read_retry)
            try:
                return await drain()
            finally:
                LISTING_READ_RETRY.reset(token)

        # Not under the target's concurrency slot: a listing can take minutes, and holding a
        # slot that long would hold up the pipeline's leavers (with max_concurrency = 1, all).
        return await self.retry.call(listing, drained, count_retry)

    def _retry_counter(self, target: str) -> Callable[[], None]:
        """Counts each retry on ``target`` (``jmlsync_target_call_retries``)."""

        def count_retry() -> None:
            if self.metrics is not None:
                self.metrics.retries.labels(target).inc()

        return count_retry

    async def read_user(self, target: str, user: str) -> tuple[frozenset[str], Principal | None]:
        """The roles ``user`` holds in ``target`` and its principal, read back from the target."""
        connector = self.targets[target]
        if isinstance(connector, UserReadTarget):
            return await self.call(target, "read grants", lambda: connector.read_user(user))
        roles = await self.call(target, "read grants", lambda: connector.grants_of(user))
        found = await self.call(target, "read principal", lambda: connector.principal(user))
        return roles, found

    async def read_users(
        self, target: str, users: Sequence[str]
    ) -> dict[str, tuple[frozenset[str], Principal | None] | TargetError]:
        """:meth:`read_user` for each of ``users``: in one call where the target can read
        them together (``read_batch``), else side by side; a user whose read failed maps
        to its error."""
        connector = self.targets[target]
        if isinstance(connector, BatchTarget):
            try:
                found = await self.call(target, "read grants", lambda: connector.read_batch(users))
            except TargetError as exc:
                return dict.fromkeys(users, exc)
            return {user: found[user] for user in users}
        results: dict[str, tuple[frozenset[str], Principal | None] | TargetError] = {}

        async def one(user: str) -> None:
            try:
                results[user] = await self.read_user(target, user)
            except TargetError as exc:
                results[user] = exc

        async with asyncio.TaskGroup() as group:
            for user in users:
                group.create_task(one(user))
        return results

    async def apply(
        self,
        operations: Iterable[Operation],
        *,
        actor: str,
        specs: Mapping[str, PrincipalSpec] | None = None,
        progress: Callable[[int], None] | None = None,
        parallel: int = 1,
        requested_at: Mapping[str, str] | None = None,
    ) -> list[Outcome]:
        """Apply ``operations``; a failure is recorded and the rest still run.

        ``requested_at`` maps a userName to the commit time of the change its operations
        answer: a ``mover`` revocation of a grant jmlsync applied is recorded with it (for
        the SLA report) in the revocation's own transaction.

        With ``parallel`` > 1, the operations of different (target, user) pairs run
        concurrently (each target's ``max_concurrency`` still bounds its calls), while the
        operations of one pair keep their order: a user's revocations still come first.
        Outcomes are returned in the order of ``operations``.
        """
        ordered = list(operations)
        outcomes: list[Outcome | None] = [None] * len(ordered)
        ensured: set[tuple[str, str]] = set()
        done = 0

        async def run(indexes: list[int]) -> None:
            nonlocal done
            for index in indexes:
                outcomes[index] = await self._apply_recorded(
                    ordered[index], ensured, specs or {}, actor, requested_at or {}
                )
                done += 1
                if progress is not None:
                    progress(done)

        lanes: dict[tuple[str, str], list[int]] = {}
        for index, operation in enumerate(ordered):
            lanes.setdefault((operation.target, operation.user), []).append(index)
        if parallel <= 1:
            await run(list(range(len(ordered))))
        else:
            limit = asyncio.Semaphore(parallel)

            async def lane(indexes: list[int]) -> None:
                async with limit:
                    await run(indexes)

            async with asyncio.TaskGroup() as group:
                for indexes in lanes.values():
                    group.create_task(lane(indexes))
        return [outcome for outcome in outcomes if outcome is not None]

    async def apply_jobs(
        self,
        target: str,
        jobs: Sequence[Sequence[Operation]],
        *,
        actor: str,
        specs: Mapping[str, PrincipalSpec] | None = None,
        requested_at: Mapping[str, str] | None = None,
    ) -> list[list[Outcome]]:
        """Apply the operations of many jobs (one principal each) on one ``target``; the
        outcomes of each job, in the order given.

        A target with ``apply_batch`` (:class:`~jmlsync.ports.BatchTarget`) gets them all
        in one transaction, and their records and audit rows are written in one store
        transaction after it. When that batch fails permanently, each job is tried again
        in a transaction of its own, so one job's bad operation fails only that job; a
        transient failure (after the retries) fails every job of the batch, with nothing
        applied. Other targets get each job's operations one by one, the jobs side by side
        (bounded by the target's ``max_concurrency``).
        """
        connector = self.targets[target]
        if isinstance(connector, BatchTarget) and any(jobs):
            return await self._apply_batch(
                target, connector, jobs, actor, specs or {}, requested_at or {}
            )
        outcomes: list[list[Outcome]] = [[] for _ in jobs]

        async def one(index: int) -> None:
            outcomes[index] = await self.apply(
                jobs[index], actor=actor, specs=specs, requested_at=requested_at
            )

        async with asyncio.TaskGroup() as group:
            for index, operations in enumerate(jobs):
                if operations:
                    group.create_task(one(index))
        return outcomes

    async def _apply_batch(
        self,
        target: str,
        connector: BatchTarget,
        jobs: Sequence[Sequence[Operation]],
        actor: str,
        specs: Mapping[str, PrincipalSpec],
        requested_at: Mapping[str, str],
    ) -> list[list[Outcome]]:
        started = time.perf_counter()
        steps: list[BatchStep] = []
        for operations in jobs:
            ensured: set[str] = set()
            for op in operations:
                if op.action == "grant" and op.user not in ensured:
                    spec = specs.get(op.user) or await self._spec(op.user)
                    steps.append(BatchStep("ensure", op.user, spec=spec))
                    ensured.add(op.user)
                steps.append(BatchStep(op.action, op.user, role=op.role))
        try:
            await self.call(target, "apply batch", lambda: connector.apply_batch(steps))
        except TargetError as exc:
            permanent = isinstance(exc, PermanentTargetError)
            if permanent and sum(1 for operations in jobs if operations) > 1:
                # Find the job at fault: each one alone, in its own transaction.
                alone: list[list[Outcome]] = []
                for ops in jobs:
                    alone.extend(
                        await self._apply_batch(
                            target, connector, [ops], actor, specs, requested_at
                        )
                        if ops
                        else [[]]
                    )
                return alone
            failed = [[Outcome(op, False, str(exc), permanent) for op in ops] for ops in jobs]
            effects = [
                Effect("audit", self._entry(o.operation, actor, "failed", str(exc)))
                for outcomes in failed
                for o in outcomes
            ]
            if self.queue is not None:
                await self.store.record_effects(effects)
            self._count([o for outcomes in failed for o in outcomes], actor, started)
            return failed
        effects = []
        alerts: list[StagedAlert] = []
        for operations in jobs:
            for op in operations:
                effects.append(self._effect(op, actor, requested_at, alerts))
        await self.store.record_effects(effects)
        for alert in alerts:
            await alert.after_commit()
        done = [[Outcome(op, ok=True) for op in ops] for ops in jobs]
        self._count([o for outcomes in done for o in outcomes], actor, started)
        return done

    def _effect(
        self,
        op: Operation,
        actor: str,
        requested_at: Mapping[str, str],
        alerts: list[StagedAlert],
    ) -> Effect:
        entry = self._entry(op, actor, "applied")
        if op.action == "disable" or op.role is None:
            return Effect("audit", entry)
        grant = Grant(op.target, op.user, op.role)
        if op.action == "revoke":
            mover_at = requested_at.get(op.user) if op.reason == "mover" else None
            return Effect("revoked", entry, grant, mover_requested_at=mover_at)
        alert = self._privileged_alert(op, actor) if op.privileged else None
        if alert is not None:
            alerts.append(alert)
        return Effect(
            "granted",
            entry,
            grant,
            reason=op.reason,
            now=self.clock(),
            also=alert.write if alert is not None else None,
        )

    def _count(self, outcomes: Sequence[Outcome], actor: str, started: float) -> None:
        """The log line and the metric of each operation of a batch."""
        seconds = (time.perf_counter() - started) / max(1, len(outcomes))
        for outcome in outcomes:
            _log(outcome, actor, seconds)
            if self.metrics is not None:
                op = outcome.operation
                result = "applied" if outcome.ok else "failed"
                self.metrics.operations.labels(op.target, op.action, result).inc()

    async def _apply_recorded(
        self,
        operation: Operation,
        ensured: set[tuple[str, str]],
        specs: Mapping[str, PrincipalSpec],
        actor: str,
        requested_at: Mapping[str, str],
    ) -> Outcome:
        started = time.perf_counter()
        try:
            await self._apply_one(operation, ensured, specs, actor, requested_at)
        except TargetError as exc:
            outcome = Outcome(operation, False, str(exc), isinstance(exc, PermanentTargetError))
            await self._audit(operation, actor, "failed", str(exc))
        else:
            outcome = Outcome(operation, ok=True)
        _log(outcome, actor, time.perf_counter() - started)
        if self.metrics is not None:
            result = "applied" if outcome.ok else "failed"
            self.metrics.operations.labels(operation.target, operation.action, result).inc()
        return outcome

    async def _apply_one(
        self,
        op: Operation,
        ensured: set[tuple[str, str]],
        specs: Mapping[str, PrincipalSpec],
        actor: str,
        requested_at: Mapping[str, str],
    ) -> None:
        target = self.targets[op.target]
        if op.action == "disable":
            await self.call(op.target, "disable", lambda: target.disable_principal(op.user))
            await self._audit(op, actor, "applied")
            return
        assert op.role is not None
        role = op.role
        grant = Grant(op.target, op.user, role)
        if op.action == "revoke":
            await self.call(op.target, "revoke", lambda: target.revoke(op.user, role))
            mover_at = requested_at.get(op.user) if op.reason == "mover" else None
            await self.store.forget_applied(grant, self._entry(op, actor, "applied"), mover_at)
            return
        if (op.target, op.user) not in ensured:
            spec = specs.get(op.user) or await self._spec(op.user)
            await self.call(op.target, "ensure principal", lambda: target.ensure_principal(spec))
            ensured.add((op.target, op.user))
        await self.call(op.target, "grant", lambda: target.grant(op.user, role))
        alert = self._privileged_alert(op, actor) if op.privileged else None
        # A privileged grant's alert commits with the record of the grant and its audit row.
        await self.store.record_applied(
            grant,
            op.reason,
            self.clock(),
            self._entry(op, actor, "applied"),
            also=alert.write if alert is not None else None,
        )
        if alert is not None:
            await alert.after_commit()

    def _privileged_alert(self, op: Operation, actor: str) -> StagedAlert | None:
        if self.alerts is None:
            return None
        return stage_alert(
            self.alerts,
            "privileged_grant",
            f"{op.user} was granted privileged role {op.role} on {op.target} ({op.reason})",
            user=op.user,
            target=op.target,
            role=op.role,
            actor=actor,
            key=f"{op.target}/{op.user}/{op.role}",
        )

    async def _spec(self, user_name: str) -> PrincipalSpec:
        stored = await self.store.find_user(user_name)
        return principal_spec(user_name, stored.doc if stored else {})

    def _entry(
        self, op: Operation, actor: str, outcome: str, detail: str | None = None
    ) -> AuditEntry:
        return AuditEntry(
            at=format_timestamp(self.clock()),
            actor=actor,
            action=op.action,
            subject=f"user {op.user}",
            outcome=outcome,
            target=op.target,
            role=op.role,
            detail=detail or op.reason,
        )

    async def _audit(
        self, op: Operation, actor: str, outcome: str, detail: str | None = None
    ) -> None:
        if self.queue is not None:
            await self.queue.audit(self._entry(op, actor, outcome, detail))


def _log(outcome: Outcome, actor: str, seconds: float) -> None:
    """One line per applied (or failed) operation, with its fields."""
    op = outcome.operation
    fields: dict[str, object] = {
        "actor": actor,
        "op": op.action,
        "user": op.user,
        "target": op.target,
        "role": op.role,
        "reason": op.reason,
        "outcome": "applied" if outcome.ok else "failed",
        "duration_ms": round(seconds * 1000, 2),
    }
    if outcome.error:
        fields["error"] = outcome.error
    level = logging.INFO if outcome.ok else logging.ERROR
    log.log(level, "%s %s %s", op.action, op.target, op.user, extra={"fields": fields})

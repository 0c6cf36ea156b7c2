"""One reconciliation run, the same for the scheduler (`full-reconcile`) and for
`jmlsync reconcile`: snapshot, drift records and their alerts, the guard, applying (when asked),
metrics and the run record. Callers add only their own output (the CLI its plan and exit code).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload

from jmlsync.domain.access import Grant, Operation
from jmlsync.domain.assurance import DriftFinding
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.plan import missing as plan_missing
from jmlsync.domain.plan import sort_grants
from jmlsync.engine.alerting import stage_alert
from jmlsync.engine.apply import Outcome
from jmlsync.engine.incidents import leaver_regranted, privileged_drift_alert
from jmlsync.engine.reconcile import Progress, Reconciler, Scope, Snapshot, collector_paused
from jmlsync.ports import AlertSink, AssuranceStore, Clock, EngineMetrics, Queue, StagedAlert

#: ``[alerts].drift_alerts_per_run``'s default.
DRIFT_ALERT_LIMIT = 20
#: Findings a per-target summary alert names.
DRIFT_EXAMPLES = 5

#: Outcome and counts of a run, and its detail, as the run record keeps them.
RunResult = tuple[str, dict[str, int], str | None]


def drift_of(snapshot: Snapshot) -> list[tuple[str, Grant]]:
    """Drift in a snapshot: ``missing`` (desired, absent) and ``unmanaged`` (present on a
    role jmlsync manages, not desired: e.g. granted by hand in the console)."""
    inp = snapshot.plan_input
    missing = [g for g in plan_missing(inp) if inp.in_scope(g.target, g.user)]
    unmanaged = sort_grants(
        g
        for g in inp.actual
        if g not in inp.desired
        and ((g.target, g.role) in inp.managed or g in inp.applied)
        and inp.in_scope(g.target, g.user)
    )
    findings: list[tuple[str, Grant]] = [("missing", grant) for grant in missing]
    findings.extend(("unmanaged", grant) for grant in unmanaged)
    return findings


def previewed(
    findings: Sequence[tuple[str, Grant]], known: Iterable[DriftFinding], now: datetime
) -> tuple[list[str], int]:
    """What recording ``findings`` would find, recording nothing: each finding's first
    sighting (its open record's, else ``now``) and how many are not open yet (new)."""
    first_seen = {(d.kind, d.target, d.user, d.role): d.first_seen for d in known}
    stamp = format_timestamp(now)
    if not first_seen:
        return [stamp] * len(findings), len(findings)
    seen: list[str] = []
    new = 0
    for kind, grant in findings:
        was = first_seen.get((kind, grant.target, grant.user, grant.role))
        if was is None:
            new += 1
        seen.append(was or stamp)
    return seen, new


def drift_json(
    findings: Iterable[tuple[str, Grant]], known: Iterable[DriftFinding], now: str
) -> list[dict[str, str]]:
    """The ``drift`` array of `reconcile --format json`."""
    first_seen = {(d.kind, d.target, d.user, d.role): d.first_seen for d in known}
    return [
        {
            "kind": kind,
            "target": grant.target,
            "user": grant.user,
            "role": grant.role,
            "first_seen": first_seen.get((kind, grant.target, grant.user, grant.role), now),
        }
        for kind, grant in findings
    ]


class DriftRows(Sequence[dict[str, str]]):
    """The ``drift`` array of `reconcile --format json` (as :func:`drift_json` makes it), each
    row made when read: a full run can find hundreds of thousands, and the report streams
    them out rather than holding a dictionary per finding."""

    def __init__(self, findings: Sequence[tuple[str, Grant]], first_seen: Sequence[str]) -> None:
        self._findings = findings
        self._first_seen = first_seen

    def __len__(self) -> int:
        return len(self._findings)

    @overload
    def __getitem__(self, index: int) -> dict[str, str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, str]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, str] | list[dict[str, str]]:
        if isinstance(index, slice):
            return [self._row(i) for i in range(len(self))[index]]
        return self._row(range(len(self))[index])

    def __iter__(self) -> Iterator[dict[str, str]]:
        for (kind, grant), seen in zip(self._findings, self._first_seen, strict=True):
            yield {
                "kind": kind,
                "target": grant.target,
                "user": grant.user,
                "role": grant.role,
                "first_seen": seen,
            }

    def _row(self, at: int) -> dict[str, str]:
        kind, grant = self._findings[at]
        return {
            "kind": kind,
            "target": grant.target,
            "user": grant.user,
            "role": grant.role,
            "first_seen": self._first_seen[at],
        }

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def revocations_over(operations: Iterable[Operation], limit: int) -> int | None:
    """The number of revocations when it exceeds ``limit`` (the guard trips), else None."""
    count = sum(1 for op in operations if op.action == "revoke")
    return count if count > limit else None


def guard_message(revocations: int, limit: int) -> str:
    """What a held run says: the count, the limit, and the override."""
    return (
        f"held: the plan revokes {revocations} grants, more than the limit of {limit};"
        f" nothing was changed. Check the IdP, then run `jmlsync reconcile --max-revocations"
        f" {revocations}` to allow it."
    )


def unreadable_detail(unreadable: Mapping[str, str]) -> str:
    """A run's detail naming each target that could not be read, with its error."""
    return "unreadable: " + "; ".join(
        f"{name} ({error})" for name, error in sorted(unreadable.items())
    )


async def mover_requests(
    queue: Queue, operations: Iterable[Operation], started: datetime
) -> dict[str, str]:
    """When each user a reconciliation revokes as a mover asked for it: the enqueue time of
    the user's queue row still pending, else ``started`` (when the run found it unwanted)."""
    movers = {op.user for op in operations if op.action == "revoke" and op.reason == "mover"}
    if not movers:
        return {}
    pending = {row.user_name: row.enqueued_at for row in await queue.rows()}
    return {user: pending.get(user, format_timestamp(started)) for user in movers}


@dataclass(frozen=True)
class RunRequest:
    """What one run does. ``apply`` changes the targets (guarded by ``max_revocations``);
    ``select`` narrows what is applied (remediation modes); ``job`` names the run record and
    ``guard_key`` de-duplicates its guard alert."""

    scope: Scope
    apply: bool
    max_revocations: int
    job: str
    guard_key: str
    select: Callable[[Operation], bool] | None = None
    #: Queue a leaver found holding revoked access again (not on a dry run: it changes things).
    requeue_regranted: bool = True
    #: Record the drift findings, alert the new ones and breach re-granted leavers; a preview
    #: (a dry run, unless asked) only reads the open findings for their first sighting.
    record_drift: bool = True


@dataclass
class RunOutcome:
    """What a run found and did: for the run record and for the CLI's report."""

    snapshot: Snapshot
    findings: list[tuple[str, Grant]]
    drift: Sequence[dict[str, str]]
    operations: list[Operation]
    outcome: str = "ok"
    detail: str | None = None
    held: str | None = None
    #: Set instead of ``held`` when nothing was to be applied: the message a dry run shows.
    would_hold: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: Alerts to commit with the run's record (a held run's guard trip).
    staged: list[StagedAlert] = field(default_factory=list)

    @property
    def result(self) -> RunResult:
        return self.outcome, self.counts, self.detail


@dataclass
class ReconcileRun:
    """The parts a run works with (the runtime's) and the run itself."""

    reconciler: Reconciler
    queue: Queue
    store: AssuranceStore
    alerts: AlertSink
    metrics: EngineMetrics
    clock: Clock
    runner: str = field(default_factory=socket.gethostname)
    #: New unmanaged findings alerted one by one; above it, one alert per target.
    drift_alert_limit: int = DRIFT_ALERT_LIMIT

    async def recorded(self, request: RunRequest, progress: Progress | None = None) -> RunOutcome:
        """:meth:`run`, recorded in the store's runs like a scheduled job."""
        run_id = await self.store.start_run(request.job, self.clock(), self.runner)
        try:
            result = await self._run(request, progress)
        except Exception as exc:
            await self.store.finish_run(
                run_id, self.clock(), "failed", {}, f"{type(exc).__name__}: {exc}"
            )
            raise
        await self.store.finish_run(
            run_id, self.clock(), *result.result, also=_writes(result.staged)
        )
        for alert in result.staged:
            await alert.after_commit()
        return result

    async def run(self, request: RunRequest, progress: Progress | None = None) -> RunOutcome:
        """:meth:`recorded` without a run record: its alerts are sent on their own."""
        result = await self._run(request, progress)
        for alert in result.staged:
            await alert.send()
        return result

    async def _run(self, request: RunRequest, progress: Progress | None = None) -> RunOutcome:
        """Read, record drift (alerting new unmanaged findings) unless a preview, guard, and
        apply if asked.
        A guard trip's alert is staged on the outcome, for the run record's transaction."""
        started = self.clock()
        if progress is None:
            snapshot = await self.reconciler.snapshot(request.scope)
        else:
            snapshot = await self.reconciler.snapshot(request.scope, progress)
        with collector_paused():
            findings = drift_of(snapshot)
        complete = request.scope.targets is None and request.scope.users is None
        staged: list[StagedAlert] = []

        async def alert_rows(conn: Any, new: list[DriftFinding]) -> None:
            # The new findings' alerts commit with the findings: a crash cannot keep one only.
            staged.clear()
            for alert in self._drift_alerts(new, snapshot):
                await alert.write(conn)
                staged.append(alert)

        if request.record_drift:
            recorded = await self.store.record_findings(
                findings,
                self.clock(),
                scope_complete=complete,
                unreadable=snapshot.unreadable,
                also=alert_rows,
            )
            self._drift_metrics(recorded.open_counts)
            for alert in staged:
                await alert.after_commit()
            regranted = await self._regranted(snapshot, findings, request)
            first_seen, new = recorded.first_seen, len(recorded.new)
        else:
            known = await self.store.open_drift()
            first_seen, new = previewed(findings, known, self.clock())
            regranted = 0
        operations = snapshot.operations
        if request.select is not None:
            operations = [op for op in operations if request.select(op)]
        result = RunOutcome(
            snapshot,
            findings,
            DriftRows(findings, first_seen),
            operations,
            counts={
                **snapshot.counts,
                "missing": sum(1 for k, _ in findings if k == "missing"),
                "unmanaged": sum(1 for k, _ in findings if k == "unmanaged"),
                "new_findings": new,
                "regranted": regranted,
            },
        )
        held = revocations_over(operations, request.max_revocations)
        if held is not None and not request.apply:
            result.would_hold = guard_message(held, request.max_revocations)
        elif held is not None:
            result.held = guard_message(held, request.max_revocations)
            result.outcome, result.detail = "held", result.held
            result.staged.append(
                stage_alert(
                    self.alerts,
                    "guard_tripped",
                    result.held,
                    revocations=held,
                    key=request.guard_key,
                )
            )
        elif request.apply and operations:
            await self._apply(result, started, progress)
        if snapshot.unreadable:
            # The other targets were read (and applied); this run is not a clean bill.
            unread = unreadable_detail(snapshot.unreadable)
            result.outcome = "partial" if result.outcome == "ok" else result.outcome
            result.detail = unread if result.detail is None else f"{result.detail}; {unread}"
        self.metrics.last_reconcile.set(self.clock().timestamp())
        self.metrics.last_reconcile_ok.set(1 if result.outcome == "ok" else 0)
        return result

    async def _apply(
        self, result: RunOutcome, started: datetime, progress: Progress | None
    ) -> None:
        requested = await mover_requests(self.queue, result.operations, started)
        if progress is None:
            outcomes = await self.reconciler.apply(result.operations, requested_at=requested)
        else:
            outcomes = await self.reconciler.apply(result.operations, progress, requested)
        result.outcomes = outcomes
        result.counts["applied"] = sum(1 for o in outcomes if o.ok)
        result.counts["failed"] = sum(1 for o in outcomes if not o.ok)
        if result.counts["failed"]:
            result.outcome = "failed"

    def _drift_metrics(self, open_counts: Mapping[str, int]) -> None:
        for kind in ("missing", "unmanaged"):
            self.metrics.drift_findings.labels(kind).set(open_counts.get(kind, 0))

    async def _regranted(
        self, snapshot: Snapshot, findings: Iterable[tuple[str, Grant]], request: RunRequest
    ) -> int:
        """Breach each verified leaver found holding revoked access again; how many."""
        users = snapshot.plan_input.users
        count = 0
        for kind, grant in findings:
            if kind != "unmanaged" or users.get(grant.user) is True:
                continue
            now = self.clock()
            cause = (
                f"re-granted: {grant.target} held {grant.role} again at {format_timestamp(now)},"
                " after the leaver was verified"
            )
            alert = leaver_regranted(self.alerts, grant, f"reconciliation ({request.job})")
            if not await self.store.mark_regranted(grant.user, cause, now, also=alert.write):
                continue
            await alert.after_commit()
            count += 1
            self.metrics.sla_breaches.inc()
            if request.requeue_regranted:
                await self.queue.enqueue([grant.user], cause="sla.regranted", now=now, leaver=True)
        return count

    def _drift_alerts(self, new: Iterable[DriftFinding], snapshot: Snapshot) -> list[StagedAlert]:
        """The alerts of a run's new unmanaged findings: a ``privileged_drift`` for each one on
        a privileged role; an ``unmanaged_drift`` for each one, or, when the run found more
        than ``drift_alert_limit``, one per target saying how many (no alert storm from a
        first run over a target full of hand-made grants)."""
        privileged = snapshot.plan_input.privileged
        alerts = []
        unmanaged = [finding for finding in new if finding.kind == "unmanaged"]
        for finding in unmanaged:
            if (finding.target, finding.role) in privileged:
                grant = Grant(finding.target, finding.user, finding.role)
                alerts.append(privileged_drift_alert(self.alerts, grant, "reconciliation"))
        if len(unmanaged) <= self.drift_alert_limit:
            alerts.extend(self._unmanaged_alert(finding) for finding in unmanaged)
            return alerts
        by_target: dict[str, list[DriftFinding]] = {}
        for finding in unmanaged:
            by_target.setdefault(finding.target, []).append(finding)
        for target, findings in sorted(by_target.items()):
            first = min(findings, key=lambda f: (f.user, f.role))
            examples = sorted(f"{f.user} holds {f.role}" for f in findings)[:DRIFT_EXAMPLES]
            alerts.append(
                stage_alert(
                    self.alerts,
                    "unmanaged_drift",
                    f"{len(findings)} new grants on {target} that no rule grants (granted"
                    f" outside jmlsync?), e.g. {'; '.join(examples)}; `jmlsync reconcile"
                    f" --dry-run --target {target}` lists them all",
                    target=target,
                    count=len(findings),
                    examples=examples,
                    key=f"{target}/{len(findings)}/{first.user}/{first.role}",
                )
            )
        return alerts

    def _unmanaged_alert(self, finding: DriftFinding) -> StagedAlert:
        return stage_alert(
            self.alerts,
            "unmanaged_drift",
            f"{finding.user} holds {finding.role} on {finding.target}, which no rule"
            " grants (granted outside jmlsync?)",
            user=finding.user,
            target=finding.target,
            role=finding.role,
            key=f"{finding.target}/{finding.user}/{finding.role}",
        )


def _writes(staged: list[StagedAlert]) -> Callable[[Any], Awaitable[None]] | None:
    """One transaction body step writing every staged alert's rows, or None."""
    if not staged:
        return None

    async def write(conn: Any) -> None:
        for alert in staged:
            await alert.write(conn)

    return write

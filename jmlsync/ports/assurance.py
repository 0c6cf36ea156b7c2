"""What proves jmlsync's work: leaver and mover verification, drift, runs and the SLA reads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from jmlsync.domain.access import Grant
from jmlsync.domain.assurance import DriftFinding, DriftRecord, OpenLeaver, OpenMover, RunRecord
from jmlsync.domain.sla import LeaverRecord, MoverRevocation


class LeaverVerification(Protocol):
    """Leaver events as verification reads them back: verified, or breached past the SLA."""

    async def unverified_leavers(self) -> list[OpenLeaver]:
        """Leaver events neither verified nor cancelled, oldest first."""
        ...

    async def mark_verified(self, leaver_id: int, now: datetime) -> None:
        """Mark the event verified at ``now`` (idempotent: the first time is kept)."""
        ...

    async def mark_breached(
        self,
        leaver_id: int,
        now: datetime,
        cause: str | None = None,
        *,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """Record the breach and its cause; True the first time only (so it is alerted once).
        ``also`` (the breach's alert row) runs in the same transaction, that first time."""
        ...

    async def mark_regranted(
        self,
        user_name: str,
        cause: str,
        now: datetime,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """A verified leaver's revoked access was found again: the newest event is breached
        (its first breach time kept) with ``cause`` and no longer verified. True when that
        event had been verified (alert then); ``also`` (the breach's alert rows) runs in the
        same transaction, only then."""
        ...

    async def pending_targets_of(
        self, leaver_id: int, targets: Iterable[str]
    ) -> dict[str, str | None]:
        """The ``targets`` the leaver event has no clear for, with the last error of each."""
        ...


class MoverRecords(Protocol):
    """Movers' revocations, recorded with the revocation and read back by verification."""

    async def unverified(self) -> list[OpenMover]:
        """Revocations not read back as gone yet (breached ones included), oldest first."""
        ...

    async def mark_verified(self, mover_id: int, now: datetime) -> None:
        """Mark the revocation read back as gone (idempotent: the first time is kept)."""
        ...

    async def mark_breached(self, mover_id: int, now: datetime, cause: str) -> bool:
        """Record the breach and its cause; True the first time only (alerted once)."""
        ...


class DriftRecords(Protocol):
    """Drift findings: opened when a reconciliation first sees a difference, resolved when a
    complete one no longer does."""

    async def record_drift(
        self,
        findings: Iterable[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> tuple[list[DriftFinding], list[DriftFinding]]:
        """Record one run's ``(kind, grant)`` findings in one transaction: (the findings new
        in this run, every finding open after it). Only a ``scope_complete`` run resolves
        findings it no longer sees, never on the ``unreadable`` targets; ``also`` runs in the
        same transaction with the new findings (their alert rows)."""
        ...

    async def record_findings(
        self,
        findings: Sequence[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> DriftRecord:
        """:meth:`record_drift` in a few set-wise statements, for runs with hundreds of
        thousands of findings: each finding's first sighting and the open counts by kind
        rather than every open finding."""
        ...

    async def open_drift(self) -> list[DriftFinding]:
        """Every unresolved finding, by kind, target, user and role."""
        ...


class RunLog(Protocol):
    """The record of scheduled and CLI runs (reconciliations, verification, housekeeping)."""

    async def start_run(self, job: str, now: datetime, runner: str | None = None) -> int:
        """Record that ``job`` started; its run id."""
        ...

    async def finish_run(
        self,
        run_id: int,
        now: datetime,
        outcome: str,
        counts: dict[str, int] | None = None,
        detail: str | None = None,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        """Record how the run ended; ``also`` (a held run's guard alert rows) runs in the
        same transaction."""
        ...

    async def last_runs(self) -> list[RunRecord]:
        """The newest run of each job."""
        ...


class SlaReads(Protocol):
    """What the SLA report and ``explain`` read: leaver events and movers' revocations."""

    async def leaver_records(self, since: datetime, until: datetime) -> list[LeaverRecord]:
        """Leaver events (not cancelled) that started in [since, until], with per-target
        detail."""
        ...

    async def latest_leaver(self, user_name: str) -> LeaverRecord | None:
        """The newest leaver event of ``user_name`` (not cancelled), or None."""
        ...

    async def mover_revocations(self, since: datetime, until: datetime) -> list[MoverRevocation]:
        """Movers' revocations requested in [since, until), with their read-back."""
        ...


class AssuranceStore(LeaverVerification, DriftRecords, RunLog, SlaReads, Protocol):
    """What proves jmlsync's work: leaver verification, movers' revocations, drift, runs, and
    the housekeeping that prunes their history (and settled alerts of the outbox)."""

    @property
    def movers(self) -> MoverRecords:
        """The movers' revocations, on the same database."""
        ...

    async def housekeeping(self, now: datetime, keep: timedelta) -> dict[str, int]:
        """Prune history older than ``keep`` (runs, resolved drift, movers' revocations,
        settled leaver events, the oldest audit rows with the chain's anchor kept, settled
        alerts); how many rows of each were pruned."""
        ...


class MoverCounts(Protocol):
    """The movers' revocations counted (an overview's figures)."""

    async def counts(self) -> dict[str, int]:
        """``not_verified``: revocations not verified (read back as gone) yet;
        ``sla_breaches``: those of them that breached the mover SLA."""
        ...


class AssuranceOverview(Protocol):
    """What an operator's overview reads of the assurance records (the console's)."""

    @property
    def movers(self) -> MoverCounts:
        """The movers' revocations, on the same database."""
        ...

    async def unverified_leavers(self) -> list[OpenLeaver]:
        """Leaver events neither verified nor cancelled, oldest first."""
        ...

    async def open_breaches(self) -> int:
        """How many leaver events (not cancelled) breached the SLA and are not verified yet."""
        ...

    async def open_drift(self) -> list[DriftFinding]:
        """Every unresolved finding, by kind, target, user and role."""
        ...

    async def last_runs(self) -> list[RunRecord]:
        """The newest run of each job."""
        ...

"""The values of the leaver SLA report (built and rendered in jmlsync.report.sla)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime


@dataclass(frozen=True)
class TargetDetail:
    """What happened to one leaver in one target: operations applied, and when the last was;
    when the target was cleared (None while pending) and the error keeping it pending."""

    target: str
    revocations: int
    disabled: bool
    failures: int
    last_change_at: datetime | None
    cleared_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class LeaverRecord:
    """One leaver event as the store keeps it, with its per-target detail."""

    user: str
    left_at: datetime
    cleared_at: datetime | None
    verified_at: datetime | None
    breached_at: datetime | None
    targets: tuple[TargetDetail, ...] = field(default=())
    #: Why the leaver breached, as recorded (the read-back, a re-grant); None if not recorded.
    breach_cause: str | None = None
    #: When a revoked grant was found again in a target after verification (re-granted by hand).
    regranted_at: datetime | None = None

    def target_state(self, detail: TargetDetail) -> str:
        """``cleared`` or ``pending``: a target is cleared once its own clear is recorded, or
        when the whole event is (records from before per-target outcomes were kept)."""
        cleared = detail.cleared_at is not None or self.cleared_at is not None
        return "cleared" if cleared else "pending"

    @property
    def pending_targets(self) -> tuple[str, ...]:
        """The targets this leaver still waits on (empty once cleared)."""
        return tuple(t.target for t in self.targets if self.target_state(t) == "pending")

    def with_targets(self, names: Iterable[str]) -> LeaverRecord:
        """The record with an (empty, pending) detail for each configured target it has no
        detail for yet, while it is not cleared: a target never reached is pending too."""
        if self.cleared_at is not None:
            return self
        known = {t.target for t in self.targets}
        missing = [TargetDetail(n, 0, False, 0, None) for n in sorted(set(names) - known)]
        if not missing:
            return self
        merged = sorted((*self.targets, *missing), key=lambda t: t.target)
        return replace(self, targets=tuple(merged))


@dataclass(frozen=True)
class MoverRevocation:
    """A revocation caused by a mover: when the change was committed, when it was revoked, and
    when it was read back as gone (``verified_at``) or found to miss the SLA (``breached_at``,
    with its ``cause``). ``actor`` is who revoked it: the pipeline or a reconciliation."""

    user: str
    target: str
    role: str
    requested_at: datetime
    revoked_at: datetime
    verified_at: datetime | None = None
    breached_at: datetime | None = None
    cause: str | None = None
    actor: str | None = None

"""The values of the leaver SLA report (the report itself is built and rendered in jmlsync.sla)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class TargetDetail:
    """What happened to one leaver in one target: operations applied, and when the last was."""

    target: str
    revocations: int
    disabled: bool
    failures: int
    last_change_at: datetime | None


@dataclass(frozen=True)
class LeaverRecord:
    """One leaver event as the store keeps it, with its per-target detail."""

    user: str
    left_at: datetime
    cleared_at: datetime | None
    verified_at: datetime | None
    breached_at: datetime | None
    targets: tuple[TargetDetail, ...] = field(default=())


@dataclass(frozen=True)
class MoverRevocation:
    """A revocation caused by a mover: when the change was committed and when it was revoked."""

    user: str
    target: str
    role: str
    requested_at: datetime
    revoked_at: datetime

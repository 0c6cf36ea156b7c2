"""What the assurance jobs read back from the store, as values: open leaver events, open
movers' revocations, drift findings and the record of scheduled runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jmlsync.domain.sla import MoverRevocation


@dataclass(frozen=True)
class OpenLeaver:
    """A leaver event not verified yet."""

    id: int
    user_name: str
    left_at: datetime
    cleared_at: datetime | None
    breached_at: datetime | None


@dataclass(frozen=True)
class OpenMover:
    """A mover's revocation not verified yet (its store id and the revocation)."""

    id: int
    revocation: MoverRevocation


@dataclass(frozen=True)
class DriftFinding:
    kind: str
    target: str
    user: str
    role: str
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class RunRecord:
    job: str
    started_at: str
    finished_at: str | None
    outcome: str | None
    counts: dict[str, int]
    detail: str | None


@dataclass
class DriftRecord:
    """What recording a run's findings did: the findings seen for the first time, each
    finding's first sighting (in the order of the findings) and the open findings by kind
    once recorded."""

    new: list[DriftFinding]
    first_seen: list[str]
    open_counts: dict[str, int]

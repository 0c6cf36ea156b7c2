"""The records of time-bound access as the store keeps them: a step to write, a history row,
a personal token (never its value)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from jmlsync.domain.timebound import AccessRequest


@dataclass(frozen=True)
class Step:
    """One change of a request to record: from ``before`` (None: a new request) to ``after``.

    ``enqueue`` queues the user for the pipeline in the same transaction (a grant starts or
    ends). ``detail`` goes into the history and audit rows.
    """

    before: AccessRequest | None
    after: AccessRequest
    action: str
    actor: str
    detail: str | None = None
    enqueue: bool = False


@dataclass(frozen=True)
class HistoryRow:
    """One recorded change of a request."""

    at: datetime
    actor: str
    action: str
    from_state: str | None
    to_state: str
    detail: str | None


@dataclass(frozen=True)
class TokenRow:
    """A personal API token as stored (never its plaintext)."""

    id: int
    user_name: str
    scope: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

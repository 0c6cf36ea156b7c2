"""Time-bound access kept durably: requests, approvals, history and personal tokens."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from jmlsync.domain.timebound import AccessRequest
from jmlsync.domain.timebound_records import HistoryRow, Step, TokenRow


class AccessStore(Protocol):
    """Time-bound access kept durably: requests, their approvals and history, personal tokens.

    Requests, approvals and history are never deleted. Every write is one transaction that
    commits everything it was given or nothing.
    """

    async def record(self, steps: Sequence[Step], now: datetime) -> list[AccessRequest]:
        """Write each step in order, in one transaction: the request row (inserted when
        ``before`` is None or has id 0, else updated only if its version is still
        ``before.version``), the approvals ``after`` adds, a history row, an audit-chain row,
        and the user's queue row when ``enqueue``. Returns the requests as stored.

        Raises AccessRefused when a request changed since ``before`` was read (nothing is
        written).
        """
        ...

    async def get(self, request_id: int) -> AccessRequest | None:
        """The request with this id (with its approvals), or None."""
        ...

    async def find(
        self,
        *,
        states: Collection[str] | None = None,
        user: str | None = None,
        ended_since: datetime | None = None,
        ended_until: datetime | None = None,
    ) -> list[AccessRequest]:
        """Requests by state, requester (caselessly) and end time (inclusive), oldest first."""
        ...

    async def active(self, user_names: Collection[str] | None = None) -> list[AccessRequest]:
        """Active requests, of the userNames named exactly if given."""
        ...

    async def holding(
        self, user_names: Collection[str] | None, *, states: Sequence[str] = ("active", "ended")
    ) -> list[AccessRequest]:
        """Requests in ``states`` of the userNames named exactly (None: everyone's)."""
        ...

    async def history(self, request_id: int) -> list[HistoryRow]:
        """Every recorded change of the request, oldest first."""
        ...

    async def add_token(
        self,
        user_name: str,
        scope: str,
        token_hash: str,
        *,
        now: datetime,
        expires_at: datetime,
        actor: str,
    ) -> int:
        """Store a personal token's hash (never its value), with an audit row; its id."""
        ...

    async def tokens(self) -> list[TokenRow]:
        """Every personal token, newest first."""
        ...

    async def token_by_hash(self, token_hash: str) -> TokenRow | None:
        """The token whose hash this is, revoked and expired ones included; or None."""
        ...

    async def revoke_token(self, token_id: int, *, now: datetime, actor: str) -> bool:
        """Revoke the token, with an audit row; False when there is no unrevoked one."""
        ...

"""Console sessions and the sign-ins under way."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.sessions import Session, Timeouts


class SessionStore(Protocol):
    """Console sessions and sign-ins under way. Only hashes of the cookie's token and of the
    OIDC ``state`` are kept; expired rows are deleted as new ones are written."""

    @property
    def timeouts(self) -> Timeouts:
        """How long a session lasts unused and at all."""
        ...

    async def begin_login(
        self, state: str, nonce: str, verifier: str, return_to: str, now: datetime
    ) -> None:
        """Remember a sign-in sent to the issuer (stale pending ones are dropped)."""
        ...

    async def take_login(self, state: str, now: datetime) -> tuple[str, str, str] | None:
        """The (nonce, verifier, return_to) of a pending sign-in, used up (once only); None
        when unknown or older than 15 minutes."""
        ...

    async def create(
        self, user_name: str, claims: dict[str, Any], now: datetime, audit: AuditEntry
    ) -> str:
        """A new session for ``user_name`` with its sign-in's audit row, in one transaction;
        the cookie's token (never stored)."""
        ...

    async def get(self, token: str, now: datetime) -> Session | None:
        """The live session of this token, its last use moved to ``now``; None when there is
        none or it reached its idle or absolute end (then it is deleted)."""
        ...

    async def delete(self, token: str, audit: AuditEntry | None = None) -> None:
        """End the session (sign-out), with its audit row if given; missing is a success."""
        ...

    async def audit(self, entry: AuditEntry) -> None:
        """Append one row to the audit chain (a refused sign-in)."""
        ...

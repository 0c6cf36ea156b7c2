"""The hash-chained audit log, as it is appended to, verified and read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from jmlsync.domain.audit import AuditEntry
from jmlsync.ports.state import ServiceState


class AuditLog(Protocol):
    """The hash-chained audit log: append-only; each row's hash covers the previous one."""

    async def audit(self, entry: AuditEntry) -> None:
        """Append one row to the hash-chained audit log."""
        ...

    def audit_rows(self, *, last: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The audit rows in order (the ``last`` ones only, if given)."""
        ...

    async def audit_head(self) -> str | None:
        """The hash of the newest audit row as recorded when it was written."""
        ...


class AuditTrail(AuditLog, ServiceState, Protocol):
    """What ``audit verify`` reads: the chain, and the state that holds its anchor (the last
    hash of the rows housekeeping pruned)."""


class AuditHistory(Protocol):
    """One person's history in the audit log (the console's person page)."""

    async def audit_about(self, user_name: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` audit rows whose subject is the user ``user_name`` (their SCIM
        changes, grants and sign-ins), newest first: ``seq``, ``at``, ``actor``, ``action``,
        ``target``, ``role``, ``outcome`` and ``detail``."""
        ...

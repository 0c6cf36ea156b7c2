"""One audit event, as a value: what the hash-chained audit log stores."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditEntry:
    """One event: a SCIM change or an operation on a target (and its outcome)."""

    at: str
    actor: str
    action: str
    subject: str
    outcome: str
    target: str | None = None
    role: str | None = None
    detail: str | None = None

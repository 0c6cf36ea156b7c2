"""What the review store records: decisions, remediation of revocations, exceptions."""

from __future__ import annotations

from dataclasses import dataclass

from jmlsync.domain.access import Grant

__all__ = ["NO_DECISION", "Decision", "NewException", "Remediation", "ReviewException"]

#: The reviewer recorded for a decision the deadline made (``on_no_decision = "revoke"``).
NO_DECISION = "(no decision)"


@dataclass(frozen=True)
class Decision:
    """A recorded decision of one item."""

    item_id: int
    decision: str
    reviewer: str
    comment: str
    decided_at: str
    imported_by: str
    late: bool
    audit_seq: int | None


@dataclass(frozen=True)
class Remediation:
    """A revoke decision being carried out (``job_id``: its queue row)."""

    campaign: str
    item_id: int
    job_id: int | None
    requested_at: str
    revoked_at: str | None
    verified_at: str | None
    last_error: str | None


@dataclass(frozen=True)
class ReviewException:
    """A rule-given grant held back by a review, and the (rule, group id, group name) paths
    that gave it when it was revoked."""

    id: int
    campaign: str
    item_id: int
    grant: Grant
    user_id: str | None
    causes: tuple[tuple[int, str, str], ...]
    created_at: str
    lifted_at: str | None
    lifted_reason: str | None

    @property
    def recorded(self) -> frozenset[tuple[int, str]]:
        return frozenset((rule, group) for rule, group, _name in self.causes)

    @property
    def memberships(self) -> str:
        """What the IdP's admin removes to end the grant for good."""
        return ", ".join(f"group {name} (rule {rule})" for rule, _g, name in self.causes)


@dataclass(frozen=True)
class NewException:
    """An exception to create with a revoke decision."""

    item_id: int
    user_id: str | None
    causes: tuple[tuple[int, str, str], ...]

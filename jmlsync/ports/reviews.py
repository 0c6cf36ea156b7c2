"""Access reviews: campaigns, decisions and the exceptions they hold back from the plan."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from jmlsync.domain.access import Grant
from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.review_records import Decision, NewException, Remediation, ReviewException
from jmlsync.domain.reviews import Campaign, DecisionRow, Item


class ReviewHolds(Protocol):
    """What access reviews hold back from the plan (implemented by the review store)."""

    async def exceptions(
        self, user_names: Collection[str] | None = None, *, active_only: bool = True
    ) -> list[ReviewException]:
        """The review exceptions of these users (all users: None; userNames compared
        caselessly), active ones only unless ``active_only`` is False, oldest first."""
        ...

    async def pending_revocations(self, user_names: Collection[str] | None = None) -> set[Grant]:
        """Grants a review decided to revoke that were not yet read back as gone."""
        ...


class ReviewStore(ReviewHolds, Protocol):
    """Access-review campaigns, their items, decisions, remediation and exceptions.

    Every write an auditor relies on commits with its audit row, in one transaction: a
    campaign with the row anchoring its snapshot's hash, each decision, each exception
    created or lifted.
    """

    async def create_campaign(
        self, campaign: Campaign, items: Sequence[Item], started_by: str, entry: AuditEntry
    ) -> int:
        """Store the campaign and its items with ``entry`` (which carries the snapshot's
        hash) appended to the audit chain; return that row's seq (``audit_seq``)."""
        ...

    async def campaigns(self, name: str | None = None) -> list[Campaign]:
        """Every campaign (or those of one definition), oldest first."""
        ...

    async def campaign(self, campaign_id: str) -> Campaign | None:
        """One campaign, or None."""
        ...

    async def items(self, campaign_id: str) -> list[Item]:
        """The campaign's items, by item id."""
        ...

    async def decisions(self, campaign_id: str) -> dict[int, Decision]:
        """The recorded decision of each decided item, by item id."""
        ...

    async def record_decisions(
        self,
        campaign: Campaign,
        rows: Sequence[DecisionRow],
        items: dict[int, Item],
        *,
        now: datetime,
        imported_by: str,
        late: bool,
        exceptions: Sequence[NewException],
    ) -> int:
        """Record every row at once or none (a decision already there is replaced), each
        with its audit row. A revoke queues its holder's job and a remediation row, and
        creates the exception given for its item; a keep ends the item's exception and its
        pending revocation. Returns how many principals' jobs were queued."""
        ...

    async def applied_details(self) -> dict[Grant, tuple[str, str]]:
        """Every grant jmlsync applied, with (reason, applied_at)."""
        ...

    async def remediations(self, campaign_id: str | None = None) -> list[Remediation]:
        """The remediation of revoked items (of one campaign, or all)."""
        ...

    async def mark_remediated(
        self,
        remediation: Remediation,
        *,
        revoked_at: str | None,
        verified_at: str | None,
        error: str | None,
    ) -> None:
        """Note a read-back: ``revoked_at`` is kept once set; ``verified_at`` None and
        ``error`` when the target could not be read."""
        ...

    async def lift(self, exception_id: int, reason: str, now: datetime, actor: str) -> bool:
        """Lift an active exception by hand (audited) and queue its holder; False when
        there is no such active exception."""
        ...

    async def mark_campaign(self, campaign_id: str, column: str, now: datetime) -> bool:
        """Set ``reminded_at``, ``closed_at`` or ``auto_revoked_at`` once; True only for
        the call that set it (so each is acted on once, across replicas)."""
        ...

    async def revoke_audit(self, grant: Grant, since: str) -> tuple[str, int] | None:
        """The first applied revocation of ``grant`` at or after ``since``: (at, seq)."""
        ...

    async def audit_row(self, seq: int) -> dict[str, Any] | None:
        """One audit row, every column (with ``prev_hash`` and ``hash``), or None."""
        ...

    async def append_audit(self, entry: AuditEntry) -> int:
        """Append ``entry`` to the audit chain; return its seq."""


class ReviewAssignments(Protocol):
    """Who has items to decide (the console's reviewer role and inbox)."""

    async def open_items_of(self, reviewers: Collection[str]) -> list[Item]:
        """The items of open campaigns whose reviewer is one of ``reviewers`` (userNames and
        ``group:`` names, casefolded), by campaign start, campaign and item id. Whether a
        person may decide one is :func:`jmlsync.domain.reviews.may_decide`'s to say."""
        ...

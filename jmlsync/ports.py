"""The ports of jmlsync: the contracts every adapter keeps. Their docstrings are the spec.

A concrete class may keep several ports (the SQL store is the Directory, the PlanningReads and
the GrantLedger at once); each consumer names the narrowest port it uses.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from jmlsync.domain.access import Grant, GroupInfo, Principal, PrincipalSpec, UserState
from jmlsync.domain.assurance import DriftFinding, DriftRecord, OpenLeaver, OpenMover, RunRecord
from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.directory import (
    Change,
    Job,
    Page,
    QueueRow,
    QueueStats,
    ResourceKind,
    StoredResource,
)
from jmlsync.domain.filters import Attr, Expr
from jmlsync.domain.review_records import Decision, NewException, Remediation, ReviewException
from jmlsync.domain.reviews import Campaign, DecisionRow, Item
from jmlsync.domain.sessions import Session, Timeouts
from jmlsync.domain.sla import LeaverRecord, MoverRevocation
from jmlsync.domain.timebound import AccessRequest
from jmlsync.domain.timebound_records import HistoryRow, Step, TokenRow

T = TypeVar("T")


class ReadRetry(Protocol):
    """Runs one read request of a connector under the targets' retry policy."""

    def __call__(self, what: str, action: Callable[[], Awaitable[T]]) -> Awaitable[T]: ...


#: Set by the engine while it drains a whole listing (``list_grants``, ``list_principals``):
#: a connector's request plumbing runs each *read* request through it, so one throttled page
#: is retried on its own instead of failing, and restarting, the whole listing. Unset (None)
#: everywhere else: single calls are already retried whole by the engine.
LISTING_READ_RETRY: ContextVar[ReadRetry | None] = ContextVar(
    "jmlsync_listing_read_retry", default=None
)


@dataclass(frozen=True)
class Query:
    """A search: an optional filter, an optional sort, and a 1-based page window."""

    filter: Expr | None = None
    sort_by: Attr | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    with_members: bool = True
    #: With ``with_members``, a group with more members than this is returned without them
    #: (``members`` None): a list page stays bounded however large its groups. None: no limit.
    member_limit: int | None = None


class Directory(Protocol):
    """The directory the IdP pushes (users, groups, memberships), kept durably.

    Every write method runs in one transaction: it either commits everything it was given or
    nothing. In that same transaction it enqueues every principal whose grants the change may
    affect (coalesced: one pending row per userName), opens or cancels leaver records, and
    appends the audit row. A write returns only after its transaction is committed, so an
    acknowledged change survives a crash of the process (``kill -9``).
    """

    async def create(self, kind: ResourceKind, change: Change, now: datetime) -> StoredResource:
        """Create a resource with a new id and version 1, and apply its membership operations.

        Raises DuplicateUserName when a user's userName is taken (case-insensitively) and
        UnknownMembers when a membership names a user that does not exist.
        """
        ...

    async def get(
        self, kind: ResourceKind, resource_id: str, *, with_members: bool = True
    ) -> StoredResource:
        """The resource with this id; Group members and User groups only when asked for.

        Raises ResourceNotFound.
        """
        ...

    async def update(
        self,
        kind: ResourceKind,
        resource_id: str,
        mutate: Callable[[StoredResource], Change],
        now: datetime,
        *,
        expected_version: int | None = None,
        with_members: bool = True,
    ) -> StoredResource:
        """Read the resource, compute its change with ``mutate`` and write it, atomically.

        ``mutate`` sees the current resource without its members and may raise to abort: then
        nothing is written. A membership operation costs what it changes, never the group's size
        (``replace`` excepted). The version grows by one. Raises ResourceNotFound,
        VersionMismatch (``expected_version`` given and different), DuplicateUserName,
        UnknownMembers.
        """
        ...

    async def delete(
        self,
        kind: ResourceKind,
        resource_id: str,
        now: datetime,
        *,
        expected_version: int | None = None,
    ) -> None:
        """Delete the resource and every membership it takes part in.

        Raises ResourceNotFound and VersionMismatch.
        """
        ...

    async def search(self, kind: ResourceKind, query: Query) -> Page:
        """The resources matching ``query.filter``, sorted, one page of them, and their total."""
        ...

    async def close(self) -> None:
        """Release connections; pending writes are already committed."""
        ...

    async def ping(self) -> None:
        """Raise when the store cannot answer a query (readiness)."""
        ...


class PlanningReads(Protocol):
    """The reads a plan starts from: the directory's groups and users as policy input."""

    async def list_groups(self) -> list[GroupInfo]:
        """Every group's id, displayName and externalId (for matching rules)."""
        ...

    async def find_user(self, user_name: str) -> StoredResource | None:
        """The user with this userName (case-insensitively), or None."""
        ...

    def policy_users(
        self,
        group_ids: Collection[str],
        *,
        with_resource: bool,
        user_names: Collection[str] | None = None,
    ) -> AsyncIterator[UserState]:
        """Stream every user (or those named, case-insensitively) with its groups among
        ``group_ids``; ``resource`` is filled only when ``with_resource``.
        """
        ...

    async def policy_user(self, user_name: str) -> tuple[UserState | None, list[GroupInfo]]:
        """The user whose userName is exactly ``user_name``, with its resource and groups;
        (None, []) when there is none (deleted, or renamed away).
        """
        ...


class GrantLedger(Protocol):
    """The grants jmlsync applied to targets and has not revoked since: what a plan diffs
    the desired grants against, between readings of the targets."""

    async def applied_grants(self, user_names: Collection[str] | None = None) -> set[Grant]:
        """The grants jmlsync applied to targets and has not revoked since."""
        ...

    async def record_applied(
        self,
        grant: Grant,
        reason: str,
        now: datetime,
        audit: AuditEntry | None = None,
        *,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        """Remember that jmlsync applied ``grant`` (idempotent), with its audit row if given,
        in one transaction; ``also`` runs in it with its connection (a privileged grant's
        alert row)."""
        ...

    async def forget_applied(
        self,
        grant: Grant,
        audit: AuditEntry | None = None,
        mover_requested_at: str | None = None,
    ) -> None:
        """Forget an applied grant once revoked (idempotent), with its audit row if given,
        in one transaction. With ``mover_requested_at`` (the commit time of the change that
        took the grant away) and an audit row, a grant jmlsync had applied is also recorded
        as a mover's revocation at the audit row's time, in that same transaction."""
        ...

    async def record_effects(self, effects: Sequence[Effect]) -> None:
        """Record many applied (or failed) operations in one transaction, all or none: each
        effect as :meth:`record_applied` (``granted``) or :meth:`forget_applied` (``revoked``)
        would, or only its audit row; audit rows are appended in the order given."""
        ...


class PlanningStore(PlanningReads, GrantLedger, Protocol):
    """What the engine plans from and records into: the planning reads and the ledger."""


class Store(Directory, PlanningReads, GrantLedger, Protocol):
    """The whole store of the directory: what the SCIM adapter and the console are given."""


@dataclass(frozen=True)
class Effect:
    """One operation's record for :meth:`Store.record_effects`: the grant jmlsync applied
    (``granted``) or revoked (``revoked``), or nothing but the audit row (``audit``)."""

    kind: Literal["granted", "revoked", "audit"]
    audit: AuditEntry
    grant: Grant | None = None
    reason: str = ""
    now: datetime | None = None
    #: A revocation answering a mover: the commit time of the change (see forget_applied).
    mover_requested_at: str | None = None
    #: Runs in the same transaction with its connection (a privileged grant's alert row).
    also: Callable[[Any], Awaitable[object]] | None = None


@dataclass(frozen=True)
class BatchStep:
    """One write of :meth:`BatchTarget.apply_batch`: ``ensure`` (with ``spec``), ``grant``
    and ``revoke`` (with ``role``), or ``disable``."""

    action: Literal["ensure", "grant", "revoke", "disable"]
    user: str
    role: str | None = None
    spec: PrincipalSpec | None = None


@runtime_checkable
class BatchTarget(Protocol):
    """What a Target may add: many writes in one transaction. Optional; the engine applies
    operations one by one on connectors without it."""

    async def apply_batch(self, steps: Sequence[BatchStep]) -> None:
        """Apply every step in order, as the single writes would, in one transaction: on
        any failure nothing of the batch is applied and the error (TransientTargetError or
        PermanentTargetError) is raised."""
        ...

    async def read_batch(
        self, users: Sequence[str]
    ) -> Mapping[str, tuple[frozenset[str], Principal | None]]:
        """For each of ``users``: the roles it holds and its principal (as ``grants_of``
        and ``principal``), read together."""
        ...


class Target(Protocol):
    """One configured cloud destination, as the engine drives it.

    Every write is idempotent: granting a role the principal holds, revoking one it does not
    hold, disabling a disabled principal and ensuring an existing principal all succeed without
    change. Failures raise TransientTargetError (worth retrying: throttling, 5xx, timeouts,
    resets; ``retry_after`` set when the target said how long to wait) or PermanentTargetError.
    Principals are named by the user's userName.
    """

    name: str

    def list_grants(self) -> AsyncIterator[Grant]:
        """Every grant the target holds, streamed page by page, in no promised order."""
        ...

    def list_principals(self) -> AsyncIterator[Principal]:
        """Every principal the target holds, with whether it is enabled, streamed."""
        ...

    async def grants_of(self, user: str) -> frozenset[str]:
        """The roles ``user`` holds; empty when the principal does not exist."""
        ...

    async def principal(self, user: str) -> Principal | None:
        """The principal named ``user``, or None."""
        ...

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        """Create the principal when missing; enable it when disabled."""
        ...

    async def grant(self, user: str, role: str) -> None:
        """Give ``role`` to ``user``, whose principal exists (see ensure_principal)."""
        ...

    async def revoke(self, user: str, role: str) -> None:
        """Take ``role`` from ``user``; a missing principal or grant is a success."""
        ...

    async def disable_principal(self, user: str) -> None:
        """Disable the principal so it can no longer sign in; missing is a success."""
        ...

    async def ping(self) -> None:
        """Raise when the target cannot be reached or refuses the credentials: the cheapest
        authenticated read the connector makes, changing nothing (readiness, ``target_up``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Queue(Protocol):
    """The provisioning queue: one pending row per principal (userName), leased by workers.

    Rows are written by the Store in the transaction of the change that causes them. A lease
    lasts ``lease_for``; an expired lease (a crashed worker) makes the row due again, so every
    job may run more than once and its operations must be idempotent. Leaver rows are leased
    before every other due row.
    """

    async def enqueue(
        self, user_names: Iterable[str], *, cause: str, now: datetime, leaver: bool = False
    ) -> int:
        """Add or coalesce one row per userName; a dead letter is revived. Returns the count."""
        ...

    async def enqueue_everyone(self, *, cause: str, now: datetime) -> int:
        """Enqueue every user of the directory and every userName jmlsync granted to."""
        ...

    async def lease(
        self, owner: str, now: datetime, lease_for: timedelta, *, include_leavers: bool = True
    ) -> Job | None:
        """Lease the next due row (leavers first; none of them when ``include_leavers`` is
        False), or None when nothing is due."""
        ...

    async def ack(self, job: Job) -> bool:
        """Done: delete the row, unless a newer change coalesced into it (then it is due
        again). True when deleted."""
        ...

    async def lease_batch(
        self,
        owner: str,
        now: datetime,
        lease_for: timedelta,
        *,
        limit: int,
        lane: Literal["any", "leavers", "others"] = "any",
    ) -> list[Job]:
        """Lease up to ``limit`` due rows in one transaction: leavers only (``leavers``),
        none of them (``others``), or (``any``) the due leavers if there are some, else the
        others; a batch never mixes the two."""
        ...

    async def seen(self, jobs: Sequence[Job]) -> bool:
        """Whether the store's reader sees the leased ``jobs``' rows at their generation
        (then every read after it sees at least the changes that made them due). A reader
        that lags (SQLite keeps one snapshot while reads overlap on its connection) says
        False until it catches up."""
        ...

    async def ack_batch(self, jobs: Sequence[Job]) -> list[bool]:
        """:meth:`ack` for each job, in one transaction; True for each row deleted."""
        ...

    async def fail(
        self,
        job: Job,
        error: str,
        now: datetime,
        *,
        retry_in: timedelta | None,
        pending_targets: Collection[str] | None = None,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """Count a failed attempt and reschedule it, or dead-letter it (``retry_in`` None).

        ``pending_targets``: the only targets the next attempt plans (the others are done);
        None keeps the row's set. A change coalesced meanwhile plans every target again.
        ``also`` runs in the same transaction with its connection (the dead letter's alert
        row: both commit or neither does). True when dead-lettered."""
        ...

    async def release(self, job_ids: Collection[int]) -> None:
        """Give leases back without counting an attempt (shutdown)."""
        ...

    async def renew(self, job_ids: Collection[int], owner: str, until: datetime) -> None:
        """Extend the leases ``owner`` holds on these rows while their jobs still run."""
        ...

    async def recover(self) -> int:
        """At start: release leases left by a process that died, where the backend can know
        (one process per SQLite database; on PostgreSQL, leases whose owner's session lock
        is gone). Returns how many were released."""
        ...

    async def take_back_orphans(self) -> int:
        """While running (repeatable): release leases of processes that are gone, where the
        backend can tell (PostgreSQL: the owner's session lock is gone); 0 elsewhere."""
        ...

    async def rows(self, *, failed_only: bool = False) -> list[QueueRow]:
        """The rows, leavers and the most due first; only dead letters if asked."""
        ...

    async def retry_failed(self, now: datetime, job_id: int | None = None) -> int:
        """Re-drive dead letters (one, or all): due now with fresh attempts. Returns the count."""
        ...

    async def depth(self) -> tuple[int, int]:
        """(pending rows, dead letters)."""
        ...

    async def stats(self) -> QueueStats:
        """Pending rows, dead letters and the oldest pending row's enqueue time."""
        ...


class LeaverRecords(Protocol):
    """The leaver records the pipeline keeps: one per leaver event (opened by the Store in the
    change's transaction), cleared target by target as the revocations are applied."""

    async def leaver_events_since(self, since: datetime) -> int:
        """How many leaver events started at or after ``since``."""
        ...

    async def clear_leaver(self, user_name: str, now: datetime) -> list[str]:
        """Mark the open leaver record of ``user_name`` cleared at ``now``; return the
        ``left_at`` of each record cleared."""
        ...

    async def record_leaver_targets(
        self,
        user_name: str,
        outcomes: Mapping[str, str | None],
        every_target: Collection[str],
        now: datetime,
    ) -> list[str]:
        """Record per-target outcomes (None: cleared; else the error keeping it pending) for
        the open leaver record(s) of ``user_name``. A record whose targets in
        ``every_target`` are all cleared is cleared overall at ``now``; returns the
        ``left_at`` of each record so cleared. Idempotent: a target keeps its first clear."""
        ...


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


class ServiceState(Protocol):
    """Small facts the service keeps between runs (the rules' fingerprint, the leaver pause)."""

    async def get_state(self, key: str) -> str | None:
        """A small fact the service keeps between runs."""
        ...

    async def set_state(self, key: str, value: str | None) -> None:
        """Set (or replace) the fact ``key``; None forgets it. Idempotent."""
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


class PipelineQueue(Queue, LeaverRecords, ServiceState, Protocol):
    """What the workers use: the queue, the leaver records they clear, and the service state
    that holds the leaver pause."""


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


class LeaverVerification(Protocol):
    """Leaver events as verification reads them back: verified, or breached past the SLA."""

    async def unverified_leavers(self) -> list[OpenLeaver]:
        """Leaver events neither verified nor cancelled, oldest first."""
        ...

    async def mark_verified(self, leaver_id: int, now: datetime) -> None:
        """Mark the event verified at ``now`` (idempotent: the first time is kept)."""
        ...

    async def mark_breached(
        self,
        leaver_id: int,
        now: datetime,
        cause: str | None = None,
        *,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """Record the breach and its cause; True the first time only (so it is alerted once).
        ``also`` (the breach's alert row) runs in the same transaction, that first time."""
        ...

    async def mark_regranted(
        self,
        user_name: str,
        cause: str,
        now: datetime,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> bool:
        """A verified leaver's revoked access was found again: the newest event is breached
        (its first breach time kept) with ``cause`` and no longer verified. True when that
        event had been verified (alert then); ``also`` (the breach's alert rows) runs in the
        same transaction, only then."""
        ...

    async def pending_targets_of(
        self, leaver_id: int, targets: Iterable[str]
    ) -> dict[str, str | None]:
        """The ``targets`` the leaver event has no clear for, with the last error of each."""
        ...


class MoverRecords(Protocol):
    """Movers' revocations, recorded with the revocation and read back by verification."""

    async def unverified(self) -> list[OpenMover]:
        """Revocations not read back as gone yet (breached ones included), oldest first."""
        ...

    async def mark_verified(self, mover_id: int, now: datetime) -> None:
        """Mark the revocation read back as gone (idempotent: the first time is kept)."""
        ...

    async def mark_breached(self, mover_id: int, now: datetime, cause: str) -> bool:
        """Record the breach and its cause; True the first time only (alerted once)."""
        ...


class DriftRecords(Protocol):
    """Drift findings: opened when a reconciliation first sees a difference, resolved when a
    complete one no longer does."""

    async def record_drift(
        self,
        findings: Iterable[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> tuple[list[DriftFinding], list[DriftFinding]]:
        """Record one run's ``(kind, grant)`` findings in one transaction: (the findings new
        in this run, every finding open after it). Only a ``scope_complete`` run resolves
        findings it no longer sees, never on the ``unreadable`` targets; ``also`` runs in the
        same transaction with the new findings (their alert rows)."""
        ...

    async def record_findings(
        self,
        findings: Sequence[tuple[str, Grant]],
        now: datetime,
        *,
        scope_complete: bool,
        unreadable: Collection[str] = (),
        also: Callable[[Any, list[DriftFinding]], Awaitable[object]] | None = None,
    ) -> DriftRecord:
        """:meth:`record_drift` in a few set-wise statements, for runs with hundreds of
        thousands of findings: each finding's first sighting and the open counts by kind
        rather than every open finding."""
        ...

    async def open_drift(self) -> list[DriftFinding]:
        """Every unresolved finding, by kind, target, user and role."""
        ...


class RunLog(Protocol):
    """The record of scheduled and CLI runs (reconciliations, verification, housekeeping)."""

    async def start_run(self, job: str, now: datetime, runner: str | None = None) -> int:
        """Record that ``job`` started; its run id."""
        ...

    async def finish_run(
        self,
        run_id: int,
        now: datetime,
        outcome: str,
        counts: dict[str, int] | None = None,
        detail: str | None = None,
        also: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        """Record how the run ended; ``also`` (a held run's guard alert rows) runs in the
        same transaction."""
        ...

    async def last_runs(self) -> list[RunRecord]:
        """The newest run of each job."""
        ...


class SlaReads(Protocol):
    """What the SLA report and ``explain`` read: leaver events and movers' revocations."""

    async def leaver_records(self, since: datetime, until: datetime) -> list[LeaverRecord]:
        """Leaver events (not cancelled) that started in [since, until], with per-target
        detail."""
        ...

    async def latest_leaver(self, user_name: str) -> LeaverRecord | None:
        """The newest leaver event of ``user_name`` (not cancelled), or None."""
        ...

    async def mover_revocations(self, since: datetime, until: datetime) -> list[MoverRevocation]:
        """Movers' revocations requested in [since, until), with their read-back."""
        ...


class AssuranceStore(LeaverVerification, DriftRecords, RunLog, SlaReads, Protocol):
    """What proves jmlsync's work: leaver verification, movers' revocations, drift, runs, and
    the housekeeping that prunes their history (and settled alerts of the outbox)."""

    @property
    def movers(self) -> MoverRecords:
        """The movers' revocations, on the same database."""
        ...

    async def housekeeping(self, now: datetime, keep: timedelta) -> dict[str, int]:
        """Prune history older than ``keep`` (runs, resolved drift, movers' revocations,
        settled leaver events, the oldest audit rows with the chain's anchor kept, settled
        alerts); how many rows of each were pruned."""
        ...


class MoverCounts(Protocol):
    """The movers' revocations counted (an overview's figures)."""

    async def counts(self) -> dict[str, int]:
        """``not_verified``: revocations not verified (read back as gone) yet;
        ``sla_breaches``: those of them that breached the mover SLA."""
        ...


class AssuranceOverview(Protocol):
    """What an operator's overview reads of the assurance records (the console's)."""

    @property
    def movers(self) -> MoverCounts:
        """The movers' revocations, on the same database."""
        ...

    async def unverified_leavers(self) -> list[OpenLeaver]:
        """Leaver events neither verified nor cancelled, oldest first."""
        ...

    async def open_breaches(self) -> int:
        """How many leaver events (not cancelled) breached the SLA and are not verified yet."""
        ...

    async def open_drift(self) -> list[DriftFinding]:
        """Every unresolved finding, by kind, target, user and role."""
        ...

    async def last_runs(self) -> list[RunRecord]:
        """The newest run of each job."""
        ...


class Clock(Protocol):
    """The one now(): an aware UTC datetime."""

    def __call__(self) -> datetime: ...


class AlertSink(Protocol):
    """Where alerts go. Sending never raises and never blocks the pipeline for long."""

    async def alert(self, kind: str, text: str, **fields: Any) -> None: ...


class StagedAlert(Protocol):
    """An alert written in the transaction of the event that raises it, so a crash between
    the event and its alert cannot keep one without the other."""

    async def write(self, conn: Any) -> None:
        """Add the alert's rows with ``conn``, inside the caller's transaction body (a retried
        body calls it again: it starts over)."""
        ...

    async def send(self) -> None:
        """The whole alert now, in a transaction of its own (the event was not written)."""
        ...

    async def after_commit(self) -> None:
        """The rest of the alert (log line, delivery wake-up) once the transaction committed."""
        ...


@runtime_checkable
class StagingAlertSink(AlertSink, Protocol):
    """A sink that can write an alert's rows in another transaction (the outbox's)."""

    def stage(self, kind: str, text: str, fields: dict[str, Any]) -> StagedAlert:
        """The alert, to write with an event's transaction and complete after its commit."""
        ...


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class LabelledCounter(Protocol):
    def labels(self, *values: str) -> Counter: ...


class LabelledGauge(Protocol):
    def labels(self, *values: str) -> Gauge: ...


class EngineMetrics(Protocol):
    """The metrics the engine moves (names and labels are the operator interface)."""

    @property
    def operations(self) -> LabelledCounter:
        """Target operations, by target, action and result."""
        ...

    @property
    def retries(self) -> LabelledCounter:
        """Retried target calls, by target."""
        ...

    @property
    def sla_breaches(self) -> Counter: ...

    @property
    def last_reconcile(self) -> Gauge: ...

    @property
    def last_reconcile_ok(self) -> Gauge: ...

    @property
    def drift_findings(self) -> LabelledGauge:
        """Open drift findings, by kind."""
        ...


class WriteHealth(Protocol):
    """Whether the store takes writes: refusing since when, and why (readiness)."""

    @property
    def refusing(self) -> bool:
        """True from a refused write until the next write that lands."""
        ...

    @property
    def since(self) -> datetime | None: ...

    @property
    def error(self) -> str | None: ...


class HeldLock(Protocol):
    """A session-level lock of the store, held until closed."""

    async def close(self) -> None: ...


class LeaderLease(HeldLock, Protocol):
    """The lock whose holder runs the scheduled jobs among replicas."""

    async def try_acquire(self) -> bool:
        """Hold the lock, taking it when free; True while this process holds it."""
        ...


class OwnerLock(HeldLock, Protocol):
    """The lock that tells other replicas this process's leases are live."""

    async def hold(self) -> None:
        """Hold it, taking it again if it was lost; raise StoreUnavailable when impossible."""
        ...


class ReplicaLocks(Protocol):
    """What a store shared by several replicas offers to coordinate them (PostgreSQL)."""

    async def acquire_leadership(self, key: int) -> LeaderLease:
        """The leadership lock ``key`` (held or not yet: see ``try_acquire``)."""
        ...

    async def owner_lock(self, owner_key: int) -> OwnerLock:
        """This process's owner lock, held."""
        ...


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

"""The directory the IdP pushes, the reads a plan starts from, and the ledger of the grants
jmlsync applied."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from jmlsync.domain.access import Grant, GroupInfo, UserState
from jmlsync.domain.audit import AuditEntry
from jmlsync.domain.directory import Change, Page, ResourceKind, StoredResource
from jmlsync.domain.filters import Attr, Expr


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

    async def policy_users_named(
        self, user_names: Collection[str]
    ) -> dict[str, tuple[UserState | None, list[GroupInfo]]]:
        """:meth:`policy_user` of each of ``user_names`` (each name a key), read together."""
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

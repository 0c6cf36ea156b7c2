"""The ports of jmlsync: the contracts every adapter keeps. Their docstrings are the spec."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from jmlsync.domain.filters import Attr, Expr
from jmlsync.domain.grants import Grant, GroupInfo, Principal, PrincipalSpec, UserState
from jmlsync.domain.models import Change, Page, ResourceKind, StoredResource


@dataclass(frozen=True)
class Query:
    """A search: an optional filter, an optional sort, and a 1-based page window."""

    filter: Expr | None = None
    sort_by: Attr | None = None
    descending: bool = False
    start_index: int = 1
    count: int = 100
    with_members: bool = True


class Store(Protocol):
    """The directory the IdP pushes (users, groups, memberships), kept durably.

    Every write method runs in one transaction: it either commits everything it was given or
    nothing. A write returns only after its transaction is committed, so an acknowledged
    change survives a crash of the process (``kill -9``).
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
        self, kind: ResourceKind, resource_id: str, *, expected_version: int | None = None
    ) -> None:
        """Delete the resource and every membership it takes part in.

        Raises ResourceNotFound and VersionMismatch.
        """
        ...

    async def search(self, kind: ResourceKind, query: Query) -> Page:
        """The resources matching ``query.filter``, sorted, one page of them, and their total."""
        ...

    async def list_groups(self) -> list[GroupInfo]:
        """Every group's id, displayName and externalId (for matching rules)."""
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

    async def find_user(self, user_name: str) -> StoredResource | None:
        """The user with this userName (case-insensitively), or None."""
        ...

    async def applied_grants(self, user_names: Collection[str] | None = None) -> set[Grant]:
        """The grants jmlsync applied to targets and has not revoked since."""
        ...

    async def record_applied(self, grant: Grant, reason: str, now: datetime) -> None:
        """Remember that jmlsync applied ``grant`` (idempotent)."""
        ...

    async def forget_applied(self, grant: Grant) -> None:
        """Forget an applied grant once revoked (idempotent)."""
        ...

    async def close(self) -> None:
        """Release connections; pending writes are already committed."""
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

    async def close(self) -> None:
        """Release connections."""
        ...

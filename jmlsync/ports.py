"""The ports of jmlsync: the contracts every adapter keeps. Their docstrings are the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from jmlsync.domain.filters import Attr, Expr
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

    async def close(self) -> None:
        """Release connections; pending writes are already committed."""
        ...

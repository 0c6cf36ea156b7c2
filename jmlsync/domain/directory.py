"""Values shared by the core, the store and the adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

ResourceKind = Literal["User", "Group"]


def format_timestamp(moment: datetime) -> str:
    """The one textual form of instants in the store: fixed width, UTC, sortable as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """An instant written by :func:`format_timestamp` (or any ISO 8601 with Z), as UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Member:
    """One member of a group (a user id), with the display text the IdP sent, if any."""

    value: str
    display: str | None = None


@dataclass(frozen=True)
class GroupRef:
    """One group a user belongs to, as User.groups shows it."""

    value: str
    display: str


@dataclass(frozen=True)
class StoredResource:
    """A user or group as stored: its document plus the columns the store keeps beside it.

    ``members`` is None when the caller did not ask for them; ``groups`` likewise.
    """

    kind: ResourceKind
    id: str
    doc: dict[str, Any]
    created: str
    last_modified: str
    version: int
    members: tuple[Member, ...] | None = None
    groups: tuple[GroupRef, ...] | None = field(default=None)


@dataclass(frozen=True)
class MemberOp:
    """One change to a group's membership, applied in order inside the write's transaction.

    ``add`` and ``replace`` carry ``items``; ``remove`` carries ``ids``; ``clear`` neither.
    """

    action: Literal["add", "remove", "replace", "clear"]
    items: tuple[Member, ...] = ()
    ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Change:
    """What a write does to one resource: the new document and the membership operations.

    ``notes`` are lines for the write's audit row (what the request carried that was not
    applied, e.g. undeclared attributes ignored).
    """

    doc: dict[str, Any]
    members: tuple[MemberOp, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """One page of a search: the total count and the resources of this page."""

    total: int
    resources: tuple[StoredResource, ...]


@dataclass(frozen=True)
class Job:
    """A leased queue row: provision the principal ``user_name``."""

    id: int
    user_name: str
    leaver: bool
    cause: str
    generation: int
    attempts: int
    enqueued_at: str
    #: The targets still to plan after an earlier attempt failed on them; None: every target.
    pending_targets: frozenset[str] | None = None


@dataclass(frozen=True)
class QueueRow:
    """A queue row as ``jmlsync queue list`` shows it."""

    id: int
    user_name: str
    leaver: bool
    cause: str
    enqueued_at: str
    next_attempt_at: str
    attempts: int
    leased_until: str | None
    last_error: str | None
    failed_at: str | None
    #: The targets still to plan (an earlier attempt failed only on them); None: every target.
    pending_targets: tuple[str, ...] | None = None


@dataclass(frozen=True)
class QueueStats:
    """The queue at a glance: pending rows, dead letters, the oldest pending row's time."""

    pending: int
    dead: int
    oldest_due: str | None

"""The provisioning queue and the leaver records the pipeline clears."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from jmlsync.domain.directory import Job, QueueRow, QueueStats
from jmlsync.ports.state import ServiceState


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


class PipelineQueue(Queue, LeaverRecords, ServiceState, Protocol):
    """What the workers use: the queue, the leaver records they clear, and the service state
    that holds the leaver pause."""

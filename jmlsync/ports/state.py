"""The service's small durable facts, the store's write health, and the locks that
coordinate replicas."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class ServiceState(Protocol):
    """Small facts the service keeps between runs (the rules' fingerprint, the leaver pause)."""

    async def get_state(self, key: str) -> str | None:
        """A small fact the service keeps between runs."""
        ...

    async def set_state(self, key: str, value: str | None) -> None:
        """Set (or replace) the fact ``key``; None forgets it. Idempotent."""
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

"""The Target port: one configured destination as the engine drives it, its optional batch
writes, and the retry a listing runs its reads under."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, runtime_checkable

from jmlsync.domain.access import Grant, Principal, PrincipalSpec

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

#: Set by the engine, to a fresh dict, for one target's part of a pipeline job or batch: its
#: reads of the users and the writes planned from them. A connector may keep there what its
#: reads found (a cloud user's id, the assignments listed) so the writes that follow need not
#: look them up again; it must forget an entry when a write on it fails. Unset (None)
#: everywhere else, where every write looks for itself.
JOB_READS: ContextVar[dict[object, object] | None] = ContextVar("jmlsync_job_reads", default=None)


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


@runtime_checkable
class UserReadTarget(Protocol):
    """What a Target may add: one user's roles and principal in one read, sharing the
    lookups ``grants_of`` and ``principal`` would each make (a cloud API that first finds
    the user's id). Optional; the engine calls the two otherwise."""

    async def read_user(self, user: str) -> tuple[frozenset[str], Principal | None]:
        """The roles ``user`` holds and its principal, as ``grants_of`` and ``principal``."""
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

"""What the console's handlers run on, and who is asking: typed application and request keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from jmlsync.config import Settings
from jmlsync.console.oidc import OidcClient
from jmlsync.domain.sessions import Session
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.ports import (
    AccessStore,
    AssuranceOverview,
    AuditHistory,
    AuditTrail,
    PlanningReads,
    Queue,
    ReviewAssignments,
    SessionStore,
    SlaReads,
)

#: Readiness checks by name: each returns why it is not ready, or None.
Checks = Mapping[str, Callable[[], Awaitable[str | None]]]


class ConsoleQueue(Queue, AuditTrail, AuditHistory, Protocol):
    """The queue's figures and the audit log, as the overview and the evidence pages read
    them."""


class ConsoleAssurance(AssuranceOverview, SlaReads, Protocol):
    """The assurance records the overview counts and the SLA report measures."""


@dataclass(frozen=True)
class ConsolePorts:
    """What the console reads and keeps through the runtime's ports, built once by the
    composition root."""

    directory: PlanningReads
    queue: ConsoleQueue
    assurance: ConsoleAssurance
    access: AccessStore
    assignments: ReviewAssignments
    sessions: SessionStore


@dataclass(frozen=True)
class Console:
    """The engines and ports the pages read and act through (those of the service)."""

    settings: Settings
    ports: ConsolePorts
    reconciler: Reconciler
    checks: Checks
    oidc: OidcClient | None = None
    #: Time-bound access and reviews: the same engines the CLI and the API call.
    timebound: TimeboundAccess | None = None
    reviews: Reviews | None = None


@dataclass(frozen=True)
class Viewer:
    """The signed-in person: their directory userName and the roles the directory gives them."""

    user_name: str
    roles: frozenset[str]
    session: Session
    token: str

    @property
    def csrf_token(self) -> str:
        """The token every form of this session carries."""
        return self.session.csrf_token


VIEWER_KEY = "jmlsync.console.viewer"


def viewer_of(request: web.Request) -> Viewer | None:
    """The signed-in person of this request, or None."""
    viewer = request.get(VIEWER_KEY)
    return viewer if isinstance(viewer, Viewer) else None

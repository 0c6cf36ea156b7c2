"""The values of time-bound access: states, durations, eligibility, people, approvals and
requests, and the errors of its rules (see :mod:`jmlsync.domain.timebound`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from jmlsync.domain.access import RoleGrant
from jmlsync.domain.errors import DomainError

State = Literal[
    "pending", "approved", "active", "ended", "verified", "denied", "cancelled", "timed_out"
]
#: States after which nothing more happens to a request (its history stays).
FINAL: frozenset[str] = frozenset({"verified", "denied", "cancelled", "timed_out"})
#: States in which the grant may be held by the target.
HOLDING: frozenset[str] = frozenset({"active"})

_DURATION = re.compile(r"(\d+)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration anybody may write: beyond it there is no sensible time-bound grant.
LONGEST = timedelta(days=3660)


class AccessRefused(DomainError):
    """A request or a step of it breaks a rule; nothing was changed."""


class RequestNotFound(AccessRefused):
    """No access request with that id."""


class NotAllowed(AccessRefused):
    """The person may not take this step (their own request, not an approver, not theirs)."""


def parse_duration(text: str) -> timedelta:
    """``"2h"``, ``"90m"``, ``"1h30m"``, ``"45s"``, ``"1d"``: a positive duration.

    Raises ValueError on anything else (an empty text, a unit not in s/m/h/d/w, zero, more
    than :data:`LONGEST`).
    """
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 64 or _DURATION.sub("", cleaned).strip():
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30m, 2h, 1h30m, 1d)")
    seconds = sum(int(n) * _UNITS[u.lower()] for n, u in _DURATION.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    if seconds > LONGEST.total_seconds():
        raise ValueError(f"a duration is at most {LONGEST.days} days, not {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """A duration as the shortest ``1h30m`` form :func:`parse_duration` reads back."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


@dataclass(frozen=True)
class Eligibility:
    """``[[eligibility]]``: who may request which grants, for how long, approved by whom.

    Group names are IdP displayNames, compared caselessly like SCIM does; user names too.
    ``approvals`` distinct approvers are needed (0: the grant starts without one).
    """

    name: str
    grants: tuple[RoleGrant, ...]
    max_duration: timedelta
    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    approvals: int = 1
    approvers: frozenset[str] = frozenset()
    require_reason: bool = True
    ticket_pattern: str | None = None
    approval_timeout: timedelta = timedelta(hours=24)
    privileged: bool = False

    def offers(self, target: str, role: str) -> bool:
        """Whether this eligibility names (target, role)."""
        return RoleGrant(target, role) in self.grants


@dataclass(frozen=True)
class Person:
    """A directory user as the rules see them: active or not, and their groups' names."""

    user_name: str
    active: bool
    groups: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return self.user_name.casefold()

    def in_any(self, group_names: Iterable[str]) -> bool:
        """Whether the person belongs to one of ``group_names`` (caselessly)."""
        mine = {g.casefold() for g in self.groups}
        return any(g.casefold() in mine for g in group_names)


@dataclass(frozen=True)
class Approval:
    """One approval; ``round`` 0 approves the request, 1.. each extension in turn."""

    approver: str
    at: datetime
    round: int = 0


@dataclass(frozen=True)
class AccessRequest:
    """A request for one time-bound grant, with everything that happened to it so far.

    ``extension`` is the duration of an extension waiting for approvals (round
    ``extension_round``); ``end_reason`` says why an ended grant ended (expired, ended early,
    leaver, eligibility lost).
    """

    id: int
    user: str
    eligibility: str
    target: str
    role: str
    duration: timedelta
    reason: str
    state: State
    created_at: datetime
    ticket: str | None = None
    privileged: bool = False
    approvals: tuple[Approval, ...] = ()
    approved_at: datetime | None = None
    started_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    revoked_at: datetime | None = None
    verified_at: datetime | None = None
    breached_at: datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    extension: timedelta | None = None
    extension_round: int = 0
    #: The stored row's version: a write based on an older read is refused.
    version: int = field(default=0, compare=False)

    @property
    def grant_label(self) -> str:
        """``target/role``, as the CLI spells a grant."""
        return f"{self.target}/{self.role}"

    def approvers(self, round_: int | None = None) -> list[str]:
        """Who approved (the round given, else the current one), in order."""
        wanted = self.extension_round if round_ is None else round_
        return [a.approver for a in self.approvals if a.round == wanted]

    def all_approvers(self) -> list[str]:
        """Everybody who approved any round, without repeats, in order."""
        return list(dict.fromkeys(a.approver for a in self.approvals))

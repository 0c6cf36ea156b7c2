"""Time-bound access: eligibility, the request lifecycle and its rules, as pure values.

A request moves ``pending → approved → active → ended → verified``, or ends ``denied``,
``cancelled`` or ``timed_out``. Every transition is a function here that takes the request,
the eligibility it was made under, the people involved and ``now``, and returns the new
request or raises :class:`AccessRefused` with a message fit for the person who asked. Nothing
here reads a clock, a store or a target: adapters (CLI, HTTP API, scheduler) call these
functions and persist what they return.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from jmlsync.domain.timebound_values import (
    FINAL,
    HOLDING,
    AccessRefused,
    AccessRequest,
    Approval,
    Eligibility,
    NotAllowed,
    Person,
    RequestNotFound,
    State,
    format_duration,
    parse_duration,
)

__all__ = [
    "FINAL",
    "HOLDING",
    "AccessRefused",
    "AccessRequest",
    "Approval",
    "Eligibility",
    "NotAllowed",
    "Person",
    "RequestNotFound",
    "State",
    "approve",
    "auto_approved",
    "deny",
    "describe",
    "eligible",
    "end",
    "end_if_ineligible",
    "end_overdue",
    "expire",
    "extend",
    "find_eligibility",
    "format_duration",
    "mark_revoked",
    "mark_verified",
    "may_end",
    "new_request",
    "parse_duration",
    "seconds_past_expiry",
    "start",
    "time_out",
    "timed_out",
]


def eligible(eligibility: Eligibility, person: Person) -> bool:
    """Whether ``person`` may request under ``eligibility``: active, and named or in a group."""
    if not person.active:
        return False
    if person.key in {u.casefold() for u in eligibility.users}:
        return True
    return person.in_any(eligibility.groups)


def find_eligibility(
    eligibilities: Sequence[Eligibility], person: Person, target: str, role: str
) -> Eligibility:
    """The first eligibility offering (target, role) to ``person``.

    Raises AccessRefused when no eligibility names the grant at all (an unknown target or
    role) or when none of those naming it lets ``person`` request it.
    """
    offering = [e for e in eligibilities if e.offers(target, role)]
    if not offering:
        raise AccessRefused(f"no eligibility offers {target}/{role}: unknown target or role")
    if not person.active:
        raise AccessRefused(f"{person.user_name} is not an active directory user")
    for candidate in offering:
        if eligible(candidate, person):
            return candidate
    names = ", ".join(e.name for e in offering)
    raise AccessRefused(f"{person.user_name} is not eligible for {target}/{role} ({names})")


def _check_duration(eligibility: Eligibility, duration: timedelta) -> None:
    if duration <= timedelta(0):
        raise AccessRefused("the duration must be positive")
    if duration > eligibility.max_duration:
        raise AccessRefused(
            f"{format_duration(duration)} is over the maximum of"
            f" {format_duration(eligibility.max_duration)} ({eligibility.name})"
        )


def new_request(
    eligibilities: Sequence[Eligibility],
    person: Person,
    target: str,
    role: str,
    *,
    duration: timedelta,
    reason: str,
    ticket: str | None,
    now: datetime,
) -> AccessRequest:
    """A new pending request (id 0 until stored), or AccessRefused.

    Checks: an eligibility names the grant and lets the person request it, the duration is
    positive and within the maximum, a reason is given when required, and a ticket matches
    ``ticket_pattern`` (required when a pattern is set).
    """
    eligibility = find_eligibility(eligibilities, person, target, role)
    _check_duration(eligibility, duration)
    reason = reason.strip()
    if eligibility.require_reason and not reason:
        raise AccessRefused(f"a reason is required ({eligibility.name})")
    ticket = ticket.strip() if ticket else None
    if eligibility.ticket_pattern is not None:
        if not ticket:
            raise AccessRefused(f"a ticket is required ({eligibility.name})")
        if not re.fullmatch(eligibility.ticket_pattern, ticket):
            raise AccessRefused(
                f"ticket {ticket!r} does not match {eligibility.ticket_pattern!r}"
                f" ({eligibility.name})"
            )
    return AccessRequest(
        id=0,
        user=person.user_name,
        eligibility=eligibility.name,
        target=target,
        role=role,
        duration=duration,
        reason=reason,
        ticket=ticket,
        state="pending",
        created_at=now,
        privileged=eligibility.privileged,
    )


def timed_out(request: AccessRequest, eligibility: Eligibility, now: datetime) -> bool:
    """Whether a pending request waited longer than ``approval_timeout``."""
    return request.state == "pending" and now - request.created_at > eligibility.approval_timeout


def time_out(request: AccessRequest, eligibility: Eligibility, now: datetime) -> AccessRequest:
    """The pending request marked ``timed_out`` (it is left unchanged when not due)."""
    if not timed_out(request, eligibility, now):
        return request
    return replace(request, state="timed_out", ended_at=now, end_reason="approval timed out")


def _check_approver(
    request: AccessRequest, eligibility: Eligibility, approver: Person, verb: str
) -> None:
    if approver.key == request.user.casefold():
        raise NotAllowed(f"{approver.user_name} cannot {verb} their own request")
    if not approver.active:
        raise AccessRefused(f"{approver.user_name} is not an active directory user")
    if not approver.in_any(eligibility.approvers):
        groups = ", ".join(sorted(eligibility.approvers)) or "none configured"
        raise AccessRefused(f"{approver.user_name} is not a member of an approver group ({groups})")


def _waiting(request: AccessRequest, eligibility: Eligibility, now: datetime) -> bool:
    """Whether the request awaits approvals now: pending, or active with an extension."""
    if request.state == "timed_out" or (
        request.state == "pending" and timed_out(request, eligibility, now)
    ):
        raise AccessRefused(f"request #{request.id} timed out waiting for approval")
    if request.state == "pending":
        if timed_out(request, eligibility, now):
            raise AccessRefused(f"request #{request.id} timed out waiting for approval")
        return True
    return request.state == "active" and request.extension is not None


def approve(
    request: AccessRequest, eligibility: Eligibility, approver: Person, now: datetime
) -> AccessRequest:
    """Add ``approver``'s approval; with enough distinct approvals the request is
    ``approved`` (an extension: the expiry moves out).

    Refused: nothing to approve (wrong state, timed out), self-approval, an approver who is
    not an active member of an approver group, and a second approval by the same person.
    """
    if not _waiting(request, eligibility, now):
        raise AccessRefused(f"request #{request.id} is {request.state}: nothing to approve")
    _check_approver(request, eligibility, approver, "approve")
    if approver.key in {a.casefold() for a in request.approvers()}:
        raise AccessRefused(f"{approver.user_name} already approved request #{request.id}")
    approvals = (*request.approvals, Approval(approver.user_name, now, request.extension_round))
    updated = replace(request, approvals=approvals)
    if len(updated.approvers()) < eligibility.approvals:
        return updated
    return _approved(updated, now)


def _approved(request: AccessRequest, now: datetime) -> AccessRequest:
    if request.state == "pending":
        return replace(request, state="approved", approved_at=now)
    assert request.extension is not None
    assert request.expires_at is not None
    return replace(
        request,
        expires_at=request.expires_at + request.extension,
        duration=request.duration + request.extension,
        extension=None,
    )


def deny(
    request: AccessRequest,
    eligibility: Eligibility,
    approver: Person,
    reason: str,
    now: datetime,
) -> AccessRequest:
    """An approver refuses: a pending request is ``denied``; a pending extension is dropped
    (the grant keeps its expiry). The same checks as :func:`approve` apply to the approver."""
    if not _waiting(request, eligibility, now):
        raise AccessRefused(f"request #{request.id} is {request.state}: nothing to deny")
    _check_approver(request, eligibility, approver, "deny")
    if not reason.strip():
        raise AccessRefused("a reason is required to deny")
    if request.state == "active":
        return replace(
            request, extension=None, decided_by=approver.user_name, decision_reason=reason
        )
    return replace(
        request,
        state="denied",
        ended_at=now,
        decided_by=approver.user_name,
        decision_reason=reason.strip(),
    )


def auto_approved(request: AccessRequest, eligibility: Eligibility, now: datetime) -> AccessRequest:
    """A self-service request (``approvals = 0``) is approved as soon as it is made."""
    if request.state == "pending" and eligibility.approvals == 0:
        return _approved(request, now)
    if request.state == "active" and request.extension is not None and eligibility.approvals == 0:
        return _approved(request, now)
    return request


def start(
    request: AccessRequest, eligibility: Eligibility, person: Person | None, now: datetime
) -> AccessRequest:
    """An approved request becomes ``active`` until ``now + duration``, if the requester is
    still eligible; otherwise it is ``cancelled`` (nothing was granted)."""
    if request.state != "approved":
        raise AccessRefused(f"request #{request.id} is {request.state}: it cannot start")
    if person is None or not eligible(eligibility, person):
        return replace(
            request,
            state="cancelled",
            ended_at=now,
            end_reason="requester no longer eligible at start",
        )
    return replace(request, state="active", started_at=now, expires_at=now + request.duration)


def may_end(
    request: AccessRequest, eligibility: Eligibility, actor: Person | None, *, admin: bool
) -> bool:
    """Whether ``actor`` may end (or cancel) the request early: the requester, an approver
    (an active member of an approver group), or an admin."""
    if admin:
        return True
    if actor is None:
        return False
    if actor.key == request.user.casefold():
        return True
    return actor.active and actor.in_any(eligibility.approvers)


def end(
    request: AccessRequest,
    eligibility: Eligibility,
    actor: Person | None,
    now: datetime,
    *,
    admin: bool = False,
    actor_name: str | None = None,
) -> AccessRequest:
    """End the request early: an active grant is ``ended`` (revocation follows); a pending
    or approved request is ``cancelled``. Refused for anybody but the requester, an approver
    or an admin, and for a request already over."""
    if not may_end(request, eligibility, actor, admin=admin):
        who = actor.user_name if actor else (actor_name or "unknown")
        raise NotAllowed(f"{who} may not end request #{request.id}")
    who = actor.user_name if actor else (actor_name or "admin")
    if request.state == "active":
        return replace(request, state="ended", ended_at=now, ended_by=who, end_reason="ended early")
    if request.state in ("pending", "approved"):
        return replace(
            request, state="cancelled", ended_at=now, ended_by=who, end_reason="cancelled"
        )
    raise AccessRefused(f"request #{request.id} is {request.state}: nothing to end")


def expire(request: AccessRequest, now: datetime) -> AccessRequest:
    """An active grant past its ``expires_at`` is ``ended`` (left unchanged otherwise)."""
    if request.state != "active" or request.expires_at is None or now < request.expires_at:
        return request
    return replace(
        request,
        state="ended",
        ended_at=now,
        ended_by="scheduler",
        end_reason="expired",
        extension=None,
    )


def end_if_ineligible(
    request: AccessRequest, eligibility: Eligibility | None, person: Person | None, now: datetime
) -> AccessRequest:
    """An active grant whose holder left (inactive or deleted) or lost eligibility (or
    whose eligibility was removed from the configuration) is ``ended`` at once."""
    if request.state != "active":
        return request
    if person is None or not person.active:
        why = "leaver"
    elif eligibility is None:
        why = "eligibility removed"
    elif not eligible(eligibility, person):
        why = "eligibility lost"
    else:
        return request
    return replace(request, state="ended", ended_at=now, ended_by="jmlsync", end_reason=why)


def extend(
    request: AccessRequest,
    eligibility: Eligibility,
    actor: Person,
    duration: timedelta,
    now: datetime,
) -> AccessRequest:
    """Ask for ``duration`` more: the requester of an active grant, within the maximum per
    extension, approved again by ``approvals`` distinct approvers (a new round)."""
    if request.state != "active":
        raise AccessRefused(f"request #{request.id} is {request.state}: only an active grant")
    if actor.key != request.user.casefold():
        raise NotAllowed(f"only {request.user} can extend request #{request.id}")
    if not eligible(eligibility, actor):
        raise AccessRefused(f"{actor.user_name} is no longer eligible ({eligibility.name})")
    if request.extension is not None:
        raise AccessRefused(f"request #{request.id} already has an extension waiting")
    _check_duration(eligibility, duration)
    asked = replace(request, extension=duration, extension_round=request.extension_round + 1)
    return auto_approved(asked, eligibility, now)


def mark_revoked(request: AccessRequest, now: datetime) -> AccessRequest:
    """The pipeline applied the end (the target no longer holds the grant, as written)."""
    if request.state != "ended" or request.revoked_at is not None:
        return request
    return replace(request, revoked_at=now)


def mark_verified(request: AccessRequest, now: datetime) -> AccessRequest:
    """Reading the target back found the grant gone: the request is ``verified``."""
    if request.state != "ended":
        return request
    return replace(request, state="verified", verified_at=now, revoked_at=request.revoked_at or now)


def end_overdue(request: AccessRequest, now: datetime, limit: timedelta) -> bool:
    """Whether an ended grant is still not verified ``limit`` after it ended (a breach)."""
    if request.state != "ended" or request.breached_at is not None:
        return False
    ended = request.ended_at or now
    return now - ended > limit


def seconds_past_expiry(request: AccessRequest) -> float | None:
    """How long after ``expires_at`` (or after the early end) the end was verified."""
    if request.verified_at is None:
        return None
    due = request.expires_at or request.ended_at
    if request.ended_at is not None and due is not None and request.ended_at < due:
        due = request.ended_at
    if due is None:
        return None
    return max(0.0, (request.verified_at - due).total_seconds())


def describe(request: AccessRequest) -> str:
    """Why a time-bound grant is desired, as ``explain`` shows it."""
    approvers = ", ".join(request.all_approvers()) or "nobody (self-service)"
    expires = request.expires_at.strftime("%H:%M:%SZ") if request.expires_at else "?"
    return f"request #{request.id}, approved by {approvers}, expires {expires}"

"""The alerts of time-bound access, through the alert outbox: a request waiting for approval
(Slack-compatible text: who asks for what, why, and how to approve), a privileged grant
started, a grant ended, and an end not verified in time."""

from __future__ import annotations

from datetime import datetime, timedelta

from jmlsync.domain.timebound import AccessRequest, Eligibility, describe, format_duration
from jmlsync.ports import AlertSink


async def alert_waiting(
    alerts: AlertSink, request: AccessRequest, eligibility: Eligibility
) -> None:
    """``access_request``: a request (or an extension) waits for approvals."""
    what = "an extension of" if request.extension is not None else "time-bound access to"
    duration = request.extension or request.duration
    ticket = f", ticket {request.ticket}" if request.ticket else ""
    await alerts.alert(
        "access_request",
        f"*{request.user}* requests {what} `{request.grant_label}` for"
        f" {format_duration(duration)} (request #{request.id}{ticket}):"
        f" {request.reason or 'no reason given'}."
        f" {eligibility.approvals} approval(s) needed from"
        f" {', '.join(sorted(eligibility.approvers))}. Approve with"
        f" `jmlsync access approve {request.id} --as YOU` or"
        f" `POST /api/v1/access-requests/{request.id}/approve`; deny with"
        f" `jmlsync access deny {request.id} --reason TEXT --as YOU`.",
        user=request.user,
        request=request.id,
        key=f"access-request-{request.id}-{request.extension_round}",
    )


async def alert_privileged_started(alerts: AlertSink, request: AccessRequest) -> None:
    """``access_privileged_started``: a privileged time-bound grant is being granted."""
    await alerts.alert(
        "access_privileged_started",
        f"privileged time-bound grant {request.grant_label} started for {request.user}"
        f" ({describe(request)}; reason: {request.reason or 'none given'})",
        user=request.user,
        request=request.id,
        key=f"access-start-{request.id}",
    )


async def alert_ended(alerts: AlertSink, request: AccessRequest) -> None:
    """``access_ended``: a grant ended (expired, early, leaver, eligibility lost)."""
    await alerts.alert(
        "access_ended",
        f"time-bound grant {request.grant_label} of {request.user} ended"
        f" ({request.end_reason}; request #{request.id}); revocation queued",
        user=request.user,
        request=request.id,
        key=f"access-ended-{request.id}",
    )


async def alert_end_unverified(
    alerts: AlertSink, request: AccessRequest, now: datetime, limit: timedelta
) -> None:
    """``access_end_unverified``: the target still holds an ended grant past the limit."""
    late = (now - (request.ended_at or now)).total_seconds()
    await alerts.alert(
        "access_end_unverified",
        f"the end of time-bound grant {request.grant_label} of {request.user} (request"
        f" #{request.id}) is not verified {late:.0f}s after it ended (limit"
        f" {limit.total_seconds():.0f}s); its revocation is queued again",
        user=request.user,
        request=request.id,
        key=f"access-unverified-{request.id}",
    )

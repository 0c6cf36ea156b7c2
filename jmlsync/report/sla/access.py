"""The SLA report's section "time-bound access": every time-bound grant that ended in the
window, when it was due to end, when its revocation was applied and read back, and whether
that took longer than ``[access].end_seconds``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jmlsync.domain.timebound import AccessRequest, seconds_past_expiry

TITLE = "time-bound access"


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


@dataclass(frozen=True)
class TimeboundOutcome:
    """One ended grant measured against the end SLA; ``within_sla`` None while it may still
    be verified in time."""

    request: AccessRequest
    seconds_past_expiry: float | None
    within_sla: bool | None

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.id,
            "user": r.user,
            "grant": r.grant_label,
            "target": r.target,
            "role": r.role,
            "privileged": r.privileged,
            "approvers": r.all_approvers(),
            "reason": r.reason,
            "ticket": r.ticket,
            "expires_at": _iso(r.expires_at),
            "ended_at": _iso(r.ended_at),
            "end_reason": r.end_reason,
            "revoked_at": _iso(r.revoked_at),
            "verified_at": _iso(r.verified_at),
            "seconds_past_expiry": (
                round(self.seconds_past_expiry, 3) if self.seconds_past_expiry is not None else None
            ),
            "within_sla": self.within_sla,
            "breached_at": _iso(r.breached_at),
        }


@dataclass(frozen=True)
class TimeboundSection:
    """The section: its grants and how many ended, were verified and breached."""

    end_seconds: int
    grants: tuple[TimeboundOutcome, ...]

    @property
    def breaches(self) -> int:
        return sum(1 for g in self.grants if g.within_sla is False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": TITLE,
            "end_seconds": self.end_seconds,
            "grants": [g.as_dict() for g in self.grants],
            "summary": {
                "ended": len(self.grants),
                "verified": sum(1 for g in self.grants if g.request.verified_at is not None),
                "breaches": self.breaches,
            },
        }


def _measure(request: AccessRequest, end_seconds: int, now: datetime) -> TimeboundOutcome:
    late = seconds_past_expiry(request)
    if request.breached_at is not None:
        return TimeboundOutcome(request, late, False)
    if late is not None:
        return TimeboundOutcome(request, late, late <= end_seconds)
    due = min(d for d in (request.expires_at, request.ended_at) if d is not None)
    waited = (now - due).total_seconds()
    return TimeboundOutcome(request, None, False if waited > end_seconds else None)


def build_section(
    requests: Sequence[AccessRequest], *, end_seconds: int, now: datetime
) -> TimeboundSection:
    """Measure every request that held a grant and ended (``ended_at`` set by the caller's
    window query): cancelled, denied and timed-out requests never held one."""
    held = [r for r in requests if r.started_at is not None and r.ended_at is not None]
    held.sort(key=lambda r: (r.ended_at or now, r.id))
    return TimeboundSection(end_seconds, tuple(_measure(r, end_seconds, now) for r in held))


def table_lines(section: TimeboundSection) -> list[str]:
    """The section for the table report."""
    lines = ["", f"{TITLE} (end within {section.end_seconds}s of expiry):"]
    lines.append(
        f"  {'ID':>5} {'USER':<24} {'GRANT':<36} {'EXPIRES_AT':<21} {'VERIFIED_AT':<21}"
        f" {'PAST':>7}  SLA"
    )
    for outcome in section.grants:
        data = outcome.as_dict()
        past = data["seconds_past_expiry"]
        verdict = {True: "ok", False: "BREACH", None: "pending"}[outcome.within_sla]
        lines.append(
            f"  {data['id']:>5} {data['user']:<24} {data['grant']:<36}"
            f" {data['expires_at'] or '-':<21} {data['verified_at'] or '-':<21}"
            f" {'-' if past is None else f'{past:.0f}s':>7}  {verdict}"
        )
    if not section.grants:
        lines.append("  no time-bound grant ended in the window")
    summary = section.as_dict()["summary"]
    lines.append(
        f"  ended {summary['ended']}, verified {summary['verified']},"
        f" breaches {summary['breaches']}"
    )
    return lines


def with_section(text: str, output_format: str, section: TimeboundSection) -> str:
    """The rendered report with the section added: a ``timebound`` key in JSON, lines after
    the table; CSV and HTML stay the leavers' report."""
    if output_format == "json":
        document = json.loads(text)
        document["timebound"] = section.as_dict()
        return json.dumps(document, indent=2)
    if output_format == "table":
        return "\n".join([text.rstrip("\n"), *table_lines(section)])
    return text

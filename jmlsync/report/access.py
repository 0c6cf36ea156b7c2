"""Time-bound access requests as JSON values and table lines (CLI and HTTP API alike)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jmlsync.domain.timebound import AccessRequest
from jmlsync.domain.timebound_records import HistoryRow


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def request_json(request: AccessRequest, history: Sequence[HistoryRow] = ()) -> dict[str, Any]:
    """One request as the JSON the CLI prints and the API answers (names are kept stable)."""
    found: dict[str, Any] = {
        "id": request.id,
        "state": request.state,
        "user": request.user,
        "grant": request.grant_label,
        "target": request.target,
        "role": request.role,
        "eligibility": request.eligibility,
        "privileged": request.privileged,
        "duration_seconds": int(request.duration.total_seconds()),
        "reason": request.reason,
        "ticket": request.ticket,
        "created_at": _iso(request.created_at),
        "approved_at": _iso(request.approved_at),
        "started_at": _iso(request.started_at),
        "expires_at": _iso(request.expires_at),
        "ended_at": _iso(request.ended_at),
        "ended_by": request.ended_by,
        "end_reason": request.end_reason,
        "revoked_at": _iso(request.revoked_at),
        "verified_at": _iso(request.verified_at),
        "breached_at": _iso(request.breached_at),
        "denied_by": request.decided_by,
        "denial_reason": request.decision_reason,
        "approvals": [
            {"approver": a.approver, "at": _iso(a.at), "round": a.round} for a in request.approvals
        ],
        "extension_seconds": (
            int(request.extension.total_seconds()) if request.extension is not None else None
        ),
    }
    if history:
        found["history"] = [
            {
                "at": _iso(row.at),
                "actor": row.actor,
                "action": row.action,
                "from": row.from_state,
                "to": row.to_state,
                "detail": row.detail,
            }
            for row in history
        ]
    return found


_HEADER = f"{'ID':>5}  {'STATE':<10} {'USER':<24} {'GRANT':<40} {'EXPIRES':<20} APPROVED BY"


def request_table(requests: Sequence[AccessRequest]) -> str:
    """One line per request, for people."""
    lines = [_HEADER]
    for r in requests:
        approvers = ", ".join(r.all_approvers()) or "-"
        lines.append(
            f"{r.id:>5}  {r.state:<10} {r.user:<24} {r.grant_label:<40}"
            f" {_iso(r.expires_at) or '-':<20} {approvers}"
        )
    if not requests:
        lines.append("  (none)")
    return "\n".join(lines)


def request_details(request: AccessRequest, history: Sequence[HistoryRow]) -> str:
    """Everything about one request, with its history."""
    data = request_json(request)
    lines = [f"request #{request.id}: {request.state}"]
    for key in ("user", "grant", "eligibility", "reason", "ticket", "duration_seconds"):
        lines.append(f"  {key + ':':<18}{data[key]}")
    for key in (
        "created_at",
        "started_at",
        "expires_at",
        "ended_at",
        "end_reason",
        "revoked_at",
        "verified_at",
        "breached_at",
    ):
        if data[key] is not None:
            lines.append(f"  {key + ':':<18}{data[key]}")
    approvers = ", ".join(f"{a['approver']} ({a['at']})" for a in data["approvals"]) or "none"
    lines.append(f"  {'approvals:':<18}{approvers}")
    lines.append("history:")
    for row in history:
        note = f" ({row.detail})" if row.detail else ""
        lines.append(
            f"  {_iso(row.at)}  {row.action:<9} {row.from_state or '-':>9} -> {row.to_state:<10}"
            f" by {row.actor}{note}"
        )
    return "\n".join(lines)

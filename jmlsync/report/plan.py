"""Plans and explanations rendered for people (tables) and for machines (JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any

from jmlsync.domain.access import Operation, Reason
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.plan import summarize
from jmlsync.domain.review_records import ReviewException
from jmlsync.domain.sla import LeaverRecord
from jmlsync.engine.apply import Outcome
from jmlsync.engine.reconcile import Explanation
from jmlsync.report import tables

_MARK = {"grant": "+", "revoke": "-", "disable": "~"}


@dataclass
class RunReport:
    """One `jmlsync reconcile` run: its plan and, unless a dry run, what applying it did."""

    dry_run: bool
    operations: list[Operation]
    outcomes: list[Outcome] = field(default_factory=list)
    held: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    drift: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Targets that could not be read (after retries), with the error: left out of the plan.
    unreadable: dict[str, str] = field(default_factory=dict)
    #: The review exceptions holding back grants the rules give.
    exceptions: Sequence[ReviewException] = ()
    #: ``--user`` names the directory does not hold: warned about, not an error.
    unknown_users: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if not o.ok)

    def summary(self) -> dict[str, Any]:
        summary = summarize(self.operations)
        summary.update(
            applied=sum(1 for o in self.outcomes if o.ok),
            failed=self.failed,
            held=self.held is not None,
            seconds=round(self.seconds, 3),
            **self.counts,
        )
        return summary


def _operation_json(operation: Operation, outcome: Outcome | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "action": operation.action,
        "target": operation.target,
        "user": operation.user,
        "role": operation.role,
        "reason": operation.reason,
        "privileged": operation.privileged,
    }
    if outcome is not None:
        item["outcome"] = "applied" if outcome.ok else "failed"
        if outcome.error:
            item["error"] = outcome.error
    return item


def plan_json(report: RunReport) -> str:
    outcomes: Sequence[Outcome | None] = report.outcomes or [None] * len(report.operations)
    document = {
        "dry_run": report.dry_run,
        "operations": [
            _operation_json(op, outcome)
            for op, outcome in zip(report.operations, outcomes, strict=True)
        ],
        "drift": report.drift,
        "unreadable": _unreadable_json(report.unreadable),
        "exceptions": exceptions_json(report.exceptions),
        "unknown_users": report.unknown_users,
        "summary": report.summary(),
    }
    if report.held:
        document["held"] = report.held
    return json.dumps(document, indent=2)


def exceptions_json(exceptions: Sequence[ReviewException]) -> list[dict[str, Any]]:
    """Review exceptions as JSON: the grant held back, why, and what ends it."""
    return [
        {
            "id": e.id,
            "campaign": e.campaign,
            "item_id": e.item_id,
            "target": e.grant.target,
            "user": e.grant.user,
            "role": e.grant.role,
            "since": e.created_at,
            "memberships": [
                {"rule": rule, "group_id": group, "group": name} for rule, group, name in e.causes
            ],
        }
        for e in exceptions
    ]


def exceptions_lines(exceptions: Sequence[ReviewException]) -> list[str]:
    """Review exceptions for people, with the membership the IdP's admin should remove."""
    if not exceptions:
        return []
    lines = ["", f"review exceptions ({len(exceptions)}), held back although a rule gives them:"]
    lines.extend(
        f"  {e.grant.target:<16} {e.grant.user:<32} {e.grant.role}  (campaign {e.campaign}"
        f" item {e.item_id}; remove {e.memberships} in the IdP)"
        for e in exceptions
    )
    return lines


def _unreadable_json(unreadable: dict[str, str]) -> list[dict[str, str]]:
    return [{"target": name, "error": error} for name, error in sorted(unreadable.items())]


def _unreadable_lines(unreadable: dict[str, str]) -> list[str]:
    if not unreadable:
        return []
    lines = ["", f"unreadable targets ({len(unreadable)}), left out of the plan:"]
    lines.extend(tables.render(None, sorted(unreadable.items()), indent=2))
    return lines


def _row(operation: Operation, outcome: Outcome | None) -> tuple[str, ...]:
    """One operation: what, for whom, which role, why (and how applying it failed)."""
    flag = " [privileged]" if operation.privileged else ""
    why = f"({operation.reason})"
    if outcome is not None and not outcome.ok:
        why += f"  FAILED: {outcome.error}"
    return (
        f"{_MARK[operation.action]} {operation.action}",
        operation.user,
        (operation.role or "") + flag,
        why,
    )


def _operation_lines(pairs: Iterable[tuple[Operation, Outcome | None]]) -> list[str]:
    return tables.render(None, [_row(op, outcome) for op, outcome in pairs], indent=2)


def plan_table(report: RunReport) -> str:
    summary = report.summary()
    mode = "dry run, nothing changed" if report.dry_run else "applied"
    if report.held:
        mode = "held, nothing changed"
    lines = [
        f"Plan: {summary['grant']} to grant, {summary['revoke']} to revoke,"
        f" {summary['disable']} to disable ({mode})"
    ]
    if not report.operations:
        read = "the targets read" if report.unreadable else "the targets"
        lines.append(f"Nothing to do: {read} match the directory.")
    outcomes: Sequence[Outcome | None] = report.outcomes or [None] * len(report.operations)
    pairs = sorted(zip(report.operations, outcomes, strict=True), key=lambda p: p[0].target)
    for target, items in groupby(pairs, key=lambda p: p[0].target):
        lines.append("")
        lines.append(f"target {target}")
        lines.extend(_operation_lines(items))
    lines.extend(exceptions_lines(report.exceptions))
    if report.drift:
        lines.append("")
        lines.append(f"drift ({len(report.drift)}):")
        rows = [
            (d["kind"], d["target"], d["user"], d["role"], f"(first seen {d['first_seen']})")
            for d in report.drift
        ]
        lines.extend(tables.render(None, rows, indent=2))
    lines.extend(_unreadable_lines(report.unreadable))
    if report.outcomes:
        lines.append("")
        lines.append(f"{summary['applied']} applied, {summary['failed']} failed")
    if report.held:
        lines.append("")
        lines.append(report.held)
    return "\n".join(lines)


def _leaver_json(leaver: LeaverRecord | None) -> dict[str, Any] | None:
    if leaver is None:
        return None
    return {
        "left_at": _stamp(leaver.left_at),
        "cleared_at": _stamp(leaver.cleared_at),
        "verified_at": _stamp(leaver.verified_at),
        "pending_targets": list(leaver.pending_targets),
        "targets": [
            {
                "target": detail.target,
                "state": leaver.target_state(detail),
                "cleared_at": _stamp(detail.cleared_at),
                "last_error": detail.last_error,
            }
            for detail in leaver.targets
        ],
    }


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def _leaver_lines(leaver: LeaverRecord | None) -> list[str]:
    if leaver is None:
        return []
    overall = "cleared " + str(_stamp(leaver.cleared_at)) if leaver.cleared_at else "not cleared"
    lines = ["", f"leaver since {_stamp(leaver.left_at)}: {overall}"]
    rows = []
    for detail in leaver.targets:
        state = leaver.target_state(detail)
        when = f" {_stamp(detail.cleared_at)}" if detail.cleared_at else ""
        error = f" ({detail.last_error})" if detail.last_error and state == "pending" else ""
        rows.append((detail.target, f"{state}{when}{error}"))
    return lines + tables.render(None, rows, indent=2)


def _reason_json(reason: Reason) -> dict[str, Any]:
    """A reason of ``explain --format json``: a rule's, or a time-bound request's."""
    found: dict[str, Any] = {
        "rule": reason.rule,
        "group": reason.group,
        "privileged": reason.privileged,
    }
    if reason.request is not None:
        found.update({"request": reason.request, "note": reason.note})
    return found


def explain_json(explanation: Explanation, leaver: LeaverRecord | None = None) -> str:
    """The explanation as JSON; ``leaver`` is the user's newest leaver record, if any."""
    return json.dumps(
        {
            "user": explanation.user,
            "active": explanation.active,
            "known": explanation.active is not None,
            "groups": explanation.groups,
            "desired": [
                {
                    "target": grant.target,
                    "role": grant.role,
                    "privileged": any(r.privileged for r in reasons),
                    "reasons": [_reason_json(r) for r in reasons],
                }
                for grant, reasons in explanation.desired
            ],
            "actual": [
                {"target": grant.target, "role": grant.role, "managed": managed}
                for grant, managed in explanation.actual
            ],
            "principals": [
                {
                    "target": target,
                    "exists": enabled is not None,
                    "enabled": bool(enabled),
                    "readable": target not in explanation.unreadable,
                }
                for target, enabled in sorted(explanation.principals.items())
            ],
            "operations": [_operation_json(op, None) for op in explanation.operations],
            "unreadable": _unreadable_json(explanation.unreadable),
            "exceptions": exceptions_json(explanation.exceptions),
            "leaver": _leaver_json(leaver),
        },
        indent=2,
    )


def explain_table(explanation: Explanation, leaver: LeaverRecord | None = None) -> str:
    """The explanation for people; ``leaver`` as for :func:`explain_json`."""
    if explanation.active is None:
        state = "not in the directory"
    else:
        state = "active" if explanation.active else "inactive (leaver)"
    lines = [f"user {explanation.user}: {state}"]
    lines.append("groups: " + (", ".join(explanation.groups) or "none"))
    lines.append("")
    lines.append("desired (why they should have it):")
    desired = [
        (
            grant.target,
            grant.role,
            "; ".join(f"{r}{' [privileged]' if r.privileged else ''}" for r in reasons),
        )
        for grant, reasons in explanation.desired
    ]
    lines.extend(tables.render(None, desired, indent=2))
    if not explanation.desired:
        lines.append("  nothing")
    lines.append("")
    lines.append("actual (what the targets hold):")
    actual = [
        (
            grant.target,
            grant.role,
            "" if managed else "(unmanaged: no rule names this role; never touched)",
        )
        for grant, managed in explanation.actual
    ]
    lines.extend(tables.render(None, actual, indent=2))
    if not explanation.actual:
        lines.append("  nothing")
    for target, enabled in sorted(explanation.principals.items()):
        status = "absent" if enabled is None else ("enabled" if enabled else "disabled")
        if target in explanation.unreadable:
            status = "unknown: the target could not be read"
        lines.append(f"  principal in {target}: {status}")
    lines.append("")
    lines.append("difference (what reconcile would do):")
    lines.extend(_operation_lines((op, None) for op in explanation.operations))
    if not explanation.operations:
        lines.append("  nothing: in sync" if not explanation.unreadable else "  nothing")
    lines.extend(_unreadable_lines(explanation.unreadable))
    lines.extend(exceptions_lines(explanation.exceptions))
    lines.extend(_leaver_lines(leaver))
    return "\n".join(lines)

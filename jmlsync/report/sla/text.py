"""The SLA report as text: a table for people and CSV for spreadsheets."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from jmlsync.report import tables
from jmlsync.report.sla.build import (
    LeaverOutcome,
    MoverOutcome,
    SlaReport,
    SlaSummary,
    format_percent,
    format_seconds,
    human_time,
    iso_z,
)

CSV_COLUMNS = (
    "user",
    "left_at",
    "cleared_at",
    "verified_at",
    "seconds_to_clear",
    "seconds_to_verify",
    "within_sla",
    "breached_at",
    "targets",
    "pending_targets",
    "targets_cleared_at",
    "breach_cause",
)

#: The columns of the movers' section of the CSV, after a blank line.
MOVER_CSV_COLUMNS = (
    "user",
    "target",
    "role",
    "requested_at",
    "revoked_at",
    "verified_at",
    "seconds_to_revoke",
    "seconds_to_verify",
    "within_sla",
    "breached_at",
    "cause",
)


#: The columns of the "time-bound access" section of the CSV (grants ended in the window).
TIMEBOUND_CSV_COLUMNS = (
    "id",
    "user",
    "grant",
    "approvers",
    "reason",
    "ticket",
    "expires_at",
    "ended_at",
    "end_reason",
    "revoked_at",
    "verified_at",
    "seconds_past_expiry",
    "within_sla",
    "breached_at",
)


def _timebound_csv_row(grant: dict[str, Any]) -> list[str]:
    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return ";".join(str(v) for v in value)
        return str(value).lower() if isinstance(value, bool) else str(value)

    return [text(grant.get(column)) for column in TIMEBOUND_CSV_COLUMNS]


def render_csv(report: SlaReport) -> str:
    """One row per leaver after a header row; targets as ``name:revocations`` joined by ``;``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_csv_row(outcome) for outcome in report.leavers)
    writer.writerow([])
    writer.writerow(MOVER_CSV_COLUMNS)
    writer.writerows(_mover_csv_row(outcome) for outcome in report.movers)
    if report.timebound is not None:
        writer.writerow([])
        writer.writerow(TIMEBOUND_CSV_COLUMNS)
        writer.writerows(_timebound_csv_row(g) for g in report.timebound["grants"])
    writer.writerow([])
    writer.writerow(("field", "value"))
    writer.writerows(evidence_lines(report))
    return buffer.getvalue()


def evidence_lines(report: SlaReport) -> list[tuple[str, str]]:
    """The report's provenance as (field, value) pairs: version, host, time, window, scope,
    the audit head and its verification, and the body's SHA-256."""
    document = report.as_dict()
    generated = document["generated"]
    pairs = [
        ("jmlsync_version", str(generated["jmlsync_version"])),
        ("host", str(generated["host"] or "")),
        ("generated_at", str(generated["at"])),
        ("window_since", document["window"]["since"]),
        ("window_until", document["window"]["until"]),
    ]
    evidence = report.evidence
    if evidence is not None:
        pairs += [
            ("targets", ";".join(f"{n}={k}" for n, k in sorted(evidence.targets.items()))),
            ("rule_count", str(evidence.rule_count)),
            ("privileged_roles", ";".join(sorted(evidence.privileged_roles))),
            ("audit_head_seq", "" if evidence.audit.seq is None else str(evidence.audit.seq)),
            ("audit_head_hash", evidence.audit.hash or ""),
            ("audit_verify", "intact" if evidence.audit.intact else "broken"),
        ]
    pairs.append(("sha256", str(document["sha256"])))
    return pairs


def _mover_csv_row(outcome: MoverOutcome) -> list[str]:
    row = outcome.as_dict()
    row["within_sla"] = str(row["within_sla"]).lower()
    return ["" if row[column] is None else str(row[column]) for column in MOVER_CSV_COLUMNS]


def _csv_row(outcome: LeaverOutcome) -> list[str]:
    row = outcome.as_dict()
    verdict = row["within_sla"]
    row["within_sla"] = "" if verdict is None else str(verdict).lower()
    record = outcome.record
    row["targets"] = ";".join(f"{t.target}:{t.revocations}" for t in record.targets)
    row["pending_targets"] = ";".join(record.pending_targets)
    row["targets_cleared_at"] = ";".join(
        f"{t.target}={iso_z(t.cleared_at)}" for t in record.targets if t.cleared_at is not None
    )
    return ["" if row[column] is None else str(row[column]) for column in CSV_COLUMNS]


def render_table(report: SlaReport) -> str:
    """The report for people: header, one line per leaver (breaches first), then the summaries."""
    lines = [
        f"Leaver SLA report: SLA {report.sla_seconds} s,"
        f" window {human_time(report.since)} .. {human_time(report.until)}",
        f"Generated {human_time(report.generated_at)}",
        *_provenance(report),
        "",
    ]
    if report.leavers:
        lines.extend(_leaver_table(report.leavers))
        lines.extend(_breach_causes(report.leavers))
    else:
        lines.append("No leaver in this window.")
    lines.append("")
    lines.extend(_summary_lines("Leavers", "time to clear", report.summary))
    lines.append("")
    lines.extend(_summary_lines("Movers' revocations", "time to revoke", report.movers_summary))
    if report.movers:
        lines.append(f"  SLA {report.mover_sla_seconds or report.sla_seconds} s")
        lines.extend("  " + line for line in _mover_table(report.movers))
    return "\n".join(lines)


def _mover_table(outcomes: Sequence[MoverOutcome]) -> list[str]:
    header = (
        "STATUS",
        "USER",
        "TARGET",
        "ROLE",
        "REQUESTED",
        "REVOKED",
        "VERIFIED",
        "TO REVOKE (s)",
    )
    rows = []
    for o in sorted(outcomes, key=lambda o: o.mark != "BREACH"):
        r = o.revocation
        rows.append(
            (
                o.mark,
                _printable(r.user),
                _printable(r.target),
                _printable(r.role),
                human_time(r.requested_at),
                human_time(r.revoked_at),
                human_time(r.verified_at),
                format_seconds(o.seconds),
            )
        )
    return tables.render(header, rows)


def _provenance(report: SlaReport) -> list[str]:
    evidence = report.evidence
    lines = []
    if evidence is not None:
        lines += [
            f"jmlsync {evidence.version} on {_printable(evidence.host)}",
            "Scope: targets "
            + (", ".join(f"{n} ({k})" for n, k in sorted(evidence.targets.items())) or "none")
            + f"; {evidence.rule_count} rule(s); privileged roles "
            + (", ".join(sorted(evidence.privileged_roles)) or "none"),
            f"Audit chain: {evidence.audit.text()}",
        ]
    lines.append(f"SHA-256 of the report body: {report.sha256}")
    return lines


def _breach_causes(outcomes: Sequence[LeaverOutcome]) -> list[str]:
    lines = []
    for outcome in outcomes:
        if outcome.breach_cause is None:
            continue
        times = "; ".join(
            f"{t.target} cleared {human_time(t.cleared_at)}"
            for t in outcome.record.targets
            if t.cleared_at is not None
        )
        lines.append(f"  {_printable(outcome.record.user)}: {_printable(outcome.breach_cause)}")
        if times:
            lines.append(f"    {times}")
    return ["", "Breach causes:", *lines] if lines else []


def _leaver_table(outcomes: Sequence[LeaverOutcome]) -> list[str]:
    header = (
        "STATUS",
        "USER",
        "LEFT",
        "CLEARED",
        "VERIFIED",
        "TO CLEAR (s)",
        "TO VERIFY (s)",
        "PENDING ON",
    )
    rows = [_table_row(o) for o in sorted(outcomes, key=lambda o: o.mark != "BREACH")]
    return tables.render(header, rows)


def _table_row(outcome: LeaverOutcome) -> tuple[str, ...]:
    record = outcome.record
    return (
        outcome.mark,
        _printable(record.user),
        human_time(record.left_at),
        human_time(record.cleared_at),
        human_time(record.verified_at),
        format_seconds(outcome.seconds_to_clear),
        format_seconds(outcome.seconds_to_verify),
        _printable(", ".join(record.pending_targets)),
    )


def _summary_lines(title: str, measure: str, summary: SlaSummary) -> list[str]:
    return [
        f"{title}: {summary.count}, cleared {summary.cleared}, verified {summary.verified},"
        f" pending {summary.pending}, breaches {summary.breaches},"
        f" compliance {format_percent(summary.compliance_percent)}",
        f"  {measure}: p50 {format_seconds(summary.p50_seconds)} s,"
        f" p95 {format_seconds(summary.p95_seconds)} s,"
        f" max {format_seconds(summary.max_seconds)} s",
    ]


def _printable(text: str) -> str:
    """Control characters in a user name must not move a terminal's cursor."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

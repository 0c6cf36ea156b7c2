"""The leaver SLA report: every leaver measured against the SLA, rendered as JSON, CSV and a table.

The SLA runs from ``left_at`` (jmlsync acknowledged the deactivation or delete) until every grant
was revoked (``cleared_at``) and read back as gone (``verified_at``). Building the report is pure:
the caller passes ``now``, which decides whether an unverified leaver is still pending or late.
:mod:`jmlsync.report.sla.html` renders the same report as one self-contained page for auditors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jmlsync import __version__
from jmlsync.domain.sla import LeaverRecord, MoverRevocation, TargetDetail
from jmlsync.report.sla.evidence import Evidence, body_hash
from jmlsync.report.sla.time import format_percent as format_percent
from jmlsync.report.sla.time import format_seconds as format_seconds
from jmlsync.report.sla.time import human_time as human_time
from jmlsync.report.sla.time import iso_z as iso_z
from jmlsync.report.sla.time import parse_since as parse_since
from jmlsync.report.sla.time import percentile as percentile
from jmlsync.report.sla.time import utc as _utc

Mark = Literal["OK", "BREACH", "pending"]


@dataclass(frozen=True)
class LeaverOutcome:
    """One leaver measured against the SLA; ``within_sla`` is None while still pending."""

    record: LeaverRecord
    seconds_to_clear: float | None
    seconds_to_verify: float | None
    within_sla: bool | None

    @property
    def mark(self) -> Mark:
        """``OK``, ``BREACH`` or ``pending``: the verdict as people read it."""
        if self.within_sla is None:
            return "pending"
        return "OK" if self.within_sla else "BREACH"

    def as_dict(self) -> dict[str, Any]:
        """The leaver row of the JSON report."""
        record = self.record
        return {
            "user": record.user,
            "left_at": iso_z(record.left_at),
            "cleared_at": _iso_or_none(record.cleared_at),
            "verified_at": _iso_or_none(record.verified_at),
            "seconds_to_clear": self.seconds_to_clear,
            "within_sla": self.within_sla,
            "seconds_to_verify": self.seconds_to_verify,
            "breached_at": _iso_or_none(record.breached_at),
            "targets": [_target_dict(record, detail) for detail in record.targets],
            "pending_targets": list(record.pending_targets),
            "breach_cause": self.breach_cause,
            "regranted_at": _iso_or_none(record.regranted_at),
        }

    @property
    def breach_cause(self) -> str | None:
        """Why the leaver breached (None unless it did): the cause recorded when the breach
        was found, else what the record shows (a target still pending and its error, a late
        verification)."""
        if self.within_sla is not False:
            return None
        record = self.record
        if record.breach_cause:
            return record.breach_cause
        pending = [t for t in record.targets if record.target_state(t) == "pending"]
        if pending:
            return "not cleared on " + "; ".join(
                f"{t.target} ({t.last_error})" if t.last_error else t.target for t in pending
            )
        if self.seconds_to_verify is not None:
            return f"verified {self.seconds_to_verify:.0f}s after leaving, over the SLA"
        return "not read back as gone within the SLA"


@dataclass(frozen=True)
class MoverOutcome:
    """One revocation caused by a mover, measured from the committed change to the revocation
    (``seconds``, also ``seconds_to_revoke``) and to its read-back (``seconds_to_verify``).

    ``within_sla`` is False when it was revoked later than the mover SLA or the read-back found
    the role still (or again) held past it (``breached_at``), True otherwise."""

    revocation: MoverRevocation
    seconds: float
    within_sla: bool
    seconds_to_verify: float | None = None

    @property
    def mark(self) -> Mark:
        """``OK`` or ``BREACH``, as people read it."""
        return "OK" if self.within_sla else "BREACH"

    def as_dict(self) -> dict[str, Any]:
        """The revocation row of the JSON report."""
        revocation = self.revocation
        return {
            "user": revocation.user,
            "target": revocation.target,
            "role": revocation.role,
            "requested_at": iso_z(revocation.requested_at),
            "revoked_at": iso_z(revocation.revoked_at),
            "verified_at": _iso_or_none(revocation.verified_at),
            "seconds": self.seconds,
            "seconds_to_revoke": self.seconds,
            "seconds_to_verify": self.seconds_to_verify,
            "within_sla": self.within_sla,
            "breached_at": _iso_or_none(revocation.breached_at),
            "cause": revocation.cause,
            "actor": revocation.actor,
        }


@dataclass(frozen=True)
class SlaSummary:
    """Counts and latencies of one population (leavers, or movers' revocations).

    The percentiles and maximum are of the time to clear (for movers: to revoke), in seconds,
    None when nothing was cleared. ``compliance_percent`` counts only decided outcomes: pending
    ones are left out, and it is None ("n/a") when nothing is decided: an empty window proves
    nothing.
    """

    count: int
    cleared: int
    verified: int
    pending: int
    p50_seconds: float | None
    p95_seconds: float | None
    max_seconds: float | None
    breaches: int
    compliance_percent: float | None

    def as_dict(self) -> dict[str, Any]:
        """The summary object of the JSON report."""
        return asdict(self)


@dataclass(frozen=True)
class SlaReport:
    """The leavers (and movers' revocations) of one window, measured against one SLA."""

    sla_seconds: int
    since: datetime
    until: datetime
    generated_at: datetime
    leavers: tuple[LeaverOutcome, ...]
    summary: SlaSummary
    movers: tuple[MoverOutcome, ...]
    movers_summary: SlaSummary
    mover_sla_seconds: int | None = None
    evidence: Evidence | None = None
    #: The section "time-bound access" (grants ended in the window), when built: part of
    #: the hashed body; ``timebound_breaches`` of its grants missed their end SLA.
    timebound: Mapping[str, Any] | None = None
    timebound_breaches: int = 0

    @property
    def has_breach(self) -> bool:
        """Whether any leaver missed the SLA (late, flagged breached, or overdue), or any
        mover's revocation did."""
        return (
            any(o.within_sla is False for o in self.leavers)
            or any(not o.within_sla for o in self.movers)
            or self.timebound_breaches > 0
        )

    @property
    def window(self) -> dict[str, str]:
        """The window as ISO 8601 UTC instants."""
        return {"since": iso_z(self.since), "until": iso_z(self.until)}

    def as_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready values; operators script against these names.

        ``generated`` (version, host, time) and ``sha256`` describe this generation; every
        other member is the body the hash is taken over (see :mod:`jmlsync.report.sla.evidence`).
        """
        body = self.body()
        evidence = self.evidence
        return {
            **body,
            "generated": {
                "jmlsync_version": evidence.version if evidence else __version__,
                "host": evidence.host if evidence else None,
                "at": iso_z(self.generated_at),
            },
            "sha256": body_hash(body),
        }

    @property
    def sha256(self) -> str:
        """The SHA-256 of the report's body (hex)."""
        return body_hash(self.body())

    def body(self) -> dict[str, Any]:
        """The report without its generation details: what the hash covers."""
        evidence = self.evidence
        return {
            "sla_seconds": self.sla_seconds,
            "window": self.window,
            "scope": evidence.scope() if evidence else None,
            "audit": evidence.audit.as_dict() if evidence else None,
            "leavers": [outcome.as_dict() for outcome in self.leavers],
            "summary": self.summary.as_dict(),
            "movers": {
                "sla_seconds": self.mover_sla_seconds or self.sla_seconds,
                "revocations": [outcome.as_dict() for outcome in self.movers],
                "summary": self.movers_summary.as_dict(),
            },
            **({"timebound": dict(self.timebound)} if self.timebound is not None else {}),
        }

    def to_json(self) -> str:
        """:meth:`as_dict` as indented JSON."""
        return json.dumps(self.as_dict(), indent=2)


def build_report(
    leavers: Sequence[LeaverRecord],
    movers: Sequence[MoverRevocation],
    *,
    sla_seconds: int,
    since: datetime,
    until: datetime,
    now: datetime,
    targets: Sequence[str] = (),
    mover_seconds: int | None = None,
    evidence: Evidence | None = None,
) -> SlaReport:
    """Measure the leavers who left, and the mover revocations requested, within the window.

    The window is inclusive at both ends; records outside it are left out. Naive datetimes are
    taken as UTC. ``targets`` are the configured targets: a leaver not cleared yet shows each
    one it has no outcome for as pending. Raises ValueError if ``sla_seconds`` is not positive
    or ``since`` is after ``until``. Movers' revocations are measured against
    ``mover_seconds`` (default: ``sla_seconds``).
    """
    since, until, now = _utc(since), _utc(until), _utc(now)
    if sla_seconds <= 0:
        raise ValueError(f"the SLA must be a positive number of seconds, not {sla_seconds}")
    if since > until:
        raise ValueError(f"the window starts ({iso_z(since)}) after it ends ({iso_z(until)})")
    limit = timedelta(seconds=sla_seconds)
    chosen = sorted(
        (r.with_targets(targets) for r in leavers if since <= _utc(r.left_at) <= until),
        key=lambda r: (_utc(r.left_at), r.user),
    )
    revocations = sorted(
        (m for m in movers if since <= _utc(m.requested_at) <= until),
        key=lambda m: (_utc(m.requested_at), m.user, m.target, m.role),
    )
    leaver_outcomes = tuple(_measure_leaver(record, limit, now) for record in chosen)
    mover_limit = timedelta(seconds=mover_seconds or sla_seconds)
    mover_outcomes = tuple(_measure_mover(m, mover_limit) for m in revocations)
    return SlaReport(
        sla_seconds=sla_seconds,
        since=since,
        until=until,
        generated_at=now,
        leavers=leaver_outcomes,
        summary=_leaver_summary(leaver_outcomes),
        movers=mover_outcomes,
        movers_summary=_mover_summary(mover_outcomes),
        mover_sla_seconds=mover_seconds or sla_seconds,
        evidence=evidence,
    )


def _measure_leaver(record: LeaverRecord, limit: timedelta, now: datetime) -> LeaverOutcome:
    left_at = _utc(record.left_at)
    to_clear = None if record.cleared_at is None else _utc(record.cleared_at) - left_at
    to_verify = None if record.verified_at is None else _utc(record.verified_at) - left_at
    return LeaverOutcome(
        record=record,
        seconds_to_clear=_seconds(to_clear),
        seconds_to_verify=_seconds(to_verify),
        within_sla=_verdict(record, to_verify, limit, now - left_at),
    )


def _verdict(
    record: LeaverRecord, to_verify: timedelta | None, limit: timedelta, age: timedelta
) -> bool | None:
    if record.breached_at is not None:
        return False
    if to_verify is not None:
        return to_verify <= limit
    return False if age > limit else None


def _measure_mover(revocation: MoverRevocation, limit: timedelta) -> MoverOutcome:
    requested = _utc(revocation.requested_at)
    elapsed = _utc(revocation.revoked_at) - requested
    verified = revocation.verified_at
    return MoverOutcome(
        revocation=revocation,
        seconds=round(elapsed.total_seconds(), 3),
        within_sla=elapsed <= limit and revocation.breached_at is None,
        seconds_to_verify=None if verified is None else _seconds(_utc(verified) - requested),
    )


def _leaver_summary(outcomes: Sequence[LeaverOutcome]) -> SlaSummary:
    durations = [o.seconds_to_clear for o in outcomes if o.seconds_to_clear is not None]
    verified = sum(1 for o in outcomes if o.record.verified_at is not None)
    return _summary(durations, verified, [o.within_sla for o in outcomes])


def _mover_summary(outcomes: Sequence[MoverOutcome]) -> SlaSummary:
    """Every recorded revocation was applied (cleared); ``verified`` counts those read back
    as gone by leaver verification."""
    verified = sum(1 for o in outcomes if o.revocation.verified_at is not None)
    return _summary([o.seconds for o in outcomes], verified, [o.within_sla for o in outcomes])


def _summary(
    durations: Sequence[float], verified: int, verdicts: Sequence[bool | None]
) -> SlaSummary:
    ordered = sorted(durations)
    pending = sum(1 for v in verdicts if v is None)
    met = sum(1 for v in verdicts if v is True)
    decided = len(verdicts) - pending
    return SlaSummary(
        count=len(verdicts),
        cleared=len(ordered),
        verified=verified,
        pending=pending,
        p50_seconds=_rounded(percentile(ordered, 50)),
        p95_seconds=_rounded(percentile(ordered, 95)),
        max_seconds=_rounded(ordered[-1] if ordered else None),
        breaches=sum(1 for v in verdicts if v is False),
        compliance_percent=round(100.0 * met / decided, 2) if decided else None,
    )


def render_json(report: SlaReport) -> str:
    """The report as JSON (see :meth:`SlaReport.as_dict` for the names)."""
    return report.to_json()


def _iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso_z(moment)


def _target_dict(record: LeaverRecord, detail: TargetDetail) -> dict[str, Any]:
    return {
        "target": detail.target,
        "revocations": detail.revocations,
        "disabled": detail.disabled,
        "failures": detail.failures,
        "last_change_at": _iso_or_none(detail.last_change_at),
        "state": record.target_state(detail),
        "cleared_at": _iso_or_none(detail.cleared_at),
        "last_error": detail.last_error,
    }


def _seconds(elapsed: timedelta | None) -> float | None:
    return None if elapsed is None else round(elapsed.total_seconds(), 3)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)

"""What the SLA report and the audit check read from an open store: shared by the CLI
(``sla-report``, ``audit verify``) and the console, so both show the same numbers.

The rules come from the caller (the CLI loads them, the console has the composition root's):
loading them parses SCIM filter text, which the console must not import.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from jmlsync import __version__
from jmlsync.audit import verify_chain
from jmlsync.config import Settings
from jmlsync.domain.access import Rule
from jmlsync.domain.directory import format_timestamp
from jmlsync.domain.policy import privileged_roles
from jmlsync.ports import AccessStore, AuditTrail, SlaReads
from jmlsync.report.sla import build as sla
from jmlsync.report.sla.access import TimeboundSection, build_section
from jmlsync.report.sla.evidence import AuditHead, Evidence
from jmlsync.store.access import SqlAccess
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.pipeline_sql import AUDIT_ANCHOR
from jmlsync.store.queue import SqlQueue


async def audit_head(queue: AuditTrail, until: datetime) -> AuditHead:
    """The newest audit row before ``until``, and `audit verify` of the chain up to it."""
    rows = []
    async for row in queue.audit_rows():
        if row["at"] >= format_timestamp(until):
            break
        rows.append(row)
    checked, broken = verify_chain(rows, await queue.get_state(AUDIT_ANCHOR))
    last = rows[-1] if rows else None
    return AuditHead(
        seq=None if last is None else int(last["seq"]),
        hash=None if last is None else str(last["hash"]),
        intact=broken is None,
        rows_checked=checked,
        problem=None if broken is None else f"row {broken.seq}: {broken.reason}",
    )


async def verify_audit(queue: AuditTrail) -> tuple[int, str | None]:
    """`audit verify` of the whole chain: rows checked, and the first problem or None."""
    rows = [row async for row in queue.audit_rows()]
    count, broken = verify_chain(rows, await queue.get_state(AUDIT_ANCHOR))
    if broken is not None:
        return count, f"row {broken.seq}: {broken.reason}"
    head = await queue.audit_head()
    last = rows[-1]["hash"] if rows else None
    if head != last:
        return count, f"rows after {rows[-1]['seq'] if rows else 0} are missing (head moved)"
    return count, None


def evidence(settings: Settings, audit: AuditHead, rules: Sequence[Rule]) -> Evidence:
    """What the report's reader needs to trust it: version, host, targets, rules (those
    loaded from ``settings``), audit."""
    return Evidence(
        version=__version__,
        host=socket.gethostname(),
        targets={name: target.kind for name, target in settings.targets.items()},
        rule_count=len(settings.rules),
        privileged_roles=tuple(f"{t}/{r}" for t, r in sorted(privileged_roles(rules))),
        audit=audit,
    )


async def sla_report_with_section(
    settings: Settings,
    store: SqlStore,
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    rules: Sequence[Rule],
) -> tuple[sla.SlaReport, TimeboundSection]:
    """The SLA report of the window [since, until], measured at ``now``, with its section
    "time-bound access" (carried inside the report, so its hash covers it)."""
    return await _report(
        settings,
        SqlAssurance(store.db),
        SqlQueue(store.db),
        SqlAccess(store.db),
        since,
        until,
        now,
        rules,
    )


async def _report(
    settings: Settings,
    assurance: SlaReads,
    queue: AuditTrail,
    access: AccessStore,
    since: datetime,
    until: datetime,
    now: datetime,
    rules: Sequence[Rule],
) -> tuple[sla.SlaReport, TimeboundSection]:
    audit = await audit_head(queue, min(until, now))
    ended = await access.find(ended_since=since, ended_until=until)
    section = build_section(ended, end_seconds=settings.access.end_seconds, now=now)
    report = sla.build_report(
        await assurance.leaver_records(since, until),
        await assurance.mover_revocations(since, until),
        sla_seconds=settings.sla.leaver_seconds,
        since=since,
        until=until,
        now=now,
        targets=sorted(settings.targets),
        mover_seconds=settings.sla.mover_limit,
        evidence=evidence(settings, audit, rules),
    )
    report = replace(report, timebound=section.as_dict(), timebound_breaches=section.breaches)
    return report, section


async def sla_report(
    settings: Settings,
    assurance: SlaReads,
    queue: AuditTrail,
    access: AccessStore,
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    rules: Sequence[Rule],
) -> sla.SlaReport:
    """The SLA report of the window [since, until], measured at ``now``, read through the
    ports (the console's)."""
    report, _section = await _report(settings, assurance, queue, access, since, until, now, rules)
    return report

"""Writing an evidence bundle: the campaign's files, the SLA report of its period through
the ``sla-report`` functions, the audit row recording the bundle, and the manifest."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from jmlsync.audit import AuditEntry
from jmlsync.domain.directory import format_timestamp, parse_timestamp
from jmlsync.report.review_evidence import (
    MANIFEST,
    CampaignView,
    bundle_files,
    files_digest,
    manifest,
    sha256,
)
from jmlsync.report.sla import build as sla
from jmlsync.report.sla.html import render_html
from jmlsync.report.sla.text import render_csv
from jmlsync.runtime import Runtime


async def sla_report(runtime: Runtime, since: datetime, until: datetime) -> sla.SlaReport:
    """The leaver and mover SLA report of a window, as ``jmlsync sla-report`` builds it."""
    store = runtime.assurance.store
    settings = runtime.settings
    return sla.build_report(
        await store.leaver_records(since, until),
        await store.mover_revocations(since, until),
        sla_seconds=settings.sla.leaver_seconds,
        since=since,
        until=until,
        now=until,
        targets=sorted(settings.targets),
    )


async def build_bundle(
    runtime: Runtime, view: CampaignView, actor: str, now: datetime
) -> dict[str, bytes]:
    """Every file of the bundle and its manifest, by name; the bundle's audit row is
    appended (the caller writes the files).

    The SLA report covers the campaign's period: from its snapshot to now."""
    assert runtime.reviews is not None
    store = runtime.reviews.reviews
    since = parse_timestamp(view.campaign.started_at)
    report = await sla_report(runtime, since, max(now, since))
    period = (view.campaign.started_at, format_timestamp(max(now, since)))
    files = bundle_files(view, render_csv(report), render_html(report), period)
    digest = files_digest({name: sha256(data) for name, data in files.items()})
    seq = await store.append_audit(
        AuditEntry(
            at=format_timestamp(now),
            actor=actor,
            action="review.evidence",
            subject=f"campaign {view.campaign.id}",
            outcome="committed",
            detail=f"evidence bundle files sha256 {digest}",
        )
    )
    anchors = {}
    for name, row_seq in (("snapshot", view.campaign.audit_seq), ("bundle", seq)):
        row = await store.audit_row(int(row_seq or 0))
        if row is not None:
            anchors[name] = row
    document = manifest(view, files, anchors)
    return {**files, MANIFEST: (json.dumps(document, indent=2) + "\n").encode("utf-8")}


async def anchor_problems(runtime: Runtime, document: dict[str, Any]) -> list[str]:
    """Whether the manifest's anchoring rows are the store's own (same seq, same hash)."""
    assert runtime.reviews is not None
    problems = []
    for name, row in sorted(document.get("anchors", {}).items()):
        stored = await runtime.reviews.reviews.audit_row(int(row.get("seq", 0)))
        if stored is None or stored["hash"] != row.get("hash"):
            problems.append(
                f"anchor {name}: audit row {row.get('seq')} is not in this store's chain"
            )
    return problems

"""The SLA report for a period, and the audit log with its verification: evidence pages,
built by the same code as ``jmlsync sla-report`` and ``jmlsync audit verify``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jmlsync.clock import now_utc
from jmlsync.console.authz import ADMIN
from jmlsync.console.context import Viewer
from jmlsync.console.keys import CONSOLE
from jmlsync.console.pages import Feature, Page
from jmlsync.evidence import sla_report, verify_audit
from jmlsync.report.sla import build as sla

_AUDIT_ROWS = 200


async def sla_page(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    console = request.app[CONSOLE]
    since_text = request.query.get("since", "30d").strip() or "30d"
    now = now_utc()
    try:
        since = sla.parse_since(since_text, now)
    except ValueError as exc:
        return {"since": since_text, "problem": str(exc)}
    if since > now:
        return {"since": since_text, "problem": "the period starts in the future"}
    report = await sla_report(
        console.settings,
        console.ports.assurance,
        console.ports.queue,
        console.ports.access,
        since,
        now,
        now,
        rules=console.reconciler.rules,  # the composition root's, loaded from the settings
    )
    return {"since": since_text, "report": report, "iso": sla.iso_z}


async def audit_page(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    queue = request.app[CONSOLE].ports.queue
    checked, problem = await verify_audit(queue)
    rows = [row async for row in queue.audit_rows(last=_AUDIT_ROWS)]
    return {"checked": checked, "problem": problem, "rows": list(reversed(rows))}


FEATURE = Feature(
    "evidence",
    (
        Page("/sla", "SLA report", "sla.html", sla_page, frozenset({ADMIN})),
        Page("/audit", "Audit log", "audit.html", audit_page, frozenset({ADMIN})),
    ),
)

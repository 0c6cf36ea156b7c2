"""The operators' overview: queue, dead letters, drift, SLA breaches, last runs, readiness."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jmlsync.console.authz import ADMIN
from jmlsync.console.context import CONSOLE, Viewer
from jmlsync.console.pages import Feature, Page
from jmlsync.domain.models import parse_timestamp
from jmlsync.scim.resources import now_utc


def _age(stamp: str | None) -> str:
    if stamp is None:
        return "none pending"
    seconds = max(0, int((now_utc() - parse_timestamp(stamp)).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


async def overview(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    console = request.app[CONSOLE]
    stats = await console.queue.stats()
    drift = await console.assurance.open_drift()
    readiness = {name: await check() for name, check in console.checks.items()}
    movers = await console.assurance.movers.counts()
    unverified = await console.assurance.unverified_leavers()
    return {
        "queue": {
            "pending": stats.pending,
            "dead": stats.dead,
            "oldest": stats.oldest_due,
            "age": _age(stats.oldest_due),
        },
        "drift": {
            "missing": sum(1 for d in drift if d.kind == "missing"),
            "unmanaged": sum(1 for d in drift if d.kind == "unmanaged"),
            "findings": drift[:50],
        },
        "breaches": {
            "leavers": await console.assurance.open_breaches(),
            "movers": movers["sla_breaches"],
        },
        "leavers": {
            "not_cleared": sum(1 for leaver in unverified if leaver.cleared_at is None),
            "not_verified": len(unverified),
        },
        "runs": await console.assurance.last_runs(),
        "readiness": readiness,
        "ready": all(problem is None for problem in readiness.values()),
    }


FEATURE = Feature(
    "overview", (Page("/overview", "Overview", "overview.html", overview, frozenset({ADMIN})),)
)

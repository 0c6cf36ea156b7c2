"""The operators' overview: queue, dead letters, drift, SLA breaches, time-bound access and
open reviews, last runs, readiness."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jmlsync.clock import now_utc
from jmlsync.console.authz import ADMIN
from jmlsync.console.context import Console, Viewer
from jmlsync.console.keys import CONSOLE
from jmlsync.console.pages import Feature, Page
from jmlsync.domain.directory import parse_timestamp


def _age(stamp: str | None) -> str:
    if stamp is None:
        return "none pending"
    seconds = max(0, int((now_utc() - parse_timestamp(stamp)).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


async def _timebound(console: Console) -> dict[str, int]:
    """Requests waiting for approval (or an extension) and grants running now."""
    if console.timebound is None:
        return {"waiting": 0, "active": 0}
    found = await console.timebound.access.find(states=["pending", "active"])
    return {
        "waiting": sum(1 for r in found if r.state == "pending" or r.extension is not None),
        "active": sum(1 for r in found if r.state == "active"),
    }


async def _reviews(console: Console) -> dict[str, int]:
    """Open campaigns and their items nobody has decided yet."""
    if console.reviews is None:
        return {"open": 0, "undecided": 0}
    store = console.reviews.reviews
    opened = [c for c in await store.campaigns() if c.closed_at is None]
    undecided = 0
    for campaign in opened:
        undecided += campaign.items - len(await store.decisions(campaign.id))
    return {"open": len(opened), "undecided": undecided}


async def overview(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    console = request.app[CONSOLE]
    stats = await console.ports.queue.stats()
    drift = await console.ports.assurance.open_drift()
    readiness = {name: await check() for name, check in console.checks.items()}
    movers = await console.ports.assurance.movers.counts()
    unverified = await console.ports.assurance.unverified_leavers()
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
            "leavers": await console.ports.assurance.open_breaches(),
            "movers": movers["sla_breaches"],
        },
        "leavers": {
            "not_cleared": sum(1 for leaver in unverified if leaver.cleared_at is None),
            "not_verified": len(unverified),
        },
        "timebound": await _timebound(console),
        "reviews": await _reviews(console),
        "runs": await console.ports.assurance.last_runs(),
        "readiness": readiness,
        "ready": all(problem is None for problem in readiness.values()),
    }


FEATURE = Feature(
    "overview", (Page("/overview", "Overview", "overview.html", overview, frozenset({ADMIN})),)
)

"""Operational endpoints: /readyz (open) and /metrics (Prometheus text, behind a token).

/readyz names the failing checks to anyone, and gives their reasons only to a caller with a
SCIM or metrics token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from jmlsync.ops.metrics import Metrics
from jmlsync.ports import Queue
from jmlsync.scim.keys import AUTH, METRICS_AUTH
from jmlsync.store.outbox import SqlOutbox

#: A readiness check answers None when ready, else the reason it is not.
Check = Callable[[], Awaitable[str | None]]


#: The longest a readiness check may take before it counts as failed.
CHECK_TIMEOUT_SECONDS = 3.0


def _may_see_reasons(request: web.Request) -> bool:
    header = request.headers.get("Authorization")
    auth = request.app.get(AUTH)
    if auth is not None and auth.allows(header):
        return True
    metrics_auth = request.app.get(METRICS_AUTH)
    return metrics_auth is not None and metrics_auth.allows(header)


def ops_routes(
    metrics: Metrics,
    queue: Queue,
    checks: Mapping[str, Check],
    outbox: SqlOutbox | None = None,
    *,
    check_timeout: float = CHECK_TIMEOUT_SECONDS,
) -> list[web.RouteDef]:
    """The /readyz and /metrics routes of a running service."""

    async def bounded(check: Check) -> str | None:
        try:
            async with asyncio.timeout(check_timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {check_timeout:g}s"

    async def readyz(request: web.Request) -> web.Response:
        # Side by side and each bounded: a frozen database answers "not ready" in
        # check_timeout, never hangs the probe.
        reasons = await asyncio.gather(*(bounded(check) for check in checks.values()))
        problems = {
            name: reason for name, reason in zip(checks, reasons, strict=True) if reason is not None
        }
        if problems and not _may_see_reasons(request):
            # Reasons name hosts, ports and errors: only for a caller with a token.
            problems = dict.fromkeys(problems, "failed")
        if problems:
            return web.json_response({"status": "not ready", "problems": problems}, status=503)
        return web.json_response({"status": "ready", "checks": sorted(checks)})

    async def metrics_text(_request: web.Request) -> web.Response:
        stats = await queue.stats()
        metrics.queue_depth.set(stats.pending)
        metrics.dead_letters.set(stats.dead)
        age = 0.0
        if stats.oldest_due is not None:
            oldest = datetime.fromisoformat(stats.oldest_due.replace("Z", "+00:00"))
            age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        metrics.queue_oldest_age.set(age)
        if outbox is not None:
            alerts = await outbox.stats()
            metrics.alerts_undelivered.set(alerts.undelivered)
            first = alerts.oldest_created_at
            metrics.alerts_oldest_age.set(
                max(0.0, (datetime.now(UTC) - first).total_seconds()) if first else 0.0
            )
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    return [web.get("/readyz", readyz), web.get("/metrics", metrics_text)]

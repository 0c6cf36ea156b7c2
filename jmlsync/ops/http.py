"""Operational endpoints: /readyz (open) and /metrics (Prometheus text, behind a token).

/readyz names the failing checks to anyone, and gives their reasons only to a caller with a
SCIM or metrics token. It also pings every target and reports each, without a down target
making the service unready: the queue holds that target's changes, and the SCIM endpoint must
stay in the load balancer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from aiohttp import web

from jmlsync.ops.metrics import Metrics
from jmlsync.ports import Queue, Target
from jmlsync.store.outbox import SqlOutbox

#: A readiness check answers None when ready, else the reason it is not.
Check = Callable[[], Awaitable[str | None]]
#: Whether a request's Authorization header (None when absent) may see the reasons.
MaySeeReasons = Callable[[str | None], bool]


#: The longest a readiness check may take before it counts as failed.
CHECK_TIMEOUT_SECONDS = 3.0

log = logging.getLogger("jmlsync.ops")


class TargetPings:
    """Pings every target side by side, each bounded, and keeps ``jmlsync_target_up``.

    Requests that ask while a round is under way share it: probes and scrapes arriving
    together cost each target one read, not one each.
    """

    def __init__(self, targets: Mapping[str, Target], metrics: Metrics, timeout: float) -> None:
        self._targets = dict(targets)
        self._metrics = metrics
        self._timeout = timeout
        self._round: asyncio.Future[dict[str, str | None]] | None = None
        self._down: set[str] = set()

    async def run(self) -> dict[str, str | None]:
        """Each target's reason it is down, or None when it answered."""
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._ping_all())
        # Shielded: one caller going away does not cancel the round the others wait for.
        return await asyncio.shield(self._round)

    async def _ping_all(self) -> dict[str, str | None]:
        names = sorted(self._targets)
        reasons = await asyncio.gather(*(self._ping(self._targets[n]) for n in names))
        found = dict(zip(names, reasons, strict=True))
        for name, reason in found.items():
            self._metrics.target_up.labels(name).set(0 if reason is not None else 1)
            if reason is not None and name not in self._down:
                log.warning(
                    "target %r is down: %s", name, reason, extra={"fields": {"target": name}}
                )
                self._down.add(name)
            elif reason is None and name in self._down:
                log.info("target %r answers again", name, extra={"fields": {"target": name}})
                self._down.discard(name)
        return found

    async def _ping(self, target: Target) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await target.ping()
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as exc:  # any failure is that target down, and no more
            return str(exc) or type(exc).__name__
        return None


def _nobody(_header: str | None) -> bool:
    return False


def ops_routes(
    metrics: Metrics,
    queue: Queue,
    checks: Mapping[str, Check],
    outbox: SqlOutbox | None = None,
    *,
    targets: Mapping[str, Target] | None = None,
    may_see_reasons: MaySeeReasons = _nobody,
    check_timeout: float = CHECK_TIMEOUT_SECONDS,
) -> list[web.RouteDef]:
    """The /readyz and /metrics routes of a running service.

    ``checks`` decide readiness; ``targets`` are pinged by both routes and reported, never
    deciding it. ``may_see_reasons`` tells the callers shown why (those with a SCIM or
    metrics token, as the composition root decides); the others see ``"failed"``.
    """
    pings = TargetPings(targets or {}, metrics, check_timeout)

    async def bounded(check: Check) -> str | None:
        try:
            async with asyncio.timeout(check_timeout):
                return await check()
        except TimeoutError:
            return f"no answer within {check_timeout:g}s"

    async def readyz(request: web.Request) -> web.Response:
        # Side by side and each bounded: a frozen database answers "not ready" in
        # check_timeout, never hangs the probe; nor does a frozen target.
        reasons, down = await asyncio.gather(
            asyncio.gather(*(bounded(check) for check in checks.values())), pings.run()
        )
        problems = {
            name: reason for name, reason in zip(checks, reasons, strict=True) if reason is not None
        }
        if not may_see_reasons(request.headers.get("Authorization")):
            # Reasons name hosts, ports and errors: only for a caller with a token.
            problems = dict.fromkeys(problems, "failed")
            down = {name: None if reason is None else "failed" for name, reason in down.items()}
        reported = {name: "ok" if reason is None else reason for name, reason in down.items()}
        if problems:
            body = {"status": "not ready", "problems": problems, "targets": reported}
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready", "checks": sorted(checks), "targets": reported})

    async def metrics_text(_request: web.Request) -> web.Response:
        await pings.run()  # jmlsync_target_up, as of this scrape
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

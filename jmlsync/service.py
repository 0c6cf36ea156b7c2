"""The composition root: builds the store, the targets, the engine and the SCIM application,
and owns their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
import asyncpg
from aiohttp import web

from jmlsync import systemd
from jmlsync.alerts import Alerts, AuthFailureWatch, LogAlerts, WebhookAlerts
from jmlsync.config import Settings
from jmlsync.engine.apply import Applier
from jmlsync.engine.assurance import Assurance
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.rules import rules_from_settings
from jmlsync.engine.worker import Pipeline, options_from
from jmlsync.metrics import Metrics
from jmlsync.ops_http import ops_routes
from jmlsync.ports import Target
from jmlsync.scheduling import Scheduler
from jmlsync.scim.app import Observer, build_scim_app
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.resources import now_utc
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.postgres import LeaderLock, PgDatabase
from jmlsync.store.queue import SqlQueue
from jmlsync.targets.registry import open_target

log = logging.getLogger("jmlsync.service")

RULES_FINGERPRINT = "rules_fingerprint"


async def open_store(settings: Settings) -> SqlStore:
    """The store named by ``[store].url`` (SQLite or PostgreSQL), migrated and ready."""
    if settings.store.is_postgres:
        return await SqlStore.open_postgres(settings.store.url)
    return await SqlStore.open(settings.store.sqlite_path, synchronous=settings.store.synchronous)


@dataclass
class Runtime:
    """Everything one process runs on: the store and queue, the targets and the engine."""

    settings: Settings
    store: SqlStore
    queue: SqlQueue
    targets: dict[str, Target]
    applier: Applier
    reconciler: Reconciler
    pipeline: Pipeline
    metrics: Metrics
    alerts: Alerts
    assurance: Assurance
    webhook: WebhookAlerts | None = None
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")


def retry_policy(settings: Settings) -> RetryPolicy:
    pipeline = settings.pipeline
    return RetryPolicy(
        attempts=pipeline.call_attempts,
        total_seconds=pipeline.call_max_seconds,
        initial_wait=pipeline.call_initial_wait_seconds,
        max_wait=pipeline.call_max_wait_seconds,
    )


def _webhook(settings: Settings, http: aiohttp.ClientSession) -> WebhookAlerts | None:
    """The alert webhook, when configured (its URL from the file wins over the inline one)."""
    alerts = settings.alerts
    url = alerts.webhook_url.get_secret_value() if alerts.webhook_url else None
    if alerts.webhook_url_file is not None:
        url = alerts.webhook_url_file.read_text("utf-8").strip() or None
    if not url:
        return None
    return WebhookAlerts(http, url, dedupe_seconds=alerts.dedupe_seconds)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the store and every configured target; close them all on exit."""
    store = await open_store(settings)
    queue = SqlQueue(store.db)
    targets: dict[str, Target] = {}
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    metrics = Metrics()
    webhook = _webhook(settings, http)
    alerts = Alerts(LogAlerts(), webhook) if webhook else Alerts(LogAlerts())
    protected = settings.safety.protected_users
    try:
        for name, target_settings in settings.targets.items():
            targets[name] = await open_target(name, target_settings, http=http)
        rules = rules_from_settings(settings)
        applier = Applier(
            store,
            queue,
            targets,
            clock=now_utc,
            retry=retry_policy(settings),
            concurrency={name: t.max_concurrency for name, t in settings.targets.items()},
            metrics=metrics,
            alerts=alerts,
        )
        pipeline = Pipeline(
            store,
            queue,
            applier,
            rules,
            clock=now_utc,
            alerts=alerts,
            options=options_from(settings.pipeline.model_dump()),
            on_cleared=lambda _user, seconds: metrics.time_to_clear.observe(seconds),
            protected=protected,
        )
        store.db.on_commit(pipeline.wake)
        reconciler = Reconciler(store, targets, rules, applier=applier, protected=protected)
        assurance = Assurance(
            reconciler=reconciler,
            applier=applier,
            queue=queue,
            store=SqlAssurance(store.db),
            alerts=alerts,
            metrics=metrics,
            clock=now_utc,
            sla=timedelta(seconds=settings.sla.leaver_seconds),
            drift_mode=settings.reconcile.drift,
            max_revocations=settings.reconcile.max_revocations,
            mover_sla=timedelta(seconds=settings.sla.mover_limit),
        )
        yield Runtime(
            settings,
            store,
            queue,
            targets,
            applier,
            reconciler,
            pipeline,
            metrics,
            alerts,
            assurance,
            webhook,
        )
    finally:
        if webhook is not None:
            await webhook.close()
        for target in targets.values():
            await target.close()
        await http.close()
        await store.close()


#: The advisory lock whose holder runs the scheduled jobs, among replicas on PostgreSQL.
LEADER_LOCK = 7_263_002
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


def build_scheduler(
    runtime: Runtime, gate: Callable[[], Awaitable[bool]] | None = None
) -> Scheduler:
    """The scheduled jobs of a serving process, recorded in the store's runs."""
    assurance = runtime.assurance
    store = assurance.store

    async def start(job: str) -> int:
        return await store.start_run(job, now_utc(), RUNNER)

    async def finish(run_id: int, outcome: str, counts: dict[str, int], detail: str | None) -> None:
        await store.finish_run(run_id, now_utc(), outcome, counts, detail)

    scheduler = Scheduler((start, finish), gate)
    settings = runtime.settings
    if settings.reconcile.schedule:
        scheduler.add_cron("full-reconcile", settings.reconcile.schedule, assurance.full_reconcile)
    scheduler.add_interval(
        "verify-leavers", settings.sla.verify_every_seconds, assurance.verify_leavers
    )
    keep = timedelta(days=settings.retention.days)

    async def housekeeping() -> tuple[str, dict[str, int], str | None]:
        return await assurance.housekeeping(keep)

    scheduler.add_cron("housekeeping", "17 3 * * *", housekeeping)
    return scheduler


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Reconciler]:
    """The reconciler over the store and every configured target (for the CLI)."""
    async with open_runtime(settings) as runtime:
        yield runtime.reconciler


def rules_fingerprint(settings: Settings) -> str:
    """A digest of what decides grants: the rules and the targets they name."""
    document = {
        "rules": [rule.model_dump() for rule in settings.rules],
        "targets": sorted(settings.targets),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def replan_if_rules_changed(runtime: Runtime) -> None:
    """After a change of rules, every principal is planned again through the queue."""
    fingerprint = rules_fingerprint(runtime.settings)
    previous = await runtime.queue.get_state(RULES_FINGERPRINT)
    if previous == fingerprint:
        return
    count = await runtime.queue.enqueue_everyone(cause="rules.changed", now=now_utc())
    await runtime.queue.set_state(RULES_FINGERPRINT, fingerprint)
    if previous is not None:
        log.info("rules changed: %d principal(s) queued for a full reconciliation", count)


def _observer(metrics: Metrics) -> Observer:
    def observe(resource: str, method: str, status: int, seconds: float) -> None:
        metrics.scim_requests.labels(resource, method, str(status)).inc()
        metrics.scim_latency.labels(resource, method).observe(seconds)

    return observe


async def build_app(settings: Settings) -> web.Application:
    """The whole service as one aiohttp application; it owns the runtime and its workers."""
    auth = BearerAuth(settings.server.tokens_file)
    metrics_token = settings.server.metrics_token_file
    metrics_auth = BearerAuth(metrics_token) if metrics_token else None
    stack = contextlib.AsyncExitStack()
    runtime = await stack.enter_async_context(open_runtime(settings))
    app = build_scim_app(
        runtime.store,
        auth,
        base_path=settings.server.base_path,
        max_body_bytes=settings.server.max_body_bytes,
        page_limits=(settings.server.default_page_size, settings.server.max_page_size),
        clock=now_utc,
        public_url=settings.server.public_url,
        observer=_observer(runtime.metrics),
        metrics_auth=metrics_auth,
        on_auth_failure=AuthFailureWatch(
            runtime.alerts, settings.alerts.auth_failures_per_minute
        ).record,
    )
    background = runtime.tasks

    async def store_ready() -> str | None:
        try:
            await runtime.store.ping()
        except Exception as exc:
            return f"store unreachable: {exc}"
        return None

    async def workers_ready() -> str | None:
        task = background.get("pipeline")
        if task is None or task.done():
            return "workers are not running"
        return None

    leadership: list[LeaderLock] = []

    async def leader() -> bool:
        if not leadership:
            return True
        try:
            return await leadership[0].try_acquire()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot check scheduler leadership: %s", exc)
            return False

    scheduler = build_scheduler(runtime, leader)

    async def scheduler_ready() -> str | None:
        return None if scheduler.running else "scheduler is not running"

    checks = {"store": store_ready, "workers": workers_ready, "scheduler": scheduler_ready}
    app.add_routes(ops_routes(runtime.metrics, runtime.queue, checks))

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        if isinstance(runtime.store.db, PgDatabase):
            leadership.append(await runtime.store.db.acquire_leadership(LEADER_LOCK))
            stack.push_async_callback(leadership[0].close)
        await replan_if_rules_changed(runtime)
        if runtime.webhook is not None:
            runtime.webhook.start()
        background["pipeline"] = asyncio.create_task(
            runtime.pipeline.run(), name="jmlsync-pipeline"
        )
        scheduler.start()
        yield
        scheduler.shutdown()
        runtime.pipeline.stop()
        await background["pipeline"]
        await stack.aclose()

    app[RUNTIME] = runtime
    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests and work, and close cleanly."""
    app = await build_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port)
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info(
                "serving SCIM on http://%s:%s%s (store %s)",
                f"[{host}]" if ":" in host else host,
                port,
                settings.server.base_path,
                settings.store.url,
            )
        systemd.notify("READY=1")
        interval = systemd.watchdog_interval()
        watchdog = asyncio.create_task(systemd.keep_watchdog_fed(interval)) if interval else None
        await stop.wait()
        log.info("stopping")
        systemd.notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
    finally:
        await runner.cleanup()

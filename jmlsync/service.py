"""The composition root of ``serve``: the runtime (:mod:`jmlsync.runtime`) with the SCIM, API
and console applications and the scheduler on top; it owns their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
from aiohttp import web

from jmlsync import __version__
from jmlsync.api.access import access_part
from jmlsync.api.app import build_api, mount
from jmlsync.api.reviews import reviews_part
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.console.context import Checks, ConsolePorts
from jmlsync.domain.sessions import Timeouts
from jmlsync.engine.review_tasks import ReviewTasks
from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.ops import systemd
from jmlsync.ops.alert_delivery import webhook_url
from jmlsync.ops.alerts import AuthFailureWatch
from jmlsync.ops.forwarded import forwarded_middleware
from jmlsync.ops.http import ops_routes
from jmlsync.ops.http_server import DeadlineAppRunner
from jmlsync.ops.logs import redacted_url
from jmlsync.ops.metrics import Metrics
from jmlsync.ops.tls import ReloadingTls
from jmlsync.ports import (
    LeaderLease,
    OwnerLock,
)
from jmlsync.runtime import (
    RUNNER,
    Runtime,
    open_runtime_with_store,
    refusing_writes,
    replan_if_rules_changed,
    stop_delivery,
)
from jmlsync.scheduling import Scheduler
from jmlsync.scim.app import build_scim_app
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.keys import BODY_TIMEOUT, OPEN_EXTRA, SELF_AUTHENTICATED, Observer
from jmlsync.scim.last_used import LastUsed
from jmlsync.scim.schema import schema_set
from jmlsync.scim.throttle import AuthThrottle
from jmlsync.scim.unknown import IgnoredReporter
from jmlsync.scim.writes import Leniency
from jmlsync.store import lock as store_lock
from jmlsync.store.access import SqlAccess
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.queue import SqlQueue
from jmlsync.store.reviews import SqlReviews
from jmlsync.store.sessions import SqlSessions

log = logging.getLogger("jmlsync.service")

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")


#: The advisory lock whose holder runs the scheduled jobs, among replicas on PostgreSQL.
LEADER_LOCK = 7_263_002


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

        async def full_reconcile() -> tuple[str, dict[str, int], str | None]:
            # The run writes its own record, so a guard trip's alert commits with it.
            run = assurance.reconcile_run()
            run.runner = RUNNER
            return (await run.recorded(assurance.full_request())).result

        scheduler.add_cron(
            "full-reconcile", settings.reconcile.schedule, full_reconcile, records_itself=True
        )
    scheduler.add_interval(
        "verify-leavers", settings.sla.verify_every_seconds, assurance.verify_leavers
    )
    if settings.eligibility and runtime.timebound is not None:
        # Expiry is a stored time this job acts on (leader only), never an in-memory timer.
        scheduler.add_interval(
            "access-check", settings.access.expiry_check_seconds, runtime.timebound.check
        )
    keep = timedelta(days=settings.retention.days)

    async def housekeeping() -> tuple[str, dict[str, int], str | None]:
        return await assurance.housekeeping(keep)

    scheduler.add_cron("housekeeping", "17 3 * * *", housekeeping)
    if runtime.reviews is not None and settings.reviews:
        _review_jobs(scheduler, runtime, runtime.reviews)
    return scheduler


def _review_jobs(scheduler: Scheduler, runtime: Runtime, reviews: Reviews) -> None:
    """Campaigns that start on a schedule, and the review housekeeping (read revocations
    back, remind, act on deadlines) on the leaver-verification interval."""
    tasks = ReviewTasks(reviews, runtime.applier, alerts=runtime.alerts, clock=now_utc)
    scheduler.add_interval("reviews", runtime.settings.sla.verify_every_seconds, tasks.run)
    for review in runtime.settings.reviews:
        if review.schedule:

            async def start(name: str = review.name) -> tuple[str, dict[str, int], str | None]:
                campaign, items = await reviews.start(name, "scheduler")
                return "ok", {"items": len(items)}, campaign.id

            scheduler.add_cron(f"review-start:{review.name}", review.schedule, start)


def _observer(metrics: Metrics) -> Observer:
    def observe(resource: str, method: str, status: int, seconds: float) -> None:
        metrics.scim_requests.labels(resource, method, str(status)).inc()
        metrics.scim_latency.labels(resource, method).observe(seconds)

    return observe


def _leniency(settings: Settings, metrics: Metrics) -> Leniency:
    def ignored(resource: str, attribute: str) -> None:
        metrics.ignored_attributes.labels(resource, attribute).inc()

    def skipped(resource: str, count: int) -> None:
        metrics.skipped_members.labels(resource).inc(count)

    return Leniency(
        unknown_attributes=settings.scim.unknown_attributes,
        unknown_members=settings.scim.unknown_members,
        reporter=IgnoredReporter(ignored, skipped),
    )


def _api(timebound: TimeboundAccess, reviews: Reviews) -> web.Application:
    """The HTTP API (``/api/v1``) over the runtime's parts."""

    async def active(user_name: str) -> bool:
        person = await timebound.person(user_name)
        return person is not None and person.active

    parts = [access_part(timebound), reviews_part(reviews)]
    api = build_api(parts, timebound.access, clock=now_utc, active=active)
    # Its routes take personal tokens, never the SCIM tokens (see bearer_auth).
    api[SELF_AUTHENTICATED] = True
    return api


async def _stop_background(
    runtime: Runtime,
    background: dict[str, asyncio.Task[None]],
    used: LastUsed,
    scheduler: Scheduler,
) -> None:
    """Stop what the service started, in order: stop recording credential use (and save
    it), the scheduler, the workers (in-flight jobs finish within the grace time), then the
    alert delivery. Whatever did not start is skipped."""
    last_used = background.get("last_used")
    if last_used is not None:
        last_used.cancel()
        await asyncio.gather(last_used, return_exceptions=True)
        try:
            await used.flush()
        except Exception as exc:
            log.warning("cannot record when credentials were last used: %s", exc)
    if scheduler.running:
        scheduler.shutdown()
    runtime.pipeline.stop()
    if "pipeline" in background:
        await background["pipeline"]
    if "alerts" in background:
        await stop_delivery(runtime.deliverer, background["alerts"])


def console_ports(settings: Settings, store: SqlStore) -> ConsolePorts:
    """The console's ports on the store's database (its sessions are tables of their own)."""
    timeouts = Timeouts(
        idle=timedelta(seconds=settings.console.idle_timeout_seconds),
        absolute=timedelta(seconds=settings.console.absolute_timeout_seconds),
    )
    return ConsolePorts(
        directory=store,
        queue=SqlQueue(store.db),
        assurance=SqlAssurance(store.db),
        access=SqlAccess(store.db),
        assignments=SqlReviews(store.db),
        sessions=SqlSessions(store.db, timeouts),
    )


def _mount_console(
    app: web.Application, settings: Settings, runtime: Runtime, store: SqlStore, checks: Checks
) -> None:
    """Mount the console on the service's application under ``[console].base_path``, with its
    own (session) authentication instead of the SCIM bearer token."""
    from jmlsync.console.app import build_console_app  # Jinja2 only when the console is on

    base = settings.console.base_path

    async def to_root(_request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": base + "/"})

    app.router.add_get(base, to_root)  # before the sub-application, which would take it
    console = build_console_app(
        settings,
        console_ports(settings, store),
        runtime.reconciler,
        checks,
        timebound=runtime.timebound,
        reviews=runtime.reviews,
    )
    # Its own sessions authenticate it, decided by the route matched (never the path's text,
    # which `/console/../scim/v2/Users` could dress up).
    console[SELF_AUTHENTICATED] = True
    app.add_subapp(base, console)
    app[OPEN_EXTRA] = frozenset({base})


async def build_app(settings: Settings) -> web.Application:
    """The whole service as one aiohttp application; it owns the runtime and its workers."""
    auth = BearerAuth(settings.server.tokens_file)
    metrics_token = settings.server.metrics_token_file
    metrics_auth = BearerAuth(metrics_token) if metrics_token else None
    try:  # a service that cannot read its webhook fails now, not silently
        webhook_url(settings)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read [alerts].webhook_url_file: {exc.strerror}") from exc
    stack = contextlib.AsyncExitStack()
    runtime, sql_store = await stack.enter_async_context(open_runtime_with_store(settings))
    try:
        return _assemble(settings, runtime, sql_store, stack, auth, metrics_auth)
    except BaseException:
        await stack.aclose()
        raise


def _assemble(  # noqa: C901 - the composition root wires each optional part once
    settings: Settings,
    runtime: Runtime,
    sql_store: SqlStore,
    stack: contextlib.AsyncExitStack,
    auth: BearerAuth,
    metrics_auth: BearerAuth | None,
) -> web.Application:
    """The application over an opened runtime; its lifecycle closes ``stack``."""
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
        leniency=_leniency(settings, runtime.metrics),
        served=schema_set(settings.scim.extension_documents()),
        auth_throttle=AuthThrottle(
            settings.server.auth_failures_per_address, settings.server.auth_throttle_seconds
        ),
    )
    app[BODY_TIMEOUT] = settings.server.body_timeout_seconds
    if settings.server.trusted_proxies:
        # First, so that the error answers, the request log and the auth check all see the
        # client behind the proxy.
        app.middlewares.insert(0, forwarded_middleware(settings.server.trusted_proxies))
    background = runtime.tasks

    async def store_ready() -> str | None:
        try:
            await runtime.store.ping()
        except Exception as exc:
            return f"store unreachable: {exc}"
        return await refusing_writes(runtime)

    async def workers_ready() -> str | None:
        task = background.get("pipeline")
        if task is None or task.done():
            return "workers are not running"
        health = runtime.pipeline.health
        if health.since is not None:
            return (
                f"workers cannot use the store since {health.since:%Y-%m-%dT%H:%M:%SZ}:"
                f" {health.error}"
            )
        return None

    leadership: list[LeaderLease] = []

    async def leader() -> bool:
        if not leadership:
            return True
        try:
            return await leadership[0].try_acquire()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot check scheduler leadership: %s", exc)
            return False

    scheduler = build_scheduler(runtime, leader)

    async def scheduler_ready() -> str | None:
        return None if scheduler.running else "scheduler is not running"

    checks = {"store": store_ready, "workers": workers_ready, "scheduler": scheduler_ready}
    app.add_routes(
        ops_routes(
            runtime.metrics,
            runtime.queue,
            checks,
            runtime.alert_sink.outbox,
            targets=runtime.targets,
            may_see_reasons=lambda header: (
                auth.allows(header) or (metrics_auth is not None and metrics_auth.allows(header))
            ),
        )
    )
    if settings.console.enabled:
        _mount_console(app, settings, runtime, sql_store, checks)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        # What the service opened (the runtime, the replica locks) closes on every path: a
        # start that fails half-way as well as the stop.
        async with stack:
            owner_lock: OwnerLock | None = None
            if runtime.locks is not None:
                leadership.append(await runtime.locks.acquire_leadership(LEADER_LOCK))
                stack.push_async_callback(leadership[0].close)
                owner_lock = await runtime.locks.owner_lock(runtime.pipeline.owner_key)
                stack.push_async_callback(owner_lock.close)
            used = LastUsed(auth, runtime.state)
            try:
                await replan_if_rules_changed(runtime)
                if runtime.deliverer is not None:
                    runtime.deliverer.only_when(leader)
                    background["alerts"] = asyncio.create_task(
                        runtime.deliverer.run(), name="jmlsync-alert-delivery"
                    )
                background["pipeline"] = asyncio.create_task(
                    runtime.pipeline.run(owner_lock), name="jmlsync-pipeline"
                )
                background["last_used"] = asyncio.create_task(used.run(), name="jmlsync-last-used")
                scheduler.start()
                yield
            finally:
                await _stop_background(runtime, background, used, scheduler)

    if runtime.timebound is not None and runtime.reviews is not None:
        mount(app, _api(runtime.timebound, runtime.reviews))
    app[RUNTIME] = runtime
    app.cleanup_ctx.append(lifecycle)
    return app


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests and work, and close cleanly.

    On SQLite, the store's lock is held for the process's life: a second ``serve`` on the same
    file raises :class:`~jmlsync.store.lock.StoreLocked` before opening anything.
    """
    with contextlib.ExitStack() as held:
        if not settings.store.is_postgres:
            held.enter_context(store_lock.exclusive(settings.store.sqlite_path))
        await _serve(settings)


async def _serve(settings: Settings) -> None:
    server = settings.server
    tls = None
    if server.tls_certificate_file is not None and server.tls_key_file is not None:
        # Loaded before anything is opened: a bad certificate stops the start at once.
        tls = ReloadingTls(server.tls_certificate_file, server.tls_key_file)
    app = await build_app(settings)
    runner = DeadlineAppRunner(
        app,
        header_timeout=settings.server.header_timeout_seconds,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(
            runner, server.host, server.port, ssl_context=tls.context if tls else None
        )
        await site.start()
        for address in runner.addresses:
            host, port = address[0], address[1]
            log.info(
                "jmlsync %s serving SCIM on %s://%s:%s%s (store %s)",
                __version__,
                "https" if tls else "http",
                f"[{host}]" if ":" in host else host,
                port,
                server.base_path,
                redacted_url(settings.store.url),
                extra={"fields": {"version": __version__}},
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

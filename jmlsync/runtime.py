"""The runtime one process runs on: the store, the queue, the targets and the engine over
them, composed from the configuration. Every command opens it (``open_runtime``); ``serve``
adds the HTTP applications and the scheduler on top (:mod:`jmlsync.service`). Kept apart from
the web stack, so a command imports only what it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp

from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.domain.errors import StoreUnavailable
from jmlsync.engine.apply import Applier
from jmlsync.engine.assurance import Assurance
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.retry import RetryPolicy
from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.engine.worker import Pipeline, options_from
from jmlsync.ops.alert_delivery import Deliverer, deliver_before_exit, delivery_policy, webhook_url
from jmlsync.ops.alerts import Alerts, LogAlerts, OutboxAlerts
from jmlsync.ops.metrics import Metrics
from jmlsync.policy_config import (
    eligibilities_from_settings,
    review_definitions,
    rules_from_settings,
)
from jmlsync.ports import (
    Queue,
    ReplicaLocks,
    ServiceState,
    Store,
    Target,
    WriteHealth,
)
from jmlsync.store.access import SqlAccess
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.outbox import SqlOutbox
from jmlsync.store.postgres import PgTimeouts
from jmlsync.store.queue import SqlQueue
from jmlsync.store.reviews import SqlReviews
from jmlsync.targets.registry import open_target

#: The service's logger name, as its log lines have always carried it.
log = logging.getLogger("jmlsync.service")

RULES_FINGERPRINT = "rules_fingerprint"


async def open_store(settings: Settings) -> SqlStore:
    """The store named by ``[store].url`` (SQLite or PostgreSQL), migrated and ready."""
    store = settings.store
    if store.is_postgres:
        timeouts = PgTimeouts(
            connect=store.connect_timeout_seconds,
            command=store.command_timeout_seconds,
            acquire=store.acquire_timeout_seconds,
        )
        return await SqlStore.open_postgres(store.url, timeouts)
    return await SqlStore.open(settings.store.sqlite_path, synchronous=settings.store.synchronous)


@dataclass
class Runtime:
    """Everything one process runs on, by the ports it is used through: the store and the
    queue, the targets and the engine."""

    settings: Settings
    store: Store
    queue: Queue
    state: ServiceState
    health: WriteHealth
    #: The locks coordinating replicas that share the store (PostgreSQL), else None.
    locks: ReplicaLocks | None
    targets: dict[str, Target]
    applier: Applier
    reconciler: Reconciler
    pipeline: Pipeline
    metrics: Metrics
    alerts: Alerts
    assurance: Assurance
    alert_sink: OutboxAlerts
    deliverer: Deliverer | None = None
    timebound: TimeboundAccess | None = None
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    reviews: Reviews | None = None


def retry_policy(settings: Settings) -> RetryPolicy:
    pipeline = settings.pipeline
    return RetryPolicy(
        attempts=pipeline.call_attempts,
        total_seconds=pipeline.call_max_seconds,
        initial_wait=pipeline.call_initial_wait_seconds,
        max_wait=pipeline.call_max_wait_seconds,
    )


def _alert_sinks(
    settings: Settings, store: SqlStore, http: aiohttp.ClientSession
) -> tuple[OutboxAlerts, Deliverer | None]:
    """The outbox sink, and its deliverer when a webhook is configured (and this process can
    read its URL: a command that cannot leaves its alerts to the service)."""
    outbox = SqlOutbox(store.db)
    unreadable = False
    try:
        url = webhook_url(settings)
    except OSError as exc:
        log.error("cannot read [alerts].webhook_url_file: %s", exc.strerror)
        url, unreadable = None, True
    deliverer = None
    if url is not None:
        deliverer = Deliverer(
            outbox, http, url, owner=RUNNER, clock=now_utc, policy=delivery_policy(settings)
        )
    sink = OutboxAlerts(
        outbox,
        clock=now_utc,
        dedupe=timedelta(seconds=settings.alerts.dedupe_seconds),
        routed=deliverer is not None or unreadable,
        on_written=deliverer.wake if deliverer is not None else None,
    )
    return sink, deliverer


async def stop_delivery(deliverer: Deliverer | None, task: asyncio.Task[None]) -> None:
    """Let the alert post in progress settle (bounded), then stop delivering."""
    if deliverer is not None:
        deliverer.stop()
        await asyncio.wait({task}, timeout=deliverer.stop_grace)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _deliver_before_exit(runtime: Runtime) -> None:
    """A command that raised alerts delivers them before it exits (a serving process leaves
    them to its delivery task)."""
    if "alerts" not in runtime.tasks:
        await deliver_before_exit(runtime.deliverer, runtime.alert_sink.written)


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the store and every configured target; close them all on exit."""
    async with open_runtime_with_store(settings) as (runtime, _store):
        yield runtime


@asynccontextmanager
async def open_runtime_with_store(settings: Settings) -> AsyncIterator[tuple[Runtime, SqlStore]]:
    """The runtime, and the concrete store under it (for the adapters that keep tables of
    their own on its database: the console). Everything opened is closed on every path."""
    async with contextlib.AsyncExitStack() as stack:
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        stack.push_async_callback(http.close)
        targets: dict[str, Target] = {}
        for name, target_settings in settings.targets.items():
            target = await open_target(name, target_settings, http=http)
            stack.push_async_callback(target.close)
            targets[name] = target
        runtime = _compose(settings, store, targets, http)
        try:
            yield runtime, store
        finally:
            await _deliver_before_exit(runtime)


def _compose(
    settings: Settings, store: SqlStore, targets: dict[str, Target], http: aiohttp.ClientSession
) -> Runtime:
    """Build the engine over the opened store and targets (nothing here opens anything)."""
    queue = SqlQueue(store.db)
    metrics = Metrics()
    outbox, deliverer = _alert_sinks(settings, store, http)
    alerts = Alerts(LogAlerts(), outbox)
    protected = settings.safety.protected_users
    rules = rules_from_settings(settings)
    review_store = SqlReviews(store.db)
    eligibilities = eligibilities_from_settings(settings)
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
    timebound = TimeboundAccess(
        store,
        SqlAccess(store.db),
        eligibilities,
        rules,
        applier=applier,
        alerts=alerts,
        clock=now_utc,
        end_limit=timedelta(seconds=settings.access.end_seconds),
        admins=settings.access.admins,
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
        reviews=review_store,
        timebound=timebound,
    )
    store.db.on_commit(pipeline.wake)
    reconciler = Reconciler(
        store,
        targets,
        rules,
        applier=applier,
        protected=protected,
        reviews=review_store,
        timebound=timebound,
    )
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
        drift_alert_limit=settings.alerts.drift_alerts_per_run,
    )
    return Runtime(
        settings,
        store,
        queue,
        queue,
        store.write_health,
        store.replica_locks(),
        targets,
        applier,
        reconciler,
        pipeline,
        metrics,
        alerts,
        assurance,
        outbox,
        deliverer,
        timebound=timebound,
        reviews=Reviews(
            store,
            review_store,
            reconciler,
            review_definitions(settings),
            alerts=alerts,
            clock=now_utc,
        ),
    )


#: Who runs: this host and process (run records, alert delivery, leases).
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Reconciler]:
    """The reconciler over the store and every configured target (for the CLI)."""
    async with open_runtime(settings) as runtime:
        yield runtime.reconciler


def rules_fingerprint(settings: Settings) -> str:
    """A digest of what decides grants: the rules and the targets they name."""
    document: dict[str, object] = {
        "rules": [rule.model_dump() for rule in settings.rules],
        "targets": sorted(settings.targets),
    }
    if settings.eligibility:
        # Only when configured: a service without eligibility keeps its old fingerprint.
        document["eligibility"] = [item.model_dump() for item in settings.eligibility]
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


async def replan_if_rules_changed(runtime: Runtime) -> None:
    """After a change of rules, every principal is planned again through the queue."""
    fingerprint = rules_fingerprint(runtime.settings)
    previous = await runtime.state.get_state(RULES_FINGERPRINT)
    if previous == fingerprint:
        return
    count = await runtime.queue.enqueue_everyone(cause="rules.changed", now=now_utc())
    await runtime.state.set_state(RULES_FINGERPRINT, fingerprint)
    if previous is not None:
        log.info("rules changed: %d principal(s) queued for a full reconciliation", count)


#: The service-state row a probe write touches: a write that changes nothing anyone reads.
STORE_PROBE = "store_probe"


async def probe_write(state: ServiceState) -> None:
    """Write one harmless row, to learn whether the store takes writes (StoreUnavailable
    when it does not)."""
    await state.set_state(STORE_PROBE, now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


async def refusing_writes(runtime: Runtime) -> str | None:
    """Why the store refuses writes, or None. While it has been refusing, a probe write
    finds out whether it recovered, so readiness does not wait for the next real write."""
    health = runtime.health
    if health.refusing:
        with contextlib.suppress(StoreUnavailable):
            await probe_write(runtime.state)
    since = health.since
    if since is not None:
        return f"store refuses writes since {since:%Y-%m-%dT%H:%M:%SZ}: {health.error}"
    return None

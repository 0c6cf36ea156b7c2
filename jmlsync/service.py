"""The composition root: builds the store and the SCIM application, and runs them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from jmlsync.config import Settings
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.rules import rules_from_settings
from jmlsync.ports import Target
from jmlsync.scim.app import build_scim_app
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.resources import now_utc
from jmlsync.store.sqlite import SqliteStore
from jmlsync.targets.registry import open_target

log = logging.getLogger("jmlsync.service")


async def open_store(settings: Settings) -> SqliteStore:
    """The store named by ``[store].url``, migrated and ready."""
    return await SqliteStore.open(
        settings.store.sqlite_path, synchronous=settings.store.synchronous
    )


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Reconciler]:
    """The store, every configured target and the reconciler over them; closed on exit."""
    store = await open_store(settings)
    targets: dict[str, Target] = {}
    try:
        for name, target_settings in settings.targets.items():
            targets[name] = await open_target(name, target_settings)
        yield Reconciler(store, targets, rules_from_settings(settings), clock=now_utc)
    finally:
        for target in targets.values():
            await target.close()
        await store.close()


async def build_app(settings: Settings) -> web.Application:
    """The whole service as one aiohttp application; it owns and closes its store."""
    auth = BearerAuth(settings.server.tokens_file)
    store = await open_store(settings)
    app = build_scim_app(
        store,
        auth,
        base_path=settings.server.base_path,
        max_body_bytes=settings.server.max_body_bytes,
        page_limits=(settings.server.default_page_size, settings.server.max_page_size),
        clock=now_utc,
        public_url=settings.server.public_url,
    )

    async def store_lifecycle(_app: web.Application) -> AsyncIterator[None]:
        yield
        await store.close()

    app.cleanup_ctx.append(store_lifecycle)
    return app


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking requests and close cleanly."""
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
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()

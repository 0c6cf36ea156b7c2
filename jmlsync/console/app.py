"""The web console as an aiohttp application, mounted under ``[console].base_path`` of the
service: server-rendered pages (Jinja2 through aiohttp-jinja2), no JavaScript."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources

import aiohttp_jinja2
import jinja2
from aiohttp import web

from jmlsync.config import Settings
from jmlsync.console.context import Checks, Console, ConsolePorts
from jmlsync.console.features import access as access_pages
from jmlsync.console.features import evidence, home, overview, person
from jmlsync.console.features import reviews as review_pages
from jmlsync.console.keys import BASE, CONSOLE
from jmlsync.console.oidc import OidcClient
from jmlsync.console.pages import Feature, add_features
from jmlsync.console.security import console_middleware
from jmlsync.console.signin import signin_routes
from jmlsync.engine.reconcile import Reconciler
from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess
from jmlsync.report.sla import build as sla

#: Every feature's pages, in the navigation's order.
FEATURES: tuple[Feature, ...] = (
    home.FEATURE,
    overview.FEATURE,
    person.FEATURE,
    access_pages.FEATURE,
    review_pages.FEATURE,
    evidence.FEATURE,
)

_STYLESHEET = resources.files("jmlsync.console").joinpath("static/console.css").read_bytes()


async def stylesheet(_request: web.Request) -> web.Response:
    """The one stylesheet."""
    return web.Response(
        body=_STYLESHEET, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


def read_client_secret(settings: Settings) -> str | None:
    """The client secret from ``[console.oidc].client_secret_file`` (OSError if unreadable)."""
    path = settings.console.oidc.client_secret_file
    if path is None:
        return None
    try:
        secret = path.read_text("utf-8").strip()
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot read [console.oidc].client_secret_file {path}: {exc.strerror}"
        ) from exc
    if not secret:
        raise OSError(f"[console.oidc].client_secret_file {path} is empty")
    return secret


def build_console_app(
    settings: Settings,
    ports: ConsolePorts,
    reconciler: Reconciler,
    checks: Checks,
    *,
    timebound: TimeboundAccess | None = None,
    reviews: Reviews | None = None,
) -> web.Application:
    """The console application (to mount with ``add_subapp`` at the base path), over the
    ports the composition root built."""
    secret = read_client_secret(settings)
    app = web.Application(middlewares=[console_middleware])
    app[BASE] = settings.console.base_path
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("jmlsync.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = sla.format_seconds
    env.filters["percent"] = sla.format_percent
    env.filters["iso"] = sla.iso_z

    oidc = OidcClient(settings.console.oidc, secret)
    app[CONSOLE] = Console(
        settings=settings,
        ports=ports,
        reconciler=reconciler,
        checks=checks,
        oidc=oidc,
        timebound=timebound,
        reviews=reviews,
    )

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await oidc.open()
        yield
        await oidc.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/static/console.css", stylesheet)
    app.add_routes(signin_routes())
    add_features(app, FEATURES)
    return app

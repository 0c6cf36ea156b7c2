"""The page registry: each feature of the console is a module exposing ``FEATURE``, a
:class:`Feature` with its pages; :func:`add_features` routes them behind one authorisation
check and one layout. A new feature (time-bound access, reviews) is a new module added to
:data:`jmlsync.console.app.FEATURES`, nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from jmlsync.console.authz import may, require
from jmlsync.console.context import Viewer, viewer_of
from jmlsync.console.keys import BASE, FEATURES_KEY

#: A page's handler: the template's context, or a response of its own (a redirect).
PageHandler = Callable[[web.Request, Viewer], Awaitable["dict[str, Any] | web.StreamResponse"]]


@dataclass(frozen=True)
class Page:
    """One route of the console: who may open it and how it is shown."""

    path: str
    title: str
    template: str
    handler: PageHandler
    #: Roles that may open it (any one); empty: every signed-in person.
    roles: frozenset[str]
    method: str = "GET"
    #: Shown in the navigation (to those who may open it).
    nav: bool = True


@dataclass(frozen=True)
class Feature:
    """A group of pages, e.g. ``overview`` or ``access``."""

    name: str
    pages: tuple[Page, ...]


def navigation(request: web.Request) -> list[dict[str, Any]]:
    """The pages the viewer may open, for the layout's navigation."""
    viewer = viewer_of(request)
    if viewer is None:
        return []
    base = request.app[BASE]
    return [
        {
            "title": page.title,
            "url": f"{base}{page.path}",
            "current": request.path == f"{base}{page.path}",
        }
        for feature in request.app[FEATURES_KEY]
        for page in feature.pages
        if page.nav and page.method == "GET" and may(viewer, page.roles)
    ]


def layout_context(request: web.Request) -> dict[str, Any]:
    """What every template's layout needs: the viewer, the navigation, the base path."""
    viewer = viewer_of(request)
    return {
        "viewer": viewer,
        "csrf_token": viewer.csrf_token if viewer else "",
        "nav": navigation(request),
        "base": request.app[BASE],
    }


def render(
    request: web.Request, template: str, context: dict[str, Any], status: int = 200
) -> web.Response:
    """A page in the shared layout."""
    return aiohttp_jinja2.render_template(
        template, request, {**layout_context(request), **context}, status=status
    )


def _route(page: Page) -> web.RouteDef:
    async def handle(request: web.Request) -> web.StreamResponse:
        viewer = require(request, page.roles)
        result = await page.handler(request, viewer)
        if isinstance(result, web.StreamResponse):
            return result
        return render(request, page.template, {"title": page.title, **result})

    return web.route(page.method, page.path, handle)


def add_features(app: web.Application, features: Sequence[Feature]) -> None:
    """Route every page of ``features`` and remember them for the navigation."""
    app[FEATURES_KEY] = tuple(features)
    app.add_routes([_route(page) for feature in features for page in feature.pages])

"""Paths as admins type them: a trailing slash, ``//`` after the base path, ``/users``.

An IdP's base URL ending in ``/`` makes every request ``.../scim/v2//Users``; some admins type
``/users``. Refusing those with 404 stops provisioning for the whole tenant, so the service
reads them as the canonical path (RFC 7644 names ``/Users``; nothing else lives at the others).
"""

from __future__ import annotations

import re
from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_urldispatcher import MatchInfoError

_SLASHES = re.compile(r"/{2,}")
_CANONICAL = {
    name.lower(): name
    for name in ("Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas", ".search")
}


def canonical_path(path: str, base: str) -> str:
    """``path`` (under ``base``) with slashes collapsed, no trailing slash, and the endpoint
    names in their RFC 7644 case; any other path unchanged."""
    if path != base and not path.startswith(base + "/"):
        return path
    rest = _SLASHES.sub("/", path[len(base) :]).rstrip("/")
    parts = rest.split("/")
    # parts[0] is "" (rest starts with "/"); then the endpoint, an id or .search, ...
    for index in (1, 2):
        if index < len(parts) and (index == 1 or parts[index].lower() == ".search"):
            parts[index] = _CANONICAL.get(parts[index].lower(), parts[index])
    return base + "/".join(parts)


def allow_header(response: web.StreamResponse, request: web.Request) -> None:
    """Name the allowed methods on a 405 (RFC 9110 §15.5.6)."""
    error = request.match_info.http_exception
    if response.status == 405 and isinstance(error, web.HTTPMethodNotAllowed):
        response.headers["Allow"] = ", ".join(sorted(error.allowed_methods))


def tolerant_paths(base: str) -> Middleware:
    """A middleware, first of the application's: a path that matches no route is routed
    again in its canonical form, through the middlewares after this one (authentication
    included), so its request log and metrics name the canonical path; 405s get ``Allow``."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        routed = request
        if isinstance(request.match_info, MatchInfoError):
            fixed = canonical_path(request.rel_url.raw_path, base)
            if fixed != request.rel_url.raw_path:
                url = request.rel_url.with_path(fixed, encoded=True, keep_query=True)
                clone = request.clone(rel_url=url)
                match = await request.app.router.resolve(clone)
                if not isinstance(match.http_exception, web.HTTPNotFound):
                    match.add_app(request.app)
                    clone._match_info = match
                    routed, handler = clone, _chain(request.app, middleware, match.handler)
        response = await handler(routed)
        allow_header(response, routed)
        return response

    return middleware


def _chain(app: web.Application, outer: Middleware, handler: Handler) -> Handler:
    """``handler`` wrapped in the application's middlewares that come after ``outer``."""
    middlewares = list(app.middlewares)
    for inner in reversed(middlewares[middlewares.index(outer) + 1 :]):
        handler = partial(inner, handler=handler)
    return handler

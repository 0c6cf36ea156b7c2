"""The console's one middleware: the session, CSRF, security headers and HTML error pages.

Every response gets ``Content-Security-Policy`` (nothing but our own stylesheet, no script at
all), ``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer`` (the callback's URL holds
an authorization code). Every request that is not GET or HEAD must carry the session's CSRF
token in its form, else 403, whatever the route.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from jmlsync.clock import now_utc
from jmlsync.console.authz import roles_of
from jmlsync.console.context import VIEWER_KEY, Viewer, viewer_of
from jmlsync.console.keys import BASE, CONSOLE
from jmlsync.console.pages import render
from jmlsync.domain.errors import StoreUnavailable

log = logging.getLogger("jmlsync.console")

SESSION_COOKIE = "jmlsync_console"
LOGIN_COOKIE = "jmlsync_console_login"
#: Paths (under the base path) open without a session.
PUBLIC = frozenset({"/login", "/login/start", "/callback", "/static/console.css"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def relative_path(request: web.Request) -> str:
    """The request's path under the console's base path."""
    return request.path[len(request.app[BASE]) :] or "/"


async def _load_viewer(request: web.Request) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return
    console = request.app[CONSOLE]
    session = await console.ports.sessions.get(token, now_utc())
    if session is None:
        return
    roles = await roles_of(
        console.ports.directory,
        session.user_name,
        console.settings,
        timebound=console.timebound,
        reviews=console.reviews,
        assignments=console.ports.assignments,
    )
    if roles is None:  # deactivated or deleted since sign-in: the session ends now
        await console.ports.sessions.delete(token)
        return
    request[VIEWER_KEY] = Viewer(session.user_name, roles, session, token)


async def _check_csrf(request: web.Request) -> None:
    viewer = viewer_of(request)
    form = await request.post()
    sent = form.get("csrf_token")
    if (
        viewer is None
        or not isinstance(sent, str)
        or not hmac.compare_digest(sent.encode(), viewer.csrf_token.encode())
    ):
        raise web.HTTPForbidden(reason="the form's CSRF token is missing or wrong")


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    await _load_viewer(request)
    if request.method not in _SAFE_METHODS:
        await _check_csrf(request)
    if viewer_of(request) is None and relative_path(request) not in PUBLIC:
        if request.method in _SAFE_METHODS:
            target = quote(request.path_qs, safe="")
            raise web.HTTPFound(f"{request.app[BASE]}/login?next={target}")
        raise web.HTTPForbidden(reason="sign in first")
    return await handler(request)


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    try:
        return render(
            request, "error.html", {"title": f"Error {status}", "message": message}, status
        )
    except Exception:  # the page itself failed (the store went away mid-render)
        return web.Response(status=status, text=message, content_type="text/plain")


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions, CSRF and headers for every console request; errors as HTML pages."""
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if 300 <= exc.status < 400:
            response = web.Response(status=exc.status, headers=exc.headers)
        else:
            messages = {403: "You may not do this.", 404: "There is no such page."}
            reason = exc.reason if exc.status == 403 and exc.reason != "Forbidden" else None
            response = _error_page(
                request, exc.status, reason or messages.get(exc.status, exc.reason)
            )
    except StoreUnavailable:
        response = _error_page(request, 503, "The store is unavailable; try again shortly.")
        response.headers["Retry-After"] = "5"
    except Exception:
        log.exception("console error on %s %s", request.method, request.path)
        response = _error_page(request, 500, "Something went wrong; it has been logged.")
    response.headers.update(HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")  # pages hold personal data
    return response


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    name: str,
    value: str,
    max_age: int,
) -> None:
    """A console cookie: HttpOnly, SameSite=Lax, Secure unless ``insecure_http``, scoped
    to the base path."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=request.app[BASE],
        httponly=True,
        secure=not request.app[CONSOLE].settings.console.insecure_http,
        samesite="Lax",
    )

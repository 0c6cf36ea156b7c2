"""Sign-in (OpenID Connect, authorization code with PKCE) and sign-out routes.

The ``state`` goes to the issuer and, as a short-lived cookie, stays with the browser: the
callback needs both, so a callback URL sent to someone else signs them in as nobody (login
CSRF). The nonce and the PKCE verifier never leave the store.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import quote

from aiohttp import web

from jmlsync.audit import AuditEntry
from jmlsync.clock import now_utc
from jmlsync.console.authz import roles_of
from jmlsync.console.context import viewer_of
from jmlsync.console.keys import BASE, CONSOLE
from jmlsync.console.oidc import Pending, SignInError, new_pending
from jmlsync.console.pages import render
from jmlsync.console.security import LOGIN_COOKIE, SESSION_COOKIE, set_cookie
from jmlsync.domain.directory import format_timestamp

log = logging.getLogger("jmlsync.console")

_LOGIN_SECONDS = 900


def _next_path(request: web.Request, value: str | None) -> str:
    """Where to go after sign-in: only a path of the console (no open redirect)."""
    base = request.app[BASE]
    if value and value.startswith(base + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return base + "/"


def redirect(location: str) -> web.Response:
    """A 302 to ``location`` that can carry cookies."""
    return web.Response(status=302, headers={"Location": location})


def redirect_uri(request: web.Request) -> str:
    """The callback URL registered at the identity provider."""
    settings = request.app[CONSOLE].settings
    root = settings.console.public_url or settings.server.public_url
    if not root:
        root = f"{request.scheme}://{request.host}"
    return f"{root.rstrip('/')}{request.app[BASE]}/callback"


def _audit(action: str, user: str, outcome: str, detail: str | None) -> AuditEntry:
    return AuditEntry(
        at=format_timestamp(now_utc()),
        actor=user,
        action=action,
        subject=f"user {user}",
        outcome=outcome,
        detail=detail,
    )


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    """The page people without a session land on: one link to the identity provider."""
    if viewer_of(request) is not None:
        raise web.HTTPFound(_next_path(request, request.query.get("next")))
    back = quote(_next_path(request, request.query.get("next")), safe="")
    start = f"{request.app[BASE]}/login/start?next={back}"
    return render(
        request,
        "signin.html",
        {
            "title": "Sign in",
            "start": start,
            "signed_out": "signed_out" in request.query,
            "issuer": request.app[CONSOLE].settings.console.oidc.issuer,
        },
    )


def _refused(request: web.Request, status: int, message: str) -> web.Response:
    return render(
        request,
        "signin.html",
        {"title": "Sign-in refused", "error": message, "start": f"{request.app[BASE]}/login/start"},
        status=status,
    )


async def start(request: web.Request) -> web.StreamResponse:
    """Send the browser to the issuer, with state, nonce and a PKCE challenge."""
    console = request.app[CONSOLE]
    if console.oidc is None:
        return _refused(request, 503, "Sign-in is not configured.")
    pending = new_pending()
    try:
        url = await console.oidc.authorization_url(pending, redirect_uri(request))
    except SignInError as exc:
        log.warning("console sign-in cannot start: %s", exc)
        return _refused(request, 502, "The identity provider cannot be reached; try again.")
    await console.ports.sessions.begin_login(
        pending.state,
        pending.nonce,
        pending.verifier,
        _next_path(request, request.query.get("next")),
        now_utc(),
    )
    response = redirect(url)
    set_cookie(response, request, LOGIN_COOKIE, pending.state, _LOGIN_SECONDS)
    return response


async def _claims(request: web.Request) -> tuple[dict[str, Any], str]:
    console = request.app[CONSOLE]
    query = request.query
    if "error" in query:
        raise SignInError(f"the identity provider said: {query['error'][:100]}")
    state, code = query.get("state", ""), query.get("code", "")
    kept = request.cookies.get(LOGIN_COOKIE, "")
    if not state or not code or not hmac.compare_digest(state.encode(), kept.encode()):
        raise SignInError("this sign-in was not started in this browser")
    found = await console.ports.sessions.take_login(state, now_utc())
    if found is None or console.oidc is None:
        raise SignInError("this sign-in is unknown or too old")
    nonce, verifier, return_to = found
    claims = await console.oidc.exchange(
        code, Pending(state, nonce, verifier), redirect_uri(request)
    )
    return claims, return_to


async def callback(request: web.Request) -> web.StreamResponse:
    """Finish the sign-in: verify the ID token, match the person, open a session."""
    console = request.app[CONSOLE]
    oidc = console.settings.console.oidc
    try:
        claims, return_to = await _claims(request)
    except SignInError as exc:
        log.warning("console sign-in refused: %s", exc)
        return _refused(request, 403, f"Sign-in refused: {exc}.")
    claimed = claims.get(oidc.username_claim)
    if not isinstance(claimed, str) or not claimed:
        log.warning("console sign-in refused: no %s claim", oidc.username_claim)
        return _refused(
            request, 403, f"Sign-in refused: the ID token has no {oidc.username_claim}."
        )
    user = await console.ports.directory.find_user(claimed)
    user_name = str(user.doc["userName"]) if user is not None else claimed
    roles = (
        None
        if user is None
        else await roles_of(
            console.ports.directory,
            user_name,
            console.settings,
            timebound=console.timebound,
            reviews=console.reviews,
            assignments=console.ports.assignments,
        )
    )
    if roles is None:
        why = "unknown" if user is None else "inactive"
        await console.ports.sessions.audit(
            _audit("console.sign-in", user_name, "refused", f"{why} user")
        )
        log.warning("console sign-in refused for %s: %s user", user_name, why)
        return _refused(
            request, 403, "Sign-in refused: you are not an active user of the directory."
        )
    detail = f"sub={claims.get('sub')}"
    if oidc.groups_claim and isinstance(claims.get(oidc.groups_claim), list):
        detail += f" groups={','.join(map(str, claims[oidc.groups_claim]))}"
    keep: dict[str, Any] = {k: claims[k] for k in ("sub", "iss", "name", "email") if k in claims}
    token = await console.ports.sessions.create(
        user_name, keep, now_utc(), _audit("console.sign-in", user_name, "ok", detail)
    )
    log.info("console sign-in: %s", user_name, extra={"fields": {"user": user_name}})
    response = redirect(return_to)
    set_cookie(
        response,
        request,
        SESSION_COOKIE,
        token,
        int(console.ports.sessions.timeouts.absolute.total_seconds()),
    )
    response.del_cookie(LOGIN_COOKIE, path=request.app[BASE])
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session (the middleware has checked its CSRF token)."""
    viewer = viewer_of(request)
    console = request.app[CONSOLE]
    if viewer is not None:
        await console.ports.sessions.delete(
            viewer.token, _audit("console.sign-out", viewer.user_name, "ok", None)
        )
        log.info("console sign-out: %s", viewer.user_name)
    response = redirect(f"{request.app[BASE]}/login?signed_out=1")
    response.del_cookie(SESSION_COOKIE, path=request.app[BASE])
    return response


def signin_routes() -> list[web.RouteDef]:
    """The sign-in, callback and sign-out routes (under the base path)."""
    return [
        web.get("/login", sign_in_page),
        web.get("/login/start", start),
        web.get("/callback", callback),
        web.post("/logout", sign_out),
    ]

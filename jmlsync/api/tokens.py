"""Personal API tokens: random, shown once, stored only as their SHA-256, with an expiry.

A token names one directory user (the actor of every call made with it) and one scope
(``access`` for time-bound access, ``reviews`` for access reviews). It never authorises
SCIM, and SCIM bearer tokens never authorise the API: the two are checked by different
middlewares against different stores.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from aiohttp.typedefs import Middleware

from jmlsync.api.problems import Handler, Problem
from jmlsync.ports import AccessStore

#: Marks a personal token, so a leaked one is recognised for what it is.
PREFIX = "jmlp_"
SCOPES = ("access", "reviews")


def new_token() -> tuple[str, str]:
    """A new token: (plaintext to show once, hash to store)."""
    plaintext = PREFIX + secrets.token_urlsafe(32)
    return plaintext, hash_token(plaintext)


def hash_token(plaintext: str) -> str:
    """The stored form of a token (SHA-256, hex): 256 random bits need no slow hash."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class ApiUser:
    """Who calls: the token's directory user, the token's id and its scope."""

    user: str
    token_id: int
    scope: str

    @property
    def label(self) -> str:
        """The actor in audit rows."""
        return f"{self.user} (token #{self.token_id})"


API_USER: web.RequestKey[ApiUser] = web.RequestKey("api_user", ApiUser)

#: Whether a userName names an active directory user (a leaver's tokens stop working).
ActiveUser = Callable[[str], Awaitable[bool]]


def token_auth(
    tokens: AccessStore,
    clock: Callable[[], datetime],
    active: ActiveUser,
    open_paths: frozenset[str],
) -> Middleware:
    """A middleware requiring a valid personal token on every path but ``open_paths``; it
    puts the acting user on the request (:data:`API_USER`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Problem(401, "a personal API token is required (jmlsync token generate --user)")
        row = await tokens.token_by_hash(hash_token(presented.strip()))
        now = clock()
        if row is None or row.revoked_at is not None or row.expires_at <= now:
            raise Problem(401, "the token is unknown, expired or revoked")
        if not await active(row.user_name):
            raise Problem(401, f"{row.user_name} is not an active directory user")
        request[API_USER] = ApiUser(row.user_name, row.id, row.scope)
        return await handler(request)

    return middleware


def caller(request: web.Request, scope: str) -> ApiUser:
    """The caller, when their token carries ``scope``; else 403."""
    user = request[API_USER]
    if user.scope != scope:
        raise Problem(403, f"the token's scope is {user.scope!r}, not {scope!r}")
    return user

"""The keys of the SCIM application's state (aiohttp ``web.AppKey``), in one place.

The service sets them when it builds the application; the middlewares and handlers read them.
The HTTP API and the console keep the keys of their own sub-applications in theirs
(:mod:`jmlsync.api.keys`, :mod:`jmlsync.console.keys`); the composition root keeps its one key,
``RUNTIME``, beside the ``Runtime`` it names.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web

from jmlsync.ports import Store
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.schema import SchemaSet
from jmlsync.scim.throttle import AuthThrottle
from jmlsync.scim.writes import Leniency

STORE: web.AppKey[Store] = web.AppKey("store")
BASE_PATH = web.AppKey("base_path", str)
PUBLIC_URL = web.AppKey("public_url", str)
PAGE_LIMITS: web.AppKey[tuple[int, int]] = web.AppKey("page_limits")
Clock = Callable[[], datetime]
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
#: The resource types and schemas served, declared extensions included.
SERVED = web.AppKey("served", SchemaSet)
LENIENCY = web.AppKey("leniency", Leniency)
#: Seconds a client has to send the whole body once its headers are in; None waits forever.
BODY_TIMEOUT: web.AppKey[float | None] = web.AppKey("body_timeout")

AUTH = web.AppKey("auth", BearerAuth)
METRICS_AUTH = web.AppKey("metrics_auth", BearerAuth)
#: Marks a sub-application that authenticates its own callers (the HTTP API: personal
#: tokens, never the SCIM tokens). Decided by the route matched, never by the path's text.
SELF_AUTHENTICATED: web.AppKey[bool] = web.AppKey("self_authenticated", bool)
#: Exact paths open besides the health endpoints (the console's redirect to its own page;
#: the console itself is a sub-application marked :data:`SELF_AUTHENTICATED`).
OPEN_EXTRA: web.AppKey[frozenset[str]] = web.AppKey("open_extra", frozenset)
#: Called once per request with (resource, method, status, seconds), e.g. to count it.
Observer = Callable[[str, str, int, float], None]
OBSERVER: web.AppKey[Observer] = web.AppKey("observer")
#: Called with the client address on every request refused for its token.
ON_AUTH_FAILURE: web.AppKey[Callable[[str], None]] = web.AppKey("on_auth_failure")
THROTTLE = web.AppKey("auth_throttle", AuthThrottle)

"""The SCIM 2.0 service provider as an aiohttp application: routes, auth and error translation."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web

from jmlsync.audit import ACTOR
from jmlsync.domain.errors import (
    DomainError,
    DuplicateUserName,
    InvalidFilterError,
    ResourceNotFound,
    StoreUnavailable,
    UnknownMembers,
    VersionMismatch,
)
from jmlsync.domain.text import printable
from jmlsync.ports import Store
from jmlsync.scim import handlers
from jmlsync.scim.auth import BearerAuth
from jmlsync.scim.errors import (
    InvalidFilter,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ScimError,
    TooManyRequests,
    Unauthorized,
    Uniqueness,
)
from jmlsync.scim.handlers import ResourceEndpoints, scim_response, search_root
from jmlsync.scim.intake import storable_target
from jmlsync.scim.keys import (
    AUTH,
    BASE_PATH,
    CLOCK,
    LENIENCY,
    METRICS_AUTH,
    OBSERVER,
    ON_AUTH_FAILURE,
    OPEN_EXTRA,
    PAGE_LIMITS,
    PUBLIC_URL,
    SELF_AUTHENTICATED,
    SERVED,
    STORE,
    THROTTLE,
    Observer,
)
from jmlsync.scim.schema import BUILT_IN, SchemaSet
from jmlsync.scim.throttle import AuthThrottle
from jmlsync.scim.tolerant import tolerant_paths
from jmlsync.scim.writes import Leniency

log = logging.getLogger("jmlsync.scim")

#: The longest User-Agent a request log line carries (a client chooses it, and its length).
USER_AGENT_CHARS = 200

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
_OPS_LABELS = frozenset({"healthz", "readyz", "metrics"})

#: The request's actor (``scim:LABEL``), once its credential is accepted.
REQUEST_ACTOR = web.RequestKey("actor", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _translate(exc: Exception) -> ScimError:
    """The SCIM error a domain error or an aiohttp HTTP error stands for."""
    if isinstance(exc, ScimError):
        return exc
    if isinstance(exc, ResourceNotFound):
        return NotFound(str(exc))
    if isinstance(exc, DuplicateUserName):
        return Uniqueness(str(exc))
    if isinstance(exc, VersionMismatch):
        return PreconditionFailed(str(exc))
    if isinstance(exc, UnknownMembers):
        return InvalidValue(f"members: {exc}")
    if isinstance(exc, InvalidFilterError):
        return InvalidFilter(str(exc))
    if isinstance(exc, StoreUnavailable):
        # The detail stays generic: the store's own message may name its host or path.
        return ScimError("the store is unavailable; nothing was changed, retry later", status=503)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("request body exceeds the configured [server].max_body_bytes")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method {exc.method} is not allowed here")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint")
    if isinstance(exc, web.HTTPException):
        return ScimError(exc.reason, status=exc.status)
    return InvalidValue(str(exc))


def _request_id(request: web.Request) -> str:
    """The caller's X-Request-Id when it is sane, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    if 0 < len(given) <= 64 and _SAFE_ID.fullmatch(given):
        return given
    return os.urandom(8).hex()


def _resource_label(request: web.Request) -> str:
    """A bounded label for metrics: Users, Groups, discovery, search, healthz, readyz, metrics
    or other."""
    base = request.app[BASE_PATH]
    if not request.path.startswith(base):
        # Only known routes become labels: any other path would add series without bound.
        head = request.path.strip("/")
        return head if head in _OPS_LABELS else "other"
    head = request.path[len(base) :].strip("/").split("/")[0]
    if head in ("Users", "Groups"):
        return head
    if head in ("ServiceProviderConfig", "ResourceTypes", "Schemas"):
        return "discovery"
    return "search" if head == ".search" else "other"


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (ScimError, DomainError, web.HTTPClientError) as exc:
        error = _translate(exc)
        headers = {}
        if isinstance(error, Unauthorized):
            auth = request.app.get(AUTH)
            basic = ', Basic realm="jmlsync"' if auth is not None and auth.basic_enabled else ""
            headers["WWW-Authenticate"] = 'Bearer realm="jmlsync"' + basic
        if isinstance(exc, StoreUnavailable):
            # Logged once per outage by the store; each request only gets its request line.
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return scim_response(error.body(), error.status, **headers)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return scim_response(ScimError("internal error", status=500).body(), 500)


@web.middleware
async def scim_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure as a SCIM Error body; log and count one line per request."""
    started = time.perf_counter()
    request_id = _request_id(request)
    response = await _answer(request, handler)
    seconds = time.perf_counter() - started
    response.headers["X-Request-Id"] = request_id
    resource = _resource_label(request)
    observe = request.app.get(OBSERVER)
    if observe is not None:
        observe(resource, request.method, response.status, seconds)
    log.info(
        "%s %s %s",
        request.method,
        request.path,
        response.status,
        extra={
            "fields": {
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "resource": resource,
                "status": response.status,
                "duration_ms": round(seconds * 1000, 2),
                "client": request.remote or "unknown",
                "user_agent": printable(request.headers.get("User-Agent", ""), USER_AGENT_CHARS),
                **({"actor": request[REQUEST_ACTOR]} if REQUEST_ACTOR in request else {}),
            }
        },
    )
    return response


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require a valid credential (bearer, or Basic when the tokens file holds Basic ones)
    everywhere but on the open health endpoints and the routes of a sub-application marked
    :data:`SELF_AUTHENTICATED` (the HTTP API under ``/api/v1``, whose own middleware takes
    personal tokens only, and the console, with its sessions); the request then acts as
    ``scim:LABEL``.

    /metrics also takes the separate metrics token, when one is configured. A refusal is
    logged at warning with the client address (never the credential).
    """
    if any(app.get(SELF_AUTHENTICATED, False) for app in request.match_info.apps[1:]):
        return await handler(request)
    if request.path in OPEN_PATHS or request.path in request.app.get(OPEN_EXTRA, frozenset()):
        return await handler(request)
    header = request.headers.get("Authorization")
    credential = await request.app[AUTH].identify(header)
    if credential is not None:
        actor = f"scim:{credential.label}"
        request[REQUEST_ACTOR] = actor
        token = ACTOR.set(actor)
        try:
            return await handler(request)
        finally:
            ACTOR.reset(token)
    metrics_auth = request.app.get(METRICS_AUTH)
    if request.path == "/metrics" and metrics_auth is not None and metrics_auth.allows(header):
        return await handler(request)
    remote = request.remote or "unknown"
    scheme = (header or "").partition(" ")[0].lower()
    # Only a known scheme is named: an unknown first word may be a token sent without one.
    scheme = scheme if scheme in ("bearer", "basic") else "missing or unknown"
    log.warning(
        "refused %s credentials from %s on %s %s",
        scheme,
        remote,
        request.method,
        request.path,
        extra={"fields": {"remote": remote, "path": request.path, "scheme": scheme}},
    )
    on_failure = request.app.get(ON_AUTH_FAILURE)
    if on_failure is not None:
        on_failure(remote)
    throttle = request.app.get(THROTTLE)
    wait = throttle.refused(remote) if throttle is not None else None
    if wait is not None:
        error = TooManyRequests("too many requests with a bad token from this address")
        return scim_response(error.body(), error.status, **{"Retry-After": str(wait)})
    raise Unauthorized("a valid bearer token is required")


def _discovery_routes(base: str) -> list[web.RouteDef]:
    return [
        web.get(f"{base}/ServiceProviderConfig", handlers.service_provider_config),
        web.get(f"{base}/ResourceTypes", handlers.resource_types),
        web.get(f"{base}/ResourceTypes/{{id}}", handlers.resource_type),
        web.get(f"{base}/Schemas", handlers.schemas),
        web.get(f"{base}/Schemas/{{id}}", handlers.schema),
    ]


def _resource_routes(base: str, served: SchemaSet) -> list[web.RouteDef]:
    routes = []
    for resource_type in served.resource_types.values():
        endpoints = ResourceEndpoints(resource_type)
        path = f"{base}{resource_type.endpoint}"
        routes += [
            web.get(path, endpoints.list_resources, allow_head=False),
            web.post(path, endpoints.create),
            web.post(f"{path}/.search", endpoints.search_resources),
            web.get(f"{path}/{{id}}", endpoints.get, allow_head=False),
            web.put(f"{path}/{{id}}", endpoints.replace),
            web.patch(f"{path}/{{id}}", endpoints.patch),
            web.delete(f"{path}/{{id}}", endpoints.delete),
        ]
    routes.append(web.post(f"{base}/.search", search_root))
    return routes


def build_scim_app(
    store: Store,
    auth: BearerAuth,
    *,
    base_path: str,
    max_body_bytes: int,
    page_limits: tuple[int, int],
    clock: Callable[[], datetime],
    public_url: str | None = None,
    observer: Observer | None = None,
    metrics_auth: BearerAuth | None = None,
    on_auth_failure: Callable[[str], None] | None = None,
    leniency: Leniency | None = None,
    served: SchemaSet = BUILT_IN,
    auth_throttle: AuthThrottle | None = None,
) -> web.Application:
    """The application serving SCIM under ``base_path`` and ``/healthz``.

    ``leniency`` says what to do with attributes and members nobody declared (``[scim]``);
    by default they are ignored and skipped. ``served`` holds the resource types with the
    declared extension schemas.

    The caller may add routes (readiness, metrics) before the application starts; they get
    the same authentication, error answers and request log.
    """
    app = web.Application(
        middlewares=[tolerant_paths(base_path), scim_errors, bearer_auth, storable_target],
        client_max_size=max_body_bytes,
    )
    if observer is not None:
        app[OBSERVER] = observer
    if metrics_auth is not None:
        app[METRICS_AUTH] = metrics_auth
    if on_auth_failure is not None:
        app[ON_AUTH_FAILURE] = on_auth_failure
    if auth_throttle is not None:
        app[THROTTLE] = auth_throttle
    app[STORE] = store
    app[AUTH] = auth
    app[BASE_PATH] = base_path
    app[PUBLIC_URL] = (public_url or "").rstrip("/")
    app[PAGE_LIMITS] = page_limits
    app[CLOCK] = clock
    app[LENIENCY] = leniency or Leniency()
    app[SERVED] = served
    app.router.add_get("/healthz", handlers.healthz, allow_head=True)
    app.add_routes(_discovery_routes(base_path))
    app.add_routes(_resource_routes(base_path, served))
    return app

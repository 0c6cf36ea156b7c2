"""The API application, mounted under ``/api/v1`` of the service (an aiohttp sub-application
with its own middlewares: JSON problem bodies, then personal-token authentication)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from aiohttp import web

from jmlsync.api.openapi import PREFIX, ApiPart, document
from jmlsync.api.problems import Problem, problems
from jmlsync.api.tokens import ActiveUser, token_auth
from jmlsync.ports import AccessStore

OPENAPI_PATH = "/openapi.json"


def build_api(
    parts: Sequence[ApiPart],
    tokens: AccessStore,
    *,
    clock: Callable[[], datetime],
    active: ActiveUser,
) -> web.Application:
    """The sub-application of every part; mount it with ``app.add_subapp(PREFIX, api)``."""
    api = web.Application(
        middlewares=[
            problems,
            token_auth(tokens, clock, active, frozenset({PREFIX + OPENAPI_PATH})),
        ]
    )
    spec = document(parts)

    async def openapi(_request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def unknown(request: web.Request) -> web.Response:
        raise Problem(404, f"no endpoint {request.method} {request.path}")

    api.router.add_get(OPENAPI_PATH, openapi, allow_head=False)
    for part in parts:
        part.setup(api)
        api.add_routes(part.routes)
    # Last: anything else under the prefix is a JSON 404, not a page of the SCIM adapter.
    api.router.add_route("*", "/{tail:.*}", unknown)
    return api


def mount(app: web.Application, api: web.Application) -> None:
    """Mount the API under ``/api/v1`` of the service's application."""
    app.add_subapp(PREFIX, api)

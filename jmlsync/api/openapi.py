"""The API as parts, one per feature, and the OpenAPI 3.1 document assembled from them.

A part brings its routes, its paths and schemas of the document, the token scope its calls
need, and how it sets up the application (its keys). :func:`jmlsync.api.app.build_api`
mounts every part under ``/api/v1`` behind one token middleware.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from jmlsync import __version__

PREFIX = "/api/v1"

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}


def problem(description: str) -> dict[str, Any]:
    """A response of the document carrying a JSON problem body."""
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


#: The error answers every authenticated operation may give.
COMMON_ERRORS: dict[str, Any] = {
    "400": problem("The body or a parameter is malformed."),
    "401": problem("No valid personal token."),
    "403": problem("The token's user may not do this."),
    "503": problem("The store is unavailable; nothing was changed."),
}


@dataclass(frozen=True)
class ApiPart:
    """One feature's share of the API (paths relative to ``/api/v1``)."""

    name: str
    scope: str
    routes: Sequence[web.RouteDef]
    paths: Mapping[str, Any]
    schemas: Mapping[str, Any] = field(default_factory=dict)
    setup: Callable[[web.Application], None] = lambda _app: None


def document(parts: Sequence[ApiPart]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every part."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    for part in parts:
        paths.update({f"{PREFIX}{path}": item for path, item in part.paths.items()})
        schemas.update(part.schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jmlsync API",
            "version": __version__,
            "description": "Time-bound access and access reviews over HTTP. Authenticate with a"
            " personal token from `jmlsync token generate --user USERNAME --scope SCOPE`;"
            " the token's user is the actor of every call. SCIM bearer tokens are not"
            " accepted here.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "personalToken": {"type": "http", "scheme": "bearer", "bearerFormat": "jmlp_..."}
            },
        },
        "security": [{"personalToken": []}],
        "tags": [{"name": part.name} for part in parts],
    }

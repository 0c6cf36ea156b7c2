"""JSON problem bodies (RFC 9457) for every API error: one middleware translates them."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jmlsync.domain.errors import StoreUnavailable
from jmlsync.domain.timebound import AccessRefused, NotAllowed, RequestNotFound

log = logging.getLogger("jmlsync.api")

PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(Exception):
    """An API error: its HTTP status, a short title and the detail for the caller."""

    def __init__(self, status: int, detail: str, *, title: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "error")


_TITLES = {
    400: "bad request",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "payload too large",
    415: "unsupported media type",
    422: "refused",
    503: "unavailable",
}


def problem_response(problem: Problem, **headers: str) -> web.Response:
    """The problem as an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    return web.Response(
        status=problem.status,
        text=json.dumps(body),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def _translate(exc: Exception) -> tuple[Problem, dict[str, str]]:
    if isinstance(exc, Problem):
        headers = {"WWW-Authenticate": 'Bearer realm="jmlsync-api"'} if exc.status == 401 else {}
        return exc, headers
    if isinstance(exc, RequestNotFound):
        return Problem(404, str(exc)), {}
    if isinstance(exc, NotAllowed):
        return Problem(403, str(exc)), {}
    if isinstance(exc, AccessRefused):
        return Problem(422, str(exc)), {}
    if isinstance(exc, StoreUnavailable):
        retry = str(max(1, round(exc.retry_after)))
        return Problem(503, "the store is unavailable; nothing was changed"), {"Retry-After": retry}
    if isinstance(exc, web.HTTPException):
        return Problem(exc.status, exc.reason), {}
    raise exc


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure under the API with a JSON problem body; never a bare 500 page."""
    try:
        return await handler(request)
    except Exception as exc:
        try:
            problem, headers = _translate(exc)
        except Exception:
            log.exception("internal error on %s %s", request.method, request.path)
            problem, headers = Problem(500, "internal error"), {}
        return problem_response(problem, **headers)

"""What a request may carry: a body read in bounded time and depth, and only storable text.

Every refusal is a SCIM error answered before anything is read from or written to the store, so a
hostile request changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jmlsync.domain.text import MAX_JSON_DEPTH, bad_string, too_deep, unstorable
from jmlsync.scim.errors import InvalidSyntax, InvalidValue, ScimError
from jmlsync.scim.keys import BODY_TIMEOUT

UNSTORABLE = "U+0000 or a lone surrogate"


class RequestTimeout(ScimError):
    """The body did not arrive in time."""

    status = 408


class ClientDisconnected(ScimError):
    """The client went away before sending the whole body; nobody reads this answer."""

    status = 400


async def _read_body(request: web.Request) -> bytes:
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT)):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout("the request body did not arrive in time") from None
    except (ConnectionError, web.RequestPayloadError) as exc:
        raise ClientDisconnected(f"the client did not send the whole body: {exc}") from None


async def read_json(request: web.Request) -> Any:
    """The request body as JSON.

    Malformed JSON, or arrays and objects nested deeper than
    :data:`~jmlsync.domain.text.MAX_JSON_DEPTH`, is a 400 invalidSyntax; a string (or key)
    holding U+0000 or a lone surrogate is a 400 invalidValue.
    """
    raw = await _read_body(request)
    try:
        body = json.loads(raw)
    except RecursionError:
        raise InvalidSyntax(f"request body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSyntax(f"request body is not valid JSON: {exc}") from exc
    if too_deep(body):
        raise InvalidSyntax(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    if _may_be_unstorable(raw) and bad_string(body) is not None:
        # The value itself is never echoed: it may be a password.
        raise InvalidValue(f"request body holds a string with {UNSTORABLE}")
    return body


def _may_be_unstorable(raw: bytes) -> bool:
    """False when no string in the (valid JSON) body can hold U+0000 or a surrogate.

    Strict JSON has no raw control characters and strict UTF-8 no encoded surrogates, so only
    a ``\\u`` escape (or another encoding) can carry them: the walk is skipped for most bodies.
    """
    if b"\\u" in raw:
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def storable_target(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a path or query parameter holding U+0000 (a lone surrogate cannot get there:
    the URL is decoded strictly)."""
    if unstorable(request.path) or any(
        unstorable(k) or unstorable(v) for k, v in request.query.items()
    ):
        raise InvalidValue(f"the request path or query holds {UNSTORABLE}")
    return await handler(request)

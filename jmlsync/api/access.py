"""``/api/v1/access-requests``: time-bound access over HTTP (create, list, get, approve, deny,
end, extend), the same domain rules and audit rows as the ``access`` commands; the caller is
the personal token's user."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web

from jmlsync.api.keys import TIMEBOUND
from jmlsync.api.openapi import COMMON_ERRORS, ApiPart, problem
from jmlsync.api.problems import Problem
from jmlsync.api.tokens import caller
from jmlsync.domain.timebound import parse_duration
from jmlsync.engine.timebound import Actor, TimeboundAccess
from jmlsync.report.access import request_json

SCOPE = "access"
STATES = ("pending", "approved", "active", "ended", "verified", "denied", "cancelled", "timed_out")
#: The largest id a request can have (both stores keep ids in 64 bits; JSON clients in 53).
MAX_ID = 2**53
MAX_TEXT = 1000


def _actor(request: web.Request) -> Actor:
    user = caller(request, SCOPE)
    return Actor(user.label, user.user)


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise Problem(404, f"no access request {text!r}")
    return int(text)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, "the body must be a JSON object") from exc
    if not isinstance(body, dict):
        raise Problem(400, "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise Problem(400, f"{key!r} is required")
        return None
    if not isinstance(value, str):
        raise Problem(400, f"{key!r} must be a string")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise Problem(400, f"{key!r} is too long or holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Problem(400, f"{key!r} is not valid text") from exc
    return value


def _duration(body: dict[str, Any]) -> timedelta:
    text = _text(body, "duration", required=True) or ""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise Problem(400, f"duration: {exc}") from exc


def _answer(made: Any, status: int = 200) -> web.Response:
    return web.json_response(request_json(made), status=status)


async def create(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = await _body(request)
    grant = _text(body, "grant", required=True) or ""
    target, sep, role = grant.partition("/")
    if not sep or not target or not role:
        raise Problem(400, f"grant: expected TARGET/ROLE, got {grant!r}")
    duration = _duration(body)
    made = await request.app[TIMEBOUND].request(
        actor,
        target,
        role,
        duration=duration,
        reason=_text(body, "reason") or "",
        ticket=_text(body, "ticket"),
    )
    response = _answer(made, 201)
    response.headers["Location"] = f"{request.path.rstrip('/')}/{made.id}"
    return response


async def list_requests(request: web.Request) -> web.Response:
    actor = _actor(request)
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise Problem(400, f"state: one of {', '.join(STATES)}")
    mine = request.query.get("mine", "false")
    if mine not in ("true", "false"):
        raise Problem(400, "mine: true or false")
    found = await request.app[TIMEBOUND].access.find(
        states=[state] if state else None, user=actor.user if mine == "true" else None
    )
    return web.json_response({"requests": [request_json(r) for r in found]})


async def get_request(request: web.Request) -> web.Response:
    _actor(request)
    timebound = request.app[TIMEBOUND]
    found = await timebound.get(_id(request))
    return web.json_response(request_json(found, await timebound.access.history(found.id)))


async def approve(request: web.Request) -> web.Response:
    return _answer(await request.app[TIMEBOUND].approve(_actor(request), _id(request)))


async def deny(request: web.Request) -> web.Response:
    actor = _actor(request)
    number = _id(request)
    reason = _text(await _body(request), "reason", required=True) or ""
    return _answer(await request.app[TIMEBOUND].deny(actor, number, reason))


async def end(request: web.Request) -> web.Response:
    return _answer(await request.app[TIMEBOUND].end(_actor(request), _id(request)))


async def extend(request: web.Request) -> web.Response:
    actor = _actor(request)
    number = _id(request)
    duration = _duration(await _body(request))
    return _answer(await request.app[TIMEBOUND].extend(actor, number, duration))


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _ok(description: str, ref: str = "AccessRequest", status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        },
        **COMMON_ERRORS,
        "404": problem("No such access request."),
        "422": problem("Refused by the lifecycle rules; nothing was changed."),
    }


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
}
_NULLABLE_TEXT = {"type": ["string", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "AccessRequest": {
        "type": "object",
        "required": ["id", "state", "user", "grant", "expires_at", "approvals"],
        "properties": {
            "id": {"type": "integer"},
            "state": {"type": "string", "enum": list(STATES)},
            "user": {"type": "string"},
            "grant": {"type": "string"},
            "target": {"type": "string"},
            "role": {"type": "string"},
            "eligibility": {"type": "string"},
            "privileged": {"type": "boolean"},
            "duration_seconds": {"type": "integer"},
            "reason": {"type": "string"},
            "ticket": _NULLABLE_TEXT,
            **{
                key: _TIME
                for key in (
                    "created_at",
                    "approved_at",
                    "started_at",
                    "expires_at",
                    "ended_at",
                    "revoked_at",
                    "verified_at",
                    "breached_at",
                )
            },
            "ended_by": _NULLABLE_TEXT,
            "end_reason": _NULLABLE_TEXT,
            "denied_by": _NULLABLE_TEXT,
            "denial_reason": _NULLABLE_TEXT,
            "extension_seconds": {"type": ["integer", "null"]},
            "approvals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "approver": {"type": "string"},
                        "at": {"type": "string"},
                        "round": {"type": "integer"},
                    },
                },
            },
            "history": {"type": "array", "items": {"type": "object"}},
        },
    },
    "AccessRequestList": {
        "type": "object",
        "required": ["requests"],
        "properties": {
            "requests": {"type": "array", "items": {"$ref": "#/components/schemas/AccessRequest"}}
        },
    },
    "NewAccessRequest": {
        "type": "object",
        "required": ["grant", "duration"],
        "properties": {
            "grant": {"type": "string", "description": "TARGET/ROLE", "example": "aws/123/Admin"},
            "duration": {"type": "string", "example": "2h"},
            "reason": {"type": "string"},
            "ticket": {"type": "string"},
        },
    },
    "Denial": {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": {"type": "string", "minLength": 1}},
    },
    "Extension": {
        "type": "object",
        "required": ["duration"],
        "properties": {"duration": {"type": "string", "example": "1h"}},
    },
}


def _action(operation_id: str, summary: str, body: str | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": ["access"],
        "summary": summary,
        "parameters": [_ID],
        "responses": _ok("The request after the step."),
    }
    if body is not None:
        operation["requestBody"] = _json_body(body)
    return {"post": operation}


PATHS: dict[str, Any] = {
    "/access-requests": {
        "post": {
            "operationId": "createAccessRequest",
            "tags": ["access"],
            "summary": "Request a time-bound grant for the token's user.",
            "requestBody": _json_body("NewAccessRequest"),
            "responses": _ok("The new request.", status="201"),
        },
        "get": {
            "operationId": "listAccessRequests",
            "tags": ["access"],
            "summary": "List requests, oldest first.",
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "schema": {"type": "string", "enum": list(STATES)},
                },
                {
                    "name": "mine",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
            ],
            "responses": _ok("The requests.", "AccessRequestList"),
        },
    },
    "/access-requests/{id}": {
        "get": {
            "operationId": "getAccessRequest",
            "tags": ["access"],
            "summary": "One request with its whole history.",
            "parameters": [_ID],
            "responses": _ok("The request."),
        }
    },
    "/access-requests/{id}/approve": _action(
        "approveAccessRequest", "Approve (as the token's user)."
    ),
    "/access-requests/{id}/deny": _action("denyAccessRequest", "Deny with a reason.", "Denial"),
    "/access-requests/{id}/end": _action(
        "endAccessRequest", "End the grant now, or cancel a request not started."
    ),
    "/access-requests/{id}/extend": _action(
        "extendAccessRequest", "Ask for more time; needs the approvals again.", "Extension"
    ),
}


def access_part(timebound: TimeboundAccess) -> ApiPart:
    """The time-bound access part of the API."""

    def setup(app: web.Application) -> None:
        app[TIMEBOUND] = timebound

    routes = [
        web.post("/access-requests", create),
        web.get("/access-requests", list_requests, allow_head=False),
        web.get("/access-requests/{id}", get_request, allow_head=False),
        web.post("/access-requests/{id}/approve", approve),
        web.post("/access-requests/{id}/deny", deny),
        web.post("/access-requests/{id}/end", end),
        web.post("/access-requests/{id}/extend", extend),
    ]
    return ApiPart("access", SCOPE, routes, PATHS, SCHEMAS, setup)


__all__ = ["access_part"]

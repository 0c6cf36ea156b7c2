"""``/api/v1/reviews``: access-review campaigns over HTTP (list, one campaign with its items,
decide items), with the same domain checks and audit rows as ``review decide``; the reviewer
is the personal token's user.

A reviewer sees the items they may decide (assigned to them, or to a group they are in, never
their own access); an admin of the campaign (``[[reviews]].admins``) sees every item.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from typing import Any

from aiohttp import web

from jmlsync.api.keys import REVIEWS
from jmlsync.api.openapi import COMMON_ERRORS, ApiPart, problem
from jmlsync.api.problems import Problem
from jmlsync.api.tokens import ApiUser, caller
from jmlsync.domain.reviews import (
    DECISIONS,
    Campaign,
    DecisionError,
    DecisionRow,
    NotReviewer,
    may_decide,
)
from jmlsync.engine.reviews import ReviewError, Reviews
from jmlsync.report.review_evidence import CampaignView, campaign_json, export_rows
from jmlsync.report.review_views import campaign_view

SCOPE = "reviews"
#: Campaign ids are a ``[[reviews]]`` name (``[A-Za-z0-9_.-]+``) and a start time.
CAMPAIGN_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_ID = 2**53
MAX_TEXT = 1000
#: The most decisions one call records (a campaign's reviewer rarely has more).
MAX_DECISIONS = 1000


def _is_admin(reviews: Reviews, campaign: Campaign, user: ApiUser) -> bool:
    definition = reviews.definitions.get(campaign.name)
    return definition is not None and user.user.casefold() in definition.admins


async def _campaign(request: web.Request) -> Campaign:
    text = request.match_info["campaign"]
    if CAMPAIGN_ID.fullmatch(text) is None:
        raise Problem(404, f"no campaign {text!r}")
    try:
        return await request.app[REVIEWS].campaign(text)
    except ReviewError as exc:
        raise Problem(404, str(exc)) from exc


Groups = dict[str, frozenset[str]]


async def _visible(
    reviews: Reviews, campaign: Campaign, user: ApiUser, known: dict[str, Groups] | None = None
) -> tuple[CampaignView, bool]:
    """The campaign with the items ``user`` may see, and whether they are its admin
    (``known``: reviewing groups already read in this call, by campaign name)."""
    view = await campaign_view(reviews, campaign.id)
    if _is_admin(reviews, campaign, user):
        return view, True
    known = {} if known is None else known
    if campaign.name not in known:
        # One directory read per definition, not per campaign: a list has many of each.
        known[campaign.name] = await reviews.reviewer_groups(campaign)
    groups = known[campaign.name]
    mine = [item for item in view.items if may_decide(item, user.user, groups)]
    ids = {item.id for item in mine}
    return (
        replace(
            view,
            items=mine,
            decisions={k: v for k, v in view.decisions.items() if k in ids},
            remediations={k: v for k, v in view.remediations.items() if k in ids},
            exceptions={k: v for k, v in view.exceptions.items() if k in ids},
        ),
        False,
    )


def _detail(view: CampaignView, admin: bool) -> dict[str, Any]:
    return {"campaign": {**campaign_json(view), "admin": admin}, "items": export_rows(view)}


async def list_campaigns(request: web.Request) -> web.Response:
    user = caller(request, SCOPE)
    reviews = request.app[REVIEWS]
    found = []
    known: dict[str, Groups] = {}
    for campaign in await reviews.reviews.campaigns():
        view, admin = await _visible(reviews, campaign, user, known)
        found.append(
            {
                **asdict(campaign),
                "state": "closed" if campaign.closed_at else "open",
                "admin": admin,
                "assigned": len(view.items),
                "undecided": len(view.items) - len(view.decisions),
            }
        )
    return web.json_response({"campaigns": found})


async def get_campaign(request: web.Request) -> web.Response:
    user = caller(request, SCOPE)
    campaign = await _campaign(request)
    view, admin = await _visible(request.app[REVIEWS], campaign, user)
    return web.json_response(_detail(view, admin))


def _text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Problem(400, f"{where}: {key!r} must be a string")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise Problem(400, f"{where}: {key!r} is too long or holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Problem(400, f"{where}: {key!r} is not valid text") from exc
    return value


def _rows(body: Any, user: ApiUser) -> list[DecisionRow]:
    """The body's decisions as rows of a decisions file, the token's user as reviewer."""
    if not isinstance(body, list) or not 0 < len(body) <= MAX_DECISIONS:
        raise Problem(400, f"the body must be a JSON list of 1 to {MAX_DECISIONS} decisions")
    rows = []
    for number, entry in enumerate(body, 1):
        where = f"row {number}"
        if not isinstance(entry, dict):
            raise Problem(400, f"{where}: expected an object")
        item_id = entry.get("item_id")
        if isinstance(item_id, bool) or not isinstance(item_id, int) or not 0 < item_id <= MAX_ID:
            raise Problem(400, f"{where}: 'item_id' must be a positive integer")
        decision = entry.get("decision")
        if decision not in DECISIONS:
            raise Problem(400, f"{where}: 'decision' must be one of {', '.join(DECISIONS)}")
        reviewer = _text(entry, "reviewer", where)
        if reviewer is not None and reviewer.casefold() != user.user.casefold():
            raise Problem(403, f"{where}: the reviewer is the token's user, {user.user}")
        rows.append(
            DecisionRow(
                number,
                item_id,
                "keep" if decision == "keep" else "revoke",
                user.user,
                _text(entry, "comment", where) or "",
            )
        )
    return rows


async def decide(request: web.Request) -> web.Response:
    user = caller(request, SCOPE)
    campaign = await _campaign(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, "the body must be a JSON list of decisions") from exc
    rows = _rows(body, user)
    reviews = request.app[REVIEWS]
    try:
        recorded, jobs = await reviews.decide_rows(campaign.id, rows, imported_by=user.label)
    except NotReviewer as exc:
        raise Problem(403, f"{exc}; nothing was recorded") from exc
    except (DecisionError, ReviewError) as exc:
        raise Problem(422, f"{exc}; nothing was recorded") from exc
    view, _admin = await _visible(reviews, campaign, user)
    decided = {row.item_id for row in rows}
    items = [row for row in export_rows(view) if row["item_id"] in decided]
    return web.json_response({"recorded": recorded, "jobs": jobs, "items": items})


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


_CAMPAIGN = {
    "name": "campaign",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,200}$"},
}
_TEXT = {"type": ["string", "null"]}
_INT = {"type": ["integer", "null"]}
_BOOL = {"type": ["boolean", "null"]}

SCHEMAS: dict[str, Any] = {
    "ReviewCampaignSummary": {
        "type": "object",
        "required": ["id", "name", "started_at", "deadline", "items", "state", "assigned"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "deadline": {"type": "string", "format": "date-time"},
            "snapshot_sha256": {"type": "string"},
            "audit_seq": _INT,
            "items": {"type": "integer", "description": "Items in the whole campaign."},
            "closed_at": _TEXT,
            "reminded_at": _TEXT,
            "state": {"type": "string", "enum": ["open", "closed"]},
            "admin": {"type": "boolean", "description": "The token's user is an admin."},
            "assigned": {"type": "integer", "description": "Items the token's user sees."},
            "undecided": {"type": "integer"},
        },
    },
    "ReviewCampaignList": {
        "type": "object",
        "required": ["campaigns"],
        "properties": {
            "campaigns": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ReviewCampaignSummary"},
            }
        },
    },
    "ReviewItem": {
        "type": "object",
        "required": ["item_id", "target", "role", "user", "source", "reviewer", "decision"],
        "properties": {
            "item_id": {"type": "integer"},
            "campaign": {"type": "string"},
            "snapshot_at": {"type": "string"},
            "target": {"type": "string"},
            "role": {"type": "string"},
            "privileged": {"type": "boolean"},
            "user": {"type": "string"},
            "display_name": _TEXT,
            "active": _BOOL,
            "manager": _TEXT,
            "source": {"type": "string"},
            "source_kind": {"type": "string"},
            "source_rule": _INT,
            "source_group": _TEXT,
            "granted_at": _TEXT,
            "reviewer": _TEXT,
            "decision": {"type": ["string", "null"], "enum": ["keep", "revoke", None]},
            "decided_by": _TEXT,
            "decided_at": _TEXT,
            "comment": _TEXT,
            "imported_by": _TEXT,
            "late": _BOOL,
            "job": _INT,
            "requested_at": _TEXT,
            "revoked_at": _TEXT,
            "verified_at": _TEXT,
            "exception": _INT,
            "exception_lifted_at": _TEXT,
            "remove_in_idp": _TEXT,
        },
    },
    "ReviewCampaign": {
        "type": "object",
        "required": ["campaign", "items"],
        "properties": {
            "campaign": {
                "type": "object",
                "description": "The campaign; its counts cover the items shown.",
            },
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ReviewItem"}},
        },
    },
    "ReviewDecision": {
        "type": "object",
        "required": ["item_id", "decision"],
        "properties": {
            "item_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "decision": {"type": "string", "enum": list(DECISIONS)},
            "comment": {"type": "string", "maxLength": MAX_TEXT},
            "reviewer": {
                "type": "string",
                "description": "Optional; when given, the token's user.",
            },
        },
    },
    "ReviewDecisions": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_DECISIONS,
        "items": {"$ref": "#/components/schemas/ReviewDecision"},
    },
    "ReviewDecisionResult": {
        "type": "object",
        "required": ["recorded", "jobs", "items"],
        "properties": {
            "recorded": {"type": "integer"},
            "jobs": {"type": "integer", "description": "Revocation jobs queued."},
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/ReviewItem"}},
        },
    },
}

_NO_CAMPAIGN = problem("No such campaign.")

PATHS: dict[str, Any] = {
    "/reviews": {
        "get": {
            "operationId": "listReviewCampaigns",
            "tags": ["reviews"],
            "summary": "Every campaign, oldest first, with the token's user's share of it.",
            "responses": {
                "200": {"description": "The campaigns.", "content": _json("ReviewCampaignList")},
                **COMMON_ERRORS,
            },
        }
    },
    "/reviews/{campaign}": {
        "get": {
            "operationId": "getReviewCampaign",
            "tags": ["reviews"],
            "summary": "One campaign with the items the token's user may decide (all: admins).",
            "parameters": [_CAMPAIGN],
            "responses": {
                "200": {"description": "The campaign.", "content": _json("ReviewCampaign")},
                **COMMON_ERRORS,
                "404": _NO_CAMPAIGN,
            },
        }
    },
    "/reviews/{campaign}/decisions": {
        "post": {
            "operationId": "decideReviewItems",
            "tags": ["reviews"],
            "summary": "Decide items as the token's user: all are recorded, or none.",
            "parameters": [_CAMPAIGN],
            "requestBody": {"required": True, "content": _json("ReviewDecisions")},
            "responses": {
                "200": {
                    "description": "Every decision recorded.",
                    "content": _json("ReviewDecisionResult"),
                },
                **COMMON_ERRORS,
                "403": problem("An item not assigned to the token's user; nothing was recorded."),
                "404": _NO_CAMPAIGN,
                "422": problem(
                    "Refused (unknown item, decided twice, past the deadline, protected"
                    " account); nothing was recorded."
                ),
            },
        }
    },
}


def reviews_part(reviews: Reviews) -> ApiPart:
    """The access-review part of the API."""

    def setup(app: web.Application) -> None:
        app[REVIEWS] = reviews

    routes = [
        web.get("/reviews", list_campaigns, allow_head=False),
        web.get("/reviews/{campaign}", get_campaign, allow_head=False),
        web.post("/reviews/{campaign}/decisions", decide),
    ]
    return ApiPart("reviews", SCOPE, routes, PATHS, SCHEMAS, setup)


__all__ = ["reviews_part"]

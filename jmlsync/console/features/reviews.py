"""Access reviews in the console: a reviewer's items with keep / revoke and a comment, the
campaigns' progress for admins, and a campaign's evidence summary.

A decision is recorded by :meth:`~jmlsync.engine.reviews.Reviews.decide`, the code behind
``jmlsync review decide``, as a one-row decisions file with the signed-in person as reviewer
and importer: the same checks (assigned reviewer, never one's own grant, the deadline, decided
once) and the same audit rows and revocation jobs.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from jmlsync.console.authz import ADMIN, REVIEWER, assigned_items
from jmlsync.console.context import Viewer
from jmlsync.console.keys import BASE, CONSOLE
from jmlsync.console.pages import Feature, Page, render
from jmlsync.domain.reviews import DecisionError
from jmlsync.engine.reviews import ReviewError, Reviews
from jmlsync.report.review_evidence import completion
from jmlsync.report.review_views import campaign_view

MAX_COMMENT = 1000


def reviews_of(request: web.Request) -> Reviews:
    """The service's review engine (404 when the service runs without one)."""
    found = request.app[CONSOLE].reviews
    if found is None:
        raise web.HTTPNotFound(reason="access reviews are not configured")
    return found


async def _groups(request: web.Request, user_name: str) -> list[str]:
    _state, groups = await request.app[CONSOLE].ports.directory.policy_user(user_name)
    return [group.display_name for group in groups]


async def my_items(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    reviews = reviews_of(request)
    assigned = await assigned_items(
        request.app[CONSOLE].ports.assignments,
        viewer.user_name,
        await _groups(request, viewer.user_name),
    )
    rows: list[dict[str, Any]] = []
    views: dict[str, Any] = {}
    for campaign_id, item_id in assigned:
        if campaign_id not in views:
            views[campaign_id] = await campaign_view(reviews, campaign_id)
        view = views[campaign_id]
        item = next(i for i in view.items if i.id == item_id)
        rows.append(
            {
                "campaign": view.campaign,
                "item": item,
                "decision": view.decisions.get(item_id),
                "key": f"{campaign_id}-{item_id}",
            }
        )
    done = ""
    decided = request.query.get("decided", "")
    for row in rows:  # says only what is recorded, never the link's own text
        if row["key"] == decided and row["decision"] is not None:
            done = f"Item {row['item'].id} of {row['campaign'].id}: {row['decision'].decision}."
    return {"rows": rows, "done": done}


async def decide(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    reviews = reviews_of(request)
    campaign_id = request.match_info["campaign"]
    item = request.match_info["item"]
    form = await request.post()
    decision = form.get("decision")
    comment = form.get("comment")
    text = comment.strip() if isinstance(comment, str) else ""
    try:
        if not item.isdigit():
            raise DecisionError(f"no item {item!r}")
        if decision not in ("keep", "revoke"):
            raise DecisionError("choose keep or revoke")
        if len(text) > MAX_COMMENT or "\x00" in text:
            raise DecisionError("the comment is too long or holds a NUL character")
        row = {"item_id": int(item), "decision": decision, "reviewer": viewer.user_name}
        await reviews.decide(
            campaign_id,
            json.dumps([{**row, "comment": text}]),
            "json",
            imported_by=viewer.user_name,
            late=False,
        )
    except (ReviewError, DecisionError) as exc:
        context = await my_items(request, viewer)
        problem = str(exc).removeprefix("row 1: ")
        return render(
            request,
            "reviews.html",
            {"title": "My reviews", **context, "problem": problem},
            status=422,
        )
    query = urlencode({"decided": f"{campaign_id}-{item}"})
    location = f"{request.app[BASE]}/reviews?{query}"
    return web.Response(status=303, headers={"Location": location})


async def campaigns(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    reviews = reviews_of(request)
    rows = []
    for campaign in reversed(await reviews.reviews.campaigns()):
        view = await campaign_view(reviews, campaign.id)
        rows.append({"campaign": campaign, "scope": view.scope, **completion(view)})
    return {"rows": rows}


async def evidence(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    reviews = reviews_of(request)
    wanted = request.query.get("campaign", "").strip()
    if not wanted:
        return {"wanted": "", "choices": [c.id for c in await reviews.reviews.campaigns()]}
    try:
        view = await campaign_view(reviews, wanted)
    except ReviewError as exc:
        return {"wanted": wanted, "problem": str(exc), "choices": []}
    return {"wanted": wanted, "view": view, "counts": completion(view), "choices": []}


FEATURE = Feature(
    "reviews",
    (
        Page("/reviews", "My reviews", "reviews.html", my_items, frozenset({REVIEWER})),
        Page(
            "/reviews/{campaign}/{item}/decide",
            "",
            "",
            decide,
            frozenset({REVIEWER}),
            "POST",
            nav=False,
        ),
        Page("/reviews/campaigns", "Campaigns", "campaigns.html", campaigns, frozenset({ADMIN})),
        Page(
            "/reviews/evidence",
            "Review evidence",
            "review_evidence.html",
            evidence,
            frozenset({ADMIN}),
        ),
    ),
)

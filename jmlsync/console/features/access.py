"""Time-bound access in the console: the request form (only what the person is eligible for),
their requests, the approvals inbox and the active grants with end and extend.

Every action calls the same :class:`~jmlsync.engine.timebound.TimeboundAccess` methods as
``jmlsync access ...`` and the HTTP API, with the signed-in person as actor, so the lifecycle
rules, the audit rows and the alerts are theirs; nothing here decides who may approve or end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from jmlsync.console.authz import ADMIN, APPROVER, REQUESTER
from jmlsync.console.context import Viewer
from jmlsync.console.keys import BASE, CONSOLE
from jmlsync.console.pages import Feature, Page, render
from jmlsync.domain import timebound as tb
from jmlsync.domain.timebound import (
    AccessRefused,
    AccessRequest,
    NotAllowed,
    Person,
    RequestNotFound,
)
from jmlsync.engine.timebound import Actor, TimeboundAccess
from jmlsync.report.access import request_json

#: The longest reason, comment or ticket a form may send (as the HTTP API).
MAX_TEXT = 1000
MAX_ID = 2**53
#: Where a form goes back to after its action: a name, never a URL from the browser.
BACK = {"mine": "/access", "approvals": "/access/approvals"}


def timebound_of(request: web.Request) -> TimeboundAccess:
    """The service's time-bound access engine (404 when the service runs without one)."""
    found = request.app[CONSOLE].timebound
    if found is None:
        raise web.HTTPNotFound(reason="time-bound access is not configured")
    return found


def actor_of(viewer: Viewer) -> Actor:
    """The signed-in person as the engine's actor: the audit rows name their userName."""
    return Actor(viewer.user_name, viewer.user_name)


def shown(request: AccessRequest) -> dict[str, Any]:
    """A request as the pages show it: the API's JSON plus the extension asked for."""
    values = request_json(request)
    values["duration"] = tb.format_duration(request.duration)
    values["extension"] = (
        tb.format_duration(request.extension) if request.extension is not None else None
    )
    return values


def offers(timebound: TimeboundAccess, person: Person | None) -> list[dict[str, Any]]:
    """The grants ``person`` may request, each with its eligibility's limits."""
    if person is None:
        return []
    found = []
    for eligibility in timebound.eligibilities.values():
        if not tb.eligible(eligibility, person):
            continue
        for grant in eligibility.grants:
            found.append(
                {
                    "grant": f"{grant.target}/{grant.role}",
                    "eligibility": eligibility.name,
                    "max": tb.format_duration(eligibility.max_duration),
                    "approvals": eligibility.approvals,
                    "reason": eligibility.require_reason,
                    "ticket": eligibility.ticket_pattern,
                    "privileged": eligibility.privileged,
                }
            )
    return found


async def mine(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    timebound = timebound_of(request)
    person = await timebound.person(viewer.user_name)
    requests = await timebound.access.find(user=viewer.user_name)
    return {
        "offers": offers(timebound, person),
        "requests": [shown(r) for r in reversed(requests)],
        "done": await done_message(request, timebound),
    }


#: What the page says after an action; the redirect names one, never free text (which a
#: crafted link could make say anything).
VERBS = {
    "made": "made",
    "approved": "approved",
    "denied": "denied",
    "ended": "ended",
    "extended": "extension asked",
}


async def done_message(request: web.Request, timebound: TimeboundAccess) -> str:
    """ "Request #N approved: now active.", from the redirect's ``done`` and ``verb`` and the
    request's stored state; empty when they name nothing."""
    number, verb = request.query.get("done", ""), request.query.get("verb", "")
    if not number.isdigit() or not 0 < int(number) <= MAX_ID or verb not in VERBS:
        return ""
    found = await timebound.access.get(int(number))
    if found is None:
        return ""
    return f"Request #{found.id} {VERBS[verb]}: now {found.state.replace('_', ' ')}."


def _approves(person: Person | None, request: AccessRequest, timebound: TimeboundAccess) -> bool:
    eligibility = timebound.eligibilities.get(request.eligibility)
    return (
        person is not None
        and eligibility is not None
        and person.key != request.user.casefold()
        and person.in_any(eligibility.approvers)
    )


async def approvals(request: web.Request, viewer: Viewer) -> dict[str, Any]:
    timebound = timebound_of(request)
    person = await timebound.person(viewer.user_name)
    waiting = [
        r
        for r in await timebound.access.find(states=["pending", "active"])
        if (r.state == "pending" or r.extension is not None) and _approves(person, r, timebound)
    ]
    active = [
        r for r in await timebound.access.find(states=["active"]) if _approves(person, r, timebound)
    ]
    return {
        "waiting": [shown(r) for r in waiting],
        "active": [shown(r) for r in active],
        "done": await done_message(request, timebound),
    }


def _text(form: Any, key: str, *, required: bool = False) -> str:
    value = form.get(key)
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise AccessRefused(f"{key} is required")
    if len(text) > MAX_TEXT or "\x00" in text:
        raise AccessRefused(f"{key} is too long or holds a NUL character")
    return text


def _duration(form: Any) -> timedelta:
    try:
        return tb.parse_duration(_text(form, "duration", required=True))
    except ValueError as exc:
        raise AccessRefused(f"duration: {exc}") from exc


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise web.HTTPNotFound(reason=f"no access request {text!r}")
    return int(text)


Action = Callable[[TimeboundAccess, Actor, Any], Awaitable[AccessRequest]]


async def _act(
    request: web.Request, viewer: Viewer, action: Action, verb: str
) -> web.StreamResponse:
    """Run ``action`` through the engine; back to the page it came from, saying what happened,
    or the page again with the refusal (403 when the person may not, 422 otherwise)."""
    form = await request.post()
    back = form.get("back")
    back_name = back if isinstance(back, str) and back in BACK else "mine"
    timebound = timebound_of(request)
    try:
        done = await action(timebound, actor_of(viewer), form)
    except RequestNotFound as exc:
        raise web.HTTPNotFound(reason=str(exc)) from exc
    except NotAllowed as exc:
        raise web.HTTPForbidden(reason=str(exc)) from exc
    except AccessRefused as exc:
        page = mine if back_name == "mine" else approvals
        context = await page(request, viewer)
        template = "access.html" if back_name == "mine" else "approvals.html"
        title = "Time-bound access" if back_name == "mine" else "Approvals"
        return render(
            request, template, {"title": title, **context, "problem": str(exc)}, status=422
        )
    query = urlencode({"done": done.id, "verb": verb})
    location = f"{request.app[BASE]}{BACK[back_name]}?{query}"
    return web.Response(status=303, headers={"Location": location})


async def create(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    async def action(timebound: TimeboundAccess, actor: Actor, form: Any) -> AccessRequest:
        grant = _text(form, "grant", required=True)
        target, sep, role = grant.partition("/")
        if not sep or not target or not role:
            raise AccessRefused(f"grant: expected TARGET/ROLE, got {grant!r}")
        return await timebound.request(
            actor,
            target,
            role,
            duration=_duration(form),
            reason=_text(form, "reason"),
            ticket=_text(form, "ticket") or None,
        )

    return await _act(request, viewer, action, "made")


async def approve(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    number = _id(request)

    async def action(timebound: TimeboundAccess, actor: Actor, _form: Any) -> AccessRequest:
        return await timebound.approve(actor, number)

    return await _act(request, viewer, action, "approved")


async def deny(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    number = _id(request)

    async def action(timebound: TimeboundAccess, actor: Actor, form: Any) -> AccessRequest:
        return await timebound.deny(actor, number, _text(form, "comment", required=True))

    return await _act(request, viewer, action, "denied")


async def end(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    number = _id(request)

    async def action(timebound: TimeboundAccess, actor: Actor, _form: Any) -> AccessRequest:
        return await timebound.end(actor, number)

    return await _act(request, viewer, action, "ended")


async def extend(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    number = _id(request)

    async def action(timebound: TimeboundAccess, actor: Actor, form: Any) -> AccessRequest:
        return await timebound.extend(actor, number, _duration(form))

    return await _act(request, viewer, action, "extended")


_ANY = frozenset({REQUESTER, APPROVER, ADMIN})

FEATURE = Feature(
    "access",
    (
        Page("/access", "Time-bound access", "access.html", mine, frozenset({REQUESTER})),
        Page("/access/approvals", "Approvals", "approvals.html", approvals, frozenset({APPROVER})),
        Page("/access/request", "", "", create, frozenset({REQUESTER}), "POST", nav=False),
        Page("/access/{id}/approve", "", "", approve, frozenset({APPROVER}), "POST", nav=False),
        Page("/access/{id}/deny", "", "", deny, frozenset({APPROVER}), "POST", nav=False),
        # Who may end is the engine's decision (requester, approver, access admin); the
        # console only keeps out people with no role in time-bound access at all.
        Page("/access/{id}/end", "", "", end, _ANY, "POST", nav=False),
        Page("/access/{id}/extend", "", "", extend, frozenset({REQUESTER}), "POST", nav=False),
    ),
)

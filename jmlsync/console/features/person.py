"""A person: what ``jmlsync explain`` shows (groups, desired grants with their reasons, actual
grants, pending operations), their time-bound grants and their history from the audit log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from jmlsync.console.authz import ADMIN
from jmlsync.console.context import Viewer
from jmlsync.console.features.access import shown
from jmlsync.console.keys import CONSOLE
from jmlsync.console.pages import Feature, Page

_HISTORY = 100


async def history(request: web.Request, user_name: str) -> list[dict[str, Any]]:
    """The newest audit rows about ``user_name`` (its SCIM changes, grants, sign-ins)."""
    return await request.app[CONSOLE].ports.queue.audit_about(user_name, _HISTORY)


async def person(request: web.Request, _viewer: Viewer) -> dict[str, Any]:
    console = request.app[CONSOLE]
    wanted = request.query.get("user", "").strip()
    if not wanted:
        return {"wanted": ""}
    found = await console.ports.directory.find_user(wanted)
    if found is None:
        return {"wanted": wanted, "missing": True}
    explanation = await console.reconciler.explain(str(found.doc["userName"]))
    timebound = (
        []
        if console.timebound is None
        else [shown(r) for r in await console.timebound.access.find(user=explanation.user)]
    )
    return {
        "wanted": wanted,
        "explanation": explanation,
        "timebound": list(reversed(timebound)),
        "history": await history(request, explanation.user),
    }


FEATURE = Feature("person", (Page("/person", "People", "person.html", person, frozenset({ADMIN})),))

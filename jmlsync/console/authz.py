"""Who may do what in the console, from the directory only (never from the browser or the ID
token): roles are worked out again on every request, so a change of groups in the IdP takes
effect at the next click."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from jmlsync.config import Settings
from jmlsync.console.context import Viewer, viewer_of
from jmlsync.store.directory import SqlStore

#: Members of ``[console].admin_groups``: the operators' pages.
ADMIN = "admin"


async def roles_of(store: SqlStore, user_name: str, settings: Settings) -> frozenset[str] | None:
    """The console roles of the directory user ``user_name``; None when the user is unknown
    or inactive (who may not use the console at all)."""
    state, groups = await store.policy_user(user_name)
    if state is None or not state.active:
        return None
    names = {group.display_name.casefold() for group in groups}
    roles = set()
    if names & {group.casefold() for group in settings.console.admin_groups}:
        roles.add(ADMIN)
    return frozenset(roles)


def may(viewer: Viewer, roles: Collection[str]) -> bool:
    """Whether the viewer holds one of ``roles`` (an empty collection: any signed-in person)."""
    return not roles or bool(viewer.roles & set(roles))


def require(request: web.Request, roles: Collection[str]) -> Viewer:
    """The viewer, when they hold one of ``roles``; else 403 (401 never reaches here: the
    middleware sends people without a session to sign in)."""
    viewer = viewer_of(request)
    if viewer is None:
        raise web.HTTPUnauthorized()
    if not may(viewer, roles):
        raise web.HTTPForbidden(reason="you may not open this page")
    return viewer

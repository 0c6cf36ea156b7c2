"""Who may do what in the console, from the directory only (never from the browser or the ID
token): roles are worked out again on every request, so a change of groups in the IdP takes
effect at the next click."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from jmlsync.config import Settings
from jmlsync.console.context import Viewer, viewer_of
from jmlsync.domain import timebound as tb
from jmlsync.domain.reviews import may_decide
from jmlsync.engine.reviews import Reviews
from jmlsync.engine.timebound import TimeboundAccess, person_of
from jmlsync.ports import PlanningReads, ReviewAssignments

#: Members of ``[console].admin_groups``: the operators' pages.
ADMIN = "admin"
#: An active member of an approver group of some ``[[eligibility]]``: the approvals inbox.
APPROVER = "approver"
#: Eligible for some ``[[eligibility]]``: the request form and their own requests.
REQUESTER = "requester"
#: Assigned items (by name or through a group) in an open review campaign.
REVIEWER = "reviewer"


async def roles_of(
    store: PlanningReads,
    user_name: str,
    settings: Settings,
    *,
    timebound: TimeboundAccess | None = None,
    reviews: Reviews | None = None,
    assignments: ReviewAssignments | None = None,
) -> frozenset[str] | None:
    """The console roles of the directory user ``user_name``; None when the user is unknown
    or inactive (who may not use the console at all). The reviewer role needs both the
    review engine and the ``assignments`` read."""
    state, groups = await store.policy_user(user_name)
    if state is None or not state.active:
        return None
    names = {group.display_name.casefold() for group in groups}
    roles = set()
    if names & {group.casefold() for group in settings.console.admin_groups}:
        roles.add(ADMIN)
    person = person_of(state, groups)
    if timebound is not None and person is not None:
        eligibilities = timebound.eligibilities.values()
        if any(person.in_any(e.approvers) for e in eligibilities):
            roles.add(APPROVER)
        if any(tb.eligible(e, person) for e in eligibilities):
            roles.add(REQUESTER)
    if (
        reviews is not None
        and assignments is not None
        and await assigned_items(assignments, state.user_name, names)
    ):
        roles.add(REVIEWER)
    return frozenset(roles)


async def assigned_items(
    assignments: ReviewAssignments, user_name: str, group_names: Collection[str]
) -> list[tuple[str, int]]:
    """(campaign id, item id) of every item of an open campaign that ``user_name`` may decide:
    assigned to them, or to a group they are in (never their own grants)."""
    # Roles are worked out on every click: the query narrows to this person's candidates by
    # the reviewer column in SQL (not every item of every campaign loaded); may_decide, the
    # rule review decide applies, has the say.
    specs = {user_name.casefold(), *(f"group:{g.casefold()}" for g in group_names)}
    items = await assignments.open_items_of(specs)
    # Only this person's memberships matter to may_decide: a group maps to them alone.
    groups = {name.casefold(): frozenset({user_name}) for name in group_names}
    return [(i.campaign, i.id) for i in items if may_decide(i, user_name, groups)]


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

"""The plan: the operations that turn the grants targets hold into the grants the rules give.

jmlsync revokes only what it owns: a grant on a role some rule names, or a grant it applied
itself. Anything else a target holds (granted by hand on a role no rule names) is left alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Any

from jmlsync.domain.access import Action, Grant, Operation, Reason

__all__ = ["PlanInput", "grant_key", "missing", "plan", "sort_grants", "summarize"]

_ACTIONS: tuple[Action, ...] = ("grant", "revoke", "disable")

#: The order of :class:`Grant` (target, user, role) as a sort key.
grant_key = attrgetter("target", "user", "role")

_BY_ROLE, _BY_USER, _BY_TARGET = attrgetter("role"), attrgetter("user"), attrgetter("target")
_TARGET_ACTION, _PRIVILEGED = attrgetter("target", "action"), attrgetter("privileged")


def sort_grants(grants: Iterable[Grant]) -> list[Grant]:
    """``grants`` in their order (target, user, role): three stable sorts on one string each,
    which compare strings directly, take half the time of one sort on a tuple key."""
    ordered = sorted(grants, key=_BY_ROLE)
    ordered.sort(key=_BY_USER)
    ordered.sort(key=_BY_TARGET)
    return ordered


@dataclass(frozen=True)
class PlanInput:
    """Everything :func:`plan` needs, as plain sets and mappings.

    ``desired`` comes from the policy, ``actual`` and ``principals`` from the targets,
    ``applied`` from jmlsync's own grant ledger, ``users`` (userName → active) and ``leavers``
    from the directory. ``targets`` and ``only_users`` restrict the plan; None means all.
    """

    desired: Mapping[Grant, Reason]
    actual: AbstractSet[Grant]
    managed: AbstractSet[tuple[str, str]]
    privileged: AbstractSet[tuple[str, str]]
    applied: AbstractSet[Grant]
    users: Mapping[str, bool]
    leavers: AbstractSet[str]
    principals: Mapping[tuple[str, str], bool]
    targets: AbstractSet[str] | None = None
    only_users: AbstractSet[str] | None = None
    withheld: AbstractSet[Grant] = frozenset()

    @cached_property
    def missing(self) -> tuple[Grant, ...]:
        """The desired grants the targets do not hold, in order (in scope or not): the plan's
        grants and the drift's missing findings, sorted once for both."""
        return tuple(sort_grants(self.desired.keys() - self.actual))

    def is_leaver(self, user: str) -> bool:
        """Whether ``user`` must lose all access: a leaver, or inactive in the directory."""
        return user in self.leavers or self.users.get(user) is False

    def in_scope(self, target: str, user: str) -> bool:
        """Whether the ``targets`` and ``only_users`` restrictions let (target, user) through."""
        return (self.targets is None or target in self.targets) and (
            self.only_users is None or user in self.only_users
        )


def plan(inp: PlanInput) -> list[Operation]:
    """The operations that bring ``actual`` to ``desired``, deterministically ordered.

    All revokes come first, then disables, then grants: a mover never holds old and new
    access at once, and a leaver's access goes before anything else happens.
    """
    return [*_revokes(inp), *_disables(inp), *_grants(inp)]


def _revokes(inp: PlanInput) -> list[Operation]:
    operations = []
    for grant in sort_grants(inp.actual):
        if not inp.in_scope(grant.target, grant.user):
            continue
        # A leaver loses everything jmlsync owns, even if a stale desired set says otherwise.
        withheld = grant in inp.withheld
        if grant in inp.desired and not inp.is_leaver(grant.user) and not withheld:
            continue
        role = (grant.target, grant.role)
        if role not in inp.managed and grant not in inp.applied and not withheld:
            continue
        operations.append(
            Operation(
                "revoke",
                grant.target,
                grant.user,
                grant.role,
                _revoke_reason(inp, grant),
                role in inp.privileged,
            )
        )
    return operations


def _revoke_reason(inp: PlanInput, grant: Grant) -> str:
    if inp.is_leaver(grant.user):
        return "leaver"
    if grant in inp.withheld:
        return "review"
    if (grant.target, grant.role) not in inp.managed:
        # Only jmlsync's ledger claims it: the rule that named the role changed or went away.
        return "no rule"
    if inp.users.get(grant.user) is True:
        return "mover"
    return "unknown user"


def _disables(inp: PlanInput) -> list[Operation]:
    # Only leavers: a principal the directory does not know may belong to someone else.
    return [
        Operation("disable", target, user, None, "leaver")
        for (target, user), enabled in sorted(inp.principals.items())
        if enabled is True and inp.is_leaver(user) and inp.in_scope(target, user)
    ]


def _grants(inp: PlanInput) -> list[Operation]:
    operations = []
    restricted = inp.targets is not None or inp.only_users is not None
    leavers, users, withheld, desired = inp.leavers, inp.users, inp.withheld, inp.desired
    # A reason is shared by every grant its rule causes: its text is made once.
    texts: dict[int, str] = {}
    for grant in missing(inp):
        target, user, role = grant
        if user in leavers or users.get(user) is False:
            continue
        if restricted and not inp.in_scope(target, user):
            continue
        if grant in withheld:
            continue
        reason = desired[grant]
        text = texts.get(id(reason))
        if text is None:
            text = texts[id(reason)] = str(reason)
        operations.append(Operation("grant", target, user, role, text, reason.privileged))
    return operations


def missing(inp: PlanInput) -> tuple[Grant, ...]:
    """The desired grants the targets do not hold, in order (in scope or not)."""
    return inp.missing


def summarize(operations: Sequence[Operation]) -> dict[str, Any]:
    """Counts of ``operations`` per action, of privileged ones, and per target and action.

    Every action key is present even when zero, so the result can be compared and rendered as
    JSON without guards. Counted in C (``Counter`` over attribute getters): a plan of 100k
    users has a quarter of a million operations.
    """
    totals: dict[str, Any] = dict.fromkeys(_ACTIONS, 0)
    pairs = Counter(map(_TARGET_ACTION, operations))
    by_target: dict[str, dict[str, int]] = {}
    for (target, action), count in pairs.items():
        by_target.setdefault(target, dict.fromkeys(_ACTIONS, 0))[action] += count
        totals[action] += count
    totals["privileged"] = sum(map(_PRIVILEGED, operations))
    totals["by_target"] = {target: by_target[target] for target in sorted(by_target)}
    return totals

"""The policy: which grants the rules (and active time-bound grants) give which users.

Pure functions over the values of :mod:`jmlsync.domain.access`. The engine first narrows the
rules to the groups they name (:func:`rules_by_group`), then streams users through
:func:`desired_grants`, so the cost is proportional to the memberships of groups some rule
names, never to the whole directory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime

from jmlsync.domain.access import Grant, GroupInfo, Reason, Rule, UserState
from jmlsync.domain.filters import matches
from jmlsync.domain.reviews import exception_holds
from jmlsync.domain.timebound import AccessRequest, describe

__all__ = [
    "desired_grants",
    "explain_user",
    "grant_causes",
    "managed_roles",
    "privileged_roles",
    "rule_matches_group",
    "rules_by_group",
    "timebound_grants",
    "with_timebound",
    "without_exceptions",
]


def rule_matches_group(rule: Rule, group: GroupInfo) -> bool:
    """Whether ``rule`` names ``group``.

    A rule with an externalId matches by externalId only: it is there to survive renames, so
    a different group that happens to carry the rule's display name must not match it.
    Otherwise displayNames are compared caselessly, as SCIM compares displayName.
    """
    if rule.group_external_id is not None:
        return group.external_id == rule.group_external_id
    return rule.group.casefold() == group.display_name.casefold()


def rules_by_group(
    rules: Sequence[Rule], groups: Iterable[GroupInfo]
) -> dict[str, tuple[Rule, ...]]:
    """Group id → the rules that name the group, in rule order; groups no rule names are absent."""
    by_external_id: dict[str, list[Rule]] = {}
    by_name: dict[str, list[Rule]] = {}
    for rule in sorted(rules, key=lambda r: r.index):
        if rule.group_external_id is not None:
            by_external_id.setdefault(rule.group_external_id, []).append(rule)
        else:
            by_name.setdefault(rule.group.casefold(), []).append(rule)
    result: dict[str, tuple[Rule, ...]] = {}
    for group in groups:
        found = by_name.get(group.display_name.casefold(), [])
        if group.external_id is not None:
            found = found + by_external_id.get(group.external_id, [])
        if found:
            result[group.id] = tuple(sorted(found, key=lambda r: r.index))
    return result


def _applicable(
    user: UserState, rules_by_group: Mapping[str, Sequence[Rule]]
) -> Iterator[tuple[str, Rule]]:
    """(group id, rule) for every rule that applies to ``user`` through one of its groups."""
    if not user.active:
        return
    for group_id in user.groups:
        for rule in rules_by_group.get(group_id, ()):
            if rule.user_filter is None or matches(rule.user_filter, user.resource):
                yield group_id, rule


def _reason_key(reason: Reason) -> tuple[bool, int, int, str]:
    # A rule's reason wins over a time-bound one: it outlasts the grant's expiry.
    return (reason.request is not None, reason.request or 0, reason.rule, reason.group)


def _merge(desired: dict[Grant, Reason], grant: Grant, reason: Reason) -> None:
    """Record ``reason`` for ``grant``: the lowest rule wins, privilege accumulates."""
    current = desired.get(grant)
    if current is None:
        desired[grant] = reason
        return
    # The outcome must not depend on the order users' groups are iterated in.
    winner = min(current, reason, key=_reason_key)
    privileged = current.privileged or reason.privileged
    if winner != current or privileged != current.privileged:
        desired[grant] = Reason(winner.rule, winner.group, privileged, winner.request, winner.note)


def desired_grants(
    users: Iterable[UserState], rules_by_group: Mapping[str, Sequence[Rule]]
) -> dict[Grant, Reason]:
    """Every grant the rules give ``users``, with the reason of the lowest rule causing it.

    Inactive users desire nothing. ``privileged`` is set when any rule causing the grant is
    privileged. The reason names the group as the rule spells it, which stays stable when a
    group matched by externalId is renamed. ``users`` is iterated once.
    """
    desired: dict[Grant, Reason] = {}
    # One (immutable) reason per rule, shared by every grant it causes: 200k grants, 1k rules.
    reasons: dict[int, Reason] = {}
    for user in users:
        for _group_id, rule in _applicable(user, rules_by_group):
            reason = reasons.get(rule.index)
            if reason is None:
                reason = reasons[rule.index] = Reason(rule.index, rule.group, rule.privileged)
            for role_grant in rule.grants:
                grant = Grant(role_grant.target, user.user_name, role_grant.role)
                _merge(desired, grant, reason)
    return desired


def timebound_grants(requests: Iterable[AccessRequest], now: datetime) -> dict[Grant, Reason]:
    """The grants of active time-bound requests not yet past their ``expires_at``.

    The caller passes only requests whose holder is active and still eligible (see
    :func:`jmlsync.domain.timebound.eligible`); expiry is decided here, from the stored time.
    """
    desired: dict[Grant, Reason] = {}
    for request in sorted(requests, key=lambda r: r.id):
        if request.state != "active" or request.expires_at is None or now >= request.expires_at:
            continue
        reason = Reason(0, "", request.privileged, request.id, describe(request))
        _merge(desired, Grant(request.target, request.user, request.role), reason)
    return desired


def with_timebound(
    desired: Mapping[Grant, Reason], timebound: Mapping[Grant, Reason]
) -> dict[Grant, Reason]:
    """desired = rules + active time-bound grants (a rule's reason wins where both give one)."""
    merged = dict(desired)
    for grant, reason in timebound.items():
        _merge(merged, grant, reason)
    return merged


def explain_user(
    user: UserState,
    rules_by_group: Mapping[str, Sequence[Rule]],
    groups: Mapping[str, GroupInfo],
) -> list[tuple[Grant, list[Reason]]]:
    """Every grant ``user`` desires with all the reasons causing it, sorted by grant.

    Reasons are sorted by rule index and name the group by its current displayName (from
    ``groups``; the rule's spelling when the group is not there), which is what a person
    reading ``jmlsync explain`` recognises. Empty when the user is inactive.
    """
    reasons: dict[Grant, set[Reason]] = {}
    for group_id, rule in _applicable(user, rules_by_group):
        info = groups.get(group_id)
        name = info.display_name if info is not None else rule.group
        reason = Reason(rule.index, name, rule.privileged)
        for role_grant in rule.grants:
            grant = Grant(role_grant.target, user.user_name, role_grant.role)
            reasons.setdefault(grant, set()).add(reason)
    return [
        (grant, sorted(reasons[grant], key=lambda r: (r.rule, r.group, r.privileged)))
        for grant in sorted(reasons)
    ]


def managed_roles(rules: Sequence[Rule]) -> frozenset[tuple[str, str]]:
    """Every (target, role) some rule names: the roles jmlsync owns and may revoke."""
    return frozenset((g.target, g.role) for rule in rules for g in rule.grants)


def privileged_roles(rules: Sequence[Rule]) -> frozenset[tuple[str, str]]:
    """Every (target, role) named by a privileged rule."""
    return managed_roles([rule for rule in rules if rule.privileged])


def grant_causes(
    users: Iterable[UserState], rules_by_group: Mapping[str, Sequence[Rule]]
) -> dict[Grant, frozenset[tuple[int, str]]]:
    """Every grant the rules give ``users`` with all the (rule number, group id) paths causing
    it: what a review exception records, and what tells whether it still holds."""
    causes: dict[Grant, set[tuple[int, str]]] = {}
    for user in users:
        for group_id, rule in _applicable(user, rules_by_group):
            for role_grant in rule.grants:
                grant = Grant(role_grant.target, user.user_name, role_grant.role)
                causes.setdefault(grant, set()).add((rule.index, group_id))
    return {grant: frozenset(paths) for grant, paths in causes.items()}


def without_exceptions(
    desired: Mapping[Grant, Reason],
    causes: Mapping[Grant, AbstractSet[tuple[int, str]]],
    exceptions: Mapping[Grant, AbstractSet[tuple[int, str]]],
) -> tuple[dict[Grant, Reason], frozenset[Grant]]:
    """``desired`` less the grants review exceptions hold back, and those grants.

    ``exceptions`` maps each excepted grant to the causes recorded when it was revoked; an
    exception holds while no new path gives the grant (:func:`exception_holds`).
    """
    held = frozenset(
        grant
        for grant, recorded in exceptions.items()
        if grant in desired and exception_holds(frozenset(recorded), causes.get(grant, frozenset()))
    )
    return {g: r for g, r in desired.items() if g not in held}, held

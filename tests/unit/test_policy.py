"""The policy: rules → the groups they name → the grants they give users."""

from __future__ import annotations

import random
from typing import Any

import pytest

from jmlsync.domain.access import Grant, GroupInfo, Reason, RoleGrant, Rule, UserState
from jmlsync.domain.policy import (
    desired_grants,
    explain_user,
    managed_roles,
    privileged_roles,
    rule_matches_group,
    rules_by_group,
)
from jmlsync.scim.filters import parse_filter
from jmlsync.scim.schema import ENTERPRISE_USER_SCHEMA, USER

ENGINEERING = parse_filter(f'{ENTERPRISE_USER_SCHEMA}:department eq "Engineering"', USER)

RULES = (
    Rule(0, "eng", (RoleGrant("aws", "Deployer"),)),
    Rule(1, "admins", (RoleGrant("aws", "Admin"),), privileged=True),
    Rule(2, "ops", (RoleGrant("aws", "Deployer"), RoleGrant("ledger", "ops"))),
    Rule(3, "Finance", (RoleGrant("ledger", "finance"),), group_external_id="ext-fin"),
    Rule(
        4,
        "eng",
        (RoleGrant("ledger", "eng-only"),),
        user_filter=ENGINEERING,
        user_filter_text='department eq "Engineering"',
    ),
    Rule(5, "break-glass", (RoleGrant("aws", "Deployer"),), privileged=True),
)

GROUPS = (
    GroupInfo("g-eng", "ENG"),
    GroupInfo("g-admins", "admins", "ext-admins"),
    GroupInfo("g-ops", "Ops"),
    GroupInfo("g-fin", "Finance (renamed)", "ext-fin"),
    GroupInfo("g-fake-fin", "Finance", "ext-other"),
    GroupInfo("g-bg", "break-glass"),
    GroupInfo("g-other", "unrelated"),
)
GROUPS_BY_ID = {group.id: group for group in GROUPS}
BY_GROUP = rules_by_group(RULES, GROUPS)


def user(name: str, *groups: str, active: bool = True, department: str | None = None) -> UserState:
    resource: dict[str, Any] = {"userName": name, "active": active}
    if department is not None:
        resource[ENTERPRISE_USER_SCHEMA] = {"department": department}
    return UserState(f"id-{name}", name, active, frozenset(groups), resource)


def reason(index: int, privileged: bool = False) -> Reason:
    return Reason(index, RULES[index].group, privileged)


# --- rules_by_group ---------------------------------------------------------------------------


def test_rules_by_group_matches_names_caselessly_and_external_ids_exactly() -> None:
    assert {gid: [r.index for r in rules] for gid, rules in BY_GROUP.items()} == {
        "g-eng": [0, 4],
        "g-admins": [1],
        "g-ops": [2],
        "g-fin": [3],
        "g-bg": [5],
    }


@pytest.mark.parametrize(
    ("rule", "group", "expected"),
    [
        (Rule(0, "Eng", ()), GroupInfo("g", "eNG"), True),
        (Rule(0, "Straße", ()), GroupInfo("g", "STRASSE"), True),
        (Rule(0, "eng", ()), GroupInfo("g", "engineering"), False),
        # Matched by externalId: a rename of the group keeps the rule attached ...
        (Rule(0, "Finance", (), group_external_id="x1"), GroupInfo("g", "Money", "x1"), True),
        # ... and a different group that took the old name does not inherit it.
        (Rule(0, "Finance", (), group_external_id="x1"), GroupInfo("g", "Finance", "x2"), False),
        (Rule(0, "Finance", (), group_external_id="x1"), GroupInfo("g", "Finance"), False),
        (Rule(0, "Finance", (), group_external_id="X1"), GroupInfo("g", "g", "x1"), False),
    ],
)
def test_rule_matches_group(rule: Rule, group: GroupInfo, expected: bool) -> None:
    assert rule_matches_group(rule, group) is expected
    assert (group.id in rules_by_group([rule], [group])) is expected


def test_rules_by_group_agrees_with_rule_matches_group_and_keeps_rule_order() -> None:
    shuffled = list(RULES)
    random.Random(7).shuffle(shuffled)
    by_group = rules_by_group(shuffled, reversed(GROUPS))
    for group in GROUPS:
        expected = tuple(rule for rule in RULES if rule_matches_group(rule, group))
        assert by_group.get(group.id, ()) == expected


def test_rules_by_group_streams_groups_once() -> None:
    assert rules_by_group(RULES, iter(GROUPS)) == BY_GROUP


# --- desired_grants ---------------------------------------------------------------------------

CASES: list[tuple[str, list[UserState], dict[Grant, Reason]]] = [
    ("no groups", [user("alice")], {}),
    ("unrelated group", [user("alice", "g-other", "g-fake-fin")], {}),
    ("unknown group id", [user("alice", "g-gone")], {}),
    ("joiner", [user("alice", "g-eng")], {Grant("aws", "alice", "Deployer"): reason(0)}),
    (
        "privileged rule",
        [user("alice", "g-admins")],
        {Grant("aws", "alice", "Admin"): reason(1, True)},
    ),
    (
        "group matched by external id",
        [user("alice", "g-fin")],
        {Grant("ledger", "alice", "finance"): reason(3)},
    ),
    ("inactive user desires nothing", [user("alice", "g-eng", "g-admins", active=False)], {}),
    (
        "user_filter matches",
        [user("alice", "g-eng", department="engineering")],
        {
            Grant("aws", "alice", "Deployer"): reason(0),
            Grant("ledger", "alice", "eng-only"): reason(4),
        },
    ),
    (
        "user_filter does not match",
        [user("bob", "g-eng", department="Sales")],
        {Grant("aws", "bob", "Deployer"): reason(0)},
    ),
    (
        "user_filter on a user without the attribute",
        [user("bob", "g-eng")],
        {Grant("aws", "bob", "Deployer"): reason(0)},
    ),
    (
        "overlapping rules: lowest index is the reason",
        [user("alice", "g-ops", "g-eng")],
        {Grant("aws", "alice", "Deployer"): reason(0), Grant("ledger", "alice", "ops"): reason(2)},
    ),
    (
        "overlapping rules: privileged if any causing rule is",
        [user("alice", "g-bg", "g-eng")],
        {Grant("aws", "alice", "Deployer"): Reason(0, "eng", True)},
    ),
    (
        "overlapping rules: one group removed keeps the grant",
        [user("alice", "g-ops")],
        {Grant("aws", "alice", "Deployer"): reason(2), Grant("ledger", "alice", "ops"): reason(2)},
    ),
    (
        "several users",
        [user("alice", "g-eng"), user("bob", "g-admins"), user("carol", "g-eng", active=False)],
        {
            Grant("aws", "alice", "Deployer"): reason(0),
            Grant("aws", "bob", "Admin"): reason(1, True),
        },
    ),
]


@pytest.mark.parametrize(("users", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_desired_grants(users: list[UserState], expected: dict[Grant, Reason]) -> None:
    assert desired_grants(users, BY_GROUP) == expected


def test_desired_grants_iterates_users_once() -> None:
    users = [user("alice", "g-eng"), user("bob", "g-ops")]
    assert desired_grants(iter(users), BY_GROUP) == desired_grants(users, BY_GROUP)


def test_desired_grants_is_deterministic_whatever_the_order() -> None:
    users = [
        user("alice", "g-eng", "g-ops", "g-bg", "g-admins", department="Engineering"),
        user("bob", "g-bg", "g-ops"),
        user("carol", "g-fin", "g-eng"),
    ]
    expected = desired_grants(users, BY_GROUP)
    rng = random.Random(1)
    for _ in range(20):
        shuffled = rng.sample(users, len(users))
        rules = list(RULES)
        rng.shuffle(rules)
        by_group = rules_by_group(rules, rng.sample(GROUPS, len(GROUPS)))
        # The order rules reach a grant in must not change its reason or privilege.
        by_group = {gid: tuple(rng.sample(rs, len(rs))) for gid, rs in by_group.items()}
        assert desired_grants(shuffled, by_group) == expected


# --- explain_user -----------------------------------------------------------------------------


def test_explain_user_lists_every_reason_sorted() -> None:
    alice = user("alice", "g-bg", "g-ops", "g-eng", "g-other", department="Engineering")
    assert explain_user(alice, BY_GROUP, GROUPS_BY_ID) == [
        (
            Grant("aws", "alice", "Deployer"),
            [Reason(0, "ENG", False), Reason(2, "Ops", False), Reason(5, "break-glass", True)],
        ),
        (Grant("ledger", "alice", "eng-only"), [Reason(4, "ENG", False)]),
        (Grant("ledger", "alice", "ops"), [Reason(2, "Ops", False)]),
    ]


def test_explain_user_agrees_with_desired_grants() -> None:
    alice = user("alice", "g-bg", "g-ops", "g-eng", "g-fin", "g-admins")
    explained = explain_user(alice, BY_GROUP, GROUPS_BY_ID)
    desired = desired_grants([alice], BY_GROUP)
    assert [grant for grant, _ in explained] == sorted(desired)
    for grant, reasons in explained:
        assert reasons[0].rule == desired[grant].rule
        assert any(r.privileged for r in reasons) is desired[grant].privileged


def test_explain_user_names_the_rules_group_when_the_group_is_unknown() -> None:
    alice = user("alice", "g-fin")
    assert explain_user(alice, BY_GROUP, {}) == [
        (Grant("ledger", "alice", "finance"), [Reason(3, "Finance", False)])
    ]


def test_explain_user_is_empty_for_an_inactive_user() -> None:
    assert explain_user(user("alice", "g-eng", active=False), BY_GROUP, GROUPS_BY_ID) == []


# --- managed and privileged roles -------------------------------------------------------------


def test_managed_and_privileged_roles() -> None:
    assert managed_roles(RULES) == {
        ("aws", "Deployer"),
        ("aws", "Admin"),
        ("ledger", "ops"),
        ("ledger", "finance"),
        ("ledger", "eng-only"),
    }
    assert privileged_roles(RULES) == {("aws", "Admin"), ("aws", "Deployer")}
    assert managed_roles([]) == privileged_roles([]) == frozenset()

"""The planner: joiners, movers, leavers, what jmlsync owns, ordering and its invariants."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jmlsync.domain.access import Grant, GroupInfo, Operation, Reason, RoleGrant, Rule, UserState
from jmlsync.domain.plan import PlanInput, plan, summarize
from jmlsync.domain.policy import desired_grants, managed_roles, privileged_roles, rules_by_group
from jmlsync.scim.filters import parse_filter
from jmlsync.scim.schema import ENTERPRISE_USER_SCHEMA, USER

RULES = (
    Rule(0, "eng", (RoleGrant("aws", "Deployer"),)),
    Rule(1, "admins", (RoleGrant("aws", "Admin"),), privileged=True),
    Rule(2, "ops", (RoleGrant("aws", "Deployer"), RoleGrant("ledger", "ops"))),
    Rule(
        3,
        "eng",
        (RoleGrant("ledger", "eng-only"),),
        user_filter=parse_filter(f'{ENTERPRISE_USER_SCHEMA}:department eq "Engineering"', USER),
    ),
    Rule(4, "Finance", (RoleGrant("ledger", "finance"),), group_external_id="ext-fin"),
)
GROUPS = (
    GroupInfo("g-eng", "Eng"),
    GroupInfo("g-admins", "ADMINS"),
    GroupInfo("g-ops", "ops"),
    GroupInfo("g-fin", "Money", "ext-fin"),
    GroupInfo("g-finance-by-name", "finance", "ext-x"),
)
BY_GROUP = rules_by_group(RULES, GROUPS)
MANAGED = managed_roles(RULES)
PRIVILEGED = privileged_roles(RULES)
CONSOLE = Grant("aws", "alice", "ConsoleReadOnly")  # a role no rule names


def user(name: str, *groups: str, active: bool = True, dept: str | None = None) -> UserState:
    resource: dict[str, Any] = {"userName": name, "active": active}
    if dept is not None:
        resource[ENTERPRISE_USER_SCHEMA] = {"department": dept}
    return UserState(f"id-{name}", name, active, frozenset(groups), resource)


@dataclass
class World:
    """A directory and targets, from which the engine's PlanInput is derived."""

    users: list[UserState]
    actual: set[Grant] = field(default_factory=set)
    applied: set[Grant] | None = None  # None: jmlsync applied everything the targets hold
    deleted: set[str] = field(default_factory=set)  # deleted users jmlsync provisioned
    principals: dict[tuple[str, str], bool] = field(default_factory=dict)
    targets: frozenset[str] | None = None
    only_users: frozenset[str] | None = None

    def plan_input(self) -> PlanInput:
        return PlanInput(
            desired=desired_grants(self.users, BY_GROUP),
            actual=frozenset(self.actual),
            managed=MANAGED,
            privileged=PRIVILEGED,
            applied=frozenset(self.actual if self.applied is None else self.applied),
            users={u.user_name: u.active for u in self.users},
            leavers={u.user_name for u in self.users if not u.active} | self.deleted,
            principals=self.principals,
            targets=self.targets,
            only_users=self.only_users,
        )


def ops(*rows: tuple[Any, ...]) -> list[Operation]:
    return [Operation(*row) for row in rows]


R0 = "rule 0: group eng"
R1 = "rule 1: group admins"
R2 = "rule 2: group ops"
R3 = "rule 3: group eng"
R4 = "rule 4: group Finance"
G = Grant

SCENARIOS: list[tuple[str, World, list[Operation]]] = [
    ("nothing to do", World([user("alice")]), []),
    (
        "joiner",
        World([user("alice", "g-eng")]),
        ops(("grant", "aws", "alice", "Deployer", R0)),
    ),
    (
        "joiner in a privileged group",
        World([user("alice", "g-admins")]),
        ops(("grant", "aws", "alice", "Admin", R1, True)),
    ),
    (
        "in sync",
        World([user("alice", "g-eng")], actual={G("aws", "alice", "Deployer")}),
        [],
    ),
    (
        "mover: revoke the old group's role before granting the new one",
        World([user("alice", "g-ops")], actual={G("aws", "alice", "Admin")}),
        ops(
            ("revoke", "aws", "alice", "Admin", "mover", True),
            ("grant", "aws", "alice", "Deployer", R2),
            ("grant", "ledger", "alice", "ops", R2),
        ),
    ),
    (
        "leaver: revoke every managed grant, disable enabled principals only",
        World(
            [user("bob", "g-eng", "g-ops", active=False)],
            actual={G("aws", "bob", "Deployer"), G("ledger", "bob", "ops"), G("aws", "bob", "Sso")},
            applied=set(),
            principals={("aws", "bob"): True, ("ledger", "bob"): False},
        ),
        ops(
            ("revoke", "aws", "bob", "Deployer", "leaver"),
            ("revoke", "ledger", "bob", "ops", "leaver"),
            ("disable", "aws", "bob", None, "leaver"),
        ),
    ),
    (
        "deleted user jmlsync provisioned",
        World(
            [user("alice", "g-eng")],
            actual={G("aws", "alice", "Deployer"), G("aws", "carol", "Admin")},
            deleted={"carol"},
            principals={("aws", "carol"): True, ("ledger", "carol"): True},
        ),
        ops(
            ("revoke", "aws", "carol", "Admin", "leaver", True),
            ("disable", "aws", "carol", None, "leaver"),
            ("disable", "ledger", "carol", None, "leaver"),
        ),
    ),
    (
        "re-activation: access returns, nothing revoked or disabled",
        World(
            [user("dave", "g-eng", "g-ops")],
            principals={("aws", "dave"): False, ("ledger", "dave"): False},
        ),
        ops(
            ("grant", "aws", "dave", "Deployer", R0),
            ("grant", "ledger", "dave", "ops", R2),
        ),
    ),
    (
        "user_filter: only the matching user gets the filtered rule's role",
        World([user("erin", "g-eng", dept="Engineering"), user("frank", "g-eng", dept="Sales")]),
        ops(
            ("grant", "aws", "erin", "Deployer", R0),
            ("grant", "aws", "frank", "Deployer", R0),
            ("grant", "ledger", "erin", "eng-only", R3),
        ),
    ),
    (
        "user_filter: a user who no longer matches loses the role as a mover",
        World(
            [user("erin", "g-eng", dept="Sales")],
            actual={G("aws", "erin", "Deployer"), G("ledger", "erin", "eng-only")},
        ),
        ops(("revoke", "ledger", "erin", "eng-only", "mover")),
    ),
    (
        "overlapping rules: one grant, lowest rule as the reason",
        World([user("alice", "g-ops", "g-eng")]),
        ops(
            ("grant", "aws", "alice", "Deployer", R0),
            ("grant", "ledger", "alice", "ops", R2),
        ),
    ),
    (
        "overlapping rules: leaving one group keeps the role the other still gives",
        World(
            [user("alice", "g-ops")],
            actual={G("aws", "alice", "Deployer"), G("ledger", "alice", "ops")},
        ),
        [],
    ),
    (
        "group matched by external id despite a rename; a namesake group gets nothing",
        World([user("gina", "g-fin"), user("hal", "g-finance-by-name")]),
        ops(("grant", "ledger", "gina", "finance", R4)),
    ),
    (
        "unmanaged role that jmlsync never applied is never touched",
        World([user("alice", "g-eng")], actual={CONSOLE}, applied=set()),
        ops(("grant", "aws", "alice", "Deployer", R0)),
    ),
    (
        "role jmlsync applied whose rule went away is revoked",
        World([user("alice", "g-eng")], actual={CONSOLE}, applied={CONSOLE}),
        ops(
            ("revoke", "aws", "alice", "ConsoleReadOnly", "no rule"),
            ("grant", "aws", "alice", "Deployer", R0),
        ),
    ),
    (
        "leaver loses even applied roles no rule names, but not hand-made ones",
        World(
            [user("alice", active=False)],
            actual={CONSOLE, G("aws", "alice", "Billing")},
            applied={G("aws", "alice", "Billing")},
        ),
        ops(("revoke", "aws", "alice", "Billing", "leaver")),
    ),
    (
        "unknown principal on a managed role is revoked but not disabled",
        World(
            [user("alice")],
            actual={G("aws", "mallory", "Admin")},
            applied=set(),
            principals={("aws", "mallory"): True},
        ),
        ops(("revoke", "aws", "mallory", "Admin", "unknown user", True)),
    ),
    (
        "targets filter",
        World(
            [user("alice", "g-ops"), user("bob", active=False)],
            actual={G("aws", "alice", "Admin"), G("ledger", "bob", "ops")},
            principals={("aws", "bob"): True, ("ledger", "bob"): True},
            targets=frozenset({"ledger"}),
        ),
        ops(
            ("revoke", "ledger", "bob", "ops", "leaver"),
            ("disable", "ledger", "bob", None, "leaver"),
            ("grant", "ledger", "alice", "ops", R2),
        ),
    ),
    (
        "only_users filter",
        World(
            [user("alice", "g-ops"), user("bob", active=False), user("carol", "g-eng")],
            actual={G("aws", "alice", "Admin"), G("ledger", "bob", "ops")},
            principals={("aws", "bob"): True},
            only_users=frozenset({"bob", "carol"}),
        ),
        ops(
            ("revoke", "ledger", "bob", "ops", "leaver"),
            ("disable", "aws", "bob", None, "leaver"),
            ("grant", "aws", "carol", "Deployer", R0),
        ),
    ),
    (
        "both filters",
        World(
            [user("alice", "g-ops"), user("carol", "g-ops")],
            targets=frozenset({"aws"}),
            only_users=frozenset({"carol"}),
        ),
        ops(("grant", "aws", "carol", "Deployer", R2)),
    ),
    (
        "order: revokes, then disables, then grants, each sorted",
        World(
            [
                user("zed", "g-eng"),
                user("amy", "g-admins"),
                user("bob", active=False),
                user("cat", "g-ops"),
            ],
            actual={
                G("ledger", "cat", "eng-only"),
                G("aws", "zed", "Admin"),
                G("aws", "bob", "Deployer"),
                G("aws", "amy", "Deployer"),
            },
            principals={("ledger", "bob"): True, ("aws", "bob"): True},
        ),
        ops(
            ("revoke", "aws", "amy", "Deployer", "mover"),
            ("revoke", "aws", "bob", "Deployer", "leaver"),
            ("revoke", "aws", "zed", "Admin", "mover", True),
            ("revoke", "ledger", "cat", "eng-only", "mover"),
            ("disable", "aws", "bob", None, "leaver"),
            ("disable", "ledger", "bob", None, "leaver"),
            ("grant", "aws", "amy", "Admin", R1, True),
            ("grant", "aws", "cat", "Deployer", R2),
            ("grant", "aws", "zed", "Deployer", R0),
            ("grant", "ledger", "cat", "ops", R2),
        ),
    ),
]


@pytest.mark.parametrize(
    ("world", "expected"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_plan(world: World, expected: list[Operation]) -> None:
    assert plan(world.plan_input()) == expected


def test_a_leaver_is_never_granted_and_loses_what_a_stale_desired_set_holds() -> None:
    stale = {
        G("aws", "bob", "Deployer"): Reason(0, "eng", False),
        G("aws", "bob", "Admin"): Reason(1, "admins", True),
    }
    inp = PlanInput(
        desired=stale,
        actual={G("aws", "bob", "Deployer")},
        managed=MANAGED,
        privileged=PRIVILEGED,
        applied=set(),
        users={"bob": True},
        leavers={"bob"},
        principals={},
    )
    assert plan(inp) == ops(("revoke", "aws", "bob", "Deployer", "leaver"))


def test_a_user_the_directory_knows_as_inactive_is_a_leaver_even_if_not_listed() -> None:
    inp = PlanInput(
        desired={},
        actual={G("aws", "bob", "Deployer")},
        managed=MANAGED,
        privileged=PRIVILEGED,
        applied=set(),
        users={"bob": False},
        leavers=set(),
        principals={("aws", "bob"): True},
    )
    assert plan(inp) == ops(
        ("revoke", "aws", "bob", "Deployer", "leaver"), ("disable", "aws", "bob", None, "leaver")
    )


def _shuffled(inp: PlanInput, rng: random.Random) -> PlanInput:
    def sample(items: Iterable[Any]) -> list[Any]:
        listed = list(items)
        return rng.sample(listed, len(listed))

    return replace(
        inp,
        desired=dict(sample(inp.desired.items())),
        actual=set(sample(inp.actual)),
        managed=set(sample(inp.managed)),
        applied=set(sample(inp.applied)),
        users=dict(sample(inp.users.items())),
        leavers=set(sample(inp.leavers)),
        principals=dict(sample(inp.principals.items())),
    )


@pytest.mark.parametrize("seed", range(10))
def test_plan_is_deterministic(seed: int) -> None:
    world = SCENARIOS[-1][1]
    inp = world.plan_input()
    rng = random.Random(seed)
    shuffled_users = rng.sample(world.users, len(world.users))
    again = replace(world, users=shuffled_users).plan_input()
    assert plan(_shuffled(again, rng)) == plan(inp) == SCENARIOS[-1][2]


# --- summarize --------------------------------------------------------------------------------


def test_summarize_counts() -> None:
    operations = SCENARIOS[-1][2]
    summary = summarize(operations)
    assert summary == {
        "grant": 4,
        "revoke": 4,
        "disable": 2,
        "privileged": 2,
        "by_target": {
            "aws": {"grant": 3, "revoke": 3, "disable": 1},
            "ledger": {"grant": 1, "revoke": 1, "disable": 1},
        },
    }
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_nothing() -> None:
    assert summarize([]) == {
        "grant": 0,
        "revoke": 0,
        "disable": 0,
        "privileged": 0,
        "by_target": {},
    }


def test_summarize_keeps_every_action_key_per_target() -> None:
    summary = summarize(ops(("disable", "aws", "bob", None, "leaver")))
    assert summary["by_target"] == {"aws": {"grant": 0, "revoke": 0, "disable": 1}}


# --- invariants -------------------------------------------------------------------------------

TARGETS = ("aws", "gcp")
ROLES = ("r1", "r2", "r3")
NAMES = ("ann", "ben", "cid")
grants = st.builds(Grant, st.sampled_from(TARGETS), st.sampled_from(NAMES), st.sampled_from(ROLES))
roles = st.tuples(st.sampled_from(TARGETS), st.sampled_from(ROLES))


@st.composite
def plan_inputs(draw: st.DrawFn) -> PlanInput:
    users = draw(st.dictionaries(st.sampled_from(NAMES), st.booleans()))
    leavers = {name for name, active in users.items() if not active} | draw(
        st.sets(st.sampled_from(NAMES).filter(lambda n: n not in users))
    )
    managed = draw(st.sets(roles))
    desired_grants_ = draw(st.sets(grants.filter(lambda g: (g.target, g.role) in managed)))
    return PlanInput(
        desired={g: Reason(0, "g", False) for g in desired_grants_ if g.user not in leavers},
        actual=draw(st.sets(grants)),
        managed=managed,
        privileged=draw(st.sets(st.sampled_from(sorted(managed)))) if managed else set(),
        applied=draw(st.sets(grants)),
        users=users,
        leavers=leavers,
        principals=draw(
            st.dictionaries(
                st.tuples(st.sampled_from(TARGETS), st.sampled_from(NAMES)), st.booleans()
            )
        ),
    )


def apply(actual: Iterable[Grant], operations: Iterable[Operation]) -> set[Grant]:
    result = set(actual)
    for op in operations:
        if op.action == "disable":
            continue
        assert op.role is not None
        grant = Grant(op.target, op.user, op.role)
        if op.action == "grant":
            assert grant not in result
            result.add(grant)
        else:
            assert grant in result
            result.remove(grant)
    return result


@given(plan_inputs())
def test_applying_the_plan_reaches_desired_and_leaves_foreign_grants_alone(inp: PlanInput) -> None:
    operations = plan(inp)
    after = apply(inp.actual, operations)
    owned = {g for g in after if (g.target, g.role) in inp.managed or g in inp.applied}
    assert set(inp.desired) <= after
    assert owned <= set(inp.desired)
    foreign = {
        g for g in inp.actual if (g.target, g.role) not in inp.managed and g not in inp.applied
    }
    assert foreign <= after
    # Nothing jmlsync does twice, and revokes strictly precede grants.
    assert len(set(operations)) == len(operations)
    actions = [op.action for op in operations]
    assert actions == sorted(actions, key=("revoke", "disable", "grant").index)
    assert all(inp.is_leaver(op.user) for op in operations if op.action == "disable")
    assert plan(inp) == operations
    # Planning again from the result has nothing left to revoke or grant.
    assert [op for op in plan(replace(inp, actual=after)) if op.action != "disable"] == []

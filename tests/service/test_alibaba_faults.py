"""The Alibaba Cloud connectors under faults: the wire-contract fake throttles (with and without
``x-acs-retry-after``), answers 503 and drops the connection after applying a write, and the
connectors, driven by the Applier and its retry policy, still converge on exactly the state
asked for, each wait the service asked for respected, every write applied exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jmlsync.clock import now_utc
from jmlsync.domain.access import Grant, Operation, PrincipalSpec
from jmlsync.engine.apply import Applier, Outcome
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.engine.retry import RetryPolicy
from jmlsync.ports import Target
from jmlsync.store.directory import SqlStore
from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget
from jmlsync.targets.alibaba_ram import RamTarget, ram_user_name
from tests.alibaba_fake import (  # noqa: F401 (fixtures)
    ACCOUNT,
    AlibabaFake,
    FaultPlan,
    alibaba_env,
    alibaba_fixture,
    alibaba_server,
)
from tests.alibaba_targets import cloudsso_settings, ram_settings

USERS = [f"user-{i:02}@example.org" for i in range(16)]
#: What the fake asks a throttled client to wait, in milliseconds.
RETRY_AFTER_MS = 40


class Waits:
    """The retry policy's sleep: records each wait instead of sleeping it."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


@pytest.fixture
def store(sql_store: SqlStore) -> SqlStore:
    return sql_store


def _applier(store: SqlStore, target: Target, waits: Waits, attempts: int = 10) -> Applier:
    # initial_wait 0: the backoff waits nothing, so every wait recorded above zero is one the
    # service asked for (capped by max_wait, far above it here).
    retry = RetryPolicy(attempts=attempts, initial_wait=0, max_wait=30, sleep=waits)
    return Applier(store, None, {"ali": target}, clock=now_utc, retry=retry)


async def _drive(
    store: SqlStore, target: Target, waits: Waits, role_of: Callable[[int], str]
) -> tuple[dict[str, str], list[Outcome]]:
    """Grant each user one role, then revoke half of them; the roles kept and every outcome."""
    applier = _applier(store, target, waits)
    roles = {user: role_of(i) for i, user in enumerate(USERS)}
    specs = {user: PrincipalSpec(user) for user in USERS}
    grants = [Operation("grant", "ali", user, role, "test") for user, role in roles.items()]
    outcomes = await applier.apply(grants, actor="test", specs=specs)
    revoked = USERS[::2]
    revokes = [Operation("revoke", "ali", user, roles[user], "test") for user in revoked]
    outcomes += await applier.apply(revokes, actor="test")
    kept = {user: role for user, role in roles.items() if user not in revoked}
    assert await store.applied_grants() == {Grant("ali", u, r) for u, r in kept.items()}
    return kept, outcomes


def _assert_faults(fake: AlibabaFake, plan: FaultPlan, waits: Waits) -> None:
    assert plan.injected.keys() == {*plan.kinds, "answer-lost"}, plan.injected
    assert plan.injected.total() - plan.injected["answer-lost"] == fake.requests // plan.every
    assert plan.injected["answer-lost"] == fake.writes.total() // plan.lose_every
    # Every fault was retried once by the policy; the waits the fake asked for were kept.
    assert len(waits.seconds) == plan.injected.total()
    asked = [s for s in waits.seconds if s > 0]
    assert asked == [RETRY_AFTER_MS / 1000] * plan.injected["throttled-retry-after"]
    # Every write was applied once: none was repeated after a lost answer or a retry.
    assert fake.writes, "no write went through"
    assert max(fake.writes.values()) == 1, [w for w, n in fake.writes.items() if n > 1]
    assert fake.rejected == {}, "a request was refused by the signature check"


async def test_ram_converges_through_faults(alibaba: AlibabaFake, store: SqlStore) -> None:
    groups = [f"team-{i}" for i in range(4)]
    alibaba.make_groups(*groups)
    plan = alibaba.plan = FaultPlan(retry_after_ms=RETRY_AFTER_MS)
    waits = Waits()
    target = await RamTarget.open("ali", ram_settings(alibaba))
    kept, outcomes = await _drive(store, target, waits, lambda i: f"group:team-{i % 4}")
    alibaba.plan = None
    assert [o for o in outcomes if not o.ok] == []
    assert sorted(alibaba.ram_users) == sorted(ram_user_name(u) for u in USERS)
    assert {g: sorted(alibaba.group_members(g)) for g in groups} == {
        g: sorted(ram_user_name(u) for u, role in kept.items() if role == f"group:{g}")
        for g in groups
    }
    _assert_faults(alibaba, plan, waits)


async def test_cloudsso_converges_through_faults(alibaba: AlibabaFake, store: SqlStore) -> None:
    alibaba.make_configurations(*[f"team-{i}" for i in range(4)])
    alibaba.task_polls = 1
    plan = alibaba.plan = FaultPlan(retry_after_ms=RETRY_AFTER_MS)
    waits = Waits()
    target = await CloudSsoTarget.open("ali", cloudsso_settings(alibaba))
    kept, outcomes = await _drive(store, target, waits, lambda i: f"{ACCOUNT}/team-{i % 4}")
    alibaba.plan = None
    assert [o for o in outcomes if not o.ok] == []
    # Straight from the fake, duplicates kept: exactly one assignment per grant kept.
    expected = [(user, ACCOUNT, role.rpartition("/")[2]) for user, role in kept.items()]
    assert sorted(alibaba.held()) == sorted(expected)
    _assert_faults(alibaba, plan, waits)


async def test_a_reconcile_listing_is_retried_request_by_request(
    alibaba: AlibabaFake, store: SqlStore
) -> None:
    """Every fourth request of the listing throttled or refused: the listing still completes,
    each failed read retried on its own."""
    alibaba.make_groups(*[f"team-{i}" for i in range(4)])
    direct = await RamTarget.open("ali", ram_settings(alibaba))
    kept, _ = await _drive(store, direct, Waits(), lambda i: f"group:team-{i % 4}")
    before = alibaba.requests
    alibaba.plan = FaultPlan(retry_after_ms=0, lose_every=10**6)
    # One request at a time, so a retried read is the request right after its failure and
    # never a fourth one itself.
    settings = ram_settings(alibaba, max_concurrency=1)
    target = await RamTarget.open("ali", settings, page_size=3)
    applier = _applier(store, target, Waits(), attempts=3)
    snapshot = await Reconciler(store, {"ali": target}, [], applier).snapshot(Scope())
    assert snapshot.unreadable == {}
    assert snapshot.plan_input.actual == {Grant("ali", u, r) for u, r in kept.items()}
    assert alibaba.plan.injected.total() == alibaba.requests // 4 - before // 4 >= 5

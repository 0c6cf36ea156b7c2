"""The AWS connectors under faults: a loopback proxy in front of moto throttles, fails, slows
down and loses answers, and the connectors, driven by the Applier and its retry policy, still
converge on exactly the state asked for, with every write reaching AWS exactly once.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jmlsync.clock import now_utc
from jmlsync.domain.access import Grant, Operation, PrincipalSpec
from jmlsync.engine.apply import Applier, Outcome
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.engine.retry import RetryPolicy
from jmlsync.ports import Target
from jmlsync.store.directory import SqlStore
from jmlsync.targets.aws_iam import IamTarget
from jmlsync.targets.aws_identity_center import IdentityCenterTarget
from tests.moto_server import (  # noqa: F401 (fixtures)
    ACCOUNT,
    Moto,
    aws_env,
    iam_settings,
    identity_center_settings,
    moto_fixture,
    moto_server,
)

#: Every FAULT_EVERY-th request fails, in turn in each of these ways, without reaching moto;
#: the answer to every LOSE_EVERY-th write is lost after moto applied it; every SLOW_EVERY-th
#: request is held up first. FAULT_EVERY exceeds the calls of any one target operation, so
#: each retry gets further and every operation ends within the retry policy's attempts.
FAULTS = ("throttled", "throttled-retry-after", "unavailable")
FAULT_EVERY = 4
LOSE_EVERY = 3
SLOW_EVERY = 7
DELAY_SECONDS = 0.02
USERS = [f"user-{i:02}@example.org" for i in range(20)]
WRITES = ("Create", "Delete", "Add", "Remove", "Attach", "Detach", "Tag", "Untag", "Update")
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


def _throttled(json_protocol: bool, retry_after: bool) -> web.Response:
    """Throttling as each AWS protocol says it: a JSON ``__type`` or a query-protocol XML."""
    headers = {"Retry-After": "0"} if retry_after else {}
    if json_protocol:
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
        return web.Response(
            status=400, text=body, content_type="application/x-amz-json-1.1", headers=headers
        )
    xml = (
        '<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error>'
        "<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
        "</Error><RequestId>injected</RequestId></ErrorResponse>"
    )
    return web.Response(status=400, text=xml, content_type="text/xml", headers=headers)


def _unavailable() -> web.Response:
    return web.Response(status=503, text="Service Unavailable", content_type="text/plain")


class FaultProxy:
    """Forwards to moto, but for the faults it injects; counts them, and the writes moto took."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession) -> None:
        self.upstream = upstream
        self.session = session
        self.requests = 0
        self.delayed = 0
        self.faults: Counter[str] = Counter()
        self.writes: Counter[tuple[str, str]] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        number = self.requests
        body = await request.read()
        json_protocol = "X-Amz-Target" in request.headers
        if number % SLOW_EVERY == 0:
            self.delayed += 1
            await asyncio.sleep(DELAY_SECONDS)
        if number % FAULT_EVERY == 0:
            fault = FAULTS[(number // FAULT_EVERY) % len(FAULTS)]
            self.faults[fault] += 1
            if fault == "unavailable":
                return _unavailable()
            return _throttled(json_protocol, retry_after=fault == "throttled-retry-after")
        answer = await self._forward(request, body)
        write = _write(request, body, json_protocol)
        if write is None or answer.status >= 300:
            return answer
        self.writes[write] += 1
        if sum(self.writes.values()) % LOSE_EVERY == 0:
            # The write landed; the client hears 503 and retries.
            self.faults["answer-lost"] += 1
            return _unavailable()
        return answer

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self.session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as upstream:
            payload = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
            return web.Response(status=upstream.status, body=payload, headers=kept)


def _write(request: web.Request, body: bytes, json_protocol: bool) -> tuple[str, str] | None:
    """(operation, its parameters) of a request that changes something; None for a read."""
    if json_protocol:
        operation = request.headers["X-Amz-Target"].rpartition(".")[2]
        params = json.dumps(json.loads(body or b"{}"), sort_keys=True)
    else:
        fields = dict(parse_qsl(body.decode()))
        operation = fields.pop("Action", "")
        params = json.dumps(fields, sort_keys=True)
    return (operation, params) if operation.startswith(WRITES) else None


@asynccontextmanager
async def fault_proxy(upstream: str) -> AsyncIterator[tuple[str, FaultProxy]]:
    """A FaultProxy on loopback in front of ``upstream``: its URL and itself."""
    async with aiohttp.ClientSession(auto_decompress=True) as session:
        proxy = FaultProxy(upstream, session)
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", proxy.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield str(server.make_url("")).rstrip("/"), proxy
        finally:
            await server.close()


@pytest.fixture
def store(sql_store: SqlStore) -> SqlStore:
    return sql_store


async def _drive(
    store: SqlStore, target: Target, role_of: Callable[[int], str]
) -> tuple[dict[str, str], list[Outcome]]:
    """Grant each user one role, then revoke half of them; the roles kept and every outcome."""
    applier = Applier(
        store,
        None,
        {"aws": target},
        clock=now_utc,
        retry=RetryPolicy(attempts=10, initial_wait=0, max_wait=0),
    )
    roles = {user: role_of(i) for i, user in enumerate(USERS)}
    specs = {user: PrincipalSpec(user) for user in USERS}
    grants = [Operation("grant", "aws", user, role, "test") for user, role in roles.items()]
    outcomes = await applier.apply(grants, actor="test", specs=specs)
    revoked = USERS[::2]
    revokes = [Operation("revoke", "aws", user, roles[user], "test") for user in revoked]
    outcomes += await applier.apply(revokes, actor="test")
    kept = {user: role for user, role in roles.items() if user not in revoked}
    assert await store.applied_grants() == {Grant("aws", u, r) for u, r in kept.items()}
    return kept, outcomes


def _assert_faults_were_injected(proxy: FaultProxy) -> None:
    assert proxy.faults.keys() == {*FAULTS, "answer-lost"}, proxy.faults
    assert proxy.faults.total() - proxy.faults["answer-lost"] == proxy.requests // FAULT_EVERY
    assert proxy.faults["answer-lost"] == proxy.writes.total() // LOSE_EVERY
    assert proxy.delayed == proxy.requests // SLOW_EVERY > 0
    # Every write reached moto once: none was repeated after a lost answer or a retry.
    assert proxy.writes, "no write went through"
    assert max(proxy.writes.values()) == 1, [w for w, n in proxy.writes.items() if n > 1]


async def test_identity_center_converges_through_faults(moto: Moto, store: SqlStore) -> None:
    arns = moto.permission_sets([f"team-{i}" for i in range(4)])
    async with fault_proxy(moto.url) as (url, proxy):
        target = await IdentityCenterTarget.open("aws", identity_center_settings(url))
        try:
            kept, outcomes = await _drive(store, target, lambda i: f"{ACCOUNT}/team-{i % 4}")
        finally:
            await target.close()
    assert [o for o in outcomes if not o.ok] == []
    ids = {name: user_id for user_id, name in moto.identity_store_users().items()}
    assert sorted(ids) == sorted(USERS)
    expected = [(arns[role.rpartition("/")[2]], ids[user]) for user, role in kept.items()]
    # Straight from moto, duplicates kept: exactly one assignment per grant kept.
    assert sorted(moto.assignments(arns.values())) == sorted(expected)
    _assert_faults_were_injected(proxy)


async def test_iam_converges_through_faults(moto: Moto, store: SqlStore) -> None:
    groups = [f"team-{i}" for i in range(4)]
    moto.iam_groups(groups)
    async with fault_proxy(moto.url) as (url, proxy):
        target = await IamTarget.open("aws", iam_settings(url))
        try:
            kept, outcomes = await _drive(store, target, lambda i: f"team-{i % 4}")
        finally:
            await target.close()
    assert [o for o in outcomes if not o.ok] == []
    client = moto.client("iam")
    assert sorted(u["UserName"] for u in client.list_users()["Users"]) == sorted(USERS)
    members = {
        group: [u["UserName"] for u in client.get_group(GroupName=group)["Users"]]
        for group in groups
    }
    assert {g: sorted(m) for g, m in members.items()} == {
        group: sorted(u for u, role in kept.items() if role == group) for group in groups
    }
    _assert_faults_were_injected(proxy)


async def test_a_reconcile_listing_is_retried_request_by_request(
    moto: Moto, store: SqlStore
) -> None:
    """Every fourth request of the listing throttled or refused: the listing still completes,
    each failed read retried on its own (restarting a listing of ~60 requests whole could
    never get through)."""
    groups = [f"team-{i}" for i in range(4)]
    moto.iam_groups(groups)
    direct = await IamTarget.open("aws", iam_settings(moto.url))
    try:
        kept, _ = await _drive(store, direct, lambda i: f"team-{i % 4}")
    finally:
        await direct.close()
    async with fault_proxy(moto.url) as (url, proxy):
        target = await IamTarget.open("aws", iam_settings(url), page_size=3)
        try:
            applier = Applier(
                store,
                None,
                {"aws": target},
                clock=now_utc,
                retry=RetryPolicy(attempts=3, initial_wait=0, max_wait=0),
            )
            snapshot = await Reconciler(store, {"aws": target}, [], applier).snapshot(Scope())
        finally:
            await target.close()
    assert snapshot.unreadable == {}
    assert snapshot.plan_input.actual == {Grant("aws", u, r) for u, r in kept.items()}
    assert proxy.faults.total() == proxy.requests // FAULT_EVERY >= 10

"""What the SCIM connector promises beyond the Target contract: IAM Identity Center's limits
(batches of at most 100 member changes, never ``replace members``), filter quoting, secrecy of
the token, error classification and behaviour under faults, against a real scim2-server reached
through a recording, fault-injecting loopback proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web

from jmlsync.config import ConfigError
from jmlsync.domain.access import Grant, Operation, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.engine.apply import Applier
from jmlsync.engine.reconcile import Reconciler, Scope
from jmlsync.engine.retry import RetryPolicy
from jmlsync.store.directory import SqlStore
from jmlsync.targets.registry import open_target
from jmlsync.targets.scim import ScimTarget
from jmlsync.targets.scim_http import retry_after
from tests import scim_server as peer_fixtures
from tests.scim_server import TOKEN, ScimPeer, scim_settings

# Fixtures, found by pytest among this module's names.
scim_server = peer_fixtures.scim_server
scim_peer = peer_fixtures.scim_peer

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


@dataclass
class Seen:
    """One request as the proxy received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None
    forwarded: bool = False

    @property
    def filter(self) -> str | None:
        return self.query.get("filter", [None])[0]


#: A fault: None to forward; else (status, headers, forward first). Forwarding first means
#: the server applied the request but the client never learns it did.
Fault = tuple[int, dict[str, str], bool] | None


@dataclass
class Proxy:
    """An aiohttp server forwarding to a scim2-server tenant, recording every request and
    answering some with the faults ``fault`` picks (by request number, from 1)."""

    upstream: str
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    fault: Callable[[int, Seen], Fault] = lambda _n, _seen: None
    delay: Callable[[int], float] = lambda _n: 0.0
    http: aiohttp.ClientSession | None = None
    iam_ic: bool = False

    def patches(self) -> list[Seen]:
        """The group PATCHes the server received."""
        return [
            s
            for s in self.seen
            if s.method == "PATCH" and s.path.startswith("/Groups/") and s.forwarded
        ]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen = Seen(
            request.method,
            request.path.removeprefix("/v2"),
            parse_qs(request.query_string, keep_blank_values=True),
            json.loads(raw) if raw else None,
            request.headers.get("Authorization"),
        )
        self.seen.append(seen)
        number = len(self.seen)
        if wait := self.delay(number):
            self.injected["latency"] += 1
            await asyncio.sleep(wait)
        fault = self.fault(number, seen)
        if fault is not None and not fault[2]:
            self.injected[str(fault[0])] += 1
            return _error(fault[0], fault[1])
        query = {key: values[0] for key, values in seen.query.items()}
        cursor = query.pop("cursor", None) if self.iam_ic else None
        if cursor is not None:
            query["startIndex"] = cursor or "1"
        status, headers, body = await self._forward(request, seen.path, query, raw)
        seen.forwarded = True
        if fault is not None:
            self.injected[f"{fault[0]} after forwarding"] += 1
            return _error(fault[0], fault[1])
        if self.iam_ic and status == 200 and body:
            body = json.dumps(_as_iam_identity_center(json.loads(body), cursor)).encode()
        return web.Response(status=status, body=body or None, headers=headers)

    async def _forward(
        self, request: web.Request, path: str, query: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {
            k: v for k, v in request.headers.items() if k in {"Authorization", "Content-Type"}
        }
        assert self.http is not None
        async with self.http.request(
            request.method, self.upstream + path, params=query, data=raw or None, headers=headers
        ) as answer:
            body = await answer.read()
            kept = {"Content-Type": answer.headers.get("Content-Type", "application/scim+json")}
            return answer.status, kept, body


def _as_iam_identity_center(doc: dict[str, Any], cursor: str | None) -> dict[str, Any]:
    """What IAM Identity Center would answer: groups never list members, and a request with a
    cursor is answered by cursor (here the next startIndex) without totals."""
    listing = "totalResults" in doc
    resources = doc.get("Resources", []) if listing else [doc]
    for resource in resources:
        if GROUP_SCHEMA in resource.get("schemas", []):
            resource["members"] = []
    if cursor is not None and listing:
        start = int(cursor or "1")
        total = doc.pop("totalResults")
        del doc["startIndex"]
        if start + len(resources) <= total:
            doc["nextCursor"] = str(start + len(resources))
    return doc


def _error(status: int, headers: dict[str, str]) -> web.Response:
    body = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
        "detail": headers.pop("X-Detail", "injected"),
    }
    if scim_type := headers.pop("X-Scim-Type", None):
        body["scimType"] = scim_type
    return web.json_response(body, status=status, headers=headers)


@pytest.fixture
async def proxy(scim_peer: ScimPeer) -> AsyncIterator[Proxy]:
    recorder = Proxy(scim_peer.url, http=aiohttp.ClientSession())
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorder.url = f"http://127.0.0.1:{port}/v2"
    yield recorder
    await runner.cleanup()
    await recorder.http.close()


@pytest.fixture
async def target(proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path) -> AsyncIterator[ScimTarget]:
    settings = scim_settings(ScimPeer(proxy.url, scim_peer.token), tmp_path, timeout_seconds=5)
    opened = await ScimTarget.open("peer", settings)
    yield opened
    await opened.close()


def _users(peer: ScimPeer, names: list[str]) -> dict[str, str]:
    """Create users directly on the peer; userName -> id."""
    ids = {}
    for name in names:
        created = peer.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": name})
        ids[name] = created["id"]
    return ids


def _assert_no_member_replace(proxy: Proxy) -> None:
    """Every group PATCH sent, answered or not, adds or removes members and nothing else."""
    sent = [s for s in proxy.seen if s.method == "PATCH" and s.path.startswith("/Groups/")]
    assert sent
    for seen in sent:
        for op in seen.body["Operations"]:
            assert op["op"].lower() in {"add", "remove"}, op
            assert str(op.get("path", "")).startswith("members"), op


class TestBatching:
    async def test_250_members_take_three_patches_each_way(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer
    ) -> None:
        gid = scim_peer.create_groups(["big"])["big"]
        names = [f"user-{i:03}" for i in range(250)]
        ids = _users(scim_peer, names)

        await target.grant_many("big", names)
        adds = proxy.patches()
        assert [len(p.body["Operations"][0]["value"]) for p in adds] == [100, 100, 50]
        assert sorted(scim_peer.members(gid)) == sorted(ids.values())

        await target.grant_many("big", names)
        assert len(proxy.patches()) == 3, "granting held roles sends no PATCH"

        await target.revoke_many("big", names)
        removes = proxy.patches()[3:]
        assert [len(p.body["Operations"]) for p in removes] == [100, 100, 50]
        assert scim_peer.members(gid) == []
        _assert_no_member_replace(proxy)

    async def test_single_calls_change_one_member_per_patch(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer
    ) -> None:
        scim_peer.create_groups(["admin"])
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", "admin")
        await target.revoke("ada", "admin")
        uid = _users_by_name(scim_peer)["ada"]
        add, remove = (p.body["Operations"] for p in proxy.patches())
        assert add == [{"op": "add", "path": "members", "value": [{"value": uid}]}]
        assert remove == [{"op": "remove", "path": f'members[value eq "{uid}"]'}]

    async def test_leaving_sends_active_false_and_keeps_members(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer
    ) -> None:
        scim_peer.create_groups(["admin"])
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", "admin")
        await target.disable_principal("ada")
        (disable,) = [s for s in proxy.seen if s.method == "PATCH" and s.path.startswith("/Users")]
        assert disable.body["Operations"] == [{"op": "replace", "path": "active", "value": False}]
        assert await target.grants_of("ada") == {"admin"}
        _assert_no_member_replace(proxy)


def _users_by_name(peer: ScimPeer) -> dict[str, str]:
    return {name: uid for uid, name in peer.user_names().items()}


class TestRequests:
    async def test_created_user_carries_the_spec(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer
    ) -> None:
        spec = PrincipalSpec(
            "ada@x.io", display_name="Ada L", given_name="Ada", family_name="L", email="a@x.io"
        )
        await target.ensure_principal(spec)
        await target.ensure_principal(PrincipalSpec("bare"))
        posts = [s for s in proxy.seen if s.method == "POST"]
        assert [p.body for p in posts] == [
            {
                "schemas": [USER_SCHEMA],
                "userName": "ada@x.io",
                "externalId": "ada@x.io",
                "name": {"givenName": "Ada", "familyName": "L"},
                "displayName": "Ada L",
                "active": True,
                "emails": [{"value": "a@x.io", "type": "work", "primary": True}],
            },
            {
                "schemas": [USER_SCHEMA],
                "userName": "bare",
                "externalId": "bare",
                "name": {"givenName": "bare", "familyName": "bare"},
                "displayName": "bare",
                "active": True,
            },
        ]
        assert all(s.authorization == f"Bearer {TOKEN}" for s in proxy.seen)

    async def test_filters_use_only_eq_and(
        self, target: ScimTarget, scim_peer: ScimPeer, proxy: Proxy
    ) -> None:
        scim_peer.create_groups(["admin"])
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", "admin")
        await target.grants_of("ada")
        await target.revoke("ada", "admin")
        filters = [s.filter for s in proxy.seen if s.filter]
        assert filters
        for text in filters:
            words = text.replace('"', " ").split()
            assert {"eq"} <= set(words), text
            assert not {"ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "or", "not"} & set(
                words
            ), text

    @pytest.mark.parametrize(
        "user",
        ['quote"d', "back\\slash", 'both\\"x', "o'neil", "trailing\\", "ünï cödé", 'x" or "1'],
    )
    async def test_user_names_are_quoted(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer, user: str
    ) -> None:
        scim_peer.create_groups(["admin"])
        _users(scim_peer, ["x", "1"])  # what an injected `or` would match
        await target.ensure_principal(PrincipalSpec(user))
        await target.ensure_principal(PrincipalSpec(user))
        await target.grant(user, "admin")
        assert await target.principal(user) == Principal(user)
        assert await target.grants_of(user) == {"admin"}
        assert await target.grants_of("x") == frozenset()
        assert [g async for g in target.list_grants()] == [Grant("peer", user, "admin")]
        assert sorted(_users_by_name(scim_peer)) == sorted(["x", "1", user])
        assert f"userName eq {json.dumps(user, ensure_ascii=False)}" in {
            s.filter for s in proxy.seen
        }


class TestErrors:
    async def test_unknown_group_is_permanent_and_named(
        self, target: ScimTarget, proxy: Proxy
    ) -> None:
        await target.ensure_principal(PrincipalSpec("ada"))
        with pytest.raises(PermanentTargetError, match="'no-such-group'"):
            await target.grant("ada", "no-such-group")
        assert not [s for s in proxy.seen if s.method in {"POST", "PATCH"} and "Group" in s.path]

    async def test_revoking_an_unknown_group_succeeds(self, target: ScimTarget) -> None:
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.revoke("ada", "no-such-group")

    async def test_throttling_is_transient_with_retry_after(
        self, target: ScimTarget, proxy: Proxy
    ) -> None:
        proxy.fault = lambda _n, _s: (429, {"Retry-After": "7"}, False)
        with pytest.raises(TransientTargetError) as caught:
            await target.principal("ada")
        assert caught.value.retry_after == 7.0

    async def test_server_errors_are_transient(self, target: ScimTarget, proxy: Proxy) -> None:
        proxy.fault = lambda _n, _s: (503, {}, False)
        with pytest.raises(TransientTargetError, match="HTTP 503") as caught:
            await target.grants_of("ada")
        assert caught.value.retry_after is None

    async def test_refusals_are_permanent_with_the_scim_detail(
        self, target: ScimTarget, proxy: Proxy
    ) -> None:
        proxy.fault = lambda _n, _s: (403, {"X-Detail": "not in this tenant"}, False)
        with pytest.raises(PermanentTargetError, match="HTTP 403: not in this tenant"):
            await target.ensure_principal(PrincipalSpec("ada"))

    async def test_timeouts_are_transient(
        self, proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path
    ) -> None:
        proxy.delay = lambda _n: 0.3
        settings = scim_settings(ScimPeer(proxy.url, TOKEN), tmp_path, timeout_seconds=0.05)
        target = await ScimTarget.open("slow", settings)
        try:
            with pytest.raises(TransientTargetError, match="timed out"):
                await target.principal("ada")
        finally:
            await target.close()

    async def test_a_closed_port_is_transient(self, scim_peer: ScimPeer, tmp_path: Path) -> None:
        settings = scim_settings(ScimPeer("http://127.0.0.1:9/v2", TOKEN), tmp_path)
        target = await ScimTarget.open("gone", settings)
        try:
            with pytest.raises(TransientTargetError, match="gone"):
                await target.principal("ada")
        finally:
            await target.close()

    @pytest.mark.parametrize(
        ("header", "seconds"),
        [("0", 0.0), ("2.5", 2.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)],
    )
    def test_retry_after_in_seconds(self, header: str | None, seconds: float | None) -> None:
        assert retry_after(header) == seconds

    def test_retry_after_as_an_http_date(self) -> None:
        now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
        assert retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
        assert retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0


class TestToken:
    async def test_the_token_appears_in_no_error_or_log(
        self,
        proxy: Proxy,
        scim_peer: ScimPeer,
        tmp_path: Path,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        secret = "wrong-" + "w" * 30
        settings = scim_settings(ScimPeer(proxy.url, secret), tmp_path)
        target = await ScimTarget.open("peer", settings)
        errors: list[Exception] = []
        try:
            with pytest.raises(PermanentTargetError, match="HTTP 401") as refused:
                await target.principal("ada")
            errors.append(refused.value)
            # A server echoing the header back in its detail.
            proxy.fault = lambda _n, s: (400, {"X-Detail": f"bad {s.authorization}"}, False)
            with pytest.raises(PermanentTargetError, match=r"bad Bearer \[token\]") as echoed:
                await target.ensure_principal(PrincipalSpec("ada"))
            errors.append(echoed.value)
            proxy.fault = lambda _n, _s: (503, {}, False)
            with pytest.raises(TransientTargetError) as failed:
                await target.grants_of("ada")
            errors.append(failed.value)
            shown = [repr(target), repr(target._client), caplog.text]
            shown += [f"{e!s} {e!r} {e.__cause__!r} {e.__context__!r}" for e in errors]
        finally:
            await target.close()
        assert proxy.seen
        assert all(s.authorization == f"Bearer {secret}" for s in proxy.seen)
        for text in shown:
            assert secret not in text

    async def test_token_is_the_first_real_line(self, scim_peer: ScimPeer, tmp_path: Path) -> None:
        token_file = tmp_path / "token"
        token_file.write_text(f"\n# rotated 2030-01-01\n  {TOKEN}  \nsecond-token\n")
        settings = scim_settings(scim_peer, tmp_path).model_copy(update={"token_file": token_file})
        target = await ScimTarget.open("peer", settings)
        try:
            assert await target.principal("nobody") is None
        finally:
            await target.close()

    @pytest.mark.parametrize("content", [None, "", "# only a comment\n\n"])
    async def test_a_missing_or_empty_token_file_is_named(
        self, scim_peer: ScimPeer, tmp_path: Path, content: str | None
    ) -> None:
        settings = scim_settings(scim_peer, tmp_path)
        if content is None:
            settings.token_file.unlink()
        else:
            settings.token_file.write_text(content)
        with pytest.raises(ConfigError, match=str(settings.token_file)):
            await ScimTarget.open("peer", settings)


class TestPeerQuirks:
    async def test_refused_membership_filters_fall_back_to_reading_members(
        self, target: ScimTarget, proxy: Proxy, scim_peer: ScimPeer
    ) -> None:
        def refuse(_n: int, seen: Seen) -> Fault:
            if "members" in (seen.filter or ""):
                return 400, {"X-Scim-Type": "invalidFilter"}, False
            return None

        proxy.fault = refuse
        gids = scim_peer.create_groups(["admin", "reader"])
        await target.ensure_principal(PrincipalSpec("ada"))
        await target.grant("ada", "admin")
        assert await target.grants_of("ada") == {"admin"}
        refusals = proxy.injected["400"]
        await target.grant("ada", "admin")
        await target.grant("ada", "reader")
        assert await target.grants_of("ada") == {"admin", "reader"}
        await target.revoke("ada", "admin")
        await target.revoke("ada", "admin")
        assert await target.grants_of("ada") == {"reader"}
        assert [g async for g in target.list_grants()] == [Grant("peer", "ada", "reader")]
        assert scim_peer.members(gids["admin"]) == []
        assert len(scim_peer.members(gids["reader"])) == 1
        # The connector learnt from the first refusals and stopped asking.
        assert proxy.injected["400"] == refusals

    async def test_deleting_leavers_leave_their_groups_first(
        self, proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path
    ) -> None:
        gids = scim_peer.create_groups(["admin", "reader"])
        settings = scim_settings(ScimPeer(proxy.url, TOKEN), tmp_path, delete_users_on_leave=True)
        target = await ScimTarget.open("peer", settings)
        try:
            await target.ensure_principal(PrincipalSpec("ada"))
            await target.grant("ada", "admin")
            await target.grant("ada", "reader")
            await target.disable_principal("ada")
            await target.disable_principal("ada")
            assert await target.principal("ada") is None
        finally:
            await target.close()
        # scim2-server keeps a deleted user's id in Group.members; the connector must not.
        assert scim_peer.members(gids["admin"]) == scim_peer.members(gids["reader"]) == []
        assert [s.method for s in proxy.seen if s.path.startswith("/Users/")] == ["DELETE"]

    async def test_a_peer_like_iam_identity_center(
        self, proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path
    ) -> None:
        proxy.iam_ic = True
        roles = ["admin", "reader", "audit"]
        scim_peer.create_groups(roles)
        users = [f"user-{i}" for i in range(5)]
        pairs = {(u, r) for i, u in enumerate(users) for j, r in enumerate(roles) if (i + j) % 2}
        settings = scim_settings(ScimPeer(proxy.url, TOKEN), tmp_path)
        target = await ScimTarget.open("peer", settings, page_size=2)
        try:
            for user in users:
                await target.ensure_principal(PrincipalSpec(user))
            for user, role in sorted(pairs):
                await target.grant(user, role)
            await target.grant_many("audit", users)
            await target.revoke_many("audit", users[:2])
            expected = {(u, r) for u, r in pairs if r != "audit"}
            expected |= {(u, "audit") for u in users[2:]}
            listed = [(g.user, g.role) async for g in target.list_grants()]
            assert sorted(listed) == sorted(expected)
            for user in users:
                assert await target.grants_of(user) == {r for u, r in expected if u == user}
            assert sorted([p.user async for p in target.list_principals()]) == users
        finally:
            await target.close()
        listings = [
            s
            for s in proxy.seen
            if s.method == "GET"
            and s.path in {"/Users", "/Groups"}
            and (not s.filter or s.filter.startswith("members.value"))
        ]
        assert listings
        assert all("cursor" in s.query for s in listings)
        assert any(s.query["cursor"] != [""] for s in listings), "paged by cursor"
        assert all("startIndex" not in s.query and "attributes" not in s.query for s in proxy.seen)

    async def test_a_peer_without_cursors_is_paged_by_index(
        self, proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path
    ) -> None:
        settings = scim_settings(ScimPeer(proxy.url, TOKEN), tmp_path)
        target = await ScimTarget.open("peer", settings, page_size=2)
        try:
            _users(scim_peer, [f"user-{i}" for i in range(5)])
            for _ in range(2):
                listed = [p.user async for p in target.list_principals()]
                assert sorted(listed) == [f"user-{i}" for i in range(5)]
        finally:
            await target.close()
        assert len([s for s in proxy.seen if "cursor" in s.query]) == 1
        assert [s.query["startIndex"] for s in proxy.seen if "startIndex" in s.query] == [
            ["1"],
            ["3"],
            ["5"],
            ["1"],
            ["3"],
            ["5"],
        ]

    async def test_a_shared_session_stays_open(self, scim_peer: ScimPeer, tmp_path: Path) -> None:
        async with aiohttp.ClientSession() as http:
            target = await open_target("peer", scim_settings(scim_peer, tmp_path), http=http)
            assert isinstance(target, ScimTarget)
            await target.close()
            assert not http.closed


async def test_faults_under_the_applier_leave_the_exact_state(
    proxy: Proxy, target: ScimTarget, scim_peer: ScimPeer, tmp_path: Path
) -> None:
    gid = scim_peer.create_groups(["dev"])["dev"]
    users = [f"user-{i:02}@x.io" for i in range(20)]

    def faults(number: int, seen: Seen) -> Fault:
        if number % 7 == 0:
            return 429, {"Retry-After": "0"}, False
        if number % 11 == 0:
            return 503, {}, False
        if seen.method in {"POST", "PATCH"} and number % 4 == 0:
            return 503, {}, True
        return None

    proxy.fault = faults
    proxy.delay = lambda number: 0.02 if number % 5 == 0 else 0.0
    store = await SqlStore.open(tmp_path / "jmlsync.db")
    try:
        applier = Applier(
            store,
            None,
            {"peer": target},
            clock=lambda: datetime.now(UTC),
            retry=RetryPolicy(initial_wait=0, max_wait=0),
        )
        specs = {user: PrincipalSpec(user, email=user) for user in users}
        grants = [Operation("grant", "peer", user, "dev", "test") for user in users]
        revokes = [Operation("revoke", "peer", user, "dev", "test") for user in users[::2]]
        outcomes = await applier.apply(grants, actor="test", specs=specs)
        outcomes += await applier.apply(revokes, actor="test")
    finally:
        await store.close()

    assert [o.error for o in outcomes if not o.ok] == []
    assert {"429", "503", "503 after forwarding", "latency"} <= set(proxy.injected)
    names = scim_peer.user_names()
    members = scim_peer.members(gid)
    assert len(members) == len(set(members)) == 10
    assert sorted(names[m] for m in members) == users[1::2]
    assert sorted(names.values()) == users
    # Every add reached the server once: a retry after a lost answer checked membership first.
    added = [
        v["value"]
        for s in proxy.patches()
        for op in s.body["Operations"]
        if op["op"] == "add"
        for v in op["value"]
    ]
    assert len(added) == len(set(added)) == 20
    _assert_no_member_replace(proxy)


class TestListingRetries:
    async def test_a_throttled_listing_completes_read_by_read(
        self, proxy: Proxy, scim_peer: ScimPeer, tmp_path: Path
    ) -> None:
        """Every third read throttled (Retry-After 0) while reconciliation lists the target
        in pages of two: every read is retried on its own and the listing completes."""
        scim_peer.create_groups(["admin", "dev"])
        settings = scim_settings(ScimPeer(proxy.url, scim_peer.token), tmp_path, timeout_seconds=5)
        target = await ScimTarget.open("peer", settings, page_size=2)
        store = await SqlStore.open(tmp_path / "jmlsync.db")
        try:
            held = {Grant("peer", f"u{i}", "admin" if i % 2 else "dev") for i in range(6)}
            for grant in sorted(held):
                await target.ensure_principal(PrincipalSpec(grant.user))
                await target.grant(grant.user, grant.role)
            proxy.fault = lambda n, _seen: (
                (429, {"Retry-After": "0"}, False) if n % 3 == 0 else None
            )
            applier = Applier(
                store,
                None,
                {"peer": target},
                clock=lambda: datetime.now(UTC),
                retry=RetryPolicy(attempts=3, initial_wait=0, max_wait=0),
            )
            snapshot = await Reconciler(store, {"peer": target}, [], applier).snapshot(Scope())
        finally:
            await target.close()
            await store.close()
        assert snapshot.unreadable == {}
        assert snapshot.plan_input.actual == held
        assert {user for _, user in snapshot.plan_input.principals} == {g.user for g in held}
        assert proxy.injected["429"] >= 3
